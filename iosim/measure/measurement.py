"""A measurement file: what attention kernels did on a real GPU, timings and hardware counters.

This module is data only (no torch, no triton): ``kernels/harness.py`` writes these files on a GPU
machine and the validation side of iosim reads them anywhere. A file is JSON::

    {"schema": "iosim-measurement", "schema_version": 1,
     "provenance": {gpu_name, driver, cuda, torch, triton, ncu, clock_control, cache_control,
                    date, command, hostname},
     "cases": [{name, impl, pass, run_config, timing, counters, counters_error, launches, error}]}

Units are base units throughout: bytes, seconds, and percent for hit rates. ``run_config`` is the
plain ``{"algo", "problem", "tiling"}`` dict that ``iosim.config.RunConfig.from_dict`` takes (``algo``
and ``tiling`` are null for PyTorch's SDPA backends, whose tiling we do not know). ``counters`` is
null when no counters were read; ``counters_error`` then says why in one line. ``error`` is a case
that did not run (out of memory, say); its timing and counters are null.

Every file is validated on load: a bad one raises :class:`MeasurementError` whose one-line message
names the file and the field (``cases[3].counters.dram_read_bytes: must be >= 0, got -1``).
"""
from __future__ import annotations

import csv
import io
import json
import math
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

from iosim.files import atomic_write_text

from iosim.schedule.problem import ALGOS, DTYPE_BYTES

SCHEMA = "iosim-measurement"
SCHEMA_VERSION = 1
SDPA_IMPLS = ("sdpa_flash", "sdpa_cudnn")
IMPLS = ALGOS + SDPA_IMPLS
PASSES = ("fwd", "fwd_bwd")
CACHE_CONTROLS = ("all", "none")
PROBLEM_KEYS = ("batch", "heads", "kv_heads", "seq_q", "seq_k", "head_dim", "dtype", "causal", "backward")


class MeasurementError(ValueError):
    """A measurement file that cannot be read; the one-line message names the file and the field."""


# --------------------------------------------------------------------------- records


@dataclass(frozen=True)
class Provenance:
    """Where and how a measurement was taken. ``ncu`` is Nsight Compute's version, or None without it."""

    gpu_name: str
    driver: str | None
    cuda: str | None
    torch: str | None
    triton: str | None
    ncu: str | None
    clock_control: str | None  # ncu --clock-control (``none``: the GPU boosts as it would unprofiled)
    cache_control: str | None  # ncu --cache-control: ``all`` flushes L2 before each kernel (ncu's default)
    date: str  # ISO 8601
    command: tuple[str, ...]  # the exact argv
    hostname: str

    def __post_init__(self):
        object.__setattr__(self, "command", tuple(self.command))


@dataclass(frozen=True)
class Timing:
    """Quantiles of ``triton.testing.do_bench`` (seconds) and the warm-up/repeat budget it ran with (ms)."""

    median_s: float
    p20_s: float
    p80_s: float
    warmup_ms: float
    rep_ms: float


@dataclass(frozen=True)
class KernelCounters:
    """Nsight Compute's counters for one kernel launch."""

    name: str
    dram_read_bytes: float  # dram__bytes_read.sum
    dram_write_bytes: float  # dram__bytes_write.sum
    l2_bytes: float  # lts__t_bytes.sum: every byte requested at the L2, hit or miss
    l2_hit_rate: float  # lts__t_sector_hit_rate.pct, percent
    duration_s: float  # gpu__time_duration.sum
    grid: tuple[int, int, int] | None
    block: tuple[int, int, int] | None
    registers: int | None  # per thread
    shared_bytes: int | None  # per block, static + dynamic

    def __post_init__(self):
        for name in ("grid", "block"):
            value = getattr(self, name)
            if value is not None:
                object.__setattr__(self, name, tuple(value))


