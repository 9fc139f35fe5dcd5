"""TFLOP/s of our attention kernels beside PyTorch's SDPA flash and cuDNN backends, measured in one run.

``hopper`` is the Hopper kernel (``iosim.kernels.flash_hopper``: TMA tensor descriptors), forward and
backward; ``hopper_fp8`` its forward in fp8 e4m3 with per-tensor scales (V transposed beforehand, outside
the timing). ``--hopper-tiles`` times its forward at other tiles (block_m x block_n x warps x stages,
``ws`` appended: with Triton's warp specialisation of its loop), ``--hopper-bwd-tiles`` its backward
(``tma`` appended: dQ added by TMA reductions).

FLOPs by ``Problem.flops()`` (4·B·H·N²·d, halved when causal, for the forward; the backward counts
2.5× the forward). Defaults follow the reference table (h100-measured.md): fp16, d = 128, N = 4096,
B·N = 16K tokens, H·d = 2048. Each pass is timed with ``iosim.kernels.timing.time_fn`` (do_bench
medians); the backward alone is timed by re-running ``autograd.grad`` on one retained forward graph.
Needs the package installed with the kernels extra (``pip install -e '.[kernels]'``).

    python3 experiments/bench_kernels.py [--seq 1024 4096] [--head-dim 64 128] [--causal [both]] [--dtype bf16]
        [--impls flash2 sdpa_cudnn hopper hopper_fp8] [--hopper-tiles 128x128x8x3] [--hopper-bwd-tiles 64x128x8x2tma]
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
HOPPER = ("hopper", "hopper_fp8")  # the Hopper kernel; fp8 forward only


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


def bench_hopper(torch, spec: CaseSpec, fp8: bool, tiles: dict | None, bwd_tiles: dict | None
                 ) -> tuple[float | None, float | None, str]:
    """(forward seconds, backward seconds, note) of the Hopper kernel on the case's shape, random inputs.

    ``tiles`` None: the forward is not timed; ``bwd_tiles`` None: the backward is not (fp8 has none)."""
    from iosim.kernels import flash_hopper

    p = spec.problem

    def run():
        dtype = {"fp16": torch.float16, "bf16": torch.bfloat16}[p.dtype]
        q = torch.randn(p.batch, p.heads, p.seq_q, p.head_dim, device="cuda", dtype=dtype)
        k, v = (torch.randn(p.batch, p.kv_heads, p.seq_k, p.head_dim, device="cuda", dtype=dtype) for _ in range(2))
        if fp8:
            (q, qs), (k, ks), (v, vs) = (flash_hopper.quantize(q), flash_hopper.quantize(k),
                                         flash_hopper.quantize(v, transpose=True))
            return time_fn(lambda: flash_hopper.attention(q, k, v, p.causal, scales=(qs, ks, vs), **tiles)).median_s, None
        fwd = None if tiles is None else time_fn(lambda: flash_hopper.attention(q, k, v, p.causal, **tiles)).median_s
        if bwd_tiles is None:
            return fwd, None
        for t in (q, k, v):
            t.requires_grad_()
        o = flash_hopper.fwd(q, k, v, p.causal, **bwd_tiles)
        do = torch.randn_like(o)
        return fwd, time_fn(lambda: torch.autograd.grad(o, (q, k, v), do, retain_graph=True)).median_s

    return _guarded(torch, run)


def tiles_arg(text: str) -> dict:
    """``BMxBNxWxS`` (``ws`` appended: warp-specialised) as the Hopper forward's keyword arguments."""
    ws = text.lower().endswith("ws")
    try:
        bm, bn, w, st = (int(x) for x in text.lower().removesuffix("ws").split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"tiles must be BMxBNxWARPSxSTAGES[ws], e.g. 128x128x8x3; got {text!r}") from None
    return {"block_m": bm, "block_n": bn, "warps": w, "stages": st, "warp_specialize": ws}


