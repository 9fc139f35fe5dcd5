"""Cohorts: how the CTAs launched at one instant are turned into steps of typed tile accesses.

The engine hands a kernel spec (:class:`~iosim.schedule.ir.Kernel`) and a *cohort* — the CTAs the
block scheduler launches at one instant, a contiguous range ``g0..g1`` of the grid — to
:func:`steps`, which yields the cohort's :class:`Step` s. Why the engine's cost then grows with
CTAs, not with tile pairs:
- tiles that several CTAs of the cohort touch in the same step become one access with a
  multiplicity (the first CTA misses, the rest hit the fill in flight, exactly as one CTA each);
- tiles of adjacent CTAs that form one rectangle are merged into one access;
- a step's accesses go run by run of the cohort's CTAs that read one key/value slice (a head's
  CTAs, or a group's under GQA, then the next one's), as CTAs launched together issue them one after
  another: which lines an L2 that must evict keeps depends on that order (tiles merge within a run,
  never across two; K/V read by a run's CTAs together stay one access, as the coalescer merges them);
- consecutive loop iterations are merged into steps of whole L2 lines of the streamed tensor, at
  most :data:`MAX_STEPS` per cohort loop, and cut where each CTA's loop ends, so that every CTA
  leaves (its slot free for the next) when its own loop does, as run one by one.
A lone CTA's steps depend only on its tile, so they are kept per kernel by tile and reused for
every slice (``steps(..., cache)``), each distinct step once (causal tiles stream the same lines); a cohort of a few CTAs merges its CTAs' kept steps,
or where their loops end between its step edges builds its steps in plain lists; a cohort of a kernel whose CTAs all
run the same loop blocks finds its runs, prologue and epilogue once and builds each step in plain integers (the
tests hold each of these paths to the array path, step for step). With ``aggregate=False`` every CTA is its own cohort and every
iteration its own step; the tests
check that both give the same byte counts. Where the L2 must evict, the order of tiles within a run
(a run's CTAs in one batch, or one by one) and CTAs that drift apart when run one by one decide some
victims, and the counts then agree to a few percent (tested too). The cost is then a few steps per cohort: CTAs, not tile pairs.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import NamedTuple

import numpy as np

from iosim.schedule.flash1 import Flash1Kernel
from iosim.schedule.ir import EPI, LOOP, PRO, READ, WRITE, AccessKind, CausalMode, Flops, GridOrder, Kernel, Program

MAX_STEPS = 32  # aggregated steps per cohort loop: bounds the engine's cost per CTA
INNER_STEPS = 8  # FlashAttention-1: aggregated steps per pass over Q and the per-row state O, ℓ, m
SMALL_COHORT = 32  # CTAs up to which rectangles are merged in plain lists rather than numpy arrays
MERGED_COHORT = 16  # CTAs up to which a cohort's steps are its CTAs' kept steps merged (numpy is faster beyond)


class Access(NamedTuple):
    """Rows ``r0..r1`` × columns ``c0..c1`` of one slice of a tensor, touched by ``mult`` CTAs at once."""

    tensor: str
    slice: int
    r0: int
    r1: int
    c0: int
    c1: int
    kind: AccessKind
    mult: int


@dataclass
class Step:
    """What a cohort does between two scheduling points."""

    accesses: list  # Access
    active: int  # CTAs computing in this step
    flops: Flops  # per active CTA
    sram_read: float  # operand bytes read from shared memory, all CTAs together
    done: int  # CTAs that finish in this step (they leave at its end, which is their loop's end)
    iters: float = 0.0  # loop iterations per active CTA: dependent round trips when loads are not pipelined
    span: float | None = None  # iterations of the longest CTA: the step lasts as long as it (None: ``iters``)
    span_flops: Flops | None = None  # work of the longest CTA (None: ``flops``)
    # what the engine derives from the accesses alone (their lines and sums), kept with a step that comes back
    plan: object = field(default=None, compare=False, repr=False, kw_only=True)

    @property
    def length(self) -> float:
        """Iterations the step lasts: what its slowest CTA runs."""
        return self.iters if self.span is None else self.span


def steps(kernel: Kernel, g0: int, g1: int, line_iters: int, aggregate: bool = True, cache: dict | None = None,
          max_steps: int | None = MAX_STEPS):
    """Yield the :class:`Step` s of the cohort ``g0..g1`` of ``kernel``; ``line_iters`` iterations fill a line.

    ``cache`` (a dict kept for one kernel) holds the steps of a lone CTA by its tile coordinates, which
    every slice shares: the same steps again, only their slices differ. ``max_steps`` caps a tile loop's
    aggregated steps (:data:`MAX_STEPS`; None: steps of one line, as fine as the L2 is modelled).
    """
    return _PROGRAMS[kernel.program][0](kernel, g0, g1, line_iters, aggregate, cache, max_steps)


def line_iters(kernel: Kernel, geometry) -> int:
    """Loop iterations that fit in one L2 line of every streamed tensor (``geometry(name)`` gives lines)."""
    return _PROGRAMS[kernel.program][1](kernel, geometry)


# -- the tile loop: prologue, loop over u, epilogue ----------------------------------------------
def tile_steps(k: Kernel, g0: int, g1: int, line_iters: int, aggregate: bool = True, cache: dict | None = None,
               max_steps: int | None = MAX_STEPS):
    """Aggregated, a step spans whole lines of the streamed tensor and a cohort's loop takes at
    most :data:`MAX_STEPS` steps besides the edges where its CTAs' loops end (each leaves there).
    """
    if g1 - g0 == 1:  # most causal cohorts after the first wave: the same steps without numpy's overhead
        return _one_cta_steps(k, g0, line_iters, aggregate, {} if cache is None else cache, max_steps)
    if g1 - g0 <= MERGED_COHORT and _ends_align(k, g0, g1, line_iters, aggregate, max_steps):
        # a few CTAs (causal CTAs freed together): each CTA's steps, cut at the cohort's step size, end
        # where the cohort's do, so the cohort's steps are its CTAs' own merged, without numpy's overhead
        return _merged_steps(k, g0, g1, line_iters, aggregate, {} if cache is None else cache, max_steps)
    if g1 - g0 > SMALL_COHORT and _uniform(k):
        return _uniform_steps(k, g0, g1, line_iters, aggregate, max_steps)
    if g1 - g0 <= SMALL_COHORT and k.ragged is None:
        return _listed_steps(k, g0, g1, line_iters, aggregate, max_steps)
    return _cohort_steps(k, g0, g1, line_iters, aggregate, max_steps)


def _listed_steps(k: Kernel, g0: int, g1: int, line_iters: int, aggregate: bool, max_steps: int | None = MAX_STEPS):
    """:func:`_cohort_steps` for a cohort of a few CTAs (at most :data:`SMALL_COHORT`, no variable-length batch)
    whose loops end between its step edges, in plain lists: numpy's cost per call exceeds the work at that size
    (causal CTAs freed a few at a time). The same steps, accesses in the same order."""
    sl_a, i_a, j_a = k.coords(g0, g1)
    start_a, trips_a = k.loop_bounds(i_a, j_a, sl_a)
    edges = _edges(int(trips_a.max()), line_iters, aggregate, max_steps, ends=trips_a)
    sl, i, j, start, trips = (x.tolist() for x in (sl_a, i_a, j_a, start_a, trips_a))
    kv = k.kv_slice(sl_a).tolist()
    grp = _groups(np.asarray(kv)).tolist()
    n = len(sl)
    everyone = range(n)
    left = [True] * n
    for step, (t0, t1) in enumerate(zip(edges[:-1], edges[1:])):
        fin = [c for c in everyone if left[c] and trips[c] <= t1]
        act = [c for c in everyone if left[c]]
        acc: list = []
        if step == 0:
            _emit_listed(k, acc, PRO, everyone, sl, kv, i, j, None, grp)
        moving = [c for c in act if trips[c] > t0]
        if moving:
            if k.reverse:
                blocks = {c: (start[c] + trips[c] - min(trips[c], t1), start[c] + trips[c] - t0) for c in moving}
            else:
                blocks = {c: (start[c] + t0, start[c] + min(trips[c], t1)) for c in moving}
            _emit_listed(k, acc, LOOP, moving, sl, kv, i, j, blocks, grp)
        if fin:
            _emit_listed(k, acc, EPI, fin, sl, kv, i, j, None, grp)
        acc = [a for _, a in sorted(acc, key=_first)] if grp[-1] else [a for _, a in acc]
        n_act = len(act)
        own = [max(min(trips[c], t1) - t0, 0) for c in act]
        iters = float(sum(own))
        span = float(max(own)) if own else 0.0
        flops = k.iter_flops * (iters / n_act)
        longest = k.iter_flops * span
        if step == 0:
            flops, longest = flops + k.end_flops * (float(n) / n_act), longest + k.end_flops
        yield Step(acc, n_act, flops, k.iter_sram * iters, len(fin), iters / n_act, span, longest)
        for c in fin:
            left[c] = False


def _emit_listed(k: Kernel, out: list, phase, ctas, sl: list, kv: list, i: list, j: list, blocks, grp: list) -> None:
    """:func:`_emit` for the CTAs ``ctas`` (indices into the cohort's lists; ``blocks``: each one's loop blocks),
    in plain lists: their tiles as :func:`_rects_listed` merges them, each tagged with its run."""
    for p in k.patterns:
        if p.phase is not phase:
            continue
        for g in range(k.kv_group if p.fan else 1):
            keys = []
            for c in ctas:
                if p.fan:
                    b, h = divmod(sl[c], k.kv_heads)
                    s = b * k.heads + h * k.kv_group + g
                else:
                    s = kv[c] if p.kv else sl[c]
                u0, u1 = blocks[c] if blocks is not None else (0, 0)
                keys.append(((grp[c], s), *_span(k, p.rows, i[c], j[c], u0, u1, p.tensor, 0),
                             *_span(k, p.cols, i[c], j[c], u0, u1, p.tensor, 1)))
            rects = [(keys[0][0], *keys[0][1:], 1)] if len(keys) == 1 else _rects_listed(keys)
            out += [(q[0], Access(p.tensor, q[1], a0, a1, b0, b1, p.kind, mult)) for q, a0, a1, b0, b1, mult in rects]


def _uniform(k: Kernel) -> bool:
    """Whether every CTA of a kernel runs the same loop blocks and its loop's tiles follow the loop alone: no
    causal mask, split or variable-length batch, and every loop pattern spans ``u`` or ``all`` on both sides."""
    return (k.causal is CausalMode.NONE and not k.split_blocks and k.ragged is None
            and all(p.rows in ("u", "all") and p.cols in ("u", "all") for p in k.patterns if p.phase is LOOP))


def _uniform_steps(k: Kernel, g0: int, g1: int, line_iters: int, aggregate: bool, max_steps: int | None = MAX_STEPS):
    """:func:`_cohort_steps` for a cohort of a :func:`_uniform` kernel: every CTA is in every step, its loop
    accesses differ from step to step in their loop blocks alone, so the runs of slices and the prologue and
    epilogue are found once and each step is plain integers (the same steps, accesses in the same order)."""
    sl, i, j = k.coords(g0, g1)
    kv = k.kv_slice(sl)
    start, trips = k.loop_bounds(i, j, sl)
    first, top, n_all = int(start[0]), int(trips[0]), len(sl)
    edges = _edges(top, line_iters, aggregate, max_steps, ends=trips)
    grp = _groups(kv)
    pro: list = []
    epi: list = []
    segments = _segments(k, sl, kv, i, j, grp)
    for phase, out in ((PRO, pro), (EPI, epi)):
        if segments is None or not _emit_segments(k, out, phase, segments):
            _emit(k, out, phase, sl, kv, i, j, None, None, grp=grp)
    loops = []  # per loop pattern (and fanned-out head): the pattern, its slice keys' span, the runs _emit forms
    for p in k.patterns:
        if p.phase is not LOOP:
            continue
        for g in range(k.kv_group if p.fan else 1):
            s = kv if p.kv else sl
            if p.fan:
                b, h = np.divmod(sl, k.kv_heads)
                s = b * k.heads + h * k.kv_group + g
            span = int(s.max()) + 1
            loops.append((p, span, _slice_runs(grp * span + s)))
    several = bool(grp[-1])  # CTAs of more than one key/value slice: accesses run by run (see _cohort_steps)
    live = float(n_all) / n_all
    for n, (t0, t1) in enumerate(zip(edges[:-1], edges[1:])):
        acc = list(pro) if n == 0 else []
        if top > t0:
            if k.reverse:
                lo, hi = first + top - min(top, t1), first + top - t0
            else:
                lo, hi = first + t0, first + min(top, t1)
            for p, span, slices in loops:
                r0, r1 = _span(k, p.rows, 0, 0, lo, hi, p.tensor, 0)
                c0, c1 = _span(k, p.cols, 0, 0, lo, hi, p.tensor, 1)
                acc += [(q // span, Access(p.tensor, q % span, r0, r1, c0, c1, p.kind, m)) for q, m in slices]
        fin = top <= t1
        if fin:
            acc += epi
        acc = [a for _, a in sorted(acc, key=_first)] if several else [a for _, a in acc]
        own = max(min(top, t1) - t0, 0)
        iters = float(own * n_all)
        flops = k.iter_flops * (iters / n_all)
        longest = k.iter_flops * float(own)
        if n == 0:
            flops, longest = flops + k.end_flops * live, longest + k.end_flops
        yield Step(acc, n_all, flops, k.iter_sram * iters, n_all if fin else 0, iters / n_all, float(own), longest)


def _ends_align(k: Kernel, g0: int, g1: int, line_iters: int, aggregate: bool, max_steps: int | None) -> bool:
    """Whether every CTA of the cohort ``g0..g1`` ends its loop at one of the cohort's step edges (or with
    the longest), so that its CTAs' own steps merged step by step let each leave when its loop ends."""
    sl, i, j = k.coords(g0, g1)
    trips = k.loop_bounds(i, j, sl)[1]
    top = int(trips.max())
    if int(trips.min()) == top:
        return True
    per = _step_size(top, line_iters, aggregate, max_steps)
    return bool(np.all((trips % per == 0) | (trips == top)))


