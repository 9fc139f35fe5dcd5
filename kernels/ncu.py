"""Nsight Compute's raw CSV export, read: one row per kernel in base units, kernels grouped by case through NVTX tags.

``ncu --import R --csv --page raw --print-units base`` prints one row per kernel with every
collected metric (bytes, ns, percent) and, since ``--nvtx`` was on, the NVTX ranges the kernel ran
in; the ``iosim-case-<i>`` tag there says which case a kernel belongs to. We chose this text export
over NVIDIA's ``ncu_report`` module (``<ncu>/extras/python``, which does import on the GPU machine)
because the export is plain text that the tests parse from a committed fixture on machines without
ncu or its compiled ``_ncu_report.so``, and one subprocess call replaces a dependency on a module
found by path at run time. NVIDIA's ``nsight-python`` (which drives ncu from Python and returns
data frames) was the other candidate: it is not on the GPU machine, which cannot install packages,
and it profiles annotated Python functions where we need one ncu start for a whole batch of cases.
The price of the text export is unit handling (a small table) and thousands separators, both
covered by the fixture, which is cut from a real export (H200, ncu 2025.3.1, 2026-11-25).

Pure: no torch, no ncu; :mod:`iosim.kernels.profiler` runs ncu and hands its output here.
"""
from __future__ import annotations

import csv
import io
import re

from iosim.measure.measurement import Counters, KernelCounters

# The counters every run asks for (known on the H100 and H200 since the first data set).
BASE_METRICS = (
    "dram__bytes_read.sum", "dram__bytes_write.sum", "lts__t_bytes.sum", "lts__t_sector_hit_rate.pct",
    "gpu__time_duration.sum", "launch__registers_per_thread",
    "launch__shared_mem_per_block_static", "launch__shared_mem_per_block_dynamic",
)
# Pipes whose warp instructions are counted: smsp__inst_executed_pipe_<pipe>.sum. On sm_90 the tensor
# pipe is split by instruction (hmma: mma.sync; gmma: wgmma); ncu names that a chip lacks are dropped.
PIPES = ("tensor", "tensor_op_gmma", "fma", "fp16", "alu", "xu", "lsu", "uniform", "adu", "cbu")
# KernelCounters field -> candidate metrics, the first one this ncu knows wins. The L2 request
# coalescer's (LRC, Hopper) names are not documented in one place; besides these, any ``lrc__*sectors*``
# metric the GPU lists is collected and the first read-in/read-out pair found is used (see lrc_metrics).
OPTIONAL_FIELDS = {
    "xbar_read_bytes": ("l1tex__m_xbar2l1tex_read_bytes.sum",),
    "xbar_write_bytes": ("l1tex__m_l1tex2xbar_write_bytes.sum",),
    "l2_lookup_read_sectors": ("lts__t_sectors_srcunit_tex_op_read.sum",),
    "l2_lookup_write_sectors": ("lts__t_sectors_srcunit_tex_op_write.sum",),
    "l2_lookup_atom_sectors": ("lts__t_sectors_srcunit_tex_op_atom.sum",),
    "l2_lookup_red_sectors": ("lts__t_sectors_srcunit_tex_op_red.sum",),
    "lrc_in_sectors": ("lrc__xbar2lrc_sectors_op_read.sum", "lrc__t_sectors_op_read.sum", "lrc__t_sectors.sum"),
    "lrc_out_sectors": ("lrc__lrc2lts_sectors_op_read.sum", "lrc__xbar2gpc_sectors_op_read.sum",
                        "lrc__lts2lrc_sectors_op_read.sum"),
    "inst_executed": ("smsp__inst_executed.sum",),
    "local_load_bytes": ("l1tex__t_bytes_pipe_lsu_mem_local_op_ld.sum",),
    "local_store_bytes": ("l1tex__t_bytes_pipe_lsu_mem_local_op_st.sum",),
    "shared_wavefronts": ("l1tex__data_pipe_lsu_wavefronts_mem_shared.sum",),
    "achieved_occupancy_pct": ("sm__warps_active.avg.pct_of_peak_sustained_active",),
    "occupancy_limit_registers": ("launch__occupancy_limit_registers",),
    "occupancy_limit_shared_mem": ("launch__occupancy_limit_shared_mem",),
    "sm_clock_hz": ("sm__cycles_elapsed.avg.per_second", "smsp__cycles_elapsed.avg.per_second"),
    "cycles": ("sm__cycles_elapsed.max",),
    "l1_global_load_sectors": ("l1tex__t_sectors_pipe_lsu_mem_global_op_ld.sum",),
    "l1_global_load_hit_sectors": ("l1tex__t_sectors_pipe_lsu_mem_global_op_ld_lookup_hit.sum",),
    "shared_mem_config_bytes": ("launch__shared_mem_config_size",),
}
SECTOR_BYTES = 32  # an L2 sector
# Shared-memory wavefronts by operation (l1tex__data_pipe_lsu_wavefronts_mem_shared_op_<op>.sum) and bank conflicts
# (l1tex__data_bank_conflicts_pipe_lsu_mem_shared_op_<op>.sum, as "<op>_conflicts"): which instructions the data
# path's total holds. Names a chip lacks are dropped.
SHARED_OPS = ("ld", "st", "ldsm", "stsm", "ldgsts", "atom")
SHARED_OP_METRICS = {**{op: f"l1tex__data_pipe_lsu_wavefronts_mem_shared_op_{op}.sum" for op in SHARED_OPS},
                     **{f"{op}_conflicts": f"l1tex__data_bank_conflicts_pipe_lsu_mem_shared_op_{op}.sum"
                        for op in ("ld", "st")}}
