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

Every file is validated on load against the pydantic models below (:mod:`iosim.schema`): a bad one
raises :class:`MeasurementError` whose one-line message names the file and the field
(``cases[3].counters.dram_read_bytes: must be >= 0, got -1``). ``run_config`` may also carry
``backward_tiling``, ``mode``, ``host_tensors`` and ``dq``, and its tilings may be resolved (every tile
spelled out) or overrides only. A kernel's counters added later are optional and default to null,
and a null optional counter is left out when written, so files written before it existed read and
write back unchanged. ``impl`` ``kernel`` is a user's Triton kernel file (``Case.kernel``:
``path.py:fn``) whose schedule the simulator models as ``run_config.algo``.
"""
from __future__ import annotations

import csv
import io
import json
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BeforeValidator, Field, ValidationError, model_validator

from iosim.files import atomic_write_text
from iosim.schedule.problem import ALGOS, CAUSAL_ALIGNS, DQ_MODES, DTYPE_BYTES, GRID_ORDERS, MODES
from iosim.schema import (
    FieldProblem,
    FileModel,
    Line,
    NonNegative,
    NonNegativeInt,
    PositiveInt,
    error_line,
    read_json,
    schema_version,
)

SCHEMA = "iosim-measurement"
SCHEMA_VERSION = 1
# PyTorch's own attention (SDPA's flash and cuDNN backends, FlexAttention): outside references, measured
# and listed, their schedules not modelled
REFERENCE_IMPLS = ("sdpa_flash", "sdpa_cudnn", "flex")
KERNEL_IMPL = "kernel"  # a user's Triton kernel file, modelled as the schedule in run_config.algo
IMPLS = ALGOS + REFERENCE_IMPLS + (KERNEL_IMPL,)
PASSES = ("fwd", "fwd_bwd")
CACHE_CONTROLS = ("all", "none")
PROBLEM_KEYS = ("batch", "heads", "kv_heads", "seq_q", "seq_k", "head_dim", "dtype", "causal", "backward")
_Version = schema_version(SCHEMA_VERSION)


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
    # the requested ncu metrics this GPU's ncu does not know (left out of the run); None: not checked
    ncu_metrics_missing: tuple[str, ...] | None = None

    def __post_init__(self):
        object.__setattr__(self, "command", tuple(self.command))
        if self.ncu_metrics_missing is not None:
            object.__setattr__(self, "ncu_metrics_missing", tuple(self.ncu_metrics_missing))


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
    grid: tuple[int, int, int] | None = None
    block: tuple[int, int, int] | None = None
    registers: int | None = None  # per thread
    shared_bytes: int | None = None  # per block, static + dynamic
    # Added with ncu 2025.3 on the H200; None where not collected (older files, a metric this ncu lacks).
    xbar_read_bytes: float | None = None  # l1tex__m_xbar2l1tex_read_bytes.sum: L2 -> SMs over the crossbar
    xbar_write_bytes: float | None = None  # l1tex__m_l1tex2xbar_write_bytes.sum: SMs -> L2
    l2_lookup_read_sectors: float | None = None  # lts__t_sectors_srcunit_tex_op_read.sum (32-byte sectors)
    l2_lookup_write_sectors: float | None = None  # lts__t_sectors_srcunit_tex_op_write.sum
    l2_lookup_atom_sectors: float | None = None  # lts__t_sectors_srcunit_tex_op_atom.sum
    l2_lookup_red_sectors: float | None = None  # lts__t_sectors_srcunit_tex_op_red.sum
    l2_lookup_read_bytes: float | None = None  # the read sectors x 32
    l2_lookup_write_bytes: float | None = None  # the write sectors x 32
    lrc_in_sectors: float | None = None  # read sectors into the L2 request coalescer (from the SMs)
    lrc_out_sectors: float | None = None  # read sectors the coalescer sent on to the L2 slices
    inst_executed: float | None = None  # smsp__inst_executed.sum: warp instructions
    inst_pipes: dict[str, float] | None = None  # pipe -> smsp__inst_executed_pipe_<pipe>.sum
    local_load_bytes: float | None = None  # l1tex__t_bytes_pipe_lsu_mem_local_op_ld.sum (register spills)
    local_store_bytes: float | None = None  # l1tex__t_bytes_pipe_lsu_mem_local_op_st.sum
    shared_wavefronts: float | None = None  # l1tex__data_pipe_lsu_wavefronts_mem_shared.sum: shared-memory data path
    shared_ops: dict[str, float] | None = None  # op (ld, st, ldsm, ldgsts, ...; <op>_conflicts) -> its wavefronts
    achieved_occupancy_pct: float | None = None  # sm__warps_active.avg.pct_of_peak_sustained_active
    occupancy_limit_registers: float | None = None  # launch__occupancy_limit_registers, CTAs per SM
    occupancy_limit_shared_mem: float | None = None  # launch__occupancy_limit_shared_mem, CTAs per SM
    sm_clock_hz: float | None = None  # sm__cycles_elapsed.avg.per_second during the kernel
    cycles: float | None = None  # sm__cycles_elapsed.max
    # Added 2026-12-05: global loads through L1 (LDG; LDGSTS and TMA bypass it), sectors looked up and those that hit.
    l1_global_load_sectors: float | None = None  # l1tex__t_sectors_pipe_lsu_mem_global_op_ld.sum
    l1_global_load_hit_sectors: float | None = None  # l1tex__t_sectors_pipe_lsu_mem_global_op_ld_lookup_hit.sum
    shared_mem_config_bytes: float | None = None  # launch__shared_mem_config_size: the carve-out the SM ran with

    def __post_init__(self):
        for name in ("grid", "block"):
            value = getattr(self, name)
            if value is not None:
                object.__setattr__(self, name, tuple(value))
        for name in ("inst_pipes", "shared_ops"):
            if getattr(self, name) is not None:
                object.__setattr__(self, name, dict(getattr(self, name)))


@dataclass(frozen=True)
class Counters:
    """Counters of one attention call: sums over its kernels, and the kernels themselves."""

    dram_read_bytes: float
    dram_write_bytes: float
    l2_bytes: float
    l2_hit_rate: float  # percent, weighted by each kernel's l2_bytes
    duration_s: float
    kernels: tuple[KernelCounters, ...] = ()
    # Sums of the kernels' optional counters (SUMMED); None unless every kernel has the counter.
    xbar_read_bytes: float | None = None
    xbar_write_bytes: float | None = None
    l2_lookup_read_sectors: float | None = None
    l2_lookup_write_sectors: float | None = None
    l2_lookup_atom_sectors: float | None = None
    l2_lookup_red_sectors: float | None = None
    l2_lookup_read_bytes: float | None = None
    l2_lookup_write_bytes: float | None = None
    lrc_in_sectors: float | None = None
    lrc_out_sectors: float | None = None
    inst_executed: float | None = None
    local_load_bytes: float | None = None
    local_store_bytes: float | None = None
    shared_wavefronts: float | None = None

    def __post_init__(self):
        object.__setattr__(self, "kernels", tuple(self.kernels))

    @classmethod
    def from_kernels(cls, kernels) -> Counters:
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
            **{name: _sum_or_none(kernels, name) for name in SUMMED},
        )


SUMMED = ("xbar_read_bytes", "xbar_write_bytes", "l2_lookup_read_sectors", "l2_lookup_write_sectors",
          "l2_lookup_atom_sectors", "l2_lookup_red_sectors", "l2_lookup_read_bytes", "l2_lookup_write_bytes",
          "lrc_in_sectors", "lrc_out_sectors", "inst_executed", "local_load_bytes", "local_store_bytes",
          "shared_wavefronts")
# Optional counters written only when known, so that files from before they existed write back unchanged.
_KERNEL_OPTIONAL = (*SUMMED, "inst_pipes", "shared_ops", "achieved_occupancy_pct", "occupancy_limit_registers",
                    "occupancy_limit_shared_mem", "sm_clock_hz", "cycles", "l1_global_load_sectors",
                    "l1_global_load_hit_sectors", "shared_mem_config_bytes")


def _sum_or_none(kernels, name: str) -> float | None:
    """The kernels' sum of an optional counter; None if any kernel lacks it (a partial sum would mislead)."""
    values = [getattr(k, name) for k in kernels]
    return None if not values or any(v is None for v in values) else float(sum(values))


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
    kernel: str | None = None  # impl "kernel": the user's kernel, "path/to/file.py:fn"

    def __post_init__(self):
        object.__setattr__(self, "launches", tuple(self.launches))

    def to_dict(self) -> dict:
        extra = {} if self.kernel is None else {"kernel": self.kernel}
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
            **extra,
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
        if prov["ncu_metrics_missing"] is None:
            del prov["ncu_metrics_missing"]  # not checked: as files from before the check
        else:
            prov["ncu_metrics_missing"] = list(prov["ncu_metrics_missing"])
        return {
            "schema": SCHEMA,
            "schema_version": SCHEMA_VERSION,
            "provenance": prov,
            "cases": [c.to_dict() for c in self.cases],
        }


