"""A case's inputs and the call that is timed: random q, k, v (and dO) and one attention call of its implementation."""
from __future__ import annotations

import math

from iosim.kernels.cases import OURS, CaseSpec
from iosim.kernels.device import HarnessError


def packed(spec: CaseSpec) -> bool:
    """Whether the case runs on tokens packed as (total, heads, d): our flash2 on a variable-length batch
    or with a window (``kernels/varlen.py``), and FlexAttention's prefill of a variable-length batch
    (one sequence of every request's tokens, (1, heads, total, d), under a document mask)."""
    p = spec.problem
    if spec.impl == "flash2":
        return p.seq_lens is not None or p.window is not None
    return spec.impl == "flex" and p.seq_lens is not None and p.seq_q == p.seq_k


def make_inputs(torch, spec: CaseSpec):
    """Random q, k, v (and dO) from a fixed seed: never zeros, whose products the GPU may shortcut."""
    p = spec.problem
    from iosim.kernels._common import TORCH_DTYPES, fp8_inputs

    fp8 = p.dtype == "fp8"
    dtype = torch.float16 if fp8 else TORCH_DTYPES[p.dtype]  # fp8: drawn in fp16, then cast (fp8_inputs)
    gen = torch.Generator(device="cuda").manual_seed(0)
    if packed(spec):
        total = sum(p.lengths) if p.seq_lens is not None else p.batch * p.seq_q

        def tokens(heads):
            shape = (1, heads, total, p.head_dim) if spec.impl == "flex" else (total, heads, p.head_dim)
            return torch.randn(*shape, dtype=dtype, device="cuda", generator=gen)

        return tokens(p.heads), tokens(p.kv_heads), tokens(p.kv_heads), None

    def rand(heads, seq):
        return torch.randn(p.batch, heads, seq, p.head_dim, dtype=dtype, device="cuda", generator=gen)

    q, k, v = rand(p.heads, p.seq_q), rand(p.kv_heads, p.seq_k), rand(p.kv_heads, p.seq_k)
    if fp8:  # forward only (no fp8 backward is modelled): e4m3, V transposed
        if p.backward or spec.impl != "kernel":
            raise HarnessError("fp8: a user kernel's forward only (fn(q, k, v) on e4m3 inputs, V transposed)")
        q, k, v = fp8_inputs(q, k, v)
        return q, k, v, None
    do = rand(p.heads, p.seq_q) if p.backward else None
    if p.backward:
        for t in (q, k, v):
            t.requires_grad_(True)
    return q, k, v, do


def make_forward(torch, spec: CaseSpec):
    """``f(q, k, v) -> o`` for the case's implementation."""
    p = spec.problem
    if spec.impl in OURS:
        mod, overrides = kernel_module(spec), spec.overrides()
        if packed(spec):
            return _packed(torch, mod, p, overrides)
        local = {"seq_lens": _device_lengths(torch, p), "window": p.window} if spec.impl == "flash_decode" else {}
        if p.page_size:
            return _paged(mod, p, overrides, local)
        return lambda q, k, v: mod.attention(q, k, v, causal=p.causal, **local, **overrides)
    if spec.impl == "flex":
        return _flex(torch, p)
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


def kernel_module(spec: CaseSpec):
    """The module of our kernels that runs the case: ``kernels/varlen.py`` for a packed flash2 case."""
    import iosim.kernels as kernels

    if spec.impl == "flash2" and packed(spec):
        from iosim.kernels import varlen

        return varlen
    return kernels.ALGOS[spec.impl]


def run_config_of(spec: CaseSpec, tensors) -> dict:
    """The configuration our kernel reports for the case's call on ``tensors``."""
    p, mod = spec.problem, kernel_module(spec)
    q, k, v, _ = tensors
    if spec.impl == "flash2" and packed(spec):
        lens = _lengths(p)
        cu = mod.cu_seqlens(lens, q.device)
        return mod.run_config(q, k, v, cu, cu, lens, p.causal, p.window, **spec.overrides())
    local = {"seq_lens": p.seq_lens, "window": p.window} if spec.impl == "flash_decode" else {}
    paged = {"page_size": p.page_size} if p.page_size else {}
    return mod.run_config(q, k, v, p.causal, spec.backward, **paged, **local, **spec.overrides())


def _lengths(p) -> tuple:
    """Each request's tokens (a window on a uniform batch: every request N long)."""
    return p.seq_lens if p.seq_lens is not None else (p.seq_q,) * p.batch


def _device_lengths(torch, p):
    """A variable-length decode's cache lengths as the kernel takes them (int32 on the GPU), or None."""
    return None if p.seq_lens is None else torch.tensor(p.seq_lens, dtype=torch.int32, device="cuda")


def _packed(torch, varlen, p, overrides):
    """``f(q, k, v)`` on packed tokens: ``attention_varlen`` with the requests' offsets."""
    lens = _lengths(p)
    cu = varlen.cu_seqlens(lens, "cuda")
    return lambda q, k, v: varlen.attention_varlen(q, k, v, cu, cu, max(lens), max(lens), causal=p.causal,
                                                   window=p.window, **overrides)


