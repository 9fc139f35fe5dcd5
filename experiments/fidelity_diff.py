"""What a change to the model moves: every fidelity-thresholds entry validated by two versions of iosim, case by case.

Each entry of ``tests/fidelity_thresholds.json`` (a data file with its ``impls``: one file may carry several entries,
so entries are keyed by their index, never by their file) is validated twice, on this tree's measurement files: by
the iosim of a base revision (a temporary ``git worktree``) and by this working tree's, each in processes of its
own (``PYTHONPATH`` set to that tree). Printed: the entries whose time median moved, the ceilings each version
breaks, the cases that moved most, and over every case the median and mean |error| of time and DRAM bytes, and how
many moved and how many of those came nearer the counters.

    python experiments/fidelity_diff.py [--base REV] [--sets SUBSTRING] [--jobs 2] [--top 20] [--save FILE]
    python experiments/fidelity_diff.py --load FILE        # the table again from a saved run
    python experiments/fidelity_diff.py --base-run FILE    # the saved run's base, this tree validated again

Every entry takes 20-25 minutes a version on two processes; ``--sets h200/decode`` a few seconds.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
METRICS = ("time_s", "dram_bytes")
MOVED = 0.003  # a case moved where its error changed by more than this (0.3 percentage points)


def _entries(repo: Path) -> list:
    return json.loads((repo / "tests" / "fidelity_thresholds.json").read_text())["sets"]


def _validate_entry(job) -> tuple:
    """(index, what the iosim on ``sys.path`` makes of entry ``index``): its medians, broken ceilings, case errors."""
    repo, index = job
    from iosim.measure.measurement import load_measurement
    from iosim.measure.validate import summary, validate
    entry = _entries(repo)[index]
    impls = tuple(entry["impls"]) if "impls" in entry else None
    results = validate(load_measurement(repo / entry["data"]), impls=impls)[0]
    stats = summary(results)
    broken = [f"{m} median {stats[m]['median_abs_error']:.4f} > {c}" for m, c in entry["median_abs_error"].items()
              if stats[m]["median_abs_error"] > c]
    broken += [f"{m} max {stats[m]['max_abs_error']:.4f} > {c}" for m, c in entry["max_abs_error"].items()
               if stats[m]["max_abs_error"] > c]
    cases = {r.name: {m: r.predicted[m] / r.measured[m] - 1 for m in METRICS
                      if r.measured.get(m) and r.predicted.get(m) is not None} for r in results}
    return index, {"median": {m: stats[m]["median_abs_error"] for m in METRICS if m in stats},
                   "broken": broken, "cases": cases}


def collect(repo: Path, indices: list, jobs: int) -> dict:
    """Entry index -> :func:`_validate_entry`'s answer, by the iosim this process imports; progress on stderr."""
    out, entries = {}, _entries(repo)
    with ProcessPoolExecutor(jobs) as pool:
        for n, (index, got) in enumerate(pool.map(_validate_entry, [(repo, i) for i in indices]), 1):
            out[str(index)] = got
            print(f"  [{n}/{len(indices)}] {entries[index]['data']}", file=sys.stderr, flush=True)
    return out


def run_version(tree: Path, indices: list, jobs: int, label: str) -> dict:
    """:func:`collect` in a child process whose iosim is ``tree``'s (on this tree's measurement files)."""
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "run.json"
        env = dict(os.environ, PYTHONPATH=str(tree))
        print(f"{label}: {tree}", file=sys.stderr, flush=True)
        subprocess.run([sys.executable, __file__, "--collect", str(out), "--indices", ",".join(map(str, indices)),
                        "--jobs", str(jobs)], env=env, cwd=tree, check=True)
        return json.loads(out.read_text())


def compare(base: dict, new: dict, metric: str) -> dict:
    """Over the cases both runs have ``metric`` for: their count, median and mean |error| (base, new), how many
    moved (by more than :data:`MOVED`), how many of those came nearer, and their median |error| (base, new)."""
    pairs = [(base[k]["cases"][n][metric], v[metric]) for k in new for n, v in new[k]["cases"].items()
             if metric in v and metric in base.get(k, {}).get("cases", {}).get(n, {})]
    moved = [(a, b) for a, b in pairs if abs(b - a) > MOVED]

    def both(rows, f):
        return (f([abs(a) for a, _ in rows]), f([abs(b) for _, b in rows])) if rows else None
    return {"cases": len(pairs), "median": both(pairs, statistics.median), "mean": both(pairs, statistics.fmean),
            "moved": len(moved), "nearer": sum(abs(b) < abs(a) for a, b in moved),
            "moved_median": both(moved, statistics.median)}


