"""Default launch configurations of each algorithm's kernels, and their resolution against a user's overrides.

The one place these defaults live: the simulator's schedules and the Triton kernels in
``iosim.kernels`` both resolve their tiles here, so a kernel launches exactly what its schedule
models. A user's :class:`~iosim.schedule.problem.Tiling` gives overrides (``None`` = default) that
apply to every pass; each pass resolves them against its own defaults, because FlashAttention-2's
backward is tiled differently from its forward (K/V rows per CTA, Q rows per step).
"""
from __future__ import annotations

from dataclasses import replace

from iosim.schedule.problem import ConfigError, RunConfig, Tiling

FWD, BWD = "fwd", "bwd"

# Standard attention: 128 × 128 tiles for every matmul kernel (the softmax rows pick their own warps).
STANDARD = Tiling(block_m=128, block_n=128, warps=4, stages=2)
# FlashAttention-1: 64 Q rows against 128 K/V rows, one stage (the paper's loop issues loads as it needs them).
FLASH1 = Tiling(block_m=64, block_n=128, warps=4, stages=1)
# FlashAttention-2 forward: FA2's own Triton baseline uses 128-row Q blocks and 4 warps (8 for d > 64);
# block_n = 64 follows the Triton tutorial's later default.
FLASH2_FWD = Tiling(block_m=128, block_n=64, warps=4, stages=2)
FLASH2_WARPS_LARGE_D = 8  # warps of the forward for head dims above 64
# FlashAttention-2 backward: the FA2 CUDA table for ≥144 KB shared memory (64 × 128, 8 warps); with
# 4 warps the Triton backward spills registers at d = 64 (220 B/thread on an H200, 2.4× slower).
FLASH2_BWD = Tiling(block_m=64, block_n=128, warps=8, stages=2)

GRID_ORDERS = {"flash2": ("rows", "heads")}  # algorithms whose forward grid order is selectable


def default_tiling(algo: str, pass_: str, head_dim: int) -> Tiling:
    """The fully specified defaults of ``algo``'s kernels in one pass (``fwd`` or ``bwd``)."""
    if pass_ not in (FWD, BWD):
        raise ValueError(f"pass_(={pass_!r}) must be one of {FWD}, {BWD}")
    if algo.startswith("standard"):
        return STANDARD
    if pass_ == BWD:  # flash1's backward is FlashAttention-2's
        return FLASH2_BWD
    if algo == "flash1":
        return FLASH1
    return replace(FLASH2_FWD, warps=FLASH2_FWD.warps if head_dim <= 64 else FLASH2_WARPS_LARGE_D)


def resolve_tiling(algo: str, pass_: str, head_dim: int, overrides: Tiling) -> Tiling:
    """``overrides`` with every ``None`` replaced by the pass's default; the backward grid order is fixed."""
    if overrides.grid_order != "rows" and overrides.grid_order not in GRID_ORDERS.get(algo, ("rows",)):
        raise ConfigError("grid_order", f"'heads' is modelled for flash2 only (its Triton kernel takes it), not {algo}")
    base = default_tiling(algo, pass_, head_dim)
    given = {k: v for k, v in vars(overrides).items() if v is not None and k != "grid_order"}
    order = overrides.grid_order if pass_ == FWD else "rows"
    return replace(base, **given, grid_order=order)


def resolve(config: RunConfig) -> RunConfig:
    """``config`` with both passes' tilings fully specified; resolving a resolved config changes nothing.

    The forward's goes to ``tiling``, the backward's (with ``problem.backward``) to ``backward_tiling``.
    A config that already names a ``backward_tiling`` keeps it (resolved against the backward defaults).
    """
    d = config.problem.head_dim
    fwd = resolve_tiling(config.algo, FWD, d, config.tiling)
    bwd = None
    if config.problem.backward:
        bwd = resolve_tiling(config.algo, BWD, d, config.backward_tiling or config.tiling)
    return replace(config, tiling=fwd, backward_tiling=bwd)


__all__ = ["default_tiling", "resolve_tiling", "resolve", "FWD", "BWD", "GRID_ORDERS"]
