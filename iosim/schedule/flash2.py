"""FlashAttention-2 (Dao 2023): one CTA per Q block streaming K/V; backward one CTA per K/V block.

Mirrors ``kernels/flash2.py`` kernel for kernel (a variable-length batch or a window runs
``kernels/varlen.py``'s ``flash2_varlen_fwd``: the same forward on packed rows, each request's CTAs
clipped to its length, those past it exiting at once, and a window's K/V blocks starting at the block
holding the first row's oldest key):
forward  ``flash2_fwd``   grid (Tr, B·H) ("rows") or (B·H, Tr) ("heads"): read Q_i once, stream K_j, V_j
                          (causal: up to the diagonal), write O_i and the fp32 logsumexp once;
backward ``zeros`` (fp32 dQ accumulator), ``flash2_bwd_pre`` (D = rowsum(dO∘O)), ``flash2_bwd``
                          grid (Tc, B·H): read K_j, V_j once, stream Q_i, dO_i, LSE_i, D_i (causal: from
                          the diagonal), atomically add dS·K_j into dQ_i, write dK_j, dV_j once;
                          then ``sum`` over the query heads of a group (GQA only) and ``cast`` dQ.
backward with ``dq: separate`` (FlagAttention's loops; ``fused``: the Triton tutorial's, the two loops one
         kernel whose CTA j runs K/V block j's loop then Q block j's, so the dQ loop's tiles are the other's
         swapped and it pays no launch of its own): ``flash2_bwd_pre``, then
         ``flash2_bwd_kv`` as ``flash2_bwd`` without dQ, then ``flash2_bwd_q`` grid (Tr, B·H): read Q_i,
                          dO_i, LSE_i, D_i once, stream K_j, V_j (causal: up to the diagonal), write dQ_i
                          once in the input dtype; then the group sums (GQA only).
"""
from __future__ import annotations

from dataclasses import replace

from iosim.schedule.common import FP32, TensorSet, elementwise, extents, group_sum, regs_estimate
from iosim.schedule.ir import ATOMIC, EPI, LOOP, PRO, READ, WRITE, CausalMode, Flops, GridOrder, Kernel, Pattern, Ragged
from iosim.schedule.problem import RunConfig, Tiling