EXTRA_METRICS = tuple(dict.fromkeys(
    [m for names in OPTIONAL_FIELDS.values() for m in names] + [f"smsp__inst_executed_pipe_{p}.sum" for p in PIPES]
    + list(SHARED_OP_METRICS.values())))
# Every metric we may ask for. Each metric group may add a replay pass of every kernel: the extras
# roughly double the profiling time of a case.
NCU_METRICS = BASE_METRICS + EXTRA_METRICS
_ALWAYS = ("launch__", "gpu__time_duration")  # launch attributes and the duration: not in --query-metrics
CASE_TAG = "iosim-case-{}"  # the NVTX range around case i's profiled call
_TAG_RE = re.compile(r"iosim-case-(\d+)")
_NCU_UNITS = {  # ncu unit -> bytes, seconds, Hz or plain counts; --print-units base gives byte and ns
    "byte": 1.0, "Kbyte": 1e3, "Mbyte": 1e6, "Gbyte": 1e9, "Tbyte": 1e12,
    "ns": 1e-9, "us": 1e-6, "ms": 1e-3, "s": 1.0,
    "nsecond": 1e-9, "usecond": 1e-6, "msecond": 1e-3, "second": 1.0,
    "Hz": 1.0, "hz": 1.0, "KHz": 1e3, "khz": 1e3, "MHz": 1e6, "mhz": 1e6, "GHz": 1e9, "ghz": 1e9,
}
_TIME_UNITS = {"ns", "us", "ms", "s", "nsecond", "usecond", "msecond", "second"}
_COUNTER_FIELDS = {  # KernelCounters field: ncu metric (required)
    "dram_read_bytes": "dram__bytes_read.sum",
    "dram_write_bytes": "dram__bytes_write.sum",
    "l2_bytes": "lts__t_bytes.sum",
    "l2_hit_rate": "lts__t_sector_hit_rate.pct",
    "duration_s": "gpu__time_duration.sum",
}
_METRIC_NAME = re.compile(r"^\s*([a-z][a-z0-9]*__[A-Za-z0-9_]+)(?:\s|$)")


def base_name(metric: str) -> str:
    """A metric without its roll-up and submetric suffixes: ``sm__warps_active.avg.pct_of_peak…`` → ``sm__warps_active``."""
    return metric.split(".", 1)[0]


def parse_query_metrics(text: str) -> set[str]:
    """Base metric names from ``ncu --query-metrics`` (a table: name, then its description, per line)."""
    return {m.group(1) for line in text.splitlines() if (m := _METRIC_NAME.match(line))}


def lrc_metrics(available: set[str]) -> tuple[str, ...]:
    """Every L2-request-coalescer sector counter the GPU lists (``lrc__…sectors…``), as ``.sum``: at most 8."""
    return tuple(f"{name}.sum" for name in sorted(available) if name.startswith("lrc__") and "sector" in name)[:8]


