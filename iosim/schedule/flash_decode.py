"""Flash-decoding (split-KV): a few query rows against a long K/V cache, the K/V length split across CTAs.

Mirrors ``kernels/flash_decode.py`` kernel for kernel:
``decode_split``  grid (splits, B·Hkv): a CTA holds the G query heads × Nq rows of one key/value head
                  (read once), streams its share of the K/V rows (blocks [s·per, (s+1)·per)) and
                  writes each row's fp32 partial output and logsumexp, or O itself when there is one split;
``decode_reduce`` grid (B·H·Nq,), only with two or more splits: a CTA per query row reads that row's
                  partials and logsumexps over the splits and writes its O.
Tensors are described as the kernels address them: Q and (one split) O as (B·Hkv) × (G·Nq) rows (the
query heads of a group are contiguous), the partials as one slice per query row × splits rows.
A paged cache (``page_size``) runs ``decode_split_paged``: the same bytes of K and V, found through a
block table whose int32 entries (4 bytes a page, under 0.01 % of the K/V bytes) are left out; where the
pages lie in memory does not change what the L2 holds or what is read.
Requests of their own cache lengths (``seq_lens``) or a window run ``decode_split_ragged`` and
``decode_reduce_ragged``: the splits are planned for the longest cache (the allocation, as
FlashAttention plans them), a request's splits cover its own blocks from the one holding its window's
first key, the splits past them exit at once, and the combine reads only the splits that ran.
"""
from __future__ import annotations

import math

from iosim.schedule.common import FP32, TensorSet, extents, regs_estimate
from iosim.schedule.ir import EPI, LOOP, PRO, READ, WRITE, Flops, Kernel, Pattern, Ragged
from iosim.schedule.problem import ConfigError, RunConfig
from iosim.schedule.tiling import decode_plan_blocks, decode_split_blocks, decode_splits


def ragged(p, block_n: int, per: int) -> tuple:
    """Per request: the first K/V block (the one holding its window's first key) and the splits that hold any."""
    first = tuple((max(n - p.window, 0) if p.window else 0) // block_n for n in p.lengths)
    used = tuple(-(-(-(-n // block_n) - f) // per) for n, f in zip(p.lengths, first))
    return first, used


def splits_for(config: RunConfig, sm_count: int | None) -> int:
    """The splits the kernel launches: the tiling's, else FlashAttention-2's choice for ``sm_count`` SMs."""
    p, t = config.problem, config.tiling
    n_blocks = decode_plan_blocks(p.seq_k, t.block_n, p.window)
    if t.splits is not None:
        return decode_split_blocks(n_blocks, t.splits)[1]
    if sm_count is None:
        raise ConfigError("splits", "flash_decode needs --splits or a GPU to choose them for")
    return decode_split_blocks(n_blocks, decode_splits(p.bh_kv, sm_count, n_blocks))[1]


def build(ts: TensorSet, config: RunConfig, sm_count: int | None = None) -> list:
    p, t = config.problem, config.tiling
    # A multi-token decode (speculative decoding's check) is causal with the diagonal bottom-right: its last query row
    # sees the whole cache and a CTA holds all its group's rows, so it visits every block as without the mask
    if p.causal and not (p.causal_align == "bottom-right" and p.seq_q < p.seq_k and p.seq_lens is None
                         and p.window is None):
        raise ConfigError("causal", "flash_decode is modelled causal only as a multi-token decode: the diagonal "
                                    "bottom-right (causal_align), fewer query rows than keys, one cache length, no "
                                    "window")
    if p.backward:
        raise ConfigError("backward", "flash_decode is a forward (inference) kernel; it has no backward")
    bm, bn, d, eb = t.block_m, t.block_n, p.head_dim, p.elem_bytes
    rows = p.group * p.seq_q  # query rows of one CTA (padded to bm on the tensor cores)
    per, splits = decode_split_blocks(decode_plan_blocks(p.seq_k, bn, p.window), splits_for(config, sm_count))
    local = p.seq_lens is not None or p.window is not None
    ts.add("Q", p.bh_kv, rows, d, eb, rows)
    ts.add("K", p.bh_kv, p.seq_k, d, eb, bn)
    ts.add("V", p.bh_kv, p.seq_k, d, eb, bn)
    if splits == 1:
        ts.add("O", p.bh_kv, rows, d, eb, rows)
        out = (Pattern("O", EPI, WRITE, "all"),)
        names = ("Q", "K", "V", "O")
    else:
        ts.add("Opart", p.bh_kv * rows, splits, d, FP32, 1)
        ts.add("LSEpart", p.bh_kv * rows, splits, 1, FP32, 1)
        # each split writes one row of every query row's partials: a fan over the CTA's query rows
        out = (Pattern("Opart", EPI, WRITE, "i", fan=True), Pattern("LSEpart", EPI, WRITE, "i", fan=True))
        names = ("Q", "K", "V", "Opart", "LSEpart")
    stages = t.stages
    name = "decode_split_ragged" if local else "decode_split_paged" if p.page_size else "decode_split"
    first, used = ragged(p, bn, per)
    kernels = [Kernel(
        name=name, slices=p.bh_kv, ti=splits, tj=1, block_i=1, block_j=1, block_u=bn,
        patterns=(Pattern("Q", PRO, READ, "all"), Pattern("K", LOOP, READ, "u"), Pattern("V", LOOP, READ, "u")) + out,
        loop_extent=p.seq_k, split_blocks=per,
        # per K/V block, on bm padded rows: S = QKᵀ and O += PV on tensor cores; the online softmax in SIMT
        iter_flops=Flops(tensor=4.0 * bm * bn * d, simt=5.0 * bm * bn + bm * d, sfu=bm * bn),
        end_flops=Flops(simt=2.0 * bm * d, sfu=bm),
        iter_sram=(bm + 2 * bn) * d * eb,
        # the fan over partials: the CTA's slice is one key/value head, its "group" the query rows it holds
        kv_group=rows, heads=rows, kv_heads=1,
        warps=t.warps, stages=stages, smem_bytes=eb * d * (bm + 2 * bn * stages),
        regs_per_thread=regs_estimate(bm * d + bm * bn, bm * d * eb, t.warps),
        extents=extents(ts, names), window=p.window or 0, lookups=1 if local else 0,  # reads its request's length
        ragged=Ragged(per_batch=p.kv_heads, tiles=used, first=first, loop_rows=p.lengths,
                      rows=(("K", p.lengths), ("V", p.lengths)) + (("Opart", used), ("LSEpart", used)) * (splits > 1))
        if local else None,
    )]
    if splits > 1:
        ts.add("O", p.bh_kv * rows, 1, d, eb, 1)
        width = 1 << max(0, math.ceil(math.log2(splits)))
        kernels.append(Kernel(
            name="decode_reduce_ragged" if local else "decode_reduce", slices=p.bh_kv * rows, ti=1, tj=1, block_i=1, block_j=1, block_u=1,
            patterns=(Pattern("LSEpart", PRO, READ, "all"), Pattern("Opart", PRO, READ, "all"),
                      Pattern("O", EPI, WRITE, "all")),
            end_flops=Flops(simt=3.0 * width * d + 4.0 * width, sfu=width),
            warps=4, smem_bytes=0, regs_per_thread=32,
            extents=extents(ts, ("LSEpart", "Opart", "O")), lookups=1 if local else 0,
            ragged=Ragged(per_batch=p.kv_heads * rows, tiles=(1,) * p.batch, first=(0,) * p.batch,
                          loop_rows=(0,) * p.batch, rows=(("LSEpart", used), ("Opart", used))) if local else None,
        ))
    return kernels
