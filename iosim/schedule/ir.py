"""Kernels as grids of CTAs, each CTA a program of steps: read tiles, compute, write tiles.

Every kernel iosim models has one shape: a CTA ``(slice, i, j)`` runs a *prologue* (tiles it reads
once), a *loop* over blocks ``u`` of a streamed dimension (tiles read, written or atomically added
per iteration), and an *epilogue* (tiles it writes once). A kernel is described by a list of
:class:`Pattern` — which tensor, in which phase, which rows and columns as a function of the CTA's
coordinates and of ``u`` — plus per-iteration FLOPs.

Aggregation (why the engine's cost grows with CTAs, not with tile pairs). The engine hands a kernel
a *cohort* — the CTAs the block scheduler launches at one instant, a contiguous range of the grid —
and the kernel yields the cohort's steps:
- tiles that several CTAs of the cohort touch in the same step become one access with a
  multiplicity (the first CTA misses, the rest hit the fill in flight, exactly as one CTA each);
- tiles of adjacent CTAs that form one rectangle are merged into one access;
- consecutive loop iterations are merged into steps of whole L2 lines of the streamed tensor, at
  most :data:`MAX_STEPS` per cohort loop; a CTA whose loop ends inside a step reads only its own
  iterations and leaves at the step's end.
With ``aggregate=False`` every CTA is its own cohort and every iteration its own step; the tests
check that both give the same byte counts. Where the L2 must evict, the order of tiles within one
instant (a cohort's CTAs in one batch, or one by one) decides some victims, and the counts then
agree to a few percent (tested too). The cost is then a few steps per cohort: CTAs, not tile pairs.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import numpy as np


PRO, LOOP, EPI = "pro", "loop", "epi"
READ, WRITE, ATOMIC = 0, 1, 2  # what an access does to its bytes
MAX_STEPS = 32  # aggregated steps per cohort loop: bounds the engine's cost per CTA


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
    phase: str
    kind: int
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

    def __add__(self, o: "Flops") -> "Flops":
        return Flops(self.tensor + o.tensor, self.simt + o.simt, self.sfu + o.sfu)

    def __mul__(self, k: float) -> "Flops":
        return Flops(self.tensor * k, self.simt * k, self.sfu * k)


@dataclass
class Step:
    """What a cohort does between two scheduling points."""

    accesses: list  # (tensor name, slice, r0, r1, c0, c1, kind, multiplicity)
    active: int  # CTAs computing in this step
    flops: Flops  # per active CTA
    sram_read: float  # operand bytes read from shared memory, all CTAs together
    done: int  # CTAs that finish at the end of this step
    iters: float = 0.0  # loop iterations per active CTA: dependent round trips when loads are not pipelined


@dataclass(frozen=True)
class Kernel:
    """A grid of ``slices × ti × tj`` CTAs launched in ``order`` (``rows``: j, then i, then slice)."""

    name: str
    slices: int  # query (batch, head) slices
    ti: int
    tj: int
    block_i: int  # rows of a tile along i
    block_j: int  # rows (of the j-indexed tensor) per tile along j
    block_u: int  # rows or columns per loop iteration
    patterns: tuple
    loop_extent: int = 0  # extent of the streamed dimension (0: no loop)
    iter_flops: Flops = Flops()
    end_flops: Flops = Flops()  # prologue + epilogue work of one CTA
    iter_sram: float = 0.0  # operand bytes read from shared memory per iteration
    causal: str = ""  # "" | "stop" (loop stops at the diagonal) | "start" (loop starts at it)
    kv_group: int = 1  # query heads per key/value head
    heads: int = 1
    kv_heads: int = 1
    order: str = "rows"
    warps: int = 4
    stages: int = 2  # software pipeline depth: >= 2 overlaps a step's loads with its math
    mma: str = "fwd"  # which calibrated tensor-core efficiency its tile shapes run at ("fwd" or "bwd")
    smem_bytes: int = 0
    regs_per_thread: int = 64
    extents: tuple = ()  # (tensor name, rows, cols) to clip rectangles against

    @cached_property
    def _extent(self) -> dict:
        return {t: (r, c) for t, r, c in self.extents}

    @property
    def ctas(self) -> int:
        return self.slices * self.ti * self.tj

    @property
    def n_loop(self) -> int:
        return -(-self.loop_extent // self.block_u) if self.loop_extent else 0

    # -- CTA coordinates -------------------------------------------------------------------------
    def coords(self, g0: int, g1: int):
        """Slice, i, j of CTAs ``g0..g1`` in launch order."""
        g = np.arange(g0, g1, dtype=np.int64)
        per_slice = self.ti * self.tj
        if self.order == "rows":
            sl, t = np.divmod(g, per_slice)
        else:
            t, sl = np.divmod(g, self.slices)
        i, j = np.divmod(t, self.tj)
        return sl, i, j

    def loop_bounds(self, i, j):
        """First loop block and trip count of each CTA (causal kernels skip fully masked blocks)."""
        n = self.n_loop
        start = np.zeros_like(i)
        if self.causal == "stop":  # forward: key blocks up to the query block's last row
            stop = np.minimum(n, -(-((i + 1) * self.block_i) // self.block_u))
        elif self.causal == "start":  # backward: query blocks from the key block's first row on
            start = (i * self.block_i) // self.block_u
            stop = np.full_like(i, n)
        else:
            stop = np.full_like(i, n)
        return start, np.maximum(stop - start, 0)

    def kv_slice(self, sl):
        b, h = np.divmod(sl, self.heads)
        return b * self.kv_heads + h // self.kv_group

    # -- cohort programs -------------------------------------------------------------------------
    def steps(self, g0: int, g1: int, line_iters: int, aggregate: bool = True):
        """Yield the :class:`Step` s of the cohort ``g0..g1``; ``line_iters`` iterations fill a line.

        Aggregated, a step spans whole lines of the streamed tensor and a cohort's loop takes at
        most :data:`MAX_STEPS` steps; a CTA whose trip ends inside a step reads only its own
        iterations and leaves at the step's end.
        """
        sl, i, j = self.coords(g0, g1)
        kv = self.kv_slice(sl)
        start, trips = self.loop_bounds(i, j)
        top = int(trips.max())
        if aggregate:
            per = line_iters * max(1, -(-top // (MAX_STEPS * line_iters)))
            edges = list(range(0, top, per)) + [top]
        else:
            edges = list(range(top + 1))
        if len(edges) == 1:
            edges.append(0)
        left = np.ones(len(sl), dtype=bool)
        for n, (t0, t1) in enumerate(zip(edges[:-1], edges[1:])):
            act = left.copy()
            fin = left & (trips <= t1)
            acc = []
            if n == 0:
                self._emit(acc, PRO, sl, kv, i, j, None, None)
            m = act & (trips > t0)
            if m.any():
                u0 = start[m] + t0
                self._emit(acc, LOOP, sl[m], kv[m], i[m], j[m], u0, start[m] + np.minimum(trips[m], t1))
            if fin.any():
                self._emit(acc, EPI, sl[fin], kv[fin], i[fin], j[fin], None, None)
            n_act = int(act.sum())
            iters = float(np.minimum(trips[m], t1).sum() - t0 * m.sum()) if m.any() else 0.0
            flops = self.iter_flops * (iters / n_act)  # per active CTA, on average
            if n == 0:  # prologue and epilogue work, charged once per CTA
                flops = flops + self.end_flops
            yield Step(acc, n_act, flops, self.iter_sram * iters, int(fin.sum()), iters / n_act)
            left &= ~fin

    def _emit(self, out: list, phase: str, sl, kv, i, j, u0, u1) -> None:
        if len(sl) == 0:
            return
        for p in self.patterns:
            if p.phase != phase:
                continue
            s = kv if p.kv else sl
            r0, r1 = self._span(p.rows, i, j, u0, u1, p.tensor, 0)
            c0, c1 = self._span(p.cols, i, j, u0, u1, p.tensor, 1)
            for g in range(self.kv_group if p.fan else 1):
                if p.fan:
                    b, h = np.divmod(sl, self.kv_heads)
                    s = b * self.heads + h * self.kv_group + g
                for sl_, a0, a1, b0, b1, mult in _rects(s, r0, r1, c0, c1):
                    out.append((p.tensor, sl_, a0, a1, b0, b1, p.kind, mult))

    def _span(self, dim, i, j, u0, u1, tensor, axis):
        if dim == "i":
            return i * self.block_i, (i + 1) * self.block_i
        if dim == "j":
            return j * self.block_j, (j + 1) * self.block_j
        if dim == "u":
            return u0 * self.block_u, u1 * self.block_u
        extent = self._extent[tensor][axis]
        return np.zeros_like(i), np.full_like(i, extent)

    def line_iters(self, geometry) -> int:
        """Loop iterations that fit in one L2 line of every streamed tensor (``geometry(name)`` gives lines)."""
        best = None
        for p in self.patterns:
            if p.phase == LOOP and "u" in (p.rows, p.cols):
                g = geometry(p.tensor)
                extent = g.line_rows if p.rows == "u" else g.line_cols
                n = max(1, extent // self.block_u)
                best = n if best is None else min(best, n)
        return best or 1

    def total_flops(self) -> Flops:
        """Work of the whole grid, counted from the schedule alone (the engine's tally must match)."""
        sl, i, j = self.coords(0, self.ctas)
        _, trips = self.loop_bounds(i, j)
        return self.iter_flops * float(trips.sum()) + self.end_flops * self.ctas


def _rects(sl, r0, r1, c0, c1):
    """Rectangles of consecutive CTAs: runs of equal ones become one with a multiplicity, and
    single ones that abut along rows (then along columns) are merged.

    Only an economy: the same accesses issued one by one at the same instant give the same counts.
    """
    if len(sl) == 1:
        return [(int(sl[0]), int(r0[0]), int(r1[0]), int(c0[0]), int(c1[0]), 1)]
    keys = np.stack([sl, r0, r1, c0, c1], axis=1)
    starts = np.flatnonzero(np.concatenate([[True], np.any(keys[1:] != keys[:-1], axis=1)]))
    mult = np.diff(np.append(starts, len(keys)))
    keys = keys[starts]
    keys, mult = _join(keys, mult, lo=1, hi=2, same=[0, 3, 4])
    keys, mult = _join(keys, mult, lo=3, hi=4, same=[0, 1, 2])
    return [tuple(row) + (m,) for row, m in zip(keys.tolist(), mult.tolist())]


def _join(keys, mult, lo, hi, same):
    """Merge consecutive single rectangles that agree on ``same`` and abut (``hi`` of one = ``lo`` of next)."""
    if len(keys) == 1:
        return keys, mult
    single = mult == 1
    joins = (single[1:] & single[:-1] & np.all(keys[1:, same] == keys[:-1, same], axis=1)
             & (keys[1:, lo] == keys[:-1, hi]))
    if not joins.any():
        return keys, mult
    starts = np.flatnonzero(np.concatenate([[True], ~joins]))
    ends = np.append(starts[1:], len(keys)) - 1
    out = keys[starts].copy()
    out[:, hi] = keys[ends, hi]
    return out, mult[starts]


__all__ = ["Kernel", "Pattern", "Flops", "Step", "PRO", "LOOP", "EPI", "READ", "WRITE", "ATOMIC"]
