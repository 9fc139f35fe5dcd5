"""FlashAttention forward for Hopper (sm_90): Q, K, V and O moved by TMA through tensor descriptors.

The schedule is FlashAttention-2's forward (one CTA per Q block and batch·head, K/V streamed,
O and LSE written once), but every tile is a TMA bulk copy of a ``[1, rows, d]`` box of a 3-D
descriptor over ``(batch·heads, N, d)``: no address arithmetic in the loop, no L1, and the hardware
clips a box at the end of its head (the loads of a ragged last block read zeros, its stores are
dropped), so N need not be a multiple of the tiles. With a deeper software pipeline (3 stages
by default) Triton issues the copies ahead and multiplies with wgmma.

fp8 (e4m3): Q, K and V quantised with per-tensor scales (``quantize``); S = Q Kᵀ and P V run on
fp8 tensor cores with P (in [0, 1]) rounded to e4m3, and the scales are applied to S and to O.
Hopper's fp8 wgmma wants both operands K-major, so V is passed transposed, ``(B, Hkv, d, Nk)``
(``quantize`` returns it so), as FlashAttention-3 does.

Backward (fp16/bf16): FlashAttention-2's backward schedule (one CTA per K/V block and query head, Q,
dO streamed, dK and dV written once, dQ atomically added in fp32), every tile a TMA box: ``hopper_bwd``
after ``flash2_bwd_pre`` (D = rowsum(dO ∘ O)); with ``dq_tma`` the dQ adds are TMA reductions of whole
boxes (``cp.reduce.async.bulk``) rather than per-element atomics. ``fwd`` is the autograd function.

Layout: q (B, H, Nq, d), k and v (B, Hkv, Nk, d) contiguous; query head h reads key/value head
``h // (H // Hkv)``.
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl
from triton.tools.tensor_descriptor import TensorDescriptor

from iosim.kernels import _common
from iosim.kernels._common import LOG2E, LOG2E_C, kv_row, launch, mma
from iosim.kernels.flash2 import flash2_bwd_pre

ALGO = "flash_hopper"
FP8 = torch.float8_e4m3fn
FP8_MAX = 448.0  # the largest finite e4m3 value
# tiles (block_m, block_n, warps, stages) by head dim: two warpgroups on 128 query rows, a
# three-deep pipeline of K/V boxes: the fastest of 10 tilings tried at d = 128 on the H200
# (experiments/measurements/h200/hopper/tiles_*.txt); d = 64 takes the same, not swept
TILES = {64: (128, 128, 8, 3), 128: (128, 128, 8, 3)}
# backward tiles (block_m Q rows a step, block_n K/V rows a CTA, warps, stages): FlashAttention-3's
# 64 x 128 with two warpgroups on the CTA's K/V rows and a three-deep pipeline of Q/dO boxes, the fastest
# of 8 tried at d = 128 on the H200 (experiments/measurements/h200/hopper/bwd_tiles_d128.txt; TMA dQ
# reductions were slower than per-element atomics); d = 64 takes the same, not swept
BWD_TILES = {64: (64, 128, 8, 3), 128: (64, 128, 8, 3)}
LAUNCHES: list[dict] = []


@triton.jit
def _blocks(acc, l_i, m_i, q, desc_k, desc_v, kv, rows, lo, hi, NK, qk_scale,
            MASK: tl.constexpr, CAUSAL: tl.constexpr, D: tl.constexpr, BM: tl.constexpr, BN: tl.constexpr,
            V_T: tl.constexpr, WS: tl.constexpr):
    """Online softmax over K/V blocks [lo, hi): per block one TMA box of K and one of V (of Vᵀ with V_T).

    ``m_i`` is in log2 units. MASK: blocks crossing the causal diagonal or the end of K/V. WS: ask
    Triton to warp-specialise the loop (producer warps issuing the copies, consumers computing)."""
    for start in tl.range(lo, hi, BN, warp_specialize=WS):
        k = desc_k.load([kv, start, 0]).reshape(BN, D)
        s = mma(q, tl.trans(k), tl.zeros((BM, BN), dtype=tl.float32)) * qk_scale
        if MASK:
            cols = start + tl.arange(0, BN)
            valid = cols[None, :] < NK
            if CAUSAL:
                valid = valid & (cols[None, :] <= rows[:, None])
            s = tl.where(valid, s, float("-inf"))
        m_new = tl.maximum(m_i, tl.max(s, axis=1))
        p = tl.exp2(s - m_new[:, None])
        alpha = tl.exp2(m_i - m_new)
        l_i = l_i * alpha + tl.sum(p, axis=1)
        if V_T:  # fp8: Vᵀ boxes (d × BN), the K-major operand fp8 wgmma takes
            v = tl.trans(desc_v.load([kv, 0, start]).reshape(D, BN))
        else:
            v = desc_v.load([kv, start, 0]).reshape(BN, D)
        acc = mma(p.to(v.dtype), v, acc * alpha[:, None])
        m_i = m_new
    return acc, l_i, m_i


@triton.jit
def hopper_fwd(desc_q, desc_k, desc_v, desc_o, LSE, H, HKV, NQ, NK, qk_scale, o_scale,
               CAUSAL: tl.constexpr, D: tl.constexpr, BM: tl.constexpr, BN: tl.constexpr, V_T: tl.constexpr,
               WS: tl.constexpr):
    """One (Q block i, bh) per CTA, grid (cdiv(Nq, BM), B·H): a BM·d box of Q once, a BN·d box of K and of V
    per visited block, a BM·d box of O (``o_scale`` times the normalised sum) and BM fp32 of LSE once."""
    i = tl.program_id(0)
    bh = tl.program_id(1)
    kv = kv_row(bh, H, HKV)
    rows = i * BM + tl.arange(0, BM)
    q = desc_q.load([bh, i * BM, 0]).reshape(BM, D)
    m_i = tl.full((BM,), float("-inf"), dtype=tl.float32)
    l_i = tl.zeros((BM,), dtype=tl.float32)
    acc = tl.zeros((BM, D), dtype=tl.float32)
    if CAUSAL:
        lo = (tl.minimum(i * BM, NK) // BN) * BN  # blocks wholly left of the first row: no mask
        hi = tl.minimum((i + 1) * BM, NK)
    else:
        lo = (NK // BN) * BN  # whole blocks; a ragged last block is masked
        hi = NK
    acc, l_i, m_i = _blocks(acc, l_i, m_i, q, desc_k, desc_v, kv, rows, 0, lo, NK, qk_scale,
                            False, CAUSAL, D, BM, BN, V_T, WS)
    acc, l_i, m_i = _blocks(acc, l_i, m_i, q, desc_k, desc_v, kv, rows, lo, hi, NK, qk_scale,
                            True, CAUSAL, D, BM, BN, V_T, WS)
    out = acc * (o_scale / l_i)[:, None]
    desc_o.store([bh, i * BM, 0], out.to(desc_o.dtype).reshape(1, BM, D))
    lse = (m_i + tl.log2(l_i)) / LOG2E_C
    tl.store(LSE + bh.to(tl.int64) * NQ + rows, lse, mask=rows < NQ)


@triton.jit
def _bwd_blocks(dk, dv, k, v, desc_q, desc_do, desc_dq, LSE, DELTA, DQ, bh, cols, lo, hi, NQ, sm_scale,
                MASK: tl.constexpr, D: tl.constexpr, BM: tl.constexpr, BN: tl.constexpr, DQ_TMA: tl.constexpr):
    """dK, dV of one K/V block over Q blocks [lo, hi) (rows), adding each block's dQ into the fp32 accumulator.

    In the transposed frame (K/V rows by Q rows): Sᵀ = K Qᵀ, Pᵀ from the saved LSE, dV += Pᵀ dO,
    dPᵀ = V dOᵀ, dSᵀ = Pᵀ ∘ (dPᵀ − D), dK += dSᵀ Q, dQ += dS K. Rows past Nq load as zeros (TMA) with LSE
    and D 0, so their dS is 0; key columns past Nk only reach rows the stores clip. MASK: the causal diagonal."""
    qk_scale = sm_scale * LOG2E_C
    row_base = bh.to(tl.int64) * NQ
    for start in tl.range(lo, hi, BM):
        rows = start + tl.arange(0, BM)
        q = desc_q.load([bh, start, 0]).reshape(BM, D)
        do = desc_do.load([bh, start, 0]).reshape(BM, D)
        lse = tl.load(LSE + row_base + rows, mask=rows < NQ, other=0.0)
        delta = tl.load(DELTA + row_base + rows, mask=rows < NQ, other=0.0)
        s_t = mma(k, tl.trans(q), tl.zeros((BN, BM), dtype=tl.float32))
        p_t = tl.exp2(s_t * qk_scale - lse[None, :] * LOG2E_C)
        if MASK:
            p_t = tl.where(cols[:, None] <= rows[None, :], p_t, 0.0)
        dv = mma(p_t.to(do.dtype), do, dv)
        dp_t = mma(v, tl.trans(do), tl.zeros((BN, BM), dtype=tl.float32))
        ds_t = (p_t * (dp_t - delta[None, :])).to(do.dtype)
        dk = mma(ds_t, q, dk)
        d_q = mma(tl.trans(ds_t), k, tl.zeros((BM, D), dtype=tl.float32)) * sm_scale
        if DQ_TMA:
            desc_dq.atomic_add([bh, start, 0], d_q.reshape(1, BM, D))
        else:
            off = row_base * D + rows[:, None] * D + tl.arange(0, D)[None, :]
            tl.atomic_add(DQ + off, d_q, mask=rows[:, None] < NQ, sem="relaxed")
    return dk, dv


@triton.jit
def hopper_bwd(desc_q, desc_k, desc_v, desc_do, desc_dq, desc_dk, desc_dv, LSE, DELTA, DQ, H, HKV, NQ, NK, sm_scale,
               CAUSAL: tl.constexpr, D: tl.constexpr, BM: tl.constexpr, BN: tl.constexpr, DQ_TMA: tl.constexpr):
    """One (K/V block j, query head bh) per CTA, grid (cdiv(Nk, BN), B·H): a BN·d box of K and of V once; per
    visited Q block a BM·d box of Q and of dO, BM fp32 of LSE and D, BM·d fp32 added into dQ; a BN·d box of
    dK and of dV (this query head's share) once. Causal: Q blocks from the diagonal on, masked up to the
    block holding the K/V block's last column."""
    j = tl.program_id(0)
    bh = tl.program_id(1)
    kv = kv_row(bh, H, HKV)
    cols = j * BN + tl.arange(0, BN)
    k = desc_k.load([kv, j * BN, 0]).reshape(BN, D)
    v = desc_v.load([kv, j * BN, 0]).reshape(BN, D)
    dk = tl.zeros((BN, D), dtype=tl.float32)
    dv = tl.zeros((BN, D), dtype=tl.float32)
    end = tl.cdiv(NQ, BM) * BM
    lo = 0
    mid = 0
    if CAUSAL:
        lo = tl.minimum((j * BN // BM) * BM, end)
        mid = tl.minimum(tl.cdiv((j + 1) * BN, BM) * BM, end)
    dk, dv = _bwd_blocks(dk, dv, k, v, desc_q, desc_do, desc_dq, LSE, DELTA, DQ, bh, cols, lo, mid, NQ, sm_scale,
                         True, D, BM, BN, DQ_TMA)
    dk, dv = _bwd_blocks(dk, dv, k, v, desc_q, desc_do, desc_dq, LSE, DELTA, DQ, bh, cols, mid, end, NQ, sm_scale,
                         False, D, BM, BN, DQ_TMA)
    desc_dk.store([bh, j * BN, 0], (dk * sm_scale).to(desc_dk.dtype).reshape(1, BN, D))
    desc_dv.store([bh, j * BN, 0], dv.to(desc_dv.dtype).reshape(1, BN, D))


def quantize(x: torch.Tensor, transpose: bool = False) -> tuple[torch.Tensor, float]:
    """``x`` in e4m3 with one per-tensor scale (amax / 448): returns (x8, scale), x ≈ x8 · scale. With
    ``transpose`` the last two dims are swapped, as the fp8 forward takes V: a view of rows padded to
    16 bytes (TMA's stride alignment), so any N works."""
    scale = max(float(x.abs().amax()), 1e-12) / FP8_MAX
    x8 = (x.float() / scale).to(FP8)
    if not transpose:
        return x8, scale
    n = x8.shape[-2]
    padded = x8.new_zeros((*x8.shape[:-2], x8.shape[-1], -(-n // 16) * 16))
    padded[..., :n] = x8.transpose(-1, -2)
    return padded[..., :n], scale


def attention(q, k, v, causal=False, sm_scale=None, block_m=None, block_n=None, warps=None, stages=None,
              scales=None, out_dtype=torch.float16, warp_specialize=False):
    """softmax(sm_scale · Q Kᵀ [+ causal mask]) V and the LSE (B, H, Nq) fp32, forward only.

    fp16/bf16: q, k, v (B, H|Hkv, N, d). fp8: q, k (B, H|Hkv, N, d) and v transposed (B, Hkv, d, Nk), all
    e4m3, with ``scales`` = (q, k, v) per-tensor scales (:func:`quantize`); O is ``out_dtype``.
    ``warp_specialize``: Triton's warp specialisation of the K/V loop, where this Triton has it for sm_90."""
    fp8 = q.dtype == FP8
    if fp8:
        if scales is None or len(scales) != 3:
            raise ValueError("scales must be (q_scale, k_scale, v_scale) for fp8 inputs")
        if k.dtype != FP8 or v.dtype != FP8 or not (q.is_contiguous() and k.is_contiguous() and _rows_aligned(v)):
            raise ValueError("fp8 q, k and v must be float8_e4m3fn, q and k contiguous, v transposed (B, Hkv, d, Nk) "
                             "with rows 16-byte aligned (quantize(v, transpose=True))")
        # the shared checks (shapes, GQA, causal N) on fp16 stand-ins of the logical shapes
        _common.check_inputs(*(torch.empty(t.shape, dtype=torch.float16, device="meta")
                               for t in (q, k, v.transpose(-1, -2))), causal)
    else:
        _common.check_inputs(q, k, v, causal)
    B, H, NQ, D = q.shape
    HKV, NK = k.shape[1], k.shape[2]
    bm, bn, w, st = _tiles(TILES, D, block_m, block_n, warps, stages)
    scale = _common.default_scale(D, sm_scale)
    qs, ks, vs = scales if fp8 else (1.0, 1.0, 1.0)
    o = torch.empty((B, H, NQ, D), device=q.device, dtype=out_dtype if fp8 else q.dtype)
    lse = torch.empty((B, H, NQ), device=q.device, dtype=torch.float32)
    desc_q = TensorDescriptor.from_tensor(q.view(B * H, NQ, D), [1, bm, D])
    desc_o = TensorDescriptor.from_tensor(o.view(B * H, NQ, D), [1, bm, D])
    desc_k = TensorDescriptor.from_tensor(k.view(B * HKV, NK, D), [1, bn, D])
    desc_v = (TensorDescriptor(v, [B * HKV, D, NK], [v.stride(1), v.stride(2), 1], [1, D, bn]) if fp8
              else TensorDescriptor.from_tensor(v.view(B * HKV, NK, D), [1, bn, D]))
    LAUNCHES.clear()
    launch(LAUNCHES, hopper_fwd, (triton.cdiv(NQ, bm), B * H), desc_q, desc_k, desc_v, desc_o, lse, H, HKV, NQ, NK,
           scale * LOG2E * qs * ks, vs, CAUSAL=bool(causal), D=D, BM=bm, BN=bn, V_T=fp8, WS=bool(warp_specialize),
           num_warps=w, num_stages=st)
    return o, lse


def _tiles(table: dict, head_dim: int, block_m, block_n, warps, stages) -> tuple:
    """(block_m, block_n, warps, stages): the table's defaults for ``head_dim`` where not given."""
    bm, bn, w, st = table[head_dim]
    return block_m or bm, block_n or bn, warps or w, stages or st


def _rows_aligned(v) -> bool:
    """A (B, Hkv, d, Nk) view TMA can read: unit stride along Nk, rows 16 bytes apart, heads evenly spaced."""
    return (v.stride(-1) == 1 and v.stride(-2) % 16 == 0 and v.stride(1) == v.shape[2] * v.stride(2)
            and v.stride(0) == v.shape[1] * v.stride(1))


def backward(do, q, k, v, o, lse, causal=False, sm_scale=None, block_m=None, block_n=None, warps=None, stages=None,
             dq_tma=False):
    """dQ, dK, dV of ``attention(q, k, v, causal, sm_scale)`` (fp16/bf16) given dO, O and the LSE: ``flash2_bwd_pre``
    then ``hopper_bwd`` (launches appended to ``LAUNCHES``); GQA sums each group's per-head dK, dV."""
    _common.check_inputs(q, k, v, causal)
    B, H, NQ, D = q.shape
    HKV, NK = k.shape[1], k.shape[2]
    bm, bn, w, st = _tiles(BWD_TILES, D, block_m, block_n, warps, stages)
    scale = _common.default_scale(D, sm_scale)
    do = do.contiguous()
    dq = torch.zeros((B, H, NQ, D), device=q.device, dtype=torch.float32)
    delta = torch.empty((B, H, NQ), device=q.device, dtype=torch.float32)
    launch(LAUNCHES, flash2_bwd_pre, (triton.cdiv(NQ, bm), B * H), o, do, delta, NQ, D=D, BM=bm, num_warps=4,
           num_stages=1)
    dk = torch.empty((B, H, NK, D), device=q.device, dtype=q.dtype)
    dv = torch.empty_like(dk)
    box_q, box_kv = [1, bm, D], [1, bn, D]
    descs = [TensorDescriptor.from_tensor(t.view(B * H, NQ, D), box_q) for t in (q, do, dq)]
    descs += [TensorDescriptor.from_tensor(t.view(B * n, NK, D), box_kv) for t, n in ((k, HKV), (v, HKV), (dk, H), (dv, H))]
    desc_q, desc_do, desc_dq, desc_k, desc_v, desc_dk, desc_dv = descs
    launch(LAUNCHES, hopper_bwd, (triton.cdiv(NK, bn), B * H), desc_q, desc_k, desc_v, desc_do, desc_dq, desc_dk,
           desc_dv, lse, delta, dq, H, HKV, NQ, NK, scale, CAUSAL=bool(causal), D=D, BM=bm, BN=bn,
           DQ_TMA=bool(dq_tma), num_warps=w, num_stages=st)
    return dq.to(q.dtype), _common.reduce_gqa(dk, HKV), _common.reduce_gqa(dv, HKV)


class _Attention(torch.autograd.Function):
    """The Hopper forward, and its backward under autograd (fp16/bf16)."""

    @staticmethod
    def forward(ctx, q, k, v, causal, sm_scale, bwd_tiles):
        o, lse = attention(q, k, v, causal, sm_scale)
        ctx.save_for_backward(q, k, v, o, lse)
        ctx.causal, ctx.sm_scale, ctx.bwd_tiles = causal, sm_scale, bwd_tiles
        return o

    @staticmethod
    def backward(ctx, do):
        q, k, v, o, lse = ctx.saved_tensors
        grads = backward(do, q, k, v, o, lse, ctx.causal, ctx.sm_scale, **ctx.bwd_tiles)
        return *grads, None, None, None


def fwd_fp8(q, k, v, causal=False, sm_scale=None):
    """The fp8 forward with unit scales, O in fp16: the signature ``iosim measure --kernel
    kernels/flash_hopper.py:fwd_fp8 --dtype fp8`` times and profiles, on the fp8 inputs the harness makes
    (:func:`iosim.kernels._common.fp8_inputs`: q, k (B, H|Hkv, N, d) and v transposed (B, Hkv, d, N), e4m3)."""
    return attention(q, k, v, causal, sm_scale, scales=(1.0, 1.0, 1.0))[0]


def fwd(q, k, v, causal=False, sm_scale=None, **bwd_tiles):
    """O with autograd: the signature ``iosim measure --kernel kernels/flash_hopper.py:fwd`` times and profiles
    (``--backward`` runs :func:`backward` too); ``bwd_tiles``: :func:`backward`'s tile keywords."""
    return _Attention.apply(q, k, v, causal, sm_scale, bwd_tiles)
