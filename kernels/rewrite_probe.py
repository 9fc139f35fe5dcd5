"""What the L2 writes back of lines the resident CTAs store again and again, as spilled registers are.

A kernel that spills keeps a frame of local memory per resident CTA and reloads and stores its slots
every pass; the L2 holds those lines dirty. Under Nsight Compute's default cache control (the L2
flushed and invalidated before each profiled kernel) one CTA per SM, all resident, each owns a
contiguous chunk of an S-byte buffer and runs ``passes`` passes over it; each launch reports its DRAM
bytes:

- ``rewrite``: each pass loads every element (``.cg``: L1 bypassed) and stores it back plus one, a
  frame reloaded and stored. The first pass fills S from DRAM; what the later passes write to DRAM
  while the lines stay in the L2 (reads stay S) is what the L2 cleans of lines kept dirty.
- ``atomic``: each pass adds one to every element with fp32 atomics at the L2 (``dQ`` accumulated
  by atomics is the same pattern).
- ``storefirst``: each pass stores every element, then loads it back: the first pass allocates the lines
  by a store, as a spilling CTA's first pass does (whether a stored line is held in both L2 partitions).
- ``storesweep``: two passes, the first storing every element, the second loading them all: lines a CTA
  stored and never read, read back after the whole buffer was stored (a cyclic sweep of stored lines,
  beside ``iosim.kernels.l2_probe``'s of loaded ones): its re-fetches say how much the L2 holds of them.
- ``stream``: ``rewrite`` of S plus, each pass, a read of new data (each CTA its own 64 KiB of a
  large buffer, never read again): whether lines read once push the dirty frames out.
- ``hotread`` / ``hotwrite``: each pass loads S again (kept clean) beside 64 KiB of new data a CTA read /
  stored once (as K/V re-read beside Q read once and O written once): whether lines used once push out
  lines read again, or leave first.

``writes_per_pass = (DRAM write bytes) / (passes · S)`` says how much of the rewritten lines reach DRAM
each pass; ``rereads = (DRAM read bytes - S - streamed bytes) / S`` how often they were re-fetched (S not taken out
where the lines are stored before they are read: ``storefirst``, ``storesweep``).

    python -m iosim.kernels.rewrite_probe --out DIR    # runs ncu on itself; writes DIR/rewrite_probe.json

Napkin math: the largest launch moves 48 MiB × 16 passes × 2 ≈ 1.5 GiB through the L2 (~0.3 ms);
ncu's start and replay dominate, about a second a launch, 30 launches.
"""
from __future__ import annotations

import functools
import json
import re
import sys
from dataclasses import asdict, dataclass
from pathlib import Path

from iosim.kernels.device import cuda_torch
from iosim.kernels.l2_probe import (
    ALIGN,
    BLOCK,
    FP32,
    NUM_WARPS,
    PROBE_METRICS,
    MiB,
    chunk_size,
    device_info,
    launch_counters,
)
from iosim.kernels.profiler import (
    NCU_TIMEOUT_S,
    probe_cli,
    profiled_launch,
    run_counter_probe,
)

STREAM_BYTES = 64 * 1024  # new data each CTA reads per pass in ``stream``
TAG = "rw-{}-{}-{}"  # NVTX range: variant, buffer bytes, passes
_TAG_RE = re.compile(r"rw-([a-z]+)-(\d+)-(\d+)")


@dataclass(frozen=True)
class Variant:
    """One family of profiled launches: a kernel over a list of (buffer MiB, passes)."""

    name: str
    points: tuple[tuple[int, int], ...]  # (buffer size in MiB, passes)

    def __post_init__(self):
        if not self.points or any(s <= 0 or p < 1 for s, p in self.points):
            raise ValueError(f"points(={self.points}) must be a non-empty list of (MiB > 0, passes >= 1)")