def forward_kernel(ts: TensorSet, config: RunConfig, tiling: Tiling, o_name: str = "O") -> Kernel:
    p = config.problem
    bm, bn, d, eb = tiling.block_m, tiling.block_n, p.head_dim, p.elem_bytes
    ts.add("Q", p.bh, p.seq_q, d, eb, bm)
    ts.add("K", p.bh_kv, p.seq_k, d, eb, bn)
    ts.add("V", p.bh_kv, p.seq_k, d, eb, bn)
    ts.add(o_name, p.bh, p.seq_q, d, p.out_bytes, bm)
    ts.add("LSE", p.bh, p.seq_q, 1, FP32, bm)
    stages = tiling.stages
    return Kernel(
        name="flash2_fwd", slices=p.bh, ti=-(-p.seq_q // bm), tj=1, block_i=bm, block_j=1, block_u=bn,
        patterns=(
            Pattern("Q", PRO, READ, "i"),
            Pattern("K", LOOP, READ, "u", kv=True),
            Pattern("V", LOOP, READ, "u", kv=True),
            Pattern(o_name, EPI, WRITE, "i"),
            Pattern("LSE", EPI, WRITE, "i"),
        ),
        loop_extent=p.seq_k,
        # per K/V block: S = QKᵀ and O += PV on tensor cores; scale, max, subtract, sum, convert
        # per score and one rescale per output element in SIMT; one exp2 per score.
        iter_flops=Flops(tensor=4.0 * bm * bn * d, simt=5.0 * bm * bn + bm * d, sfu=bm * bn),
        end_flops=Flops(simt=2.0 * bm * d, sfu=bm),
        iter_sram=(bm + 2 * bn) * d * eb,
        causal=CausalMode.STOP if skips(config) else CausalMode.NONE,
        causal_offset=p.causal_offset, kv_group=p.group, heads=p.heads, kv_heads=p.kv_heads,
        order=GridOrder(tiling.grid_order), warps=tiling.warps, stages=tiling.stages,
        persistent=tiling.persistent or 0,
        smem_bytes=eb * d * (bm + 2 * bn * stages),
        regs_per_thread=regs_estimate(bm * d + bm * bn, bm * d * eb, tiling.warps),
        extents=extents(ts, ("Q", "K", "V", o_name, "LSE")),
    )


def skips(config: RunConfig) -> bool:
    """Whether the kernels skip the blocks a causal mask hides wholly (a kernel that only masks visits every one)."""
    return config.problem.causal and config.skips_masked


def local_forward(kernel: Kernel, config: RunConfig) -> Kernel:
    """The forward on a variable-length batch or with a window: ``flash2_varlen_fwd``'s CTAs."""
    p = config.problem
    ragged = None
    if p.seq_lens is not None:
        lens = p.seq_lens
        ragged = Ragged(per_batch=p.heads, tiles=tuple(-(-n // kernel.block_i) for n in lens), first=(0,) * p.batch,
                        loop_rows=lens, rows=tuple((t, lens) for t in ("Q", "K", "V", "O", "LSE")))
    # each CTA reads its request's offsets (cu_seqlens) before it can address a tile
    return replace(kernel, name="flash2_varlen_fwd", window=p.window or 0, ragged=ragged, lookups=1)


def backward_kernels(ts: TensorSet, config: RunConfig, tiling: Tiling) -> list:
    p = config.problem
    bm, bn, d, eb = tiling.block_m, tiling.block_n, p.head_dim, p.elem_bytes
    stages, warps = tiling.stages, tiling.warps
    gqa = p.group > 1
    atomic = config.dq == "atomic"
    dk, dv = ("dKh", "dVh") if gqa else ("dK", "dV")
    ts.add("dO", p.bh, p.seq_q, d, eb, bm)
    if atomic:
        ts.add("dQacc", p.bh, p.seq_q, d, FP32, bm)
    ts.add("D", p.bh, p.seq_q, 1, FP32, bm)
    ts.add(dk, p.bh if gqa else p.bh_kv, p.seq_k, d, eb, bn)
    ts.add(dv, p.bh if gqa else p.bh_kv, p.seq_k, d, eb, bn)
    ts.add("K", p.bh_kv, p.seq_k, d, eb, bn)
    ts.add("V", p.bh_kv, p.seq_k, d, eb, bn)
    ts.add("Q", p.bh, p.seq_q, d, eb, bm)
    ts.add("LSE", p.bh, p.seq_q, 1, FP32, bm)
    kernels = [elementwise("zeros_dq", ts, (), ("dQacc",), p.bh, p.seq_q, d, simt_per_elem=0, aten="fill")] if atomic else []
    pre = config.preprocess_tiling or Tiling()  # a user's preprocess: its own rows per CTA and warps
    rows = pre.block_m or bm
    kernels.append(Kernel(
        name="flash2_bwd_pre", slices=p.bh, ti=-(-p.seq_q // rows), tj=1, block_i=rows, block_j=1, block_u=1,
        patterns=(Pattern("O", PRO, READ, "i"), Pattern("dO", PRO, READ, "i"), Pattern("D", EPI, WRITE, "i")),
        end_flops=Flops(simt=2.0 * rows * d), warps=pre.warps or warps, stages=stages, smem_bytes=0, regs_per_thread=64,
        extents=extents(ts, ("O", "dO", "D")),
    ))
    dq = (Pattern("dQacc", LOOP, ATOMIC, "u"),) if atomic else ()
    kernels.append(Kernel(
        name="flash2_bwd" if atomic else "flash2_bwd_kv", slices=p.bh, ti=-(-p.seq_k // bn), tj=1, block_i=bn,
        block_j=1, block_u=bm,
        patterns=(
            Pattern("K", PRO, READ, "i", kv=True),
            Pattern("V", PRO, READ, "i", kv=True),
            Pattern("Q", LOOP, READ, "u"),
            Pattern("dO", LOOP, READ, "u"),
            Pattern("LSE", LOOP, READ, "u"),
            Pattern("D", LOOP, READ, "u"),
            *dq,
            Pattern(dk, EPI, WRITE, "i", kv=not gqa),
            Pattern(dv, EPI, WRITE, "i", kv=not gqa),
        ),
        loop_extent=p.seq_q,
        # per Q block: recompute S, dV += PᵀdO, dP = dO Vᵀ, dK += dSᵀQ, and (atomic) dQ += dS K.
        iter_flops=Flops(tensor=(10.0 if atomic else 8.0) * bm * bn * d, simt=(6.0 if atomic else 5.0) * bm * bn,
                         sfu=bm * bn),
        end_flops=Flops(simt=2.0 * bn * d),
        iter_sram=(4 if atomic else 2) * bm * d * eb,
        causal=CausalMode.START if skips(config) else CausalMode.NONE,
        causal_offset=p.causal_offset, kv_group=p.group, heads=p.heads, kv_heads=p.kv_heads,
        order=GridOrder.ROWS, warps=warps, stages=stages, mma="bwd",
        smem_bytes=eb * d * (2 * bn + 2 * bm * stages) + 2 * FP32 * bm * stages,
        regs_per_thread=regs_estimate(2 * bn * d + 2 * bm * bn, 0, warps),
        extents=extents(ts, ("K", "V", "Q", "dO", "LSE", "D", *(("dQacc",) if atomic else ()), dk, dv)),
    ))
    if not atomic:
        if config.dq == "fused":  # the same CTAs go on to dQ: their Q block is their K/V block's rows
            dq_tiling = replace(tiling, block_m=tiling.block_n, block_n=tiling.block_m)
            ts.add("dQ", p.bh, p.seq_q, d, eb, dq_tiling.block_m)
            kernels.append(replace(dq_kernel(ts, config, dq_tiling), launch=False))
        else:
            ts.add("dQ", p.bh, p.seq_q, d, eb, bm)
            kernels.append(dq_kernel(ts, config, tiling))
    if gqa:
        ts.add("dK", p.bh_kv, p.seq_k, d, eb)
        ts.add("dV", p.bh_kv, p.seq_k, d, eb)
        kernels.append(group_sum("sum_dk", ts, "dKh", "dK", p))
        kernels.append(group_sum("sum_dv", ts, "dVh", "dV", p))
    if atomic:
        ts.add("dQ", p.bh, p.seq_q, d, eb)
        kernels.append(elementwise("cast_dq", ts, ("dQacc",), ("dQ",), p.bh, p.seq_q, d, aten="copy"))
    return kernels


def dq_kernel(ts: TensorSet, config: RunConfig, tiling: Tiling) -> Kernel:
    """``flash2_bwd_q``: dQ over Q blocks, the forward's loop with the backward's recomputation."""
    p = config.problem
    bm, bn, d, eb = tiling.block_m, tiling.block_n, p.head_dim, p.elem_bytes
    return Kernel(
        name="flash2_bwd_q", slices=p.bh, ti=-(-p.seq_q // bm), tj=1, block_i=bm, block_j=1, block_u=bn,
        patterns=(
            Pattern("Q", PRO, READ, "i"),
            Pattern("dO", PRO, READ, "i"),
            Pattern("LSE", PRO, READ, "i"),
            Pattern("D", PRO, READ, "i"),
            Pattern("K", LOOP, READ, "u", kv=True),
            Pattern("V", LOOP, READ, "u", kv=True),
            Pattern("dQ", EPI, WRITE, "i"),
        ),
        loop_extent=p.seq_k,
        # per K/V block: recompute S and P = exp2(S - LSE), dP = dO Vᵀ, dS = P∘(dP - D), dQ += dS K.
        iter_flops=Flops(tensor=6.0 * bm * bn * d, simt=4.0 * bm * bn, sfu=bm * bn),
        end_flops=Flops(simt=2.0 * bm * d),
        iter_sram=2 * bn * d * eb,
        causal=CausalMode.STOP if skips(config) else CausalMode.NONE,
        causal_offset=p.causal_offset, kv_group=p.group, heads=p.heads, kv_heads=p.kv_heads,
        order=GridOrder.ROWS, warps=tiling.warps, stages=tiling.stages,
        smem_bytes=eb * d * (2 * bm + 2 * bn * tiling.stages),
        regs_per_thread=regs_estimate(2 * bm * d + 2 * bm * bn, 0, tiling.warps),
        extents=extents(ts, ("Q", "dO", "LSE", "D", "K", "V", "dQ")),
    )


def build(ts: TensorSet, config: RunConfig) -> list:
    kernels = [forward_kernel(ts, config, config.tiling)]
    if config.problem.seq_lens is not None or config.problem.window is not None:
        kernels[0] = local_forward(kernels[0], config)
    if config.problem.backward:
        kernels += backward_kernels(ts, config, config.backward_tiling)
    return kernels