def _counters_dict(c: Counters) -> dict:
    out = {k: v for k, v in vars(c).items() if k != "kernels" and not (k in SUMMED and v is None)}
    out["kernels"] = []
    for k in c.kernels:
        d = {name: v for name, v in vars(k).items() if not (name in _KERNEL_OPTIONAL and v is None)}
        d["grid"] = None if k.grid is None else list(k.grid)
        d["block"] = None if k.block is None else list(k.block)
        out["kernels"].append(d)
    return out


# --------------------------------------------------------------------------- the schema

_Percent = Annotated[NonNegative, Field(le=100)]


def _triple(value: Any) -> list:
    if (not isinstance(value, list) or len(value) != 3
            or any(isinstance(v, bool) or not isinstance(v, int) or v <= 0 for v in value)):
        raise ValueError(f"must be three positive integers or null, got {value!r}")
    return value


_Triple = Annotated[list[int], BeforeValidator(_triple)]  # a CUDA grid or block shape


class _Provenance(FileModel):
    gpu_name: Line
    driver: Line | None
    cuda: Line | None
    torch: Line | None
    triton: Line | None
    ncu: Line | None
    clock_control: Line | None
    cache_control: Literal[CACHE_CONTROLS] | None
    date: Line
    command: list[str]
    hostname: Line
    ncu_metrics_missing: list[Line] | None = None


