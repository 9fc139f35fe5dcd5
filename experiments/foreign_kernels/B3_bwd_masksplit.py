"""B3: FlashAttention-2 forward and backward with ``tl.exp2`` (saved LSE in log2 units); the backward applies
masks only on the Q blocks that need them: its loop over Q blocks is split into the masked diagonal blocks (causal),
the unmasked full blocks, and the masked tail block (Nq not a multiple of BLOCK_M); a K/V block that reaches past
Nk is masked throughout. Backward tiles 64x64, 4 warps, 3 stages; forward 128x64, 8 warps, 3 stages.

Forward: one CTA per (Q block, batch·head), grid ``(cdiv(Nq, BLOCK_M), B*H)``; writes O and an fp32 LSE per row.
Backward: (1) D = rowsum(dO ∘ O) per row (read O and dO once, write 4 B per row); (2) one CTA per (K/V block,
batch·head): read K_j, V_j once, then for every visible Q block read Q_i, dO_i, LSE_i, D_i, atomically add dQ_i
(fp32) and finally write dK_j, dV_j once; (3) dQ cast to the input dtype, dK/dV summed over GQA groups by torch.
"""
from __future__ import annotations

import math

import torch
import triton
import triton.language as tl

FWD_BLOCK_M, FWD_BLOCK_N, FWD_WARPS, FWD_STAGES = 128, 64, 8, 3
BWD_BLOCK_M, BWD_BLOCK_N, BWD_WARPS, BWD_STAGES = 64, 64, 4, 3  # BLOCK_M: Q rows per step; BLOCK_N: K/V rows per CTA
LOG2E = 1.4426950408889634
PRE_BLOCK_M = 64  # rows per CTA of the D = rowsum(dO ∘ O) preprocess


@triton.jit
def _fwd_kernel(
    Q, K, V, O, LSE, qk_scale,
    s_qb, s_qh, s_qm, s_kb, s_kh, s_kn,
    H, GROUP, NQ, NK,
    CAUSAL: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, HEAD_DIM: tl.constexpr,
):
    pid_m = tl.program_id(0)
    pid_bh = tl.program_id(1)
    b = pid_bh // H
    h = pid_bh % H
    hk = h // GROUP
    rows = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_n = tl.arange(0, BLOCK_N)
    offs_d = tl.arange(0, HEAD_DIM)
    q_off = b * s_qb + h * s_qh + rows[:, None] * s_qm + offs_d[None, :]
    q = tl.load(Q + q_off, mask=rows[:, None] < NQ, other=0.0)
    kv_base = b * s_kb + hk * s_kh  # K and V share one layout
    m_i = tl.full([BLOCK_M], float("-inf"), dtype=tl.float32)
    l_i = tl.zeros([BLOCK_M], dtype=tl.float32)
    acc = tl.zeros([BLOCK_M, HEAD_DIM], dtype=tl.float32)
    hi = NK
    if CAUSAL:
        hi = tl.minimum((pid_m + 1) * BLOCK_M, NK)
    for start_n in range(0, hi, BLOCK_N):
        cols = start_n + offs_n
        kv_off = kv_base + cols[:, None] * s_kn + offs_d[None, :]
        k = tl.load(K + kv_off, mask=cols[:, None] < NK, other=0.0)
        s = tl.dot(q, tl.trans(k)) * qk_scale  # log2 units
        keep = cols[None, :] < NK
        if CAUSAL:
            keep = keep & (cols[None, :] <= rows[:, None])
        s = tl.where(keep, s, float("-inf"))
        m_new = tl.maximum(m_i, tl.max(s, 1))
        alpha = tl.exp2(m_i - m_new)
        p = tl.exp2(s - m_new[:, None])
        l_i = l_i * alpha + tl.sum(p, 1)
        v = tl.load(V + kv_off, mask=cols[:, None] < NK, other=0.0)
        acc = acc * alpha[:, None] + tl.dot(p.to(v.dtype), v)
        m_i = m_new
    acc = acc / l_i[:, None]
    tl.store(O + q_off, acc.to(O.dtype.element_ty), mask=rows[:, None] < NQ)
    tl.store(LSE + pid_bh * NQ + rows, m_i + tl.log2(l_i), mask=rows < NQ)


@triton.jit
def _bwd_preprocess(O, DO, DELTA, NQ, BLOCK_M: tl.constexpr, HEAD_DIM: tl.constexpr):
    pid_m = tl.program_id(0)
    pid_bh = tl.program_id(1)
    rows = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_d = tl.arange(0, HEAD_DIM)
    off = pid_bh * NQ * HEAD_DIM + rows[:, None] * HEAD_DIM + offs_d[None, :]
    o = tl.load(O + off, mask=rows[:, None] < NQ, other=0.0).to(tl.float32)
    do = tl.load(DO + off, mask=rows[:, None] < NQ, other=0.0).to(tl.float32)
    tl.store(DELTA + pid_bh * NQ + rows, tl.sum(o * do, 1), mask=rows < NQ)