@dataclass(frozen=True)
class Counters:
    """Counters of one attention call: sums over its kernels, and the kernels themselves."""

    dram_read_bytes: float
    dram_write_bytes: float
    l2_bytes: float
    l2_hit_rate: float  # percent, weighted by each kernel's l2_bytes
    duration_s: float
    kernels: tuple[KernelCounters, ...] = ()

    def __post_init__(self):
        object.__setattr__(self, "kernels", tuple(self.kernels))

    @classmethod
    def from_kernels(cls, kernels) -> "Counters":
        """Sum the kernels of one call; the hit rate is weighted by L2 traffic (a plain mean if there is none)."""
        kernels = tuple(kernels)
        l2 = sum(k.l2_bytes for k in kernels)
        if l2 > 0:
            hit = sum(k.l2_hit_rate * k.l2_bytes for k in kernels) / l2
        else:
            hit = sum(k.l2_hit_rate for k in kernels) / len(kernels) if kernels else 0.0
        return cls(
            dram_read_bytes=sum(k.dram_read_bytes for k in kernels),
            dram_write_bytes=sum(k.dram_write_bytes for k in kernels),
            l2_bytes=l2,
            l2_hit_rate=hit,
            duration_s=sum(k.duration_s for k in kernels),
            kernels=kernels,
        )


@dataclass(frozen=True)
class Case:
    """One measured attention call. ``pass_`` is the JSON key ``pass``: ``fwd`` or ``fwd_bwd``."""

    name: str
    impl: str
    pass_: str
    run_config: dict
    timing: Timing | None = None
    counters: Counters | None = None
    counters_error: str | None = None
    launches: tuple[dict, ...] = ()
    error: str | None = None

    def __post_init__(self):
        object.__setattr__(self, "launches", tuple(self.launches))

    def to_dict(self) -> dict:
        return {
            "name": self.name,
            "impl": self.impl,
            "pass": self.pass_,
            "run_config": self.run_config,
            "timing": None if self.timing is None else vars(self.timing).copy(),
            "counters": None if self.counters is None else _counters_dict(self.counters),
            "counters_error": self.counters_error,
            "launches": list(self.launches),
            "error": self.error,
        }


@dataclass(frozen=True)
class Measurement:
    """A whole measurement file."""

    provenance: Provenance
    cases: tuple[Case, ...] = field(default_factory=tuple)

    def __post_init__(self):
        object.__setattr__(self, "cases", tuple(self.cases))

    def to_dict(self) -> dict:
        prov = vars(self.provenance).copy()
        prov["command"] = list(self.provenance.command)
        return {
            "schema": SCHEMA,
            "schema_version": SCHEMA_VERSION,
            "provenance": prov,
            "cases": [c.to_dict() for c in self.cases],
        }


def _counters_dict(c: Counters) -> dict:
    out = {k: v for k, v in vars(c).items() if k != "kernels"}
    out["kernels"] = []
    for k in c.kernels:
        d = vars(k).copy()
        d["grid"] = None if k.grid is None else list(k.grid)
        d["block"] = None if k.block is None else list(k.block)
        out["kernels"].append(d)
    return out


# --------------------------------------------------------------------------- reading


class _Fields:
    """A JSON object being validated: each getter names ``file: path.key`` in its error."""

    def __init__(self, data, path: str, source: str):
        self.source, self.path = source, path
        if not isinstance(data, dict):
            self.fail(None, f"expected an object, got {type(data).__name__}")
        self.data = data

    def where(self, key) -> str:
        if key is None:
            return self.path or "top level"
        return f"{self.path}.{key}" if self.path else str(key)

    def fail(self, key, message: str):
        raise MeasurementError(f"{self.source}: {self.where(key)}: {message}")

    def raw(self, key):
        if key not in self.data:
            self.fail(key, "missing field")
        return self.data[key]

    def string(self, key, nullable=False, choices=None):
        value = self.raw(key)
        if value is None and nullable:
            return None
        if not isinstance(value, str):
            self.fail(key, f"must be a string{' or null' if nullable else ''}, got {value!r}")
        if "\n" in value:
            self.fail(key, "must be one line")
        if choices is not None and value not in choices:
            self.fail(key, f"must be one of {', '.join(choices)}, got {value!r}")
        return value

    def number(self, key, low=0.0, high=math.inf, nullable=False, integer=False):
        value = self.raw(key)
        if value is None and nullable:
            return None
        kind = int if integer else (int, float)
        if isinstance(value, bool) or not isinstance(value, kind) or not math.isfinite(value):
            self.fail(key, f"must be {'an integer' if integer else 'a number'}, got {value!r}")
        if value < low:
            self.fail(key, f"must be >= {low:g}, got {value!r}")
        if value > high:
            self.fail(key, f"must be <= {high:g}, got {value!r}")
        return value

    def boolean(self, key):
        value = self.raw(key)
        if not isinstance(value, bool):
            self.fail(key, f"must be true or false, got {value!r}")
        return value

    def array(self, key):
        value = self.raw(key)
        if not isinstance(value, list):
            self.fail(key, f"must be a list, got {type(value).__name__}")
        return value

    def triple(self, key):
        value = self.raw(key)
        if value is None:
            return None
        if (not isinstance(value, list) or len(value) != 3
                or any(isinstance(v, bool) or not isinstance(v, int) or v <= 0 for v in value)):
            self.fail(key, f"must be three positive integers or null, got {value!r}")
        return tuple(value)

    def child(self, key, nullable=False):
        value = self.raw(key)
        if value is None and nullable:
            return None
        return _Fields(value, self.where(key), self.source)


