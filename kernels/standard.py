"""Standard attention: S = QKᵀ and P = softmax(S) materialised in HBM, one kernel per step.

FlashAttention paper Algorithm 0 (forward: ``qk``, ``softmax``, ``pv``) and Algorithm 3 (backward:
``dv``, ``dp``, ``ds``, ``dq``, ``dk``), each step a separate Triton kernel. Per (batch, head), with
N = Nq = Nk, the forward reads 3Nd + 2N² and writes Nd + 2N² elements; the backward reads
5Nd + 5N² and writes 3Nd + 2N² (plus the K/V re-reads of the tiled matmuls, counted per kernel below).
S, P, dP and dS are stored in the input dtype.
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

from iosim.kernels import _common
from iosim.kernels._common import kv_row, launch, mma
from iosim.schedule.problem import Tiling
from iosim.schedule.tiling import BWD, FWD

ALGO = "standard"  # tiles from iosim.schedule.tiling (STANDARD: one tiling for every matmul kernel)
# K-step (elements of d) of the N×N matmuls ``qk`` and ``dp``; a fixed 32, or d itself when d = 16.
BLOCK_K = 32
LAUNCHES: list[dict] = []


def reference(q, k, v, causal=False, sm_scale=None):
    """Algorithm 0 in torch, in the inputs' precision: S, P, O as three full N×N / N×d steps."""
    group = q.shape[1] // k.shape[1]
    k, v = k.repeat_interleave(group, 1), v.repeat_interleave(group, 1)
    s = (q @ k.transpose(-1, -2)) * _common.default_scale(q.shape[-1], sm_scale)
    if causal:
        s = s.masked_fill(torch.ones_like(s, dtype=torch.bool).triu(1), float("-inf"))
    return torch.softmax(s, dim=-1) @ v


# ---------------------------------------------------------------------------------------------
# Tile helpers. A is per query head (row bh); B is read through kv_row, so passing HKV = H makes
# it per query head too. All offsets of a head's first element are int64 (B·H·N² overflows int32).
# ---------------------------------------------------------------------------------------------
@triton.jit
def _nt_tile(A, B, C, H, HKV, M, N, scale, D: tl.constexpr, BM: tl.constexpr, BN: tl.constexpr, BK: tl.constexpr):
    """C tile (i, j) = scale · A[i-block, :] · B[j-block, :]ᵀ; A is M×D, B is N×D, C is M×N.

    Per CTA: read BM·D of A and BN·D of B (in D/BK steps of BM·BK and BN·BK); write BM·BN of C.
    """
    tiles_n = tl.cdiv(N, BN)
    i = tl.program_id(0) // tiles_n  # tile column j runs fastest along grid axis 0
    j = tl.program_id(0) % tiles_n
    bh = tl.program_id(1)
    rows = i * BM + tl.arange(0, BM)
    cols = j * BN + tl.arange(0, BN)
    ks = tl.arange(0, BK)
    a_ptrs = A + bh.to(tl.int64) * M * D + rows[:, None] * D + ks[None, :]
    b_ptrs = B + kv_row(bh, H, HKV).to(tl.int64) * N * D + cols[:, None] * D + ks[None, :]
    acc = tl.zeros((BM, BN), dtype=tl.float32)
    for k0 in range(0, D, BK):
        a = tl.load(a_ptrs + k0, mask=rows[:, None] < M, other=0.0)
        b = tl.load(b_ptrs + k0, mask=cols[:, None] < N, other=0.0)
        acc = mma(a, tl.trans(b), acc)
    c_ptrs = C + bh.to(tl.int64) * M * N + rows[:, None] * N + cols[None, :]
    tl.store(c_ptrs, (acc * scale).to(C.dtype.element_ty), mask=(rows[:, None] < M) & (cols[None, :] < N))