def _cohort_steps(k: Kernel, g0: int, g1: int, line_iters: int, aggregate: bool, max_steps: int | None = MAX_STEPS):
    sl, i, j = k.coords(g0, g1)
    kv = k.kv_slice(sl)
    start, trips = k.loop_bounds(i, j, sl)
    live = k.live(i, sl)  # a variable-length batch's CTAs past their request's rows exit untouched
    edges = _edges(int(trips.max()), line_iters, aggregate, max_steps, ends=trips)
    left = np.ones(len(sl), dtype=bool)
    runs: dict = {}  # a uniform loop's runs of slices per pattern: every CTA is in every step but its last
    grp = _groups(kv)  # each CTA's run of CTAs of one key/value slice: a step's accesses go run by run
    for n, (t0, t1) in enumerate(zip(edges[:-1], edges[1:])):
        act = left.copy()
        fin = left & (trips <= t1)
        acc: list = []
        if n == 0:
            _emit(k, acc, PRO, sl[live], kv[live], i[live], j[live], None, None, grp=grp[live])
        m = act & (trips > t0)
        if m.all():
            _emit(k, acc, LOOP, sl, kv, i, j, *_blocks(k, start, trips, t0, t1), runs, grp=grp)
        elif m.any():
            _emit(k, acc, LOOP, sl[m], kv[m], i[m], j[m], *_blocks(k, start[m], trips[m], t0, t1), grp=grp[m])
        out = fin & live
        if out.any():
            _emit(k, acc, EPI, sl[out], kv[out], i[out], j[out], None, None, grp=grp[out])
        if grp[-1]:  # CTAs of more than one key/value slice: the accesses run by run, as issued one CTA after another
            acc = [a for _, a in sorted(acc, key=_first)]
        else:
            acc = [a for _, a in acc]
        n_act = int(act.sum())
        own = np.clip(np.minimum(trips[act], t1) - t0, 0, None)  # each active CTA's iterations in this step
        iters = float(own.sum())
        span = float(own.max()) if len(own) else 0.0
        flops = k.iter_flops * (iters / n_act)  # per active CTA, on average
        longest = k.iter_flops * span
        if n == 0:  # prologue and epilogue work, charged once per CTA that has any
            flops, longest = flops + k.end_flops * (float(live.sum()) / n_act), longest + k.end_flops
        yield Step(acc, n_act, flops, k.iter_sram * iters, int(fin.sum()), iters / n_act, span, longest)
        left &= ~fin


