"""Where each CTA of a long causal forward is, and when: the evidence for how CTAs share K/V in the L2.

Runs ``kernels/flash2.py``'s forward (its own ``_fwd_blocks``, same tiles, warps and stages) with a
``%globaltimer`` stamp after every ``CHUNK`` unmasked K/V blocks, plus each CTA's start, end and
``%smid``. From the stamps one reads which K/V block each CTA of a head reaches when: whether the CTAs
of a head stream apart (each reading K/V the L2 has long evicted) or bunch up behind the one that
misses (a convoy). The untraced kernel is timed beside it (``do_bench`` medians on random data) so
the stamps' own cost is known.

    python -m iosim.kernels.causal_trace --out DIR [--seq-len 131072] [--order heads,rows] [--heads 8] [--head-dim 128]
        [--tiling 128x64w4s2 ...] [--chunk 64]

writes ``DIR/causal_trace-<order>-n<N>.json`` (``...-n<N>-<tiling>.json`` at a ``--tiling`` other than the
kernel's own; ``-c<chunk>`` added at a ``--chunk`` other than 64): provenance, the launch, both timings and per CTA (in launch order) its head, Q block, SM and stamps
in ns from the first CTA's start.
"""
from __future__ import annotations

import argparse
import json
import re
import sys
from dataclasses import asdict
from pathlib import Path

from iosim.kernels.device import HarnessError, cuda_torch, one_line

CHUNK = 64  # unmasked K/V blocks between stamps


