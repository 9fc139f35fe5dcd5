"""What iosim predicts for the warm probe (``kernels/warm_probe.py``), written before the GPU runs it.

Each case is kernels/flash2.py's forward at the probe's shape and tiles, simulated twice: cold, in ``ncu`` mode
(its L2 emptied before it), and warm, the same kernel launched twice in ``plain`` mode (the second finds the
first's inputs in the L2); both aggregated and run one CTA at a time (``aggregate=False``, issue 9's reference),
which charge a convoy's missed passes differently (``experiments/measurements/h100/convoy_probe/README.md``).
The probe's ``WAVES`` (one to sixteen waves of the same loop) are predicted too, their first rows' cases kept as
the first prediction wrote them (``predicted-before.json``): ``--only-waves`` writes the waves alone.

    python experiments/probes/warm_predict.py --gpu h200 --out DIR/predicted-before.json
"""
from __future__ import annotations

import argparse
import dataclasses
import json
from pathlib import Path

from iosim.engine.simulator import Engine
from iosim.hardware.profile import load_profile
from iosim.kernels import flash2
from iosim.kernels.warm_probe import CASES, WAVES
from iosim.schedule.build import build_schedule
from iosim.schedule.problem import Problem, RunConfig, Tiling


def predict(profile, batch: int, heads: int, n: int, d: int, over: dict, aggregate: bool) -> tuple[float, float]:
    """(cold, warm) seconds of the forward at one case."""
    t = flash2.tiling(d, None, **over)
    tiling = Tiling(block_m=t.block_m, block_n=t.block_n, warps=t.warps, stages=t.stages)
    times = {}
    for mode in ("ncu", "plain"):
        config = RunConfig(algo="flash2", problem=Problem(batch=batch, heads=heads, seq_q=n, head_dim=d),
                           tiling=tiling, mode=mode)
        schedule = build_schedule(config, profile.sm_count)
        if mode == "plain":  # launched twice: the second call finds the first's inputs in the L2
            schedule = dataclasses.replace(schedule, kernels=schedule.kernels * 2)
        times[mode] = Engine(schedule, profile, mode=mode, aggregate=aggregate).run().kernels[-1].time_s
    return times["ncu"], times["plain"]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--gpu", default="h200")
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--only-waves", action="store_true", help="predict the WAVES cases alone")
    args = ap.parse_args()
    profile = load_profile(args.gpu)
    rows = []
    for batch, heads, n, d, over in (WAVES if args.only_waves else CASES + WAVES):
        row = {"batch": batch, "heads": heads, "seq_len": n, "head_dim": d, **over}
        for label, aggregate in (("aggregated", True), ("per_cta", False)):
            cold, warm = predict(profile, batch, heads, n, d, over, aggregate)
            row[f"{label}_cold_s"], row[f"{label}_warm_s"] = cold, warm
        rows.append(row)
        print(f"b{batch}h{heads} n{n} d{d} {over or ''}: aggregated {row['aggregated_cold_s'] * 1e6:.1f} / "
              f"{row['aggregated_warm_s'] * 1e6:.1f} us, per CTA {row['per_cta_cold_s'] * 1e6:.1f} / "
              f"{row['per_cta_warm_s'] * 1e6:.1f} us (cold / warm)", flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"gpu": profile.id, "rows": rows}, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
