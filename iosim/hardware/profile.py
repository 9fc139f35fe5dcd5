"""A GPU's hardware profile: the numbers that price simulated counts, each with its source.

Profiles are YAML files in ``hardware_profiles/`` (installed as the package data ``iosim.hardware_profiles``; schema_version 1). Every
number is written ``{value, unit, source}`` (optionally ``note``) and converted to base units on
load: bytes, bytes/s, Hz, FLOP/s, seconds, plain counts and fractions. A file that breaks the
schema is refused with a one-line :class:`ProfileError` naming the file and the field; the schema is
declared once, as the pydantic models at the end of this module (:mod:`iosim.schema`).
"""
from __future__ import annotations

import functools
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Annotated, Any, ClassVar

import yaml
from pydantic import AfterValidator, ValidationError, create_model, model_validator

from iosim.hardware.catalog import ALIASES, ProfileError, builtin_profiles, profile_dir, resolve_profile_path
from iosim.hardware.catalog import label as _label
from iosim.hardware.units import UNITS, format_quantity, to_base
from iosim.schema import FieldProblem, FileModel, Line, Number, Text, dotted, explain, schema_version, unreadable

SCHEMA_VERSION = 1
TENSOR_DTYPES = ("fp16", "bf16", "fp32")  # fp32 means TF32 tensor cores
OPTIONAL_TENSOR_DTYPES = ("fp8",)  # e4m3 products: a GPU without fp8 tensor cores leaves the field out

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
OPTIONAL: dict[str, str | None] = {"l2_dirty_limit": "size", "l2_sweep_bytes": "size", "dram_latency": "time", "l2_latency": "time",
                                   "l2_atomic_bandwidth": "bandwidth", "math_overlap": "fraction",
                                   "tensor_efficiency_bwd": "fraction", "cta_load_bandwidth": "bandwidth",
                                   "sm_clock": "frequency", "tensor_efficiency_solo": "fraction",
                                   "fp32_lanes_per_sm": "count", "int32_lanes_per_sm": "count",
                                   "lsu_lanes_per_sm": "count", "smem_bytes_per_clk_per_sm": "count",
                                   "lrc_sms": "count", "lrc_inflight_lookups": "fraction",
                                   "lrc_pair_lookups": "fraction", "lrc_group_lookups": "fraction",
                                   "lrc_later_pair_lookups": "fraction", "lrc_later_group_lookups": "fraction",
                                   "lrc_group_ctas": "count", "l1_bytes": "size",
                                   "kernel_start_overhead": "time", "dram_write_efficiency": "fraction",
                                   "l2_write_efficiency": "fraction", "dram_read_efficiency": "fraction",
                                   "ncu_launch_overhead": "time", "tensor_flops_fp8": "flop rate",
                                   "cta_pace_spread": "spread", "smem_carveout_min": "size"}
