"""Write what iosim predicts for every case of a kernel manifest before the GPU runs them: predicted-before.json.

Each case is simulated as ``iosim simulate --gpu GPU --kernel FILE:FN --mode ncu --json`` would (its kernel's code
compiled here, for the GPU's architecture, with this machine's Triton), so that a later ``iosim validate`` of its
measurements can be compared with a prediction that could not have seen them.

    python experiments/predict_manifest.py MANIFEST.yaml --gpu h200 --out DIR/predicted-before.json
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import triton
from predict_grid import write_predictions  # experiments/, beside this script

from iosim.kernels.cases import manifest_cases


def flags(spec) -> list[str]:
    """The ``iosim simulate`` options of a manifest case."""
    p = spec.problem
    out = ["--batch", str(p.batch), "--heads", str(p.heads), "--kv-heads", str(p.kv_heads), "--seq-len", str(p.seq_q),
           "--seq-k", str(p.seq_k), "--head-dim", str(p.head_dim), "--dtype", p.dtype]
    if p.causal:
        out += ["--causal", "--causal-align", p.causal_align]
    if spec.pass_ == "fwd_bwd":
        out.append("--backward")
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("manifest", type=Path)
    ap.add_argument("--gpu", default="h200")
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args()
    runs = {}
    for spec in manifest_cases(args.manifest):
        cmd = [sys.executable, "-m", "iosim", "simulate", "--gpu", args.gpu, "--algo", spec.algo, "--kernel", spec.kernel,
               "--mode", "ncu", "--json", *flags(spec)]
        print(spec.name, file=sys.stderr, flush=True)
        done = subprocess.run(cmd, capture_output=True, text=True)
        if done.returncode:
            print(done.stderr.strip(), file=sys.stderr)
            return done.returncode
        runs[spec.name] = json.loads(done.stdout)[0]
    write_predictions(args.out, f"iosim simulate --gpu {args.gpu} --kernel FILE:FN --mode ncu --json (each "
                                f"{args.manifest.name} case), Triton {triton.__version__} on the CPU machine", runs)
    return 0


if __name__ == "__main__":
    sys.exit(main())
