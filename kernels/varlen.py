"""FlashAttention-2 forward on a variable-length batch (``cu_seqlens`` packing) with optional local attention.

The batch is packed without padding, as ``flash_attn_varlen_func`` takes it: q is (total_q, H, d),
k and v (total_k, Hkv, d), and sequence b owns rows [cu_q[b], cu_q[b+1]) of q and [cu_k[b], cu_k[b+1])
of k, v. A sliding ``window`` W (causal only) lets the query at position r see keys r − W < k ≤ r.

``flash2_varlen_fwd`` grid (cdiv(max L_q, BM), B·H): one CTA per (Q block i, batch·head) of sequence b
with L_q query and L key rows. A CTA with i·BM ≥ L_q reads and writes nothing. Otherwise it reads
min(BM, L_q − i·BM)·d of Q once and 2·BN·d per visited K/V block [lo, hi) (see ``_bounds``: causal,
the blocks up to the diagonal; with a window, from the block holding key i·BM − W + 1), and writes
the same rows of O (dtype) and of LSE (fp32) once. Per (sequence, head): L_q·d of Q,
Σ_i 2·(hi_i − lo_i)·d of K, V (rounded up to whole blocks, the last one ragged), L_q·d of O, L_q of LSE.
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

from iosim.kernels import _common
from iosim.kernels._common import LOG2E, LOG2E_C, launch
from iosim.kernels.flash2 import _fwd_blocks
from iosim.schedule.problem import ConfigError, Problem, RunConfig, Tiling
from iosim.schedule.tiling import FWD

ALGO = "flash2"  # the flash2 forward schedule, on a packed batch
DTYPES = (torch.float16, torch.bfloat16)
# A finite running-max start: with a window, a row's first blocks may all be masked, and −inf − (−inf)
# would be NaN. Every real score (|q·k|·scale ≪ 1e30) exceeds it, so the first real block's alpha is 0.
M_START = tl.constexpr(-1.0e30)
LAUNCHES: list[dict] = []


def reference(q, k, v, cu_seqlens_q, cu_seqlens_k, causal=False, window=None, sm_scale=None):
    """softmax(sm_scale · Q Kᵀ + mask) V per sequence in float64; returns O (total_q, H, d) and LSE (H, total_q)."""
    group = q.shape[1] // k.shape[1]
    scale = _common.default_scale(q.shape[-1], sm_scale)
    o = q.new_empty(q.shape, dtype=torch.float64)
    lse = q.new_empty((q.shape[1], q.shape[0]), dtype=torch.float64)
    cu_q, cu_k = cu_seqlens_q.tolist(), cu_seqlens_k.tolist()
    for b in range(len(cu_q) - 1):
        qb = q[cu_q[b]:cu_q[b + 1]].double().transpose(0, 1)  # (H, L_q, d)
        kb, vb = (x[cu_k[b]:cu_k[b + 1]].double().transpose(0, 1).repeat_interleave(group, 0) for x in (k, v))
        s = qb @ kb.transpose(-1, -2) * scale
        rows, cols = torch.arange(s.shape[1], device=q.device)[:, None], torch.arange(s.shape[2], device=q.device)
        if causal:
            s = s.masked_fill(cols > rows, float("-inf"))
        if window is not None:
            s = s.masked_fill(cols <= rows - window, float("-inf"))
        lse[:, cu_q[b]:cu_q[b + 1]] = torch.logsumexp(s, -1)
        o[cu_q[b]:cu_q[b + 1]] = (torch.softmax(s, -1) @ vb).transpose(0, 1)
    return o, lse


# ---------------------------------------------------------------------------------------------
# Kernel
# ---------------------------------------------------------------------------------------------
@triton.jit
def _bounds(r0, L, W, CAUSAL: tl.constexpr, WINDOW: tl.constexpr, BM: tl.constexpr, BN: tl.constexpr):
    """K/V block bounds of the Q block at row r0 of a sequence with L keys: blocks [lo, edge) cross the
    window's lower edge, [edge, diag) need no mask, [diag, hi) cross the diagonal or the ragged end."""
    if CAUSAL:
        hi = tl.minimum(r0 + BM, L)
        diag = (tl.minimum(r0, L) // BN) * BN
    else:
        hi = L
        diag = (L // BN) * BN
    if WINDOW:
        lo = (tl.maximum(0, r0 - W + 1) // BN) * BN
        edge = tl.minimum(diag, tl.maximum(lo, tl.cdiv(tl.maximum(0, r0 + BM - W), BN) * BN))
    else:
        lo = 0
        edge = 0
    return lo, edge, diag, hi


@triton.jit
def flash2_varlen_fwd(Q, K, V, O, LSE, CU_Q, CU_K, H, HKV, TOTAL_Q, W, qk_scale,
                      CAUSAL: tl.constexpr, WINDOW: tl.constexpr, D: tl.constexpr, BM: tl.constexpr,
                      BN: tl.constexpr, STRIDE_Q: tl.constexpr, STRIDE_KV: tl.constexpr):
    """One (Q block i, bh) of sequence b per CTA: read up to BM·d of Q once and 2·BN·d per visited K/V
    block; write the block's rows of O (dtype) and LSE (fp32, natural log, LSE[h, row]) once."""
    i = tl.program_id(0)
    bh = tl.program_id(1)
    b, h = bh // H, bh % H
    q0 = tl.load(CU_Q + b)
    n_q = tl.load(CU_Q + b + 1) - q0
    k0 = tl.load(CU_K + b)
    n_k = tl.load(CU_K + b + 1) - k0
    r0 = i * BM
    if r0 >= n_q:  # a Q block past this sequence's end: the grid is sized by the longest
        return
    rows = r0 + tl.arange(0, BM)  # positions within the sequence
    ds = tl.arange(0, D)
    q_off = (q0 + rows).to(tl.int64)[:, None] * STRIDE_Q + h * D + ds[None, :]
    q = tl.load(Q + q_off, mask=rows[:, None] < n_q, other=0.0)
    hk = h // (H // HKV)
    kv_off = (k0.to(tl.int64) + tl.arange(0, BN))[:, None] * STRIDE_KV + hk * D + ds[None, :]
    m_i = tl.full((BM,), M_START, dtype=tl.float32)
    l_i = tl.zeros((BM,), dtype=tl.float32)
    acc = tl.zeros((BM, D), dtype=tl.float32)
    lo, edge, diag, hi = _bounds(r0, n_k, W, CAUSAL, WINDOW, BM, BN)
    if WINDOW:
        acc, l_i, m_i = _fwd_blocks(acc, l_i, m_i, q, K + kv_off, V + kv_off, rows, lo, edge, n_k, qk_scale,
                                    True, CAUSAL, D, BM, BN, W, WINDOW, STRIDE_KV)
    acc, l_i, m_i = _fwd_blocks(acc, l_i, m_i, q, K + kv_off, V + kv_off, rows, edge, diag, n_k, qk_scale,
                                False, CAUSAL, D, BM, BN, W, WINDOW, STRIDE_KV)
    acc, l_i, m_i = _fwd_blocks(acc, l_i, m_i, q, K + kv_off, V + kv_off, rows, diag, hi, n_k, qk_scale,
                                True, CAUSAL, D, BM, BN, W, WINDOW, STRIDE_KV)
    tl.store(O + q_off, (acc / l_i[:, None]).to(O.dtype.element_ty), mask=rows[:, None] < n_q)
    lse = (m_i + tl.log2(l_i)) / LOG2E_C  # log2 units back to natural log
    tl.store(LSE + h.to(tl.int64) * TOTAL_Q + q0 + rows, lse, mask=rows < n_q)


# ---------------------------------------------------------------------------------------------
# Launch wrapper
# ---------------------------------------------------------------------------------------------
def tiling(head_dim: int, dtype=None, **overrides) -> Tiling:
    """flash2's forward tiling (block_m Q rows, block_n K/V rows); the grid order is fixed to ``rows``."""
    cfg = _common.pass_tiling(ALGO, FWD, head_dim, overrides)
    if cfg.grid_order != "rows":
        raise ConfigError("grid_order", "the varlen kernel launches the Q blocks of one head together ('rows')")
    return cfg


def cu_seqlens(seq_lens, device) -> torch.Tensor:
    """The packing offsets of ``seq_lens``: int32 (B + 1,), 0 first, the total last."""
    lens = torch.tensor([0, *seq_lens], dtype=torch.int32)
    return lens.cumsum(0, dtype=torch.int32).to(device)


def random_packed(seq_lens, heads: int, kv_heads: int, head_dim: int, dtype, device, generator=None):
    """Random packed q (total, H, d), k and v (total, Hkv, d) for a causal call and their ``cu_seqlens``."""
    total = sum(seq_lens)

    def randn(n_heads):
        return torch.randn(total, n_heads, head_dim, generator=generator, device=device).to(dtype)

    return randn(heads), randn(kv_heads), randn(kv_heads), cu_seqlens(seq_lens, device)


def _check(q, k, v, cu_seqlens_q, cu_seqlens_k, max_seqlen_q, max_seqlen_k, causal, window) -> None:
    """Refuse bad shapes, dtypes, offsets and a window without causal, all from host-side facts (no sync)."""
    if q.dim() != 3 or k.dim() != 3 or tuple(v.shape) != tuple(k.shape):
        raise ValueError(f"q must be (total_q, H, d) and k, v equal (total_k, Hkv, d), got {tuple(q.shape)}, "
                         f"{tuple(k.shape)}, {tuple(v.shape)}")
    if k.shape[2] != q.shape[2] or q.shape[1] % k.shape[1]:
        raise ValueError(f"k shape {tuple(k.shape)} does not fit q shape {tuple(q.shape)} (head_dim, heads % kv_heads)")
    _common.check_head_dim(q.shape[2])
    if q.dtype not in DTYPES or k.dtype != q.dtype or v.dtype != q.dtype:
        raise ValueError(f"dtype must be fp16 or bf16 and equal for q, k, v; got {q.dtype}, {k.dtype}, {v.dtype}")
    if not (q.is_contiguous() and k.is_contiguous() and v.is_contiguous()):
        raise ValueError("q, k, v must be contiguous (a hidden copy would add memory traffic)")
    for name, cu in (("cu_seqlens_q", cu_seqlens_q), ("cu_seqlens_k", cu_seqlens_k)):
        if cu.dtype != torch.int32 or cu.dim() != 1 or cu.device != q.device:
            raise ValueError(f"{name} must be int32 (B + 1,) on {q.device}, got {cu.dtype} {tuple(cu.shape)} "
                             f"on {cu.device}")
    if cu_seqlens_q.shape != cu_seqlens_k.shape:
        raise ValueError(f"cu_seqlens_q and cu_seqlens_k must have one entry per sequence plus one, got "
                         f"{cu_seqlens_q.shape[0]} and {cu_seqlens_k.shape[0]}")
    if window is not None and (not causal or isinstance(window, bool) or not isinstance(window, int) or window < 1):
        raise ValueError(f"window must be an int >= 1 and needs causal=True, got window={window!r}, causal={causal}")
    if causal and (max_seqlen_q != max_seqlen_k or q.shape[0] != k.shape[0]
                   or (cu_seqlens_q is not cu_seqlens_k and q.device.type == "cpu"
                       and not torch.equal(cu_seqlens_q, cu_seqlens_k))):
        raise ValueError("causal attention needs each sequence's query length == key length")


def _check_lens(seq_lens, cu_seqlens_q) -> tuple[int, ...]:
    lens = tuple(int(n) for n in seq_lens)
    if len(lens) != cu_seqlens_q.shape[0] - 1:
        raise ValueError(f"seq_lens has {len(lens)} lengths for {cu_seqlens_q.shape[0] - 1} sequences")
    return lens


def _host_lens(seq_lens, cu_seqlens_q, cu_seqlens_k) -> tuple[int, ...]:
    """``seq_lens`` checked against both packings (a sync: for reports, not launches). A :class:`Problem`
    gives each request one length, its query and key length, so the packings must agree."""
    lens = _check_lens(seq_lens, cu_seqlens_q)
    cu_q, cu_k = cu_seqlens_q.tolist(), cu_seqlens_k.tolist()
    if cu_q != cu_k or [b - a for a, b in zip(cu_q, cu_q[1:])] != list(lens):
        raise ValueError(f"seq_lens {list(lens)} must be every sequence's query and key length; "
                         f"cu_seqlens_q {cu_q}, cu_seqlens_k {cu_k}")
    return lens


def run_config(q, k, v, cu_seqlens_q, cu_seqlens_k, seq_lens, causal=False, window=None, **overrides) -> dict:
    """The configuration ``attention_varlen`` runs with, as ``RunConfig.to_dict()``: the sequence lengths
    (``seq_lens``, host ints: the query and key length of each) and the resolved forward tiling."""
    lens = _host_lens(seq_lens, cu_seqlens_q, cu_seqlens_k)
    _check(q, k, v, cu_seqlens_q, cu_seqlens_k, max(lens), max(lens), causal, window)
    problem = Problem(batch=len(lens), heads=q.shape[1], kv_heads=k.shape[1], seq_q=max(lens), head_dim=q.shape[2],
                      dtype=_common.DTYPE_NAMES[q.dtype], causal=bool(causal), seq_lens=lens, window=window)
    return RunConfig(algo=ALGO, problem=problem, tiling=tiling(q.shape[2], **overrides)).to_dict()


def attention_varlen(q, k, v, cu_seqlens_q, cu_seqlens_k, max_seqlen_q, max_seqlen_k, causal=False, window=None,
                     sm_scale=None, return_lse=False, seq_lens=None, **overrides):
    """softmax(sm_scale · Q Kᵀ [+ causal / window mask]) V per packed sequence, forward only (no autograd).

    Returns O (total_q, H, d), and with ``return_lse`` also LSE (H, total_q) fp32 (written either way).
    ``seq_lens`` (host ints), if given, is checked against the number of sequences. Launches in ``LAUNCHES``.
    """
    _check(q, k, v, cu_seqlens_q, cu_seqlens_k, max_seqlen_q, max_seqlen_k, causal, window)
    if seq_lens is not None:
        _check_lens(seq_lens, cu_seqlens_q)
    cfg = tiling(q.shape[2], **overrides)
    total_q, heads, d = q.shape
    batch, kv_heads = cu_seqlens_q.shape[0] - 1, k.shape[1]
    scale = _common.default_scale(d, sm_scale)
    LAUNCHES.clear()
    with torch.no_grad():
        o = torch.empty_like(q)
        lse = torch.empty((heads, total_q), device=q.device, dtype=torch.float32)
        launch(LAUNCHES, flash2_varlen_fwd, (triton.cdiv(max_seqlen_q, cfg.block_m), batch * heads), q, k, v, o, lse,
               cu_seqlens_q, cu_seqlens_k, heads, kv_heads, total_q, window or 0, scale * LOG2E,
               CAUSAL=bool(causal), WINDOW=window is not None, D=d, BM=cfg.block_m, BN=cfg.block_n,
               STRIDE_Q=heads * d, STRIDE_KV=kv_heads * d, num_warps=cfg.warps, num_stages=cfg.stages)
    return (o, lse) if return_lse else o
