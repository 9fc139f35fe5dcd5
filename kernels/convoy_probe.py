"""What a pass that misses the L2 costs when several CTAs read the same missing lines together (a convoy).

``iosim calibrate`` times its pipelined tile loop reading tiles each CTA reads once from DRAM, against the same loop
on L2-resident tiles (:func:`iosim.kernels.microbench.miss_cost`): every CTA misses on lines of its own. Where the
CTAs of one head stream the same K/V, one CTA's load misses and the others find the line's fill in flight. Whether
those followers wait the miss as long as the CTA that asked for it first decides how a cohort of such CTAs pays
it: run one by one the engine holds every follower behind the first (all pay), aggregated it pays the miss once a
line (one CTA in ``mult`` pays). This probe runs the calibration's loop with groups of 1 to 32 consecutive CTAs
reading the same tiles (``miss_cost``'s ``group``), at one and two CTAs an SM: per pass, the seconds from DRAM (the
L2 flushed before each run) and from the L2, and their difference.

    python -m iosim.kernels.convoy_probe --out DIR      # on a GPU: DIR/convoy_probe.json
"""
from __future__ import annotations

import argparse
import itertools
import json
from dataclasses import asdict
from pathlib import Path

from iosim.kernels import microbench as mb

# the calibration's convoy series (microbench.convoy_costs), whose softmax rows experiments/probes/convoy_run.py
# turns into its keys: (block_m, block_n, head_dim, warps, stages) two stages deep, groups of one besides
LOOPS = tuple((*loop, 2) for loop in mb.CONVOY_LOOPS)
GROUPS = (1, *mb.CONVOY_GROUPS)  # consecutive CTAs reading the same tiles
PER_SM = mb.CONVOY_PER_SM  # CTAs an SM: the grid is this many times the SMs
ITERS = mb.CONVOY_ITERS  # passes a CTA


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", required=True, type=Path, help="folder for convoy_probe.json")
    ap.add_argument("--softmax", choices=("off", "on", "both"), default="off",
                    help="run the loop with the online softmax: off (the bare products, session 58's runs), on, both")
    args = ap.parse_args(argv)
    softmaxes = {"off": (False,), "on": (True,), "both": (False, True)}[args.softmax]
    import torch

    from iosim.kernels.harness import provenance

    sms = torch.cuda.get_device_properties(0).multi_processor_count
    rows = []
    for softmax, (bm, bn, d, warps, stages), per_sm, group in itertools.product(softmaxes, LOOPS, PER_SM, GROUPS):
        pass_bytes = 2 * bn * d * 2  # K and V, fp16
        ctas = per_sm * sms
        cost = mb.miss_cost(torch, bm, bn, d, warps, ITERS, softmax=softmax, ctas=ctas, stages=stages,
                            group=group)
        got = {"resident_pass_s": cost["miss_pass_resident_s"], "stream_pass_s": cost["miss_pass_stream_s"]}
        miss = cost["miss_pass_s"]
        row = {"block_m": bm, "block_n": bn, "head_dim": d, "warps": warps, "stages": stages,
               "softmax": softmax, "ctas_per_sm": per_sm, "ctas": ctas, "group": group, "pass_bytes": pass_bytes,
               **got,
               "miss_s": miss, "dram_throughput": -(-ctas // group) * pass_bytes / got["stream_pass_s"]}
        rows.append(row)
        print(f"{bm}x{bn}x{d} w{warps} s{stages}{' softmax' if softmax else ''}, {per_sm} an SM, groups of {group}: L2 "
              f"{got['resident_pass_s'] * 1e6:.3f} us, DRAM {got['stream_pass_s'] * 1e6:.3f} us a pass, "
              f"miss {miss * 1e6:.3f} us, DRAM {row['dram_throughput'] / 1e12:.2f} TB/s", flush=True)
    args.out.mkdir(parents=True, exist_ok=True)
    doc = {"schema": "iosim-convoy-probe", "schema_version": 1, "provenance": asdict(provenance(None, counters=False)),
           "iters": ITERS, "rows": rows}
    (args.out / "convoy_probe.json").write_text(json.dumps(doc, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