class _Timing(FileModel):
    median_s: NonNegative
    p20_s: NonNegative
    p80_s: NonNegative
    warmup_ms: NonNegative
    rep_ms: NonNegative


class _Kernel(FileModel):
    """One kernel's counters; a counter added later is optional and defaults to null, so old files stay readable."""

    name: Line
    dram_read_bytes: NonNegative
    dram_write_bytes: NonNegative
    l2_bytes: NonNegative
    l2_hit_rate: _Percent
    duration_s: NonNegative
    grid: _Triple | None = None
    block: _Triple | None = None
    registers: NonNegativeInt | None = None
    shared_bytes: NonNegativeInt | None = None
    xbar_read_bytes: NonNegative | None = None
    xbar_write_bytes: NonNegative | None = None
    l2_lookup_read_sectors: NonNegative | None = None
    l2_lookup_write_sectors: NonNegative | None = None
    l2_lookup_atom_sectors: NonNegative | None = None
    l2_lookup_red_sectors: NonNegative | None = None
    l2_lookup_read_bytes: NonNegative | None = None
    l2_lookup_write_bytes: NonNegative | None = None
    lrc_in_sectors: NonNegative | None = None
    lrc_out_sectors: NonNegative | None = None
    inst_executed: NonNegative | None = None
    inst_pipes: dict[str, NonNegative] | None = None
    local_load_bytes: NonNegative | None = None
    local_store_bytes: NonNegative | None = None
    shared_wavefronts: NonNegative | None = None
    shared_ops: dict[str, NonNegative] | None = None
    achieved_occupancy_pct: _Percent | None = None
    occupancy_limit_registers: NonNegative | None = None
    occupancy_limit_shared_mem: NonNegative | None = None
    sm_clock_hz: NonNegative | None = None
    cycles: NonNegative | None = None
    l1_global_load_sectors: NonNegative | None = None
    l1_global_load_hit_sectors: NonNegative | None = None
    shared_mem_config_bytes: NonNegative | None = None