@triton.jit
def _bwd_inner(dk, dv, k, v, Q, DO, DQ, LSE, DELTA, q_base, lse_base, s_qm, cols, lo, hi, NQ, NK, sm_scale, qk_scale,
               MASKED: tl.constexpr, CAUSAL: tl.constexpr, BLOCK_M: tl.constexpr, HEAD_DIM: tl.constexpr):
    offs_m = tl.arange(0, BLOCK_M)
    offs_d = tl.arange(0, HEAD_DIM)
    for start_m in range(lo, hi, BLOCK_M):
        rows = start_m + offs_m
        q_off = q_base + rows[:, None] * s_qm + offs_d[None, :]
        if MASKED:
            q = tl.load(Q + q_off, mask=rows[:, None] < NQ, other=0.0)
            do = tl.load(DO + q_off, mask=rows[:, None] < NQ, other=0.0)
            lse = tl.load(LSE + lse_base + rows, mask=rows < NQ, other=0.0)
            delta = tl.load(DELTA + lse_base + rows, mask=rows < NQ, other=0.0)
        else:
            q = tl.load(Q + q_off)
            do = tl.load(DO + q_off)
            lse = tl.load(LSE + lse_base + rows)
            delta = tl.load(DELTA + lse_base + rows)
        s = tl.dot(q, tl.trans(k)) * qk_scale  # log2 units, as LSE
        p = tl.exp2(s - lse[:, None])
        if MASKED:
            keep = (rows[:, None] < NQ) & (cols[None, :] < NK)
            if CAUSAL:
                keep = keep & (cols[None, :] <= rows[:, None])
            p = tl.where(keep, p, 0.0)
        dv += tl.dot(tl.trans(p.to(do.dtype)), do)
        dp = tl.dot(do, tl.trans(v))
        ds = p * (dp - delta[:, None])
        dk += tl.dot(tl.trans(ds.to(q.dtype)), q)
        dq = tl.dot(ds.to(k.dtype), k) * sm_scale
        if MASKED:
            tl.atomic_add(DQ + q_off, dq, mask=rows[:, None] < NQ, sem="relaxed")
        else:
            tl.atomic_add(DQ + q_off, dq, sem="relaxed")
    return dk, dv


