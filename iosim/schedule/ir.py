"""The kernel spec: a grid of CTAs, each reading, computing and writing tiles in three phases.

Every kernel iosim models has one shape: a CTA ``(slice, i, j)`` runs a *prologue* (tiles it reads
once), a *loop* over blocks ``u`` of a streamed dimension (tiles read, written or atomically added
per iteration), and an *epilogue* (tiles it writes once). A kernel is described by a list of
:class:`Pattern` — which tensor, in which phase, which rows and columns as a function of the CTA's
coordinates and of ``u`` — plus per-iteration FLOPs and its launch resources. How the engine turns
a cohort of co-launched CTAs into steps of accesses lives in :mod:`iosim.engine.cohorts`.
"""
from __future__ import annotations

from dataclasses import dataclass
from enum import Enum, IntEnum
from functools import cached_property
from typing import ClassVar

import numpy as np


class AccessKind(IntEnum):
    """What an access does to its bytes (an int, so the engine's hot loop compares it cheaply)."""

    READ = 0
    WRITE = 1
    ATOMIC = 2  # read-modify-write at the L2


class Phase(Enum):
    """When in a CTA's program a tile is touched."""

    PRO = "pro"  # once, before the loop
    LOOP = "loop"  # every iteration of the loop over u
    EPI = "epi"  # once, after the loop


class CausalMode(Enum):
    """Which loop blocks a causal kernel skips (every one is run when ``NONE``)."""

    NONE = ""
    STOP = "stop"  # forward: the loop over key blocks stops at the query block's diagonal
    START = "start"  # backward: the loop over query blocks starts at the key block's diagonal


class GridOrder(str, Enum):
    """Launch order of a grid: ``ROWS`` walks j, then i, then slice; ``HEADS`` walks slices fastest."""

    ROWS = "rows"
    HEADS = "heads"


class Program(Enum):
    """The shape of a CTA's program, which the engine's step generator follows."""

    TILE_LOOP = "tile_loop"  # prologue, one loop over u, epilogue: every kernel but one
    DOUBLE_LOOP = "double_loop"  # FlashAttention-1: one CTA per slice, K/V blocks outer, Q blocks inner


READ, WRITE, ATOMIC = AccessKind.READ, AccessKind.WRITE, AccessKind.ATOMIC
PRO, LOOP, EPI = Phase.PRO, Phase.LOOP, Phase.EPI

# Placement of a tensor: device memory (HBM/GDDR) or host memory reached over the host link.
HBM, HOST = "hbm", "host"


@dataclass(frozen=True)
class Tensor:
    """A (slices × rows × cols) array of ``elem_bytes``-byte elements, one slice per (batch, head)."""

    name: str
    slices: int
    rows: int
    cols: int
    elem_bytes: int
    placement: str = HBM
    row_unit: int = 1  # rows of the smallest tile any kernel reads or writes (line rows are a multiple)

    @property
    def slice_bytes(self) -> int:
        return self.rows * self.cols * self.elem_bytes

    @property
    def nbytes(self) -> int:
        return self.slices * self.slice_bytes


@dataclass(frozen=True)
class Pattern:
    """One tensor access of a CTA program; ``kv`` reads the key/value slice of a query head.

    ``rows`` and ``cols`` follow the CTA's ``i`` or ``j`` block, the loop block ``u``, or span ``all``.
    """

    tensor: str
    phase: Phase
    kind: AccessKind
    rows: str
    cols: str = "all"
    kv: bool = False
    fan: bool = False  # the CTA's slice is a key/value head: read the same rows of each of its G query heads


@dataclass(frozen=True)
class Flops:
    """Work of one CTA: tensor-core FLOPs, SIMT FP32 operations, special-function (exp) operations."""

    tensor: float = 0.0
    simt: float = 0.0
    sfu: float = 0.0

    def __add__(self, o: Flops) -> Flops:
        return Flops(self.tensor + o.tensor, self.simt + o.simt, self.sfu + o.sfu)

    def __mul__(self, k: float) -> Flops:
        return Flops(self.tensor * k, self.simt * k, self.sfu * k)