def bwd_tiles_arg(text: str) -> dict:
    """``BMxBNxWxS`` (``tma`` appended: dQ added by TMA reductions) as the Hopper backward's keyword arguments."""
    tma = text.lower().endswith("tma")
    try:
        bm, bn, w, st = (int(x) for x in text.lower().removesuffix("tma").split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"backward tiles must be BMxBNxWARPSxSTAGES[tma], e.g. 64x128x8x2; got {text!r}"
                                         ) from None
    return {"block_m": bm, "block_n": bn, "warps": w, "stages": st, "dq_tma": tma}


def _tiles_label(t: dict) -> str:
    suffix = "ws" if t.get("warp_specialize") else "tma" if t.get("dq_tma") else ""
    return f"{t['block_m']}x{t['block_n']}x{t['warps']}x{t['stages']}{suffix}"


def bench_one(torch, spec: CaseSpec) -> tuple[float | None, float | None, str]:
    """(forward seconds, backward seconds, note); None where that pass failed."""
    def run():
        q, k, v, do = make_inputs(torch, spec)
        forward = make_forward(torch, spec)
        fwd = time_fn(lambda: forward(q, k, v)).median_s
        o = forward(q, k, v)
        return fwd, time_fn(lambda: torch.autograd.grad(o, (q, k, v), do, retain_graph=True)).median_s

    return _guarded(torch, run)


def table(seq: int, head_dim: int, dtype: str, causal: bool, tokens: int, width: int, impls, hopper_tiles=(),
          hopper_bwd_tiles=()) -> str:
    torch = cuda_torch()
    batch, heads = max(1, tokens // seq), max(1, width // head_dim)
    results = {}
    # (row label, forward tiles, backward tiles) of the Hopper kernel; {} its defaults, None that pass untimed
    runs = [(impl, {}, {} if impl == "hopper" else None) for impl in impls]
    runs += [(f"hopper {_tiles_label(t)}", t, None) for t in hopper_tiles]
    runs += [(f"hopper bwd {_tiles_label(t)}", None, t) for t in hopper_bwd_tiles]
    for impl, tiles, bwd_tiles in runs:
        base = impl.split()[0]
        spec = case("flash2" if base in HOPPER else base, "fwd_bwd", batch=batch, heads=heads, seq=seq,
                    head_dim=head_dim, dtype=dtype, causal=causal)
        fwd_flops = replace(spec.problem, backward=False).flops()
        if base in HOPPER:
            fwd, bwd, note = bench_hopper(torch, spec, base == "hopper_fp8", tiles, bwd_tiles)
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
    parser.add_argument("--head-dim", type=int, nargs="+", default=[128], help="head dimensions d")
    parser.add_argument("--dtype", choices=("fp16", "bf16"), default="fp16", help="input dtype")
    parser.add_argument("--causal", nargs="?", const="yes", default="no", choices=("no", "yes", "both"),
                        help="causal mask (FLOPs halved); 'both': a table without it and one with it")
    parser.add_argument("--tokens", type=int, default=16384, help="B·N, tokens per batch (B = tokens / N)")
    parser.add_argument("--width", type=int, default=2048, help="H·d, model width (H = width / d)")
    parser.add_argument("--impls", nargs="+", default=list(TRAINED + PEERS), choices=TRAINED + PEERS + HOPPER,
                        help="implementations to time (hopper_fp8: forward only)")
    parser.add_argument("--hopper-tiles", nargs="+", type=tiles_arg, default=[], metavar="BMxBNxWxS",
                        help="also time the Hopper forward at these tiles, e.g. 128x128x8x3 (ws: warp-specialised)")
    parser.add_argument("--hopper-bwd-tiles", nargs="+", type=bwd_tiles_arg, default=[], metavar="BMxBNxWxS",
                        help="also time the Hopper backward at these tiles, e.g. 64x128x8x2 (tma: dQ by TMA reductions)")
    args = parser.parse_args(argv)
    masks = {"no": (False,), "yes": (True,), "both": (False, True)}[args.causal]
    try:
        for head_dim in args.head_dim:
            for causal in masks:
                for seq in args.seq:
                    print(table(seq, head_dim, args.dtype, causal, args.tokens, args.width, args.impls,
                                args.hopper_tiles, args.hopper_bwd_tiles), flush=True)
                    print()
    except HarnessError as e:
        print(f"bench_kernels: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