@triton.jit
def _bwd_kernel(
    Q, K, V, DO, LSE, DELTA, DQ, DK, DV, sm_scale, qk_scale,
    s_qb, s_qh, s_qm, s_kb, s_kh, s_kn,
    H, GROUP, NQ, NK,
    CAUSAL: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, HEAD_DIM: tl.constexpr,
):
    pid_n = tl.program_id(0)
    pid_bh = tl.program_id(1)
    b = pid_bh // H
    h = pid_bh % H
    hk = h // GROUP
    start_n = pid_n * BLOCK_N
    cols = start_n + tl.arange(0, BLOCK_N)
    offs_d = tl.arange(0, HEAD_DIM)
    kv_off = b * s_kb + hk * s_kh + cols[:, None] * s_kn + offs_d[None, :]
    k = tl.load(K + kv_off, mask=cols[:, None] < NK, other=0.0)
    v = tl.load(V + kv_off, mask=cols[:, None] < NK, other=0.0)
    q_base = b * s_qb + h * s_qh  # Q, dO and the fp32 dQ buffer share one layout
    lse_base = pid_bh * NQ
    dk = tl.zeros([BLOCK_N, HEAD_DIM], dtype=tl.float32)
    dv = tl.zeros([BLOCK_N, HEAD_DIM], dtype=tl.float32)
    # Q blocks, all multiples of BLOCK_M: [lo, mid) masked diagonal, [mid, full_end) unmasked, [.., NQ) masked tail.
    lo = 0
    diag_end = 0
    if CAUSAL:
        lo = (start_n // BLOCK_M) * BLOCK_M  # first Q block holding a row >= this block's first key
        diag_end = tl.cdiv(start_n + BLOCK_N - 1, BLOCK_M) * BLOCK_M  # first Q block whose rows all see every key
    full_end = (NQ // BLOCK_M) * BLOCK_M
    if start_n + BLOCK_N > NK:
        full_end = lo  # a K/V block past Nk is masked throughout
    mid = tl.maximum(lo, tl.minimum(diag_end, full_end))
    dk, dv = _bwd_inner(dk, dv, k, v, Q, DO, DQ, LSE, DELTA, q_base, lse_base, s_qm, cols, lo, mid, NQ, NK,
                        sm_scale, qk_scale, True, CAUSAL, BLOCK_M, HEAD_DIM)
    dk, dv = _bwd_inner(dk, dv, k, v, Q, DO, DQ, LSE, DELTA, q_base, lse_base, s_qm, cols, mid, full_end, NQ, NK,
                        sm_scale, qk_scale, False, CAUSAL, BLOCK_M, HEAD_DIM)
    dk, dv = _bwd_inner(dk, dv, k, v, Q, DO, DQ, LSE, DELTA, q_base, lse_base, s_qm, cols,
                        tl.maximum(mid, full_end), NQ, NQ, NK, sm_scale, qk_scale, True, CAUSAL, BLOCK_M, HEAD_DIM)
    dk = dk * sm_scale
    # dK, dV per query head, (B, H, Nk, d) contiguous; GQA groups are summed by the caller.
    g_off = pid_bh * NK * HEAD_DIM + cols[:, None] * HEAD_DIM + offs_d[None, :]
    tl.store(DK + g_off, dk.to(DK.dtype.element_ty), mask=cols[:, None] < NK)
    tl.store(DV + g_off, dv.to(DV.dtype.element_ty), mask=cols[:, None] < NK)


class _Attention(torch.autograd.Function):
    @staticmethod
    def forward(ctx, q, k, v, causal, sm_scale):
        B, H, NQ, D = q.shape
        HKV, NK = k.shape[1], k.shape[2]
        o = torch.empty_like(q)
        lse = torch.empty((B, H, NQ), device=q.device, dtype=torch.float32)
        grid = (triton.cdiv(NQ, FWD_BLOCK_M), B * H)
        _fwd_kernel[grid](
            q, k, v, o, lse, sm_scale * LOG2E,
            q.stride(0), q.stride(1), q.stride(2), k.stride(0), k.stride(1), k.stride(2),
            H, H // HKV, NQ, NK,
            CAUSAL=causal, BLOCK_M=FWD_BLOCK_M, BLOCK_N=FWD_BLOCK_N, HEAD_DIM=D,
            num_warps=FWD_WARPS, num_stages=FWD_STAGES,
        )
        ctx.save_for_backward(q, k, v, o, lse)
        ctx.causal, ctx.sm_scale = causal, sm_scale
        return o

    @staticmethod
    def backward(ctx, do):
        q, k, v, o, lse = ctx.saved_tensors
        B, H, NQ, D = q.shape
        HKV, NK = k.shape[1], k.shape[2]
        do = do.contiguous()
        delta = torch.empty_like(lse)
        _bwd_preprocess[(triton.cdiv(NQ, PRE_BLOCK_M), B * H)](
            o, do, delta, NQ, BLOCK_M=PRE_BLOCK_M, HEAD_DIM=D, num_warps=4, num_stages=1)
        dq = torch.zeros(q.shape, device=q.device, dtype=torch.float32)
        dk = torch.empty((B, H, NK, D), device=q.device, dtype=q.dtype)
        dv = torch.empty((B, H, NK, D), device=q.device, dtype=q.dtype)
        grid = (triton.cdiv(NK, BWD_BLOCK_N), B * H)
        _bwd_kernel[grid](
            q, k, v, do, lse, delta, dq, dk, dv, ctx.sm_scale, ctx.sm_scale * LOG2E,
            q.stride(0), q.stride(1), q.stride(2), k.stride(0), k.stride(1), k.stride(2),
            H, H // HKV, NQ, NK,
            CAUSAL=ctx.causal, BLOCK_M=BWD_BLOCK_M, BLOCK_N=BWD_BLOCK_N, HEAD_DIM=D,
            num_warps=BWD_WARPS, num_stages=BWD_STAGES,
        )
        if HKV != H:
            dk = dk.view(B, HKV, H // HKV, NK, D).sum(2, dtype=torch.float32).to(q.dtype)
            dv = dv.view(B, HKV, H // HKV, NK, D).sum(2, dtype=torch.float32).to(q.dtype)
        return dq.to(q.dtype), dk, dv, None, None


def attention(q, k, v, causal=False, sm_scale=None):
    """o = softmax(q kᵀ·scale [+ top-left causal mask]) v; q (B, H, Nq, d), k and v (B, Hkv, Nk, d); differentiable."""
    H, D = q.shape[1], q.shape[3]
    assert H % k.shape[1] == 0 and D in (32, 64, 128) and k.shape == v.shape
    sm_scale = 1.0 / math.sqrt(D) if sm_scale is None else sm_scale
    return _Attention.apply(q.contiguous(), k.contiguous(), v.contiguous(), causal, sm_scale)
