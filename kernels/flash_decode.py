"""Flash-decoding (split-KV): a few query rows against a long K/V cache, the K/V length split across CTAs.

Forward only (inference), no causal mask. With R = G·Nq rows per key/value head (G = H / Hkv query
heads of a group × Nq query positions) and ``used`` splits of SPLIT = per·block_n K/V rows:

``decode_split``  grid (used, B·Hkv): per CTA read R·d of Q (dtype) and 2·min(SPLIT, rest)·d of K, V
                  (dtype); write R·d of partial O and R of logsumexp (fp32), or with one split R·d of O
                  (dtype). In all: Q read ``used`` times, K and V once.
``decode_reduce`` grid (B·H·Nq,), only when used > 1: per CTA read used·(d + 1) fp32 partials of one query
                  row and write d of O (dtype). In all: the partials are written once and read once,
                  2·B·H·Nq·used·(d + 1)·4 bytes on top of the one-split traffic.

A ragged batch (``seq_lens``: request b uses the first nk_b rows of its cache, as
``flash_attn_with_kvcache``'s ``cache_seqlens``) or a window (the last W keys of each cache) launches
``decode_split_ragged`` and ``decode_reduce_ragged`` instead. The split plan (``used``, ``per``) comes
from the allocation on the host, as FlashAttention plans it without reading the lengths
(:func:`iosim.schedule.tiling.decode_plan_blocks`); request b's splits start at its window's first
block fb_b = start_b // block_n (start_b = max(nk_b − W, 0), 0 without a window) and only the first
used_b = cdiv(cdiv(nk_b, block_n) − fb_b, per) of them hold keys:

``decode_split_ragged``  grid (used, B·Hkv): a CTA of an empty split (s ≥ used_b) reads and writes
                         nothing; the others read R·d of Q and 2·BN·d per K/V block of rows
                         [(fb_b + s·per)·BN, min(that + per·BN, nk_b)) (whole blocks; a paged cache also
                         BN / PAGE table entries per block) and write as ``decode_split`` does.
``decode_reduce_ragged`` grid (B·H·Nq,), only when used > 1: read nk_b (int32) and used_b·(d + 1) fp32
                         partials of one query row, write d of O (dtype).
"""
from __future__ import annotations

import functools
from dataclasses import replace

import torch
import triton
import triton.language as tl

from iosim.kernels import _common
from iosim.kernels._common import LOG2E, LOG2E_C, launch, mma
from iosim.kernels.flash2 import _fwd_blocks
from iosim.schedule.problem import ConfigError, Problem, RunConfig, Tiling
from iosim.schedule.tiling import FWD, decode_plan_blocks, decode_split_blocks, decode_splits

ALGO = "flash_decode"
# decode_reduce has no loop to tile or pipeline: 4 warps and the default 2 stages, as
# iosim.schedule.flash_decode models it.
REDUCE_WARPS, REDUCE_STAGES = 4, 2
INTERPRETER_SMS = 4  # the interpreter has no SMs: choose default splits as for a 4-SM GPU
LAUNCHES: list[dict] = []


