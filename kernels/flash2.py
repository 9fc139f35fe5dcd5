"""FlashAttention-2: Q-block-outer forward; K/V-block-outer backward with atomic dQ accumulation.

Forward (FA2 Algorithm 1): one CTA per (Q block, batch·head) loads Q_i once, streams every K_j, V_j
it needs and writes O_i and LSE_i once. Per (batch, head): reads Nq·d + cdiv(Nq,BM)·2·Nk·d
(causal: only the K/V blocks at or left of the diagonal), writes Nq·d (dtype) + Nq (fp32 LSE).

Backward (FA2 Algorithm 2): a memset of the fp32 dQ accumulator, ``flash2_bwd_pre`` for
D = rowsum(dO ∘ O), then one CTA per (K/V block, batch·head) that loads K_j, V_j once, streams
Q_i, dO_i, LSE_i, D_i, keeps dK_j, dV_j on chip and atomically adds its dQ_i share in fp32;
for GQA torch then sums the per-query-head dK, dV over each group; finally dQ is cast to the
input dtype. With ``dq="separate"`` (FlagAttention's and Triton's tutorial's way) there is no memset,
atomic or cast: ``flash2_bwd_kv`` is ``flash2_bwd`` without dQ, and ``flash2_bwd_q``, one CTA per
(Q block, batch·head), loads Q_i, dO_i, LSE_i, D_i once, streams K_j, V_j as the forward does and
writes dQ_i once in the input dtype.
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

from iosim.kernels import _common
from iosim.kernels._common import LOG2E, LOG2E_C, kv_row, launch, mma
from iosim.schedule.problem import Tiling
from iosim.schedule.tiling import BWD, FWD

ALGO = "flash2"
# Tiles, warps and stages of both passes come from iosim.schedule.tiling (FLASH2_FWD, FLASH2_BWD),
# which says why they are what they are; the forward alone takes grid_order "heads".
# Memory ordering of the dQ atomic adds: each CTA only accumulates and nothing reads dQ before the
# kernel ends, so no ordering is needed. Triton's default, "acq_rel", fences every add: on an H100
# (fp16, N = 4096, 4 × 16 heads) the backward ran at 116 / 130 TFLOP/s (d = 64 / 128) with it and
# 258 / 337 TFLOP/s relaxed.
ATOMIC_SEM = "relaxed"
LAUNCHES: list[dict] = []


def reference(q, k, v, causal=False, sm_scale=None, block_m=128, block_n=64):
    """FA2 Algorithm 1 in torch (fp32 math): for each Q block, an online softmax over K/V blocks.

    Returns (O, LSE) with the kernel's block loop and causal block skipping.
    """
    group = q.shape[1] // k.shape[1]
    k, v = k.repeat_interleave(group, 1).float(), v.repeat_interleave(group, 1).float()
    scale = _common.default_scale(q.shape[-1], sm_scale)
    n_q, n_k = q.shape[2], k.shape[2]
    o, lse = torch.empty_like(q, dtype=torch.float32), q.new_empty(q.shape[:3], dtype=torch.float32)
    for r0 in range(0, n_q, block_m):
        rows = torch.arange(r0, min(r0 + block_m, n_q), device=q.device)
        qi = q[:, :, rows].float()
        m = torch.full(qi.shape[:3], float("-inf"), device=q.device)
        l, acc = torch.zeros_like(m), torch.zeros_like(qi)
        hi = min(r0 + block_m, n_k) if causal else n_k
        for c0 in range(0, hi, block_n):
            cols = torch.arange(c0, min(c0 + block_n, n_k), device=q.device)
            s = qi @ k[:, :, cols].transpose(-1, -2) * scale
            if causal:
                s = s.masked_fill(cols[None, :] > rows[:, None], float("-inf"))
            m_new = torch.maximum(m, s.amax(-1))
            p, alpha = torch.exp(s - m_new[..., None]), torch.exp(m - m_new)
            l, acc, m = l * alpha + p.sum(-1), acc * alpha[..., None] + p @ v[:, :, cols], m_new
        o[:, :, rows], lse[:, :, rows] = acc / l[..., None], m + torch.log(l)
    return o.to(q.dtype), lse


# ---------------------------------------------------------------------------------------------
# Forward
# ---------------------------------------------------------------------------------------------
@triton.jit
def _fwd_blocks(acc, l_i, m_i, q, k_ptrs, v_ptrs, rows, lo, hi, NK, qk_scale,
                MASK: tl.constexpr, CAUSAL: tl.constexpr, D: tl.constexpr, BM: tl.constexpr, BN: tl.constexpr,
                W, WINDOW: tl.constexpr, STRIDE: tl.constexpr):
    """Online softmax over K/V blocks [lo, hi) in BN steps: per block read BN·d of K and of V.

    ``m_i`` is in log2 units (scores times qk_scale = sm_scale · log2 e). MASK is set only for the
    blocks that cross the causal diagonal, the window's lower edge (WINDOW: row r sees keys above
    r − W) or the ragged end of K/V. Rows of K and V are STRIDE elements apart.
    """
    for start in range(lo, hi, BN):
        cols = start + tl.arange(0, BN)
        if MASK:
            k = tl.load(k_ptrs + start * STRIDE, mask=cols[:, None] < NK, other=0.0)
        else:
            k = tl.load(k_ptrs + start * STRIDE)
        s = mma(q, tl.trans(k), tl.zeros((BM, BN), dtype=tl.float32)) * qk_scale
        if MASK:
            valid = cols[None, :] < NK
            if CAUSAL:
                valid = valid & (cols[None, :] <= rows[:, None])
            if WINDOW:
                valid = valid & (cols[None, :] > rows[:, None] - W)
            s = tl.where(valid, s, float("-inf"))
        m_new = tl.maximum(m_i, tl.max(s, axis=1))
        p = tl.exp2(s - m_new[:, None])
        alpha = tl.exp2(m_i - m_new)
        l_i = l_i * alpha + tl.sum(p, axis=1)
        if MASK:
            v = tl.load(v_ptrs + start * STRIDE, mask=cols[:, None] < NK, other=0.0)
        else:
            v = tl.load(v_ptrs + start * STRIDE)
        # P is rounded to the input dtype before the PV matmul, as FlashAttention does.
        acc = mma(p.to(v.dtype), v, acc * alpha[:, None])
        m_i = m_new
    return acc, l_i, m_i


@triton.jit
def flash2_fwd(Q, K, V, O, LSE, H, HKV, NQ, NK, qk_scale, CAUSAL: tl.constexpr, HEADS_FIRST: tl.constexpr,
               D: tl.constexpr, BM: tl.constexpr, BN: tl.constexpr):
    """One (Q block, bh) per CTA: read BM·d of Q once and 2·BN·d per visited K/V block;
    write BM·d of O (dtype) and BM of LSE (fp32, natural log) once."""
    if HEADS_FIRST:  # grid (BH, Q blocks): the same Q block of every head launches together
        bh = tl.program_id(0)
        i = tl.program_id(1)
    else:  # grid (Q blocks, BH): the Q blocks of one head launch together
        i = tl.program_id(0)
        bh = tl.program_id(1)
    rows = i * BM + tl.arange(0, BM)
    ds = tl.arange(0, D)
    q_off = bh.to(tl.int64) * NQ * D + rows[:, None] * D + ds[None, :]
    kv_off = kv_row(bh, H, HKV).to(tl.int64) * NK * D + tl.arange(0, BN)[:, None] * D + ds[None, :]
    q = tl.load(Q + q_off, mask=rows[:, None] < NQ, other=0.0)
    m_i = tl.full((BM,), float("-inf"), dtype=tl.float32)
    l_i = tl.zeros((BM,), dtype=tl.float32)
    acc = tl.zeros((BM, D), dtype=tl.float32)
    if CAUSAL:
        lo = (tl.minimum(i * BM, NK) // BN) * BN  # blocks wholly left of the first row: no mask
        hi = tl.minimum((i + 1) * BM, NK)  # last block starts at or before the last row
    else:
        lo = (NK // BN) * BN  # full blocks; a ragged tail block is masked
        hi = NK
    acc, l_i, m_i = _fwd_blocks(acc, l_i, m_i, q, K + kv_off, V + kv_off, rows, 0, lo, NK, qk_scale,
                                False, CAUSAL, D, BM, BN, 0, False, D)
    acc, l_i, m_i = _fwd_blocks(acc, l_i, m_i, q, K + kv_off, V + kv_off, rows, lo, hi, NK, qk_scale,
                                True, CAUSAL, D, BM, BN, 0, False, D)
    tl.store(O + q_off, (acc / l_i[:, None]).to(O.dtype.element_ty), mask=rows[:, None] < NQ)
    lse = (m_i + tl.log2(l_i)) / LOG2E_C  # log2 units back to natural log
    tl.store(LSE + bh.to(tl.int64) * NQ + rows, lse, mask=rows < NQ)


# ---------------------------------------------------------------------------------------------
# Backward
# ---------------------------------------------------------------------------------------------
@triton.jit
def flash2_bwd_pre(O, DO, DELTA, NQ, D: tl.constexpr, BM: tl.constexpr):
    """D = rowsum(dO ∘ O). Grid (cdiv(Nq,BM), BH): read BM·d of O and of dO, write BM (fp32)."""
    rows = tl.program_id(0) * BM + tl.arange(0, BM)
    bh = tl.program_id(1).to(tl.int64)
    off = bh * NQ * D + rows[:, None] * D + tl.arange(0, D)[None, :]
    o = tl.load(O + off, mask=rows[:, None] < NQ, other=0.0).to(tl.float32)
    do = tl.load(DO + off, mask=rows[:, None] < NQ, other=0.0).to(tl.float32)
    tl.store(DELTA + bh * NQ + rows, tl.sum(o * do, axis=1), mask=rows < NQ)


@triton.jit
def _bwd_kv(Q, K, V, DO, LSE, DELTA, DQ, DK, DV, H, HKV, NQ, NK, sm_scale, CAUSAL: tl.constexpr,
            D: tl.constexpr, BM: tl.constexpr, BN: tl.constexpr, SEM: tl.constexpr, ATOMIC_DQ: tl.constexpr):
    """The backward over one K/V block (see :func:`flash2_bwd`); ``ATOMIC_DQ``: also add each dQ share into DQ."""
    j = tl.program_id(0)
    bh = tl.program_id(1)
    cols = j * BN + tl.arange(0, BN)
    ds = tl.arange(0, D)
    kv_off = kv_row(bh, H, HKV).to(tl.int64) * NK * D + cols[:, None] * D + ds[None, :]
    k = tl.load(K + kv_off, mask=cols[:, None] < NK, other=0.0)
    v = tl.load(V + kv_off, mask=cols[:, None] < NK, other=0.0)
    dk = tl.zeros((BN, D), dtype=tl.float32)
    dv = tl.zeros((BN, D), dtype=tl.float32)
    qk_scale = sm_scale * LOG2E_C
    q_base = bh.to(tl.int64) * NQ * D
    row_base = bh.to(tl.int64) * NQ
    i_start = 0
    if CAUSAL:
        i_start = (j * BN) // BM  # first Q block holding a row >= this block's first column
    for i in range(i_start, tl.cdiv(NQ, BM)):
        # Work in the transposed frame (rows of K/V by rows of Q), as the Triton tutorial does, so
        # that dV += Pᵀ dO and dK += dSᵀ Q need no register transposes of P and dS.
        rows = i * BM + tl.arange(0, BM)
        q_off = q_base + rows[:, None] * D + ds[None, :]
        q_t = tl.load(Q + q_base + rows[None, :] * D + ds[:, None], mask=rows[None, :] < NQ, other=0.0)
        do = tl.load(DO + q_off, mask=rows[:, None] < NQ, other=0.0)
        lse = tl.load(LSE + row_base + rows, mask=rows < NQ, other=0.0)
        delta = tl.load(DELTA + row_base + rows, mask=rows < NQ, other=0.0)
        s_t = mma(k, q_t, tl.zeros((BN, BM), dtype=tl.float32))
        valid = (rows[None, :] < NQ) & (cols[:, None] < NK)
        if CAUSAL:
            valid = valid & (cols[:, None] <= rows[None, :])
        p_t = tl.where(valid, tl.exp2(s_t * qk_scale - lse[None, :] * LOG2E_C), 0.0)
        dv = mma(p_t.to(do.dtype), do, dv)
        dp_t = mma(v, tl.trans(do), tl.zeros((BN, BM), dtype=tl.float32))
        ds_t = (p_t * (dp_t - delta[None, :])).to(do.dtype)
        dk = mma(ds_t, tl.trans(q_t), dk)
        if ATOMIC_DQ:
            d_q = mma(tl.trans(ds_t), k, tl.zeros((BM, D), dtype=tl.float32)) * sm_scale
            tl.atomic_add(DQ + q_off, d_q, mask=rows[:, None] < NQ, sem=SEM)
    out_off = bh.to(tl.int64) * NK * D + cols[:, None] * D + ds[None, :]
    tl.store(DK + out_off, (dk * sm_scale).to(DK.dtype.element_ty), mask=cols[:, None] < NK)
    tl.store(DV + out_off, dv.to(DV.dtype.element_ty), mask=cols[:, None] < NK)


@triton.jit
def flash2_bwd(Q, K, V, DO, LSE, DELTA, DQ, DK, DV, H, HKV, NQ, NK, sm_scale, CAUSAL: tl.constexpr,
               D: tl.constexpr, BM: tl.constexpr, BN: tl.constexpr, SEM: tl.constexpr):
    """One (K/V block j, bh) per CTA. Read BN·d of K and of V once; per visited Q block read BM·d of Q
    and of dO and BM each of LSE and D, and atomically add BM·d (fp32) into dQ; write BN·d of dK and dV."""
    _bwd_kv(Q, K, V, DO, LSE, DELTA, DQ, DK, DV, H, HKV, NQ, NK, sm_scale, CAUSAL, D, BM, BN, SEM, True)


@triton.jit
def flash2_bwd_kv(Q, K, V, DO, LSE, DELTA, DK, DV, H, HKV, NQ, NK, sm_scale, CAUSAL: tl.constexpr,
                  D: tl.constexpr, BM: tl.constexpr, BN: tl.constexpr):
    """:func:`flash2_bwd` without dQ (``dq="separate"``): write BN·d of dK and dV, nothing else."""
    # no dQ: the DQ slot takes DK, which the body never adds into when ATOMIC_DQ is off
    _bwd_kv(Q, K, V, DO, LSE, DELTA, DK, DK, DV, H, HKV, NQ, NK, sm_scale, CAUSAL, D, BM, BN, "relaxed", False)


@triton.jit
def flash2_bwd_q(Q, K, V, DO, LSE, DELTA, DQ, H, HKV, NQ, NK, sm_scale, CAUSAL: tl.constexpr,
                 D: tl.constexpr, BM: tl.constexpr, BN: tl.constexpr):
    """One (Q block i, bh) per CTA (``dq="separate"``): read BM·d of Q and of dO and BM each of LSE and D
    once, 2·BN·d per visited K/V block (causal: up to the diagonal); write BM·d of dQ once (input dtype)."""
    i = tl.program_id(0)
    bh = tl.program_id(1)
    rows = i * BM + tl.arange(0, BM)
    ds = tl.arange(0, D)
    q_off = bh.to(tl.int64) * NQ * D + rows[:, None] * D + ds[None, :]
    q = tl.load(Q + q_off, mask=rows[:, None] < NQ, other=0.0)
    do = tl.load(DO + q_off, mask=rows[:, None] < NQ, other=0.0)
    lse = tl.load(LSE + bh.to(tl.int64) * NQ + rows, mask=rows < NQ, other=0.0)
    delta = tl.load(DELTA + bh.to(tl.int64) * NQ + rows, mask=rows < NQ, other=0.0)
    kv_base = kv_row(bh, H, HKV).to(tl.int64) * NK * D
    qk_scale = sm_scale * LOG2E_C
    d_q = tl.zeros((BM, D), dtype=tl.float32)
    hi = NK
    if CAUSAL:
        hi = tl.minimum((i + 1) * BM, NK)  # the last block starts at or before the last row
    for start in range(0, hi, BN):
        cols = start + tl.arange(0, BN)
        kv_off = kv_base + cols[:, None] * D + ds[None, :]
        k = tl.load(K + kv_off, mask=cols[:, None] < NK, other=0.0)
        v = tl.load(V + kv_off, mask=cols[:, None] < NK, other=0.0)
        s = mma(q, tl.trans(k), tl.zeros((BM, BN), dtype=tl.float32))
        valid = (rows[:, None] < NQ) & (cols[None, :] < NK)
        if CAUSAL:
            valid = valid & (cols[None, :] <= rows[:, None])
        p = tl.where(valid, tl.exp2(s * qk_scale - lse[:, None] * LOG2E_C), 0.0)
        dp = mma(do, tl.trans(v), tl.zeros((BM, BN), dtype=tl.float32))
        d_s = (p * (dp - delta[:, None])).to(k.dtype)
        d_q = mma(d_s, k, d_q)
    tl.store(DQ + q_off, (d_q * sm_scale).to(DQ.dtype.element_ty), mask=rows[:, None] < NQ)


# ---------------------------------------------------------------------------------------------
# Launch wrappers
# ---------------------------------------------------------------------------------------------
def tiling(head_dim: int, dtype=None, **overrides) -> Tiling:
    """The forward's tiling: the single source's flash2 forward defaults with ``overrides`` applied."""
    return _common.pass_tiling(ALGO, FWD, head_dim, overrides)


def bwd_tiling(head_dim: int, dtype=None, **overrides) -> Tiling:
    """The backward's tiling: the single source's flash2 backward defaults with ``overrides`` applied.

    block_n is the K/V rows per CTA, block_m the Q rows per inner step. The backward grid order is
    fixed (K/V blocks of one head fastest), so a ``grid_order`` override is accepted and ignored.
    """
    return _common.pass_tiling(ALGO, BWD, head_dim, overrides)


def run_config(q, k, v, causal=False, backward=False, **overrides) -> dict:
    """The configuration ``attention(q, k, v, causal, **overrides)`` runs with: ``RunConfig.to_dict()``, resolved."""
    return _common.run_config(ALGO, q, k, v, causal, backward, overrides)


def attention(q, k, v, causal=False, sm_scale=None, **overrides):
    """softmax(sm_scale · Q Kᵀ [+ causal mask]) V with autograd; kernels recorded in ``LAUNCHES``."""
    return _Attention.apply(q, k, v, causal, sm_scale, overrides)


def forward(q, k, v, causal, scale, cfg, launches):
    """Launch ``flash2_fwd``; return O (input dtype) and LSE (B, H, Nq) fp32."""
    shape = _common.check_inputs(q, k, v, causal)
    B, H, HKV, NQ, NK, D = shape.batch, shape.heads, shape.kv_heads, shape.seq_q, shape.seq_k, shape.head_dim
    o = torch.empty_like(q)
    lse = torch.empty((B, H, NQ), device=q.device, dtype=torch.float32)
    n_blocks = triton.cdiv(NQ, cfg.block_m)
    heads_first = cfg.grid_order == "heads"
    grid = (shape.bh, n_blocks) if heads_first else (n_blocks, shape.bh)
    launch(launches, flash2_fwd, grid, q, k, v, o, lse, H, HKV, NQ, NK, scale * LOG2E,
           CAUSAL=causal, HEADS_FIRST=heads_first, D=D, BM=cfg.block_m, BN=cfg.block_n,
           num_warps=cfg.warps, num_stages=cfg.stages)
    return o, lse


def backward(do, q, k, v, o, lse, causal, scale, cfg, launches, dq="atomic"):
    """Launch the backward (memset, flash2_bwd_pre, flash2_bwd, GQA sums, dQ cast; with ``dq="separate"``
    flash2_bwd_pre, flash2_bwd_kv, flash2_bwd_q, GQA sums); return dq, dk, dv.

    Shared with flash1, whose autograd backward is this one (with LSE = m + log ℓ).
    """
    B, H, NQ, D = q.shape
    HKV, NK = k.shape[1], k.shape[2]
    BM, BN, w, st = cfg.block_m, cfg.block_n, cfg.warps, cfg.stages
    atomic = dq == "atomic"
    if atomic:
        dq_acc = torch.zeros((B, H, NQ, D), device=q.device, dtype=torch.float32)
    delta = torch.empty((B, H, NQ), device=q.device, dtype=torch.float32)
    launch(launches, flash2_bwd_pre, (triton.cdiv(NQ, BM), B * H), o, do, delta, NQ, D=D, BM=BM,
           num_warps=w, num_stages=st)
    dk_h = torch.empty((B, H, NK, D), device=q.device, dtype=q.dtype)
    dv_h = torch.empty_like(dk_h)
    if atomic:
        launch(launches, flash2_bwd, (triton.cdiv(NK, BN), B * H), q, k, v, do, lse, delta, dq_acc, dk_h, dv_h,
               H, HKV, NQ, NK, scale, CAUSAL=causal, D=D, BM=BM, BN=BN, SEM=ATOMIC_SEM, num_warps=w, num_stages=st)
        d_q = dq_acc.to(q.dtype)
    else:
        launch(launches, flash2_bwd_kv, (triton.cdiv(NK, BN), B * H), q, k, v, do, lse, delta, dk_h, dv_h,
               H, HKV, NQ, NK, scale, CAUSAL=causal, D=D, BM=BM, BN=BN, num_warps=w, num_stages=st)
        d_q = torch.empty_like(q)
        launch(launches, flash2_bwd_q, (triton.cdiv(NQ, BM), B * H), q, k, v, do, lse, delta, d_q,
               H, HKV, NQ, NK, scale, CAUSAL=causal, D=D, BM=BM, BN=BN, num_warps=w, num_stages=st)
    d_k, d_v = _common.reduce_gqa(dk_h, HKV), _common.reduce_gqa(dv_h, HKV)  # torch sums, GQA only
    return d_q, d_k, d_v


class _Attention(torch.autograd.Function):
    """Forward launches flash2_fwd (``LAUNCHES`` reset); backward appends flash2_bwd_pre, flash2_bwd (or
    flash2_bwd_kv, flash2_bwd_q with the override ``dq="separate"``)."""

    @staticmethod
    def forward(ctx, q, k, v, causal, sm_scale, overrides):
        cfg = tiling(q.shape[-1], q.dtype, **overrides)
        scale = _common.default_scale(q.shape[-1], sm_scale)
        LAUNCHES.clear()
        o, lse = forward(q, k, v, causal, scale, cfg, LAUNCHES)
        ctx.save_for_backward(q, k, v, o, lse)
        ctx.causal, ctx.scale, ctx.dq = causal, scale, _common.dq_mode(overrides)
        ctx.bwd_cfg = bwd_tiling(q.shape[-1], q.dtype, **overrides)
        return o

    @staticmethod
    def backward(ctx, do):
        q, k, v, o, lse = ctx.saved_tensors
        grads = backward(do.contiguous(), q, k, v, o, lse, ctx.causal, ctx.scale, ctx.bwd_cfg, LAUNCHES, ctx.dq)
        return *grads, None, None, None
