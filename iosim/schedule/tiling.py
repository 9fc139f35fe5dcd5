"""Default launch configurations of each algorithm's kernels, and their resolution against a user's overrides.

The one place these defaults live: the simulator's schedules and the Triton kernels in
``iosim.kernels`` both resolve their tiles here, so a kernel launches exactly what its schedule
models. A user's :class:`~iosim.schedule.problem.Tiling` gives overrides (``None`` = default) that
apply to every pass; each pass resolves them against its own defaults, because FlashAttention-2's
backward is tiled differently from its forward (K/V rows per CTA, Q rows per step).
"""
from __future__ import annotations

import math
from dataclasses import replace

from iosim.schedule.problem import ConfigError, RunConfig, Tiling

FWD, BWD = "fwd", "bwd"

# Standard attention: 128 × 128 tiles for every matmul kernel (the softmax rows pick their own warps).
STANDARD = Tiling(block_m=128, block_n=128, warps=4, stages=2)
STANDARD_WARPS_LARGE_D = 8  # above d = 128: a 128 × d fp32 output tile at 4 warps spills ~1 KB a thread (PV, dQ, dK, dV)
# FlashAttention-1: 64 Q rows against 128 K/V rows, one stage (the paper's loop issues loads as it needs them).
FLASH1 = Tiling(block_m=64, block_n=128, warps=4, stages=1)
# FlashAttention-2 forward: FA2's own Triton baseline uses 128-row Q blocks and 4 warps (8 for d > 64);
# block_n = 64 follows the Triton tutorial's later default.
FLASH2_FWD = Tiling(block_m=128, block_n=64, warps=4, stages=2)
FLASH2_WARPS_LARGE_D = 8  # warps of the forward for head dims above 64
# FlashAttention-2 backward: the FA2 CUDA table for ≥144 KB shared memory (64 × 128, 8 warps); with
# 4 warps the Triton backward spills registers at d = 64 (220 B/thread on an H200, 2.4× slower).
FLASH2_BWD = Tiling(block_m=64, block_n=128, warps=8, stages=2)
# Above d = 128: 32 K/V rows a CTA, the largest block Triton 3.6 and 3.9 compile at d = 256 without spilling at two
# stages (148 KB of shared memory; 64 × 64 as FlashAttention-2's CUDA backward takes 262 KB there, over an
# H100's 227, and spills 392-568 bytes a thread at one or two stages).
FLASH2_BWD_LARGE_D = Tiling(block_m=64, block_n=32, warps=8, stages=2)

# Flash-decoding (split-KV): one CTA per (key/value head, split) holds the G query heads of its group
# and their query rows together (block_m: those rows, padded to a tensor-core tile), and streams its
# share of the K/V length in 128-row blocks (FlashAttention-2's split-KV block for d = 128; on the H200
# 64-row blocks kept too few bytes in flight per CTA at batch 8: 273 µs against 257 µs at 128 rows, B = 8,
# KV = 32K, d = 128); a second kernel combines the splits.
FLASH_DECODE = Tiling(block_m=None, block_n=128, warps=4, stages=2)
# PyTorch SDPA's kernels (iosim.schedule.references): head dim -> (forward, backward) tiling of the kernels
# each backend launches on sm_90; warps are those that compute (cuDNN's two consumer warpgroups).
# cuDNN: flash_fprop_wgmma_*_64x128x<d> (two consumers of 64 Q rows against 128 K/V rows) and
# flash_bprop_wgmma_* (128 K/V rows a CTA, 64 Q rows a step); FlashAttention-2's CUDA kernels:
# Flash_fwd_kernel_traits<d, bm, bn, warps> and Flash_bwd_kernel_traits<d, bm, bn, warps, ...>.
REFERENCE_TILES = {
    "sdpa_cudnn": {d: (Tiling(block_m=128, block_n=128, warps=8, stages=2), Tiling(block_m=64, block_n=128, warps=8, stages=2))
                   for d in (64, 128)},
    "sdpa_flash": {64: (Tiling(block_m=128, block_n=128, warps=4, stages=2), Tiling(block_m=128, block_n=128, warps=8, stages=2)),
                   128: (Tiling(block_m=128, block_n=64, warps=4, stages=2), Tiling(block_m=64, block_n=128, warps=8, stages=2))},
}
MIN_ROWS = 16  # the smallest M of a tensor-core tile (tl.dot)
MAX_SPLITS = 128  # FlashAttention-2's cap on splits