@dataclass(frozen=True)
class Ragged:
    """A variable-length batch's shape in one kernel: per request, the CTAs along i that have work (the
    rest exit before touching memory), the first loop block and the rows its loop streams; ``rows``
    clips the tiles of each named tensor to the rows the request holds. ``per_batch`` consecutive
    slices belong to one request."""

    per_batch: int
    tiles: tuple
    first: tuple
    loop_rows: tuple
    rows: tuple = ()  # (tensor name, rows per request)

    @cached_property
    def arrays(self) -> tuple:
        """tiles, first and loop_rows as int64 arrays indexed by request."""
        return tuple(np.asarray(x, dtype=np.int64) for x in (self.tiles, self.first, self.loop_rows))

    @cached_property
    def limits(self) -> dict:
        return {name: np.asarray(n, dtype=np.int64) for name, n in self.rows}


@dataclass(frozen=True)
class Kernel:
    """A grid of ``slices × ti × tj`` CTAs launched in ``order``, each running the same tile program."""

    program: ClassVar[Program] = Program.TILE_LOOP

    name: str
    slices: int  # query (batch, head) slices
    ti: int
    tj: int
    block_i: int  # rows of a tile along i
    block_j: int  # rows (of the j-indexed tensor) per tile along j
    block_u: int  # rows or columns per loop iteration
    patterns: tuple  # Pattern
    loop_extent: int = 0  # extent of the streamed dimension (0: no loop)
    iter_flops: Flops = Flops()
    end_flops: Flops = Flops()  # prologue + epilogue work of one CTA
    iter_sram: float = 0.0  # operand bytes read from shared memory per iteration
    causal: CausalMode = CausalMode.NONE
    causal_offset: int = 0  # a causal mask's diagonal: query row r sees keys up to r + causal_offset
    kv_group: int = 1  # query heads per key/value head
    heads: int = 1
    kv_heads: int = 1
    order: GridOrder = GridOrder.ROWS
    warps: int = 4
    stages: int = 2  # software pipeline depth: >= 2 overlaps a step's loads with its math
    mma: str = "fwd"  # which calibrated tensor-core efficiency its tile shapes run at ("fwd" or "bwd")
    smem_bytes: int = 0
    regs_per_thread: int = 64
    extents: tuple = ()  # (tensor name, rows, cols) to clip rectangles against
    split_blocks: int = 0  # > 0: CTA i (CTA j where tj > 1) loops over its share, blocks [i·split_blocks, (i+1)·split_blocks)
    window: int = 0  # > 0: local attention, a query row sees the ``window`` keys up to itself (causal STOP)
    ragged: Ragged | None = None  # a variable-length batch: each request's own extents
    lookups: int = 0  # dependent loads before a CTA can address its tiles (a request's length or offset read first)
    reverse: bool = False  # the loop walks its blocks from the last down (FlashAttention-2's CUDA kernels)
    launch: bool = True  # False: the second loop of the kernel before it, in that kernel's launch (dq: fused)
    persistent: int = 0  # > 0: a persistent kernel's CTAs, each taking the tiles (the grid's CTAs) in turn
    aten: str = ""  # a PyTorch pass: which of ATen's kernels it runs (fill, normal, uniform, copy, strided, broadcast, sum, other; iosim.costs.code.aten_code)

    @cached_property
    def _extent(self) -> dict:
        return {t: (r, c) for t, r, c in self.extents}

    def extent(self, tensor: str) -> tuple:
        """Rows and columns of ``tensor`` (what a tile spanning ``all`` covers)."""
        return self._extent[tensor]

    @property
    def ctas(self) -> int:
        return self.slices * self.ti * self.tj

    @property
    def n_loop(self) -> int:
        return -(-self.loop_extent // self.block_u) if self.loop_extent else 0

    # -- grid geometry ---------------------------------------------------------------------------
    def coords(self, g0: int, g1: int):
        """Slice, i, j of CTAs ``g0..g1`` in launch order."""
        g = np.arange(g0, g1, dtype=np.int64)
        per_slice = self.ti * self.tj
        if self.order == GridOrder.ROWS:
            sl, t = np.divmod(g, per_slice)
        else:
            t, sl = np.divmod(g, self.slices)
        i, j = np.divmod(t, self.tj)
        return sl, i, j

    def coord(self, g: int) -> tuple[int, int, int]:
        """Slice, i, j of CTA ``g``, in plain integers (:meth:`coords` of one CTA, without numpy's cost)."""
        per_slice = self.ti * self.tj
        if self.order == GridOrder.ROWS:
            sl, t = divmod(g, per_slice)
        else:
            t, sl = divmod(g, self.slices)
        i, j = divmod(t, self.tj)
        return sl, i, j

    def request(self, sl):
        """The request (batch item) of each slice of a variable-length batch."""
        return sl // self.ragged.per_batch

    def live(self, i, sl):
        """Which CTAs have work: all but a variable-length batch's CTAs past their request's rows."""
        if self.ragged is None:
            return np.ones(len(i), dtype=bool)
        return i < self.ragged.arrays[0][self.request(sl)]

    def loop_bounds(self, i, j, sl=None):
        """First loop block and trip count of each CTA (causal kernels skip fully masked blocks, a window
        the blocks below it; a variable-length batch's CTAs loop over their own request's blocks)."""
        n, first = self.n_loop, 0
        if self.ragged is not None:
            _, first, rows = (a[self.request(sl)] for a in self.ragged.arrays)
            n = -(-rows // self.block_u)
        start = np.zeros_like(i) + first
        if self.split_blocks and self.tj == 1:  # split-KV decode: each CTA along i streams its own share of the blocks
            start = np.minimum(start + i * self.split_blocks, n)
            trips = np.minimum(start + self.split_blocks, n) - start
        else:
            o = self.causal_offset
            if self.causal is CausalMode.STOP:  # forward: key blocks up to the query block's last row's diagonal
                stop = np.clip(-(-((i + 1) * self.block_i + o) // self.block_u), 0, n)
                if self.window:  # and from the block holding the first row's oldest key
                    start = np.maximum(start, np.maximum(0, i * self.block_i - self.window + 1) // self.block_u)
            elif self.causal is CausalMode.START:  # backward: query blocks from the one whose rows see the key block
                start = np.clip((i * self.block_i - o) // self.block_u, 0, n)
                stop = np.zeros_like(i) + n
            else:
                stop = np.zeros_like(i) + n
            if self.split_blocks:  # split-KV over query blocks: CTA (i, j) streams split j's share of i's blocks
                start = np.maximum(start, np.minimum(j * self.split_blocks, n))
                stop = np.minimum(stop, (j + 1) * self.split_blocks)
            trips = np.maximum(stop - start, 0)
        if self.ragged is not None:
            trips = np.where(self.live(i, sl), trips, 0)
        return start, trips

    def kv_slice(self, sl):
        """Key/value slice each query slice reads (grouped-query heads share one); an array, or one slice's int."""
        b, h = divmod(sl, self.heads) if isinstance(sl, int) else np.divmod(sl, self.heads)
        return b * self.kv_heads + h // self.kv_group

    def total_flops(self) -> Flops:
        """Work of the whole grid, counted from the schedule alone (the engine's tally must match)."""
        sl, i, j = self.coords(0, self.ctas)
        _, trips = self.loop_bounds(i, j, sl)
        return self.iter_flops * float(trips.sum()) + self.end_flops * float(self.live(i, sl).sum())


__all__ = ["AccessKind", "Phase", "CausalMode", "GridOrder", "Program", "Tensor", "Pattern", "Flops", "Ragged", "Kernel",
           "READ", "WRITE", "ATOMIC", "PRO", "LOOP", "EPI", "HBM", "HOST"]
