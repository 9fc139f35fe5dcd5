"""A GPU's hardware profile: the numbers that price simulated counts, each with its source.

Profiles are YAML files in ``hardware_profiles/`` (installed as the package data ``iosim.hardware_profiles``; schema_version 1). Every
number is written ``{value, unit, source}`` (optionally ``note``) and converted to base units on
load: bytes, bytes/s, Hz, FLOP/s, seconds, plain counts and fractions. A file that breaks the
schema is refused with a one-line :class:`ProfileError` naming the file and the field.
"""
from __future__ import annotations

import functools
import math
from importlib import resources
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any, Mapping

import yaml

SCHEMA_VERSION = 1
ALIASES = {"a100": "a100-sxm4-80gb", "h100": "h100-sxm", "4090": "rtx4090"}
TENSOR_DTYPES = ("fp16", "bf16", "fp32")  # fp32 means TF32 tensor cores

# Allowed units per dimension, as factors to the base unit. Sizes take decimal (KB = 1e3) and binary
# (KiB = 2**10) prefixes; rates take the decimal prefixes that datasheets quote them in.
UNITS: dict[str, dict[str, int | float]] = {
    "size": {"B": 1, "KB": 10**3, "KiB": 2**10, "MB": 10**6, "MiB": 2**20, "GB": 10**9, "GiB": 2**30,
             "TB": 10**12, "TiB": 2**40},
    "bandwidth": {"B/s": 1, "KB/s": 1e3, "MB/s": 1e6, "GB/s": 1e9, "TB/s": 1e12},
    "frequency": {"Hz": 1, "kHz": 1e3, "MHz": 1e6, "GHz": 1e9},
    "flop rate": {"FLOP/s": 1, "GFLOP/s": 1e9, "TFLOP/s": 1e12, "PFLOP/s": 1e15},
    "time": {"s": 1, "ms": 1e-3, "us": 1e-6, "ns": 1e-9},
    "count": {"count": 1},
    "fraction": {"fraction": 1},
}

# Field -> dimension (None: a string), in display order.
REQUIRED: dict[str, str | None] = {
    "sm_count": "count", "boost_clock": "frequency",
    "smem_per_sm": "size", "smem_per_cta": "size", "regs_per_sm": "count",
    "max_regs_per_thread": "count", "max_ctas_per_sm": "count", "max_warps_per_sm": "count",
    "l2_bytes": "size", "l2_partitions": "count", "l2_bandwidth": "bandwidth",
    "hbm_bytes": "size", "hbm_bandwidth": "bandwidth", "host_link": None, "host_bandwidth": "bandwidth",
    "tensor_flops_fp16": "flop rate", "tensor_flops_bf16": "flop rate", "tensor_flops_fp32": "flop rate",
    "simt_fp32_flops": "flop rate", "sfu_ops_per_clk_per_sm": "count", "launch_overhead": "time",
    "dram_efficiency": "fraction", "l2_efficiency": "fraction", "tensor_efficiency": "fraction",
}
OPTIONAL: dict[str, str | None] = {"l2_dirty_limit": "size", "dram_latency": "time", "l2_latency": "time",
                                   "l2_atomic_bandwidth": "bandwidth", "math_overlap": "fraction",
                                   "tensor_efficiency_bwd": "fraction", "cta_load_bandwidth": "bandwidth"}
_ENTRY_KEYS = ("value", "unit", "source", "note")
_TOP_KEYS = ("schema_version", "name", "arch", "fields", "calibration")
_ATTR = {"boost_clock": "clock_hz"}  # YAML field -> Profile attribute where the names differ


class ProfileError(ValueError):
    """A profile that cannot be used; the one-line message names the file and the field."""

    def __init__(self, message: str, file: str | None = None, field: str | None = None):
        super().__init__(": ".join(p for p in (file, field, message) if p))
        self.file, self.field = file, field