def _segments(k: Kernel, sl, kv, i, j, grp) -> list | None:
    """A cohort of a grid in rows order as its runs of CTAs of one slice whose tiles are consecutive along ``j``
    (one ``i`` a run), or along ``i`` where the grid has one ``j``: ``(slice, key/value slice, i, end i, j, end j,
    run)`` each, in grid order; None where a run is a single CTA (its tiles may join its neighbours', see
    :func:`_emit_segments`) or the grid is in heads order."""
    if k.order != GridOrder.ROWS:
        return None
    moved = sl[1:] != sl[:-1]
    if k.tj > 1:
        moved |= i[1:] != i[:-1]
    change = np.flatnonzero(moved) + 1
    starts = [0] + change.tolist()
    ends = change.tolist() + [len(sl)]
    if any(e - a < 2 for a, e in zip(starts, ends)):
        return None
    return [(int(sl[a]), int(kv[a]), int(i[a]), int(i[e - 1]) + 1, int(j[a]), int(j[e - 1]) + 1, int(grp[a]))
            for a, e in zip(starts, ends)]


def _emit_segments(k: Kernel, out: list, phase, segments: list) -> bool:
    """:func:`_emit` of ``phase`` (outside the loop) for a cohort of :func:`_segments`, in plain integers: a run's
    CTAs have consecutive tiles along ``j`` (along ``i`` where the grid has one ``j``), so a tile that follows that
    side is one rectangle a run (its singles abut and join), and a tile that does not is the same for every CTA
    of the run (one access, as many CTAs); the same accesses :func:`_rects` forms, in the same order. False
    (nothing emitted) where a pattern of ``phase`` fans out, streams the loop or follows the run's side on both
    of its sides, or two runs in a row touch the same tile (their CTAs would be one access)."""
    moving = "j" if k.tj > 1 else "i"
    patterns = [p for p in k.patterns if p.phase is phase]
    for p in patterns:
        if p.fan or p.rows not in ("i", "j", "all") or p.cols not in ("i", "j", "all") or p.rows == p.cols == moving:
            return False
    bi, bj = k.block_i, k.block_j
    acc = []
    for p in patterns:
        extent = k.extent(p.tensor)
        follows = moving in (p.rows, p.cols)
        last = None
        for s_q, s_kv, ia, ib, ja, jb, run in segments:
            s = s_kv if p.kv else s_q
            span = []
            for axis, dim in enumerate((p.rows, p.cols)):
                if dim == "all":
                    span += [0, extent[axis]]
                elif dim == "i":
                    span += [ia * bi, ib * bi]
                else:
                    span += [ja * bj, jb * bj]
            if not follows:
                key = (run, s, *span)
                if key == last:
                    return False
                last = key
            count = (jb - ja) * (ib - ia)
            acc.append((run, Access(p.tensor, s, span[0], span[1], span[2], span[3], p.kind, 1 if follows else count)))
    out += acc
    return True


