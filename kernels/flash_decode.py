"""Flash-decoding (split-KV): a few query rows against a long K/V cache, the K/V length split across CTAs.

Forward only (inference), no causal mask. With R = G·Nq rows per key/value head (G = H / Hkv query
heads of a group × Nq query positions) and ``used`` splits of SPLIT = per·block_n K/V rows:

``decode_split``  grid (used, B·Hkv): per CTA read R·d of Q (dtype) and 2·min(SPLIT, rest)·d of K, V
                  (dtype); write R·d of partial O and R of logsumexp (fp32), or with one split R·d of O
                  (dtype). In all: Q read ``used`` times, K and V once.
``decode_reduce`` grid (B·H·Nq,), only when used > 1: per CTA read used·(d + 1) fp32 partials of one query
                  row and write d of O (dtype). In all: the partials are written once and read once,
                  2·B·H·Nq·used·(d + 1)·4 bytes on top of the one-split traffic.
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
from iosim.schedule.tiling import FWD, decode_split_blocks, decode_splits

ALGO = "flash_decode"
# decode_reduce has no loop to tile or pipeline: 4 warps and the default 2 stages, as
# iosim.schedule.flash_decode models it.
REDUCE_WARPS, REDUCE_STAGES = 4, 2
INTERPRETER_SMS = 4  # the interpreter has no SMs: choose default splits as for a 4-SM GPU
LAUNCHES: list[dict] = []


def reference(q, k, v, sm_scale=None, splits=3, block_n=64):
    """The two kernels in torch (fp32 math): per split of ``per`` K/V blocks a softmax and its
    logsumexp, then the splits combined with weights exp(lse_s − max). Returns O (input dtype)."""
    group = q.shape[1] // k.shape[1]
    k, v = k.repeat_interleave(group, 1).float(), v.repeat_interleave(group, 1).float()
    scale = _common.default_scale(q.shape[-1], sm_scale)
    per = decode_split_blocks(triton.cdiv(k.shape[2], block_n), splits)[0] * block_n
    parts, lses = [], []
    for c0 in range(0, k.shape[2], per):
        s = q.float() @ k[:, :, c0:c0 + per].transpose(-1, -2) * scale
        lse = torch.logsumexp(s, -1, keepdim=True)
        parts.append(torch.exp(s - lse) @ v[:, :, c0:c0 + per])
        lses.append(lse)
    w = torch.softmax(torch.stack(lses), 0)  # exp(lse_s − max) / Σ_s exp(lse_s − max)
    return (w * torch.stack(parts)).sum(0).to(q.dtype)


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
                                False, False, D, BM, BN)
    acc, l_i, m_i = _fwd_blocks(acc, l_i, m_i, q, K + kv_off, V + kv_off, rows, mid, hi, NK, qk_scale,
                                True, False, D, BM, BN)
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
    acc, l_i, m_i = _paged_blocks(acc, l_i, m_i, q, K, V, table, hk, HKV, lo, mid, NK, qk_scale, False, D, BM, BN, PAGE)
    acc, l_i, m_i = _paged_blocks(acc, l_i, m_i, q, K, V, table, hk, HKV, mid, hi, NK, qk_scale, True, D, BM, BN, PAGE)
    _finish(acc, l_i, m_i, O, OP, LSEP, q_off, row0, rows, s, R, USED, ONE, D)


@triton.jit
def _paged_blocks(acc, l_i, m_i, q, K, V, table, hk, HKV, lo, hi, NK, qk_scale, MASK: tl.constexpr,
                  D: tl.constexpr, BM: tl.constexpr, BN: tl.constexpr, PAGE: tl.constexpr):
    """flash2's online softmax over K/V blocks [lo, hi), each row found through the block table."""
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
            sc = tl.where(cols[None, :] < NK, sc, float("-inf"))
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


# ---------------------------------------------------------------------------------------------
# Launch wrappers
# ---------------------------------------------------------------------------------------------
def tiling(head_dim: int, dtype=None, **overrides) -> Tiling:
    """The single source's flash_decode defaults with ``overrides`` applied; block_m and splits stay
    None unless given (they depend on the call's shape: see :func:`launch_tiling`)."""
    return _common.pass_tiling(ALGO, FWD, head_dim, overrides)


def launch_tiling(q, k, v, causal=False, backward=False, page_size=None, **overrides) -> tuple[Problem, Tiling, int]:
    """The call as a :class:`Problem` (``page_size``: the cache is paged), the tiling it launches
    (block_m ≥ G·Nq, splits = those launched) and the K/V blocks per split. Causal and backward are
    refused: decode here is neither."""
    if causal:
        raise ConfigError("causal", "flash_decode has no causal mask (every query row sees the whole cache)")
    if backward:
        raise ConfigError("backward", "flash_decode is a forward (inference) kernel; it has no backward")
    problem = replace(_common.check_inputs(q, k, v, causal=False), page_size=page_size)
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
    n_blocks = triton.cdiv(problem.seq_k, cfg.block_n)
    splits = cfg.splits if cfg.splits is not None else decode_splits(problem.bh_kv, sms, n_blocks)
    per, used = decode_split_blocks(n_blocks, splits)
    return replace(cfg, splits=used), per


@functools.lru_cache(maxsize=16)
def _sm_count(device: int) -> int:
    return torch.cuda.get_device_properties(device).multi_processor_count


def run_config(q, k, v, causal=False, backward=False, page_size=None, **overrides) -> dict:
    """The configuration ``attention(q, k, v, **overrides)`` (or, with ``page_size``, ``attention_paged``
    on the pages of k, v) runs with: block_m and the splits it launches."""
    problem, cfg, _ = launch_tiling(q, k, v, causal, backward, page_size, **overrides)
    return RunConfig(algo=ALGO, problem=problem, tiling=cfg).to_dict()


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


def attention_paged(q, k_pages, v_pages, block_table, seq_k: int, sm_scale=None, **overrides):
    """:func:`attention` on a paged cache (:func:`to_pages`): the first ``seq_k`` tokens of each sequence."""
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
                      dtype=_common.DTYPE_NAMES[q.dtype], page_size=page_size)
    cfg, per = _launch_plan(problem, q.device, overrides)
    LAUNCHES.clear()
    with torch.no_grad():
        return forward(q, k_pages, v_pages, _common.default_scale(d, sm_scale), problem, cfg, per, LAUNCHES,
                       block_table.contiguous())


def attention(q, k, v, causal=False, sm_scale=None, **overrides):
    """softmax(sm_scale · Q Kᵀ) V, forward only (no autograd); kernels recorded in ``LAUNCHES``."""
    problem, cfg, per = launch_tiling(q, k, v, causal, **overrides)
    LAUNCHES.clear()
    with torch.no_grad():
        return forward(q, k, v, _common.default_scale(problem.head_dim, sm_scale), problem, cfg, per, LAUNCHES)


def forward(q, k, v, scale, problem: Problem, cfg: Tiling, per: int, launches, block_table=None):
    """Launch ``decode_split`` (``decode_split_paged`` with a block table) and, with two or more splits,
    ``decode_reduce``; return O (input dtype)."""
    rows, used, d = problem.group * problem.seq_q, cfg.splits, problem.head_dim
    o = torch.empty_like(q)
    one = used == 1
    if one:
        op = lsep = o  # not touched when ONE
    else:
        op = torch.empty((problem.bh_kv * rows, used, d), device=q.device, dtype=torch.float32)
        lsep = torch.empty((problem.bh_kv * rows, used), device=q.device, dtype=torch.float32)
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
