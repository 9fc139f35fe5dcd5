"""What a kernel costs under Nsight Compute before it does any work: the duration ncu reports for tiny kernels.

``iosim calibrate``'s ``launch_overhead`` is what an empty kernel costs back to back (the GPU's launch
pipeline overlapping one kernel's setup with the last one's work). Nsight Compute runs each profiled
kernel alone, caches flushed, and its ``gpu__time_duration`` spans the whole of one kernel: the
cost a validation in ``ncu`` mode must charge every kernel. Eleven families, each 4 warps a CTA but ``reduce1``,
``reduce2`` and ``reduce8``:

- ``empty``: a kernel that returns at once, at 1 to 8448 CTAs;
- ``store``: each CTA stores one 512-byte row (a fill, or a combine kernel's output);
- ``gather``: each CTA loads R rows of 512 bytes in one go and stores their column sums as one row: a
  loopless load-and-store kernel (flash-decoding's combine has this shape), at 32 and 1056 CTAs, and since
  2026-12-07 at one to 64 CTAs an SM (132-8448);
- ``copy``: ``gather``'s loads, every row stored back elsewhere (no sum: no shared memory, no barrier);
- ``reduce``: ``gather``'s sum over the same first R rows in every CTA (its loads L2 hits after the first);
- ``barrier``: R + 4 barriers and a stored row, no shared memory; ``reduce1``: ``reduce`` by one warp a CTA;
- ``rowsum``: ``reduce``'s loads summed along each row, within a warp (R sums stored; one small round trip
  through shared memory, 16-64 bytes, one barrier);
- ``idle``: ``reduce`` behind a branch the CTAs do not take: its 2 KiB of shared memory allocated, never used;
- ``reduce2``, ``reduce8``: ``reduce`` by 2 and 8 warps (1 and 4 KiB of shared memory).

``gather`` at R >= 4 sums across warps through shared memory (5 barriers); at R = 1 it does not. Where many CTAs
share an SM, ``copy`` and ``reduce`` tell its loads' cost from its sum's, ``barrier`` and ``reduce1`` the sum's
barriers and its one-warp shuffles from its round trips through shared memory (the H100's runs:
``experiments/measurements/h100/launch/run2`` to ``run4``), ``rowsum`` and ``idle`` those round trips from the
shared memory a CTA is given, ``reduce2`` and ``reduce8`` how the sum's cost grows with the warps that take part.

The profile takes ``ncu_launch_overhead`` from the empty kernel (the median over its grids of at most
one wave); the rest is data to test the model's loopless kernels against.

    python -m iosim.kernels.launch_probe --out DIR     # runs ncu on itself; writes DIR/launch_probe.json
"""
from __future__ import annotations

import functools
import json
import re
import statistics
import sys
from dataclasses import asdict
from pathlib import Path

from iosim.kernels.device import cuda_torch
from iosim.kernels.harness import provenance
from iosim.kernels.ncu import BASE_METRICS, kernel_counters, parse_ncu_raw_csv
from iosim.kernels.profiler import metrics_for, ncu_version, probe_cli, profiled_launch, require_ncu, run_probe

ROW = 128  # fp32 per row: 512 bytes
NUM_WARPS = 4
# (family, rows loaded per CTA, grid): rows 0 loads nothing; the empty kernel stores nothing either
LAUNCHES = ([("empty", 0, g) for g in (1, 33, 132, 264, 1056, 4224, 8448)]
            + [("store", 0, g) for g in (1, 32, 132, 1056, 4224, 8448)]
            + [("gather", r, g) for g in (32, 1056) for r in (1, 8, 32, 128)]
            + [("gather", r, g) for g in (132, 2112, 4224, 8448) for r in (1, 4, 16)]
            + [(f, r, g) for f in ("copy", "reduce") for g in (132, 2112, 8448) for r in (4, 16)]
            + [(f, r, g) for f in ("barrier", "reduce1") for g in (132, 2112, 8448) for r in (1, 4)]
            + [(f, r, g) for f in ("rowsum", "idle", "reduce2", "reduce8") for g in (132, 2112, 8448) for r in (4, 16)])
TAG = "launch-{}-{}-{}"  # NVTX range: family, rows, grid
_TAG_RE = re.compile(r"launch-([a-z][a-z0-9]*)-(\d+)-(\d+)")  # family (letters, then digits: reduce1), rows, grid
PROBE_METRICS = ("l1tex__m_xbar2l1tex_read_bytes.sum", "sm__cycles_elapsed.max", "sm__cycles_elapsed.avg.per_second",
                 # how many CTAs an SM held: the shared memory a kernel asks for sets the SM's carve-out
                 "sm__warps_active.avg.pct_of_peak_sustained_active", "launch__occupancy_limit_shared_mem",
                 "launch__occupancy_limit_registers", "launch__shared_mem_config_size")
