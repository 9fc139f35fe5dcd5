"""How much a validated prediction depends on the L2 model's resolution (lines per L2 partition).

The engine models the L2 in lines of 1/``l2_lines`` of a partition (:mod:`iosim.engine.lines`), far
coarser than the hardware's 128-byte lines, so that a long run stays affordable. A prediction that
is a property of the GPU should not move when that resolution does; one that moves is in part an
artefact of it. For every case of the chosen committed measurement files this prints the DRAM and
time errors at each resolution (``iosim validate``'s, predicted / measured − 1) and how far they
spread, then how many cases move by more than ``--tolerance``.

    python experiments/discretization.py [--lines 128,256,512] [--sets PATH ...] [--csv FILE]

Each (file, resolution) is simulated in its own process, two at a time; the default sets (the H200's
own kernels and the long causal held-out cases) take about 15 minutes on two cores.
"""
from __future__ import annotations

import argparse
import csv
import sys
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

from iosim.measure.measurement import load_measurement
from iosim.measure.validate import validate

ROOT = Path(__file__).resolve().parent / "measurements" / "h200"
DEFAULT_SETS = [ROOT / "measurements.json", *sorted((ROOT / "heldout").glob("[Ff]*/measurements.json")),
                *sorted((ROOT / "repeat128k").glob("rep*/measurements.json"))]
METRICS = ("dram_bytes", "time_s")


def errors(job: tuple) -> dict:
    """{case name: {metric: error}} of one file at one resolution (PyTorch's own attention left out)."""
    path, lines = job
    results, _ = validate(load_measurement(path), impls=("ours",), l2_lines=lines)
    out = {}
    for r in results:
        row = {}
        for m in METRICS:
            try:
                row[m] = r.error(m)
            except (KeyError, ValueError, ZeroDivisionError):
                continue
        out[r.name] = row
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--lines", default="128,256,512", help="resolutions to compare, lines per L2 partition "
                                                          "(default 128,256,512; the engine's default is 256)")
    ap.add_argument("--sets", nargs="*", type=Path, default=DEFAULT_SETS, help="measurement files (default: the "
                    "H200's own kernels and long causal held-out cases)")
    ap.add_argument("--tolerance", type=float, default=0.05, help="spread counted as moving (default 0.05: 5 points)")
    ap.add_argument("--csv", type=Path, help="also write one row per case, metric and resolution")
    ap.add_argument("--jobs", type=int, default=2, help="processes (default 2)")
    args = ap.parse_args()
    try:
        lines = [int(x) for x in args.lines.split(",")]
        if not lines or min(lines) < 1:
            raise ValueError
    except ValueError:
        print(f"error: --lines: a comma-separated list of positive integers, got {args.lines!r}", file=sys.stderr)
        return 2
    missing = [str(p) for p in args.sets if not p.is_file()]
    if missing:
        print(f"error: --sets: no such file: {', '.join(missing)}", file=sys.stderr)
        return 2
    jobs = [(str(p), n) for p in args.sets for n in lines]
    table: dict = {}  # (file, case) -> {lines: {metric: error}}
    with ProcessPoolExecutor(max_workers=max(1, args.jobs)) as pool:
        for (path, n), found in zip(jobs, pool.map(errors, jobs)):
            print(f"  done: {Path(path).parent.name}/{Path(path).name} at {n} lines", file=sys.stderr, flush=True)
            for case, row in found.items():
                table.setdefault((path, case), {})[n] = row
    moved = {m: 0 for m in METRICS}
    head = "  ".join(f"{m[:4]}@{n:<5d}" for m in METRICS for n in lines)
    print(f"{'case':70s}  {head}  {'dram spread':>11s} {'time spread':>11s}")
    rows = []
    for (path, case), by_lines in table.items():
        cells, spreads = [], []
        for m in METRICS:
            values = [by_lines.get(n, {}).get(m) for n in lines]
            cells += [f"{v * 100:+9.1f}%" if v is not None else f"{'-':>10s}" for v in values]
            known = [v for v in values if v is not None]
            spread = max(known) - min(known) if len(known) > 1 else 0.0
            spreads.append(spread)
            moved[m] += spread > args.tolerance
            rows += [(Path(path).parent.name, case, m, n, v) for n, v in zip(lines, values) if v is not None]
        print(f"{case[:70]:70s}  {'  '.join(cells)}  {spreads[0] * 100:10.1f}p {spreads[1] * 100:10.1f}p")
    print(f"\n{len(table)} cases; spread over {args.tolerance:.0%} between {min(lines)} and {max(lines)} lines: "
          f"DRAM {moved['dram_bytes']}, time {moved['time_s']}")
    if args.csv:
        with open(args.csv, "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["set", "case", "metric", "l2_lines", "error"])
            w.writerows(rows)
    return 0


if __name__ == "__main__":
    sys.exit(main())
