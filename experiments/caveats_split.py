"""How well iosim's caveats separate its least certain predictions: every committed H200 set validated, each case
split by the regimes its kernels ran in (iosim.results.caveats), |error| of DRAM bytes and time per group.

    python experiments/caveats_split.py [--gpu-dir experiments/measurements/h200]

A caveat is worth printing where its group's DRAM errors are far above the rest; this table says whether they are.
"""
from __future__ import annotations

import argparse
import statistics
from pathlib import Path

from iosim.measure.measurement import load_measurement
from iosim.measure.validate import validate

REPO = Path(__file__).resolve().parents[1]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--gpu-dir", type=Path, default=REPO / "experiments" / "measurements" / "h200",
                    help="folder whose measurements.json files (at any depth) are validated")
    args = ap.parse_args()
    paths = sorted(args.gpu_dir.rglob("measurements.json"))
    groups: dict = {}
    for path in paths:
        for r in validate(load_measurement(path))[0]:
            groups.setdefault(tuple(sorted(r.regimes)) or ("none",), []).append(
                (r.error("dram_bytes"), r.error("time_s")))
    print(f"{len(paths)} measurement files under {args.gpu_dir}")
    print(f"{'regimes':32s} {'cases':>5s} {'DRAM median':>11s} {'DRAM max':>9s} {'time median':>11s} {'time max':>9s}")
    for regimes, rows in sorted(groups.items(), key=lambda g: -len(g[1])):
        dram = [abs(d) for d, _ in rows if d is not None]
        time = [abs(t) for _, t in rows if t is not None]
        print(f"{'+'.join(regimes):32s} {len(rows):5d} {statistics.median(dram):11.1%} {max(dram):9.1%} "
              f"{statistics.median(time):11.1%} {max(time):9.1%}")


if __name__ == "__main__":
    main()
