"""What iosim predicts for the wave probe's attention runs (``kernels/wave_probe.py``), written before the GPU runs them.

Each of kernels/flash2.py's forward and the foreign F2 at the probe's tiles is simulated at every shape the probe runs
(``iosim simulate --kernel experiments/probes/wave_kernels.py:FN``, plain mode, this machine's Triton compiling for
the GPU's architecture).

    python experiments/probes/wave_predict.py --gpu h200 --out DIR/predicted-before.json
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import triton

from iosim.hardware.profile import load_profile
from iosim.kernels.wave_probe import POINTS, shapes


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--gpu", default="h200")
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args()
    sms = load_profile(args.gpu).sm_count
    rows = []
    for point in POINTS:
        bm, bn, d, warps, c, stages = point
        for label, _, heads, kv_heads, nq, nk in shapes(point, sms):
            for loop, fn in (("flash2", f"ours_s{stages}"), ("F2", f"f2_s{stages}")):
                cmd = [sys.executable, "-m", "iosim", "simulate", "--gpu", args.gpu, "--algo", "flash2", "--kernel",
                       f"experiments/probes/wave_kernels.py:{fn}", "--batch", "1", "--heads", str(heads), "--kv-heads",
                       str(kv_heads), "--seq-len", str(nq), "--seq-k", str(nk), "--head-dim", str(d), "--dtype", "fp16",
                       "--json"]
                done = subprocess.run(cmd, capture_output=True, text=True)
                if done.returncode:
                    print(done.stderr.strip(), file=sys.stderr)
                    return done.returncode
                run = json.loads(done.stdout)[0]
                kernel = run["kernels"][-1]
                flops = 4.0 * heads * nq * nk * d
                rows.append({"loop": loop, "shape": label, "head_dim": d, "stages": stages, "ctas_per_sm": c,
                             "predicted_ctas_per_sm": kernel["ctas_per_sm"], "time_s": run["time_s"],
                             "flops": flops / run["time_s"]})
                print(f"{bm}x{bn}x{d} w{warps} s{stages} c{c} {loop:6s} {label}: {flops / run['time_s'] / 1e12:.0f} "
                      f"TFLOP/s predicted", file=sys.stderr, flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    doc = {"command": f"python experiments/probes/wave_predict.py --gpu {args.gpu}", "triton": triton.__version__,
           "rows": rows}
    args.out.write_text(json.dumps(doc, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