# Optional fields that list several numbers of one dimension: field -> that dimension
LISTED: dict[str, str] = {"smem_carveouts": "size"}
# Optional fields that are measured curves, rows of (L1 size, bytes cycled / that size, share of reloads that hit):
# field -> the dimension of the first column
CURVES: dict[str, str] = {"l1_cycle_hits": "size"}
_ATTR = {"boost_clock": "clock_hz"}  # YAML field -> Profile attribute where the names differ


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
    tensor_flops: Mapping[str, float] = field(hash=False)  # keyed by TENSOR_DTYPES (and fp8 where it has it); dense, FP32 accumulate
    simt_fp32_flops: float
    sfu_ops_per_clk_per_sm: int
    launch_overhead: float
    dram_efficiency: float
    l2_efficiency: float
    tensor_efficiency: float
    l2_dirty_limit: int | None = None
    l2_sweep_bytes: int | None = None  # a private cyclic read sweep this large misses half its second pass (measured)
    dram_latency: float | None = None  # load-to-use latency of a DRAM access, one dependent load at a time
    l2_latency: float | None = None  # the same for an L2 hit
    l2_atomic_bandwidth: float | None = None  # fp32 atomic-add payload the L2 sustains, B/s
    tensor_efficiency_bwd: float | None = None  # tensor_efficiency for the backward's tile shapes
    cta_load_bandwidth: float | None = None  # bytes/s one CTA moves when its loads are not pipelined
    math_overlap: float | None = None  # share of the shorter of tensor-core / SIMT time co-resident CTAs hide (measured)
    sm_clock: float | None = None  # SM clock sustained under load, Hz (issue cycles become seconds at it)
    tensor_efficiency_solo: float | None = None  # tensor_efficiency with one CTA alone on its SM
    fp32_lanes_per_sm: int | None = None  # FP32 (FMA pipe) results per clock per SM
    int32_lanes_per_sm: int | None = None  # ALU pipe (INT32, compare, select, min/max) results per clock per SM
    lsu_lanes_per_sm: int | None = None  # load/store unit threads per clock per SM
    smem_bytes_per_clk_per_sm: int | None = None  # shared-memory data path per SM: one wavefront of this many bytes a clock
    lrc_sms: int | None = None  # SMs whose identical L2 requests, in flight together, the request coalescer merges
    lrc_inflight_lookups: float | None = None  # lookups per CTA reading a line whose fill is in flight (merged in it)
    lrc_pair_lookups: float | None = None  # lookups a load of a first-wave pair of CTAs in lockstep on present lines
    lrc_group_lookups: float | None = None  # the same for a first-wave group of lrc_group_ctas
    lrc_later_pair_lookups: float | None = None  # lrc_pair_lookups for CTAs launched together after the first wave
    lrc_later_group_lookups: float | None = None  # lrc_group_lookups for CTAs launched together after the first wave
    lrc_group_ctas: int | None = None  # CTAs of the group the *_group_lookups were measured on
    l1_bytes: int | None = None  # L1 data cache and shared memory together, per SM (what shared memory leaves is L1)
    kernel_start_overhead: float | None = None  # seconds once per kernel inside its duration (first wave's dispatch, cold caches, fill, exit)
    dram_write_efficiency: float | None = None  # a write-only DRAM stream's share of hbm_bandwidth (measured)
    l2_write_efficiency: float | None = None  # all SMs storing into L2-resident lines: share of l2_bandwidth (measured)
    dram_read_efficiency: float | None = None  # a read-only DRAM stream's share of hbm_bandwidth (measured)
    ncu_launch_overhead: float | None = None  # an empty kernel's duration as Nsight Compute reports it (profiled alone)
    cta_pace_spread: float | None = None  # how far one CTA's pace over its loop strays from its neighbours' (measured)
    # the shared-memory capacities an SM's unified L1/shared memory may be configured to (the carve-outs), increasing
    smem_carveouts: tuple[int, ...] | None = None
    # the smallest of them the driver configures for a kernel that asks for none (measured from launch records)
    smem_carveout_min: int | None = None
    # (L1 bytes, bytes an SM cycles through / L1 bytes, share of reloads that hit L1), by L1 size, then the ratio:
    # how much of a set read again and again an SM's L1 keeps (iosim.kernels.l1_probe)
    l1_cycle_hits: tuple[tuple[int, float, float], ...] | None = None
    sources: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}), hash=False, repr=False)
    calibration: Mapping[str, Any] | None = field(default=None, hash=False, repr=False)

    @property
    def issue_clock_hz(self) -> float:
        """The clock at which instructions issue: measured under load where calibrated, else the boost clock."""
        return self.sm_clock or self.clock_hz

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

    @property
    def dram_write_bandwidth(self) -> float | None:
        """DRAM bytes/s a stream of writes alone sustains, where measured."""
        return self.hbm_bandwidth * self.dram_write_efficiency if self.dram_write_efficiency else None

    @property
    def dram_read_bandwidth(self) -> float | None:
        """DRAM bytes/s a stream of reads alone sustains, where measured."""
        return self.hbm_bandwidth * self.dram_read_efficiency if self.dram_read_efficiency else None

    @property
    def l2_write_bandwidth(self) -> float | None:
        """Bytes/s the SMs store into the L2, where measured."""
        return self.l2_bandwidth * self.l2_write_efficiency if self.l2_write_efficiency else None

    def peak_tensor_flops(self, dtype: str) -> float:
        """Achievable dense tensor-core FLOP/s for ``dtype`` (fp16, bf16, fp32 meaning TF32, or fp8 where it has it)."""
        if dtype not in self.tensor_flops:
            raise ValueError(f"dtype(={dtype!r}) must be one of {', '.join(self.tensor_flops)}")
        return self.tensor_flops[dtype] * self.tensor_efficiency

    def value(self, name: str) -> Any:
        """The base-unit value of a YAML field name (``boost_clock``, ``tensor_flops_bf16``, ...)."""
        if name.startswith("tensor_flops_"):  # None for a dtype it has no tensor cores for (fp8 on an A100)
            return self.tensor_flops.get(name.removeprefix("tensor_flops_"))
        return getattr(self, _ATTR.get(name, name))

    def summary_rows(self) -> list[tuple[str, str, str]]:
        """``(field, value with unit, source)`` for every field present, in schema order."""
        rows = []
        for name, dim in {**REQUIRED, **OPTIONAL, **LISTED, **CURVES}.items():
            v = self.value(name)
            if v is None:
                continue
            if name in LISTED:  # one unit for the list: the largest that writes every non-zero value exactly
                shown = format_quantity(max(v), dim).split()[-1]
                factor = UNITS[dim][shown]
                v = f"{', '.join(f'{x / factor:g}' for x in v)} {shown}"
            elif name in CURVES:  # by L1 size: the ratios and hits in one line
                v = "; ".join(f"{format_quantity(size, dim)}: " + ", ".join(f"{r:g} -> {h:g}" for c, r, h in v if c == size)
                              for size in sorted({row[0] for row in v}))
            elif dim is not None:
                v = format_quantity(v, dim)
            rows.append((name, v, self.sources[name]))
        return rows


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
        return yaml.load(path.read_text(encoding="utf-8"), Loader=_UniqueKeyLoader)
    except _DuplicateKey as e:
        raise ProfileError(str(e), _label(path), e.where) from None
    except yaml.YAMLError as e:
        raise ProfileError("malformed YAML: " + " ".join(str(e).split()), file=_label(path)) from None
    except (OSError, UnicodeDecodeError) as e:
        raise ProfileError(unreadable(e), file=_label(path)) from None


