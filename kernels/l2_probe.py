"""How much the L2 holds: the dirty bytes it keeps after a write-only kernel, and the hits of a cyclic read sweep.

Under Nsight Compute's default cache control (the L2 flushed and invalidated before each profiled
kernel) three families of launches each report DRAM, crossbar and L2-slice counters:

- ``dirty``: one kernel writes X bytes (fp32 stores, each CTA a contiguous chunk, no reads). What the
  L2 still holds dirty when the kernel ends never reached DRAM during it: ``retained = X - DRAM
  write bytes``. Past the knee, retained stays flat at the L2's dirty limit (:func:`dirty_limit`).
- ``sweep``: 2 CTAs per SM, all resident; each reads its own contiguous chunk of an S-byte buffer
  twice (``.cg`` loads: L1 bypassed). Between a CTA's two reads of a byte the whole buffer is read
  once, a cyclic sweep with reuse distance S: ``second_pass_miss = (DRAM read - S) / S`` is 0 when the
  second pass hit entirely and 1 when it missed entirely.
- ``shared``: one CTA per SM, each reading the whole S-byte buffer once (in lockstep as far as the
  hardware keeps them): DRAM read bytes near S mean data many SMs read is fetched and stored once,
  near 2·S once per L2 partition.
- ``sharedsweep``: the same, each CTA reading the buffer twice: a cyclic sweep of data every SM reads.
  Its second-pass miss against ``sweep``'s says how many copies the L2 keeps of a line SMs of both
  partitions read, against one only its own SM reads (long causal attention's K/V is the former).

    python -m iosim.kernels.l2_probe --out DIR     # runs ncu on itself; writes DIR/l2_probe.json

Napkin math for the run time: the largest launches store 192 MiB (dirty: ~0.05 ms at ~4 TB/s of DRAM),
load 2 × 160 MiB (sweep: ~0.1 ms) and 132 × 96 MiB ≈ 12 GiB over the crossbar, mostly L2 hits (shared:
1-3 ms). ncu's start, its few replay passes per kernel and its save/restore of the written buffer
dominate: about a second per launch, 31 launches, well under the 3 minutes the session allows.
"""
from __future__ import annotations

import functools
import json
import re
import statistics
import sys
from dataclasses import asdict, dataclass
from pathlib import Path

from iosim.kernels.device import cuda_torch
from iosim.kernels.ncu import SECTOR_BYTES, kernel_counters
from iosim.kernels.profiler import (
    NCU_TIMEOUT_S,
    probe_cli,
    profiled_launch,
    run_counter_probe,
)

MiB = 2**20
FP32 = 4  # bytes per element
BLOCK = 4096  # fp32 per load/store step of a CTA: 16 KiB, 16 per thread of 8 warps (four 16-byte accesses)
NUM_WARPS = 8
ALIGN = 32  # chunks start on multiples of 32 fp32 = one 128-byte line (four 32-byte sectors)
# The dirty plateau (:func:`dirty_limit`): the median of the TAIL largest sizes' retained bytes is the
# reference; every size whose retained bytes lie within PLATEAU_TOL of it is on the plateau.
TAIL = 3
PLATEAU_TOL = 0.10
TAG = "l2-{}-{}"  # NVTX range: variant, buffer bytes
_TAG_RE = re.compile(r"l2-([a-z]+)-(\d+)")
PROBE_METRICS = ("l1tex__m_xbar2l1tex_read_bytes.sum", "lts__t_sectors_srcunit_tex_op_read.sum",
                 "lts__t_sectors_srcunit_tex_op_write.sum")
# KernelCounters fields kept per launch (besides the grid): bytes, 32-byte sectors, percent, seconds.
FIELDS = ("dram_read_bytes", "dram_write_bytes", "xbar_read_bytes", "l2_lookup_read_sectors",
          "l2_lookup_write_sectors", "l2_bytes", "l2_hit_rate", "duration_s")


