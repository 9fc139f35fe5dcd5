"""Decode bandwidth: our flash-decoding kernel beside PyTorch's SDPA (flash backend) and a plain copy, in one run.

A decode step reads the whole KV cache once, so its speed is the HBM bandwidth it reaches. The
reference is what a device-to-device copy of a 4 GiB buffer reaches (``dst.copy_(src)``: read + write
bytes over the ``do_bench`` median), measured in the same run. Each case prints the kernel's and
SDPA's time, bandwidth (K + V + Q + O bytes over time) and the ratios to the copy and to SDPA:
issue 11 asks for ≥ 0.8 of the copy for KV ≥ 32K at batch ≥ 8, and at least SDPA's speed.
``--json FILE`` writes the numbers as measured, with the GPU and versions.

    python3 experiments/bench_decode.py [--json results.json]
"""
from __future__ import annotations

import argparse
import json
import sys
from datetime import datetime, timezone

from iosim.costs.closed_forms import compulsory_bytes
from iosim.kernels.cases import CaseSpec
from iosim.kernels.device import HarnessError, cuda_torch, one_line
from iosim.kernels.inputs import make_forward, make_inputs
from iosim.kernels.timing import time_fn
from iosim.schedule.problem import Problem, RunConfig, Tiling

# (batch, KV length): batch ≥ 8 at KV ≥ 32K is the goal's range; the small ones show where launches dominate
SIZES = [(1, 8192), (1, 131072), (8, 32768), (8, 131072), (32, 32768), (64, 32768), (128, 16384), (256, 8192)]
HEADS, KV_HEADS, HEAD_DIM = 32, 8, 128
COPY_BYTES = 4 << 30


def copy_bandwidth(torch) -> float:
    """Bytes per second of a device-to-device copy (read + write) of ``COPY_BYTES``."""
    buffers = [torch.empty(COPY_BYTES // 2, dtype=torch.float16, device="cuda").normal_()]
    buffers.append(torch.empty_like(buffers[0]))
    seconds = time_fn(lambda: buffers[1].copy_(buffers[0])).median_s
    buffers.clear()
    torch.cuda.empty_cache()
    return 2 * COPY_BYTES / seconds


def time_impl(torch, impl: str, problem: Problem) -> tuple[float | None, str]:
    spec = CaseSpec(impl, problem, Tiling())
    try:
        q, k, v, _ = make_inputs(torch, spec)
        forward = make_forward(torch, spec)
        return time_fn(lambda: forward(q, k, v)).median_s, ""
    except torch.cuda.OutOfMemoryError:
        return None, "out of memory"
    except Exception as e:  # a backend that refuses a shape is reported, and the table goes on
        return None, one_line(e)
    finally:
        torch.cuda.empty_cache()


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", type=str, default=None, help="write the measured numbers to this file")
    args = parser.parse_args(argv)
    try:
        torch = cuda_torch()
    except HarnessError as e:
        print(f"bench_decode: {e}", file=sys.stderr)
        return 2
    import triton

    copy = copy_bandwidth(torch)
    gpu = torch.cuda.get_device_name()
    print(f"{gpu}: copy {copy / 1e9:.0f} GB/s (read + write of {COPY_BYTES >> 30} GiB)  "
          f"H={HEADS} Hkv={KV_HEADS} d={HEAD_DIM} fp16, one query row")
    print(f"{'batch':>5} {'KV':>7} {'ours µs':>8} {'GB/s':>6} {'/copy':>6} {'SDPA µs':>8} {'GB/s':>6} {'/copy':>6} "
          f"{'ours/SDPA':>9}")
    rows = []
    for batch, seq_k in SIZES:
        p = Problem(batch=batch, heads=HEADS, kv_heads=KV_HEADS, seq_q=1, seq_k=seq_k, head_dim=HEAD_DIM)
        ours, note_ours = time_impl(torch, "flash_decode", p)
        sdpa, note_sdpa = time_impl(torch, "sdpa_flash", p)
        nbytes = sum(compulsory_bytes(RunConfig(algo="flash_decode", problem=p)).values())  # K, V, Q once; O once
        rows.append({"batch": batch, "seq_k": seq_k, "bytes": nbytes, "ours_s": ours, "sdpa_s": sdpa,
                     "ours_note": note_ours, "sdpa_note": note_sdpa})

        def cols(t, nbytes=nbytes):
            return (f"{t * 1e6:8.1f} {nbytes / t / 1e9:6.0f} {nbytes / t / copy:6.2f}" if t
                    else f"{'-':>8} {'-':>6} {'-':>6}")

        speed = f"{sdpa / ours:9.2f}" if ours and sdpa else f"{'-':>9}"
        notes = "; ".join(n for n in (note_ours, note_sdpa) if n)
        print(f"{batch:5d} {seq_k:7d} {cols(ours)} {cols(sdpa)} {speed}" + (f"  ({notes})" if notes else ""),
              flush=True)
    if args.json:
        doc = {"gpu": gpu, "torch": torch.__version__, "triton": triton.__version__,
               "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
               "command": "python3 experiments/bench_decode.py " + " ".join(argv or sys.argv[1:]),
               "copy_bytes_per_s": copy, "heads": HEADS, "kv_heads": KV_HEADS, "head_dim": HEAD_DIM, "rows": rows}
        with open(args.json, "w") as f:
            json.dump(doc, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
