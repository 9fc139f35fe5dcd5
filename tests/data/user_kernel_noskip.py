"""A user's causal attention kernel that masks but skips nothing: every program visits every K/V block (the mask
applied to each), so causal runs cost what non-causal ones do. For iosim.kernels.causal_align's skip probe."""
import torch
import triton
import triton.language as tl


@triton.jit
def noskip_fwd(Q, K, V, O, scale, NQ, NK, GROUP: tl.constexpr, CAUSAL: tl.constexpr, BLOCK_M: tl.constexpr,
               BLOCK_N: tl.constexpr, D: tl.constexpr):
    m, bh = tl.program_id(0), tl.program_id(1)
    rows = m * BLOCK_M + tl.arange(0, BLOCK_M)
    cols = tl.arange(0, D)
    q = tl.load(Q + bh * NQ * D + rows[:, None] * D + cols[None, :], mask=rows[:, None] < NQ, other=0.0)
    kv = (bh // GROUP) * NK * D
    acc = tl.zeros((BLOCK_M, D), tl.float32)
    m_i = tl.full((BLOCK_M,), float("-inf"), tl.float32)
    l_i = tl.zeros((BLOCK_M,), tl.float32)
    for start in range(0, NK, BLOCK_N):  # every block, causal or not
        keys = start + tl.arange(0, BLOCK_N)
        k = tl.load(K + kv + keys[:, None] * D + cols[None, :], mask=keys[:, None] < NK, other=0.0)
        s = tl.dot(q, tl.trans(k)) * scale
        seen = keys[None, :] < NK
        if CAUSAL:
            seen = seen & (keys[None, :] <= rows[:, None])
        s = tl.where(seen, s, float("-inf"))
        m_new = tl.maximum(m_i, tl.max(s, 1))
        alpha = tl.exp(m_i - m_new)
        p = tl.exp(s - m_new[:, None])
        l_i = l_i * alpha + tl.sum(p, 1)
        v = tl.load(V + kv + keys[:, None] * D + cols[None, :], mask=keys[:, None] < NK, other=0.0)
        acc = acc * alpha[:, None] + tl.dot(p.to(v.dtype), v)
        m_i = m_new
    tl.store(O + bh * NQ * D + rows[:, None] * D + cols[None, :], (acc / l_i[:, None]).to(O.dtype.element_ty),
             mask=rows[:, None] < NQ)


def attention(q, k, v, causal=False, sm_scale=None):
    B, H, NQ, D = q.shape
    NK, HKV = k.shape[2], k.shape[1]
    o = torch.empty_like(q)
    grid = (triton.cdiv(NQ, 64), B * H)
    noskip_fwd[grid](q, k, v, o, sm_scale or D ** -0.5, NQ, NK, GROUP=H // HKV, CAUSAL=causal, BLOCK_M=64, BLOCK_N=32,
                     D=D, num_warps=4, num_stages=2)
    return o
