"""Write what iosim predicts for every case of a measurement grid before the GPU runs them: predicted-before.json.

Each case is simulated as ``iosim validate`` will simulate it once measured (SDPA's backends through their
reference models, iosim's own kernels from their committed code; Nsight Compute's cache control, the GPU's
calibrated profile), so that a later validation can be compared with a prediction that could not have seen the
counters. Predictions are keyed by case name, as the measurement file will be.

    python experiments/predict_grid.py sdpa_small --gpu h200 --out DIR/predicted-before.json
"""
from __future__ import annotations

import argparse
import datetime
import json
import subprocess
import sys
from pathlib import Path

from iosim.hardware.profile import load_profile
from iosim.kernels.cases import GRIDS
from iosim.measure.validate import _predicted
from iosim.schedule.problem import SDPA_IMPLS, RunConfig
from iosim.schedule.references import reference_config
from iosim.simulate import simulate


def config_of(spec, arch: str) -> RunConfig:
    """The configuration validation simulates ``spec`` with (counters read under ncu's cache control)."""
    if spec.impl in SDPA_IMPLS:
        return reference_config(spec.impl, spec.problem, arch, "ncu")
    return RunConfig(algo=spec.impl, problem=spec.problem, tiling=spec.tiling, mode="ncu", dq=spec.dq)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("grid", choices=sorted(g for g in GRIDS if g != "foreign"))
    ap.add_argument("--gpu", default="h200", help="profile (default: h200, its calibrated profile)")
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args()
    profile = load_profile(args.gpu)
    runs = {}
    for spec in GRIDS[args.grid]():
        print(spec.name, file=sys.stderr, flush=True)
        try:
            run = simulate(config_of(spec, profile.arch), profile)
        except ValueError as e:  # a case the model refuses (validation lists it, unmodelled): said so, not predicted
            runs[spec.name] = {"refused": str(e)}
            continue
        runs[spec.name] = {"predicted": _predicted(run), "config": run.config,
                           "kernels": {k.name: {"time_s": k.time_s, "dram_bytes": k.levels["hbm"].total}
                                       for k in run.kernels}}
    write_predictions(args.out, f"python experiments/predict_grid.py {args.grid} --gpu {args.gpu} (profile {profile.id})",
                      runs)
    return 0


def write_predictions(out: Path, how: str, runs: dict) -> None:
    """``{"about", "runs"}`` to ``out``: ``about`` says how (``how``), from which commit and when they were written."""
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
    about = f"{how}, commit {commit} plus its working tree, written {datetime.date.today()} before the cases ran on the GPU"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"about": about, "runs": runs}, indent=1) + "\n")
    print(f"{len(runs)} predictions -> {out}", file=sys.stderr)


if __name__ == "__main__":
    sys.exit(main())