class _Counters(FileModel):
    dram_read_bytes: NonNegative
    dram_write_bytes: NonNegative
    l2_bytes: NonNegative
    l2_hit_rate: _Percent
    duration_s: NonNegative
    kernels: list[_Kernel]
    xbar_read_bytes: NonNegative | None = None
    xbar_write_bytes: NonNegative | None = None
    l2_lookup_read_sectors: NonNegative | None = None
    l2_lookup_write_sectors: NonNegative | None = None
    l2_lookup_atom_sectors: NonNegative | None = None
    l2_lookup_red_sectors: NonNegative | None = None
    l2_lookup_read_bytes: NonNegative | None = None
    l2_lookup_write_bytes: NonNegative | None = None
    lrc_in_sectors: NonNegative | None = None
    lrc_out_sectors: NonNegative | None = None
    inst_executed: NonNegative | None = None
    local_load_bytes: NonNegative | None = None
    local_store_bytes: NonNegative | None = None
    shared_wavefronts: NonNegative | None = None


class _Problem(FileModel):
    batch: PositiveInt
    heads: PositiveInt
    kv_heads: PositiveInt
    seq_q: PositiveInt
    seq_k: PositiveInt
    head_dim: PositiveInt
    dtype: Literal[tuple(DTYPE_BYTES)]
    causal: bool
    backward: bool
    page_size: PositiveInt | None = None  # a paged KV cache (flash_decode)
    seq_lens: list[PositiveInt] | None = None  # a variable-length batch: each request's length
    window: PositiveInt | None = None  # local attention: keys a query sees
    causal_align: Literal[CAUSAL_ALIGNS] = "top-left"  # where a causal diagonal sits when seq_q != seq_k


class _Tiling(FileModel):
    """A tiling as written, overrides only (``{}``) or resolved (every tile, warp and stage count)."""

    block_m: PositiveInt | None = None
    block_n: PositiveInt | None = None
    warps: PositiveInt | None = None
    stages: PositiveInt | None = None
    grid_order: Literal[GRID_ORDERS] = "rows"
    splits: PositiveInt | None = None  # flash_decode: the K/V splits launched
    persistent: PositiveInt | None = None  # a persistent forward: the CTAs it launches, each taking tiles in turn


class _RunConfig(FileModel):
    """``RunConfig.to_dict()`` as a kernel reports it, or the plain ``{algo, problem, tiling}`` of an SDPA call."""

    algo: Literal[ALGOS] | None
    problem: _Problem
    tiling: _Tiling | None
    backward_tiling: _Tiling | None = None
    preprocess_tiling: _Tiling | None = None  # a user's backward preprocess as launched (rows per CTA, warps)
    mode: Literal[MODES] = "plain"
    host_tensors: list[str] = []
    dq: Literal[DQ_MODES] = "atomic"  # written only where the backward computes dQ in a kernel of its own
    skips_masked: bool = True  # written only for a user's causal kernel that visits every block


