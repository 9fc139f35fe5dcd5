"""DRAM bytes under the L2's measured edge for lines both partitions read, as a mixture of LRUs (an experiment).

The L2 probe's shared sweep (``python -m iosim.kernels.l2_probe``: every SM reads a buffer twice) misses the second
pass in steps on the H100: all hit to 23 MiB, 19 % missed at 24, 36 % at 25-26, 56 % at 27, 83 % at 28-30, all from
31 (``experiments/measurements/h100/l2/``), where the model holds such lines in a sharp LRU of half the L2. Read as
parts of the L2 that overflow at different sizes, each holding its share of every line (lines hash evenly over
them), each step of the curve is an LRU of its own size: a cyclic sweep of S bytes misses exactly the steps below S,
and any run's DRAM bytes are the steps' weighted sum. This prices each case of the given measurement files once per
step, the L2 holding that step's size of shared lines (private lines keep the profile's room), and prints the measured
DRAM bytes beside the model's (one sharp edge) and the mixture's. The steps' runs do not feel each other's misses
(each keeps its own timeline): an estimate of what modelling the measured edge would move, not a model.

    python experiments/l2_staircase.py experiments/measurements/h100/heldout/pace/measurements.json \\
        --probe experiments/measurements/h100/l2/l2_probe.json --min-seq 49152 --causal -j 2
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import re
import statistics
import sys
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np

MIN_STEP = 0.02  # steps of the curve smaller than this are dropped: the probe repeats within 0.02 (h100/l2/repeat2)
_ORIGINAL: dict = {}  # the engine's own __init__, once patched


def steps(curve: list, min_step: float = MIN_STEP) -> list[tuple[float, float]]:
    """``(size, weight)`` of each step of a measured miss curve ``[(size, second-pass miss), ...]`` (sizes rising):
    a step where the miss rises between two sizes sits at their midpoint, weighing the rise (the curve made
    monotone and clipped to [0, 1]; a miss at the first size is a step there); steps under ``min_step`` are dropped
    and the rest scaled to sum to 1."""
    sizes = np.array([c[0] for c in curve], dtype=float)
    miss = np.maximum.accumulate(np.clip([c[1] for c in curve], 0.0, 1.0))
    rises = np.diff(np.concatenate(([0.0], miss)))
    at = np.concatenate(([sizes[0]], (sizes[:-1] + sizes[1:]) / 2))
    kept = [(float(s), float(w)) for s, w in zip(at, rises) if w >= min_step]
    if not kept:
        raise ValueError("the curve never misses: no step to price")
    total = sum(w for _, w in kept)
    return [(s, w / total) for s, w in kept]


def _patch(shared_bytes: float | None) -> None:
    """Make the engine's L2 hold ``shared_bytes`` of lines both partitions read (its copies, ``l2_partitions``, in
    an L2 of that many times the size), private lines the room they have in the profile's own L2."""
    import iosim.engine.simulator as sim

    original = _ORIGINAL.setdefault("init", sim.Engine.__init__)  # a process runs several jobs: patch the original
    sim.Engine.__init__ = original
    if shared_bytes is None:
        return

    def init(self, schedule, profile, *args, **kwargs):
        copies = profile.l2_partitions
        size = int(shared_bytes * copies)
        original(self, schedule, dataclasses.replace(profile, l2_bytes=size), *args, **kwargs)
        if kwargs.get("l2_bytes") is None:  # a private line's copies, scaled to the room it has in the real L2
            self.l2.private = sim._private_copies(profile, copies) * size / profile.l2_bytes

    sim.Engine.__init__ = init


def _run(args) -> list[dict]:
    path, shared_bytes, min_seq, causal = args
    _patch(shared_bytes)
    from iosim.measure.measurement import load_measurement
    from iosim.measure.validate import validate

    m = load_measurement(path)
    cases = [c for c in m.cases if _wanted(c, min_seq, causal)]
    if not cases:
        return []
    results, _ = validate(dataclasses.replace(m, cases=cases))
    return [{"case": r.name, "pred": r.predicted.get("dram_bytes"), "meas": r.measured.get("dram_bytes")}
            for r in results]


def _wanted(case, min_seq: int, causal: bool) -> bool:
    problem = (case.run_config or {}).get("problem") or {}
    n = problem.get("seq_q")
    if n is None:  # a user kernel's case: its name carries the shape
        found = re.search(r"-n(\d+)", case.name)
        n = int(found.group(1)) if found else 0
    return n >= min_seq and (not causal or bool(problem.get("causal")) or "causal" in case.name)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("files", type=Path, nargs="+", help="measurement files (iosim measure's)")
    parser.add_argument("--probe", type=Path, required=True, help="the GPU's l2_probe.json (its shared sweep)")
    parser.add_argument("--min-seq", type=int, default=0, help="only cases this long or longer (default: all)")
    parser.add_argument("--causal", action="store_true", help="only causal cases")
    parser.add_argument("-j", "--jobs", type=int, default=1, help="processes (default 1)")
    args = parser.parse_args(argv)
    summary = json.loads(args.probe.read_text())["summary"]
    curve = [(p["size_bytes"], p["second_pass_miss"]) for p in summary["shared_sweep_curve"]]
    treads = steps(curve)
    print("steps of the shared sweep: " + ", ".join(f"{w:.2f} at {s / 2**20:.1f} MiB" for s, w in treads))
    jobs = [(str(f), s, args.min_seq, args.causal) for s in [None] + [s for s, _ in treads] for f in args.files]
    with ProcessPoolExecutor(args.jobs) as pool:
        runs = list(pool.map(_run, jobs, chunksize=1))
    by_file = len(args.files)
    base = [r for rs in runs[:by_file] for r in rs]
    each = [{r["case"]: r["pred"] for rs in runs[by_file * (k + 1):by_file * (k + 2)] for r in rs}
            for k in range(len(treads))]
    print(f"{'case':78s} {'measured':>9s} {'model':>8s} {'mixture':>8s}   per step")
    errors = []
    for row in base:
        if not row["meas"] or row["pred"] is None:
            continue
        mixed = sum(w * each[k][row["case"]] for k, (_, w) in enumerate(treads))
        e0, e1 = row["pred"] / row["meas"] - 1, mixed / row["meas"] - 1
        errors.append((abs(e0), abs(e1)))
        per = " ".join(f"{each[k][row['case']] / row['meas'] - 1:+.2f}" for k in range(len(treads)))
        print(f"{row['case'][:78]:78s} {row['meas'] / 1e9:8.2f}G {e0:+8.1%} {e1:+8.1%}   {per}")
    if errors:
        print(f"{len(errors)} cases: DRAM median |error| {statistics.median(a for a, _ in errors):.1%} (model) -> "
              f"{statistics.median(b for _, b in errors):.1%} (mixture); mean {statistics.mean(a for a, _ in errors):.1%}"
              f" -> {statistics.mean(b for _, b in errors):.1%}; nearer {sum(b < a for a, b in errors)} of {len(errors)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