@dataclass(frozen=True)
class Variant:
    """One family of profiled launches: one kernel and geometry over a list of buffer sizes."""

    name: str
    sizes_mib: tuple[int, ...]  # buffer sizes, MiB (2**20 bytes)
    ctas_per_sm: int  # grid = this × the SM count; small enough that every CTA is resident at once
    passes: int  # reads of each byte a CTA covers; 0: the write kernel
    shared: bool = False  # every CTA covers the whole buffer (else its own contiguous chunk)

    def __post_init__(self):
        if not self.sizes_mib or any(s <= 0 for s in self.sizes_mib):
            raise ValueError(f"sizes_mib(={self.sizes_mib}) must be a non-empty list of sizes > 0")
        if self.ctas_per_sm < 1:
            raise ValueError(f"ctas_per_sm(={self.ctas_per_sm}) must be >= 1")
        if self.passes < 0 or (self.shared and self.passes == 0):
            raise ValueError(f"passes(={self.passes}) must be >= 0, and >= 1 for a shared read")

    def sizes_bytes(self) -> tuple[int, ...]:
        return tuple(s * MiB for s in self.sizes_mib)


VARIANTS = {v.name: v for v in (
    Variant("dirty", (4, 8, 16, 24, 32, 40, 48, 56, 64, 80, 96, 128, 192), ctas_per_sm=4, passes=0),
    Variant("sweep", (16, 24, 32, 40, 48, 56, 64, 72, 80, 96, 112, 128, 160), ctas_per_sm=2, passes=2),
    Variant("shared", (16, 32, 48, 64, 96), ctas_per_sm=1, passes=1, shared=True),
    # 1 MiB apart where the cliff falls on the H100 (about half its 50 MiB) and the H200 (half its 60)
    Variant("sharedsweep", (16, 18, 20, 21, 22, 23, 24, 25, 26, 27, 28, 29, 30, 31, 32, 34, 36, 40, 48, 56, 64),
            ctas_per_sm=1, passes=2, shared=True),
)}


# --------------------------------------------------------------------------- reference: who covers what