class _DuplicateKey(ValueError):
    """A mapping that names one key twice (PyYAML would silently keep the last)."""

    def __init__(self, where: str, message: str):
        super().__init__(message)
        self.where = where


class _UniqueKeyLoader(getattr(yaml, "CSafeLoader", yaml.SafeLoader)):
    """SafeLoader (LibYAML's parser where PyYAML was built with it: a profile in a tenth of the time) that refuses
    a mapping with a repeated key, naming its dotted path."""

    def construct_document(self, node):
        _refuse_duplicates(node, (), set())
        return super().construct_document(node)


def _refuse_duplicates(node: yaml.Node, path: tuple, seen_nodes: set) -> None:
    if id(node) in seen_nodes:  # an alias met again
        return
    seen_nodes.add(id(node))
    if isinstance(node, yaml.MappingNode):
        lines: dict[str, int] = {}
        for key_node, value_node in node.value:
            key = key_node.value if isinstance(key_node, yaml.ScalarNode) else None
            line = key_node.start_mark.line + 1
            if key is not None and key in lines:
                raise _DuplicateKey(dotted((*path, key)), f"duplicate key (lines {lines[key]} and {line}); "
                                                          "YAML would keep only the last")
            if key is not None:
                lines[key] = line
            _refuse_duplicates(value_node, (*path, key), seen_nodes)
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            _refuse_duplicates(item, (*path, i), seen_nodes)


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


def build_profile(data: Any, path: Path) -> Profile:
    """Validate a raw profile mapping (as read from YAML) and convert it to a :class:`Profile`."""
    file = _label(Path(path))
    try:
        doc = _ProfileFile.model_validate(data)
    except ValidationError as e:
        where, message = explain(e, _ProfileFile)
        raise ProfileError(message, file, where) from None
    entries = {name: getattr(doc.fields, name) for name in {**REQUIRED, **OPTIONAL, **LISTED, **CURVES}
               if getattr(doc.fields, name) is not None}
    values = {name: entry.base for name, entry in entries.items()}
    _check_lockstep_shares(values, file)
    kwargs = {_ATTR.get(n, n): v for n, v in values.items() if not n.startswith("tensor_flops_")}
    return Profile(
        id=profile_id(Path(path)), name=doc.name, arch=doc.arch, path=Path(path),
        tensor_flops=MappingProxyType({d: values[f"tensor_flops_{d}"] for d in TENSOR_DTYPES + OPTIONAL_TENSOR_DTYPES
                                       if f"tensor_flops_{d}" in values}),
        sources=MappingProxyType({n: e.source for n, e in entries.items()}),
        calibration=None if doc.calibration is None else MappingProxyType(dict(data["calibration"])),
        **kwargs,
    )