def select_metrics(available: set[str] | None) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """``(metrics to ask for, requested metrics this ncu does not know)`` from the GPU's metric list.

    A name ncu does not know fails the whole run, so the extras are filtered by their base name;
    the base metrics and launch attributes are always asked. Without a list (the query failed), only
    the base metrics are asked and every extra counts as missing.
    """
    if not available:
        return BASE_METRICS, EXTRA_METRICS
    wanted = EXTRA_METRICS + tuple(m for m in lrc_metrics(available) if m not in EXTRA_METRICS)
    keep = [m for m in wanted if m.startswith(_ALWAYS) or base_name(m) in available]
    missing = tuple(m for m in EXTRA_METRICS if m not in keep)
    return BASE_METRICS + tuple(keep), missing


def _number(text: str, unit: str) -> float | None:
    """An ncu value in base units (bytes, seconds, percent); ``None`` for ``n/a`` or empty."""
    text = text.strip().replace(",", "")
    if not text or text.lower() == "n/a":
        return None
    try:
        value = float(text)
    except ValueError:
        return None
    num, _, per = (part.strip() for part in unit.partition("/"))
    factor = _NCU_UNITS.get(num, 1.0)
    if per in _TIME_UNITS:  # a rate: cycle/nsecond is 1e9 per second
        factor /= _NCU_UNITS[per]
    return value * factor


def _triple(text: str) -> tuple[int, int, int] | None:
    nums = re.findall(r"\d+", text or "")
    return tuple(int(n) for n in nums) if len(nums) == 3 else None


def parse_ncu_raw_csv(text: str) -> list[dict]:
    """Rows of ``ncu --import R --csv --page raw``: one dict per kernel, metrics in base units.

    The raw page is a header row (``"ID","Process ID","Process Name","Host Name"``, two NVTX columns
    when ``--nvtx`` was on, ``"Kernel Name"``, …, ``"Block Size","Grid Size"``, …, then every collected
    metric by name), a row of units (empty for the non-metric columns; ``byte``, ``ns``, ``%``,
    ``byte/block``) and one row per profiled kernel, with thousands separators (``"3,063,648"``).
    Lines before the header (``==PROF==`` messages) are skipped. Each dict has ``id``, ``name``,
    ``nvtx`` (the NVTX columns joined), ``grid``, ``block`` and every metric, bytes and seconds.
    """
    lines = text.splitlines()
    start = next((i for i, line in enumerate(lines) if line.startswith('"ID",')), None)
    if start is None:
        raise ValueError('no CSV header (a line starting with "ID") in the ncu export')
    rows = list(csv.reader(io.StringIO("\n".join(lines[start:]))))
    header, body = rows[0], rows[1:]
    col = {name: i for i, name in enumerate(header)}
    for needed in ("Kernel Name", *_COUNTER_FIELDS.values()):
        if needed not in col:
            raise ValueError(f"the ncu export has no {needed!r} column")
    units = [""] * len(header)
    if body and not body[0][0].strip():  # the units row has an empty ID
        units, body = body[0], body[1:]
    nvtx_cols = [i for i, name in enumerate(header) if "Range" in name]
    out = []
    for row in body:
        if len(row) != len(header) or not row[0].strip().isdigit():
            continue
        rec = {"id": int(row[0]), "name": row[col["Kernel Name"]], "nvtx": " ".join(row[i] for i in nvtx_cols),
               "grid": _triple(row[col["Grid Size"]]) if "Grid Size" in col else None,
               "block": _triple(row[col["Block Size"]]) if "Block Size" in col else None}
        for i, name in enumerate(header):
            if "__" in name:
                rec[name] = _number(row[i], units[i])
        out.append(rec)
    return out


