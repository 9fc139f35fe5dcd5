"""F11: a FlashAttention-2 forward whose loop takes two K/V tiles an iteration (``tl.static_range(2)`` inside it:
each pass of the compiled loop is two blocks' code), ``tl.exp2`` with the scale folded in, masks on every tile,
top-left causal mask, GQA.

Schedule: one CTA per (Q block of BLOCK_M rows, batch·head), grid ``(cdiv(Nq, BLOCK_M), B*H)`` ("rows" order);
K/V blocks of BLOCK_N rows, two a pass. HBM traffic: Q and O once; K and V once per Q block (about half as causal).
"""
from __future__ import annotations

import math

import torch
import triton
import triton.language as tl

BLOCK_M = 128
BLOCK_N = 64
NUM_WARPS = 4
NUM_STAGES = 2
LOG2E = 1.4426950408889634


@triton.jit
def _two_tiles_fwd(
    Q, K, V, O, qk_scale,
    s_qb, s_qh, s_qm, s_kb, s_kh, s_kn, s_vb, s_vh, s_vn, s_ob, s_oh, s_om,
    H, GROUP, NQ, NK,
    CAUSAL: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, HEAD_DIM: tl.constexpr,
):
    pid_m = tl.program_id(0)
    pid_bh = tl.program_id(1)
    b = pid_bh // H
    h = pid_bh % H
    hk = h // GROUP
    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_d = tl.arange(0, HEAD_DIM)
    q = tl.load(Q + b * s_qb + h * s_qh + offs_m[:, None] * s_qm + offs_d[None, :], mask=offs_m[:, None] < NQ, other=0.0)
    k_base = K + b * s_kb + hk * s_kh
    v_base = V + b * s_vb + hk * s_vh
    m_i = tl.full([BLOCK_M], float("-inf"), dtype=tl.float32)
    l_i = tl.zeros([BLOCK_M], dtype=tl.float32)
    acc = tl.zeros([BLOCK_M, HEAD_DIM], dtype=tl.float32)
    hi = NK
    if CAUSAL:
        hi = tl.minimum((pid_m + 1) * BLOCK_M, NK)
    for start_n in range(0, hi, 2 * BLOCK_N):
        for half in tl.static_range(2):
            cols = start_n + half * BLOCK_N + tl.arange(0, BLOCK_N)
            k = tl.load(k_base + cols[:, None] * s_kn + offs_d[None, :], mask=cols[:, None] < NK, other=0.0)
            v = tl.load(v_base + cols[:, None] * s_vn + offs_d[None, :], mask=cols[:, None] < NK, other=0.0)
            s = tl.dot(q, tl.trans(k)) * qk_scale  # in log2 units
            keep = cols[None, :] < NK
            if CAUSAL:
                keep = keep & (cols[None, :] <= offs_m[:, None])
            s = tl.where(keep, s, -1.0e30)  # a finite floor: a tile past the diagonal leaves m_i as it was
            m_new = tl.maximum(m_i, tl.max(s, 1))
            alpha = tl.exp2(m_i - m_new)
            p = tl.exp2(s - m_new[:, None])
            l_i = l_i * alpha + tl.sum(p, 1)
            acc = acc * alpha[:, None] + tl.dot(p.to(v.dtype), v)
            m_i = m_new
    acc = acc / l_i[:, None]
    o_ptrs = O + b * s_ob + h * s_oh + offs_m[:, None] * s_om + offs_d[None, :]
    tl.store(o_ptrs, acc.to(O.dtype.element_ty), mask=offs_m[:, None] < NQ)


def attention(q, k, v, causal=False, sm_scale=None):
    """o = softmax(q kᵀ·scale [+ top-left causal mask]) v; q (B, H, Nq, d), k and v (B, Hkv, Nk, d)."""
    B, H, NQ, D = q.shape
    HKV, NK = k.shape[1], k.shape[2]
    assert H % HKV == 0 and D in (32, 64, 128) and k.shape == v.shape
    q, k, v = q.contiguous(), k.contiguous(), v.contiguous()
    sm_scale = 1.0 / math.sqrt(D) if sm_scale is None else sm_scale
    o = torch.empty_like(q)
    grid = (triton.cdiv(NQ, BLOCK_M), B * H)
    _two_tiles_fwd[grid](
        q, k, v, o, sm_scale * LOG2E,
        q.stride(0), q.stride(1), q.stride(2), k.stride(0), k.stride(1), k.stride(2),
        v.stride(0), v.stride(1), v.stride(2), o.stride(0), o.stride(1), o.stride(2),
        H, H // HKV, NQ, NK,
        CAUSAL=causal, BLOCK_M=BLOCK_M, BLOCK_N=BLOCK_N, HEAD_DIM=D,
        num_warps=NUM_WARPS, num_stages=NUM_STAGES,
    )
    return o
