"""F10: a persistent FlashAttention-2 forward whose CTAs take their next output tile from a counter in global
memory (``tl.atomic_add``): a tile goes to whichever CTA asks first, not to a CTA fixed in advance as in F9. Tiles
are numbered with the Q blocks of one head in turn; ``tl.exp`` with the scale applied to S, masks on every block,
top-left causal mask, GQA.

Schedule: ``min(SMs, tiles)`` CTAs of 4 warps (128 × 64 tiles at d <= 64, 64 × 64 above), each looping over the
tiles it draws and, per tile, over K/V blocks of 64 rows (2 stages). HBM traffic: Q and O once; K and V once per
Q block (about half as causal); the counter, one 4-byte word.
"""
from __future__ import annotations

import math

import torch
import triton
import triton.language as tl

BLOCK_M = 64  # query rows a tile at d = 128
BLOCK_M_SMALL_D = 128  # at d <= 64
BLOCK_N = 64
NUM_WARPS = 4
NUM_STAGES = 2


@triton.jit
def _counter_fwd(
    Q, K, V, O, COUNTER, sm_scale,
    s_qb, s_qh, s_qm, s_kb, s_kh, s_kn, s_vb, s_vh, s_vn, s_ob, s_oh, s_om,
    H, GROUP, NQ, NK, N_TILES, N_M,
    CAUSAL: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, HEAD_DIM: tl.constexpr,
):
    offs_d = tl.arange(0, HEAD_DIM)
    tile = tl.atomic_add(COUNTER, 1)
    while tile < N_TILES:
        bh = tile // N_M
        pid_m = tile % N_M
        b = bh // H
        h = bh % H
        hk = h // GROUP
        offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
        q = tl.load(Q + b * s_qb + h * s_qh + offs_m[:, None] * s_qm + offs_d[None, :],
                    mask=offs_m[:, None] < NQ, other=0.0)
        k_base = K + b * s_kb + hk * s_kh
        v_base = V + b * s_vb + hk * s_vh
        m_i = tl.full([BLOCK_M], float("-inf"), dtype=tl.float32)
        l_i = tl.zeros([BLOCK_M], dtype=tl.float32)
        acc = tl.zeros([BLOCK_M, HEAD_DIM], dtype=tl.float32)
        hi = NK
        if CAUSAL:
            hi = tl.minimum((pid_m + 1) * BLOCK_M, NK)
        for start_n in range(0, hi, BLOCK_N):
            cols = start_n + tl.arange(0, BLOCK_N)
            k = tl.load(k_base + cols[:, None] * s_kn + offs_d[None, :], mask=cols[:, None] < NK, other=0.0)
            v = tl.load(v_base + cols[:, None] * s_vn + offs_d[None, :], mask=cols[:, None] < NK, other=0.0)
            s = tl.dot(q, tl.trans(k)) * sm_scale
            keep = cols[None, :] < NK
            if CAUSAL:
                keep = keep & (cols[None, :] <= offs_m[:, None])
            s = tl.where(keep, s, float("-inf"))
            m_new = tl.maximum(m_i, tl.max(s, 1))
            alpha = tl.exp(m_i - m_new)
            p = tl.exp(s - m_new[:, None])
            l_i = l_i * alpha + tl.sum(p, 1)
            acc = acc * alpha[:, None] + tl.dot(p.to(v.dtype), v)
            m_i = m_new
        acc = acc / l_i[:, None]
        o_ptrs = O + b * s_ob + h * s_oh + offs_m[:, None] * s_om + offs_d[None, :]
        tl.store(o_ptrs, acc.to(O.dtype.element_ty), mask=offs_m[:, None] < NQ)
        tile = tl.atomic_add(COUNTER, 1)


def _sm_count(device) -> int:
    """The GPU's SM count (the simulated one's when iosim captures the launch on a CPU)."""
    return torch.cuda.get_device_properties(device if device.type == "cuda" else 0).multi_processor_count


def attention(q, k, v, causal=False, sm_scale=None):
    """o = softmax(q kᵀ·scale [+ top-left causal mask]) v; q (B, H, Nq, d), k and v (B, Hkv, Nk, d)."""
    B, H, NQ, D = q.shape
    HKV, NK = k.shape[1], k.shape[2]
    assert H % HKV == 0 and D in (32, 64, 128) and k.shape == v.shape
    q, k, v = q.contiguous(), k.contiguous(), v.contiguous()
    sm_scale = 1.0 / math.sqrt(D) if sm_scale is None else sm_scale
    o = torch.empty_like(q)
    block_m = BLOCK_M_SMALL_D if D <= 64 else BLOCK_M
    n_m = triton.cdiv(NQ, block_m)
    n_tiles = B * H * n_m
    sms = _sm_count(q.device) if (q.is_cuda or torch.cuda.is_available()) else 4
    counter = torch.zeros(1, dtype=torch.int32, device=q.device)
    _counter_fwd[(min(sms, n_tiles),)](
        q, k, v, o, counter, sm_scale,
        q.stride(0), q.stride(1), q.stride(2), k.stride(0), k.stride(1), k.stride(2),
        v.stride(0), v.stride(1), v.stride(2), o.stride(0), o.stride(1), o.stride(2),
        H, H // HKV, NQ, NK, n_tiles, n_m,
        CAUSAL=causal, BLOCK_M=block_m, BLOCK_N=BLOCK_N, HEAD_DIM=D,
        num_warps=NUM_WARPS, num_stages=NUM_STAGES,
    )
    return o
