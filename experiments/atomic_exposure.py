"""How much of the backward's dQ atomic-add time lengthens the loop, against the loop's pipeline depth.

``iosim calibrate`` measures the backward tile loop (``iosim.kernels.microbench``: the five matmuls on a
resident K/V block) with dQ kept in registers and with dQ added atomically every iteration, at the
default pipeline depth only, and iosim prices every kernel's atomics with the share of their time that
loop exposes (``iosim.costs.issue.atomic_exposure``). A foreign kernel of the same tile shape with 3
stages hides far more of it than that share says (issue 8: B3_bwd_masksplit). This measures the same
loop at 1–4 stages, plain and atomic, on the GPU at hand, and prints the exposed share per depth:

    python experiments/atomic_exposure.py --out DIR

writes ``DIR/atomic_exposure.json`` (provenance, and per tile, depth and variant the do_bench median,
FLOP/s and the SMs that ran exactly the intended CTAs).
"""
from __future__ import annotations

import argparse
import json
import sys
from dataclasses import asdict
from pathlib import Path

from iosim.kernels.device import HarnessError, cuda_torch, one_line

# (block_n K/V rows, block_m Q rows, head_dim, warps, CTAs per SM): the calibration's two shapes
TILES = ((64, 64, 64, 4, 2), (128, 64, 64, 8, 1))
STAGES = (1, 2, 3, 4)
ITERS = 1024


def measure(out: Path) -> dict:
    from iosim.kernels.harness import provenance
    from iosim.kernels.microbench import _bwd_setup, sms_running
    from iosim.kernels.timing import time_fn

    torch = cuda_torch()
    props = torch.cuda.get_device_properties(0)
    sms = props.multi_processor_count
    rows = []
    for bn, bm, d, warps, c in TILES:
        for stages in STAGES:
            row = {"block_n": bn, "block_m": bm, "head_dim": d, "warps": warps, "ctas_per_sm": c, "stages": stages}
            for atomic in (False, True):
                name = "atomic" if atomic else "plain"
                try:
                    fn, sm_ids = _bwd_setup(torch, bn, bm, d, warps, c * sms, iters=ITERS, atomic=atomic,
                                            record_sm=True, stages=stages)
                    fn()
                    t = time_fn(fn)
                except Exception as e:  # a depth whose shared memory does not fit: recorded, not fatal
                    row[name] = {"error": one_line(e)}
                    continue
                flops = c * sms * ITERS * 10.0 * bm * bn * d
                row[name] = {"timing": asdict(t), "flop_per_s": flops / t.median_s,
                             "ok_sms": sms_running(sm_ids.tolist(), c),
                             "payload_bytes": c * sms * ITERS * bm * d * 4 if atomic else 0}
            rows.append(row)
            print(_line(row), flush=True)
    doc = {"provenance": asdict(provenance(None, False)), "gpu": props.name, "sms": sms, "iters": ITERS, "rows": rows}
    out.mkdir(parents=True, exist_ok=True)
    (out / "atomic_exposure.json").write_text(json.dumps(doc, indent=1) + "\n")
    return doc


def _line(row: dict) -> str:
    plain, atomic = row.get("plain", {}), row.get("atomic", {})
    head = f"{row['block_n']}x{row['block_m']}x{row['head_dim']} w{row['warps']} c{row['ctas_per_sm']} s{row['stages']}"
    if "timing" not in plain or "timing" not in atomic:
        return f"{head}: {plain.get('error') or atomic.get('error')}"
    tp, ta = plain["timing"]["median_s"], atomic["timing"]["median_s"]
    return (f"{head}: plain {tp * 1e3:.3f} ms ({plain['flop_per_s'] / 1e12:.0f} TFLOP/s), atomic {ta * 1e3:.3f} ms "
            f"({atomic['flop_per_s'] / 1e12:.0f} TFLOP/s, payload {atomic['payload_bytes'] / ta / 1e12:.2f} TB/s), "
            f"added {100 * (ta / tp - 1):.0f} %")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    try:
        measure(args.out)
    except HarnessError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
