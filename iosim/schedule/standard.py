"""Standard attention: S = QKᵀ and P = softmax(S) materialised in HBM, each step its own kernel.

Mirrors ``kernels/standard.py`` (the FlashAttention paper's Algorithms 0 and 3):
forward  ``qk`` (S = scale·QKᵀ, one CTA per BM×BN tile of S), ``softmax`` (one CTA per row, causal
         mask applied here), ``pv`` (O = PV, one CTA per BM rows of O streaming P and V);
backward ``dv`` (dV = PᵀdO), ``dp`` (dP = dO Vᵀ), ``ds`` (dS = P∘(dP − rowsum(P∘dP))), ``dq``
         (dQ = scale·dS K), ``dk`` (dK = scale·dSᵀQ), and for GQA a sum over each group's heads.
``standard_eager`` is PyTorch's eager path: ``q @ k.T`` unscaled, then a separate ``scale`` kernel
(one more read and write of N² elements), ``softmax`` (ATen's: each row read once, held in registers), ``p @ v``;
its backward is autograd's seven kernels (:func:`backward`).
"""
from __future__ import annotations

from iosim.schedule.common import TensorSet, extents, group_sum, regs_estimate
from iosim.schedule.ir import EPI, LOOP, PRO, READ, WRITE, Flops, Kernel, Pattern
from iosim.schedule.problem import RunConfig

BLOCK_K = 32  # K-dimension step of the QKᵀ-shaped matmuls (the loop over d stays inside one CTA)


