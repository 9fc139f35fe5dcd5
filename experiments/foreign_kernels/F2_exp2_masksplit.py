"""F2: FlashAttention-2 forward with ``tl.exp2`` (log2(e)·scale folded into one multiply) and masks only on the
blocks that need them: the loop is split into unmasked full blocks, then the diagonal/tail block(s) with masks.

Schedule: one CTA per (Q block of BLOCK_M rows, batch·head), grid ``(cdiv(Nq, BLOCK_M), B*H)`` ("rows" order).
HBM traffic: Q and O once; K and V once per Q block (about half of that as causal).
"""
from __future__ import annotations

import math

import torch
import triton
import triton.language as tl

BLOCK_M = 64
BLOCK_N = 64
NUM_WARPS = 4
NUM_STAGES = 3
LOG2E = 1.4426950408889634


@triton.jit
def _inner(acc, l_i, m_i, q, k_base, v_base, s_kn, s_vn, offs_m, lo, hi, NK, qk_scale,
           MASKED: tl.constexpr, CAUSAL: tl.constexpr, BLOCK_N: tl.constexpr, HEAD_DIM: tl.constexpr):
    offs_n = tl.arange(0, BLOCK_N)
    offs_d = tl.arange(0, HEAD_DIM)
    for start_n in range(lo, hi, BLOCK_N):
        cols = start_n + offs_n
        if MASKED:
            kt = tl.load(k_base + offs_d[:, None] + cols[None, :] * s_kn, mask=cols[None, :] < NK, other=0.0)
            v = tl.load(v_base + cols[:, None] * s_vn + offs_d[None, :], mask=cols[:, None] < NK, other=0.0)
        else:
            kt = tl.load(k_base + offs_d[:, None] + cols[None, :] * s_kn)
            v = tl.load(v_base + cols[:, None] * s_vn + offs_d[None, :])
        s = tl.dot(q, kt) * qk_scale  # in log2 units
        if MASKED:
            keep = cols[None, :] < NK
            if CAUSAL:
                keep = keep & (cols[None, :] <= offs_m[:, None])
            s = tl.where(keep, s, float("-inf"))
        m_new = tl.maximum(m_i, tl.max(s, 1))
        alpha = tl.exp2(m_i - m_new)
        p = tl.exp2(s - m_new[:, None])
        l_i = l_i * alpha + tl.sum(p, 1)
        acc = acc * alpha[:, None] + tl.dot(p.to(v.dtype), v)
        m_i = m_new
    return acc, l_i, m_i


@triton.jit
def _fwd_kernel(
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
    # Blocks [0, full_end) are whole (inside Nk) and, as causal, entirely left of the first row of this Q block.
    full_end = (NK // BLOCK_N) * BLOCK_N
    hi = NK
    if CAUSAL:
        full_end = tl.minimum(full_end, (pid_m * BLOCK_M // BLOCK_N) * BLOCK_N)
        hi = tl.minimum((pid_m + 1) * BLOCK_M, NK)
    acc, l_i, m_i = _inner(acc, l_i, m_i, q, k_base, v_base, s_kn, s_vn, offs_m, 0, full_end, NK, qk_scale,
                           False, CAUSAL, BLOCK_N, HEAD_DIM)
    acc, l_i, m_i = _inner(acc, l_i, m_i, q, k_base, v_base, s_kn, s_vn, offs_m, full_end, hi, NK, qk_scale,
                           True, CAUSAL, BLOCK_N, HEAD_DIM)
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
    _fwd_kernel[grid](
        q, k, v, o, sm_scale * LOG2E,
        q.stride(0), q.stride(1), q.stride(2), k.stride(0), k.stride(1), k.stride(2),
        v.stride(0), v.stride(1), v.stride(2), o.stride(0), o.stride(1), o.stride(2),
        H, H // HKV, NQ, NK,
        CAUSAL=causal, BLOCK_M=BLOCK_M, BLOCK_N=BLOCK_N, HEAD_DIM=D,
        num_warps=NUM_WARPS, num_stages=NUM_STAGES,
    )
    return o
