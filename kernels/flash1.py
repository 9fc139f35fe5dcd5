"""FlashAttention-1 forward (paper Algorithm 1): K/V blocks outer, Q blocks inner, O, ℓ and m kept in HBM.

One CTA per (batch, head), as FlashAttention-1 parallelises. For every K/V block j (read once) the
CTA walks the Q blocks i, reading Q_i, O_i (fp32), ℓ_i, m_i and writing O_i, ℓ_i, m_i back: per
(batch, head) that is T_c = cdiv(Nk, BN) passes over Q and O. Before the kernel, torch fills O (fp32
zeros), ℓ (zeros) and m (−∞); after it, one torch copy casts O to the input dtype.

There is no FlashAttention-1 backward kernel here: the autograd backward is FlashAttention-2's
(``flash2.backward``), fed with LSE = m + log ℓ by one small elementwise kernel, ``flash1_lse``.
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

from iosim.kernels import _common, flash2
from iosim.kernels._common import kv_row, launch, mma
from iosim.schedule.problem import Tiling
from iosim.schedule.tiling import BWD, FWD

ALGO = "flash1"
# Tiles come from iosim.schedule.tiling (FLASH1 for the forward: B_c = block_n K/V rows per outer
# step, B_r = block_m Q rows per inner step; FLASH2_BWD for the backward, which is flash2's).
LSE_BLOCK = 1024  # rows per CTA of flash1_lse
LAUNCHES: list[dict] = []


def reference(q, k, v, causal=False, sm_scale=None, block_m=64, block_n=128):
    """Algorithm 1 in torch (fp32 math) with the kernel's loop order and causal block skipping."""
    group = q.shape[1] // k.shape[1]
    k, v = k.repeat_interleave(group, 1).float(), v.repeat_interleave(group, 1).float()
    scale = _common.default_scale(q.shape[-1], sm_scale)
    n_q, n_k = q.shape[2], k.shape[2]
    o = torch.zeros_like(q, dtype=torch.float32)
    l = torch.zeros(q.shape[:3], device=q.device)
    m = torch.full(q.shape[:3], float("-inf"), device=q.device)
    for c0 in range(0, n_k, block_n):
        cols = torch.arange(c0, min(c0 + block_n, n_k), device=q.device)
        kj, vj = k[:, :, cols], v[:, :, cols]
        for r0 in range((c0 // block_m) * block_m if causal else 0, n_q, block_m):
            rows = torch.arange(r0, min(r0 + block_m, n_q), device=q.device)
            s = q[:, :, rows].float() @ kj.transpose(-1, -2) * scale
            if causal:
                s = s.masked_fill(cols[None, :] > rows[:, None], float("-inf"))
            m_t = s.amax(-1)
            p = torch.exp(s - torch.where(m_t == float("-inf"), 0.0, m_t)[..., None])
            mi, li = m[:, :, rows], l[:, :, rows]
            m_new = torch.maximum(mi, m_t)
            alpha, beta = torch.exp(mi - m_new), torch.exp(m_t - m_new)
            l_new = alpha * li + beta * p.sum(-1)
            o[:, :, rows] = ((li * alpha)[..., None] * o[:, :, rows] + beta[..., None] * (p @ vj)) / l_new[..., None]
            l[:, :, rows], m[:, :, rows] = l_new, m_new
    return o.to(q.dtype), l, m


@triton.jit
def flash1_fwd(Q, K, V, O, L, M, H, HKV, NQ, NK, sm_scale, CAUSAL: tl.constexpr,
               D: tl.constexpr, BM: tl.constexpr, BN: tl.constexpr):
    """One bh per CTA. Per K/V block: read BN·d of K and of V. Per (K/V block, Q block): read BM·d of Q,
    BM·d of O (fp32), BM each of ℓ and m; write BM·d of O (fp32), BM each of ℓ and m."""
    bh = tl.program_id(0)
    ds = tl.arange(0, D)
    kv_base = kv_row(bh, H, HKV).to(tl.int64) * NK * D
    q_base = bh.to(tl.int64) * NQ * D
    row_base = bh.to(tl.int64) * NQ
    for j in range(0, tl.cdiv(NK, BN)):
        cols = j * BN + tl.arange(0, BN)
        kv_off = kv_base + cols[:, None] * D + ds[None, :]
        k = tl.load(K + kv_off, mask=cols[:, None] < NK, other=0.0)
        v = tl.load(V + kv_off, mask=cols[:, None] < NK, other=0.0)
        i_start = 0
        if CAUSAL:
            i_start = (j * BN) // BM  # Q blocks wholly above the diagonal are skipped
        for i in range(i_start, tl.cdiv(NQ, BM)):
            rows = i * BM + tl.arange(0, BM)
            q_off = q_base + rows[:, None] * D + ds[None, :]
            q = tl.load(Q + q_off, mask=rows[:, None] < NQ, other=0.0)
            o = tl.load(O + q_off, mask=rows[:, None] < NQ, other=0.0)
            l_i = tl.load(L + row_base + rows, mask=rows < NQ, other=0.0)
            m_i = tl.load(M + row_base + rows, mask=rows < NQ, other=float("-inf"))
            s = mma(q, tl.trans(k), tl.zeros((BM, BN), dtype=tl.float32)) * sm_scale
            valid = cols[None, :] < NK
            if CAUSAL:
                valid = valid & (cols[None, :] <= rows[:, None])
            s = tl.where(valid, s, float("-inf"))
            m_t = tl.max(s, axis=1)
            # a row wholly masked in this block has m̃ = −∞; it then contributes P̃ = 0, ℓ̃ = 0
            p = tl.exp(s - tl.where(m_t == float("-inf"), 0.0, m_t)[:, None])
            m_new = tl.maximum(m_i, m_t)
            alpha = tl.exp(m_i - m_new)
            beta = tl.exp(m_t - m_new)
            l_new = alpha * l_i + beta * tl.sum(p, axis=1)
            # P̃ is rounded to the input dtype before the PV matmul, as FlashAttention does.
            pv = mma(p.to(v.dtype), v, tl.zeros((BM, D), dtype=tl.float32))
            o = ((l_i * alpha)[:, None] * o + beta[:, None] * pv) / l_new[:, None]
            tl.store(O + q_off, o, mask=rows[:, None] < NQ)
            tl.store(L + row_base + rows, l_new, mask=rows < NQ)
            tl.store(M + row_base + rows, m_new, mask=rows < NQ)


@triton.jit
def flash1_lse(M, L, LSE, n, BLOCK: tl.constexpr):
    """LSE = m + log ℓ for flash2's backward, elementwise over B·H·Nq: read 2, write 1 fp32 per row."""
    offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    m = tl.load(M + offs, mask=offs < n, other=0.0)
    l_i = tl.load(L + offs, mask=offs < n, other=1.0)
    tl.store(LSE + offs, m + tl.log(l_i), mask=offs < n)


def tiling(head_dim: int, dtype=None, **overrides) -> Tiling:
    """The forward's tiling: the single source's flash1 defaults with ``overrides`` applied."""
    return _common.pass_tiling(ALGO, FWD, head_dim, overrides)


def bwd_tiling(head_dim: int, dtype=None, **overrides) -> Tiling:
    """The backward's tiling (flash2's kernels): the single source's flash1 backward defaults with ``overrides``."""
    return _common.pass_tiling(ALGO, BWD, head_dim, overrides)


def run_config(q, k, v, causal=False, backward=False, **overrides) -> dict:
    """The configuration ``attention(q, k, v, causal, **overrides)`` runs with: ``RunConfig.to_dict()``, resolved.

    With ``backward`` the algo stays "flash1" although the backward kernels are flash2's; its
    ``backward_tiling`` is what they launch with.
    """
    return _common.run_config(ALGO, q, k, v, causal, backward, overrides)


def attention(q, k, v, causal=False, sm_scale=None, **overrides):
    """softmax(sm_scale · Q Kᵀ [+ causal mask]) V with autograd; kernels recorded in ``LAUNCHES``."""
    return _Attention.apply(q, k, v, causal, sm_scale, overrides)


def _forward(q, k, v, causal, scale, cfg):
    shape = _common.check_inputs(q, k, v, causal)
    B, H, HKV, NQ, NK, D = shape.batch, shape.heads, shape.kv_heads, shape.seq_q, shape.seq_k, shape.head_dim
    o32 = torch.zeros((B, H, NQ, D), device=q.device, dtype=torch.float32)
    l = torch.zeros((B, H, NQ), device=q.device, dtype=torch.float32)
    m = torch.full((B, H, NQ), float("-inf"), device=q.device, dtype=torch.float32)
    launch(LAUNCHES, flash1_fwd, (shape.bh,), q, k, v, o32, l, m, H, HKV, NQ, NK, scale,
           CAUSAL=causal, D=D, BM=cfg.block_m, BN=cfg.block_n, num_warps=cfg.warps, num_stages=cfg.stages)
    return o32.to(q.dtype), l, m


class _Attention(torch.autograd.Function):
    """Forward launches flash1_fwd (``LAUNCHES`` reset); backward appends flash1_lse and flash2's kernels."""

    @staticmethod
    def forward(ctx, q, k, v, causal, sm_scale, overrides):
        cfg = tiling(q.shape[-1], q.dtype, **overrides)
        scale = _common.default_scale(q.shape[-1], sm_scale)
        LAUNCHES.clear()
        o, l, m = _forward(q, k, v, causal, scale, cfg)
        ctx.save_for_backward(q, k, v, o, l, m)
        ctx.causal, ctx.scale, ctx.dq = causal, scale, _common.dq_mode(overrides)
        ctx.bwd_cfg = bwd_tiling(q.shape[-1], q.dtype, **overrides)
        return o

    @staticmethod
    def backward(ctx, do):
        q, k, v, o, l, m = ctx.saved_tensors
        lse = torch.empty_like(m)
        launch(LAUNCHES, flash1_lse, (triton.cdiv(m.numel(), LSE_BLOCK),), m, l, lse, m.numel(), BLOCK=LSE_BLOCK,
               num_warps=4, num_stages=1)
        grads = flash2.backward(do.contiguous(), q, k, v, o, lse, ctx.causal, ctx.scale, ctx.bwd_cfg, LAUNCHES,
                                ctx.dq)
        return *grads, None, None, None
