"""Time errors of measured Triton kernels by launch configuration: where the time model is off, by warps and stages.

Every committed set (the fidelity thresholds' list) is validated as ``iosim validate`` does; each case whose kernel a
user's file launched (``impl`` kernel: the foreign kernels, the kernels others wrote, kernels/flash2.py behind the
held-out launchers) is grouped by its forward tiling's warps and pipeline stages (``--by`` adds the tile and the head
dim), forward cases only unless ``--backward``. ``--against bench`` compares the same predictions with the harness's
``do_bench`` median instead of Nsight Compute's duration (what ``iosim validate`` compares), where a case has both. The table gives each group's count and the median, mean and range of
the time error, per origin (``ours``: kernels/ behind a held-out launcher; ``written to differ``:
experiments/foreign_kernels; ``others'``: experiments/thirdparty_kernels), then all together. A group off the same
way whoever wrote the kernel is a property of the configuration, not of one kernel.

    python experiments/time_by_config.py [--by warps,stages,tile,d] [--backward] [--against ncu|bench] [--jobs 2] [--csv FILE]

About 3 minutes on 2 processes.
"""
from __future__ import annotations

import argparse
import csv
import json
import statistics
from collections import defaultdict
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
FIELDS = ("warps", "stages", "tile", "d")


def _origin(kernel: str) -> str:
    """Who wrote a case's kernel, from its file (``kernel-FILE.FN-...``)."""
    path = kernel.split(":", 1)[0]
    if "thirdparty_kernels" in path:
        return "others'"
    if "foreign_kernels" in path:
        return "written to differ"
    return "ours"


def _cases(data: str, against: str = "ncu") -> list:
    """(origin, warps, stages, tile, head dim, backward, time error) of each user-kernel case of a measurement file:
    against Nsight Compute's duration (``ncu``) or the harness's do_bench median (``bench``, cases timed both ways)."""
    from iosim.measure.measurement import load_measurement
    from iosim.measure.validate import validate
    m = load_measurement(REPO / data)
    kernels = {c.name: c.kernel for c in m.cases if c.impl == "kernel"}
    bench = {c.name: c.timing.median_s for c in m.cases if c.timing is not None and c.counters is not None}
    out = []
    for r in validate(m, impls=("kernel",))[0]:
        e = r.error("time_s")
        if against == "bench":
            e = r.predicted["time_s"] / bench[r.name] - 1.0 if r.name in bench else None
        if r.name not in kernels or e is None:
            continue
        t, p = r.config.get("tiling") or {}, r.config["problem"]
        out.append((_origin(kernels[r.name]), t.get("warps"), t.get("stages"), f"{t.get('block_m')}x{t.get('block_n')}",
                    p["head_dim"], bool(p.get("backward")), e))
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--by", default="warps,stages", help=f"fields to group by, of {', '.join(FIELDS)} (default warps,stages)")
    ap.add_argument("--backward", action="store_true", help="forward + backward cases, not forward ones")
    ap.add_argument("--against", choices=("ncu", "bench"), default="ncu",
                    help="the measured time: Nsight Compute's duration (ncu, the default, what iosim validate uses) "
                         "or the harness's do_bench median (bench)")
    ap.add_argument("--jobs", type=int, default=2, help="worker processes (default 2)")
    ap.add_argument("--csv", type=Path, default=None, help="also write every case's row to this CSV file")
    args = ap.parse_args()
    by = [f.strip() for f in args.by.split(",") if f.strip()]
    bad = [f for f in by if f not in FIELDS]
    if bad:
        ap.error(f"--by: unknown field {bad[0]!r}; allowed: {', '.join(FIELDS)}")
    entries = json.loads((REPO / "tests" / "fidelity_thresholds.json").read_text())["sets"]
    files = sorted({e["data"] for e in entries})
    with ProcessPoolExecutor(args.jobs) as pool:
        rows = [row for rows in pool.map(_cases, files, [args.against] * len(files)) for row in rows]
    rows = [r for r in rows if r[5] == args.backward]
    if args.csv:
        with args.csv.open("w", newline="") as f:
            w = csv.writer(f)
            w.writerow(("origin",) + FIELDS + ("backward", "time_error"))
            w.writerows(rows)
    groups: dict = defaultdict(list)
    for origin, warps, stages, tile, d, _, e in rows:
        key = tuple(dict(warps=warps, stages=stages, tile=tile, d=d)[f] for f in by)
        groups[(origin,) + key].append(e)
        groups[("all",) + key].append(e)
    print(f"time error of {'forward + backward' if args.backward else 'forward'} cases by {', '.join(by)}, against "
          f"{'the do_bench median' if args.against == 'bench' else 'Nsight Compute duration'}: {len(rows)} cases")
    print(f"{'origin':18s} {' '.join(f'{f:>7s}' for f in by)} {'cases':>5s} {'median':>7s} {'mean':>7s} {'range':>16s}")
    for key in sorted(groups, key=lambda k: (k[0] == "all", k[0], tuple(str(x) for x in k[1:]))):
        v = groups[key]
        print(f"{key[0]:18s} {' '.join(f'{str(x):>7s}' for x in key[1:])} {len(v):5d} {statistics.median(v):+7.1%} "
              f"{statistics.mean(v):+7.1%} {min(v):+7.1%} .. {max(v):+6.1%}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
