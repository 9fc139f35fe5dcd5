"""TFLOP/s of our attention kernels beside PyTorch's SDPA flash and cuDNN backends, measured in one run.

``hopper`` and ``hopper_fp8`` are the forward-only Hopper kernel (``iosim.kernels.flash_hopper``: TMA
tensor descriptors; fp8 e4m3 with per-tensor scales, V transposed beforehand, outside the timing);
``--hopper-tiles`` times it at other tiles (block_m x block_n x warps x stages, ``ws`` appended: with
Triton's warp specialisation of its loop) too.

FLOPs by ``Problem.flops()`` (4·B·H·N²·d, halved when causal, for the forward; the backward counts
2.5× the forward). Defaults follow the reference table (h100-measured.md): fp16, d = 128, N = 4096,
B·N = 16K tokens, H·d = 2048. Each pass is timed with ``iosim.kernels.timing.time_fn`` (do_bench
medians); the backward alone is timed by re-running ``autograd.grad`` on one retained forward graph.
Needs the package installed with the kernels extra (``pip install -e '.[kernels]'``).

    python3 experiments/bench_kernels.py [--seq 1024 4096] [--head-dim 64] [--causal] [--dtype bf16]
        [--impls flash2 sdpa_cudnn hopper hopper_fp8] [--hopper-tiles 128x128x8x3 128x64x8x2]
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
HOPPER = ("hopper", "hopper_fp8")  # forward only


def _guarded(torch, run) -> tuple[float | None, float | None, str]:
    """``run()``'s (forward, backward) seconds and no note; (None, None, why) where it failed."""
    try:
        fwd, bwd = run()
        return fwd, bwd, ""
    except torch.cuda.OutOfMemoryError:
        return None, None, "out of memory"
    except Exception as e:
        return None, None, one_line(e)
    finally:
        torch.cuda.empty_cache()


def bench_hopper(torch, spec: CaseSpec, fp8: bool, tiles: dict) -> tuple[float | None, None, str]:
    """(forward seconds, None, note) of the Hopper kernel on the case's shape, random inputs."""
    from iosim.kernels import flash_hopper

    p = spec.problem

    def run():
        dtype = {"fp16": torch.float16, "bf16": torch.bfloat16}[p.dtype]
        q = torch.randn(p.batch, p.heads, p.seq_q, p.head_dim, device="cuda", dtype=dtype)
        k, v = (torch.randn(p.batch, p.kv_heads, p.seq_k, p.head_dim, device="cuda", dtype=dtype) for _ in range(2))
        extra = {}
        if fp8:
            (q, qs), (k, ks), (v, vs) = (flash_hopper.quantize(q), flash_hopper.quantize(k),
                                         flash_hopper.quantize(v, transpose=True))
            extra = {"scales": (qs, ks, vs)}
        return time_fn(lambda: flash_hopper.attention(q, k, v, p.causal, **tiles, **extra)).median_s, None

    return _guarded(torch, run)


def tiles_arg(text: str) -> dict:
    """``BMxBNxWxS`` (``ws`` appended: warp-specialised) as the Hopper kernel's keyword arguments."""
    ws = text.lower().endswith("ws")
    try:
        bm, bn, w, st = (int(x) for x in text.lower().removesuffix("ws").split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"tiles must be BMxBNxWARPSxSTAGES[ws], e.g. 128x128x8x3; got {text!r}") from None
    return {"block_m": bm, "block_n": bn, "warps": w, "stages": st, "warp_specialize": ws}


def bench_one(torch, spec: CaseSpec) -> tuple[float | None, float | None, str]:
    """(forward seconds, backward seconds, note); None where that pass failed."""
    def run():
        q, k, v, do = make_inputs(torch, spec)
        forward = make_forward(torch, spec)
        fwd = time_fn(lambda: forward(q, k, v)).median_s
        o = forward(q, k, v)
        return fwd, time_fn(lambda: torch.autograd.grad(o, (q, k, v), do, retain_graph=True)).median_s

    return _guarded(torch, run)


def table(seq: int, head_dim: int, dtype: str, causal: bool, tokens: int, width: int, impls, hopper_tiles=()) -> str:
    torch = cuda_torch()
    batch, heads = max(1, tokens // seq), max(1, width // head_dim)
    results = {}
    runs = [(impl, {}) for impl in impls]
    runs += [(f"hopper {t['block_m']}x{t['block_n']}x{t['warps']}x{t['stages']}{'ws' if t['warp_specialize'] else ''}", t)
             for t in hopper_tiles]
    for impl, tiles in runs:
        base = impl.split()[0]
        spec = case("flash2" if base in HOPPER else base, "fwd_bwd", batch=batch, heads=heads, seq=seq,
                    head_dim=head_dim, dtype=dtype, causal=causal)
        fwd_flops = replace(spec.problem, backward=False).flops()
        if base in HOPPER:
            fwd, bwd, note = bench_hopper(torch, spec, base == "hopper_fp8", tiles)
        else:
            fwd, bwd, note = bench_one(torch, spec)
        results[impl] = (fwd and fwd_flops / fwd / 1e12, bwd and 2.5 * fwd_flops / bwd / 1e12, fwd, bwd, note)
    lines = [f"B={batch} H={heads} N={seq} d={head_dim} {dtype}{' causal' if causal else ''} "
             f"on {torch.cuda.get_device_name()}",
             f"{'impl':<22} {'fwd ms':>8} {'fwd TF/s':>9} {'bwd ms':>8} {'bwd TF/s':>9}"
             f" {'fwd/flash':>10} {'fwd/cuDNN':>10} {'bwd/flash':>10} {'bwd/cuDNN':>10}"]

    def ratio(a, b):
        return f"{a / b:10.2f}" if a and b else f"{'-':>10}"

    for impl in results:
        tf_f, tf_b, fwd, bwd, note = results[impl]
        ms = lambda t: f"{t * 1e3:8.3f}" if t else f"{'-':>8}"  # noqa: E731
        tf = lambda t: f"{t:9.0f}" if t else f"{'-':>9}"  # noqa: E731
        row = f"{impl:<22} {ms(fwd)} {tf(tf_f)} {ms(bwd)} {tf(tf_b)}"
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
    parser.add_argument("--impls", nargs="+", default=list(TRAINED + PEERS), choices=TRAINED + PEERS + HOPPER,
                        help="implementations to time (hopper, hopper_fp8: forward only)")
    parser.add_argument("--hopper-tiles", nargs="+", type=tiles_arg, default=[], metavar="BMxBNxWxS",
                        help="also time the Hopper kernel at these tiles, e.g. 128x128x8x3")
    args = parser.parse_args(argv)
    try:
        for seq in args.seq:
            print(table(seq, args.head_dim, args.dtype, args.causal, args.tokens, args.width, args.impls,
                        args.hopper_tiles), flush=True)
            print()
    except HarnessError as e:
        print(f"bench_kernels: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