LOCKSTEP_FIELDS = ("lrc_pair_lookups", "lrc_group_lookups", "lrc_later_pair_lookups", "lrc_later_group_lookups",
                   "lrc_group_ctas")


def _check_lockstep_shares(values: Mapping, file: str) -> None:
    """The pair probe's fields come together (the engine interpolates between a pair and the group), at a group of
    three CTAs or more."""
    given = [f for f in LOCKSTEP_FIELDS if f in values]
    if given and len(given) < len(LOCKSTEP_FIELDS):
        missing = ", ".join(f for f in LOCKSTEP_FIELDS if f not in values)
        raise ProfileError(f"set with {', '.join(given)}; the pair probe's fields go together, missing: {missing}",
                           file, f"fields.{given[0]}")
    if given and values["lrc_group_ctas"] < 3:
        raise ProfileError(f"must be at least 3 (the group the *_group_lookups hold at, beyond a pair), got "
                           f"{values['lrc_group_ctas']:g}", file, "fields.lrc_group_ctas")


def profile_id(path: Path) -> str:
    """How results name a profile: its file's stem; a user's file named like a built-in one by its path,
    so that the two are never labelled the same."""
    path = Path(path)
    if path.parent != profile_dir() and path.stem in builtin_profiles():
        return str(path)
    return path.stem


# --------------------------------------------------------------------------- the schema


def _source(text: str) -> str:
    if not text.strip():
        raise ValueError("must name the document and section, or 'measured: <file/command>'")
    return text


_Source = Annotated[Line, AfterValidator(_source)]


class _Quantity(FileModel):
    """One number of a profile, ``{value, unit, source[, note]}``; subclasses fix its dimension."""

    dim: ClassVar[str]
    value: Number
    unit: str | None = None  # None only to say "missing unit" with the allowed ones
    source: _Source
    note: Line | None = None

    @model_validator(mode="after")
    def _unit_and_range(self):
        if self.unit is None:
            raise ValueError(f"missing unit; allowed: {', '.join(UNITS[self.dim])}")
        to_base(self.value, self.unit, self.dim)
        return self

    @property
    def base(self) -> int | float:
        return to_base(self.value, self.unit, self.dim)


class _Label(FileModel):
    """One string of a profile (``host_link``), ``{value, source[, note]}``."""

    value: Text
    unit: str | None = None
    source: _Source
    note: Line | None = None

    @model_validator(mode="after")
    def _no_unit(self):
        if self.unit is not None:
            raise ValueError("a string field takes no unit")
        return self

    @property
    def base(self) -> str:
        return self.value


class _Several(FileModel):
    """What a field of several numbers has beside them: a unit of its dimension, its source and a note."""

    dim: ClassVar[str]
    unit: str | None = None
    source: _Source
    note: Line | None = None

    def _require_unit(self) -> None:
        if self.unit is None:
            raise ValueError(f"missing unit; allowed: {', '.join(UNITS[self.dim])}")


class _QuantityList(_Several):
    """Several numbers of one dimension, ``{value: [...], unit, source[, note]}``, in increasing order; 0 allowed
    (a shared-memory carve-out of none)."""

    value: list[Number]

    @model_validator(mode="after")
    def _unit_and_order(self):
        self._require_unit()
        if not self.value:
            raise ValueError("must list at least one value")
        for v in self.value:
            if v != 0:
                to_base(v, self.unit, self.dim)
        if any(b <= a for a, b in zip(self.value, self.value[1:])):
            raise ValueError(f"must be in increasing order, each value once, got {self.value}")
        return self

    @property
    def base(self) -> tuple:
        return tuple(0 if v == 0 else to_base(v, self.unit, self.dim) for v in self.value)


_LIST_ENTRY = {dim: type(f"_{dim.title()}List", (_QuantityList,), {"dim": dim, "__module__": __name__})
               for dim in set(LISTED.values())}