def chunk_size(n: int, grid: int) -> int:
    """Elements per CTA when ``grid`` CTAs split ``n``: ``ceil(n / grid)`` rounded up to ALIGN (the last CTAs
    may get less, or nothing)."""
    if n < 1 or grid < 1:
        raise ValueError(f"n(={n}) and grid(={grid}) must be >= 1")
    per = -(-n // grid)
    return -(-per // ALIGN) * ALIGN


def covered(n: int, grid: int, shared: bool) -> list[tuple[int, int]]:
    """``[start, end)`` of the elements each CTA covers: its own chunk, or all ``n`` when shared."""
    if shared:
        return [(0, n)] * grid
    chunk = chunk_size(n, grid)
    return [(min(c * chunk, n), min((c + 1) * chunk, n)) for c in range(grid)]


# --------------------------------------------------------------------------- kernels


@functools.cache
def _kernels():
    import triton
    import triton.language as tl

    @triton.jit
    def chunk_write(dst, n, chunk, BLOCK: tl.constexpr):
        """CTA c stores value i at element i, i in [c·chunk, min((c+1)·chunk, n)): 4 B written per element."""
        start = tl.program_id(0).to(tl.int64) * chunk
        end = tl.minimum(start + chunk, n)
        offs = tl.arange(0, BLOCK)
        for i in range(0, chunk, BLOCK):
            idx = start + i + offs
            tl.store(dst + idx, idx.to(tl.float32), mask=idx < end)

    @triton.jit
    def chunk_read(src, out, n, chunk, stride, PASSES: tl.constexpr, BLOCK: tl.constexpr):
        """CTA c reads elements [c·stride, min(c·stride + chunk, n)) PASSES times, pass after pass (read
        PASSES × 4 B per element through L2, L1 bypassed), and stores the sum: 4 B per CTA written."""
        pid = tl.program_id(0)
        start = pid.to(tl.int64) * stride
        end = tl.minimum(start + chunk, n)
        offs = tl.arange(0, BLOCK)
        acc = tl.zeros([BLOCK], tl.float32)
        for _ in range(PASSES):
            for i in range(0, chunk, BLOCK):
                idx = start + i + offs
                acc += tl.load(src + idx, mask=idx < end, other=0.0, cache_modifier=".cg")
        tl.store(out + pid, tl.sum(acc, axis=0))  # keeps the loads alive

    return chunk_write, chunk_read


# --------------------------------------------------------------------------- launch wrappers


def write_chunks(dst, n: int, grid: int, block: int = BLOCK, num_warps: int = NUM_WARPS):
    """``dst[i] = i`` for i < n, CTA c its own chunk (:func:`covered`): ``4·n`` bytes stored, none loaded."""
    if n > dst.numel():
        raise ValueError(f"n(={n}) must be <= dst.numel()(={dst.numel()})")
    chunk_write, _ = _kernels()
    return chunk_write[(grid,)](dst, n, chunk_size(n, grid), BLOCK=block, num_warps=num_warps)


def read_chunks(src, out, n: int, grid: int, passes: int, shared: bool, block: int = BLOCK,
                num_warps: int = NUM_WARPS):
    """``out[c] = passes × sum(src[start:end])`` over CTA c's range (:func:`covered`), summed in fp32.

    Loads ``passes × 4 × (n, or n per CTA when shared)`` bytes through the L2; stores ``4·grid`` bytes.
    """
    if n > src.numel() or grid > out.numel():
        raise ValueError(f"n(={n}) must be <= src.numel()(={src.numel()}) "
                         f"and grid(={grid}) <= out.numel()(={out.numel()})")
    _, chunk_read = _kernels()
    chunk, stride = (n, 0) if shared else (chunk_size(n, grid),) * 2
    return chunk_read[(grid,)](src, out, n, chunk, stride, PASSES=passes, BLOCK=block, num_warps=num_warps)


def run_variant(variant: Variant, buf, out, n: int, grid: int):
    """One launch of ``variant``'s kernel over ``buf[:n]``."""
    if variant.passes == 0:
        return write_chunks(buf, n, grid)
    return read_chunks(buf, out, n, grid, variant.passes, variant.shared)


def child() -> int:
    """Runs under ncu: every launch warmed up outside the profiled range, then one profiled and tagged."""
    torch = cuda_torch()
    sms = torch.cuda.get_device_properties(0).multi_processor_count
    biggest = max(max(v.sizes_bytes()) for v in VARIANTS.values()) // FP32
    buf = torch.rand(biggest, dtype=torch.float32, device="cuda")
    out = torch.empty(max(v.ctas_per_sm for v in VARIANTS.values()) * sms, dtype=torch.float32, device="cuda")
    for variant in VARIANTS.values():
        grid = variant.ctas_per_sm * sms
        for size in variant.sizes_bytes():
            profiled_launch(torch, TAG.format(variant.name, size),
                            lambda v=variant, n=size // FP32, g=grid: run_variant(v, buf, out, n, g))
    return 0


# --------------------------------------------------------------------------- counts to derived numbers (pure)


def _ratio(a, b):
    return None if a is None or not b else a / b


def derive(variant: Variant, size: int, counters: dict, ctas: int | None) -> dict:
    """The numbers each launch is for, from its counters (``FIELDS``) and grid size.

    dirty: ``retained_bytes = size - dram_write_bytes`` (dirty data left in L2 at the end) and the write
    lookups per byte written (≈1). Reads: ``requested_bytes`` (what the CTAs load), DRAM reads per
    buffer byte, crossbar and L2-lookup bytes per requested byte; a multi-pass sweep adds the miss
    fraction of the later passes, ``(dram_read_bytes - size) / ((passes - 1) · size)`` (shared or not: the
    buffer is fetched once a pass either way).
    """
    if variant.passes == 0:
        writes = counters.get("l2_lookup_write_sectors")
        return {"retained_bytes": size - counters["dram_write_bytes"],
                "write_lookups_over_size": _ratio(None if writes is None else writes * SECTOR_BYTES, size)}
    copies = ctas if variant.shared else 1
    requested = None if copies is None else variant.passes * size * copies
    lookups = counters.get("l2_lookup_read_sectors")
    out = {"requested_bytes": requested, "dram_read_over_size": counters["dram_read_bytes"] / size,
           "xbar_over_requested": _ratio(counters.get("xbar_read_bytes"), requested),
           "read_lookups_over_requested": _ratio(None if lookups is None else lookups * SECTOR_BYTES, requested)}
    if variant.passes > 1:
        out["second_pass_miss"] = (counters["dram_read_bytes"] - size) / ((variant.passes - 1) * size)
    return out


def _tag(nvtx: str) -> tuple[Variant, int] | None:
    """The (variant, size) of a kernel's NVTX ranges (``:``-separated fields, as ncu prints them)."""
    for part in re.split(r"[:\s\"]", nvtx):
        m = _TAG_RE.fullmatch(part)
        if m and m.group(1) in VARIANTS:
            return VARIANTS[m.group(1)], int(m.group(2))
    return None


def launch_counters(row: dict, fields: tuple = FIELDS) -> tuple[dict, int | None]:
    """One parsed ncu row's counters ``fields`` (KernelCounters names) and its grid's CTAs (None where ncu reported
    no grid)."""
    counters = kernel_counters(row)
    ctas = None if counters.grid is None else counters.grid[0] * counters.grid[1] * counters.grid[2]
    return {f: getattr(counters, f) for f in fields}, ctas


def results(rows: list[dict]) -> dict[str, list[dict]]:
    """``{variant: [row per size, ascending]}`` from parsed ncu rows, by their NVTX tags; untagged rows are skipped.

    Each row: ``size_bytes``, ``ctas`` (the grid's CTAs), the counters ``FIELDS`` and :func:`derive`'s numbers.
    """
    out: dict[str, list[dict]] = {}
    for row in rows:
        tagged = _tag(row["nvtx"])
        if tagged is None:
            continue
        variant, size = tagged
        values, ctas = launch_counters(row)
        out.setdefault(variant.name, []).append({"size_bytes": size, "ctas": ctas, **values,
                                                 **derive(variant, size, values, ctas)})
    return {name: sorted(rs, key=lambda r: r["size_bytes"]) for name, rs in out.items()}


def dirty_limit(points, tail: int = TAIL, tol: float = PLATEAU_TOL) -> tuple[float | None, tuple[int, ...]]:
    """``(the L2's dirty limit in bytes, the sizes on the plateau)`` from ``(size, retained bytes)`` points.

    Rule: the reference is the median retained bytes of the ``tail`` largest sizes (past the knee when the
    largest sizes exceed the L2 well); the plateau is every size whose retained bytes lie within ``tol`` of
    the reference (|r - ref| ≤ tol·|ref|); the limit is the median over the plateau. Below the knee retained
    equals the size, so only sizes near the limit join it. No points: ``(None, ())``.
    """
    pts = sorted(points)
    if not pts:
        return None, ()
    ref = statistics.median(r for _, r in pts[-tail:])
    plateau = [(s, r) for s, r in pts if abs(r - ref) <= tol * abs(ref)]
    if not plateau:  # an even tail whose two middle values straddle the band: keep the reference
        return float(ref), ()
    return float(statistics.median(r for _, r in plateau)), tuple(s for s, _ in plateau)


def half_miss_size(curve) -> float | None:
    """The buffer size at which the sweep's second-pass miss first reaches 0.5, interpolated linearly between
    the two sizes around it, from ``(size, miss)`` points: the L2's effective capacity for a cyclic sweep.
    None if it never does; the smallest size if it starts there."""
    pts = sorted(curve)
    for i, (s, m) in enumerate(pts):
        if m >= 0.5:
            if i == 0:
                return float(s)
            s0, m0 = pts[i - 1]
            return s0 + (0.5 - m0) / (m - m0) * (s - s0)
    return None


def summary(res: dict[str, list[dict]]) -> dict:
    """The dirty limit (:func:`dirty_limit`), the sweeps' miss curves and half-miss sizes (private and shared),
    the shared read's DRAM bytes per buffer byte."""
    limit, plateau = dirty_limit([(r["size_bytes"], r["retained_bytes"]) for r in res.get("dirty", [])])
    sweep, shared = ([{"size_bytes": r["size_bytes"], "second_pass_miss": r["second_pass_miss"]} for r in res.get(v, [])]
                     for v in ("sweep", "sharedsweep"))
    out = {"dirty_limit_bytes": limit, "dirty_plateau_sizes": list(plateau),
           "sweep_curve": sweep,
           "sweep_half_miss_bytes": half_miss_size([(p["size_bytes"], p["second_pass_miss"]) for p in sweep]),
           "shared_curve": [{"size_bytes": r["size_bytes"], "dram_read_over_size": r["dram_read_over_size"]}
                            for r in res.get("shared", [])]}
    if shared:
        out["shared_sweep_curve"] = shared
        out["shared_sweep_half_miss_bytes"] = half_miss_size([(p["size_bytes"], p["second_pass_miss"]) for p in shared])
    return out


# --------------------------------------------------------------------------- the ncu run


def device_info(torch) -> dict:
    props = torch.cuda.get_device_properties(0)
    return {"sm_count": props.multi_processor_count, "l2_cache_bytes": getattr(props, "L2_cache_size", None)}


def probe(out_dir: Path, timeout_s: float = NCU_TIMEOUT_S) -> dict:
    """Run the probe under ncu, write ``out_dir/l2_probe.json`` (and ncu's log and raw CSV), return the data."""
    torch = cuda_torch()
    keep, missing, prov, rows = run_counter_probe("iosim.kernels.l2_probe", "l2_probe", out_dir, PROBE_METRICS,
                                                  "L2 probe", timeout_s)
    res = results(rows)
    data = {"provenance": prov, "device": device_info(torch), "metrics": keep, "metrics_missing": missing,
            "block": BLOCK, "num_warps": NUM_WARPS, "align": ALIGN,
            "variants": {name: asdict(v) for name, v in VARIANTS.items()},
            "results": res, "summary": summary(res)}
    (out_dir / "l2_probe.json").write_text(json.dumps(data, indent=1) + "\n")
    return data


def report(data: dict) -> list[str]:
    """What the command prints: each launch's bytes and time, then the dirty limit and half-miss size."""
    lines = [f"dirty  {r['size_bytes'] / MiB:>5.0f} MiB: DRAM write {r['dram_write_bytes'] / MiB:7.2f} MiB, "
             f"retained {r['retained_bytes'] / MiB:6.2f} MiB, {r['duration_s'] * 1e6:7.1f} us"
             for r in data["results"].get("dirty", [])]
    for name in ("sweep", "shared", "sharedsweep"):
        for r in data["results"].get(name, []):
            miss = r.get("second_pass_miss")
            lines.append(f"{name:<6} {r['size_bytes'] / MiB:>5.0f} MiB: DRAM read {r['dram_read_over_size']:.3f} x size"
                         + ("" if miss is None else f", second-pass miss {miss:.3f}")
                         + f", {r['duration_s'] * 1e6:7.1f} us")
    s = data["summary"]
    limit, half, shared = s["dirty_limit_bytes"], s["sweep_half_miss_bytes"], s.get("shared_sweep_half_miss_bytes")
    return lines + [f"dirty limit {'-' if limit is None else f'{limit / MiB:.2f} MiB'}, "
                    f"sweep half-miss size {'-' if half is None else f'{half / MiB:.1f} MiB'}"
                    + ("" if "shared_sweep_curve" not in s else
                       f", shared sweep half-miss size {'-' if shared is None else f'{shared / MiB:.1f} MiB'}")]


def main(argv=None) -> int:
    return probe_cli(argv, "python -m iosim.kernels.l2_probe", __doc__, "l2_probe", child, probe, report)


if __name__ == "__main__":
    sys.exit(main())
