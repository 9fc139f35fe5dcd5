"""Does a loop run as fast in one lockstep wave as in a grid of many waves? A probe of how ``iosim calibrate`` measures.

The calibration measures each tile loop with exactly ``c`` CTAs an SM, all launched at once and running the same
number of passes (one wave, in lockstep from the start). An attention kernel's grid is many waves: each CTA starts
when a slot frees, so the CTAs sharing an SM run out of phase, one's softmax beside another's products. This probe
runs the same work both ways, one launch after the other, at the same tiles, warps, stages and CTAs an SM:

- the calibrated loop (:func:`iosim.kernels.microbench.tile_loop`, FlashAttention-2's softmax): ``c`` × SMs CTAs of
  ``CAL_ITERS`` passes, then 8 × as many CTAs of ``CAL_ITERS`` / 8 passes;
- ``kernels/flash2.py``'s forward and the foreign F2 (``experiments/foreign_kernels``) at the same tiles: one Q block
  a CTA, ``c`` × SMs query heads sharing one K/V head (GQA) of ``ITERS`` blocks, then 8 Q blocks a head and K/V of
  ``ITERS`` / 8 blocks: the same FLOPs in 8 waves.

Each run is timed by ``do_bench`` (``seconds``: back to back, as the calibration times its loops) and, since
2026-12-05, also alone (``alone_seconds``: the L2 flushed and the GPU idle before one call, as Nsight Compute times
the call ``iosim validate`` compares with): F2 ran 7-12 % faster under ncu than in ``do_bench``, the calibrated loop's
own gap is not known.

    python -m iosim.kernels.wave_probe --out DIR      # on a GPU: DIR/wave_probe.json
    python -m iosim.kernels.wave_probe --series h200 --out DIR   # and the calibrated loop at every point of the tile series
"""
from __future__ import annotations

import argparse
import functools
import importlib.util
import json
import math
import sys
from pathlib import Path

from iosim.kernels import microbench as mb
from iosim.kernels.timing import time_alone

# (block_m, block_n, head_dim, warps, CTAs an SM, stages): the 4-warp 64 x 64 loops predicted slow three stages deep
POINTS = tuple((64, 64, d, 4, c, s) for d, c, s in ((128, 2, 2), (128, 2, 3), (128, 1, 4), (64, 4, 2), (64, 4, 3), (64, 3, 4)))
ITERS = 512  # passes of an attention CTA in one wave; in the many-wave grid a CTA runs ITERS / WAVES
CAL_ITERS = 2048  # passes of a calibrated loop's CTA in one wave (256 in eight: its own start costs a few %)
WAVES = 8
F2 = Path(__file__).resolve().parents[1] / "experiments" / "foreign_kernels" / "F2_exp2_masksplit.py"


@functools.cache
def foreign_f2():
    """The foreign F2 module (its tiles are module constants), loaded once, or None where the repository's experiments
    are absent."""
    if not F2.exists():
        return None
    spec = importlib.util.spec_from_file_location("wave_probe_f2", F2)
    mod = sys.modules[spec.name] = importlib.util.module_from_spec(spec)  # Triton finds a kernel's module by name
    spec.loader.exec_module(mod)
    return mod


def _attention_runs(torch, bm, bn, d, warps, stages, heads, kv_heads, nq, nk):
    """(name, fn, FLOPs) of kernels/flash2.py and F2 at these tiles on ``heads`` query heads of ``nq`` rows and
    ``kv_heads`` K/V heads of ``nk`` rows (one batch, not causal)."""
    from iosim.kernels import flash2

    q = torch.randn(1, heads, nq, d, dtype=torch.float16, device="cuda")
    k = torch.randn(1, kv_heads, nk, d, dtype=torch.float16, device="cuda") * 0.05
    v = torch.randn_like(k)
    flops = 4.0 * heads * nq * nk * d
    runs = [("flash2", lambda: flash2.attention(q, k, v, block_m=bm, block_n=bn, warps=warps, stages=stages), flops)]
    f2 = foreign_f2()
    if f2 is not None:
        f2.BLOCK_M, f2.BLOCK_N, f2.NUM_WARPS, f2.NUM_STAGES = bm, bn, warps, stages
        runs.append(("F2", lambda: f2.attention(q, k, v), flops))
    return runs


