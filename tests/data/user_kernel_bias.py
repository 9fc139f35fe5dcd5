"""A user's FlashAttention-2 forward that adds a bias tile to every block of scores, as kernels with a relative-position
or pair bias do: the test kernel for a loop that reads more than flash2's schedule (K and V). ``attention``: a bias
(B, H, N, N), each head its own, at 64 × 64 tiles; ``attention_wide``: the same at 128 × 64 tiles, 8 warps, 3 stages;
``attention_shared``: one (N, N) bias every head adds (held-out cases: experiments/heldout_kernels/manifest_bias.yaml);
``attention_scores``: :func:`attention` that also stores the biased scores for the caller."""
import torch
import triton
import triton.language as tl


@triton.jit
def bias_fwd(Q, K, V, Bias, O, Scores, N, stride_bias, scale, D: tl.constexpr, BLOCK_M: tl.constexpr,
             BLOCK_N: tl.constexpr, STORE: tl.constexpr):
    pid = tl.program_id(0)
    bh = tl.program_id(1).to(tl.int64)
    rows = pid * BLOCK_M + tl.arange(0, BLOCK_M)
    cols = tl.arange(0, D)
    base = bh * N * D
    q = tl.load(Q + base + rows[:, None] * D + cols[None, :], mask=rows[:, None] < N, other=0.0)
    m = tl.full((BLOCK_M,), float("-inf"), dtype=tl.float32)
    l = tl.zeros((BLOCK_M,), dtype=tl.float32)
    acc = tl.zeros((BLOCK_M, D), dtype=tl.float32)
    for start in range(0, N, BLOCK_N):
        keys = start + tl.arange(0, BLOCK_N)
        inside = (rows[:, None] < N) & (keys[None, :] < N)
        k = tl.load(K + base + keys[:, None] * D + cols[None, :], mask=keys[:, None] < N, other=0.0)
        b = tl.load(Bias + bh * stride_bias + rows[:, None] * N + keys[None, :], mask=inside, other=0.0)
        s = tl.dot(q, tl.trans(k)) * scale + b.to(tl.float32)
        if STORE:  # the biased scores, kept for the caller
            tl.store(Scores + bh * N * N + rows[:, None] * N + keys[None, :], s.to(Scores.dtype.element_ty), mask=inside)
        s = tl.where(keys[None, :] < N, s, float("-inf"))
        m_new = tl.maximum(m, tl.max(s, 1))
        p = tl.exp(s - m_new[:, None])
        alpha = tl.exp(m - m_new)
        l = l * alpha + tl.sum(p, 1)
        v = tl.load(V + base + keys[:, None] * D + cols[None, :], mask=keys[:, None] < N, other=0.0)
        acc = acc * alpha[:, None] + tl.dot(p.to(v.dtype), v)
        m = m_new
    out = acc / l[:, None]
    tl.store(O + base + rows[:, None] * D + cols[None, :], out.to(O.dtype.element_ty), mask=rows[:, None] < N)


def _launch(q, k, v, causal, sm_scale, bias, shared, block_m, warps, stages, scores=None):
    """bias_fwd on (B, H, N, d) inputs; the bias (B, H, N, N), or (N, N) where ``shared``, random where not given."""
    if causal:
        raise ValueError("bias_fwd is not causal")
    batch, heads, n, d = q.shape
    if bias is None:
        bias = torch.randn(*(() if shared else (batch, heads)), n, n, device=q.device, dtype=q.dtype)
    q, k, v, bias = (t.contiguous() for t in (q, k, v, bias))
    o = torch.empty_like(q)
    scale = d ** -0.5 if sm_scale is None else sm_scale
    bias_fwd[(triton.cdiv(n, block_m), batch * heads)](q, k, v, bias, o, o if scores is None else scores, n,
                                                       0 if shared else n * n, scale, D=d, BLOCK_M=block_m, BLOCK_N=64,
                                                       STORE=scores is not None, num_warps=warps, num_stages=stages)
    return o


def attention(q, k, v, causal=False, sm_scale=None, bias=None):
    """softmax(Q·Kᵀ·scale + bias)·V on (B, H, N, d) inputs, the bias (B, H, N, N) (random where not given); not causal."""
    return _launch(q, k, v, causal, sm_scale, bias, False, 64, 4, 2)


def attention_wide(q, k, v, causal=False, sm_scale=None, bias=None):
    """:func:`attention` at 128 × 64 tiles, 8 warps, 3 stages."""
    return _launch(q, k, v, causal, sm_scale, bias, False, 128, 8, 3)


def attention_shared(q, k, v, causal=False, sm_scale=None, bias=None):
    """:func:`attention` with one bias (N, N) that every head adds (random where not given)."""
    return _launch(q, k, v, causal, sm_scale, bias, True, 64, 4, 2)


def attention_scores(q, k, v, causal=False, sm_scale=None, bias=None, scores=None):
    """:func:`attention` that also writes the biased scores Q·Kᵀ·scale + bias (B, H, N, N) to ``scores`` (a new
    tensor where not given), as kernels that return attention weights to the caller do."""
    if scores is None:
        batch, heads, n, _ = q.shape
        scores = torch.empty(batch, heads, n, n, device=q.device, dtype=q.dtype)
    return _launch(q, k, v, causal, sm_scale, bias, False, 64, 4, 2, scores)