def _kernel():
    import triton
    import triton.language as tl

    from iosim.kernels._common import kv_row
    from iosim.kernels.flash2 import _fwd_blocks
    from iosim.kernels.microbench import _ptx

    _, globaltimer, smid = _ptx()

    @triton.jit
    def traced_fwd(Q, K, V, O, LSE, TRACE, H, HKV, NQ, NK, qk_scale, STAMPS: tl.constexpr, HEADS_FIRST: tl.constexpr,
                   D: tl.constexpr, BM: tl.constexpr, BN: tl.constexpr, CHUNK: tl.constexpr):
        """flash2_fwd (causal) with TRACE[cta] = [start, smid, a stamp per CHUNK unmasked blocks..., end]."""
        one = tl.arange(0, 1)
        t0 = globaltimer(one)
        if HEADS_FIRST:
            bh = tl.program_id(0)
            i = tl.program_id(1)
            cta = i * tl.num_programs(0) + bh
        else:
            i = tl.program_id(0)
            bh = tl.program_id(1)
            cta = bh * tl.num_programs(0) + i
        base = TRACE + cta.to(tl.int64) * STAMPS
        rows = i * BM + tl.arange(0, BM)
        ds = tl.arange(0, D)
        q_off = bh.to(tl.int64) * NQ * D + rows[:, None] * D + ds[None, :]
        kv_off = kv_row(bh, H, HKV).to(tl.int64) * NK * D + tl.arange(0, BN)[:, None] * D + ds[None, :]
        q = tl.load(Q + q_off, mask=rows[:, None] < NQ, other=0.0)
        m_i = tl.full((BM,), float("-inf"), dtype=tl.float32)
        l_i = tl.zeros((BM,), dtype=tl.float32)
        acc = tl.zeros((BM, D), dtype=tl.float32)
        lo = (tl.minimum(i * BM, NK) // BN) * BN
        hi = tl.minimum((i + 1) * BM, NK)
        for c in range(0, tl.cdiv(lo, CHUNK * BN)):
            c_lo = c * CHUNK * BN
            c_hi = tl.minimum(lo, c_lo + CHUNK * BN)
            acc, l_i, m_i = _fwd_blocks(acc, l_i, m_i, q, K + kv_off, V + kv_off, rows, c_lo, c_hi, NK, qk_scale,
                                        False, True, D, BM, BN, 0, False, D)
            t = globaltimer(tl.sum(l_i, 0).to(tl.int32) + tl.zeros([1], tl.int32))
            tl.store(base + 2 + c + one, t)
        acc, l_i, m_i = _fwd_blocks(acc, l_i, m_i, q, K + kv_off, V + kv_off, rows, lo, hi, NK, qk_scale,
                                    True, True, D, BM, BN, 0, False, D)
        tl.store(O + q_off, (acc / l_i[:, None]).to(O.dtype.element_ty), mask=rows[:, None] < NQ)
        tl.store(LSE + bh.to(tl.int64) * NQ + rows, m_i + tl.log2(l_i), mask=rows < NQ)
        t1 = globaltimer(tl.sum(tl.sum(acc, 1), 0).to(tl.int32) + tl.zeros([1], tl.int32))
        tl.store(base + one, t0)
        tl.store(base + 1 + one, smid(one).to(tl.int64))
        tl.store(base + STAMPS - 1 + one, t1)

    return traced_fwd


def parse_tiling(text: str) -> dict:
    """``"128x64w4s2"`` -> flash2's tiling overrides ``{block_m: 128, block_n: 64, warps: 4, stages: 2}``."""
    m = re.fullmatch(r"(\d+)x(\d+)w(\d+)s(\d+)", text)
    if not m:
        raise argparse.ArgumentTypeError(f"{text!r}: expected BMxBNwWARPSsSTAGES, e.g. 128x64w4s2")
    return dict(zip(("block_m", "block_n", "warps", "stages"), map(int, m.groups())))


def _tiling_arg(text: str) -> tuple[str, dict]:
    return text, parse_tiling(text)


def trace(seq_len: int, order: str, heads: int = 8, head_dim: int = 128, tiling: dict | None = None,
          chunk: int = CHUNK) -> dict:
    """One traced causal forward (after a warm-up run) and both kernels' ``do_bench`` medians; ``tiling``: flash2's
    tiles, warps and stages in place of its defaults; ``chunk``: unmasked K/V blocks between stamps."""
    torch = cuda_torch()
    import triton

    from iosim.kernels import flash2
    from iosim.kernels._common import LOG2E
    from iosim.kernels.timing import time_fn

    cfg = flash2._common.pass_tiling(flash2.ALGO, flash2.FWD, head_dim, {"grid_order": order, **(tiling or {})})
    gen = torch.Generator(device="cuda").manual_seed(0)
    q, k, v = (torch.randn(1, heads, seq_len, head_dim, device="cuda", dtype=torch.float16, generator=gen)
               for _ in range(3))
    scale = head_dim ** -0.5
    n_blocks = triton.cdiv(seq_len, cfg.block_m)
    stamps = 3 + triton.cdiv(seq_len, cfg.block_n * chunk)
    heads_first = order == "heads"
    grid = (heads, n_blocks) if heads_first else (n_blocks, heads)
    o = torch.empty_like(q)
    lse = torch.empty((1, heads, seq_len), device="cuda", dtype=torch.float32)
    buf = torch.zeros(heads * n_blocks, stamps, device="cuda", dtype=torch.int64)
    kernel = _kernel()

    def traced():
        kernel[grid](q, k, v, o, lse, buf, heads, heads, seq_len, seq_len, scale * LOG2E, STAMPS=stamps,
                     HEADS_FIRST=heads_first, D=head_dim, BM=cfg.block_m, BN=cfg.block_n, CHUNK=chunk,
                     num_warps=cfg.warps, num_stages=cfg.stages)

    launches: list = []
    plain = time_fn(lambda: flash2.forward(q, k, v, True, scale, cfg, launches))
    timed = time_fn(traced)
    buf.zero_()
    traced()
    torch.cuda.synchronize()
    ref, _ = flash2.forward(q, k, v, True, scale, cfg, [])
    if not torch.allclose(o.float(), ref.float(), atol=2e-2, rtol=0):
        raise HarnessError("the traced kernel's output differs from flash2_fwd's")
    t = buf.cpu()
    starts = t[:, 0].clone()
    origin = int(starts.min())
    rows = []
    for cta in range(t.shape[0]):
        head, block = (cta % heads, cta // heads) if heads_first else (cta // n_blocks, cta % n_blocks)
        row = t[cta].tolist()
        n_stamps = (block * cfg.block_m // cfg.block_n + chunk - 1) // chunk
        rows.append({"head": head, "q_block": block, "sm": row[1], "start_ns": row[0] - origin,
                     "stamps_ns": [s - origin for s in row[2:2 + n_stamps]], "end_ns": row[-1] - origin})
    return {"config": {"seq_len": seq_len, "heads": heads, "head_dim": head_dim, "dtype": "fp16", "causal": True,
                       "grid_order": order, "block_m": cfg.block_m, "block_n": cfg.block_n, "warps": cfg.warps,
                       "stages": cfg.stages, "chunk_blocks": chunk},
            "launch": launches[0] if launches else None,
            "timing": {"flash2_fwd_median_s": plain.median_s, "traced_median_s": timed.median_s},
            "ctas": rows}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m iosim.kernels.causal_trace", description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True, help="folder for causal_trace-<order>-n<N>.json")
    parser.add_argument("--seq-len", type=int, nargs="+", default=[131072], help="sequence lengths N")
    parser.add_argument("--order", default="heads,rows", help="grid orders, comma-separated (heads, rows)")
    parser.add_argument("--heads", type=int, default=8, help="heads (batch 1; default 8)")
    parser.add_argument("--head-dim", type=int, default=128, help="head dim d (default 128)")
    parser.add_argument("--tiling", nargs="+", type=_tiling_arg, default=[(None, None)], metavar="BMxBNwWsS",
                        help="flash2's tiles, warps and stages, e.g. 128x64w4s2 (default: its own)")
    parser.add_argument("--chunk", type=int, default=CHUNK,
                        help=f"unmasked K/V blocks between stamps (default {CHUNK}; fewer: a finer timeline, more stamps)")
    args = parser.parse_args(argv)
    if args.chunk < 1:
        parser.error(f"--chunk: must be a positive number of K/V blocks, got {args.chunk}")
    from iosim.kernels.harness import provenance

    try:
        prov = provenance(None, False)
        args.out.mkdir(parents=True, exist_ok=True)
        for n in args.seq_len:
            for order in args.order.split(","):
                for label, tiling in args.tiling:
                    data = trace(n, order, args.heads, args.head_dim, tiling, args.chunk)
                    suffix = (f"-{label}" if label else "") + (f"-c{args.chunk}" if args.chunk != CHUNK else "")
                    path = args.out / f"causal_trace-{order}-n{n}{suffix}.json"
                    path.write_text(json.dumps({"provenance": asdict(prov), **data}) + "\n")
                    tm = data["timing"]
                    print(f"{order} N={n} {label or 'own tiles'}: flash2_fwd {tm['flash2_fwd_median_s'] * 1e3:.2f} ms, "
                          f"traced {tm['traced_median_s'] * 1e3:.2f} ms, {len(data['ctas'])} CTAs -> {path}", flush=True)
    except (HarnessError, ValueError, RuntimeError) as e:
        print(f"error: {one_line(e)}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