def shapes(point, sms: int, iters: int = ITERS, waves: int = WAVES) -> list:
    """(label, waves, heads, kv_heads, nq, nk) the attention kernels run at ``point`` on ``sms`` SMs: one wave (a Q
    block a CTA, c × SMs heads sharing one K/V head of ``iters`` blocks), ``waves`` waves of the same FLOPs (``waves``
    Q blocks a head, K/V of ``iters`` / ``waves`` blocks), and a plain grid (8 heads of 32K rows, K/V a head each)."""
    bm, bn, _, _, c, _ = point
    return [("one wave", 1, c * sms, 1, bm, iters * bn), (f"{waves} waves", waves, c * sms, 1, waves * bm,
            iters // waves * bn), ("grid 1x8x32768", None, 8, 8, 32768, 32768)]


def _calibrated_run(torch, bm, bn, d, warps, stages, ctas, iters, softmax: bool = True):
    """(name, fn, FLOPs) of the calibrated loop (with its softmax where ``softmax``): ``ctas`` CTAs of ``iters`` passes."""
    q, k, v = mb._tile_inputs(torch, torch.float16, bm, bn, d)
    o = torch.empty(ctas * bm, d, dtype=torch.float32, device="cuda")
    ids = torch.full((ctas,), -1, dtype=torch.int32, device="cuda")
    scale = mb.LOG2E / math.sqrt(d)
    fn = lambda: mb.tile_loop(q, k, v, o, ids, bn=bn, ctas=ctas, iters=iters, warps=warps, stages=stages,  # noqa: E731
                              softmax=softmax, qk_scale=scale)
    return "calibrated" if softmax else "calibrated, no softmax", fn, 4.0 * bm * bn * d * iters * ctas


def measure(torch, point, iters: int = ITERS, waves: int = WAVES) -> list:
    """Rows of FLOP/s for every loop of ``point``: in one wave, in ``waves``, and the attention kernels on a plain grid."""
    bm, bn, d, warps, c, stages = point
    sms = torch.cuda.get_device_properties(0).multi_processor_count
    rows = []
    for label, w, heads, kv_heads, nq, nk in shapes(point, sms, iters, waves):
        runs = [] if w is None else [_calibrated_run(torch, bm, bn, d, warps, stages, c * sms * w, CAL_ITERS // w)]
        runs += _attention_runs(torch, bm, bn, d, warps, stages, heads, kv_heads, nq, nk)
        for name, fn, flops in runs:
            fn()
            seconds = mb.time_fn(fn).median_s
            alone = time_alone(fn)  # one call after an idle pause, as Nsight Compute times it
            rows.append({"loop": name, "shape": label, "block_m": bm, "block_n": bn, "head_dim": d, "warps": warps,
                         "stages": stages, "ctas_per_sm": c, "waves": w, "heads": heads, "kv_heads": kv_heads,
                         "seq_q": nq, "seq_k": nk, "seconds": seconds, "flops": flops / seconds,
                         "alone_seconds": alone})
            print(f"{bm}x{bn}x{d} w{warps} s{stages} c{c} {name:10s} {label}: {flops / seconds / 1e12:.0f} TFLOP/s",
                  flush=True)
    return rows


def series(torch, points, iters: int = CAL_ITERS, waves: int = WAVES) -> list:
    """Rows of FLOP/s of the calibrated loop, with and without its softmax, in one wave and in ``waves`` at every point of
    a profile's tile series (:func:`iosim.kernels.index_probe.series_points`)."""
    sms = torch.cuda.get_device_properties(0).multi_processor_count
    rows = []
    for bm, bn, d, warps, stages, counts in points:
        for c in counts:
            for softmax in (False, True):
                for w in (1, waves):
                    name, fn, flops = _calibrated_run(torch, bm, bn, d, warps, stages, c * sms * w, iters // w, softmax)
                    fn()
                    seconds = mb.time_fn(fn).median_s
                    rows.append({"loop": name, "shape": "series", "block_m": bm, "block_n": bn, "head_dim": d,
                                 "warps": warps, "stages": stages, "ctas_per_sm": c, "waves": w, "seconds": seconds,
                                 "flops": flops / seconds, "alone_seconds": time_alone(fn)})
                    print(f"{bm}x{bn}x{d} w{warps} s{stages} c{c} {name:22s} waves={w}: {flops / seconds / 1e12:.0f} "
                          "TFLOP/s", flush=True)
    return rows


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", required=True, type=Path, help="folder for wave_probe.json")
    ap.add_argument("--series", default=None, metavar="NAME|FILE",
                    help="also the calibrated loop in one wave and in eight at every point of this profile's tile series")
    args = ap.parse_args(argv)
    from dataclasses import asdict

    import torch

    from iosim.hardware.profile import load_profile
    from iosim.kernels.harness import provenance
    from iosim.kernels.index_probe import series_points

    rows = [row for point in POINTS for row in measure(torch, point)]
    if args.series:
        rows += series(torch, series_points(load_profile(args.series)))
    args.out.mkdir(parents=True, exist_ok=True)
    doc = {"schema": "iosim-wave-probe", "schema_version": 1, "provenance": asdict(provenance(None, counters=False)),
           "iters": ITERS, "calibrated_iters": CAL_ITERS, "waves": WAVES, "series": args.series, "rows": rows}
    (args.out / "wave_probe.json").write_text(json.dumps(doc, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