_SIZES = (4, 8, 12, 16, 20, 24, 28, 32, 40, 48)
VARIANTS = {v.name: v for v in (
    Variant("rewrite", tuple((s, 16) for s in _SIZES) + ((16, 4), (16, 64), (24, 4), (24, 64))),
    Variant("storefirst", tuple((s, 16) for s in (16, 24, 28, 32, 40, 48))),
    Variant("storesweep", tuple((s, 2) for s in (16, 24, 28, 32, 36, 40, 44, 48, 56))),
    Variant("hotread", tuple((s, 16) for s in (24, 32, 36, 40, 44, 48))),
    Variant("hotwrite", tuple((s, 16) for s in (24, 32, 36, 40, 44, 48))),
    Variant("atomic", tuple((s, 8) for s in (4, 8, 16, 20, 24, 28, 32, 40))),
    Variant("stream", tuple((s, 16) for s in (4, 8, 16, 20, 24, 28))),
)}


@functools.cache
def _kernels():
    import triton
    import triton.language as tl

    @triton.jit
    def rewrite(buf, stream, n, chunk, passes, stream_chunk, STREAM: tl.constexpr, ATOMIC: tl.constexpr,
                STOREFIRST: tl.constexpr, SWEEP: tl.constexpr, HOT: tl.constexpr, WSTREAM: tl.constexpr,
                BLOCK: tl.constexpr):
        """CTA c: ``passes`` times, every element of its chunk of ``buf`` plus one (a load and a store, or an
        atomic add; STOREFIRST: the pass number stored, then loaded; SWEEP: stored in the first pass, loaded in
        the others; HOT: loaded only); with STREAM, also a read (WSTREAM: a store) of its own new
        ``stream_chunk`` elements of ``stream`` each pass."""
        pid = tl.program_id(0)
        start = pid.to(tl.int64) * chunk
        end = tl.minimum(start + chunk, n)
        offs = tl.arange(0, BLOCK)
        acc = tl.zeros([BLOCK], tl.float32)
        for p in range(passes):
            for i in range(0, chunk, BLOCK):
                idx = start + i + offs
                if ATOMIC:
                    tl.atomic_add(buf + idx, 1.0, mask=idx < end, sem="relaxed")
                elif HOT:
                    acc += tl.load(buf + idx, mask=idx < end, other=0.0, cache_modifier=".cg")
                elif SWEEP:
                    if p == 0:
                        tl.store(buf + idx, idx.to(tl.float32), mask=idx < end)
                    else:
                        acc += tl.load(buf + idx, mask=idx < end, other=0.0, cache_modifier=".cg")
                elif STOREFIRST:
                    tl.store(buf + idx, (idx + p).to(tl.float32), mask=idx < end)
                    acc += tl.load(buf + idx, mask=idx < end, other=0.0, cache_modifier=".cg")
                else:
                    x = tl.load(buf + idx, mask=idx < end, other=0.0, cache_modifier=".cg")
                    tl.store(buf + idx, x + 1.0, mask=idx < end)
            if STREAM:
                s0 = (p * tl.num_programs(0) + pid).to(tl.int64) * stream_chunk
                for i in range(0, stream_chunk, BLOCK):
                    if WSTREAM:
                        tl.store(stream + s0 + i + offs, acc)
                    else:
                        acc += tl.load(stream + s0 + i + offs, cache_modifier=".cg")
        if STREAM or STOREFIRST or SWEEP or HOT:
            tl.store(stream + pid, tl.sum(acc, axis=0))  # keeps the loads alive

    return rewrite


def run_variant(name: str, buf, stream, n: int, grid: int, passes: int):
    """One launch of variant ``name`` over ``buf[:n]`` (``stream``: the read-once buffer of ``stream``)."""
    if n > buf.numel():
        raise ValueError(f"n(={n}) must be <= buf.numel()(={buf.numel()})")
    per = STREAM_BYTES // FP32
    streams = name in ("stream", "hotread", "hotwrite")
    if streams and passes * grid * per > stream.numel():
        raise ValueError(f"stream.numel()(={stream.numel()}) must be >= passes × grid × {per}")
    return _kernels()[(grid,)](buf, stream, n, chunk_size(n, grid), passes, per, STREAM=streams,
                               ATOMIC=name == "atomic", STOREFIRST=name == "storefirst", SWEEP=name == "storesweep",
                               HOT=name in ("hotread", "hotwrite"), WSTREAM=name == "hotwrite", BLOCK=BLOCK,
                               num_warps=NUM_WARPS)