FIELDS = ("duration_s", "dram_read_bytes", "dram_write_bytes", "xbar_read_bytes", "cycles", "sm_clock_hz",
          "achieved_occupancy_pct", "occupancy_limit_shared_mem", "occupancy_limit_registers", "shared_mem_config_bytes")


@functools.cache
def _kernels():
    import triton
    import triton.language as tl

    @triton.jit
    def empty(out):
        """Nothing: the launch, the CTAs' start and exit."""
        pass

    @triton.jit
    def store(out, ROW: tl.constexpr):
        """CTA c writes row c (ROW fp32)."""
        c = tl.program_id(0).to(tl.int64)
        offs = tl.arange(0, ROW)
        tl.store(out + c * ROW + offs, offs.to(tl.float32))

    @triton.jit
    def gather(src, out, ROWS: tl.constexpr, ROW: tl.constexpr):
        """CTA c loads its ROWS rows of ROW fp32 at once and writes their column sums as row c."""
        c = tl.program_id(0).to(tl.int64)
        rows, cols = tl.arange(0, ROWS), tl.arange(0, ROW)
        tile = tl.load(src + (c * ROWS + rows[:, None]) * ROW + cols[None, :])
        tl.store(out + c * ROW + cols, tl.sum(tile, axis=0))

    @triton.jit
    def copy(src, out, ROWS: tl.constexpr, ROW: tl.constexpr):
        """CTA c loads its ROWS rows at once and stores them back elsewhere: ``gather``'s loads without its sum."""
        c = tl.program_id(0).to(tl.int64)
        offs = (c * ROWS + tl.arange(0, ROWS)[:, None]) * ROW + tl.arange(0, ROW)[None, :]
        tl.store(out + offs, tl.load(src + offs))

    @triton.jit
    def reduce(src, out, ROWS: tl.constexpr, ROW: tl.constexpr):
        """CTA c loads the first ROWS rows (every CTA the same: L2 hits after the first) and writes their column
        sums as row c: ``gather``'s sum, its loads hits."""
        c = tl.program_id(0).to(tl.int64)
        rows, cols = tl.arange(0, ROWS), tl.arange(0, ROW)
        tile = tl.load(src + rows[:, None] * ROW + cols[None, :])
        tl.store(out + c * ROW + cols, tl.sum(tile, axis=0))

    @triton.jit
    def barrier(out, ROWS: tl.constexpr, ROW: tl.constexpr):
        """CTA c passes ROWS + 4 barriers and stores row c: ``reduce``'s barriers without its shared memory."""
        c = tl.program_id(0).to(tl.int64)
        cols = tl.arange(0, ROW)
        for _ in tl.static_range(ROWS + 4):
            tl.debug_barrier()
        tl.store(out + c * ROW + cols, cols.to(tl.float32))

    @triton.jit
    def rowsum(src, out, ROWS: tl.constexpr, ROW: tl.constexpr):
        """``reduce``'s loads summed along each row (within a warp: shuffles, then one round trip of 16-64 bytes
        through shared memory for the store); CTA c writes the ROWS sums at its row c."""
        c = tl.program_id(0).to(tl.int64)
        rows, cols = tl.arange(0, ROWS), tl.arange(0, ROW)
        tile = tl.load(src + rows[:, None] * ROW + cols[None, :])
        tl.store(out + c * ROW + rows, tl.sum(tile, axis=1))

    @triton.jit
    def idle(src, out, flag, ROWS: tl.constexpr, ROW: tl.constexpr):
        """``reduce`` behind a branch not taken (``flag`` >= 0): its shared memory allocated to every CTA, never
        used; CTA c stores row c as ``store`` does."""
        c = tl.program_id(0).to(tl.int64)
        cols = tl.arange(0, ROW)
        if flag < 0:
            rows = tl.arange(0, ROWS)
            tile = tl.load(src + rows[:, None] * ROW + cols[None, :])
            tl.store(out + c * ROW + cols, tl.sum(tile, axis=0))
        else:
            tl.store(out + c * ROW + cols, cols.to(tl.float32))

    return empty, store, gather, copy, reduce, barrier, rowsum, idle