def _groups(sl) -> np.ndarray:
    """Each CTA's run of consecutive CTAs of one slice (``sl``: each CTA's), numbered from 0 in grid order."""
    grp = np.zeros(len(sl), dtype=np.int64)
    np.cumsum(sl[1:] != sl[:-1], out=grp[1:])
    return grp


def _first(tagged: tuple) -> int:
    return tagged[0]


def _edges(top: int, line_iters: int, aggregate: bool, max_steps: int | None = MAX_STEPS, per: int | None = None,
           ends=None) -> list:
    """Iteration counts at which a cohort's steps end (the first is 0): whole lines, at most ``max_steps``
    (None: one line each), or every ``per`` iterations where given (the cohort's step size); and where
    its CTAs' loops end (``ends``: each CTA's trips), so that a CTA leaves its SM when its own loop does,
    as it does run one by one, not at the end of a step a longer CTA sets."""
    if per is None:
        per = _step_size(top, line_iters, aggregate, max_steps)
    edges = list(range(0, top, per)) + [top]
    if len(edges) == 1:
        edges.append(0)
    elif ends is not None and len(ends) > 1:
        extra = np.unique(ends[(ends > 0) & (ends < top) & (ends % per != 0)])
        if len(extra):
            edges = sorted(edges + extra.tolist())
    return edges