def reference(q, k, v, sm_scale=None, splits=3, block_n=64, seq_lens=None, window=None):
    """The two kernels in torch (fp32 math): per split of ``per`` K/V blocks a softmax and its
    logsumexp, then the splits combined with weights exp(lse_s − max). Returns O (input dtype).

    With ``seq_lens`` request b sees keys [0, seq_lens[b]) of its cache, with ``window`` only the last
    ``window`` of them; its splits start at the block holding its first key, planned from the allocation.
    """
    group = q.shape[1] // k.shape[1]
    k, v = k.repeat_interleave(group, 1).float(), v.repeat_interleave(group, 1).float()
    scale = _common.default_scale(q.shape[-1], sm_scale)
    per = decode_split_blocks(decode_plan_blocks(k.shape[2], block_n, window), splits)[0] * block_n
    lens = [k.shape[2]] * q.shape[0] if seq_lens is None else [int(n) for n in seq_lens]
    out = []
    for b, nk in enumerate(lens):
        start = max(nk - window, 0) if window else 0
        parts, lses = [], []
        for c0 in range(start // block_n * block_n, nk, per):
            keys = slice(max(c0, start), min(c0 + per, nk))
            s = q[b].float() @ k[b, :, keys].transpose(-1, -2) * scale
            lse = torch.logsumexp(s, -1, keepdim=True)
            parts.append(torch.exp(s - lse) @ v[b, :, keys])
            lses.append(lse)
        w = torch.softmax(torch.stack(lses), 0)  # exp(lse_s − max) / Σ_s exp(lse_s − max)
        out.append((w * torch.stack(parts)).sum(0))
    return torch.stack(out).to(q.dtype)


# ---------------------------------------------------------------------------------------------
# Kernels
# ---------------------------------------------------------------------------------------------
@triton.jit
def decode_split(Q, K, V, O, OP, LSEP, NK, R, USED, SPLIT, qk_scale, ONE: tl.constexpr,
                 D: tl.constexpr, BM: tl.constexpr, BN: tl.constexpr):
    """One (split s, key/value head bkv) per CTA: read the group's R query rows (R·d, padded to BM),
    stream K/V rows [s·SPLIT, min((s+1)·SPLIT, NK)) reading 2·BN·d per block; write R·d + R fp32
    partials (OP[bkv·R + r, s, :], LSEP[bkv·R + r, s]), or with ONE split R·d of O (dtype)."""
    s = tl.program_id(0)
    bkv = tl.program_id(1)
    rows = tl.arange(0, BM)
    ds = tl.arange(0, D)
    row0 = bkv.to(tl.int64) * R  # the group's query heads × positions are contiguous rows of q
    q_off = (row0 + rows[:, None]) * D + ds[None, :]
    q = tl.load(Q + q_off, mask=rows[:, None] < R, other=0.0)  # padded rows are zeros: finite, never stored
    kv_off = bkv.to(tl.int64) * NK * D + tl.arange(0, BN)[:, None] * D + ds[None, :]
    m_i = tl.full((BM,), float("-inf"), dtype=tl.float32)
    l_i = tl.zeros((BM,), dtype=tl.float32)
    acc = tl.zeros((BM, D), dtype=tl.float32)
    lo = s * SPLIT
    hi = tl.minimum(lo + SPLIT, NK)
    mid = lo + ((hi - lo) // BN) * BN  # full blocks; only the cache's ragged last block is masked
    acc, l_i, m_i = _fwd_blocks(acc, l_i, m_i, q, K + kv_off, V + kv_off, rows, lo, mid, NK, qk_scale,
                                False, False, D, BM, BN, 0, False, D)
    acc, l_i, m_i = _fwd_blocks(acc, l_i, m_i, q, K + kv_off, V + kv_off, rows, mid, hi, NK, qk_scale,
                                True, False, D, BM, BN, 0, False, D)
    _finish(acc, l_i, m_i, O, OP, LSEP, q_off, row0, rows, s, R, USED, ONE, D)


@triton.jit
def _finish(acc, l_i, m_i, O, OP, LSEP, q_off, row0, rows, s, R, USED, ONE: tl.constexpr, D: tl.constexpr):
    """A split's end: O itself when it is the only split, else its fp32 partial O and logsumexp."""
    ds = tl.arange(0, D)
    if ONE:
        tl.store(O + q_off, (acc / l_i[:, None]).to(O.dtype.element_ty), mask=rows[:, None] < R)
    else:
        prow = (row0 + rows) * USED + s
        tl.store(OP + prow[:, None] * D + ds[None, :], acc / l_i[:, None], mask=rows[:, None] < R)
        tl.store(LSEP + prow, (m_i + tl.log2(l_i)) / LOG2E_C, mask=rows < R)  # log2 units back to natural log


@triton.jit
def decode_split_paged(Q, K, V, BT, O, OP, LSEP, NK, R, USED, SPLIT, HKV, NPAGES, qk_scale, ONE: tl.constexpr,
                       PAGE: tl.constexpr, D: tl.constexpr, BM: tl.constexpr, BN: tl.constexpr):
    """``decode_split`` on a paged cache: K and V are pools of pages (pages, PAGE, HKV, d) and row t of
    sequence b lies in page BT[b, t // PAGE]; per block also read BN / PAGE int32 entries of the table."""
    s = tl.program_id(0)
    bkv = tl.program_id(1)
    b, hk = bkv // HKV, bkv % HKV
    rows = tl.arange(0, BM)
    ds = tl.arange(0, D)
    row0 = bkv.to(tl.int64) * R
    q_off = (row0 + rows[:, None]) * D + ds[None, :]
    q = tl.load(Q + q_off, mask=rows[:, None] < R, other=0.0)
    m_i = tl.full((BM,), float("-inf"), dtype=tl.float32)
    l_i = tl.zeros((BM,), dtype=tl.float32)
    acc = tl.zeros((BM, D), dtype=tl.float32)
    lo = s * SPLIT
    hi = tl.minimum(lo + SPLIT, NK)
    mid = lo + ((hi - lo) // BN) * BN
    table = BT + b.to(tl.int64) * NPAGES
    acc, l_i, m_i = _paged_blocks(acc, l_i, m_i, q, K, V, table, hk, HKV, lo, mid, NK, qk_scale, False, D, BM, BN, PAGE,
                                  0, False)
    acc, l_i, m_i = _paged_blocks(acc, l_i, m_i, q, K, V, table, hk, HKV, mid, hi, NK, qk_scale, True, D, BM, BN, PAGE,
                                  0, False)
    _finish(acc, l_i, m_i, O, OP, LSEP, q_off, row0, rows, s, R, USED, ONE, D)


@triton.jit
def _paged_blocks(acc, l_i, m_i, q, K, V, table, hk, HKV, lo, hi, NK, qk_scale, MASK: tl.constexpr,
                  D: tl.constexpr, BM: tl.constexpr, BN: tl.constexpr, PAGE: tl.constexpr,
                  W, WINDOW: tl.constexpr):
    """flash2's online softmax over K/V blocks [lo, hi), each row found through the block table; a
    masked block keeps keys below NK and, with WINDOW, the last W of them (keys ≥ NK − W)."""
    ds = tl.arange(0, D)
    for start in range(lo, hi, BN):
        cols = start + tl.arange(0, BN)
        if MASK:
            page = tl.load(table + cols // PAGE, mask=cols < NK, other=0)
        else:
            page = tl.load(table + cols // PAGE)
        at = ((page.to(tl.int64) * PAGE + cols % PAGE) * HKV + hk)[:, None] * D + ds[None, :]
        if MASK:
            k = tl.load(K + at, mask=cols[:, None] < NK, other=0.0)
        else:
            k = tl.load(K + at)
        sc = mma(q, tl.trans(k), tl.zeros((BM, BN), dtype=tl.float32)) * qk_scale
        if MASK:
            valid = cols[None, :] < NK
            if WINDOW:
                valid = valid & (cols[None, :] > NK - 1 - W)
            sc = tl.where(valid, sc, float("-inf"))
        m_new = tl.maximum(m_i, tl.max(sc, axis=1))
        p = tl.exp2(sc - m_new[:, None])
        alpha = tl.exp2(m_i - m_new)
        l_i = l_i * alpha + tl.sum(p, axis=1)
        if MASK:
            v = tl.load(V + at, mask=cols[:, None] < NK, other=0.0)
        else:
            v = tl.load(V + at)
        acc = mma(p.to(v.dtype), v, acc * alpha[:, None])
        m_i = m_new
    return acc, l_i, m_i


@triton.jit
def decode_reduce(OP, LSEP, O, USED, D: tl.constexpr, BS: tl.constexpr):
    """One query row per CTA: read USED logsumexps and USED·d partial O (fp32), write d of O (dtype)."""
    row = tl.program_id(0).to(tl.int64)
    ss = tl.arange(0, BS)
    ds = tl.arange(0, D)
    lse = tl.load(LSEP + row * USED + ss, mask=ss < USED, other=float("-inf"))
    w = tl.exp2((lse - tl.max(lse, axis=0)) * LOG2E_C)  # 0 for the padding splits
    part = tl.load(OP + (row * USED + ss[:, None]) * D + ds[None, :], mask=ss[:, None] < USED, other=0.0)
    o = tl.sum(part * w[:, None], axis=0) / tl.sum(w, axis=0)
    tl.store(O + row * D + ds, o.to(O.dtype.element_ty))


@triton.jit
def _window_start(nk, W, WINDOW: tl.constexpr):
    """First key a cache of nk keys shows: nk − W with a window (0 if shorter), else 0."""
    if WINDOW:
        start = tl.maximum(nk - W, 0)
    else:
        start = 0
    return start


@triton.jit
def decode_split_ragged(Q, K, V, BT, O, OP, LSEP, SEQLENS, NK_MAX, R, USED, PER, HKV, NPAGES, W, qk_scale,
                        ONE: tl.constexpr, PAGED: tl.constexpr, WINDOW: tl.constexpr, PAGE: tl.constexpr,
                        D: tl.constexpr, BM: tl.constexpr, BN: tl.constexpr):
    """``decode_split`` (PAGED: ``decode_split_paged``) over the nk = SEQLENS[b] keys of a cache, the last W
    of them with WINDOW: split s streams rows [lo, min(lo + PER·BN, nk)), lo = (fb + s·PER)·BN and fb the
    window's first block; a split past the keys reads and writes nothing. A contiguous cache holds
    NK_MAX rows per (batch, kv head)."""
    s = tl.program_id(0)
    bkv = tl.program_id(1)
    b = bkv // HKV
    nk = tl.load(SEQLENS + b)
    start = _window_start(nk, W, WINDOW)
    lo = (start // BN + s * PER) * BN
    hi = tl.minimum(lo + PER * BN, nk)
    if lo >= hi:
        return
    mid = lo + ((hi - lo) // BN) * BN  # whole blocks below nk; the ragged last one is masked
    edge = lo
    if WINDOW:  # the window's first block, if it holds keys below start, is masked
        edge = tl.minimum(mid, tl.maximum(lo, tl.cdiv(start, BN) * BN))
    rows = tl.arange(0, BM)
    ds = tl.arange(0, D)
    row0 = bkv.to(tl.int64) * R
    q_off = (row0 + rows[:, None]) * D + ds[None, :]
    q = tl.load(Q + q_off, mask=rows[:, None] < R, other=0.0)
    m_i = tl.full((BM,), float("-inf"), dtype=tl.float32)
    l_i = tl.zeros((BM,), dtype=tl.float32)
    acc = tl.zeros((BM, D), dtype=tl.float32)
    if PAGED:
        table = BT + b.to(tl.int64) * NPAGES
        hk = bkv % HKV
        if WINDOW:
            acc, l_i, m_i = _paged_blocks(acc, l_i, m_i, q, K, V, table, hk, HKV, lo, edge, nk, qk_scale, True,
                                          D, BM, BN, PAGE, W, WINDOW)
        acc, l_i, m_i = _paged_blocks(acc, l_i, m_i, q, K, V, table, hk, HKV, edge, mid, nk, qk_scale, False,
                                      D, BM, BN, PAGE, W, WINDOW)
        acc, l_i, m_i = _paged_blocks(acc, l_i, m_i, q, K, V, table, hk, HKV, mid, hi, nk, qk_scale, True,
                                      D, BM, BN, PAGE, W, WINDOW)
    else:
        kv_off = bkv.to(tl.int64) * NK_MAX * D + tl.arange(0, BN)[:, None] * D + ds[None, :]
        last = tl.zeros((BM,), dtype=tl.int32) + nk - 1  # every row is the newest query: keys > nk − 1 − W
        if WINDOW:
            acc, l_i, m_i = _fwd_blocks(acc, l_i, m_i, q, K + kv_off, V + kv_off, last, lo, edge, nk, qk_scale,
                                        True, False, D, BM, BN, W, WINDOW, D)
        acc, l_i, m_i = _fwd_blocks(acc, l_i, m_i, q, K + kv_off, V + kv_off, last, edge, mid, nk, qk_scale,
                                    False, False, D, BM, BN, W, WINDOW, D)
        acc, l_i, m_i = _fwd_blocks(acc, l_i, m_i, q, K + kv_off, V + kv_off, last, mid, hi, nk, qk_scale,
                                    True, False, D, BM, BN, W, WINDOW, D)
    _finish(acc, l_i, m_i, O, OP, LSEP, q_off, row0, rows, s, R, USED, ONE, D)


@triton.jit
def decode_reduce_ragged(OP, LSEP, O, SEQLENS, USED, PER, ROWS_PER_B, W, WINDOW: tl.constexpr,
                         D: tl.constexpr, BS: tl.constexpr, BN: tl.constexpr):
    """``decode_reduce`` over the splits that hold keys of this row's request: read its length (int32),
    used_b logsumexps and used_b·d partial O (fp32), write d of O (dtype)."""
    row = tl.program_id(0).to(tl.int64)
    nk = tl.load(SEQLENS + row // ROWS_PER_B)
    used = tl.cdiv(tl.cdiv(nk, BN) - _window_start(nk, W, WINDOW) // BN, PER)
    ss = tl.arange(0, BS)
    ds = tl.arange(0, D)
    lse = tl.load(LSEP + row * USED + ss, mask=ss < used, other=float("-inf"))
    w = tl.exp2((lse - tl.max(lse, axis=0)) * LOG2E_C)  # 0 for the empty and padding splits
    part = tl.load(OP + (row * USED + ss[:, None]) * D + ds[None, :], mask=ss[:, None] < used, other=0.0)
    o = tl.sum(part * w[:, None], axis=0) / tl.sum(w, axis=0)
    tl.store(O + row * D + ds, o.to(O.dtype.element_ty))


# ---------------------------------------------------------------------------------------------
# Launch wrappers
# ---------------------------------------------------------------------------------------------
def tiling(head_dim: int, dtype=None, **overrides) -> Tiling:
    """The single source's flash_decode defaults with ``overrides`` applied; block_m and splits stay
    None unless given (they depend on the call's shape: see :func:`launch_tiling`)."""
    return _common.pass_tiling(ALGO, FWD, head_dim, overrides)


def launch_tiling(q, k, v, causal=False, backward=False, page_size=None, window=None,
                  **overrides) -> tuple[Problem, Tiling, int]:
    """The call as a :class:`Problem` (``page_size``: the cache is paged; ``window``: the last W keys),
    the tiling it launches (block_m ≥ G·Nq, splits = those launched) and the K/V blocks per split.
    Causal and backward are refused: decode here is neither."""
    if causal:
        raise ConfigError("causal", "flash_decode has no causal mask (every query row sees the whole cache)")
    if backward:
        raise ConfigError("backward", "flash_decode is a forward (inference) kernel; it has no backward")
    problem = replace(_common.check_inputs(q, k, v, causal=False), page_size=page_size, window=window)
    return (problem, *_launch_plan(problem, q.device, overrides))


def _launch_plan(problem: Problem, device, overrides: dict) -> tuple[Tiling, int]:
    sms = _sm_count(device.index or 0) if device.type == "cuda" else INTERPRETER_SMS
    return _plan(problem, tuple(sorted(overrides.items())), sms)


@functools.lru_cache(maxsize=256)
def _plan(problem: Problem, overrides: tuple, sms: int) -> tuple[Tiling, int]:
    """The launch plan of a call shape (cached: a decode step is tens of microseconds, and choosing
    its splits in Python would otherwise cost as much as the kernels)."""
    # resolve() sets block_m = decode_rows(G, Nq) and refuses a given block_m below it
    cfg = RunConfig(algo=ALGO, problem=problem, tiling=_common.overrides_tiling(dict(overrides))).resolved().tiling
    n_blocks = decode_plan_blocks(problem.seq_k, cfg.block_n, problem.window)
    splits = cfg.splits if cfg.splits is not None else decode_splits(problem.bh_kv, sms, n_blocks)
    per, used = decode_split_blocks(n_blocks, splits)
    return replace(cfg, splits=used), per


@functools.lru_cache(maxsize=16)
def _sm_count(device: int) -> int:
    return torch.cuda.get_device_properties(device).multi_processor_count


def run_config(q, k, v, causal=False, backward=False, page_size=None, seq_lens=None, window=None, **overrides) -> dict:
    """The configuration ``attention(q, k, v, seq_lens=, window=, **overrides)`` (or, with ``page_size``,
    ``attention_paged`` on the pages of k, v) runs with: block_m and the splits it launches. With
    ``seq_lens`` the problem's seq_k is max(seq_lens); the splits are still planned from k's rows."""
    problem, cfg, _ = launch_tiling(q, k, v, causal, backward, page_size, window, **overrides)
    if seq_lens is not None:
        lens = _host_lens(seq_lens, problem)
        problem = replace(problem, seq_k=max(lens), seq_lens=lens)
    return RunConfig(algo=ALGO, problem=problem, tiling=cfg).to_dict()


def _host_lens(seq_lens, problem: Problem) -> tuple[int, ...]:
    """``seq_lens`` (list or tensor) as host ints, one per request, each in 1..the allocation's rows."""
    lens = tuple(int(n) for n in (seq_lens.tolist() if torch.is_tensor(seq_lens) else seq_lens))
    if len(lens) != problem.batch or not all(1 <= n <= problem.seq_k for n in lens):
        raise ValueError(f"seq_lens must hold {problem.batch} lengths in 1..{problem.seq_k}, got {list(lens)}")
    return lens


@functools.lru_cache(maxsize=16)
def _full_lens(batch: int, seq_k: int, device) -> torch.Tensor:
    """Every cache full (a window on equal caches): made once per shape, not a fill kernel per call."""
    return torch.full((batch,), seq_k, dtype=torch.int32, device=device)


def _device_lens(seq_lens, problem: Problem, device) -> torch.Tensor:
    """The lengths the ragged kernels read: a list checked and converted once, an int32 (B,) tensor on
    ``device`` taken as is (checking its values would sync), or every cache full when None."""
    if seq_lens is None:
        return _full_lens(problem.batch, problem.seq_k, device)
    if not torch.is_tensor(seq_lens):
        return torch.tensor(_host_lens(seq_lens, problem), dtype=torch.int32, device=device)
    if seq_lens.dtype != torch.int32 or tuple(seq_lens.shape) != (problem.batch,) or seq_lens.device != device:
        raise ValueError(f"seq_lens must be int32 ({problem.batch},) on {device}, got {seq_lens.dtype} "
                         f"{tuple(seq_lens.shape)} on {seq_lens.device}")
    return seq_lens


def to_pages(k, v, page_size: int, seed: int = 0):
    """A paged copy of contiguous k, v (B, Hkv, Nk, d), as vLLM keeps a KV cache: pools of pages
    (pages, page_size, Hkv, d) in a random order (the last page of a sequence padded with zeros) and
    the block table (B, pages per sequence, int32) that says which page holds which tokens."""
    batch, kv_heads, seq_k, d = k.shape
    n = triton.cdiv(seq_k, page_size)
    order = torch.randperm(batch * n, generator=torch.Generator().manual_seed(seed)).to(k.device)

    def pool(x):
        x = torch.nn.functional.pad(x, (0, 0, 0, n * page_size - seq_k))
        x = x.view(batch, kv_heads, n, page_size, d).permute(0, 2, 3, 1, 4).reshape(batch * n, page_size, kv_heads, d)
        out = torch.empty(x.shape, dtype=x.dtype, device=x.device)  # contiguous, whatever x's strides
        out[order] = x
        return out

    return pool(k), pool(v), order.view(batch, n).to(torch.int32)


def attention_paged(q, k_pages, v_pages, block_table, seq_k: int, sm_scale=None, seq_lens=None, window=None,
                    **overrides):
    """:func:`attention` on a paged cache (:func:`to_pages`): the first ``seq_k`` tokens of each sequence,
    or with ``seq_lens`` the first seq_lens[b] ≤ seq_k of sequence b (the splits planned from seq_k)."""
    batch, heads, seq_q, d = q.shape
    if k_pages.dim() != 4 or k_pages.shape != v_pages.shape or k_pages.shape[-1] != d:
        raise ValueError(f"k_pages and v_pages must be equal (pages, page_size, kv_heads, {d}), got "
                         f"{tuple(k_pages.shape)} and {tuple(v_pages.shape)}")
    if not (k_pages.is_contiguous() and v_pages.is_contiguous()):
        raise ValueError("k_pages and v_pages must be contiguous")
    page_size, kv_heads = k_pages.shape[1], k_pages.shape[2]
    if block_table.dim() != 2 or block_table.shape[0] != batch or block_table.shape[1] * page_size < seq_k:
        raise ValueError(f"block_table must be ({batch}, >= {triton.cdiv(seq_k, page_size)}), got "
                         f"{tuple(block_table.shape)}")
    problem = Problem(batch=batch, heads=heads, kv_heads=kv_heads, seq_q=seq_q, seq_k=seq_k, head_dim=d,
                      dtype=_common.DTYPE_NAMES[q.dtype], page_size=page_size, window=window)
    cfg, per = _launch_plan(problem, q.device, overrides)
    lens = None if seq_lens is None and window is None else _device_lens(seq_lens, problem, q.device)
    LAUNCHES.clear()
    with torch.no_grad():
        return forward(q, k_pages, v_pages, _common.default_scale(d, sm_scale), problem, cfg, per, LAUNCHES,
                       block_table.contiguous(), lens)


def attention(q, k, v, causal=False, sm_scale=None, seq_lens=None, window=None, **overrides):
    """softmax(sm_scale · Q Kᵀ) V, forward only (no autograd); kernels recorded in ``LAUNCHES``.

    ``seq_lens`` (int32 (B,) on the device, or a list): request b attends to the first seq_lens[b] rows
    of its cache (k, v allocated at Nk_max rows); ``window``: only to the last ``window`` of them.
    """
    problem, cfg, per = launch_tiling(q, k, v, causal, window=window, **overrides)
    lens = None if seq_lens is None and window is None else _device_lens(seq_lens, problem, q.device)
    LAUNCHES.clear()
    with torch.no_grad():
        return forward(q, k, v, _common.default_scale(problem.head_dim, sm_scale), problem, cfg, per, LAUNCHES,
                       seq_lens=lens)


def _partials(q, problem: Problem, used: int):
    """O and, with two or more splits, the fp32 partial O (rows, used, d) and logsumexps (rows, used)."""
    o = torch.empty_like(q)
    if used == 1:
        return o, o, o  # the partials are not touched when ONE
    rows = problem.bh_kv * problem.group * problem.seq_q
    return (o, torch.empty((rows, used, problem.head_dim), device=q.device, dtype=torch.float32),
            torch.empty((rows, used), device=q.device, dtype=torch.float32))


def forward(q, k, v, scale, problem: Problem, cfg: Tiling, per: int, launches, block_table=None, seq_lens=None):
    """Launch ``decode_split`` (``decode_split_paged`` with a block table) and, with two or more splits,
    ``decode_reduce``; with ``seq_lens`` (int32 (B,)) their ragged versions. Return O (input dtype)."""
    if seq_lens is not None:
        return _forward_ragged(q, k, v, scale, problem, cfg, per, launches, block_table, seq_lens)
    rows, used, d = problem.group * problem.seq_q, cfg.splits, problem.head_dim
    one = used == 1
    o, op, lsep = _partials(q, problem, used)
    if block_table is None:
        launch(launches, decode_split, (used, problem.bh_kv), q, k, v, o, op, lsep, problem.seq_k, rows, used,
               per * cfg.block_n, scale * LOG2E, ONE=one, D=d, BM=cfg.block_m, BN=cfg.block_n,
               num_warps=cfg.warps, num_stages=cfg.stages)
    else:
        launch(launches, decode_split_paged, (used, problem.bh_kv), q, k, v, block_table, o, op, lsep, problem.seq_k,
               rows, used, per * cfg.block_n, problem.kv_heads, block_table.shape[1], scale * LOG2E, ONE=one,
               PAGE=problem.page_size, D=d, BM=cfg.block_m, BN=cfg.block_n, num_warps=cfg.warps,
               num_stages=cfg.stages)
    if not one:
        launch(launches, decode_reduce, (problem.bh * problem.seq_q,), op, lsep, o, used, D=d,
               BS=triton.next_power_of_2(used), num_warps=REDUCE_WARPS, num_stages=REDUCE_STAGES)
    return o


def _forward_ragged(q, k, v, scale, problem: Problem, cfg: Tiling, per: int, launches, block_table, seq_lens):
    """Launch ``decode_split_ragged`` and, with two or more splits, ``decode_reduce_ragged``; return O."""
    rows, used, d = problem.group * problem.seq_q, cfg.splits, problem.head_dim
    o, op, lsep = _partials(q, problem, used)
    paged, window = block_table is not None, problem.window is not None
    table = block_table if paged else seq_lens  # BT is not read without PAGED
    launch(launches, decode_split_ragged, (used, problem.bh_kv), q, k, v, table, o, op, lsep, seq_lens,
           problem.seq_k, rows, used, per, problem.kv_heads, table.shape[-1] if paged else 0, problem.window or 0,
           scale * LOG2E, ONE=used == 1, PAGED=paged, WINDOW=window, PAGE=problem.page_size or 0, D=d,
           BM=cfg.block_m, BN=cfg.block_n, num_warps=cfg.warps, num_stages=cfg.stages)
    if used > 1:
        launch(launches, decode_reduce_ragged, (problem.bh * problem.seq_q,), op, lsep, o, seq_lens, used, per,
               problem.kv_heads * rows, problem.window or 0, WINDOW=window, D=d, BS=triton.next_power_of_2(used),
               BN=cfg.block_n, num_warps=REDUCE_WARPS, num_stages=REDUCE_STAGES)
    return o
