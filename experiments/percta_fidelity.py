"""Time error of the aggregated fast path and of the per-CTA run (issue 9's model) on committed measurements.

Issue 9 names the per-CTA run (one process a CTA, one iteration a step) the model and the aggregated run its fast
path. This validates the same cases both ways against the counters: each case of the chosen sets whose name starts
with ``--prefix`` and holds none of ``--skip`` (long cases run minutes per CTA), simulated as ``iosim validate``
simulates it, once aggregated and once per CTA (``iosim validate --per-cta``), and prints each case's time error
both ways and the median and mean |error| per GPU. Nothing is fitted; the per-CTA runs take about a second a case
at N = 4K, half a minute at 64K.

    python experiments/percta_fidelity.py [--sets h100,h200] [--prefix flash2-fwd-] [--skip causal,n32768] [-j 2]
"""
from __future__ import annotations

import argparse
import statistics
from concurrent.futures import ProcessPoolExecutor
from dataclasses import replace
from pathlib import Path

MEASURED = Path(__file__).resolve().parent / "measurements"


def _errors(args) -> tuple:
    """(set, case, {aggregated: time error, per CTA: time error}) of one case."""
    path, name = args
    from iosim.measure.measurement import load_measurement
    from iosim.measure.validate import validate

    measurement = load_measurement(path)
    case = next(c for c in measurement.cases if c.name == name)
    one = replace(measurement, cases=(case,))
    out = {}
    for aggregate in (True, False):
        results, _ = validate(one, source=Path(path).name, aggregate=aggregate)
        if not results or not results[0].measured.get("time_s"):
            return path, name, None
        out[aggregate] = results[0].predicted["time_s"] / results[0].measured["time_s"] - 1
    return path, name, out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sets", default="h100,h200", help="GPU folders whose measurements.json to take (default h100,h200)")
    ap.add_argument("--prefix", default="flash2-fwd-", help="cases whose name starts so (default flash2-fwd-)")
    ap.add_argument("--skip", default="causal,n32768,n65536", help="cases whose name holds any of these are left out")
    ap.add_argument("-j", "--jobs", type=int, default=2)
    args = ap.parse_args()
    from iosim.measure.measurement import load_measurement

    skip = [s for s in args.skip.split(",") if s]
    jobs = []
    for gpu in args.sets.split(","):
        path = MEASURED / gpu / "measurements.json"
        jobs += [(path, c.name) for c in load_measurement(path).cases
                 if c.name.startswith(args.prefix) and not any(s in c.name for s in skip)]
    with ProcessPoolExecutor(args.jobs) as pool:
        rows = [r for r in pool.map(_errors, jobs) if r[2] is not None]
    print(f"{'set':5s} {'case':56s} {'aggregated':>10s} {'per CTA':>8s}")
    by_gpu: dict = {}
    for path, name, e in rows:
        gpu = Path(path).parent.name
        by_gpu.setdefault(gpu, []).append(e)
        print(f"{gpu:5s} {name[:56]:56s} {e[True]:+10.1%} {e[False]:+8.1%}")
    print(f"\n{'set':5s} {'cases':>5s} {'median |err| aggregated':>24s} {'per CTA':>8s} {'mean aggregated':>16s} {'per CTA':>8s}")
    for gpu, es in by_gpu.items():
        med = [statistics.median(abs(e[a]) for e in es) for a in (True, False)]
        mean = [statistics.mean(abs(e[a]) for e in es) for a in (True, False)]
        print(f"{gpu:5s} {len(es):5d} {med[0]:24.1%} {med[1]:8.1%} {mean[0]:16.1%} {mean[1]:8.1%}")


if __name__ == "__main__":
    main()