@triton.jit
def _nn_rows(A, B, C, H, HKV, M, N, scale, D: tl.constexpr, BM: tl.constexpr, BK: tl.constexpr):
    """C[i-block] = scale · A[i-block, :] · B; A is M×N, B is N×D, C is M×D.

    Per CTA: read BM·N of A and N·D of B (in cdiv(N, BK) steps of BM·BK and BK·D); write BM·D of C.
    """
    i = tl.program_id(0)
    bh = tl.program_id(1)
    rows = i * BM + tl.arange(0, BM)
    ks = tl.arange(0, BK)
    ds = tl.arange(0, D)
    a_ptrs = A + bh.to(tl.int64) * M * N + rows[:, None] * N + ks[None, :]
    b_ptrs = B + kv_row(bh, H, HKV).to(tl.int64) * N * D + ks[:, None] * D + ds[None, :]
    acc = tl.zeros((BM, D), dtype=tl.float32)
    for k0 in range(0, N, BK):
        kin = (k0 + ks) < N
        a = tl.load(a_ptrs + k0, mask=(rows[:, None] < M) & kin[None, :], other=0.0)
        b = tl.load(b_ptrs + k0 * D, mask=kin[:, None], other=0.0)
        acc = mma(a, b, acc)
    c_ptrs = C + bh.to(tl.int64) * M * D + rows[:, None] * D + ds[None, :]
    tl.store(c_ptrs, (acc * scale).to(C.dtype.element_ty), mask=rows[:, None] < M)


@triton.jit
def _tn_rows(A, B, C, M, N, scale, D: tl.constexpr, BM: tl.constexpr, BK: tl.constexpr):
    """C[j-block] = scale · A[:, j-block]ᵀ · B; A is M×N, B is M×D, C is N×D (all per query head).

    Per CTA: read M·BM of A (the Aᵀ tile, in cdiv(M, BK) steps of BK·BM) and M·D of B; write BM·D of C.
    """
    j = tl.program_id(0)
    bh = tl.program_id(1)
    cols = j * BM + tl.arange(0, BM)
    ks = tl.arange(0, BK)
    ds = tl.arange(0, D)
    a_ptrs = A + bh.to(tl.int64) * M * N + ks[:, None] * N + cols[None, :]
    b_ptrs = B + bh.to(tl.int64) * M * D + ks[:, None] * D + ds[None, :]
    acc = tl.zeros((BM, D), dtype=tl.float32)
    for k0 in range(0, M, BK):
        kin = (k0 + ks) < M
        a = tl.load(a_ptrs + k0 * N, mask=kin[:, None] & (cols[None, :] < N), other=0.0)
        b = tl.load(b_ptrs + k0 * D, mask=kin[:, None], other=0.0)
        acc = mma(tl.trans(a), b, acc)
    c_ptrs = C + bh.to(tl.int64) * N * D + cols[:, None] * D + ds[None, :]
    tl.store(c_ptrs, (acc * scale).to(C.dtype.element_ty), mask=cols[:, None] < N)


# ---------------------------------------------------------------------------------------------
# Kernels, in launch order. Each is a thin named entry point so profilers show the step's name.
# ---------------------------------------------------------------------------------------------
@triton.jit
def qk(Q, K, S, H, HKV, NQ, NK, sm_scale, D: tl.constexpr, BM: tl.constexpr, BN: tl.constexpr, BK: tl.constexpr):
    """S = sm_scale · Q Kᵀ. Grid (tiles of S row-major, BH). Reads Nq·d·cdiv(Nk,BN) + Nk·d·cdiv(Nq,BM); writes Nq·Nk."""
    _nt_tile(Q, K, S, H, HKV, NQ, NK, sm_scale, D, BM, BN, BK)


@triton.jit
def softmax(S, P, NQ, NK, CAUSAL: tl.constexpr, BLOCK: tl.constexpr):
    """P row r = softmax(S row r), causal mask applied here. Grid (Nq, BH). Reads Nk, writes Nk per CTA."""
    r = tl.program_id(0)
    base = (tl.program_id(1).to(tl.int64) * NQ + r) * NK
    cols = tl.arange(0, BLOCK)
    s = tl.load(S + base + cols, mask=cols < NK, other=float("-inf")).to(tl.float32)
    if CAUSAL:
        s = tl.where(cols <= r, s, float("-inf"))
    e = tl.exp(s - tl.max(s, axis=0))
    tl.store(P + base + cols, (e / tl.sum(e, axis=0)).to(P.dtype.element_ty), mask=cols < NK)