class _Case(FileModel):
    name: Line
    impl: Literal[IMPLS]
    pass_: Literal[PASSES] = Field(alias="pass")
    run_config: _RunConfig
    timing: _Timing | None
    counters: _Counters | None
    counters_error: Line | None
    launches: list[dict[str, Any]]
    error: Line | None
    kernel: Line | None = None

    @model_validator(mode="after")
    def _config_matches_case(self):
        algo = self.run_config.algo
        if (self.impl == KERNEL_IMPL) != (self.kernel is not None):
            raise FieldProblem("kernel", f"must be given exactly when impl is {KERNEL_IMPL!r}")
        if self.impl in REFERENCE_IMPLS and algo is not None:
            raise FieldProblem("run_config.algo", f"must be null for {self.impl}, got {algo!r}")
        if self.impl == KERNEL_IMPL:
            if algo is None:
                raise FieldProblem("run_config.algo", "must name the modelled schedule for a user's kernel")
        elif self.impl not in REFERENCE_IMPLS and algo != self.impl:
            raise FieldProblem("run_config.algo", f"must equal the case's impl {self.impl!r}, got {algo!r}")
        backward = self.pass_ == "fwd_bwd"
        if self.run_config.problem.backward != backward:
            raise FieldProblem("run_config.problem.backward",
                               f"must be {str(backward).lower()} for pass {self.pass_!r}")
        return self


class _MeasurementFile(FileModel):
    schema_: Literal[SCHEMA] = Field(alias="schema")
    schema_version: _Version
    provenance: _Provenance
    cases: list[_Case]


# --------------------------------------------------------------------------- reading


def measurement_from_dict(data, source: str = "<data>") -> Measurement:
    """Validate a decoded measurement document; ``source`` names it in errors.

    The records keep the document's own values (a JSON ``25`` stays the int 25), so a file read
    and written again is unchanged.
    """
    try:
        _MeasurementFile.model_validate(data)
    except ValidationError as e:
        raise MeasurementError(error_line(source, e, _MeasurementFile)) from None
    return Measurement(provenance=Provenance(**data["provenance"]), cases=tuple(map(_case, data["cases"])))


def _case(d: dict) -> Case:
    counters = d["counters"]
    if counters is not None:
        counters = Counters(**{**counters, "kernels": tuple(KernelCounters(**k) for k in counters["kernels"])})
    return Case(name=d["name"], impl=d["impl"], pass_=d["pass"], run_config=d["run_config"],
                timing=None if d["timing"] is None else Timing(**d["timing"]), counters=counters,
                counters_error=d["counters_error"], launches=tuple(d["launches"]), error=d["error"],
                kernel=d.get("kernel"))


def committed_set(gpu: str) -> Path:
    """The measurement file committed for ``gpu`` (``experiments/measurements/<gpu>/``, package data ``iosim.measurements``)."""
    return Path(str(resources.files("iosim.measurements"))) / gpu / "measurements.json"


def load_measurement(path) -> Measurement:
    """Read and validate a measurement file."""
    return measurement_from_dict(read_json(path, MeasurementError), str(path))


# --------------------------------------------------------------------------- writing

CSV_COLUMNS = (
    "name", "impl", "pass", "algo", *PROBLEM_KEYS,
    "block_m", "block_n", "warps", "stages", "grid_order",
    "median_s", "p20_s", "p80_s",
    "dram_read_bytes", "dram_write_bytes", "l2_bytes", "l2_hit_rate", "ncu_duration_s", "kernels",
    "xbar_read_bytes", "xbar_write_bytes", "l2_lookup_read_bytes", "l2_lookup_write_bytes",
    "lrc_in_sectors", "lrc_out_sectors", "inst_executed", "local_load_bytes", "local_store_bytes",
    "counters_error", "error", "kernel",
)
_CSV_SUMMED = ("xbar_read_bytes", "xbar_write_bytes", "l2_lookup_read_bytes", "l2_lookup_write_bytes",
               "lrc_in_sectors", "lrc_out_sectors", "inst_executed", "local_load_bytes", "local_store_bytes")


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
                       kernels=len(k.kernels), **{name: getattr(k, name) for name in _CSV_SUMMED})
        row.update(counters_error=c.counters_error or "", error=c.error or "", kernel=c.kernel or "")
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
