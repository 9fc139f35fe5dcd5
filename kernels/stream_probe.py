"""How fast one CTA streams its tiles as more CTAs stream beside it: the calibration's tile loop, from the L2 and from DRAM.

``iosim calibrate`` times its pipelined tile loop (:func:`iosim.kernels.microbench.miss_cost`) at one
count of CTAs, one on every other SM, on L2-resident tiles and on tiles read once from DRAM, and the
engine charges the difference (``miss_pass_*_s``) to every pass that misses, however many CTAs stream
together. This probe runs the same two loops at 4 to 132 CTAs (at most one an SM, so each CTA has its
SM's issue slots and load path to itself): per pass, the seconds from the L2 and from DRAM, and the DRAM
throughput all CTAs reach together, so that a pass's miss cost can be read against the load DRAM is under.
It also times one wave of the calibration's kernel-start loop (``microbench.cta_fixed_cost``: 128 x 64 x 64,
4 warps, the L2 flushed, ``%globaltimer`` at each CTA's start and end) at 4 to 528 CTAs (up to four an SM) instead of two an SM
only: how much of a kernel's fixed start is its wave's size (the spread of its CTAs' starts, and the span's
part that does not grow with the trips).

    python -m iosim.kernels.stream_probe --out DIR      # on a GPU: DIR/stream_probe.json
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from iosim.kernels import microbench as mb

# (block_m, block_n, head_dim, warps, stages, softmax): the calibration's low-math loop (16 query rows, 64 KiB
# of K and V a pass) with and without FlashAttention-2's online softmax, its 128-row forward loop (16 KiB a
# pass) at two and three stages, and 128 x 128 x 64 (32 KiB a pass)
LOOPS = ((16, 128, 128, 4, 2, False), (16, 128, 128, 4, 2, True), (128, 64, 64, 4, 2, False),
         (128, 64, 64, 4, 2, True), (128, 64, 64, 4, 3, False), (128, 128, 64, 4, 2, False))
CTAS = (4, 8, 16, 33, 66, 99, 132)  # CTAs streaming together, at most one an SM
ITERS = 256  # passes a CTA


def pass_seconds(torch, bm: int, bn: int, d: int, warps: int, stages: int, softmax: bool, ctas: int,
                 iters: int = ITERS) -> dict:
    """Seconds a pass of the tile loop on ``ctas`` CTAs (``microbench.miss_cost`` at that count and depth): on 16
    K/V tiles every CTA re-reads (``resident``: L2 hits after the first reads) and on tiles each CTA reads once
    (``stream``: DRAM, the L2 flushed before each run), and how many SMs the CTAs ran on (one launch's ``%smid``)."""
    got = mb.miss_cost(torch, bm, bn, d, warps, iters, softmax, ctas=ctas, stages=stages)
    q, k, v = mb._tile_inputs(torch, torch.float16, bm, bn, d)
    o = torch.empty(ctas * bm, d, dtype=torch.float32, device="cuda")
    ids = torch.full((ctas,), -1, dtype=torch.int32, device="cuda")
    mb._tile_kernel()[(ctas,)](q, k, v, o, ids, 16, 1.0, ITERS=1, BM=bm, BN=bn, D=d, RECORD_SM=True,
                               SOFTMAX=softmax, num_warps=warps, num_stages=stages)
    return {"resident_pass_s": got["miss_pass_resident_s"], "stream_pass_s": got["miss_pass_stream_s"],
            "sms": len(set(ids.cpu().tolist()))}


START_CTAS = (4, 16, 33, 66, 132, 264, 396, 528)  # one wave: up to four CTAs an SM
# (block_m, block_n, head_dim, warps, CTAs an SM at most): the calibration's loop, and the d = 128, 8-warp one
START_LOOPS = ((128, 64, 64, 4, 4), (128, 64, 128, 8, 2))
START_TRIPS = (1, 2, 4, 8, 16)


def start_spans(torch, ctas: int, trips=START_TRIPS, bm: int = 128, bn: int = 64, d: int = 64, warps: int = 4,
                reps: int = 9) -> dict:
    """One wave of ``ctas`` CTAs of the tile loop at each of ``trips``, the L2 flushed before every launch:
    the median span (last end - first start), the median spread of the CTAs' starts (last start - first
    start), and a least-squares line of span against trips (``fixed_s``, ``per_trip_s``)."""
    import numpy as np

    q, k, v = mb._tile_inputs(torch, torch.float16, bm, bn, d)
    stages = mb.default_tiling("flash2", mb.FWD, d).stages
    flush = torch.empty(256 * 2**20, dtype=torch.int8, device="cuda")
    out = {"spans_s": {}, "start_spread_s": {}}
    for trips_ in trips:
        stamps = mb.wave_stamps(torch, q, k, v, flush, ctas=ctas, iters=trips_, bn=bn, warps=warps, stages=stages,
                                reps=reps)
        out["spans_s"][trips_] = float(np.median([span for span, _ in stamps]))
        out["start_spread_s"][trips_] = float(np.median([spread for _, spread in stamps]))
    per_trip, fixed = np.polyfit(list(trips), [out["spans_s"][t] for t in trips], 1)
    return {**out, "fixed_s": float(fixed), "per_trip_s": float(per_trip)}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", required=True, type=Path, help="folder for stream_probe.json")
    ap.add_argument("--starts-only", action="store_true", help="only the kernel-start spans")
    args = ap.parse_args(argv)
    from dataclasses import asdict

    import torch

    from iosim.kernels.harness import provenance

    sms = torch.cuda.get_device_properties(0).multi_processor_count
    rows = []
    for bm, bn, d, warps, stages, softmax in LOOPS if not args.starts_only else ():
        pass_bytes = 2 * bn * d * 2  # K and V, fp16
        for ctas in (c for c in CTAS if c <= sms):
            got = pass_seconds(torch, bm, bn, d, warps, stages, softmax, ctas)
            row = {"block_m": bm, "block_n": bn, "head_dim": d, "warps": warps, "stages": stages, "softmax": softmax,
                   "ctas": ctas, "sms_used": got["sms"], "pass_bytes": pass_bytes,
                   "resident_pass_s": got["resident_pass_s"], "stream_pass_s": got["stream_pass_s"],
                   "miss_s": got["stream_pass_s"] - got["resident_pass_s"],
                   "cta_l2_rate": pass_bytes / got["resident_pass_s"], "cta_dram_rate": pass_bytes / got["stream_pass_s"],
                   "dram_throughput": ctas * pass_bytes / got["stream_pass_s"]}
            rows.append(row)
            print(f"{bm}x{bn}x{d} w{warps} s{stages} softmax={softmax} ctas={ctas} (sms {got['sms']}): "
                  f"L2 {got['resident_pass_s'] * 1e6:.3f} us, DRAM {got['stream_pass_s'] * 1e6:.3f} us a pass, "
                  f"miss {row['miss_s'] * 1e6:.3f} us, DRAM {row['dram_throughput'] / 1e12:.2f} TB/s", flush=True)
    starts = []
    for bm, bn, d, warps, most in START_LOOPS:
        for ctas in (c for c in START_CTAS if c <= most * sms):
            got = start_spans(torch, ctas, bm=bm, bn=bn, d=d, warps=warps)
            starts.append({"block_m": bm, "block_n": bn, "head_dim": d, "warps": warps, "ctas": ctas, **got})
            print(f"start {bm}x{bn}x{d} w{warps}: {ctas} CTAs: fixed {got['fixed_s'] * 1e6:.2f} us, {got['per_trip_s'] * 1e6:.3f} us a trip, "
                  f"starts spread {got['start_spread_s'][1] * 1e6:.2f} us", flush=True)
    args.out.mkdir(parents=True, exist_ok=True)
    doc = {"schema": "iosim-stream-probe", "schema_version": 1, "provenance": asdict(provenance(None, counters=False)),
           "iters": ITERS, "rows": rows, "starts": starts}
    (args.out / "stream_probe.json").write_text(json.dumps(doc, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