class _Curve(_Several):
    """A measured curve, ``{value: [[size, ratio, share], ...], unit, source[, note]}``: ``unit`` the first column's
    (the L1 size each row was measured at), the ratio > 0, the share in [0, 1]; rows by size, then ratio, each once."""

    value: list[list[Number]]

    @model_validator(mode="after")
    def _rows(self):
        self._require_unit()
        if not self.value:
            raise ValueError("must list at least one row")
        for row in self.value:
            if len(row) != 3:
                raise ValueError(f"each row must be [size, ratio, share], got {row}")
            size, ratio, share = row
            to_base(size, self.unit, self.dim)
            if not ratio > 0 or not 0 <= share <= 1:
                raise ValueError(f"each row's ratio must be > 0 and share in [0, 1], got {row}")
        keys = [tuple(row[:2]) for row in self.value]
        if any(b <= a for a, b in zip(keys, keys[1:])):
            raise ValueError(f"rows must be in increasing order of size, then ratio, each once, got {keys}")
        return self

    @property
    def base(self) -> tuple:
        return tuple((to_base(size, self.unit, self.dim), float(ratio), float(share)) for size, ratio, share in self.value)


_CURVE_ENTRY = {dim: type(f"_{dim.title()}Curve", (_Curve,), {"dim": dim, "__module__": __name__})
                for dim in set(CURVES.values())}

_ENTRY = {dim: type(f"_{dim.title().replace(' ', '')}", (_Quantity,), {"dim": dim, "__module__": __name__})
          for dim in UNITS}


class _FieldsBase(FileModel):
    """Relations between fields that hold on every GPU."""

    @model_validator(mode="after")
    def _relations(self):
        def base(name):
            entry = getattr(self, name)
            return None if entry is None else entry.base

        for small, op, big in (("smem_per_cta", "<=", "smem_per_sm"), ("l2_bytes", "<", "hbm_bytes"),
                               ("l2_dirty_limit", "<=", "l2_bytes"), ("l2_sweep_bytes", "<=", "l2_bytes")):
            a, b = base(small), base(big)
            if a is not None and not (a <= b if op == "<=" else a < b):
                raise FieldProblem(small, f"must be {op} {big} ({format_quantity(b, 'size')}), "
                                          f"got {format_quantity(a, 'size')}")
        carveouts, most_smem = base("smem_carveouts"), base("smem_per_sm")
        if carveouts is not None and most_smem is not None and carveouts[-1] > most_smem:
            raise FieldProblem("smem_carveouts", f"must be <= smem_per_sm ({format_quantity(most_smem, 'size')}), "
                                                 f"got {format_quantity(carveouts[-1], 'size')}")
        regs, most = base("regs_per_sm"), base("max_regs_per_thread")
        if regs is not None and most is not None and regs < 32 * most:
            raise FieldProblem("regs_per_sm", f"must hold one warp at max_regs_per_thread ({most} x 32 = "
                                              f"{32 * most}), got {regs}")
        return self


_Fields = create_model(
    "_Fields", __base__=_FieldsBase, __module__=__name__,
    **{name: (_ENTRY[dim] if dim else _Label, ...) for name, dim in REQUIRED.items()},
    **{name: (_ENTRY[dim] if dim else _Label, None) for name, dim in OPTIONAL.items()},
    **{name: (_LIST_ENTRY[dim], None) for name, dim in LISTED.items()},
    **{name: (_CURVE_ENTRY[dim], None) for name, dim in CURVES.items()},
)


_Version = schema_version(SCHEMA_VERSION)


class _ProfileFile(FileModel):
    """A profile file, schema_version 1."""

    schema_version: _Version
    name: Text
    arch: Text
    fields: _Fields
    calibration: dict[str, Any] | None = None  # free-form provenance of calibrated values


# Re-exported from iosim.hardware.catalog and iosim.hardware.units, so one import serves a caller.
__all__ = ["ALIASES", "CURVES", "LISTED", "OPTIONAL", "REQUIRED", "SCHEMA_VERSION", "TENSOR_DTYPES", "UNITS", "Profile", "ProfileError",
           "build_profile", "builtin_profiles", "format_quantity", "load_profile", "profile_dir", "read_profile_dict",
           "resolve_profile_path", "write_profile"]
