"""Errors kernel by kernel over every committed measurement set: where the model is off, by kernel.

Each committed set (the fidelity thresholds' list) is validated as ``iosim validate --kernels`` does; every
simulated kernel is paired with the launch it stands for, and the errors are grouped by the pair of names
(the simulated kernel's, the measured launch's bare name). The table gives each group's count and the median
DRAM, crossbar and time errors with the time range, most frequent first: a kernel that is off the same way in
every set it appears in is a model of that kernel to look at (eager PyTorch's softmax read its input three
times in the model until this table showed its crossbar reads at +100 % in every case).

    python experiments/kernel_errors.py [--sets SUBSTRING] [--jobs 2] [--min 3] [--csv FILE]

Every set takes about 3 minutes on 2 processes; ``--sets h200/small`` a few seconds.
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
METRICS = ("dram_bytes", "xbar_bytes", "time_s")


def _sets() -> list:
    """(data path, impls or None) of each thresholds entry, a file validated once unless its entries split it."""
    entries = json.loads((REPO / "tests" / "fidelity_thresholds.json").read_text())["sets"]
    return [(e["data"], tuple(e["impls"]) if "impls" in e else None) for e in entries]


def _kernels(entry) -> list:
    from iosim.measure.measurement import load_measurement
    from iosim.measure.validate import validate
    data, impls = entry
    results, _ = validate(load_measurement(REPO / data), impls=impls)
    return [(data, r.name, k) for r in results for k in r.kernels]


def groups(rows) -> dict:
    """(simulated name, measured bare name) -> the kernel dicts of that pair."""
    from iosim.measure.validate import bare_name
    out = defaultdict(list)
    for _, _, k in rows:
        out[(k["name"], bare_name(k["measured_name"]) if k["measured_name"] else None)].append(k)
    return out


def summary(kernels: list) -> dict:
    """Count, and per metric the median, lowest and highest error over ``kernels`` (None where none has it)."""
    out = {"count": len(kernels)}
    for m in METRICS:
        v = [k["error"][m] for k in kernels if m in k["error"]]
        out[m] = (statistics.median(v), min(v), max(v)) if v else None
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sets", default="", help="only the sets whose data path holds this (default: every set)")
    ap.add_argument("--jobs", type=int, default=2, help="processes validating the sets")
    ap.add_argument("--min", type=int, default=3, help="leave out pairs seen fewer times")
    ap.add_argument("--csv", type=Path, default=None, help="also write the table here")
    args = ap.parse_args(argv)
    seen, entries = set(), []
    for data, impls in _sets():
        if (impls is None and data in seen) or args.sets not in data:
            continue
        seen.add(data)
        entries.append((data, impls))
    with ProcessPoolExecutor(args.jobs) as pool:
        rows = [row for part in pool.map(_kernels, entries) for row in part]
    table = sorted(((key, summary(ks)) for key, ks in groups(rows).items() if key[0] and key[1]),
                   key=lambda kv: -kv[1]["count"])

    def pct(x):
        return f"{100 * x:+7.1f}%" if x is not None else "      —"

    print(f"{'simulated':24s} {'measured':34s} {'n':>4s} {'DRAM':>8s} {'xbar':>8s} {'time':>8s} {'time range':>17s}")
    out = []
    for (sim, meas), s in table:
        if s["count"] < args.min:
            continue
        med = {m: s[m][0] if s[m] else None for m in METRICS}
        t = s["time_s"]
        print(f"{sim[:24]:24s} {meas[:34]:34s} {s['count']:4d} {pct(med['dram_bytes'])} {pct(med['xbar_bytes'])} "
              f"{pct(med['time_s'])} {(pct(t[1]) + ' ' + pct(t[2])) if t else '':>17s}")
        out.append({"simulated": sim, "measured": meas, "count": s["count"],
                    **{f"{m}_median": med[m] for m in METRICS}})
    print(f"\n{len(rows)} kernels in {len(entries)} sets; pairs seen fewer than {args.min} times left out")
    if args.csv:
        with args.csv.open("w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=list(out[0]) if out else ["simulated"])
            w.writeheader()
            w.writerows(out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
