"""A case's inputs and the call that is timed: random q, k, v (and dO) and one attention call of its implementation."""
from __future__ import annotations

import math

from iosim.kernels.cases import OURS, CaseSpec
from iosim.kernels.device import HarnessError


def make_inputs(torch, spec: CaseSpec):
    """Random q, k, v (and dO) from a fixed seed: never zeros, whose products the GPU may shortcut."""
    p = spec.problem
    dtype = {"fp16": torch.float16, "bf16": torch.bfloat16, "fp32": torch.float32}[p.dtype]
    gen = torch.Generator(device="cuda").manual_seed(0)

    def rand(heads, seq):
        return torch.randn(p.batch, heads, seq, p.head_dim, dtype=dtype, device="cuda", generator=gen)

    q, k, v = rand(p.heads, p.seq_q), rand(p.kv_heads, p.seq_k), rand(p.kv_heads, p.seq_k)
    do = rand(p.heads, p.seq_q) if p.backward else None
    if p.backward:
        for t in (q, k, v):
            t.requires_grad_(True)
    return q, k, v, do


def make_forward(torch, spec: CaseSpec):
    """``f(q, k, v) -> o`` for the case's implementation."""
    p = spec.problem
    if spec.impl in OURS:
        import iosim.kernels as kernels

        mod, overrides = kernels.ALGOS[spec.impl], spec.overrides()
        if p.page_size:
            return _paged(mod, p, overrides)
        return lambda q, k, v: mod.attention(q, k, v, causal=p.causal, **overrides)
    if spec.impl == "kernel":  # a user's kernel file, loaded by path
        from iosim.kernels.user_kernel import load_kernel

        user = load_kernel(spec.kernel)
        return lambda q, k, v: user(q, k, v, causal=p.causal)
    if spec.impl == "standard_eager":
        if p.causal or p.kv_heads != p.heads:
            raise HarnessError("standard_eager: only non-causal, non-GQA cases (four kernels, no mask)")
        scale = 1.0 / math.sqrt(p.head_dim)

        def eager(q, k, v):
            s = q @ k.transpose(-1, -2)
            s = s * scale
            probs = torch.softmax(s, -1)
            return probs @ v

        return eager
    from torch.nn.attention import SDPBackend, sdpa_kernel

    backend = {"sdpa_flash": SDPBackend.FLASH_ATTENTION, "sdpa_cudnn": SDPBackend.CUDNN_ATTENTION}[spec.impl]
    gqa = {"enable_gqa": True} if p.kv_heads != p.heads else {}

    def sdpa(q, k, v):
        with sdpa_kernel(backend):
            return torch.nn.functional.scaled_dot_product_attention(q, k, v, is_causal=p.causal, **gqa)

    return sdpa


def _paged(mod, p, overrides):
    """``f(q, k, v)`` on a paged copy of k, v (``mod.to_pages``), made on the first call: the harness's
    warm-up, outside any timing or profiled range."""
    pools: dict = {}

    def paged(q, k, v):
        key = (k.data_ptr(), v.data_ptr())
        if key not in pools:
            pools.clear()
            pools[key] = mod.to_pages(k, v, p.page_size)
        return mod.attention_paged(q, *pools[key], p.seq_k, **overrides)

    return paged


def make_call(torch, spec: CaseSpec, tensors):
    """The timed function: one attention call; with the backward, a fresh graph each time."""
    forward = make_forward(torch, spec)
    q, k, v, do = tensors
    if not spec.backward:
        return lambda: forward(q, k, v)
    # autograd.grad rather than o.backward: no accumulation into .grad, so no extra add kernels.
    return lambda: torch.autograd.grad(forward(q, k, v), (q, k, v), do)