def _provenance(f: _Fields) -> Provenance:
    command = f.array("command")
    if not all(isinstance(a, str) for a in command):
        f.fail("command", "must be a list of strings")
    return Provenance(
        gpu_name=f.string("gpu_name"),
        driver=f.string("driver", nullable=True),
        cuda=f.string("cuda", nullable=True),
        torch=f.string("torch", nullable=True),
        triton=f.string("triton", nullable=True),
        ncu=f.string("ncu", nullable=True),
        clock_control=f.string("clock_control", nullable=True),
        cache_control=f.string("cache_control", nullable=True, choices=CACHE_CONTROLS),
        date=f.string("date"),
        command=tuple(command),
        hostname=f.string("hostname"),
    )


def _timing(f: _Fields) -> Timing:
    return Timing(
        median_s=f.number("median_s"),
        p20_s=f.number("p20_s"),
        p80_s=f.number("p80_s"),
        warmup_ms=f.number("warmup_ms"),
        rep_ms=f.number("rep_ms"),
    )


def _kernel(f: _Fields) -> KernelCounters:
    return KernelCounters(
        name=f.string("name"),
        dram_read_bytes=f.number("dram_read_bytes"),
        dram_write_bytes=f.number("dram_write_bytes"),
        l2_bytes=f.number("l2_bytes"),
        l2_hit_rate=f.number("l2_hit_rate", high=100.0),
        duration_s=f.number("duration_s"),
        grid=f.triple("grid"),
        block=f.triple("block"),
        registers=f.number("registers", integer=True, nullable=True),
        shared_bytes=f.number("shared_bytes", integer=True, nullable=True),
    )


def _counters(f: _Fields) -> Counters:
    kernels = f.array("kernels")
    return Counters(
        dram_read_bytes=f.number("dram_read_bytes"),
        dram_write_bytes=f.number("dram_write_bytes"),
        l2_bytes=f.number("l2_bytes"),
        l2_hit_rate=f.number("l2_hit_rate", high=100.0),
        duration_s=f.number("duration_s"),
        kernels=tuple(_kernel(_Fields(k, f.where(f"kernels[{i}]"), f.source)) for i, k in enumerate(kernels)),
    )


def _run_config(f: _Fields, impl: str, pass_: str) -> dict:
    sdpa = impl in SDPA_IMPLS
    algo = f.string("algo", nullable=sdpa)
    if sdpa and algo is not None:
        f.fail("algo", f"must be null for {impl}, got {algo!r}")
    if not sdpa and algo != impl:
        f.fail("algo", f"must equal the case's impl {impl!r}, got {algo!r}")
    p = f.child("problem")
    for key in ("batch", "heads", "kv_heads", "seq_q", "seq_k", "head_dim"):
        p.number(key, low=1, integer=True)
    p.string("dtype", choices=tuple(DTYPE_BYTES))
    p.boolean("causal")
    if p.boolean("backward") != (pass_ == "fwd_bwd"):
        p.fail("backward", f"must be {str(pass_ == 'fwd_bwd').lower()} for pass {pass_!r}")
    unknown = sorted(set(p.data) - set(PROBLEM_KEYS))
    if unknown:
        p.fail(unknown[0], "unknown field")
    tiling = f.raw("tiling")
    if tiling is not None and not isinstance(tiling, dict):
        f.fail("tiling", f"must be an object or null, got {type(tiling).__name__}")
    return f.data