@dataclass(frozen=True)
class Profile:
    """One GPU, in base units: bytes, B/s, Hz, FLOP/s, seconds; fractions of the peaks in (0, 1]."""

    id: str
    name: str
    arch: str
    path: Path
    sm_count: int
    clock_hz: float
    smem_per_sm: int
    smem_per_cta: int
    regs_per_sm: int
    max_regs_per_thread: int
    max_ctas_per_sm: int
    max_warps_per_sm: int
    l2_bytes: int
    l2_partitions: int
    l2_bandwidth: float
    hbm_bytes: int
    hbm_bandwidth: float
    host_bandwidth: float
    host_link: str
    tensor_flops: Mapping[str, float] = field(hash=False)  # keyed by TENSOR_DTYPES; dense, FP32 accumulate
    simt_fp32_flops: float
    sfu_ops_per_clk_per_sm: int
    launch_overhead: float
    dram_efficiency: float
    l2_efficiency: float
    tensor_efficiency: float
    l2_dirty_limit: int | None = None
    dram_latency: float | None = None  # load-to-use latency of a DRAM access, one dependent load at a time
    l2_latency: float | None = None  # the same for an L2 hit
    l2_atomic_bandwidth: float | None = None  # fp32 atomic-add payload the L2 sustains, B/s
    tensor_efficiency_bwd: float | None = None  # tensor_efficiency for the backward's tile shapes
    cta_load_bandwidth: float | None = None  # bytes/s one CTA moves when its loads are not pipelined
    math_overlap: float | None = None  # share of the shorter of tensor-core / SIMT+SFU time hidden by co-resident CTAs
    sources: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}), hash=False, repr=False)
    calibration: Mapping[str, Any] | None = field(default=None, hash=False, repr=False)

    @property
    def sfu_rate(self) -> float:
        """Special-function results (exp2, rcp, ...) per second over the whole GPU."""
        return self.sfu_ops_per_clk_per_sm * self.sm_count * self.clock_hz

    @property
    def peak_dram_bandwidth(self) -> float:
        """Achievable DRAM bytes/s: the datasheet bandwidth times its measured efficiency."""
        return self.hbm_bandwidth * self.dram_efficiency

    @property
    def peak_l2_bandwidth(self) -> float:
        return self.l2_bandwidth * self.l2_efficiency

    def peak_tensor_flops(self, dtype: str) -> float:
        """Achievable dense tensor-core FLOP/s for ``dtype`` (fp16, bf16, or fp32 meaning TF32)."""
        if dtype not in self.tensor_flops:
            raise ValueError(f"dtype(={dtype!r}) must be one of {', '.join(self.tensor_flops)}")
        return self.tensor_flops[dtype] * self.tensor_efficiency

    def value(self, name: str) -> Any:
        """The base-unit value of a YAML field name (``boost_clock``, ``tensor_flops_bf16``, ...)."""
        if name.startswith("tensor_flops_"):
            return self.tensor_flops[name.removeprefix("tensor_flops_")]
        return getattr(self, _ATTR.get(name, name))

    def summary_rows(self) -> list[tuple[str, str, str]]:
        """``(field, value with unit, source)`` for every field present, in schema order."""
        rows = []
        for name, dim in {**REQUIRED, **OPTIONAL}.items():
            v = self.value(name)
            if v is not None:
                rows.append((name, v if dim is None else format_quantity(v, dim), self.sources[name]))
        return rows


def format_quantity(value: float, dim: str) -> str:
    """A base-unit value written with the largest unit of ``dim`` that keeps it >= 1."""
    if dim == "count":
        return str(value)
    if dim == "fraction":
        return f"{value:.4g}"
    units = sorted(UNITS[dim].items(), key=lambda kv: -kv[1])
    if dim == "size":  # the largest unit that divides it exactly, binary first: 50 MiB, 80 GB
        return next((f"{value // f} {u}" for u, f in units if value >= f and value % f == 0), f"{value} B")
    unit, f = next(((u, f) for u, f in units if value >= f), units[-1])
    return f"{value / f:.4g} {unit}"


def profile_dir() -> Path:
    """The built-in profiles: the package data ``iosim.hardware_profiles`` (``hardware_profiles/`` in the repository)."""
    return Path(str(resources.files("iosim.hardware_profiles")))


def builtin_profiles() -> list[str]:
    return sorted(p.stem for p in profile_dir().glob("*.yaml"))


def resolve_profile_path(name_or_path: str | Path) -> Path:
    """A built-in id or alias (``h100``), or a path to a YAML file (anything with / or .yaml)."""
    text = str(name_or_path)
    if isinstance(name_or_path, Path) or "/" in text or text.endswith((".yaml", ".yml")):
        path = Path(text).expanduser()
        if not path.is_file():
            raise ProfileError("no such profile file", file=text)
        return path.resolve()
    key = ALIASES.get(text.lower(), text.lower())
    path = profile_dir() / f"{key}.yaml"
    if not path.is_file():
        aliases = ", ".join(f"{a} -> {b}" for a, b in ALIASES.items())
        raise ProfileError(f"unknown profile {text!r}; available: {', '.join(builtin_profiles())} "
                           f"(aliases: {aliases}) or a path to a .yaml file")
    return path


def load_profile(name_or_path: str | Path) -> Profile:
    """Load and validate a profile; cached per file until the file changes."""
    path = resolve_profile_path(name_or_path)
    st = path.stat()
    return _load_cached(path, st.st_mtime_ns, st.st_size)


@functools.lru_cache(maxsize=64)
def _load_cached(path: Path, mtime_ns: int, size: int) -> Profile:
    return build_profile(read_profile_dict(path), path)


def read_profile_dict(name_or_path: str | Path) -> dict:
    """The raw YAML mapping of a profile, a fresh copy a caller may edit and pass to write_profile."""
    path = resolve_profile_path(name_or_path)
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as e:
        raise ProfileError("malformed YAML: " + " ".join(str(e).split()), file=_label(path)) from None
    except OSError as e:
        raise ProfileError(f"cannot read: {e.strerror}", file=_label(path)) from None
    return data


