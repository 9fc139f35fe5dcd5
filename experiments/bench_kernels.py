"""TFLOP/s of our attention kernels beside PyTorch's SDPA flash and cuDNN backends, measured in one run.

FLOPs by ``Problem.flops()`` (4·B·H·N²·d, halved when causal, for the forward; the backward counts
2.5× the forward). Defaults follow the reference table (h100-measured.md): fp16, d = 128, N = 4096,
B·N = 16K tokens, H·d = 2048. Each pass is timed with ``iosim.kernels.timing.time_fn`` (do_bench
medians); the backward alone is timed by re-running ``autograd.grad`` on one retained forward graph.
Needs the package installed with the kernels extra (``pip install -e '.[kernels]'``).

    python3 experiments/bench_kernels.py [--seq 1024 4096] [--head-dim 64] [--causal] [--dtype bf16]
"""
from __future__ import annotations

import argparse
import sys
from dataclasses import replace

from iosim.kernels.cases import TRAINED, CaseSpec, case
from iosim.kernels.device import HarnessError, cuda_torch, one_line
from iosim.kernels.inputs import make_forward, make_inputs
from iosim.kernels.timing import time_fn

PEERS = ("sdpa_flash", "sdpa_cudnn")


def bench_one(torch, spec: CaseSpec) -> tuple[float | None, float | None, str]:
    """(forward seconds, backward seconds, note); None where that pass failed."""
    try:
        q, k, v, do = make_inputs(torch, spec)
        forward = make_forward(torch, spec)
        fwd = time_fn(lambda: forward(q, k, v)).median_s
        o = forward(q, k, v)
        bwd = time_fn(lambda: torch.autograd.grad(o, (q, k, v), do, retain_graph=True)).median_s
        return fwd, bwd, ""
    except torch.cuda.OutOfMemoryError:
        return None, None, "out of memory"
    except Exception as e:
        return None, None, one_line(e)
    finally:
        torch.cuda.empty_cache()


def table(seq: int, head_dim: int, dtype: str, causal: bool, tokens: int, width: int, impls) -> str:
    torch = cuda_torch()
    batch, heads = max(1, tokens // seq), max(1, width // head_dim)
    results = {}
    for impl in impls:
        spec = case(impl, "fwd_bwd", batch=batch, heads=heads, seq=seq, head_dim=head_dim, dtype=dtype,
                    causal=causal)
        fwd_flops = replace(spec.problem, backward=False).flops()
        fwd, bwd, note = bench_one(torch, spec)
        results[impl] = (fwd and fwd_flops / fwd / 1e12, bwd and 2.5 * fwd_flops / bwd / 1e12, fwd, bwd, note)
    lines = [f"B={batch} H={heads} N={seq} d={head_dim} {dtype}{' causal' if causal else ''} "
             f"on {torch.cuda.get_device_name()}",
             f"{'impl':<12} {'fwd ms':>8} {'fwd TF/s':>9} {'bwd ms':>8} {'bwd TF/s':>9}"
             f" {'fwd/flash':>10} {'fwd/cuDNN':>10} {'bwd/flash':>10} {'bwd/cuDNN':>10}"]

    def ratio(a, b):
        return f"{a / b:10.2f}" if a and b else f"{'-':>10}"

    for impl in impls:
        tf_f, tf_b, fwd, bwd, note = results[impl]
        ms = lambda t: f"{t * 1e3:8.3f}" if t else f"{'-':>8}"  # noqa: E731
        tf = lambda t: f"{t:9.0f}" if t else f"{'-':>9}"  # noqa: E731
        row = f"{impl:<12} {ms(fwd)} {tf(tf_f)} {ms(bwd)} {tf(tf_b)}"
        peers = [results.get(p, (None, None))[:2] for p in PEERS]
        row += ratio(tf_f, peers[0][0]) + ratio(tf_f, peers[1][0]) + ratio(tf_b, peers[0][1]) + ratio(tf_b, peers[1][1])
        lines.append(row + (f"  ({note})" if note else ""))
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seq", type=int, nargs="+", default=[4096], help="sequence lengths N")
    parser.add_argument("--head-dim", type=int, default=128, help="head dimension d")
    parser.add_argument("--dtype", choices=("fp16", "bf16"), default="fp16", help="input dtype")
    parser.add_argument("--causal", action="store_true", help="causal mask (FLOPs halved)")
    parser.add_argument("--tokens", type=int, default=16384, help="B·N, tokens per batch (B = tokens / N)")
    parser.add_argument("--width", type=int, default=2048, help="H·d, model width (H = width / d)")
    parser.add_argument("--impls", nargs="+", default=list(TRAINED + PEERS), choices=TRAINED + PEERS,
                        help="implementations to time")
    args = parser.parse_args(argv)
    try:
        for seq in args.seq:
            print(table(seq, args.head_dim, args.dtype, args.causal, args.tokens, args.width, args.impls), flush=True)
            print()
    except HarnessError as e:
        print(f"bench_kernels: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