GRID_ORDERS = {"flash2": ("rows", "heads")}  # algorithms whose forward grid order is selectable


def decode_rows(group: int, seq_q: int) -> int:
    """Rows of one flash-decoding CTA: the group's query heads × query positions, padded to a power of two ≥ 16."""
    return max(MIN_ROWS, 1 << (group * seq_q - 1).bit_length())


def decode_splits(ctas: int, sm_count: int, n_blocks: int, max_splits: int = MAX_SPLITS) -> int:
    """Splits of the K/V length as FlashAttention-2 chooses them (``num_splits_heuristic``, flash_api.cpp,
    called with two CTAs per SM): none when the CTAs already fill 80 % of the slots; else the fewest
    splits whose waves are within 85 % of the best wave efficiency, among split counts that change
    the K/V blocks per split."""
    slots = 2 * sm_count
    if ctas >= 0.8 * slots:
        return 1
    top = min(max_splits, slots, n_blocks)

    def eligible(n: int) -> bool:
        return n == 1 or -(-n_blocks // n) != -(-n_blocks // (n - 1))

    def efficiency(n: int) -> float:
        waves = ctas * n / slots
        return waves / math.ceil(waves)

    best = max((efficiency(n) for n in range(1, top + 1) if eligible(n)), default=1.0)
    return next((n for n in range(1, top + 1) if eligible(n) and efficiency(n) >= 0.85 * best), 1)


def decode_plan_blocks(seq_k: int, block_n: int, window: int | None = None) -> int:
    """K/V blocks flash-decoding's split plan divides: those of the cache's ``seq_k`` rows (the allocation,
    the longest request's), or with a window at most the cdiv(W, block_n) + 1 blocks W keys can touch."""
    n_blocks = -(-seq_k // block_n)
    return n_blocks if window is None else min(n_blocks, -(-window // block_n) + 1)


def decode_split_blocks(n_blocks: int, splits: int) -> tuple[int, int]:
    """K/V blocks per split and the splits that then hold any (the last ones may be empty otherwise)."""
    per = -(-n_blocks // max(1, min(splits, n_blocks)))
    return per, -(-n_blocks // per)


def default_tiling(algo: str, pass_: str, head_dim: int, impl: str | None = None) -> Tiling:
    """The fully specified defaults of ``algo``'s kernels in one pass (``fwd`` or ``bwd``); ``impl``: of
    PyTorch SDPA's kernels of that name rather than iosim's."""
    if pass_ not in (FWD, BWD):
        raise ValueError(f"pass_(={pass_!r}) must be one of {FWD}, {BWD}")
    if impl is not None:
        tiles = REFERENCE_TILES[impl].get(head_dim)
        if tiles is None:
            raise ConfigError("head_dim", f"{impl} is modelled at head dims {', '.join(map(str, REFERENCE_TILES[impl]))} "
                                          f"(where its kernels' code was read), got {head_dim}")
        return tiles[pass_ == BWD]
    if algo.startswith("standard"):
        return STANDARD if head_dim <= 128 else replace(STANDARD, warps=STANDARD_WARPS_LARGE_D)
    if algo == "flash_decode":
        if pass_ == BWD:
            raise ConfigError("backward", "flash_decode is a forward (inference) kernel; it has no backward")
        return FLASH_DECODE
    if pass_ == BWD:  # flash1's backward is FlashAttention-2's
        return FLASH2_BWD if head_dim <= 128 else FLASH2_BWD_LARGE_D
    if algo == "flash1":
        return FLASH1
    return replace(FLASH2_FWD, warps=FLASH2_FWD.warps if head_dim <= 64 else FLASH2_WARPS_LARGE_D)


def resolve_tiling(algo: str, pass_: str, head_dim: int, overrides: Tiling, impl: str | None = None) -> Tiling:
    """``overrides`` with every ``None`` replaced by the pass's default; the backward grid order is fixed."""
    if overrides.grid_order != "rows" and overrides.grid_order not in GRID_ORDERS.get(algo, ("rows",)):
        raise ConfigError("grid_order", f"'heads' is modelled for flash2 only (its Triton kernel takes it), not {algo}")
    base = default_tiling(algo, pass_, head_dim, impl)
    given = {k: v for k, v in vars(overrides).items() if v is not None and k != "grid_order"}
    order = overrides.grid_order if pass_ == FWD else "rows"
    return replace(base, **given, grid_order=order)


def resolve(config: RunConfig) -> RunConfig:
    """``config`` with both passes' tilings fully specified; resolving a resolved config changes nothing.

    The forward's goes to ``tiling``, the backward's (with ``problem.backward``) to ``backward_tiling``.
    A config that already names a ``backward_tiling`` keeps it (resolved against the backward defaults).
    """
    d = config.problem.head_dim
    fwd = resolve_tiling(config.algo, FWD, d, config.tiling, config.impl)
    if config.algo == "flash_decode":
        p = config.problem
        rows = decode_rows(p.group, p.seq_q)
        if fwd.block_m is not None and fwd.block_m < rows:
            raise ConfigError("block_m", f"flash_decode holds a group's {p.group} heads × {p.seq_q} query rows in one "
                                         f"CTA: needs >= {rows}, got {fwd.block_m}")
        fwd = replace(fwd, block_m=fwd.block_m or rows)
    bwd = None
    if config.problem.backward:
        bwd = resolve_tiling(config.algo, BWD, d, config.backward_tiling or config.tiling, config.impl)
    return replace(config, tiling=fwd, backward_tiling=bwd)


PRE_PREFIXES = ("prep", "delta")  # how a word of a backward preprocess's name begins (``_bwd_preprocess``, ``_attn_bwd_delta``)


def preprocess_name(name: str) -> bool:
    """Whether a kernel's name says it is a backward's preprocess: a word of it (between underscores) begins with
    one of :data:`PRE_PREFIXES` or is ``pre``; ``prefill``, ``prefetch`` are not."""
    words = [w for w in name.lower().split("_") if w]
    return any(w == "pre" or w.startswith(PRE_PREFIXES) for w in words)


def is_preprocess(launch: dict) -> bool:
    """Whether a launch is a backward's preprocess (D = rowsum(dO∘O)): its name says so (:func:`preprocess_name`)."""
    return preprocess_name(launch["kernel"])


def preprocess_tiling(launch: dict, seq_q: int, bh: int) -> dict:
    """A backward preprocess's launch as the run config's ``preprocess_tiling``: the rows each CTA covers (the
    ``bh`` · ``seq_q`` rows over its grid, a power of two of at least 16, as tiles are) and its warps."""
    rows = max(16, -(-bh * seq_q // max(1, math.prod(launch["grid"]))))
    return {"block_m": 1 << (rows - 1).bit_length(), "warps": launch.get("num_warps")}


def launched_preprocess(launches: list[dict], seq_q: int, bh: int) -> dict | None:
    """:func:`preprocess_tiling` of the first preprocess among a call's launch records (None: it launches none)."""
    pre = next((x for x in launches if is_preprocess(x)), None)
    return None if pre is None else preprocess_tiling(pre, seq_q, bh)


__all__ = ["default_tiling", "resolve_tiling", "resolve", "decode_rows", "decode_splits", "decode_plan_blocks", "decode_split_blocks",
           "FWD", "BWD", "GRID_ORDERS", "REFERENCE_TILES", "PRE_PREFIXES", "is_preprocess",
           "preprocess_name", "preprocess_tiling", "launched_preprocess"]
