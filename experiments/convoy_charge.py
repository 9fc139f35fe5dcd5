"""What the engine charges a convoy of CTAs for a missed pass, beside what the convoy probe measured.

The convoy probe (``python -m iosim.kernels.convoy_probe``, committed under
``experiments/measurements/<gpu>/convoy_probe/run*/``) timed the calibration's tile loop with groups of ``g``
consecutive CTAs reading the same K/V tiles once each from DRAM, one CTA an SM. This runs the engine on the same
convoys: flash2's forward at the probe's tiles, ``g`` query blocks a head reading that head's keys, as many CTAs as
SMs, ``ncu`` mode, the GPU's calibrated profile, aggregated and one CTA at a time; a pass's miss charge is the time
with the profile's ``miss_pass_s`` less the time without it, over the passes. It prints both beside the probe's
miss (the mean of the committed runs) and the ratio of each charge to it.

    python experiments/convoy_charge.py [--gpu h100] [--keys 32768]
"""
from __future__ import annotations

import argparse
import json
import statistics
from dataclasses import replace
from pathlib import Path

from iosim.hardware.profile import load_profile
from iosim.schedule.problem import Problem, RunConfig, Tiling
from iosim.simulate import simulate

MEASURED = Path(__file__).resolve().parent / "measurements"


def probe_rows(gpu: str) -> dict:
    """(block_m, block_n, d, warps, stages, g) -> the mean measured miss a pass, one CTA an SM, over the runs."""
    got: dict = {}
    for path in sorted((MEASURED / gpu / "convoy_probe").glob("run*/convoy_probe.json")):
        for r in json.loads(path.read_text())["rows"]:
            if r["ctas_per_sm"] == 1:
                key = (r["block_m"], r["block_n"], r["head_dim"], r["warps"], r["stages"], r["group"])
                got.setdefault(key, []).append(r["miss_s"])
    return {k: statistics.mean(v) for k, v in got.items()}


def engine_charge(profile, tile: tuple, group: int, aggregate: bool, keys: int) -> float:
    """Seconds a pass the engine adds for the profile's miss cost, to convoys of ``group`` CTAs at ``tile``."""
    bm, bn, d, warps, stages = tile

    def seconds(miss: float) -> float:
        raw = dict(profile.calibration["raw"], miss_pass_s=miss)
        prof = replace(profile, calibration=dict(profile.calibration, raw=raw))
        config = RunConfig(algo="flash2", problem=Problem(batch=1, heads=profile.sm_count // group,
                                                          seq_q=bm * group, seq_k=keys, head_dim=d),
                           tiling=Tiling(block_m=bm, block_n=bn, warps=warps, stages=stages), mode="ncu")
        return simulate(config, prof, aggregate=aggregate).kernels[0].time_s

    return (seconds(profile.calibration["raw"]["miss_pass_s"]) - seconds(0.0)) / (keys // bn)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--gpu", default="h100", help="measurements/<gpu>/convoy_probe and its calibrated profile")
    ap.add_argument("--keys", type=int, default=32768, help="keys each head's convoy streams (default 32768)")
    args = ap.parse_args()
    profile = load_profile(args.gpu)  # the built-in name resolves to the calibrated profile where there is one
    rows = probe_rows(args.gpu)
    if not rows:
        raise SystemExit(f"no convoy probe runs under {MEASURED / args.gpu / 'convoy_probe'}")
    print(f"{profile.id}: miss a pass (us), one CTA an SM; the profile's miss_pass_s "
          f"{profile.calibration['raw']['miss_pass_s'] * 1e6:.3f} us")
    print(f"{'tile':>16s} {'g':>3s} {'measured':>9s} {'aggregated':>11s} {'ratio':>6s} {'per CTA':>8s} {'ratio':>6s}")
    for (bm, bn, d, warps, stages, g), miss in sorted(rows.items()):
        tile = (bm, bn, d, warps, stages)
        agg, cta = (engine_charge(profile, tile, g, a, args.keys) for a in (True, False))
        print(f"{f'{bm}x{bn}x{d} w{warps} s{stages}':>16s} {g:3d} {miss * 1e6:9.3f} {agg * 1e6:11.3f} "
              f"{agg / miss:6.2f} {cta * 1e6:8.3f} {cta / miss:6.2f}", flush=True)


if __name__ == "__main__":
    main()