def kernel_counters(row: dict) -> KernelCounters:
    """One parsed ncu row as :class:`KernelCounters`; a missing counter is a ValueError naming it."""
    values = {}
    for name, metric in _COUNTER_FIELDS.items():
        if row.get(metric) is None:
            raise ValueError(f"ncu reported no {metric} for kernel {row.get('name')!r}")
        values[name] = float(row[metric])
    values["l2_hit_rate"] = min(100.0, max(0.0, values["l2_hit_rate"]))
    regs = row.get("launch__registers_per_thread")
    static, dynamic = row.get("launch__shared_mem_per_block_static"), row.get("launch__shared_mem_per_block_dynamic")
    shared = None if static is None and dynamic is None else int(round((static or 0) + (dynamic or 0)))
    return KernelCounters(name=row["name"], grid=row.get("grid"), block=row.get("block"),
                          registers=None if regs is None else int(round(regs)), shared_bytes=shared, **values,
                          **optional_counters(row))


def _first(row: dict, names) -> float | None:
    return next((float(row[m]) for m in names if row.get(m) is not None), None)


def optional_counters(row: dict) -> dict:
    """The counters added with the H200 runs, each None where its column is missing or ``n/a``."""
    out = {name: _first(row, metrics) for name, metrics in OPTIONAL_FIELDS.items()}
    lrc = sorted(m for m in row if m.startswith("lrc__") and "sector" in m and row[m] is not None)
    if out["lrc_in_sectors"] is None:  # a coalescer counter found by listing: into the LRC from the crossbar
        out["lrc_in_sectors"] = _first(row, [m for m in lrc if "xbar2lrc" in m or "srcunit_tex" in m])
    if out["lrc_out_sectors"] is None:  # out of the LRC towards the L2 slices
        out["lrc_out_sectors"] = _first(row, [m for m in lrc if "lrc2lts" in m or "lrc2xbar" in m])
    for kind in ("read", "write"):
        sectors = out[f"l2_lookup_{kind}_sectors"]
        out[f"l2_lookup_{kind}_bytes"] = None if sectors is None else sectors * SECTOR_BYTES
    if out["achieved_occupancy_pct"] is not None:
        out["achieved_occupancy_pct"] = min(100.0, max(0.0, out["achieved_occupancy_pct"]))
    pipes = {p: float(row[m]) for p in PIPES if row.get(m := f"smsp__inst_executed_pipe_{p}.sum") is not None}
    out["inst_pipes"] = pipes or None
    ops = {op: float(row[m]) for op, m in SHARED_OP_METRICS.items() if row.get(m) is not None}
    out["shared_ops"] = ops or None
    return out


def counters_by_case(rows: list[dict]) -> dict[int, Counters]:
    """``{case index: Counters summed over its kernels}`` from parsed rows, by their NVTX tags.

    The child tags each case with an NVTX range ``iosim-case-<i>``. The autograd engine launches
    backward kernels from its own thread, outside the main thread's push/pop range, and their
    start/end range may be missing too; such a kernel belongs to the case of the kernel before it,
    because cases run one at a time, each between cudaProfilerStart and Stop, and each begins with
    a tagged forward kernel. An untagged first kernel is a ValueError.
    """
    kernels: dict[int, list[KernelCounters]] = {}
    case = None
    for row in sorted(rows, key=lambda r: r["id"]):
        m = _TAG_RE.search(row["nvtx"])
        if m is not None:
            case = int(m.group(1))
        elif case is None:
            raise ValueError(f"kernel {row['id']} ({row['name'][:80]!r}) precedes every iosim-case NVTX range")
        kernels.setdefault(case, []).append(kernel_counters(row))
    return {i: Counters.from_kernels(ks) for i, ks in kernels.items()}


def ncu_failure(log: str, returncode: int) -> tuple[str, bool]:
    """A one-line reason why ncu gave no counters, and whether later runs would fail the same way."""
    if "ERR_NVGPUCTRPERM" in log:
        return "ncu: no permission to read GPU performance counters (ERR_NVGPUCTRPERM)", True
    for marker in ("LibraryNotLoaded", "Failed to initialize the profiler", "not supported on this device"):
        if marker in log:
            line = next(line for line in log.splitlines() if marker in line)
            return f"ncu: profiler unavailable: {line.strip()[:200]}", True
    errors = [line.strip() for line in log.splitlines() if "==ERROR==" in line]
    if errors:
        return f"ncu: {errors[-1][:240]}", False
    if "No kernels were profiled" in log:
        return "ncu: no kernels were profiled", False
    return f"ncu exited with code {returncode}", False