def report(entries: list, base: dict, new: dict, top: int) -> None:
    """Print what moved between the ``base`` and ``new`` runs."""
    print(f"{'entry':<58} {'impls':<24} {'time median':>21}  broken (new)")
    for key in sorted(new, key=int):
        a, b = base[key]["median"].get("time_s"), new[key]["median"].get("time_s")
        if a is None or b is None or (abs(b - a) < 1e-4 and not new[key]["broken"]):
            continue
        e = entries[int(key)]
        impls = ",".join(e.get("impls", [])) or "all"
        print(f"{e['data'].removeprefix('experiments/measurements/'):<58} {impls[:24]:<24} "
              f"{100 * a:8.2f} % -> {100 * b:6.2f} %  {'; '.join(new[key]['broken'])}")
    for label, run in (("base", base), ("new", new)):
        broken = sum(bool(run[k]["broken"]) for k in run)
        print(f"entries breaking a ceiling, {label}: {broken} of {len(run)}")
    for metric in METRICS:
        c = compare(base, new, metric)
        if not c["cases"]:
            continue
        line = (f"{metric}: {c['cases']} cases, median |error| {100 * c['median'][0]:.2f} -> {100 * c['median'][1]:.2f} %, "
                f"mean {100 * c['mean'][0]:.2f} -> {100 * c['mean'][1]:.2f} %; ")
        if c["moved"]:
            line += (f"{c['moved']} moved, {c['nearer']} nearer; over those {100 * c['moved_median'][0]:.2f} -> "
                     f"{100 * c['moved_median'][1]:.2f} %")
        else:
            line += "none moved"
        print(line)
    rows = [(abs(v["time_s"]) - abs(base[k]["cases"][n]["time_s"]), k, n, base[k]["cases"][n]["time_s"], v["time_s"])
            for k in new for n, v in new[k]["cases"].items() if "time_s" in v and "time_s" in base[k]["cases"].get(n, {})]
    rows = [r for r in rows if abs(r[4] - r[3]) > MOVED]
    farther = sorted((r for r in rows if r[0] > 0), reverse=True)[:top]
    nearer = sorted(r for r in rows if r[0] < 0)[:top]
    for title, chosen in (("went farthest", farther), ("came nearest", nearer)):
        if top and chosen:
            print(f"time, the {len(chosen)} cases that {title}:")
            for _, k, n, a, b in chosen:
                print(f"  {entries[int(k)]['data'].removeprefix('experiments/measurements/')[:40]:<40} {n[:64]:<64} "
                      f"{100 * a:+7.2f} -> {100 * b:+7.2f} %")

def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--base", default="HEAD", help="the revision to compare this working tree with (default HEAD)")
    ap.add_argument("--sets", default="", help="only the entries whose data path holds this (default: every entry)")
    ap.add_argument("--jobs", type=int, default=2, help="processes validating entries, per version (default 2)")
    ap.add_argument("--top", type=int, default=15, help="cases listed each way (default 15; 0: none)")
    ap.add_argument("--save", type=Path, help="also write both runs here, for --load")
    ap.add_argument("--load", type=Path, help="print the table of a saved run instead of validating")
    ap.add_argument("--base-run", type=Path, help="take the base from a run saved by --save (its revision's), "
                                                  "validating only this tree: half the time, for a change tried again")
    ap.add_argument("--collect", type=Path, help=argparse.SUPPRESS)  # a child: validate with the iosim on sys.path
    ap.add_argument("--indices", default="", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    entries = _entries(REPO)
    if args.collect:
        got = collect(REPO, [int(i) for i in args.indices.split(",") if i], args.jobs)
        args.collect.write_text(json.dumps(got))
        return 0
    if args.load:
        saved = json.loads(args.load.read_text())
        report(entries, saved["base"], saved["new"], args.top)
        return 0
    indices = [i for i, e in enumerate(entries) if args.sets in e["data"]]
    if not indices:
        print(f"--sets: no thresholds entry's data path holds {args.sets!r}", file=sys.stderr)
        return 2
    if args.base_run:
        saved = json.loads(args.base_run.read_text())
        revision, base = saved["base_revision"], saved["base"]
        lacking = [i for i in indices if str(i) not in base]
        if lacking:
            print(f"--base-run: {args.base_run} lacks {len(lacking)} of the entries asked for (first: "
                  f"{entries[lacking[0]]['data']}); run without it, or with the --sets it was saved with", file=sys.stderr)
            return 2
    else:
        rev = subprocess.run(["git", "rev-parse", "--verify", "--quiet", f"{args.base}^{{commit}}"], cwd=REPO,
                             capture_output=True, text=True)
        if rev.returncode:
            print(f"--base: {args.base!r} is not a revision of {REPO}", file=sys.stderr)
            return 2
        revision = rev.stdout.strip()
        with tempfile.TemporaryDirectory() as tmp:
            tree = Path(tmp) / "base"
            subprocess.run(["git", "worktree", "add", "--detach", "--quiet", str(tree), revision], cwd=REPO, check=True)
            try:
                base = run_version(tree, indices, args.jobs, f"base {args.base}")
            finally:
                subprocess.run(["git", "worktree", "remove", "--force", str(tree)], cwd=REPO, check=False)
    new = run_version(REPO, indices, args.jobs, "this working tree")
    base = {str(i): base[str(i)] for i in indices}
    if args.save:
        args.save.write_text(json.dumps({"base_revision": revision, "base": base, "new": new}))
    report(entries, base, new, args.top)
    return 0


if __name__ == "__main__":
    sys.exit(main())