def _paged(mod, p, overrides, local):
    """``f(q, k, v)`` on a paged copy of k, v (``mod.to_pages``), made on the first call: the harness's
    warm-up, outside any timing or profiled range."""
    pools: dict = {}

    def paged(q, k, v):
        key = (k.data_ptr(), v.data_ptr())
        if key not in pools:
            pools.clear()
            pools[key] = mod.to_pages(k, v, p.page_size)
        return mod.attention_paged(q, *pools[key], p.seq_k, **local, **overrides)

    return paged


def _flex(torch, p, compiled: bool = True):
    """FlexAttention (compiled) under the case's mask: causal and the window within each request; a
    variable-length prefill as one packed sequence with a document mask; a decode's queries at the end
    of each request's cache (the last ``window`` keys of it with a window). The block mask is made on
    the first call, the harness's warm-up. A paged cache: :func:`_flex_paged`. ``compiled=False`` runs
    FlexAttention eagerly (its reference path, on any device: the CPU tests)."""
    from torch.nn.attention.flex_attention import create_block_mask, flex_attention

    attend = torch.compile(flex_attention, dynamic=False) if compiled else flex_attention
    state: dict = {}
    prefill, window = p.seq_q == p.seq_k, p.window

    def mask_mod(dev="cuda"):
        if prefill:
            doc = None
            if p.seq_lens is not None:
                doc = torch.repeat_interleave(torch.arange(p.batch, device=dev), torch.tensor(p.seq_lens, device=dev))

            def prefill_mask(b, h, q_idx, kv_idx):
                keep = (kv_idx <= q_idx) if p.causal else (kv_idx >= 0)
                if window is not None:
                    keep = keep & (q_idx - kv_idx < window)
                return keep if doc is None else keep & (doc[q_idx] == doc[kv_idx])

            return prefill_mask
        lens = torch.tensor(_lengths_k(p), dtype=torch.int32, device=dev)

        def decode_mask(b, h, q_idx, kv_idx):
            keep = kv_idx < lens[b]
            return keep & (kv_idx >= lens[b] - window) if window is not None else keep

        return decode_mask

    if p.page_size:
        return _flex_paged(torch, p, attend, create_block_mask, mask_mod)

    def flex(q, k, v):
        if "mask" not in state:
            batch = (1 if p.seq_lens is not None else None) if prefill else p.batch  # None: every request alike
            state["mask"] = create_block_mask(mask_mod(), batch, None, q.shape[2], k.shape[2], device="cuda")
        return attend(q, k, v, block_mask=state["mask"], enable_gqa=p.kv_heads != p.heads)

    return flex


def _flex_paged(torch, p, attend, create_block_mask, mask_mod):
    """FlexAttention's decode on a paged cache (``torch.nn.attention.experimental``'s PagedAttention, as
    its paged-attention example runs it): each request's keys copied into pages of ``page_size``
    tokens handed out by its page table, the block mask (key blocks of one page) mapped to physical
    pages, and the score mod that maps a physical key back to its request's position. Built on the
    first call, the harness's warm-up; the timed call is the attention alone."""
    from torch.nn.attention.experimental._paged_attention import PagedAttention

    page, state = p.page_size, {}

    def flex(q, k, v):
        key = (k.data_ptr(), v.data_ptr())
        if state.get("key") != key:
            state.clear()
            lens, dev = _lengths_k(p), k.device
            pages = sum(-(-n // page) for n in lens)
            table = PagedAttention(pages, page, p.batch, device=str(dev))
            k_cache = k.new_zeros(1, k.shape[1], pages * page, k.shape[3])
            v_cache = v.new_zeros(1, v.shape[1], pages * page, v.shape[3])
            for b, n in enumerate(lens):
                row = torch.tensor([b], device=dev)
                table.reserve(row, torch.tensor(n, device=dev))
                table.assign(row, torch.arange(n, device=dev)[None], k[b:b + 1, :, :n], v[b:b + 1, :, :n],
                             k_cache, v_cache)
            kv_len = torch.tensor(lens, device=dev)
            logical = create_block_mask(mask_mod(dev), p.batch, None, q.shape[2], k.shape[2], device=dev,
                                        BLOCK_SIZE=(max(16, page), page))
            state.update(key=key, caches=(k_cache, v_cache), mask=table.convert_logical_block_mask(logical, kv_len=kv_len),
                         score=table.get_score_mod(None, kv_len=kv_len))
        k_cache, v_cache = state["caches"]
        return attend(q, k_cache, v_cache, block_mask=state["mask"], score_mod=state["score"],
                      enable_gqa=p.kv_heads != p.heads)

    return flex


def _lengths_k(p) -> tuple:
    """Each request's K/V length in a decode."""
    return p.seq_lens if p.seq_lens is not None else (p.seq_k,) * p.batch


def make_call(torch, spec: CaseSpec, tensors):
    """The timed function: one attention call; with the backward, a fresh graph each time."""
    forward = make_forward(torch, spec)
    q, k, v, do = tensors
    if not spec.backward:
        return lambda: forward(q, k, v)
    # autograd.grad rather than o.backward: no accumulation into .grad, so no extra add kernels.
    return lambda: torch.autograd.grad(forward(q, k, v), (q, k, v), do)
