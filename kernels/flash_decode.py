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
from iosim.kernels._common import LOG2E, LOG2E_C, launch
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
    if ONE:
        tl.store(O + q_off, (acc / l_i[:, None]).to(O.dtype.element_ty), mask=rows[:, None] < R)
    else:
        prow = (row0 + rows) * USED + s
        tl.store(OP + prow[:, None] * D + ds[None, :], acc / l_i[:, None], mask=rows[:, None] < R)
        tl.store(LSEP + prow, (m_i + tl.log2(l_i)) / LOG2E_C, mask=rows < R)  # log2 units back to natural log


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


def launch_tiling(q, k, v, causal=False, backward=False, **overrides) -> tuple[Problem, Tiling, int]:
    """The call as a :class:`Problem`, the tiling it launches (block_m ≥ G·Nq, splits = those launched)
    and the K/V blocks per split. Causal and backward are refused: decode here is neither."""
    if causal:
        raise ConfigError("causal", "flash_decode has no causal mask (every query row sees the whole cache)")
    if backward:
        raise ConfigError("backward", "flash_decode is a forward (inference) kernel; it has no backward")
    problem = _common.check_inputs(q, k, v, causal=False)
    sms = _sm_count(q.device.index or 0) if q.device.type == "cuda" else INTERPRETER_SMS
    cfg, per = _plan(problem, tuple(sorted(overrides.items())), sms)
    return problem, cfg, per


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


def run_config(q, k, v, causal=False, backward=False, **overrides) -> dict:
    """The configuration ``attention(q, k, v, **overrides)`` runs with: block_m and the splits it launches."""
    problem, cfg, _ = launch_tiling(q, k, v, causal, backward, **overrides)
    return RunConfig(algo=ALGO, problem=problem, tiling=cfg).to_dict()


def attention(q, k, v, causal=False, sm_scale=None, **overrides):
    """softmax(sm_scale · Q Kᵀ) V, forward only (no autograd); kernels recorded in ``LAUNCHES``."""
    problem, cfg, per = launch_tiling(q, k, v, causal, **overrides)
    LAUNCHES.clear()
    with torch.no_grad():
        return forward(q, k, v, _common.default_scale(problem.head_dim, sm_scale), problem, cfg, per, LAUNCHES)


def forward(q, k, v, scale, problem: Problem, cfg: Tiling, per: int, launches):
    """Launch ``decode_split`` and, with two or more splits, ``decode_reduce``; return O (input dtype)."""
    rows, used, d = problem.group * problem.seq_q, cfg.splits, problem.head_dim
    o = torch.empty_like(q)
    one = used == 1
    if one:
        op = lsep = o  # not touched when ONE
    else:
        op = torch.empty((problem.bh_kv * rows, used, d), device=q.device, dtype=torch.float32)
        lsep = torch.empty((problem.bh_kv * rows, used), device=q.device, dtype=torch.float32)
    launch(launches, decode_split, (used, problem.bh_kv), q, k, v, o, op, lsep, problem.seq_k, rows, used,
           per * cfg.block_n, scale * LOG2E, ONE=one, D=d, BM=cfg.block_m, BN=cfg.block_n,
           num_warps=cfg.warps, num_stages=cfg.stages)
    if not one:
        launch(launches, decode_reduce, (problem.bh * problem.seq_q,), op, lsep, o, used, D=d,
               BS=triton.next_power_of_2(used), num_warps=REDUCE_WARPS, num_stages=REDUCE_STAGES)
    return o