def _case(f: _Fields) -> Case:
    impl = f.string("impl", choices=IMPLS)
    pass_ = f.string("pass", choices=PASSES)
    launches = f.array("launches")
    for i, launch in enumerate(launches):
        if not isinstance(launch, dict):
            f.fail(f"launches[{i}]", "must be an object")
    timing = f.child("timing", nullable=True)
    counters = f.child("counters", nullable=True)
    return Case(
        name=f.string("name"),
        impl=impl,
        pass_=pass_,
        run_config=_run_config(f.child("run_config"), impl, pass_),
        timing=None if timing is None else _timing(timing),
        counters=None if counters is None else _counters(counters),
        counters_error=f.string("counters_error", nullable=True),
        launches=tuple(launches),
        error=f.string("error", nullable=True),
    )


def measurement_from_dict(data, source: str = "<data>") -> Measurement:
    """Validate a decoded measurement document; ``source`` names it in errors."""
    top = _Fields(data, "", source)
    schema = top.raw("schema")
    if schema != SCHEMA:
        top.fail("schema", f"expected {SCHEMA!r}, got {schema!r}")
    version = top.raw("schema_version")
    if version != SCHEMA_VERSION:
        top.fail("schema_version", f"this iosim reads version {SCHEMA_VERSION}, the file is version {version!r}")
    cases = top.array("cases")
    return Measurement(
        provenance=_provenance(top.child("provenance")),
        cases=tuple(_case(_Fields(c, f"cases[{i}]", source)) for i, c in enumerate(cases)),
    )


def committed_set(gpu: str) -> Path:
    """The measurement file committed for ``gpu`` (``experiments/measurements/<gpu>/``, package data ``iosim.measurements``)."""
    return Path(str(resources.files("iosim.measurements"))) / gpu / "measurements.json"


def load_measurement(path) -> Measurement:
    """Read and validate a measurement file."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as e:
        raise MeasurementError(f"{path}: cannot read: {e.strerror or e}") from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as e:
        raise MeasurementError(
            f"{path}: document: not valid JSON (truncated?) at line {e.lineno} column {e.colno}: {e.msg}"
        ) from None
    return measurement_from_dict(data, str(path))


# --------------------------------------------------------------------------- writing

CSV_COLUMNS = (
    "name", "impl", "pass", "algo", *PROBLEM_KEYS,
    "block_m", "block_n", "warps", "stages", "grid_order",
    "median_s", "p20_s", "p80_s",
    "dram_read_bytes", "dram_write_bytes", "l2_bytes", "l2_hit_rate", "ncu_duration_s", "kernels",
    "counters_error", "error",
)


def csv_rows(m: Measurement) -> list[dict]:
    """One flat row per case, keys ``CSV_COLUMNS``; missing values are empty strings."""
    rows = []
    for c in m.cases:
        row = dict.fromkeys(CSV_COLUMNS, "")
        row.update(name=c.name, impl=c.impl, algo=c.run_config.get("algo") or "")
        row["pass"] = c.pass_
        row.update({k: c.run_config["problem"].get(k, "") for k in PROBLEM_KEYS})
        tiling = c.run_config.get("tiling") or {}
        row.update({k: tiling.get(k, "") for k in ("block_m", "block_n", "warps", "stages", "grid_order")})
        if c.timing is not None:
            row.update(median_s=c.timing.median_s, p20_s=c.timing.p20_s, p80_s=c.timing.p80_s)
        if c.counters is not None:
            k = c.counters
            row.update(dram_read_bytes=k.dram_read_bytes, dram_write_bytes=k.dram_write_bytes,
                       l2_bytes=k.l2_bytes, l2_hit_rate=k.l2_hit_rate, ncu_duration_s=k.duration_s,
                       kernels=len(k.kernels))
        row.update(counters_error=c.counters_error or "", error=c.error or "")
        rows.append({k: ("" if v is None else v) for k, v in row.items()})
    return rows


def _atomic_write(path: Path, text: str) -> None:
    """Write ``text`` over ``path`` all or nothing, creating its folder."""
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, text)


def dump_measurement(m: Measurement, path) -> tuple[Path, Path]:
    """Write ``m`` as JSON at ``path`` and its CSV twin beside it (same stem, ``.csv``); both atomically.

    The document is validated before anything is written, so a file on disk always loads.
    """
    path = Path(path)
    data = m.to_dict()
    measurement_from_dict(json.loads(json.dumps(data)), str(path))
    _atomic_write(path, json.dumps(data, indent=1) + "\n")
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=CSV_COLUMNS, lineterminator="\n")
    writer.writeheader()
    writer.writerows(csv_rows(m))
    csv_path = path.with_suffix(".csv")
    _atomic_write(csv_path, buf.getvalue())
    return path, csv_path