def _outer(name, ts, p, tl, a, b, out, kv_b, flops_scale=1.0) -> Kernel:
    """C[i, j] = A[i] · B[j]ᵀ over the head dimension: one CTA per BM×BN tile of an N×N output."""
    bm, bn, d, eb = tl.block_m, tl.block_n, p.head_dim, p.elem_bytes
    ts.add(a, p.bh, p.seq_q, d, eb, bm)
    ts.add(b, p.bh_kv, p.seq_k, d, eb, bn)
    ts.add(out, p.bh, p.seq_q, p.seq_k, eb, bm)
    return Kernel(
        name=name, slices=p.bh, ti=-(-p.seq_q // bm), tj=-(-p.seq_k // bn), block_i=bm, block_j=bn, block_u=1,
        patterns=(Pattern(a, PRO, READ, "i"), Pattern(b, PRO, READ, "j", kv=kv_b), Pattern(out, EPI, WRITE, "i", "j")),
        end_flops=Flops(tensor=2.0 * bm * bn * d, simt=flops_scale * bm * bn),
        kv_group=p.group, heads=p.heads, kv_heads=p.kv_heads, warps=tl.warps, stages=tl.stages, smem_bytes=tl.stages * (bm + bn) * BLOCK_K * eb,
        regs_per_thread=regs_estimate(bm * bn, 0, tl.warps), extents=extents(ts, (a, b, out)),
    )


def _stream(name, ts, p, tl, nn, other, out, transpose, kv_other, out_rows, out_slices, kv_out=False) -> Kernel:
    """C[i] = N×N operand (rows i, or columns i if ``transpose``) · ``other``: BM rows of C per CTA."""
    bm, bn, d, eb = tl.block_m, tl.block_n, p.head_dim, p.elem_bytes
    inner = p.seq_q if transpose else p.seq_k
    ts.add(nn, p.bh, p.seq_q, p.seq_k, eb, bn if transpose else bm)
    ts.add(other, p.bh_kv if kv_other else p.bh, inner, d, eb, bn)
    ts.add(out, out_slices, out_rows, d, eb, bm)
    nn_pat = Pattern(nn, LOOP, READ, "u", "i") if transpose else Pattern(nn, LOOP, READ, "i", "u")
    return Kernel(
        name=name, slices=p.bh, ti=-(-out_rows // bm), tj=1, block_i=bm, block_j=1, block_u=bn,
        patterns=(nn_pat, Pattern(other, LOOP, READ, "u", kv=kv_other), Pattern(out, EPI, WRITE, "i", kv=kv_out)),
        loop_extent=inner, iter_flops=Flops(tensor=2.0 * bm * bn * d), end_flops=Flops(simt=bm * d),
        iter_sram=(bm * bn + bn * d) * eb, kv_group=p.group, heads=p.heads, kv_heads=p.kv_heads,
        warps=tl.warps, stages=tl.stages, smem_bytes=tl.stages * (bm * bn + bn * d) * eb,
        regs_per_thread=regs_estimate(bm * d, 0, tl.warps), extents=extents(ts, (nn, other, out)),
    )


def _rows(name, ts, p, reads, out, simt_per_elem, sfu_per_elem=0.0) -> Kernel:
    """One CTA per row of N×N operands: read each row once, write the output row once."""
    eb = p.elem_bytes
    for t in reads + (out,):
        ts.add(t, p.bh, p.seq_q, p.seq_k, eb)
    n = p.seq_k
    warps = min(16, max(4, _pow2(n) // 1024))
    return Kernel(
        name=name, slices=p.bh, ti=p.seq_q, tj=1, block_i=1, block_j=1, block_u=1,
        patterns=tuple(Pattern(t, PRO, READ, "i") for t in reads) + (Pattern(out, EPI, WRITE, "i"),),
        end_flops=Flops(simt=simt_per_elem * n, sfu=sfu_per_elem * n),
        warps=warps, smem_bytes=4 * 32 * warps, regs_per_thread=regs_estimate(_pow2(n), 0, warps),
        extents=extents(ts, reads + (out,)),
    )


def _pow2(n: int) -> int:
    return 1 << max(0, (n - 1).bit_length())


def forward(ts: TensorSet, config: RunConfig, eager: bool) -> list:
    p, tl = config.problem, config.tiling
    if eager:
        qk = _outer("qk", ts, p, tl, "Q", "K", "S", kv_b=True, flops_scale=0)
        scale = _rows("scale", ts, p, ("S",), "S2", simt_per_elem=1)
        # ATen's softmax holds a row in registers (softmax_warp_forward to 2,048 columns, cunn_SoftMaxForwardReg
        # beyond) and reads S once: the crossbar counters of every H200 eager case, N = 512-8192, read 1.00 x S.
        # Modelled before as three passes, from lts__t_bytes (3.0 x S), which the one-read scale kernel beside it
        # shows as well (3.07 x S): that counter is not the bytes SMs read
        softmax = _rows("softmax", ts, p, ("S2",), "P", simt_per_elem=4 + p.causal, sfu_per_elem=2)
        kernels = [qk, scale, softmax]
    else:
        qk = _outer("qk", ts, p, tl, "Q", "K", "S", kv_b=True)
        softmax = _rows("softmax", ts, p, ("S",), "P", simt_per_elem=4 + p.causal, sfu_per_elem=1)
        kernels = [qk, softmax]
    kernels.append(_stream("pv", ts, p, tl, "P", "V", "O", transpose=False, kv_other=True,
                           out_rows=p.seq_q, out_slices=p.bh))
    return kernels


def backward(ts: TensorSet, config: RunConfig, eager: bool = False) -> list:
    """Algorithm 3 of the paper (dV, dP, dS, dQ, dK), or with ``eager`` PyTorch autograd's kernels as
    Nsight Compute lists them on an H100: dV = PᵀdO, dP = dO Vᵀ, a binary elementwise kernel over dP
    and P, ATen's softmax backward (reads it and P, writes dS'), the scale's backward (dS = scale·dS'),
    dK = dSᵀQ, dQ = dS K. Grouped-query heads end with a sum over each group."""
    p, tl = config.problem, config.backward_tiling
    gqa = p.group > 1
    dk, dv = ("dKh", "dVh") if gqa else ("dK", "dV")
    kv_slices = p.bh if gqa else p.bh_kv
    grad_v = _stream("dv", ts, p, tl, "P", "dO", dv, transpose=True, kv_other=False, out_rows=p.seq_k,
                     out_slices=kv_slices, kv_out=not gqa)
    grad_p = _outer("dp", ts, p, tl, "dO", "V", "dP", kv_b=True, flops_scale=0)
    if eager:
        grad_s = [_rows("mul", ts, p, ("dP", "P"), "dPm", simt_per_elem=1),
                  _rows("softmax_bwd", ts, p, ("dPm", "P"), "dS2", simt_per_elem=3),
                  _rows("scale_bwd", ts, p, ("dS2",), "dS", simt_per_elem=1)]
    else:
        grad_s = [_rows("ds", ts, p, ("P", "dP"), "dS", simt_per_elem=4)]
    grad_q = _stream("dq", ts, p, tl, "dS", "K", "dQ", transpose=False, kv_other=True, out_rows=p.seq_q,
                     out_slices=p.bh)
    grad_k = _stream("dk", ts, p, tl, "dS", "Q", dk, transpose=True, kv_other=False, out_rows=p.seq_k,
                     out_slices=kv_slices, kv_out=not gqa)
    kernels = [grad_v, grad_p, *grad_s] + ([grad_k, grad_q] if eager else [grad_q, grad_k])
    if gqa:
        ts.add("dK", p.bh_kv, p.seq_k, p.head_dim, p.elem_bytes)
        ts.add("dV", p.bh_kv, p.seq_k, p.head_dim, p.elem_bytes)
        kernels += [group_sum("sum_dk", ts, "dKh", "dK", p), group_sum("sum_dv", ts, "dVh", "dV", p)]
    return kernels


def build(ts: TensorSet, config: RunConfig) -> list:
    eager = config.algo == "standard_eager"
    kernels = forward(ts, config, eager=eager)
    if config.problem.backward:
        kernels += backward(ts, config, eager)
    return kernels
