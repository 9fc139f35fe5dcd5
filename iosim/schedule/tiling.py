"""Default launch configurations of each algorithm's kernels, and their resolution against a user's overrides.

The one place these defaults live (and where a kernel's recorded launches are read back as a tiling:
:func:`tiling_from_launch`): the simulator's schedules and the Triton kernels in
``iosim.kernels`` both resolve their tiles here, so a kernel launches exactly what its schedule
models. A user's :class:`~iosim.schedule.problem.Tiling` gives overrides (``None`` = default) that
apply to every pass; each pass resolves them against its own defaults, because FlashAttention-2's
backward is tiled differently from its forward (K/V rows per CTA, Q rows per step).
"""
from __future__ import annotations

import math
import re
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


# Names a kernel's tile sizes go by (query rows, key/value rows per tile), as Triton kernels in the wild spell them.
TILE_NAMES = (("BLOCK_M", "BLOCK_N"), ("BM", "BN"), ("BLOCK_Q", "BLOCK_KV"),
              ("BLOCK_M1", "BLOCK_N1"))  # the last: a backward's first loop (Triton's tutorial: BLOCK_M2, BLOCK_N2 its second)
# Other spellings of the two tile sizes kernels in the wild use (BLOCK_SIZE_M, TILE_Q, Q_BLOCK_SIZE, BLOCK_K, ...):
# a block/tile word and a query-side (M, Q) or key-side (N, K, KV) letter, in either order.
_TILE_WORD = r"(?:BLOCK|BLK|TILE|BS)(?:_?SIZE)?"
_QUERY_TILE = re.compile(rf"^(?:{_TILE_WORD}_?(?:M|Q|QO)|(?:M|Q)_?{_TILE_WORD})$")
_KEY_TILE = re.compile(rf"^(?:{_TILE_WORD}_?(?:N|K|KV)|(?:N|K|KV)_?{_TILE_WORD})$")


def tile_sizes(launch: dict) -> tuple:
    """(query rows, key/value rows) of a launch's tile from its constexprs (:data:`TILE_NAMES`, else one name of
    each side spelled as :data:`_QUERY_TILE` and :data:`_KEY_TILE` say); (None, None) when it names none."""
    c = launch.get("constexprs") or {}
    for m, n in TILE_NAMES:
        if isinstance(c.get(m), int) and isinstance(c.get(n), int):
            return c[m], c[n]
    ints = {k.upper(): v for k, v in c.items() if isinstance(v, int) and not isinstance(v, bool) and v > 0}
    query = [v for k, v in ints.items() if _QUERY_TILE.match(k)]
    key = [v for k, v in ints.items() if _KEY_TILE.match(k)]
    if len(query) == 1 and len(key) == 1:
        return query[0], key[0]
    return None, None


def _has_tiles(launch: dict) -> bool:
    return tile_sizes(launch)[0] is not None


def main_launch(launches: list[dict], kind: str = "fwd") -> dict | None:
    """The attention kernel among a call's launches: with tile-size constexprs (:data:`TILE_NAMES`), not a
    preprocess (:func:`preprocess_name`); the largest grid if several; for ``kind`` ``bwd`` the
    last one whose name says ``bwd``/``backward``, for ``fwd`` the first one that does not."""
    def is_bwd(launch):
        return any(w in launch["kernel"].lower() for w in ("bwd", "backward"))

    def is_pre(launch):  # by its name's words: a "_prefill_" kernel is not a backward's preprocess
        return preprocess_name(launch["kernel"])

    pool = [x for x in launches if not is_pre(x) and (is_bwd(x) == (kind == "bwd"))]
    tiled = [x for x in pool if _has_tiles(x)] or pool
    if not tiled:
        return None
    return max(tiled, key=lambda x: math.prod(x["grid"]))


def tiling_from_launch(launch: dict, seq_q: int, bh: int | None = None, launches: int = 1) -> dict:
    """A launch as the simulator's tiling dict: tiles (:data:`TILE_NAMES`), warps, stages, grid order.

    The grid order is "heads" when grid[0] is not the number of query blocks; with no tile size to
    count them by, when grid[0] is the ``bh`` (batch × heads) slices and grid[1] is not. A one-dimensional
    grid of fewer CTAs than tiles (query blocks × ``bh``), launched once in the call (``launches``: how many
    times the call launched this kernel; a launcher that loops over the heads launches it once a head), is a
    persistent kernel's (``persistent``: its CTAs, each taking the tiles in turn), its tiles taken in "rows"
    order, query blocks first."""
    bm, bn = tile_sizes(launch)
    grid = tuple(launch["grid"]) + (1, 1)
    persistent = None
    if bm and bh and launches == 1 and grid[1] == grid[2] == 1 and grid[0] < math.ceil(seq_q / bm) * bh:
        persistent, heads_first = grid[0], False
    elif bm:
        heads_first = grid[0] != math.ceil(seq_q / bm)
    else:
        heads_first = bh is not None and grid[0] == bh and grid[1] != bh
    out = {"block_m": bm, "block_n": bn, "warps": launch.get("num_warps"), "stages": launch.get("num_stages"),
           "grid_order": "heads" if heads_first else "rows"}
    return out if persistent is None else out | {"persistent": persistent}


def launched_tilings(launches: list[dict], seq_q: int, bh: int, backward: bool = False) -> dict:
    """A user's kernel's tilings as its recorded launches say (the run config's fields): ``tiling``, its main forward
    launch's; with ``backward``, ``backward_tiling`` (its main backward launch's, rows order) and
    ``preprocess_tiling`` (its preprocess's rows per CTA and warps), where it launched them."""
    out = {}
    fwd = main_launch(launches, "fwd")
    if fwd is not None:
        out["tiling"] = tiling_from_launch(fwd, seq_q, bh, sum(x["kernel"] == fwd["kernel"] for x in launches))
    if backward:
        bwd = main_launch(launches, "bwd")
        if bwd is not None:
            out["backward_tiling"] = dict(tiling_from_launch(bwd, seq_q), grid_order="rows")
        pre = launched_preprocess(launches, seq_q, bh)
        if pre is not None:
            out["preprocess_tiling"] = pre
    return out


__all__ = ["default_tiling", "resolve_tiling", "resolve", "decode_rows", "decode_splits", "decode_plan_blocks", "decode_split_blocks",
           "FWD", "BWD", "GRID_ORDERS", "REFERENCE_TILES", "PRE_PREFIXES", "is_preprocess",
           "preprocess_name", "preprocess_tiling", "launched_preprocess", "TILE_NAMES", "tile_sizes", "main_launch",
           "tiling_from_launch", "launched_tilings"]