def child() -> int:
    """Runs under ncu: every launch warmed up outside the profiled range, then one profiled and tagged."""
    torch = cuda_torch()
    sms = torch.cuda.get_device_properties(0).multi_processor_count
    biggest = max(s for v in VARIANTS.values() for s, _ in v.points) * MiB // FP32
    buf = torch.rand(biggest, dtype=torch.float32, device="cuda")
    longest = max(p for name in ("stream", "hotread", "hotwrite") for s, p in VARIANTS[name].points)
    stream = torch.rand(longest * sms * STREAM_BYTES // FP32, dtype=torch.float32, device="cuda")
    for variant in VARIANTS.values():
        for size, passes in variant.points:
            profiled_launch(torch, TAG.format(variant.name, size * MiB, passes),
                            lambda v=variant.name, n=size * MiB // FP32, p=passes: run_variant(v, buf, stream, n, sms, p))
    return 0


def derive(name: str, size: int, passes: int, ctas: int | None, counters: dict) -> dict:
    """Per launch: DRAM writes per pass over the buffer, and the buffer's re-fetches beyond its first fill
    (streamed bytes taken out)."""
    streamed = passes * (ctas or 0) * STREAM_BYTES if name in ("stream", "hotread", "hotwrite") else 0
    fetched = 0 if name in ("storefirst", "storesweep") else size  # stored first: nothing to fill
    read = 0 if name == "hotwrite" else streamed  # hotwrite's stream is stored, not read
    return {"streamed_bytes": streamed,
            "writes_per_pass": counters["dram_write_bytes"] / (passes * size),
            "rereads": (counters["dram_read_bytes"] - fetched - read) / size}


def results(rows: list[dict]) -> dict[str, list[dict]]:
    """``{variant: [row per (size, passes)]}`` from parsed ncu rows, by their NVTX tags."""
    out: dict[str, list[dict]] = {}
    for row in rows:
        m = next((m for m in map(_TAG_RE.fullmatch, re.split(r"[:\s\"]", row["nvtx"])) if m), None)
        if m is None or m.group(1) not in VARIANTS:
            continue
        name, size, passes = m.group(1), int(m.group(2)), int(m.group(3))
        values, ctas = launch_counters(row)
        out.setdefault(name, []).append({"size_bytes": size, "passes": passes, "ctas": ctas, **values,
                                         **derive(name, size, passes, ctas, values)})
    return {n: sorted(rs, key=lambda r: (r["passes"], r["size_bytes"])) for n, rs in out.items()}


def probe(out_dir: Path, timeout_s: float = NCU_TIMEOUT_S) -> dict:
    """Run the probe under ncu, write ``out_dir/rewrite_probe.json`` (and ncu's log and raw CSV), return the data."""
    torch = cuda_torch()
    keep, _, prov, rows = run_counter_probe("iosim.kernels.rewrite_probe", "rewrite_probe", out_dir, PROBE_METRICS,
                                            "rewrite probe", timeout_s)
    data = {"provenance": prov, "device": device_info(torch),
            "metrics": keep, "block": BLOCK, "num_warps": NUM_WARPS, "align": ALIGN, "stream_bytes": STREAM_BYTES,
            "variants": {n: asdict(v) for n, v in VARIANTS.items()}, "results": results(rows)}
    (out_dir / "rewrite_probe.json").write_text(json.dumps(data, indent=1) + "\n")
    return data


def report(data: dict) -> list[str]:
    """Each launch's DRAM bytes, writes per pass and re-fetches."""
    return [f"{name:<7} {r['size_bytes'] / MiB:>4.0f} MiB x {r['passes']:>2} passes: DRAM read {r['dram_read_bytes'] / MiB:8.2f} "
            f"write {r['dram_write_bytes'] / MiB:8.2f} MiB, writes/pass {r['writes_per_pass']:.3f}, "
            f"rereads {r['rereads']:.3f}, {r['duration_s'] * 1e6:7.1f} us"
            for name, rows in data["results"].items() for r in rows]


def main(argv=None) -> int:
    return probe_cli(argv, "python -m iosim.kernels.rewrite_probe", __doc__, "rewrite_probe", child, probe, report)


if __name__ == "__main__":
    sys.exit(main())