def launch(family: str, rows: int, grid: int, src, out):
    """One launch of ``family`` over ``grid`` CTAs (``rows`` rows loaded per CTA for ``gather``)."""
    empty, store, gather, copy, reduce, barrier, rowsum, idle = _kernels()
    if family == "rowsum":
        return rowsum[(grid,)](src, out, ROWS=rows, ROW=ROW, num_warps=NUM_WARPS)
    if family == "idle":
        # flag 3, not 1: Triton compiles an argument equal to 1 as a constant, and the branch with its shared memory away
        return idle[(grid,)](src, out, 3, ROWS=rows, ROW=ROW, num_warps=NUM_WARPS)
    if family in ("reduce2", "reduce8"):  # the cross-warp sum by 2 and 8 warps
        return reduce[(grid,)](src, out, ROWS=rows, ROW=ROW, num_warps=int(family[-1]))
    if family == "barrier":
        return barrier[(grid,)](out, ROWS=rows, ROW=ROW, num_warps=NUM_WARPS)
    if family == "reduce1":  # the same sum by one warp: shuffles, no shared memory, no barrier
        return reduce[(grid,)](src, out, ROWS=rows, ROW=ROW, num_warps=1)
    if family == "copy":
        return copy[(grid,)](src, out, ROWS=rows, ROW=ROW, num_warps=NUM_WARPS)
    if family == "reduce":
        return reduce[(grid,)](src, out, ROWS=rows, ROW=ROW, num_warps=NUM_WARPS)
    if family == "empty":
        return empty[(grid,)](out, num_warps=NUM_WARPS)
    if family == "store":
        return store[(grid,)](out, ROW=ROW, num_warps=NUM_WARPS)
    return gather[(grid,)](src, out, ROWS=rows, ROW=ROW, num_warps=NUM_WARPS)


def child() -> int:
    """Runs under ncu: every launch warmed up outside the profiled range, then one profiled and tagged."""
    torch = cuda_torch()
    most = max(g for _, _, g in LAUNCHES)
    src = torch.randn(most * max(r for _, r, _ in LAUNCHES) * ROW, dtype=torch.float32, device="cuda")
    out = torch.empty_like(src)  # ``copy`` stores every row it loads
    for family, rows, grid in LAUNCHES:
        profiled_launch(torch, TAG.format(family, rows, grid),
                        lambda f=family, r=rows, g=grid: launch(f, r, g, src, out))
    return 0


def results(rows: list[dict]) -> list[dict]:
    """One entry per tagged launch (family, rows, grid, bytes loaded per CTA and the counters ``FIELDS``)."""
    out = []
    for row in rows:
        m = next((m for part in re.split(r"[:\s\"]", row["nvtx"]) if (m := _TAG_RE.fullmatch(part))), None)
        if m is None:
            continue
        counters = kernel_counters(row)
        rows_, grid = int(m.group(2)), int(m.group(3))
        out.append({"family": m.group(1), "rows": rows_, "grid": grid, "load_bytes_per_cta": rows_ * ROW * 4,
                    **{f: getattr(counters, f) for f in FIELDS}})
    return sorted(out, key=lambda r: (r["family"], r["rows"], r["grid"]))


def summary(res: list[dict], sm_count: int) -> dict:
    """``ncu_launch_overhead_s``: the median duration of the empty kernel over its grids of at most one wave
    (one CTA per SM); None without such launches."""
    empty = [r["duration_s"] for r in res if r["family"] == "empty" and r["grid"] <= sm_count and r["duration_s"]]
    return {"ncu_launch_overhead_s": statistics.median(empty) if empty else None,
            "empty_by_grid": {r["grid"]: r["duration_s"] for r in res if r["family"] == "empty"}}


def probe(out_dir: Path, timeout_s: float = 300) -> dict:
    """Run the probe under ncu, write ``out_dir/launch_probe.json`` (and ncu's log and CSV), return the data."""
    torch = cuda_torch()
    ncu = require_ncu("launch probe")
    metrics, _ = metrics_for(ncu)
    keep = [m for m in metrics if m in BASE_METRICS or m in PROBE_METRICS]
    prov = provenance(ncu_version(ncu), counters=True, metrics_missing=[])
    csv = run_probe("iosim.kernels.launch_probe", "launch_probe", out_dir, keep, "launch probe", timeout_s)
    res = results(parse_ncu_raw_csv(csv))
    sms = torch.cuda.get_device_properties(0).multi_processor_count
    data = {"provenance": asdict(prov), "sm_count": sms, "num_warps": NUM_WARPS, "row_bytes": ROW * 4,
            "metrics": keep, "results": res, "summary": summary(res, sms)}
    (out_dir / "launch_probe.json").write_text(json.dumps(data, indent=1) + "\n")
    return data


def report(data: dict) -> list[str]:
    """What the command prints: each launch's duration, then the summary."""
    lines = [f"{r['family']:<6} rows {r['rows']:>3} grid {r['grid']:>4}: {r['duration_s'] * 1e6:6.2f} us, "
             f"DRAM read {r['dram_read_bytes']}" for r in data["results"]]
    e = data["summary"]["ncu_launch_overhead_s"]
    return lines + [f"ncu_launch_overhead {'-' if e is None else f'{e * 1e6:.3f} us'}"]


def main(argv=None) -> int:
    return probe_cli(argv, "python -m iosim.kernels.launch_probe", __doc__, "launch_probe", child, probe, report)


if __name__ == "__main__":
    sys.exit(main())
