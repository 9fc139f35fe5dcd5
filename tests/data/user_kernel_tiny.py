"""A tiny user 'attention' kernel for the launch-recording test: o = v (copied block by block) under Triton."""
import torch
import triton
import triton.language as tl


@triton.jit
def tiny_fwd(V, O, N, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, D: tl.constexpr):
    pid = tl.program_id(0)
    bh = tl.program_id(1)
    rows = pid * BLOCK_M + tl.arange(0, BLOCK_M)
    cols = tl.arange(0, D)
    offs = bh * N * D + rows[:, None] * D + cols[None, :]
    mask = rows[:, None] < N
    tl.store(O + offs, tl.load(V + offs, mask=mask, other=0.0), mask=mask)


def attention(q, k, v, causal=False, sm_scale=None):
    B, H, N, D = q.shape
    o = torch.empty_like(v)
    grid = (triton.cdiv(N, 16), B * H)
    tiny_fwd[grid](v, o, N, BLOCK_M=16, BLOCK_N=8, D=D, num_warps=2, num_stages=1)
    return o