def _step_size(top: int, line_iters: int, aggregate: bool, max_steps: int | None) -> int:
    """Iterations a step of a cohort whose longest loop runs ``top`` spans (one, not aggregated)."""
    if not aggregate:
        return 1
    return line_iters * (1 if max_steps is None else max(1, -(-top // (max_steps * line_iters))))


def _one_cta_steps(k: Kernel, g: int, line_iters: int, aggregate: bool, cache: dict, max_steps: int | None = MAX_STEPS):
    """:func:`tile_steps` for a cohort of one CTA, in plain integers: the same steps, accesses in the same
    order. Its steps are kept in ``cache`` by tile coordinates with slices as slots (the query slice,
    the key/value slice, then a fanned-out pattern's query slices), and filled in for this CTA."""
    return KeptSteps(*_template(k, g, line_iters, aggregate, cache, max_steps))


class KeptSteps:
    """A lone CTA's steps: its tile's kept steps (``template``, slices as slots) and its slices (``slots``).
    Iterated, the steps with this CTA's slices; the engine reads the kept steps and the slots directly."""

    __slots__ = ("template", "slots")

    def __init__(self, template: list, slots: tuple):
        self.template, self.slots = template, slots

    def __iter__(self):
        slots = self.slots
        for step in self.template:
            yield Step([Access(n, slots[s], r0, r1, c0, c1, kind, m) for n, s, r0, r1, c0, c1, kind, m in step.accesses],
                       step.active, step.flops, step.sram_read, step.done, step.iters, step.span, step.span_flops)


def _template(k: Kernel, g: int, line_iters: int, aggregate: bool, cache: dict, max_steps: int | None,
              per: int | None = None):
    """CTA ``g``'s steps with slices as slots, kept in ``cache`` by tile and step size (``per``
    iterations; None: the CTA's own), and its slots' slices."""
    sl, i, j = k.coord(g)
    b = -1 if k.ragged is None else sl // k.ragged.per_batch  # a variable-length batch's request
    template = cache.get((i, j, b, per))
    if template is None:
        # tiles share most of their steps (a causal forward's CTAs stream the same K/V lines up to their
        # diagonals): each distinct step is kept once, with the plan the engine derives from it
        template = cache[(i, j, b, per)] = list(_one_cta_template(k, i, j, b, line_iters, aggregate, max_steps, per,
                                                                  cache.setdefault(_ALIKE, {}),
                                                                  cache.setdefault(_MIDDLE, {})))
    b, h = divmod(sl, k.kv_heads)  # a fanned-out pattern's CTA runs over key/value slices
    slots = (sl, k.kv_slice(sl)) + tuple(b * k.heads + h * k.kv_group + n for n in range(k.kv_group))
    return template, slots


_ALIKE = "alike"  # the key under which a kernel's kept steps keep their distinct steps (the others are tiles)
_MIDDLE = "middle"  # ... and their steps of loop blocks alone, by what makes one (_one_cta_template)
_MERGED = "merged"  # ... and the steps _merged_steps made, by the kept steps and slices that made them
MERGED_KEPT = 1 << 16  # merged steps a kernel keeps at most (the kept steps their keys name live as long as the kernel)


def _content(step) -> tuple:
    """All that a kept step is: two steps with the same content are one, whichever tile they came from."""
    return (tuple(step.accesses), tuple(step.keys), step.active, step.flops, step.sram_read, step.done, step.iters,
            step.span, step.span_flops, step.live)


@dataclass
class _TemplateStep(Step):
    """A lone CTA's step, its accesses' groups as :func:`_emit` forms them: (phase, pattern, fanned-out head)."""

    keys: list = field(default_factory=list)
    live: bool = True  # the CTA runs its prologue and epilogue (a variable-length batch's CTAs past their rows do not)
    hit: object = None  # what it is as a step of a hit run (Engine._hit_form; False: it cannot be one), kept likewise


def _merged_steps(k: Kernel, g0: int, g1: int, line_iters: int, aggregate: bool, cache: dict,
                  max_steps: int | None):
    """:func:`_cohort_steps` for a few CTAs: each CTA's kept steps, cut at the cohort's step size, end where
    the cohort's do, so each step is its CTAs' own steps merged, accesses grouped as :func:`_emit` groups
    them (run of CTAs of one key/value slice, phase, pattern and fanned-out head, CTAs in grid order) and
    rectangles merged as :func:`_rects` does; the counts as :func:`_cohort_steps` computes them."""
    per = None  # line-long steps (or one iteration each): every CTA's own step size is the cohort's
    if aggregate and max_steps is not None:  # the step size follows the cohort's longest loop
        sl, i, j = k.coords(g0, g1)
        per = _step_size(int(k.loop_bounds(i, j, sl)[1].max()), line_iters, aggregate, max_steps)
    ctas = [_template(k, g, line_iters, aggregate, cache, max_steps, per) for g in range(g0, g1)]
    live = sum(1 for template, _ in ctas if template[0].live)
    runs, run = [], 0  # each CTA's run of CTAs of one key/value slice (slot 1), as _groups numbers them
    for c, (_, slots) in enumerate(ctas):
        run += c > 0 and slots[1] != ctas[c - 1][1][1]
        runs.append(run)
    merged = cache.setdefault(_MERGED, {})
    if len(merged) > MERGED_KEPT:
        merged.clear()
    for n in range(max(len(template) for template, _ in ctas)):
        # the same kept steps of the same slices make the same step: cohorts of neighbouring tiles stream the same
        # lines, so most of a causal kernel's merged steps were merged before (kept steps are one object by content);
        # a first step also carries the CTAs' work outside the loop, for those that run it (``live``)
        made = (n == 0, n == 0 and live, *((id(template[n]), slots, run) for (template, slots), run in zip(ctas, runs)
                                           if n < len(template)))
        step = merged.get(made)
        if step is not None:
            yield step
            continue
        groups: dict = {}
        own, done = [], 0
        for (template, slots), run in zip(ctas, runs):
            if n >= len(template):  # finished in an earlier step
                continue
            step = template[n]
            own.append(step.iters)
            done += step.done
            for key, (name, s, r0, r1, c0, c1, kind, _) in zip(step.keys, step.accesses):
                key = (run,) + key
                group = groups.get(key)
                if group is None:
                    group = groups[key] = (name, kind, [])
                group[2].append((slots[s], r0, r1, c0, c1))
        acc = [Access(name, s, r0, r1, c0, c1, kind, m) for _, (name, kind, keys) in sorted(groups.items())
               for s, r0, r1, c0, c1, m in _rects_listed(keys)]
        n_act = len(own)
        iters = float(sum(own))
        span = float(max(own))
        flops = k.iter_flops * (iters / n_act)
        longest = k.iter_flops * span
        if n == 0:
            flops, longest = flops + k.end_flops * (float(live) / n_act), longest + k.end_flops
        step = merged[made] = Step(acc, n_act, flops, k.iter_sram * iters, done, iters / n_act, span, longest)
        yield step


def _one_cta_template(k: Kernel, i: int, j: int, b: int, line_iters: int, aggregate: bool,
                      max_steps: int | None = MAX_STEPS, per: int | None = None, alike: dict | None = None,
                      middle: dict | None = None):
    """The steps of a lone CTA at tile ``i, j`` (of request ``b`` in a variable-length batch), with slot
    numbers for slices (see :func:`_one_cta_steps`); ``per``: iterations a step (None: its own step size).
    With ``alike`` (a kernel's distinct steps by content, :func:`_content`), each step is the one kept there;
    with ``middle`` too, a step of loop blocks alone (neither the CTA's first nor its last) is looked up by
    what makes it, its loop's sides, blocks and passes, rather than built again (a causal kernel's tiles share
    all but their first and last few)."""
    sl = np.array([max(b, 0) * (k.ragged.per_batch if k.ragged else 0)])  # a slice of the request
    start, trips = (int(x[0]) for x in k.loop_bounds(np.array([i]), np.array([j]), sl))
    live = bool(k.live(np.array([i]), sl)[0])
    edges = _edges(trips, line_iters, aggregate, max_steps, per)
    pro, loop, epi = (_emitter(k, phase, i, j, b) for phase in (PRO, LOOP, EPI))
    work: dict = {}  # iterations -> (FLOPs, shared-memory bytes) of that many: most steps are alike
    for n, (t0, t1) in enumerate(zip(edges[:-1], edges[1:])):
        fin = trips <= t1
        made = None  # what makes a step of loop blocks alone (trips > t1 > t0), where such steps are looked up
        if middle is not None and n > 0 and not fin:
            made = (loop.sides, *(int(u) for u in _blocks(k, start, trips, t0, t1)), t1 - t0, live)
            step = middle.get(made)
            if step is not None:
                yield step
                continue
        acc: list = []
        keys: list = []
        if n == 0 and live:
            pro(acc, keys)
        if trips > t0:
            u0, u1 = _blocks(k, start, trips, t0, t1)
            loop(acc, keys, int(u0), int(u1))  # plain integers, as counts must stay
        if fin and live:
            epi(acc, keys)
        iters = float(max(min(trips, t1) - t0, 0))
        priced = work.get(iters)
        if priced is None:
            priced = work[iters] = (k.iter_flops * iters, k.iter_sram * iters)
        flops, sram = priced
        if n == 0 and live:
            flops = flops + k.end_flops
        # the one CTA is the longest
        step = _TemplateStep(acc, 1, flops, sram, int(fin), iters, iters, flops, keys, live)
        if alike is not None:
            step = alike.setdefault(_content(step), step)
        if made is not None:
            middle[made] = step
        yield step
        if fin:
            return


def _blocks(k: Kernel, start, trips, t0: int, t1: int) -> tuple:
    """Loop blocks ``[u0, u1)`` iterations ``t0..t1`` of CTAs whose loops run ``start``, ``trips`` reach:
    from the first block up, or for a reversed loop from the last down."""
    if k.reverse:
        return start + trips - np.minimum(trips, t1), start + trips - t0
    return start + t0, start + np.minimum(trips, t1)


_PHASES = {PRO: 0, LOOP: 1, EPI: 2}  # the order _cohort_steps emits phases in


def _emitter(k: Kernel, phase, i: int, j: int, b: int = -1):
    """``emit(out, keys, u0, u1)``: a lone CTA's accesses of ``phase`` at tile ``i, j`` (of request ``b`` in a
    variable-length batch, whose rows clip them) for loop blocks ``u0..u1``, its slices as slots: 0 the query
    slice, 1 the key/value slice, 2 + g the g-th query head of a fanned-out pattern's group. ``keys`` collects
    each access's group (phase, pattern, fanned-out head: see :func:`_merged_steps`). The patterns' sides that
    do not follow the loop are resolved once, so a step of a kept template gives only its blocks."""
    fixed = []  # per pattern: its index, (rows, columns) each as a span or None where the loop block sets it
    for n, p in enumerate(k.patterns):
        if p.phase is not phase:
            continue
        sides = tuple(None if dim == "u" else _span(k, dim, i, j, 0, 0, p.tensor, axis)
                      for axis, dim in enumerate((p.rows, p.cols)))
        limit = int(k.ragged.limits[p.tensor][b]) if b >= 0 and p.tensor in k.ragged.limits else None
        fixed.append((n, p, sides, limit))
    bu, tag = k.block_u, _PHASES[phase]

    def emit(out: list, keys: list, u0: int = 0, u1: int = 0) -> None:
        for n, p, (rows, cols), limit in fixed:
            r0, r1 = rows or (u0 * bu, u1 * bu)
            c0, c1 = cols or (u0 * bu, u1 * bu)
            if limit is not None:
                r1 = min(r1, limit)
                if r0 >= r1:
                    continue
            if p.fan:
                for g in range(k.kv_group):
                    out.append(Access(p.tensor, 2 + g, r0, r1, c0, c1, p.kind, 1))
                    keys.append((tag, n, g))
            else:
                out.append(Access(p.tensor, 1 if p.kv else 0, r0, r1, c0, c1, p.kind, 1))
                keys.append((tag, n, 0))

    emit.sides = tuple((n, sides, limit) for n, _, sides, limit in fixed)  # what its accesses follow beyond the blocks
    return emit


def _emit(k: Kernel, out: list, phase, sl, kv, i, j, u0, u1, runs: dict | None = None, grp=None) -> None:
    """The accesses of ``phase`` of CTAs at slices ``sl`` (key/value slices ``kv``), tiles ``i``, ``j``,
    loop blocks ``u0..u1``, merged into rectangles within each run of CTAs ``grp`` numbers (see
    :func:`_groups`), as ``(run, access)``. ``runs`` keeps each pattern's runs of slices where the loop
    tile is the same for every CTA: the same CTAs in every step of a cohort give the same runs."""
    if len(sl) == 0:
        return
    # without a causal mask or a split loop every CTA of a cohort is at the same loop block: a tile
    # indexed by the loop alone is the same rectangle for all of them, and only the slices make runs
    uniform = (phase is LOOP and k.causal is CausalMode.NONE and not k.split_blocks and k.ragged is None
               and len(sl) > SMALL_COHORT)
    for p in k.patterns:
        if p.phase is not phase:
            continue
        psl, pgrp = sl, grp  # the CTAs this pattern touches memory for
        s = kv if p.kv else sl
        same = uniform and p.rows in ("u", "all") and p.cols in ("u", "all")
        if same:
            lo, hi = int(u0[0]), int(u1[0])  # the cohort's loop blocks, the same for each CTA
            r0, r1 = _span(k, p.rows, 0, 0, lo, hi, p.tensor, 0)
            c0, c1 = _span(k, p.cols, 0, 0, lo, hi, p.tensor, 1)
        else:
            r0, r1 = _span(k, p.rows, i, j, u0, u1, p.tensor, 0)
            c0, c1 = _span(k, p.cols, i, j, u0, u1, p.tensor, 1)
        if k.ragged is not None and p.tensor in k.ragged.limits:  # each request's tiles end at its rows
            r1 = np.minimum(r1, k.ragged.limits[p.tensor][k.request(sl)])
            keep = r0 < r1
            if not keep.all():
                psl, pgrp, s, r0, r1, c0, c1 = (x[keep] for x in (sl, grp, s, r0, r1, c0, c1))
                if not len(psl):
                    continue
        for g in range(k.kv_group if p.fan else 1):
            if p.fan:
                b, h = np.divmod(psl, k.kv_heads)
                s = b * k.heads + h * k.kv_group + g
            # a rectangle never spans two runs: the slice and its run, as one key
            span = int(s.max()) + 1
            keyed = pgrp * span + s
            if same:
                key = (id(p), g)
                slices = None if runs is None else runs.get(key)
                if slices is None:
                    slices = _slice_runs(keyed)
                    if runs is not None:
                        runs[key] = slices
                out += [(q // span, Access(p.tensor, q % span, r0, r1, c0, c1, p.kind, m_)) for q, m_ in slices]
                continue
            for q, a0, a1, b0, b1, mult in _rects(keyed, r0, r1, c0, c1):
                out.append((q // span, Access(p.tensor, q % span, a0, a1, b0, b1, p.kind, mult)))


def _slice_runs(sl) -> list:
    """``(slice, CTAs)`` of each run of equal slices: where every CTA touches the same rectangle of its
    slice, one access per run (rectangles of different slices never merge)."""
    starts = np.flatnonzero(np.concatenate(([True], sl[1:] != sl[:-1])))
    mult = np.diff(np.append(starts, len(sl)))
    return list(zip(sl[starts].tolist(), mult.tolist()))


def _span(k: Kernel, dim: str, i, j, u0, u1, tensor: str, axis: int):
    """Start and end of a tile along ``dim`` for CTAs at ``i``, ``j`` (arrays, or one CTA's integers)."""
    if dim == "i":
        return i * k.block_i, (i + 1) * k.block_i
    if dim == "j":
        return j * k.block_j, (j + 1) * k.block_j
    if dim == "u":
        return u0 * k.block_u, u1 * k.block_u
    extent = k.extent(tensor)[axis]
    if isinstance(i, int):  # one CTA, in plain integers
        return 0, extent
    return np.zeros_like(i), np.full_like(i, extent)


def tile_line_iters(k: Kernel, geometry) -> int:
    best = None
    for p in k.patterns:
        if p.phase is LOOP and "u" in (p.rows, p.cols):
            g = geometry(p.tensor)
            extent = g.line_rows if p.rows == "u" else g.line_cols
            n = max(1, extent // k.block_u)
            best = n if best is None else min(best, n)
    return best or 1


def _rects(sl, r0, r1, c0, c1):
    """Rectangles of consecutive CTAs: runs of equal ones become one with a multiplicity, and
    single ones that abut along rows (then along columns) are merged.

    Only an economy: the same accesses issued one by one at the same instant give the same counts.
    """
    if len(sl) == 1:
        return [(int(sl[0]), int(r0[0]), int(r1[0]), int(c0[0]), int(c1[0]), 1)]
    if len(sl) <= SMALL_COHORT:
        return _rects_listed(list(zip(sl.tolist(), r0.tolist(), r1.tolist(), c0.tolist(), c1.tolist())))
    return _rects_array(sl, r0, r1, c0, c1)


def _rects_listed(keys: list) -> list:
    """:func:`_rects` on a few CTAs, in plain lists (numpy's cost per call exceeds the work)."""
    runs: list = []
    for key in keys:
        if runs and runs[-1][0] == key:
            runs[-1][1] += 1
        else:
            runs.append([key, 1])
    rows = [list(key) + [m] for key, m in runs]
    rows = _join_listed(rows, lo=1, hi=2, same=(0, 3, 4))
    rows = _join_listed(rows, lo=3, hi=4, same=(0, 1, 2))
    return [tuple(row) for row in rows]


def _join_listed(rows: list, lo: int, hi: int, same: tuple) -> list:
    """:func:`_join` on lists ``[slice, r0, r1, c0, c1, mult]``: consecutive singles that abut merge."""
    out: list = []
    prev = None
    for row in rows:
        if (prev is not None and prev[5] == 1 and row[5] == 1 and row[lo] == prev[hi]
                and all(prev[k] == row[k] for k in same)):
            out[-1][hi] = row[hi]
        else:
            out.append(list(row))
        prev = row
    return out


def _rects_array(sl, r0, r1, c0, c1):
    """:func:`_rects` on many CTAs, column by column in numpy."""
    cols = [sl, r0, r1, c0, c1]
    change = np.empty(len(sl), dtype=bool)
    change[0] = True
    np.not_equal(sl[1:], sl[:-1], out=change[1:])
    for c in cols[1:]:
        change[1:] |= c[1:] != c[:-1]
    starts = np.flatnonzero(change)
    mult = np.diff(np.append(starts, len(sl)))
    if len(starts) < len(sl):
        cols = [c[starts] for c in cols]
    cols, mult = _join(cols, mult, lo=1, hi=2, same=(0, 3, 4))
    cols, mult = _join(cols, mult, lo=3, hi=4, same=(0, 1, 2))
    return list(zip(*(c.tolist() for c in cols), mult.tolist()))


def _join(cols: list, mult, lo: int, hi: int, same: tuple):
    """Merge consecutive single rectangles that agree on ``same`` and abut (``hi`` of one = ``lo`` of next)."""
    if len(mult) == 1:
        return cols, mult
    single = mult == 1
    joins = single[1:] & single[:-1] & (cols[lo][1:] == cols[hi][:-1])
    for k in same:
        joins &= cols[k][1:] == cols[k][:-1]
    if not joins.any():
        return cols, mult
    starts = np.flatnonzero(np.concatenate(([True], ~joins)))
    ends = np.append(starts[1:], len(mult)) - 1
    out = [c[starts] for c in cols]
    out[hi] = cols[hi][ends]
    return out, mult[starts]


# -- FlashAttention-1's double loop: one CTA per slice ---------------------------------------------
def double_loop_steps(k: Flash1Kernel, g0: int, g1: int, line_iters: int, aggregate: bool = True,
                      cache: dict | None = None, max_steps: int | None = MAX_STEPS):
    """Algorithm 1's program for a :class:`~iosim.schedule.flash1.Flash1Kernel`: for each K/V block
    j, read K_j and V_j once, then for every Q block i from ``k.inner_start(j)`` on read Q_i and read
    and write back the per-row state (``k.state``); aggregated, at most :data:`INNER_STEPS` steps per
    pass over Q, each a whole number of lines (``max_steps`` is the tile loop's and not used here). A
    step's accesses go CTA by CTA, each CTA's K/V block its own (GQA heads sharing it read it again, as
    they do one by one)."""
    sl, _, _ = k.coords(g0, g1)
    kv = k.kv_slice(sl)
    n, bi, bj, d = len(sl), k.block_i, k.block_j, k.extent(k.query)[1]
    per = line_iters * max(1, -(-k.tr // (INNER_STEPS * line_iters))) if aggregate else 1
    state = [(t, k.extent(t)[1]) for t in k.state]
    for j in range(k.tc):
        lo = k.inner_start(j)
        cuts = list(range(lo, k.tr, per)) if lo % per == 0 else [lo] + list(range(-(-lo // per) * per, k.tr, per))
        for a, i0 in enumerate(cuts):
            i1 = cuts[a + 1] if a + 1 < len(cuts) else k.tr
            acc: list = []
            for s, v in zip(sl.tolist(), kv.tolist()):  # CTA by CTA, as they issue them
                if a == 0:
                    acc += [Access(t, v, j * bj, (j + 1) * bj, 0, d, READ, 1) for t in k.keys]
                acc.append(Access(k.query, s, i0 * bi, i1 * bi, 0, d, READ, 1))
                for t, cols in state:
                    acc.append(Access(t, s, i0 * bi, i1 * bi, 0, cols, READ, 1))
                    acc.append(Access(t, s, i0 * bi, i1 * bi, 0, cols, WRITE, 1))
            last = j == k.tc - 1 and i1 == k.tr
            yield Step(acc, n, k.iter_flops * (i1 - i0), k.iter_sram * (i1 - i0) * n, n if last else 0, i1 - i0)


def double_loop_line_iters(k: Flash1Kernel, geometry) -> int:
    return max(1, geometry(k.query).line_rows // k.block_i)


_PROGRAMS = {
    Program.TILE_LOOP: (tile_steps, tile_line_iters),
    Program.DOUBLE_LOOP: (double_loop_steps, double_loop_line_iters),
}

__all__ = ["Access", "Step", "MAX_STEPS", "INNER_STEPS", "steps", "line_iters"]
