"""What a kernel's first reads from DRAM cost it: kernels/flash2.py's forward with its inputs cold and warm.

The engine charges a pass whose tiles missed the L2 the calibrated miss cost (``miss_pass_s``), and a convoy of
CTAs reading the same missing lines a share of it (``kernels/convoy_probe.py`` measured that share on the
calibration's loop). This probe measures the whole charge on a real attention forward: shapes whose Q, K, V and
O fit the L2 several times over, each timed alone (CUDA events around one call, enqueued behind a sleeping kernel so that the host's launch is not timed) after the L2 was emptied of them
(a 256 MiB buffer zeroed, then read, so its dirty lines are written back before the kernel starts) and right
after the same call (its inputs in the L2). The difference is what its misses cost it; the engine predicts both
(``ncu`` mode for the first, ``plain`` mode's second call for the other), so the probe tests the charge on
shapes no validation set holds. The same loop over one to sixteen waves (``WAVES``) tells whether later waves pay
their misses as the first does; each case is also timed cold after a flush of 64 MiB, which empties the L2 as the
256 MiB one does but touches a quarter of the pages.

    python -m iosim.kernels.warm_probe --out DIR      # on a GPU: DIR/warm_probe.json
"""
from __future__ import annotations

import argparse
import json
import statistics
from dataclasses import asdict
from pathlib import Path

# (batch, heads, seq, head_dim, tiling overrides): K and V of 4-8 MiB, one or two waves of CTAs
CASES = (
    (1, 8, 4096, 64, {}),
    (1, 4, 8192, 64, {}),
    (1, 16, 2048, 64, {}),
    (1, 4, 4096, 128, {}),
    (1, 2, 8192, 128, {}),
    (1, 8, 2048, 128, {}),
    (1, 8, 4096, 64, {"block_m": 64, "block_n": 64, "warps": 4, "stages": 3}),
    (1, 4, 4096, 128, {"block_m": 64, "block_n": 64, "warps": 4, "stages": 3}),
)
# (batch, heads, seq, head_dim): the same loop over more heads, one to sixteen waves of CTAs, cold only: whether
# later waves pay their misses as the first does
WAVES = tuple((1, h, 4096, 128, {}) for h in (4, 8, 16, 32, 64)) + tuple((1, h, 4096, 64, {}) for h in (8, 16, 32, 64, 128))
FLUSH_SMALL = 64 * 2**20  # a flush that still empties the L2 but touches a quarter of the pages
REPS = 30
SLEEP_CYCLES = 2_000_000  # about a millisecond: longer than the host takes to launch the kernel


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", required=True, type=Path, help="folder for warm_probe.json")
    args = ap.parse_args(argv)
    import torch

    from iosim.kernels import flash2
    from iosim.kernels.harness import provenance

    flush = torch.empty(256 * 2**20, dtype=torch.int8, device="cuda")
    small = flush[:FLUSH_SMALL]
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)

    def timed(fn) -> float:
        # the GPU sleeps while the host enqueues the launch, so the events time the kernel, not the host's launch
        torch.cuda._sleep(SLEEP_CYCLES)
        start.record()
        fn()
        end.record()
        torch.cuda.synchronize()
        return start.elapsed_time(end) * 1e-3

    rows = []
    for batch, heads, n, d, over in CASES + WAVES:
        q, k, v = (torch.randn(batch, heads, n, d, dtype=torch.float16, device="cuda") for _ in range(3))
        cfg = flash2.tiling(d, q.dtype, **over)
        scale = d ** -0.5

        def fn():
            flash2.forward(q, k, v, False, scale, cfg, [])

        fn()
        torch.cuda.synchronize()
        cold, warm, cold_small = [], [], []
        for _ in range(REPS):
            flush.zero_()
            flush.sum(dtype=torch.int32)  # the zeroed lines written back, the L2 left holding clean lines of it
            torch.cuda.synchronize()
            cold.append(timed(fn))
            warm.append(timed(fn))
            small.zero_()
            small.sum(dtype=torch.int32)
            torch.cuda.synchronize()
            cold_small.append(timed(fn))
        row = {"batch": batch, "heads": heads, "seq_len": n, "head_dim": d, "block_m": cfg.block_m,
               "block_n": cfg.block_n, "warps": cfg.warps, "stages": cfg.stages, "ctas": -(-n // cfg.block_m) * heads,
               "cold_s": statistics.median(cold), "warm_s": statistics.median(warm),
               "cold_small_flush_s": statistics.median(cold_small), "cold_all_s": cold, "warm_all_s": warm,
               "cold_small_flush_all_s": cold_small}
        rows.append(row)
        print(f"b{batch}h{heads} n{n} d{d} {cfg.block_m}x{cfg.block_n}w{cfg.warps}s{cfg.stages}: cold "
              f"{row['cold_s'] * 1e6:.2f} us (after a 64 MiB flush {row['cold_small_flush_s'] * 1e6:.2f}), "
              f"warm {row['warm_s'] * 1e6:.2f} us, "
              f"{(row['cold_s'] / row['warm_s'] - 1) * 100:+.1f} %", flush=True)
    args.out.mkdir(parents=True, exist_ok=True)
    doc = {"schema": "iosim-warm-probe", "schema_version": 1, "provenance": asdict(provenance(None, counters=False)),
           "reps": REPS, "rows": rows}
    (args.out / "warm_probe.json").write_text(json.dumps(doc, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
