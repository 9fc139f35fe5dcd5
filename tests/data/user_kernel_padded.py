"""A user's FlashAttention-2 forward that pads the head dim to a power of two (``BLOCK_D``) and masks its columns,
as kernels taking d = 80 or 96 do: the test kernel for head dims iosim's own kernels do not take."""
import math

import torch
import triton
import triton.language as tl


@triton.jit
def padded_fwd(Q, K, V, O, N, scale, D: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_M: tl.constexpr,
               BLOCK_N: tl.constexpr):
    pid = tl.program_id(0)
    bh = tl.program_id(1).to(tl.int64)
    rows = pid * BLOCK_M + tl.arange(0, BLOCK_M)
    cols = tl.arange(0, BLOCK_D)
    dmask = cols[None, :] < D
    base = bh * N * D
    q = tl.load(Q + base + rows[:, None] * D + cols[None, :], mask=(rows[:, None] < N) & dmask, other=0.0)
    m = tl.full((BLOCK_M,), float("-inf"), dtype=tl.float32)
    l = tl.zeros((BLOCK_M,), dtype=tl.float32)
    acc = tl.zeros((BLOCK_M, BLOCK_D), dtype=tl.float32)
    for start in range(0, N, BLOCK_N):
        keys = start + tl.arange(0, BLOCK_N)
        kv = base + keys[:, None] * D + cols[None, :]
        k = tl.load(K + kv, mask=(keys[:, None] < N) & dmask, other=0.0)
        s = tl.dot(q, tl.trans(k)) * scale
        s = tl.where(keys[None, :] < N, s, float("-inf"))
        m_new = tl.maximum(m, tl.max(s, 1))
        p = tl.exp(s - m_new[:, None])
        alpha = tl.exp(m - m_new)
        l = l * alpha + tl.sum(p, 1)
        v = tl.load(V + kv, mask=(keys[:, None] < N) & dmask, other=0.0)
        acc = acc * alpha[:, None] + tl.dot(p.to(v.dtype), v)
        m = m_new
    tl.store(O + base + rows[:, None] * D + cols[None, :], (acc / l[:, None]).to(O.dtype.element_ty),
             mask=(rows[:, None] < N) & dmask)


def attention(q, k, v, causal=False, sm_scale=None):
    """Non-causal softmax(q kᵀ · scale) v for (B, H, N, d) inputs of one head per K/V head, any d a multiple of 8."""
    if causal or k.shape[1] != q.shape[1]:
        raise ValueError("this kernel is non-causal multi-head attention only")
    B, H, N, D = q.shape
    o = torch.empty_like(q)
    scale = 1.0 / math.sqrt(D) if sm_scale is None else sm_scale
    padded_fwd[(triton.cdiv(N, 64), B * H)](q, k, v, o, N, scale, D=D, BLOCK_D=triton.next_power_of_2(D),
                                           BLOCK_M=64, BLOCK_N=32, num_warps=4, num_stages=2)
    return o
