"""The calibration's tile loop at FlashAttention-2's CUDA tiles, compiled as wgmma and as mma.sync (HMMA).

FlashAttention-2's CUDA kernels (SDPA's flash backend) multiply with mma.sync (SASS ``HMMA``); the model prices every
kernel's products at rates measured on Triton's tile loops, which on Hopper compile to wgmma (``HGMMA``). Triton emits
mma.sync on Hopper too when ``DISABLE_MMA_V3=1`` is set before it compiles (checked on the CPU: a 128 x 64 dot for
sm_90 then has ``mma.sync`` in its PTX and no ``wgmma``). This probe times the same loops both ways, plain and with the
online softmax (``microbench.tile_flops_resident``), at FlashAttention-2's forward tiles (128 x 128 at d = 64, 128 x 64
at d = 128; its split-KV forward's 64 x 256 and 64 x 128) with one and two CTAs an SM. Each kind runs in its own
process with its own Triton cache (the variable is read when a kernel compiles), and the PTX it compiled is counted.

    python -m iosim.kernels.hmma_probe --out DIR     # on a GPU: DIR/hmma_probe.json (about two minutes)
"""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

TILES = ((128, 128, 64, 4), (128, 64, 128, 4), (64, 256, 64, 4), (64, 128, 128, 4))  # (block_m, block_n, d, warps)
COUNTS = (1, 2)  # CTAs an SM
KINDS = {"wgmma": {}, "hmma": {"DISABLE_MMA_V3": "1"}}


def _ptx_counts(cache: Path) -> dict:
    """How many compiled kernels in a Triton cache use wgmma and how many mma.sync (their PTX)."""
    out = {"wgmma": 0, "mma_sync": 0, "kernels": 0}
    for ptx in cache.rglob("*.ptx"):
        text = ptx.read_text(errors="replace")
        out["kernels"] += 1
        out["wgmma"] += "wgmma" in text
        out["mma_sync"] += "mma.sync" in text
    return out


def child(kind: str, path: Path) -> None:
    """Time every tile loop in this process (its environment says which instructions Triton emits)."""
    import torch

    from iosim.kernels.microbench import tile_flops_resident

    rates: dict = {}
    for bm, bn, d, warps in TILES:
        for softmax in (False, True):
            rates.update(tile_flops_resident(torch, bm, bn, d, warps, COUNTS, softmax=softmax,
                                             progress=lambda m: print(m, file=sys.stderr, flush=True)))
    path.write_text(json.dumps({"kind": kind, "rates": rates}, indent=1) + "\n")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m iosim.kernels.hmma_probe", description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, required=True, help="folder for hmma_probe.json")
    parser.add_argument("--child", choices=sorted(KINDS), help=argparse.SUPPRESS)
    parser.add_argument("--file", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        child(args.child, args.file)
        return 0
    import torch
    import triton

    args.out.mkdir(parents=True, exist_ok=True)
    doc = {"provenance": {"gpu": torch.cuda.get_device_name(0), "torch": torch.__version__, "triton": triton.__version__,
                          "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                          "command": "python -m iosim.kernels.hmma_probe --out DIR"},
           "tiles": [list(t) for t in TILES], "counts": list(COUNTS), "kinds": {}}
    with contextlib.suppress(OSError):
        doc["provenance"]["driver"] = subprocess.run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                                                     capture_output=True, text=True).stdout.strip()
    for kind, env in KINDS.items():
        with tempfile.TemporaryDirectory() as cache:
            part = args.out / f".{kind}.json"
            done = subprocess.run([sys.executable, "-m", "iosim.kernels.hmma_probe", "--out", str(args.out), "--child",
                                   kind, "--file", str(part)],
                                  env={**os.environ, "TRITON_CACHE_DIR": cache, **env}, timeout=400)
            entry = json.loads(part.read_text()) if done.returncode == 0 and part.exists() else {"error": done.returncode}
            entry["ptx"] = _ptx_counts(Path(cache))
            entry["env"] = env
            doc["kinds"][kind] = entry
            part.unlink(missing_ok=True)
        print(f"{kind}: {entry.get('ptx')}", file=sys.stderr, flush=True)
    (args.out / "hmma_probe.json").write_text(json.dumps(doc, indent=1) + "\n")
    for key in sorted(doc["kinds"].get("wgmma", {}).get("rates", {})):
        if key.endswith("_ok_sms"):
            continue
        w, h = (doc["kinds"][k].get("rates", {}).get(key) for k in ("wgmma", "hmma"))
        if w and h:
            print(f"{key:42s} wgmma {w / 1e12:7.1f}  mma.sync {h / 1e12:7.1f} TFLOP/s  ratio {h / w:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