def write_profile(profile_dict: Mapping, path: str | Path, comment: str | None = None) -> Path:
    """Validate ``profile_dict`` and write it as a schema-1 YAML file, one line per field."""
    path = Path(path)
    build_profile(profile_dict, path)
    head = "".join(f"# {line}\n" for line in comment.splitlines()) if comment else ""
    body = yaml.dump(dict(profile_dict), Dumper=_Dumper, sort_keys=False, allow_unicode=True, width=10**6)
    path.write_text(head + body)
    return path


class _Dumper(yaml.SafeDumper):
    """Writes each field entry ``{value, unit, source}`` as a one-line flow mapping."""


def _represent_dict(dumper: yaml.SafeDumper, data: Mapping) -> yaml.Node:
    flow = "value" in data and "source" in data
    return dumper.represent_mapping("tag:yaml.org,2002:map", dict(data), flow_style=flow)


_Dumper.add_representer(dict, _represent_dict)
_Dumper.add_representer(MappingProxyType, _represent_dict)


def _label(path: Path) -> str:
    return path.name if path.parent == profile_dir() else str(path)


def build_profile(data: Any, path: Path) -> Profile:
    """Validate a raw profile mapping (as read from YAML) and convert it to a :class:`Profile`."""
    file = _label(Path(path))
    if not isinstance(data, Mapping):
        raise ProfileError(f"the top level must be a mapping with keys {', '.join(_TOP_KEYS)}", file=file)
    for key in data:
        if key not in _TOP_KEYS:
            raise ProfileError(f"unknown top-level key; allowed: {', '.join(_TOP_KEYS)}", file, str(key))
    version = data.get("schema_version")
    if version != SCHEMA_VERSION:
        got = "missing" if version is None else f"unsupported version {version!r}"
        raise ProfileError(f"{got}; this loader reads schema_version {SCHEMA_VERSION}", file,
                           "schema_version")
    for key in ("name", "arch"):
        if not isinstance(data.get(key), str) or not data[key].strip():
            raise ProfileError("must be a non-empty string", file, key)
    fields_ = data.get("fields")
    if not isinstance(fields_, Mapping):
        raise ProfileError("must be a mapping of field name -> {value, unit, source}", file, "fields")
    calibration = data.get("calibration")
    if calibration is not None and not isinstance(calibration, Mapping):
        raise ProfileError("must be a mapping (free-form provenance)", file, "calibration")
    schema = {**REQUIRED, **OPTIONAL}
    for name in fields_:
        if name not in schema:
            raise ProfileError(f"unknown field; known fields: {', '.join(schema)}", file, f"fields.{name}")
    for name in REQUIRED:
        if name not in fields_:
            raise ProfileError("missing required field", file, f"fields.{name}")
    values = {name: _parse_entry(fields_[name], dim, file, f"fields.{name}")
              for name, dim in schema.items() if name in fields_}
    kwargs = {_ATTR.get(n, n): v for n, v in values.items() if not n.startswith("tensor_flops_")}
    return Profile(
        id=Path(path).stem, name=data["name"], arch=data["arch"], path=Path(path),
        tensor_flops=MappingProxyType({d: values[f"tensor_flops_{d}"] for d in TENSOR_DTYPES}),
        sources=MappingProxyType({n: fields_[n]["source"] for n in values}),
        calibration=None if calibration is None else MappingProxyType(dict(calibration)),
        **kwargs,
    )


def _parse_entry(entry: Any, dim: str | None, file: str, where: str) -> int | float | str:
    """One ``{value, unit, source}`` entry, checked and converted to the dimension's base unit."""
    if not isinstance(entry, Mapping):
        raise ProfileError(f"must be a mapping {{value, unit, source}}, got {entry!r}", file, where)
    for key in entry:
        if key not in _ENTRY_KEYS:
            raise ProfileError(f"unknown key {key!r}; allowed: {', '.join(_ENTRY_KEYS)}", file, where)
    source = entry.get("source")
    if not isinstance(source, str) or not source.strip():
        raise ProfileError("missing source; give the document and section, or 'measured: <file/command>'",
                           file, where)
    value, unit = entry.get("value"), entry.get("unit")
    if dim is None:
        if unit is not None:
            raise ProfileError("a string field takes no unit", file, where)
        if not isinstance(value, str) or not value.strip():
            raise ProfileError(f"value must be a non-empty string, got {value!r}", file, where)
        return value
    allowed = UNITS[dim]
    if unit is None:
        raise ProfileError(f"missing unit; allowed: {', '.join(allowed)}", file, where)
    if unit not in allowed:
        raise ProfileError(f"unit {unit!r} is not a {dim}; allowed: {', '.join(allowed)}", file, where)
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ProfileError(f"value must be a number, got {value!r}", file, where)
    if not math.isfinite(value) or value <= 0:
        raise ProfileError(f"value must be > 0, got {value!r}", file, where)
    if dim == "fraction" and value > 1:
        raise ProfileError(f"a fraction must be in (0, 1], got {value!r}", file, where)
    base = value * allowed[unit]
    if dim in ("count", "size"):
        whole = round(base)
        if abs(base - whole) > 1e-9 * base:
            what = "a count must be a whole number" if dim == "count" else "not a whole number of bytes"
            raise ProfileError(f"{what}, got {value!r} {unit}", file, where)
        return int(whole)
    return float(base)