@triton.jit
def pv(P, V, O, H, HKV, NQ, NK, D: tl.constexpr, BM: tl.constexpr, BK: tl.constexpr):
    """O = P V. Grid (cdiv(Nq,BM), BH). Reads Nq·Nk of P + Nk·d·cdiv(Nq,BM) of V; writes Nq·d."""
    _nn_rows(P, V, O, H, HKV, NQ, NK, 1.0, D, BM, BK)


@triton.jit
def dv(P, DO, DV, NQ, NK, D: tl.constexpr, BM: tl.constexpr, BK: tl.constexpr):
    """dV (per query head) = Pᵀ dO. Grid (cdiv(Nk,BM), BH). Reads Nq·Nk + Nq·d·cdiv(Nk,BM); writes Nk·d."""
    _tn_rows(P, DO, DV, NQ, NK, 1.0, D, BM, BK)


@triton.jit
def dp(DO, V, DP, H, HKV, NQ, NK, D: tl.constexpr, BM: tl.constexpr, BN: tl.constexpr, BK: tl.constexpr):
    """dP = dO Vᵀ, the structure of ``qk``. Writes Nq·Nk."""
    _nt_tile(DO, V, DP, H, HKV, NQ, NK, 1.0, D, BM, BN, BK)


@triton.jit
def ds(P, DP, DS, NK, BLOCK: tl.constexpr):
    """dS row = P ∘ (dP − rowsum(P ∘ dP)). Grid (Nq, BH). Reads 2·Nk, writes Nk per CTA."""
    base = (tl.program_id(1).to(tl.int64) * tl.num_programs(0) + tl.program_id(0)) * NK
    cols = tl.arange(0, BLOCK)
    p = tl.load(P + base + cols, mask=cols < NK, other=0.0).to(tl.float32)
    d_p = tl.load(DP + base + cols, mask=cols < NK, other=0.0).to(tl.float32)
    d_s = p * (d_p - tl.sum(p * d_p, axis=0))
    tl.store(DS + base + cols, d_s.to(DS.dtype.element_ty), mask=cols < NK)


@triton.jit
def dq(DS, K, DQ, H, HKV, NQ, NK, sm_scale, D: tl.constexpr, BM: tl.constexpr, BK: tl.constexpr):
    """dQ = sm_scale · dS K, the structure of ``pv``."""
    _nn_rows(DS, K, DQ, H, HKV, NQ, NK, sm_scale, D, BM, BK)


@triton.jit
def dk(DS, Q, DK, NQ, NK, sm_scale, D: tl.constexpr, BM: tl.constexpr, BK: tl.constexpr):
    """dK (per query head) = sm_scale · dSᵀ Q, the structure of ``dv``."""
    _tn_rows(DS, Q, DK, NQ, NK, sm_scale, D, BM, BK)


# ---------------------------------------------------------------------------------------------
# Launch wrappers
# ---------------------------------------------------------------------------------------------
def tiling(head_dim: int, dtype=None, **overrides) -> Tiling:
    """The forward matmul kernels' tiling: the single source's defaults with ``overrides`` (softmax picks its own warps)."""
    return _common.pass_tiling(ALGO, FWD, head_dim, overrides)


def bwd_tiling(head_dim: int, dtype=None, **overrides) -> Tiling:
    """The backward matmul kernels' tiling: the single source's defaults with ``overrides`` (ds picks its own warps)."""
    return _common.pass_tiling(ALGO, BWD, head_dim, overrides)


def run_config(q, k, v, causal=False, backward=False, **overrides) -> dict:
    """The configuration ``attention(q, k, v, causal, **overrides)`` runs with: ``RunConfig.to_dict()``, resolved."""
    return _common.run_config(ALGO, q, k, v, causal, backward, overrides)


