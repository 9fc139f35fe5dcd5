"""``iosim calibrate``'s microbenchmarks one step at a time, the raw numbers rewritten after each: a run cut short
(a device lent for minutes) keeps every step it finished.

Steps go in the order given by ``--first`` (names or prefixes of ``run_all``'s steps, e.g. ``latency`` ``occupancy
tiles``), then the rest in ``run_all``'s order. The output is a calibrated profile's ``calibration`` block (GPU,
versions, date, command, ``raw``), which ``iosim calibrate --from-raw`` or ``--add-from`` turns into profile fields
on a machine without a GPU once it is wrapped in a profile file.

    python experiments/probes/calibrate_by_step.py --out DIR/raw.json [--first latency "occupancy tiles" ...]
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from iosim.kernels import microbench
from iosim.kernels.calibrate import _provenance
from iosim.kernels.device import HarnessError, cuda_torch


def step_names() -> list[str]:
    """Every step of ``run_all``, as its refusal of an unknown one lists them."""
    try:
        microbench.run_all(lambda *_: None, ["no such step"])
    except HarnessError as e:
        return str(e).split("the steps are ", 1)[1].split(", ")
    raise RuntimeError("run_all accepted an unknown step")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True, help="JSON file rewritten after every step")
    parser.add_argument("--first", nargs="*", default=[], help="step names or prefixes to run first, in this order")
    args = parser.parse_args(argv)
    names = step_names()
    first = [n for prefix in args.first for n in names if n.lower().startswith(prefix.lower())]
    order = list(dict.fromkeys(first + names))
    record = {**_provenance(cuda_torch()), "raw": {}, "steps_done": [], "steps_failed": {}}
    for name in order:
        try:
            record["raw"].update(microbench.run_all(print, [name]))
            record["steps_done"].append(name)
        except Exception as e:  # one step failing (out of resources) loses only its own numbers
            record["steps_failed"][name] = str(e).splitlines()[0][:300]
        tmp = args.out.with_suffix(".tmp")
        tmp.write_text(json.dumps(record, indent=1) + "\n")
        os.replace(tmp, args.out)
        print(f"[{len(record['steps_done'])}/{len(order)}] {name}", file=sys.stderr, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