def row_warps(n_cols: int) -> tuple[int, int]:
    """(BLOCK, warps) of the one-row-per-CTA kernels: the whole row in registers, 4..16 warps."""
    block = triton.next_power_of_2(n_cols)
    return block, min(16, max(4, block // 1024))


def attention(q, k, v, causal=False, sm_scale=None, **overrides):
    """softmax(sm_scale · Q Kᵀ [+ causal mask]) V with autograd; kernels recorded in ``LAUNCHES``."""
    return _Attention.apply(q, k, v, causal, sm_scale, overrides)


def _forward(q, k, v, causal, scale, cfg):
    shape = _common.check_inputs(q, k, v, causal)
    B, H, HKV, NQ, NK, D = shape.batch, shape.heads, shape.kv_heads, shape.seq_q, shape.seq_k, shape.head_dim
    BM, BN, bk = cfg.block_m, cfg.block_n, min(BLOCK_K, D)
    w, st = cfg.warps, cfg.stages
    s = torch.empty((B, H, NQ, NK), device=q.device, dtype=q.dtype)
    launch(LAUNCHES, qk, (triton.cdiv(NQ, BM) * triton.cdiv(NK, BN), shape.bh), q, k, s, H, HKV, NQ, NK, scale,
           D=D, BM=BM, BN=BN, BK=bk, num_warps=w, num_stages=st)
    p = torch.empty_like(s)
    block, row_w = row_warps(NK)
    launch(LAUNCHES, softmax, (NQ, shape.bh), s, p, NQ, NK, CAUSAL=causal, BLOCK=block, num_warps=row_w, num_stages=st)
    del s
    o = torch.empty_like(q)
    launch(LAUNCHES, pv, (triton.cdiv(NQ, BM), shape.bh), p, v, o, H, HKV, NQ, NK,
           D=D, BM=BM, BK=BN, num_warps=w, num_stages=st)
    return o, p


def _backward(do, q, k, v, p, scale, cfg):
    B, H, NQ, D = q.shape
    HKV, NK = k.shape[1], k.shape[2]
    BM, BN, w, st = cfg.block_m, cfg.block_n, cfg.warps, cfg.stages
    bh = B * H
    dv_h = torch.empty((B, H, NK, D), device=q.device, dtype=q.dtype)
    launch(LAUNCHES, dv, (triton.cdiv(NK, BM), bh), p, do, dv_h, NQ, NK, D=D, BM=BM, BK=BN, num_warps=w, num_stages=st)
    d_p = torch.empty_like(p)
    launch(LAUNCHES, dp, (triton.cdiv(NQ, BM) * triton.cdiv(NK, BN), bh), do, v, d_p, H, HKV, NQ, NK,
           D=D, BM=BM, BN=BN, BK=min(BLOCK_K, D), num_warps=w, num_stages=st)
    d_s = torch.empty_like(p)
    block, row_w = row_warps(NK)
    launch(LAUNCHES, ds, (NQ, bh), p, d_p, d_s, NK, BLOCK=block, num_warps=row_w, num_stages=st)
    del d_p
    d_q = torch.empty_like(q)
    launch(LAUNCHES, dq, (triton.cdiv(NQ, BM), bh), d_s, k, d_q, H, HKV, NQ, NK, scale,
           D=D, BM=BM, BK=BN, num_warps=w, num_stages=st)
    dk_h = torch.empty((B, H, NK, D), device=q.device, dtype=q.dtype)
    launch(LAUNCHES, dk, (triton.cdiv(NK, BM), bh), d_s, q, dk_h, NQ, NK, scale,
           D=D, BM=BM, BK=BN, num_warps=w, num_stages=st)
    return d_q, _common.reduce_gqa(dk_h, HKV), _common.reduce_gqa(dv_h, HKV)


class _Attention(torch.autograd.Function):
    """Forward launches qk, softmax, pv (``LAUNCHES`` reset); backward appends dv, dp, ds, dq, dk."""

    @staticmethod
    def forward(ctx, q, k, v, causal, sm_scale, overrides):
        cfg = tiling(q.shape[-1], q.dtype, **overrides)
        scale = _common.default_scale(q.shape[-1], sm_scale)
        LAUNCHES.clear()
        o, p = _forward(q, k, v, causal, scale, cfg)
        ctx.save_for_backward(q, k, v, p)
        ctx.scale, ctx.bwd_cfg = scale, bwd_tiling(q.shape[-1], q.dtype, **overrides)
        return o

    @staticmethod
    def backward(ctx, do):
        q, k, v, p = ctx.saved_tensors
        d_q, d_k, d_v = _backward(do.contiguous(), q, k, v, p, ctx.scale, ctx.bwd_cfg)
        return d_q, d_k, d_v, None, None, None
