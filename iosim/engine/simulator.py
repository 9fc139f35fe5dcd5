"""The discrete-event engine: CTAs scheduled onto SMs in waves, sharing an L2, HBM and the host link.

Processes (SimPy): one *dispatcher* per kernel launches CTAs in grid order whenever SM slots are
free (slots = SMs × resident CTAs per SM, from :mod:`iosim.engine.occupancy`), as the hardware block
scheduler does; each launch instant starts one *cohort* process for the CTAs launched together
(:mod:`iosim.engine.cohorts` turns them into steps, and says why that changes no count). A cohort
step issues its tile accesses to the :class:`~iosim.engine.l2.L2Cache` (misses queue on the HBM or
host :class:`~iosim.engine.links.Link`), moves its bytes over the L2's own link (atomics over the
L2's atomic units, where measured; spilled registers to the CTA's frame of local memory, lines of the L2
like any data, and back; where the resident CTAs' frames crowd the L2, one pass a step), and computes on its SM's
share of the tensor cores and issue slots, priced from the kernel's compiled code
(:mod:`iosim.costs.issue`: issue slots, one warp's own schedule with its uncovered waits, the
tensor rate at the kernel's occupancy, the exposed share of its atomics, and for a CTA alone on its
SM what the calibrated loop of its tile shape waits beyond its code); with two or more pipeline
stages the loads of a step overlap its math and their latency is paid once, with one stage every
iteration waits for its loads; a pipelined CTA pulls its tiles, spill traffic included, no faster than
the calibrated stream of one CTA. Writes go no faster than the measured write-only rates. A CTA's first
loads cost a round trip and its first tiles at the per-CTA load rate; a later pass whose tiles
missed the L2 waits the calibrated miss cost (less what a deeper pipeline hides): CTAs of the first wave
reading the missing lines together (a convoy) each wait what the calibrated convoy series measured for a convoy
of their number (where the profile has it; a forward's loop), later ones trail the CTA that missed and only it
waits (:meth:`Engine._convoy_share`). Where a causal kernel
streams more K/V than the L2 holds, each CTA started after the first wave runs at its own pace (:mod:`iosim.engine.pace`),
so that later CTAs do not start in a lattice the GPU does not keep.
A lone CTA's step (after the first wave of a causal kernel every CTA runs alone) whose every load finds a whole
line the L2 holds, with nothing of it on its way, takes a short way: the same counts, LRU order, link bytes and
time as served access by access, without the L2's general code (:meth:`Engine._hit_form`; at causal N = 64K all
but a few percent of such steps); so does a lone CTA's spill frame whose lines all hit (:meth:`Engine._frame_hits`).

A kernel whose second loop the schedule lists as a kernel of its own (``launch=False``: the tutorial's
backward, ``dq: fused``) runs in the first's launch: each CTA goes on to its second loop when its first
ends and leaves its slot after it; each loop is reported as a kernel, the second from the first's end.

Kernel boundaries: every kernel pays the profile's launch overhead (what an empty kernel costs back
to back; in ``ncu`` mode what Nsight Compute reports for an empty kernel alone), and a kernel with a
tile loop the loop's measured start cost (the first wave's dispatch, cold caches, pipeline fill). In
``plain`` mode the L2 keeps its contents from one kernel to the next, and what is still dirty at
the end is counted as written back. In ``ncu`` mode (Nsight Compute's default cache
control) dirty lines are written back and the L2 invalidated before each kernel, outside any
kernel's counters and time.

Deterministic: no randomness, and ties between processes are broken by SimPy's FIFO event order.
"""
from __future__ import annotations

import functools
from dataclasses import dataclass, field, replace
from typing import NamedTuple

import numpy as np
import simpy

from iosim.costs.code import aten_code, compiled_codes, reference_codes
from iosim.costs.issue import (
    CTA_LOAD_WARPS,
    WARP,
    atomic_exposure,
    chain_seconds,
    convoy_series,
    convoy_wait,
    cta_load_seconds,
    cta_stream_bandwidth,
    estimated_code,
    l1_shared_loads,
    latencies,
    lone_excess,
    reload_miss,
    rewritten_miss,
    shared_seconds,
    simt_seconds,
    sm_time,
    spill_traffic,
    tensor_rate,
)
from iosim.costs.pricing import instruction_totals, rates, read_rates, roofline, write_rates
from iosim.engine import cohorts
from iosim.engine.l2 import L2Cache, L2Stats, spill_counts
from iosim.engine.lines import LineGeometry
from iosim.engine.links import Link
from iosim.engine.occupancy import ctas_per_sm
from iosim.engine.pace import pace_factors
from iosim.hardware.profile import LOCKSTEP_FIELDS
from iosim.results.caveats import CAUSAL_EVICTING, PERSISTENT_DRIFT, SPILL_FRAMES, TILE_BEYOND, UNMODELLED_TRAFFIC
from iosim.results.result import KernelResult, RunResult, Traffic
from iosim.schedule.build import peak_footprint
from iosim.schedule.common import Schedule
from iosim.schedule.flash1 import Flash1Kernel
from iosim.schedule.ir import ATOMIC, HBM, LOOP, READ, WRITE, CausalMode, GridOrder, Pattern, Tensor
from iosim.schedule.problem import ConfigError
from iosim.schedule.references import check_reference

LINES_PER_L2 = 256  # default resolution: an L2 line of the model is at most 1/256 of a partition (iosim.engine.lines)
MIN_LINE = 4096  # bytes; lines never get smaller, so a tiny L2 stays fast
MISS_PASS_STAGES = 2  # pipeline stages of the loop whose missed pass calibrate measures (microbench.miss_cost)
LINES_PER_SLICE = 1024  # a tensor slice far larger than the L2 is cut into at most this many lines
STREAM_LINES = 16  # lines a slice of FlashAttention-1's per-row state, where no pass can find it in the L2 (_streamed)
STREAM_MARGIN = 2  # ... where the resident CTAs' passes stream at least this many times what the L2 holds
STREAM_COARSE = (8, 4)  # where they stream this many times what it holds or more: this many lines a slice
FINE_LINES = 1  # lines of the streamed tensor a step of a causal-evicting kernel spans (_fine): the finest
TIMELINE_BINS = 100
PIECE_CACHE = 200_000  # rectangles whose cut into lines is kept (a few hundred bytes each)
UNMODELLED_SHARE = 1.2  # a loop whose code loads this many times what its schedule reads a pass moves something else
BEYOND_ELEMS = (1, 2, 4)  # bytes of the elements a tile read beyond the schedule is taken in (int8/fp8, fp16, fp32)


class Engine:
    """Runs one :class:`Schedule` on one hardware profile."""

    def __init__(self, schedule: Schedule, profile, mode: str = "plain", aggregate: bool = True,
                 l2_bytes: int | None = None, codes: list | None = None, triton_version: str | None = None,
                 progress=None, l2_lines: int | None = None):
        self.schedule, self.profile, self.mode, self.aggregate = schedule, profile, mode, aggregate
        # progress(CTAs done, CTAs of the run, kernel running): called as CTAs finish
        self.progress = progress
        self._done, self._total = 0, sum(k.ctas for k in schedule.kernels)
        self.env = simpy.Environment()
        self.dtype = schedule.config.problem.dtype
        writes, reads = write_rates(profile), read_rates(profile)
        self.links = {lv: Link(lv, rate, writes.get(lv), reads.get(lv)) for lv, rate in rates(profile).items()}
        # Atomic adds are served by the L2's atomic units at their own rate, where the profile has it.
        self.atomics = Link("atomic", profile.l2_atomic_bandwidth) if profile.l2_atomic_bandwidth else None
        capacity = profile.l2_bytes if l2_bytes is None else l2_bytes
        # the L2 model's resolution: lines per partition (experiments/discretization.py shows what it moves)
        lines = LINES_PER_L2 if l2_lines is None else l2_lines
        if not isinstance(lines, int) or isinstance(lines, bool) or lines < 1:
            raise ConfigError("l2_lines", f"must be a positive integer (lines of the L2 model per partition), got {lines!r}")
        line = max(MIN_LINE, capacity // (lines * profile.l2_partitions))
        self.index = {t.name: n for n, t in enumerate(schedule.tensors)}
        # A slice far larger than the L2 (S and P at large N) streams through it: its lines may be
        # coarser, so that the cost of a pass stays bounded (at most LINES_PER_SLICE lines a slice).
        self.geoms = [LineGeometry.for_tensor(t, max(line, t.slice_bytes // LINES_PER_SLICE)) for t in schedule.tensors]
        self.places = [t.placement for t in schedule.tensors]
        self._line = line
        dirty_limit = profile.l2_dirty_limit
        replicas = profile.l2_partitions if l2_bytes is None else 1
        self.l2 = L2Cache(capacity, {"hbm": self.links["hbm"], "host": self.links["host"]}, self.places, dirty_limit,
                          replicas, profile.lrc_sms or 1, _private_copies(profile, replicas),
                          profile.lrc_inflight_lookups or 1.0 / (profile.lrc_sms or 1), _lockstep_shares(profile))
        self.l2.defer = self._defer_writes  # a step's write-backs after every load of its instant (L2Cache.post)
        self.overlap = profile.math_overlap or 0.0
        self._stream_bw = cta_stream_bandwidth(profile)  # a pipelined CTA's tiles from the L2 at most this fast
        # what a two-stage pass waits when all its tiles miss (calibrate's miss_pass_s; 0 where not measured)
        self._miss_pass = ((profile.calibration or {}).get("raw") or {}).get("miss_pass_s", 0.0)
        if self.dtype not in profile.tensor_flops:
            raise ConfigError("dtype", f"{self.dtype} needs {self.dtype} tensor cores: the {profile.id} profile has none "
                                       f"(tensor_flops_{self.dtype}); it has {', '.join(profile.tensor_flops)}")
        check_reference(schedule.config, profile.arch)
        # Each kernel's code (compiled SASS where known; for PyTorch SDPA's kernels what they executed, see
        # iosim.schedule.references; else estimated from FLOPs) and its launch resources.
        impl = schedule.config.impl
        if codes is None:
            codes = reference_codes(schedule, impl) if impl else compiled_codes(schedule, profile.arch, triton_version)
        self.codes = [c or self._aten_code(k) or estimated_code(k.iter_flops, k.end_flops, k.warps)
                      for c, k in zip(codes, schedule.kernels)]
        self.codes = [_unrolled(k, _persistent_code(k, c)) for k, c in zip(schedule.kernels, self.codes)]
        self.kernels = [_with_resources(k, c) for k, c in zip(schedule.kernels, self.codes)]
        self.per_sm = [ctas_per_sm(k, profile) for k in self.kernels]  # refuses tiles that don't fit, up front
        # a persistent kernel holds no more CTAs on an SM than its launch spreads there
        self.per_sm = [min(n, -(-k.persistent // profile.sm_count)) if k.persistent else n
                       for n, k in zip(self.per_sm, self.kernels)]
        # local memory a CTA of each kernel spills to: its frame, local bytes per thread × threads
        self.frames = [c.local_bytes * WARP * k.warps for c, k in zip(self.codes, self.kernels)]
        self.local = self._local_memory()
        self._beyond()
        self._streamed()
        self.resident = 0
        self.events = 0
        self.records: list[KernelResult] = []
        self._pieces: dict = {}  # (tensor, r0, r1, c0, c1, tile) -> what _cut gives: slices are cut alike

    def _aten_code(self, kernel):
        """A PyTorch pass's code from what ATen's kernel of its kind executed (:func:`aten_code`; None for a
        Triton kernel, or where not probed): its elements written per CTA, and the sizes of the elements it
        reads and writes (a sum reads ``group`` per element written)."""
        if not kernel.aten:
            return None
        sizes = {t.name: t for t in self.schedule.tensors}
        reads = [sizes[p.tensor] for p in kernel.patterns if p.kind == READ]
        writes = [sizes[p.tensor] for p in kernel.patterns if p.kind != READ]
        if not writes:
            return None
        out = writes[0]
        src = reads[0].elem_bytes if reads else out.elem_bytes
        written = sum(t.nbytes // t.elem_bytes for t in writes)
        elements = written / kernel.ctas
        group = sum(t.nbytes // t.elem_bytes for t in reads) / written if kernel.aten == "sum" else 1  # read per written
        return aten_code(kernel.aten, src, out.elem_bytes, group, elements, kernel.warps, self.profile.arch)

    def _local_memory(self) -> int | None:
        """The tensor index of the local memory spilled registers live in (None: no kernel spills): one row
        per CTA slot of the GPU, as wide as the largest CTA's frame (local bytes per thread × threads). A
        CTA spills to its slot's row, so the lines the resident CTAs spill to compete with the data for the
        L2, and reach DRAM when they are evicted, as local memory does."""
        if not any(self.frames):
            return None
        slots = max(p * self.profile.sm_count for p in self.per_sm)
        tensor = Tensor("local", 1, slots, max(self.frames), 1, HBM, 1)
        self.geoms.append(LineGeometry.for_tensor(tensor, self._line))
        self.places.append(HBM)
        self.index["local"] = len(self.places) - 1
        return len(self.places) - 1

    def _streamed(self) -> None:
        """Coarser lines for tensors no re-read can find in the L2: FlashAttention-1's query and per-row state,
        which each CTA (one a slice) reads and writes once a pass over its K/V blocks, where the passes of the
        resident CTAs together stream ``STREAM_MARGIN`` times the L2's copies or more. LRU keeps nothing of a
        cyclic stream larger than itself at any resolution, so ``STREAM_LINES`` lines a slice move the same bytes
        as lines of 1/256 of the L2 (flash1 at N = 16K and 32K, 32 heads: the same DRAM bytes to 0.001 %, the
        same time to 0.0003 %, 2-3.5x faster). Where the passes stream ``STREAM_COARSE[0]`` times the L2 or more,
        ``STREAM_COARSE[1]`` lines a slice do, as nothing of a pass survives in whatever order its lines come (at
        64K: the same DRAM bytes as 1/256 of the L2 to 0.000005 %, the time to 0.0001 %, 3.6 s of CPU rather than
        7.7 with 16 lines and 48 with fine ones; nearer the L2, at 1.5 times, four lines a slice stray from a
        per-CTA run by up to 3 %, sixteen by 0.5 %). A tensor a later tile loop reads (the backward's Q) keeps
        its lines."""
        capacity = self.l2.capacity * self.l2.replicas
        looped = [k for k in self.kernels if k.loop_extent > 0]
        for n, k in enumerate(self.kernels):
            if not isinstance(k, Flash1Kernel) or STREAM_LINES is None:
                continue
            names = (k.query,) + tuple(k.state)
            resident = min(k.ctas, self.per_sm[n] * self.profile.sm_count)
            passes = resident * sum(self.geometry(t).tensor.slice_bytes for t in names)
            if passes < STREAM_MARGIN * capacity:
                continue
            lines = STREAM_COARSE[1] if passes >= STREAM_COARSE[0] * capacity else STREAM_LINES
            for t in names:
                if any(o is not k and any(p.tensor == t for p in o.patterns) for o in looped):
                    continue
                g = self.geometry(t)
                line = max(g.line_rows * g.line_cols * g.tensor.elem_bytes, g.tensor.slice_bytes // lines)
                self.geoms[self.index[t]] = LineGeometry.for_tensor(g.tensor, line)

    def geometry(self, name: str) -> LineGeometry:
        return self.geoms[self.index[name]]

    def _defer_writes(self, now: float) -> None:
        """Drain the write-backs the L2 posted at ``now`` once every cohort stepping at this instant has issued its
        loads: an event queued behind theirs. A memory controller serves reads before posted writes whoever
        issued them; queued step by step, CTAs launched together and run one by one (the model, issue 9) had
        each CTA's loads wait for the write-backs of those before it, where one cohort of them waits for none
        (standard attention's one-wave qk: per CTA 8.8 % longer than aggregated; now alike)."""
        self.env.timeout(0).callbacks.append(lambda _event: self.l2.drain(now))

    def run(self) -> RunResult:
        self.env.process(self._main())
        self.env.run()
        # In a normal run what is still dirty reaches HBM later (when other work evicts it): count it.
        # Under Nsight Compute it is written back between kernels, where no counter sees it.
        final = self.l2.flush(self.env.now, invalidate=False, timed=False) if self.mode == "plain" else 0
        return RunResult(
            config=self.schedule.config.to_dict(), gpu=self.profile.id, mode=self.mode,
            kernels=tuple(self.records), time_s=self._total_time(), peak_hbm_bytes=self._peak(),
            hbm_capacity_bytes=self.profile.hbm_bytes, timeline=self._timeline(), events=self.events,
            final_writeback_bytes=final,
        )

    def _peak(self) -> int:
        """Bytes allocated at the busiest kernel (the schedule's), with the tensors a user's kernel writes beyond
        its schedule (:meth:`_beyond`) live from their kernel on, as outputs the caller keeps. A tensor it reads
        beyond the schedule is the launcher's own allocation (a captured operation made it) or the caller's."""
        s = self.schedule
        if not self.kept_beyond:
            return s.peak_hbm_bytes
        kept = tuple(t.name for t in self.kept_beyond)
        return peak_footprint(s.tensors + tuple(self.kept_beyond), tuple(self.kernels), s.inputs + s.outputs + kept)

    def _total_time(self) -> float:
        if self.mode == "ncu":  # what the counters' gpu__time_duration sums: kernels only
            return sum(k.time_s for k in self.records)
        return self.env.now

    # -- kernels ---------------------------------------------------------------------------------
    def _main(self):
        n = 0
        while n < len(self.kernels):
            if self.mode == "ncu" and self.kernels[n].launch:  # each launch alone, its caches cleaned first
                self.l2.flush(self.env.now, invalidate=True, timed=False)
            # a kernel's second loop (dq: fused) runs in its launch: each CTA goes on to it when its first ends
            m = n + 1
            while m < len(self.kernels) and not self.kernels[m].launch:
                m += 1
            if any(k.ctas != self.kernels[n].ctas for k in self.kernels[n:m]):  # grids that differ: one after the other
                m = n + 1
            yield from self._launch([self._phase(k) for k in range(n, m)])
            n = m

    def _phase(self, n: int) -> _Phase:
        """Kernel ``n`` of the schedule with its code priced and its counters at zero."""
        kernel, per_sm = self.kernels[n], self.per_sm[n]
        code = self._price_code(kernel, self.codes[n], per_sm)
        fine = self._fine(kernel)
        # where causal CTAs stream more than the L2 holds, which lines the next CTA of a head finds depends on when it
        # starts: each CTA at its own pace, as measured (iosim.engine.pace); elsewhere the spread moves no byte
        spread = self.profile.cta_pace_spread
        paces = pace_factors(kernel.ctas, spread, n) if fine and spread else None
        if any(code["spills"]) and self._crowded(n):  # one pass a step: see _crowded
            return _Phase(n, kernel, per_sm, code, 1, None, L2Stats(), own_pace=paces, fine=fine)
        lines = cohorts.line_iters(kernel, self.geometry)
        return _Phase(n, kernel, per_sm, code, lines * FINE_LINES if fine else lines,
                      None if fine else cohorts.MAX_STEPS, L2Stats(), own_pace=paces, fine=fine)

    def _price_code(self, kernel, code, per_sm: int) -> dict:
        """Seconds one CTA alone on its SM spends per loop iteration (and, by its tile shape's calibrated
        loop, waits beyond that) and once, the tensor rate of one SM at the kernel's occupancy and
        instruction kind, and the share of atomic time it waits for."""
        profile = self.profile
        head_dim = self.schedule.config.problem.head_dim
        masked = masked_share(kernel, code.masked_steps) if code.masked is not None else 0.0
        miss = reload_miss(code, kernel.warps, per_sm, profile)
        latency = latencies(profile, miss)

        def per_pass(cost):  # a block's cost: the masked loop body's (its passes a block) for the masked share
            value = cost(code.loop)
            value = value + masked * (code.masked_passes * cost(code.masked) - value) if masked else value
            return value / code.unroll  # an unrolled loop's pass covers several blocks

        loop = per_pass(lambda c: simt_seconds(c, kernel.warps, profile))
        shared = per_pass(lambda c: shared_seconds(c, kernel.warps, profile))
        # A loop's pace is at least its warps' own schedule (stall counts and uncovered waits); an
        # unpipelined one (one stage) also waits for its loads every iteration (see _cohort).
        chain = per_pass(lambda c: chain_seconds(c, profile, latency))
        cycled = rewritten_miss(code, kernel.warps, per_sm, profile)
        spills = tuple(per_pass(lambda c, n=n: spill_traffic(c, kernel.warps, miss, cycled)[n]) for n in (0, 1))
        rate = tensor_rate(profile, self.dtype, kernel.mma, head_dim, kernel.warps, per_sm,
                           (kernel.block_i, kernel.block_u), kernel.stages)
        if head_dim and code.source.startswith("sass"):  # compiled Triton: a tile's d is a power of two, so a
            rate *= head_dim / (1 << (head_dim - 1).bit_length())  # head such as 96 is multiplied at 128, masked
        lone = 0.0  # what a pass alone on its SM waits beyond its code (the calibrated loop of its tile shape)
        if kernel.mma != "bwd" and kernel.block_u and head_dim and kernel.iter_flops.tensor:
            rows = round(kernel.iter_flops.tensor / (4 * kernel.block_u * head_dim))  # a decode tile packs heads
            lone = lone_excess(profile, rows, kernel.block_u, head_dim, kernel.warps)
        # a warp-specialised kernel's dQ reductions leave by TMA from a producer warp: none waits in the loop
        atomic = 0.0 if code.specialised else atomic_exposure(profile, per_sm, kernel.stages, code.tma, head_dim)
        return {"iter": loop, "chain": chain, "lone": lone, "once": simt_seconds(code.outside, kernel.warps, profile),
                "shared": shared, "shared_once": shared_seconds(code.outside, kernel.warps, profile),
                "masked": masked, "tensor": rate / profile.sm_count, "atomic": atomic, "spills": spills,
                "specialised": code.specialised, "l1": l1_shared_loads(code, kernel.warps, per_sm, profile),
                # the convoy series of its first wave's CTAs an SM (the only wave charged it); measured on the forward's
                # loop, so a backward's convoys (K/V-outer CTAs streaming one head's Q and dO) keep one CTA paying
                "convoy": (convoy_series(profile, head_dim, min(per_sm, -(-kernel.ctas // profile.sm_count)))
                           if self._miss_pass and kernel.mma != "bwd" else None)}

    def _launch(self, phases: list):
        """One kernel launch: its CTAs dispatched in grid order into free slots, each running the loops of
        ``phases`` one after the other (more than one: a kernel whose second loop the schedule lists apart)."""
        kernel, per_sm = phases[0].kernel, min(ph.per_sm for ph in phases)
        slots = per_sm * self.profile.sm_count
        if kernel.persistent:  # its CTAs take the tiles in turn (from a counter: as slots free, in grid order, as
            slots = min(slots, kernel.persistent)  # below), as many at once as it launched
        start = self.env.now
        for ph in phases:
            ph.start = start
        state = {"free": slots, "wake": None, "running": []}
        # its spill frames, reused every pass, are the L2's last victims while it runs, where they fit it
        spilling = [ph.n for ph in phases if self.frames[ph.n]]
        if spilling and not any(self._thrashing(m) for m in spilling):
            self.l2.pin(self.local)
        nxt, n = 0, kernel.ctas
        if self._bound(kernel, slots, phases[0].n):
            yield from self._persistent(phases, kernel.persistent, state)
            nxt = n
        while nxt < n:
            if state["free"] > 0:
                m = min(state["free"], n - nxt) if self.aggregate else 1
                state["free"] -= m
                self.resident += m  # resident from their launch: CTAs launched at one instant all share their SMs
                for a, b in self._cohorts(phases[0], nxt, nxt + m):
                    state["running"].append(self.env.process(self._cohort(phases, 0, a, b, state)))
                nxt += m
                continue
            state["wake"] = self.env.event()
            yield state["wake"]
            yield self.env.timeout(0)  # let every CTA finishing at this instant free its slot first
        while not all(p.triggered for p in state["running"]):  # a CTA's later loop starts as its first ends
            yield simpy.AllOf(self.env, list(state["running"]))
        self.l2.unpin()  # its frames age as any line from here on
        self.l2.stats = phases[-1].stats  # what drains now belongs to the launch's last loop
        drain = max(self.links["hbm"].drained_at, self.links["host"].drained_at)
        if drain > self.env.now:  # posted writes still draining (to HBM or host memory) belong to this kernel
            yield self.env.timeout(drain - self.env.now)
        # Launch, grid setup and drain, and a tile loop's first-wave start (see _fixed_cost).
        fixed = self._fixed_cost(phases[0].n)
        yield self.env.timeout(fixed)
        for k, ph in enumerate(phases):  # a loop's time: from the end of the one before to its last CTA's end
            last = k == len(phases) - 1
            begin = phases[k - 1].end if k else start
            end = self.env.now if last else max(begin, ph.end)
            self.records.append(self._record(ph, begin, end, fixed if k == 0 else 0.0))

    def _cohorts(self, ph, g0: int, g1: int) -> list:
        """The cohorts the CTAs ``g0..g1`` launched at one instant run as: one, or for a kernel in heads order whose CTAs
        step one line at a time (:meth:`_fine`) one per run of consecutive CTAs of one key/value slice. A cohort's CTAs
        step together: each step lasts until every byte they read is there, and after the first wave the cohort keeps
        its first CTA's own pace (:mod:`iosim.engine.pace`). In heads order the CTAs launched together are of different
        heads: one cohort of them would wait for every head's fills and keep one pace, where run one by one each waits
        for its own and drifts at its own. On the calibrated H100 at causal N = 32K, 4 heads, a 16 MB L2, the aggregated
        run read 1.93 times the per-CTA run's DRAM bytes; one cohort a slice reads exactly them (tests/test_cohorts.py).
        In rows order a launch's CTAs share a slice but for its first wave's few boundaries between heads; splitting
        those too moved a short rows-order kernel's time by -2.4 and +1.1 % (with and without a pace spread), one
        nearer its per-CTA run and one farther: left as one cohort."""
        if not ph.fine or g1 - g0 == 1 or ph.kernel.order is not GridOrder.HEADS:
            return [(g0, g1)]
        kv = ph.kernel.kv_slice(ph.kernel.coords(g0, g1)[0])
        return [(g0 + a, g0 + b) for a, b in _runs_of_equal(kv)]

    def _bound(self, kernel, slots: int, n: int) -> bool:
        """Whether kernel ``n`` is persistent with each tile bound to a CTA in advance: fewer CTAs than tiles,
        all resident at once, and no counter its CTAs draw their next tile from."""
        return 0 < kernel.persistent <= slots and kernel.persistent < kernel.ctas and not self.codes[n].tile_counter

    def _persistent(self, phases: list, ctas: int, state: dict):
        """A persistent launch of ``ctas`` CTAs, each taking its tiles in turn: CTA c the tiles c, c + ctas,
        c + 2·ctas, ... (the grid's CTAs), each tile as its CTA's previous one ends, not as any slot frees (a
        causal CTA of long tiles falls behind, and the tiles in flight spread over more heads than a launch of
        one CTA a tile keeps together). Tiles ready at the same instant start together, in runs of consecutive ones."""
        n = phases[0].kernel.ctas
        state["next"] = ctas  # a tile ending makes the one ``ctas`` further on ready
        state["ready"] = list(range(ctas))
        launched = 0
        while launched < n:
            if state["ready"]:
                ready, state["ready"] = sorted(state["ready"]), []
                for a, b in _runs(np.asarray(ready)) if self.aggregate else ((g, g + 1) for g in ready):
                    state["free"] -= b - a
                    self.resident += b - a
                    state["running"].append(self.env.process(self._cohort(phases, 0, a, b, state)))
                    launched += b - a
                continue
            state["wake"] = self.env.event()
            yield state["wake"]
            yield self.env.timeout(0)  # let every tile ending at this instant make its successor ready first

    def _fine(self, kernel) -> bool:
        """Whether a kernel's aggregated steps must be ``FINE_LINES`` L2 lines long (the per-CTA timeline,
        as fine as the L2 is modelled) rather than up to ``MAX_STEPS`` a loop: where its CTAs' trips differ
        (causal), so that after the first wave they run one by one and how close together they run
        decides which re-reads hit (convoys, see L2Cache.usable), and the L2 cannot hold one slice
        of what its loop streams as lines read by several CTAs (one copy per partition). CTAs of
        equal trips step in lockstep waves, where line-long steps change no byte (measured: flash2
        at N = 64K, forward and backward, H100). Two lines a step (tried 2026-12-05) halve the steps and the
        CPU by 1.5-2x but leave the per-CTA run, the model, by 5-9 % in DRAM bytes (tests/test_cohorts.py's
        long causal cases under eviction), so one line it is (docs/validation.md, "Two lines a step")."""
        if kernel.causal is CausalMode.NONE:
            return False
        streamed = {p.tensor for p in kernel.patterns if p.phase == LOOP}
        per_slice = sum(t.rows * t.cols * t.elem_bytes for t in (self.geometry(n).tensor for n in streamed))
        return per_slice * self.l2.replicas > self.l2.capacity

    def _frames_share(self, n: int) -> float:
        """The share of the L2 kernel ``n``'s spill frames take: the frames of all its resident CTAs, in the
        copies a stored line takes (inf where the L2 has no room)."""
        frames = self.frames[n] * self.per_sm[n] * self.profile.sm_count * self.l2.replicas
        return frames / self.l2.capacity if self.l2.capacity > 0 else (float("inf") if frames else 0.0)

    def _crowded(self, n: int) -> bool:
        """Whether kernel ``n``'s spill frames crowd the L2: they fill a quarter of it or more. Such a kernel
        steps one pass at a time, as the per-CTA run does: beside its frames its tiles have little room, and
        which of them survive depends on the order of every pass's loads (the Triton tutorial's d = 128
        backward at N = 1024, frames pinned: DRAM +12 % with steps of many passes, -3 % one pass a step and
        per CTA). A caveat too: the GPU writes such frames back while they stay, which the model does not."""
        return self._frames_share(n) >= 0.25

    def _thrashing(self, n: int) -> bool:
        """Whether kernel ``n``'s spill frames alone overflow the L2. A CTA reloads and stores the same slots
        of its frame every pass; the L2 keeps frames as its last victims (:meth:`L2Cache.pin`), so a step of
        many passes, which touches a frame once, keeps them as one pass at a time does, until the frames
        themselves overflow it: then none is pinned, and they evict one another pass by pass."""
        return self.frames[n] > 0 and self._frames_share(n) >= 1.0

    def _fixed_cost(self, n: int) -> float:
        """What a kernel costs beyond its CTAs' work: the launch, and for a kernel with a tile loop the
        measured start of its first wave (``kernel_start_overhead``, measured on the tile loop: its
        dispatch, pipeline fill and exit). A kernel without a loop in its schedule or its compiled code
        (fills, casts, softmax, flash-decoding's combine) pays the launch alone. The launch is an empty
        kernel's cost back to back (``launch_overhead``), or in ``ncu`` mode, where each kernel runs
        alone, the duration Nsight Compute reports for it (``ncu_launch_overhead``, where measured)."""
        kernel, code, profile = self.kernels[n], self.codes[n], self.profile
        if not kernel.launch:  # the second loop of the kernel before it: that kernel's launch and start
            return 0.0
        looped = kernel.loop_extent > 0 or code.loop.instructions > 0
        launch = profile.launch_overhead
        if self.mode == "ncu" and profile.ncu_launch_overhead:
            launch = profile.ncu_launch_overhead
        return launch + ((profile.kernel_start_overhead or 0.0) if looped else 0.0)

    def _cohort(self, phases, k, g0, g1, state):
        """CTAs ``g0..g1`` running loop ``k`` of their launch's ``phases``; those whose loop ends go on to the
        next, or leave their SM after the last."""
        env, l2, links = self.env, self.l2, self.links
        ph = phases[k]
        kernel, line_iters = ph.kernel, ph.line_iters
        who = (ph.n, g0)  # this cohort: its lines are private until another cohort touches them
        stages = kernel.stages
        code = ph.code
        sms = self.profile.sm_count
        lat_dram, lat_l2 = self.profile.dram_latency or 0.0, self.profile.l2_latency or 0.0
        cta_bw = self.profile.cta_load_bandwidth
        # an unpipelined CTA keeps the same bytes in flight whatever serves them (Little's law): tiles the
        # L2 holds come faster than the calibrated rate (measured from DRAM) by the ratio of the latencies
        cta_bw_hit = cta_bw * lat_dram / lat_l2 if cta_bw and lat_l2 and lat_dram > lat_l2 else cta_bw
        stream_bw = self._stream_bw
        miss_pass = self._miss_pass
        store_bytes = self.codes[ph.n].store_bytes  # crossbar bytes a store moves per byte written
        first = True
        # CTAs launched together stay in lockstep (their identical loads merge in the request coalescer) when
        # the kernel starts, or when equal trips free their slots together; causal CTAs free them one by one
        together = env.now == ph.start  # launched with the kernel's first wave: in phase with all of it
        lockstep = together or kernel.causal is CausalMode.NONE
        # CTAs of the first wave that read the same missing lines, started together, each wait the calibrated convoy
        # series' share of a missed pass; later CTAs trail the one that misses, and only it waits (_convoy_share)
        convoy, lead = code["convoy"] if together else None, 1.0
        if convoy is not None and g1 - g0 == 1:  # a CTA alone in its cohort (run one by one, or one cohort a head in
            # heads order): the first of its convoy to miss sets the pace the others keep
            group = self._first_group(ph, g0)  # (its share capped at a lone CTA's miss, as a cohort's charge is)
            lead, convoy = min(1.0, self._convoy_share(ph, convoy, group)) if group > 1 else 1.0, None
        # a CTA's own pace (a cohort of several: its first CTA's), after the first wave, whose CTAs start in step
        own = 1.0 if ph.own_pace is None or together else float(ph.own_pace[g0])
        looped = ph.looped  # read once a pass, the rest once a CTA
        sides = ph.tiles if self.aggregate else None  # run one by one, no rectangle holds several CTAs' tiles
        l1 = code["l1"]  # share of its loads co-resident CTAs share through their SM's L1
        spilled = any(code["spills"])
        spill_pass = sum(code["spills"])  # bytes a CTA's pass reloads and stores
        l2_link = links["l2"]
        access = l2.access_pieces  # looked up once: called for every access of every step
        frame = self.frames[ph.n]  # local bytes a CTA spills to
        slots = ph.per_sm * sms
        per = kernel.iter_flops.tensor / code["tensor"]  # tensor-core seconds of one iteration
        paces = ph.paces  # seconds of one plain iteration by CTAs sharing an SM
        later = k + 1 < len(phases)
        successor = state.get("next", 0)  # a persistent launch: a tile ending makes the one this far on ready
        if later or successor:  # which CTAs end their loop at each step's end: they go on to the next loop then
            sl, i, j = kernel.coords(g0, g1)
            trips, reached, going = kernel.loop_bounds(i, j, sl)[1], 0.0, np.ones(g1 - g0, dtype=bool)
        steps = cohorts.steps(kernel, g0, g1, line_iters, self.aggregate, ph.steps, ph.max_steps)
        slotted = None  # a lone CTA's kept steps: each keeps its plan, the CTA's slots give the slices
        # lists a step fills and empties, kept for the cohort: most steps leave them empty (every load a hit)
        got, fills, held = [], [], []
        totals = ph.math  # tensor, SIMT and SFU FLOPs of the loop, summed step by step in the order steps end
        stats, start = ph.stats, ph.start  # the loop's counters, and when its launch started (set before any cohort)
        if type(steps) is cohorts.KeptSteps:
            steps, slotted = steps.template, steps.slots
        # a lone CTA's pipelined steps whose every load hits take the short way (_hit_form): the same counts and times
        quick = slotted is not None and stages > 1
        lines, replicas, move = l2.lines, l2.replicas, l2.lines.move_to_end
        frames: dict = {}  # a spilling CTA's frame as the short way serves it, by the iterations of the step
        for step in steps:
            if quick and not first:
                form = step.hit
                if form is None:
                    form = step.hit = self._hit_form(ph, step)
                share = -(-self.resident // sms)
                if share < 1:
                    share = 1
                plain = paces.get(share)
                if form and plain is not None:
                    now = env.now
                    for tix, sl, a, b, line_bytes, many in form[0]:  # access_pieces' test of a hit on a whole line
                        key = (tix, slotted[sl], a, b)
                        line = lines.get(key)
                        if (line is None or line[0] != line_bytes or line[2] > now or line[7] > now
                                or (line[6] < replicas and (many or line[5] != who))):
                            break
                        move(key)  # as access_pieces moves it (where a later piece misses, it moves it again)
                    else:
                        _, read, moved, length, pulled, tensor, simt, sfu, iters, sram = form
                        written = 0
                        if spilled:  # its frame reloaded, then stored again: each line whole and there (_frame_hits)
                            spill = frames.get(iters)
                            if spill is None:
                                spill = frames[iters] = self._frame_form(ph, g0, iters)
                            if not self._frame_hits(spill, now, who):
                                spill = None
                        if not spilled or spill is not None:
                            l2.stats = stats
                            stats.read_bytes += read
                            stats.lookup_bytes += float(read)  # a lookup a byte: one CTA, no fill on its way
                            stats.hit_bytes += read
                            if spilled:
                                self._frame_counts(spill)
                                reloads, spills = spill.moved
                                moved += reloads + spills
                                written += spills
                            end = now + length * (plain if plain > pulled else pulled) * own
                            ready = l2_link.reserve(now, moved - written)
                            if ready > end:
                                end = ready
                            if written:
                                ready = l2_link.reserve(now, written, write=True)
                                if ready > end:
                                    end = ready
                            totals[0] += tensor
                            totals[1] += simt
                            totals[2] += sfu
                            ph.iters += iters
                            ph.sram_read += sram
                            self.events += 1
                            yield env.timeout(end - now)
                            if later or successor:
                                reached += length
                            continue
            plan = step.plan  # kept with a step that comes back: a lone CTA's (slots for slices) or a few CTAs' merged
            if plan is None:
                plan = step.plan = self._plan(step.accesses, looped, sides, l1)
            now = env.now
            l2.stats = stats
            accesses, moved, atomic, written, loads, distinct, streamed = plan
            ready, missed, lone = now, False, 0.0  # lone: bytes filled for the lines read, per CTA reading them
            late = set() if stages < 2 else None  # tensors some of whose loads this step waited for memory
            # fills: (line, share of the step's passes) of every line its loads filled; held: (when, share of its
            # access) of bytes it reads that a CTA ahead of it is bringing in (both empty here, emptied after use)
            l2.hold_writes()  # the step's write-backs go on the memory link after its loads
            # when its fills are there matters to other CTAs reading them during the step: none if these are all
            # the resident CTAs (the next CTA starts as the step ends, when every fill is there)
            active, iters = step.active, step.iters
            alone = active == self.resident
            for t, sl, place, parts, nbytes, kind, mult, name, several in accesses:
                owed = lone
                r, lone, b = access((t, sl if slotted is None else slotted[sl]), parts, place, kind, mult, now,
                                    who, lockstep, lone, got if kind == READ and not alone else None, several, together)
                if convoy is not None and mult > 1 and lone != owed:  # each of the convoy waits its share
                    lone = owed + (lone - owed) * mult * self._convoy_share(ph, convoy, mult)
                if got:
                    fills += [(line, before / nbytes, upto / nbytes, lo, hi) for line, before, upto, lo, hi in got]
                    got.clear()
                if b is not None:
                    held += [(at, upto / nbytes) for at, upto in b]
                if r > ready:
                    ready, missed = r, True
                if late is not None and kind == READ and r > now:
                    late.add(name)
            if written and store_bytes != 1.0:  # stores in sectors partly filled: more crossbar bytes, not more DRAM
                ph.stored += written  # counted once the kernel ends, whatever its steps (_record)
                extra = written * (store_bytes - 1.0)
                moved += extra
                written += extra
            if atomic and self.atomics is not None:
                ready = max(ready, self.atomics.reserve(now, atomic))
                moved -= atomic
            if iters and spilled:  # spilled registers: to the L2 and back
                reloads, spills = (b * iters * active for b in code["spills"])
                spill = None
                if slotted is not None and active == 1 and not first:  # a lone CTA's frame: the short way where all
                    spill = frames.get(iters)  # of it hits (its tiles took the usual way: some missed or were on
                    if spill is None:  # their way)
                        spill = frames[iters] = self._frame_form(ph, g0, iters)
                    if not self._frame_hits(spill, now, who):
                        spill = None
                if spill is not None:
                    self._frame_counts(spill)
                elif frame:  # each CTA's frame reloaded, then stored again, in its slot's row of local memory:
                    # those lines through the L2 (misses filled from DRAM, evictions written back), the rest hits;
                    # a CTA's first pass stores before it reloads (nothing of it is in its frame before), and what
                    # its passes reload beyond what they store (values spilled once) was stored before its loop
                    # (outside the loop's counted traffic)
                    rows = _slot_rows(g0, active, slots)
                    width = {WRITE: min(frame, int(spills / active)), READ: min(frame, int(reloads / active))}
                    if first and width[READ] > width[WRITE]:
                        counted, l2.stats = l2.stats, L2Stats()
                        for a, b in rows:
                            l2.access_pieces((self.local, 0), self._cut("local", a, b, width[WRITE], width[READ])[2],
                                             HBM, WRITE, 1, now, who, False)
                        l2.stats = counted
                    for kind in (WRITE, READ) if first else (READ, WRITE):
                        for a, b in rows if width[kind] > 0 else ():
                            parts = self._cut("local", a, b, 0, width[kind])[2]
                            r, _, _ = l2.access_pieces((self.local, 0), parts, HBM, kind, 1, now, who, False)
                            if kind == READ and r > ready:
                                ready, missed = r, True
                    # each active CTA moved ``width`` bytes of its frame through the lines (a frame is within a row)
                    l2.spill(max(0.0, reloads - width[READ] * active), max(0.0, spills - width[WRITE] * active))
                else:
                    l2.spill(reloads, spills)
                moved += reloads + spills
                written += spills
            l2.post(now)
            r = l2_link.reserve(now, moved - written)
            if r > ready:
                ready = r
            if written:  # a step that stores nothing leaves the write clock alone (``reserve`` would give ``now``)
                r = l2_link.reserve(now, written, write=True)
                if r > ready:
                    ready = r
            # each CTA gets its SM's math units and issue slots, shared with the CTAs resident beside it;
            # the step lasts as long as its longest CTA (``length`` iterations); those whose loops end here leave
            share = -(-self.resident // sms)  # at least one (max(1, ...) spelt out: builtin calls cost in this loop)
            if share < 1:
                share = 1
            length = iters if step.span is None else step.span  # Step.length, without a property call a step
            math = 0.0
            if active:
                # priced iteration by iteration, as one CTA running them one at a time would be: a step's
                # first pass carries the CTA's work outside the loop (prologue, epilogue), the rest are alike
                plain = paces.get(share)
                if plain is None:
                    plain = paces[share] = sm_time(per, code["iter"], code["chain"], share, self.overlap,
                                                   code["specialised"], code["shared"])
                    if share == 1 and stages > 1:  # alone on its SM, as its shape's loop was calibrated
                        plain = paces[share] = plain + code["lone"]
                if stream_bw and stages > 1 and iters and loads:
                    # nor faster than it pulls its tiles, with the spill reloads and stores that cross to the
                    # L2 through the same load/store path (the tutorial's d = 128 backward moves 36.7 GB/s an SM
                    # of tiles and spills together, the calibrated 4-warp stream 41.6)
                    tiles = streamed / active / iters
                    plain = max(plain, (tiles + spill_pass) * CTA_LOAD_WARPS / (stream_bw * kernel.warps))
                if first:
                    outside = ((step.span_flops or step.flops).tensor / code["tensor"]) - per * length
                    head = min(1.0, length)
                    math = sm_time(per * head + outside, code["iter"] * head + code["once"], code["chain"] * head,
                                   share, self.overlap, code["specialised"],
                                   code["shared"] * head + code["shared_once"]) + max(0.0, length - 1) * plain
                else:
                    math = length * plain
                if own != 1.0:
                    math *= own
                if atomic and code["atomic"]:  # the exposed share of this SM's atomic traffic
                    math += code["atomic"] * atomic / active * share / (self.profile.l2_atomic_bandwidth / sms)
            flops = step.flops
            totals[0] += flops.tensor * active
            totals[1] += flops.simt * active
            totals[2] += flops.sfu * active
            ph.iters += iters * active
            ph.sram_read += step.sram_read
            # Load latency: paid once by a pipelined CTA (its later loads are issued ahead), and on
            # every iteration by an unpipelined one, whose next loads wait for this iteration's math.
            latency = lat_dram if missed else lat_l2
            # a value read before the first tiles (``lookups``): a round trip for the kernel's first wave (to
            # DRAM where its L2 starts empty, ncu mode); a later CTA's starts while the CTA beside it works
            lookup = 0.0
            if now == start:
                lookup = lat_dram if self.mode == "ncu" else lat_l2
            unfilled = 0.0  # what its passes would wait more if it filled all it reads itself
            if stages > 1:
                end = now + math
                if ready > end:  # max(now + math, ready), spelt out
                    end = ready
                passes = length - 1 if first else length  # a CTA's first pass waits its first loads instead
                if miss_pass and passes > 0 and distinct:
                    # A pass whose tiles were not in the L2 waits at its top for them: what the calibrated
                    # two-stage loop's pass waits when all of it misses (miss_pass_s), less the passes a
                    # deeper pipeline issued its loads ahead of that. Of CTAs reading a missing line
                    # together one pays: the others find it filled behind it (a convoy); in the first wave
                    # each pays the convoy series' share (``lone`` and ``lead``, see _convoy_share).
                    ahead = (stages - MISS_PASS_STAGES) * math / length
                    wait, paid = max(0.0, miss_pass - ahead) * passes, min(1.0, lone / distinct) * lead
                    end += wait * paid
                    unfilled = wait - wait * paid
                if first:
                    # a CTA's first loads have nothing issued ahead of them: a round trip (one more for
                    # each value it must read before it can address them, ``lookups``), then its first
                    # pass's tiles at the rate its warps keep bytes in flight (the largest sets the pace)
                    end += latency + kernel.lookups * lookup
                    if cta_bw and active and loads:
                        per_pass = max(1.0, iters)
                        first_tile = max(b / (per_pass if n in looped else 1.0) for n, b in loads.items()) / active
                        end += cta_load_seconds(first_tile, kernel.warps, cta_bw)
            else:
                # each iteration's loads: a round trip, then as fast as one CTA keeps bytes in flight;
                # loads of different tensors are issued together, so the largest sets the pace
                serial = latency * max(1.0, length) + (kernel.lookups * lookup if first else 0.0)
                if cta_bw and active and loads:
                    scale = length / iters if iters else 1.0
                    serial += max(cta_load_seconds(scale * b / active, kernel.warps, cta_bw if n in late else cta_bw_hit)
                                  for n, b in loads.items())
                # CTAs stepping together each wait for their own share of the step's bytes, then compute
                # while the others' bytes move: the step lasts the longer of the cohort's transfer and one
                # CTA's (its share, then its math and round trips), as the same CTAs run one by one do
                wait = ready - now
                if active > 1 and wait > 0:
                    end = now + max(wait, wait / active + math + serial)
                else:
                    end = ready + math + serial
            if held:
                # behind a CTA that is bringing in the same bytes (its loads merge with that one's fills in
                # flight, so the data comes to both at once): its pass over the last of them ends with that
                # one's. Only bytes that CTA asked for before this one does: it asks a pass's tiles a round trip
                # and its pipeline's depth ahead of its pass; bytes it reaches later than that after this CTA's
                # own pass asks for them, this CTA asks for first (run one by one it misses them and the other
                # finds them filled: causal backward CTAs of a later cohort read query rows that the cohort
                # before reaches at the end of a long step). Its pass goes at an even pace over its step, as
                # long as it would last if it filled all it reads (a convoy's CTAs all wait for memory: one
                # that found the bytes in flight is not faster than the one bringing them in)
                asked = lat_dram + (stages - 1) * (plain if active else 0.0)  # how far ahead of its pass
                span = end - now + unfilled
                for at, share in held:
                    if at > end and at - asked <= now + share * span:
                        end = at
                held.clear()
            if fills:
                if end > now:
                    l2.usable(fills, now, end, kernel.reverse)
                fills.clear()
            first = False
            self.events += 1
            yield env.timeout(end - now)
            if later or successor:
                reached += length
            if not step.done:
                continue
            if later:  # each run of CTAs whose loop ended goes on to the next loop together, as one cohort
                ended = going & (trips <= reached)
                going &= ~ended
                ph.end = max(ph.end, env.now)
                for a, b in _runs(np.flatnonzero(ended)):
                    state["running"].append(env.process(self._cohort(phases, k + 1, g0 + a, g0 + b, state)))
            else:
                if successor:  # each tile ending makes its CTA's next one ready
                    ended = going & (trips <= reached)
                    going &= ~ended
                    state["ready"].extend(int(g) for g in g0 + np.flatnonzero(ended) + successor if g < kernel.ctas)
                self._leave(step.done, state, kernel.name)

    def _hit_form(self, ph, step) -> tuple | bool:
        """A lone CTA's kept step as :meth:`_cohort`'s short way serves it where every load hits: ``(pieces, bytes
        read, bytes over the L2's link, iterations it lasts, seconds a pass takes at least to pull its tiles)``, a
        piece ``(tensor, slot, line row, line column, line bytes, read by several)``, then its FLOPs (tensor, SIMT,
        SFU), iterations and shared-memory bytes; False where it cannot (it stores, adds atomically or ends its CTA's
        loop, or a piece bypasses the L2 or is of local memory). A spilling CTA's frame is served apart
        (:meth:`_frame_form`). Such a step fills nothing and waits for nothing: it lasts its math (or its bytes
        over the L2's link)."""
        if step.done or step.active != 1:
            return False
        plan = step.plan
        if plan is None:
            plan = step.plan = self._plan(step.accesses, ph.looped, ph.tiles, ph.code["l1"])
        accesses, moved, atomic, written, loads, distinct, streamed = plan
        if atomic or written or not moved:
            return False
        pieces, read = [], 0
        for tix, sl, _place, parts, _nbytes, kind, mult, _name, several in accesses:
            if kind != READ or mult != 1 or tix == self.local:
                return False
            for a, b, size, line_bytes, _lo, _hi in parts:
                if line_bytes > self.l2.capacity:
                    return False
                pieces.append((tix, sl, a, b, line_bytes, several is not None and (a, b) in several))
                read += size
        pulled = 0.0  # no faster than it pulls its tiles, and its spills (see _cohort)
        if self._stream_bw and step.iters and loads:
            pulled = ((streamed / step.active / step.iters + sum(ph.code["spills"])) * CTA_LOAD_WARPS
                      / (self._stream_bw * ph.kernel.warps))
        flops = step.flops
        return (tuple(pieces), read, moved, step.length, pulled, flops.tensor, flops.simt, flops.sfu, step.iters,
                step.sram_read)

    def _frame_form(self, ph, g: int, iters: float) -> _Frame:
        """What lone CTA ``g``'s spilled registers move in a step of ``iters`` passes, as :meth:`_cohort` serves them
        after its first step (:class:`_Frame`). Its sums are :meth:`_cohort`'s with one CTA active (``* 1``,
        ``/ 1``), so that they are the same floats."""
        reloads, spills = (b * iters * 1 for b in ph.code["spills"])
        frame = self.frames[ph.n]
        if not frame:
            return _Frame((), (), 0, 0, spill_counts(reloads, spills), (reloads, spills))
        rows = _slot_rows(g, 1, ph.per_sm * self.profile.sm_count)
        width = {WRITE: min(frame, int(spills / 1)), READ: min(frame, int(reloads / 1))}
        cut = {kind: tuple(p for a, b in rows if width[kind] > 0 for p in self._cut("local", a, b, 0, width[kind])[2])
               for kind in (READ, WRITE)}
        rest = (max(0.0, reloads - width[READ] * 1), max(0.0, spills - width[WRITE] * 1))
        key = (self.local, 0)
        return _Frame(tuple((key + (a, b), line_bytes) for a, b, _, line_bytes, _, _ in cut[READ]),
                      tuple((key + (a, b), line_bytes, lo is None) for a, b, _, line_bytes, lo, _ in cut[WRITE]),
                      sum(p[2] for p in cut[READ]), sum(p[2] for p in cut[WRITE]), spill_counts(*rest), (reloads, spills))

    def _frame_hits(self, spill: _Frame, now: float, who) -> bool:
        """Whether a step's frame reloads (``spill``, :meth:`_frame_form`) all hit whole lines with nothing on their
        way and its stores all land on whole dirty lines that keep their copies, as access_pieces finds them: each
        moved to the LRU's end as it is tested (access_pieces moves them again where one is not)."""
        l2 = self.l2
        lines = l2.held if l2.pinned == self.local else l2.lines
        replicas, capacity, move, get = l2.replicas, l2.capacity, lines.move_to_end, lines.get
        for key, line_bytes in spill.reload_keys:
            line = get(key)
            if (line is None or line_bytes > capacity or line[0] != line_bytes or line[2] > now or line[7] > now
                    or (line[6] < replicas and line[5] != who)):
                return False
            move(key)
        for key, line_bytes, unplaced in spill.store_keys:
            line = get(key)
            if (line is None or line_bytes > capacity or line[1] != line_bytes or line[0] != line_bytes
                    or (line[6] < replicas and line[5] != who)
                    or (unplaced and (line[3] is not None or line[4] is not None))):
                return False
            move(key)
        return True

    def _frame_counts(self, spill: _Frame) -> None:
        """Count a step's frame traffic (``spill``, :meth:`_frame_form`) that every line served as a hit, as
        access_pieces counts its hits, then what it moved beyond its frame (L2Cache.spill), in the L2's counters."""
        stats = self.l2.stats
        loaded, stored = spill.loaded, spill.stored
        stats.read_bytes += loaded
        stats.lookup_bytes += float(loaded)
        stats.hit_bytes += loaded
        stats.write_bytes += stored
        stats.lookup_bytes += stored
        self.l2.count_spill(*spill.rest_counts)

    def _convoy_share(self, ph, series: tuple, group: int) -> float:
        """The share of the calibrated missed pass (``miss_pass_s``) each CTA of a convoy of ``group`` CTAs started
        together waits, from the convoy series (:func:`~iosim.costs.issue.convoy_series`). Measured on an H100
        (``h100/convoy_probe/softmax``): 0.4-1.6 of it from groups of 8 on (a share capped at 1), where the engine charged 1/group (one
        CTA of the convoy waited, the others rode its fill) aggregated and 1 run one by one. Only the first wave's
        CTAs start together: later ones start as slots free, trail the one that misses and wait nothing (the warm
        probe, ``h100/warm_probe``: from the fifth wave on, a wave of flash2's forward at d = 128 takes what it
        takes with every tile in the L2)."""
        got = ph.shares.get(group)
        if got is None:
            got = ph.shares[group] = convoy_wait(series, group) / self._miss_pass
        return got

    def _first_group(self, ph, g: int) -> int:
        """CTAs of the first wave of ``ph``'s kernel that read CTA ``g``'s key/value slice (``g`` of that wave)."""
        kernel = ph.kernel
        if ph.first_groups is None:
            n = min(kernel.ctas, ph.per_sm * self.profile.sm_count)
            slices, counts = np.unique(kernel.kv_slice(kernel.coords(0, n)[0]), return_counts=True)
            ph.first_groups = dict(zip(slices.tolist(), counts.tolist()))
        return ph.first_groups.get(int(kernel.kv_slice(kernel.coords(g, g + 1)[0])[0]), 1)

    def _plan(self, accesses, looped: set, tiles: dict | None = None, l1: float = 0.0) -> tuple:
        """What a step's accesses are, before any of them is served: each as ``(tensor index, slice, placement,
        pieces of lines, bytes, kind, CTAs)``, its tensor's name and the lines several CTAs' tiles of it share
        (``tiles``: see :func:`_several`), and the sums the step prices: bytes moved, atomically added and
        written, loaded per tensor, loaded once (of lines read, whoever reads them), and loaded of the tensors
        its loop streams (``looped``). ``l1``: the share of the loads that CTAs on one SM share through its L1
        (:func:`~iosim.costs.issue.l1_shared_loads`): a tile read by more CTAs at once than there are SMs
        crosses to them once an SM for that share, so the L2 serves it to as many as there are SMs."""
        out, moved, atomic, written, loads, distinct = [], 0, 0, 0, {}, 0
        sms = self.profile.sm_count
        for name, sl, r0, r1, c0, c1, kind, mult in accesses:
            t, place, parts, nbytes, several = self._cut(name, r0, r1, c0, c1,
                                                         tiles.get(name) if tiles and mult == 1 else None)
            served = mult  # CTAs (or SMs, for loads their L1 shares) the L2 serves the tile to
            if l1 and kind == READ and mult > sms:
                served = round(mult - l1 * (mult - sms))
            out.append((t, sl, place, parts, nbytes, kind, served, name, several))
            moved += nbytes * served
            if kind == ATOMIC:
                atomic += nbytes * mult
            elif kind == WRITE:
                written += nbytes * mult
            elif kind == READ:
                loads[name] = loads.get(name, 0) + nbytes * mult
                distinct += nbytes
        return out, moved, atomic, written, loads, distinct, sum(b for n, b in loads.items() if n in looped)

    def _cut(self, name: str, r0: int, r1: int, c0: int, c1: int, tile: tuple | None = None) -> tuple:
        """A rectangle of one slice of tensor ``name`` as ``(tensor index, placement, pieces of lines, bytes, lines
        several CTAs' tiles meet)`` (the last where ``tile`` gives a CTA's tile: see :func:`_several`), kept: every
        slice of a tensor is cut alike, and the same tiles come back every pass."""
        pieces, rect = self._pieces, (name, r0, r1, c0, c1, tile)
        cut = pieces.get(rect)
        if cut is None:
            if len(pieces) > PIECE_CACHE:
                pieces.clear()
            t = self.index[name]
            geometry = self.geoms[t]
            cut = pieces[rect] = ((t, self.places[t]) + _cut(geometry, r0, r1, c0, c1)
                                  + (_several(geometry, r0, r1, c0, c1, tile) if tile else None,))
        return cut

    def _leave(self, count: int, state: dict, name: str) -> None:
        """``count`` CTAs finish: their slots are free for the dispatcher."""
        self.resident -= count
        state["free"] += count
        self._done += count
        if self.progress is not None:
            self.progress(self._done, self._total, name)
        if state["wake"] is not None and not state["wake"].triggered:
            state["wake"].succeed()

    # -- bookkeeping -----------------------------------------------------------------------------
    def _record(self, ph, start: float, end: float, fixed: float) -> KernelResult:
        kernel, per_sm, st = ph.kernel, ph.per_sm, ph.stats
        if ph.stored:  # the crossbar bytes of stores in sectors partly filled, beyond the bytes written
            extra = round(ph.stored * (self.codes[ph.n].store_bytes - 1.0))
            st.write_bytes += extra
            st.lookup_bytes += extra
            ph.stored = 0
        levels = {
            "sram": Traffic(int(ph.sram_read), st.read_bytes),
            "l2": Traffic(st.read_bytes, st.write_bytes),
            "hbm": Traffic(st.fill_bytes["hbm"], st.writeback_bytes["hbm"]),
            "host": Traffic(st.fill_bytes["host"], st.writeback_bytes["host"]),
        }
        flops = {"tensor": ph.math[0], "simt": ph.math[1], "sfu": ph.math[2]}
        code = self.codes[ph.n]
        instructions = instruction_totals(code, ph.code["masked"], ph.iters, _live_ctas(kernel), kernel.warps,
                                          self.profile)
        head_dim = self.schedule.config.problem.head_dim
        slots = per_sm * self.profile.sm_count
        return KernelResult(
            name=kernel.name, ctas=kernel.ctas, ctas_per_sm=per_sm, waves=kernel.ctas / slots, levels=levels,
            l2_hit_bytes=st.hit_bytes, l2_miss_bytes=st.miss_bytes, flops=flops,
            dirty_left_bytes=self.l2.dirty, start_s=start, time_s=end - start,
            roofline=roofline(levels, flops, instructions, self.profile, self.dtype, kernel.mma, head_dim,
                              code.specialised),
            mma=kernel.mma, instructions=instructions, code=code.source, l2_lookup_bytes=round(st.lookup_bytes),
            regs_per_thread=kernel.regs_per_thread, smem_bytes=kernel.smem_bytes,
            launch_s=fixed, regimes=self._regimes(ph), launched=kernel.launch,
            unmodelled_bytes=round(sum(self.beyond[ph.n]) * ph.iters),
        )

    def _regimes(self, ph) -> tuple:
        """Where validation found the model least certain, for this kernel (:mod:`iosim.results.caveats`): a
        causal loop streaming more per slice than the L2 holds of shared lines (the kernels :meth:`_fine` steps
        line by line), spill frames that crowd the L2 (:meth:`_crowded`), a causal persistent kernel's tiles bound
        in advance (:meth:`_bound`), and a user's loop that moves more than its schedule (:meth:`_beyond`): a tile
        read or written as a tensor of its own, or bytes counted apart."""
        out = []
        if self._fine(ph.kernel):
            out.append(CAUSAL_EVICTING)
        if any(ph.code["spills"]) and self._crowded(ph.n):
            out.append(SPILL_FRAMES)
        if ph.kernel.causal is not CausalMode.NONE and self._bound(ph.kernel, ph.per_sm * self.profile.sm_count, ph.n):
            out.append(PERSISTENT_DRIFT)
        if ph.n in self.tiled_beyond:
            out.append(TILE_BEYOND)
        if any(self.beyond[ph.n]):
            out.append(UNMODELLED_TRAFFIC)
        return tuple(out)

    def _beyond_pass(self, n: int) -> tuple[float, float]:
        """Bytes a pass of kernel ``n``'s tile loop loads and stores, per CTA, beyond what its schedule reads and writes
        a pass: loads where its compiled code loads ``UNMODELLED_SHARE`` times what the schedule reads or more, stores
        where it stores beyond the schedule's writes ``UNMODELLED_SHARE - 1`` of that (0 otherwise, and where the
        code's global loads and stores are not known: estimated code, committed mixes written before they were
        recorded, tiles moved by TMA). Such a kernel moves something its schedule does not: a bias or mask tile read
        beside K and V, scores stored for the caller. Counted from its global loads' and stores' widths (LDG, LDGSTS;
        STG) over all its threads."""
        kernel, code = self.kernels[n], self.codes[n]
        if not kernel.loop_extent or code.loop.global_loads is None or code.tma:
            return 0.0, 0.0
        per_cta = WARP * kernel.warps / code.unroll
        read, written = pass_bytes(kernel, {name: self.geometry(name).tensor for name in self.index})
        loaded, stored = code.loop.global_loads * per_cta, (code.loop.global_stores or 0.0) * per_cta
        return (loaded - read if read and loaded >= UNMODELLED_SHARE * read else 0.0,
                stored - written if read and stored - written >= (UNMODELLED_SHARE - 1.0) * read else 0.0)

    def _beyond(self) -> None:
        """What each kernel's loop loads and stores a pass beyond its schedule (:meth:`_beyond_pass`, per CTA), and
        where either is one tile of ``BEYOND_ELEMS``-byte elements per (query block, key block) of a forward loop
        over keys, that tile: a tensor of its own (``beyond:<kernel>``, ``stored:<kernel>``; one slice per query
        head), its tile ``i`` × ``u`` read (written) every pass, as a bias or mask added to the scores is read and
        scores kept for the caller are written. Its bytes are then counted like K's and V's, each head's its own (a
        bias that heads share would find more of itself in the L2). What is left is counted apart
        (``unmodelled_bytes``)."""
        problem = self.schedule.config.problem
        self.beyond = [list(self._beyond_pass(n)) for n in range(len(self.kernels))]
        self.tiled_beyond: set = set()
        self.kept_beyond: list = []  # the tensors written beyond the schedule (scores kept for the caller)
        for n, k in enumerate(self.kernels):
            keys = any(p.phase is LOOP and p.kv and p.rows == "u" for p in k.patterns)
            if not (keys and k.tj == 1 and not k.split_blocks and k.ragged is None and not k.persistent):
                continue
            for side, (kind, prefix) in enumerate(((READ, "beyond"), (WRITE, "stored"))):
                elem = self.beyond[n][side] / (k.block_i * k.block_u)
                if elem not in BEYOND_ELEMS:
                    continue
                name = f"{prefix}:{k.name}"
                tensor = Tensor(name, k.slices, problem.seq_q, k.loop_extent, int(elem))
                self.index[name] = len(self.places)
                self.places.append(HBM)
                self.geoms.append(LineGeometry.for_tensor(tensor, max(self._line, tensor.slice_bytes // LINES_PER_SLICE)))
                k = self.kernels[n] = replace(k, patterns=k.patterns + (Pattern(name, LOOP, kind, "i", "u"),),
                                              extents=k.extents + ((name, tensor.rows, tensor.cols),))
                self.beyond[n][side] = 0.0
                self.tiled_beyond.add(n)
                if kind == WRITE:  # an output the caller keeps, which the schedule does not allocate
                    self.kept_beyond.append(tensor)

    def _timeline(self) -> dict:
        end = self.env.now or 1.0
        edges = np.linspace(0.0, end, TIMELINE_BINS + 1)
        out = {"t_s": edges[1:].tolist()}
        for lv in ("hbm", "l2", "host"):
            out[lv] = np.rint(self.links[lv].histogram(edges)).astype(np.int64).tolist()
        return out


class _Frame(NamedTuple):
    """What a lone CTA's spilled registers move in a step (:meth:`Engine._frame_form`), kept for its steps alike."""

    reload_keys: tuple  # (L2 key, line bytes) of each piece of its frame reloaded, as Engine._frame_hits tests them
    store_keys: tuple  # (L2 key, line bytes, place in the line unknown) of each piece stored again
    loaded: int  # bytes its reloaded pieces hold
    stored: int  # bytes its stored pieces hold
    rest_counts: tuple  # what it reloads and stores beyond its frame's lines, as L2Cache.spill counts it (spill_counts)
    moved: tuple  # bytes reloaded and stored in all


@dataclass
class _Phase:
    """One loop of a launch as it runs: kernel ``n`` of the schedule, its priced code, its step settings
    (``max_steps`` None: steps of ``FINE_LINES`` lines, see Engine._fine), the steps a lone CTA takes by tile (shared by
    every slice, see cohorts.steps) and what it counted: L2 traffic, FLOPs, iterations, shared-memory reads."""

    n: int
    kernel: object
    per_sm: int
    code: dict
    line_iters: int
    max_steps: int | None
    stats: L2Stats
    paces: dict = field(default_factory=dict)  # seconds of one plain iteration by CTAs sharing an SM
    steps: dict = field(default_factory=dict)
    math: list = field(default_factory=lambda: [0.0, 0.0, 0.0])
    iters: float = 0.0
    sram_read: float = 0.0
    stored: int = 0  # bytes its stores wrote where they move more over the crossbar (KernelCode.store_bytes)
    start: float = 0.0  # when its launch started: its first wave's cohorts start then
    end: float = 0.0  # when its last CTA ended this loop (where a later loop follows it in the launch)
    own_pace: np.ndarray | None = None  # each CTA's pace factor (iosim.engine.pace; None: every CTA alike)
    fine: bool = False  # its steps are one line long (Engine._fine); in heads order one cohort a key/value slice
    shares: dict = field(default_factory=dict)  # a convoy's share of a missed pass by its CTAs (Engine._convoy_share)
    first_groups: dict | None = None  # CTAs of its first wave by key/value slice (Engine._first_group)

    @functools.cached_property
    def looped(self) -> frozenset:
        """Tensors its loop streams: read once a pass (the rest once a CTA)."""
        return frozenset(p.tensor for p in self.kernel.patterns if p.phase == LOOP)

    @functools.cached_property
    def tiles(self) -> dict:
        """Tensor -> (rows, columns) of one CTA's tile along the sides that follow its ``i`` or ``j`` block
        (None along a side that does not), for tensors whose every pattern agrees: a rectangle longer than
        that along such a side is several CTAs' tiles merged (see :func:`_several`)."""
        k, found = self.kernel, {}
        block = {"i": k.block_i, "j": k.block_j}
        for p in k.patterns:
            found.setdefault(p.tensor, set()).add((block.get(p.rows), block.get(p.cols)))
        return {t: sides.pop() for t, sides in found.items() if len(sides) == 1 and sides != {(None, None)}}


def _runs_of_equal(values) -> list:
    """``(first, end)`` of each run of equal consecutive entries of the array ``values``."""
    cuts = np.flatnonzero(values[1:] != values[:-1]) + 1
    edges = [0] + cuts.tolist() + [len(values)]
    return list(zip(edges[:-1], edges[1:]))


def _runs(idx) -> list:
    """``(first, end)`` of each run of consecutive integers in the sorted array ``idx``."""
    if not len(idx):
        return []
    cuts = np.flatnonzero(np.diff(idx) != 1) + 1
    return [(int(r[0]), int(r[-1]) + 1) for r in np.split(idx, cuts)]


def pass_bytes(kernel, tensors: dict) -> tuple[int, int]:
    """Bytes one CTA's pass of ``kernel``'s tile loop reads and writes in its schedule (atomic adds apart): each loop
    access's tile, once per query head of its group where it fans out, a tile spanning a tensor's whole side as wide
    as the power of two a compiled tile takes (a head of 96 loads a 128-column tile, masked)."""
    blocks = {"i": kernel.block_i, "j": kernel.block_j, "u": kernel.block_u}
    out = {READ: 0, WRITE: 0}
    for p in kernel.patterns:
        if p.phase is not LOOP or p.kind not in out:
            continue
        t = tensors[p.tensor]
        sides = [blocks.get(dim) or 1 << (extent - 1).bit_length() for dim, extent in ((p.rows, t.rows), (p.cols, t.cols))]
        out[p.kind] += sides[0] * sides[1] * t.elem_bytes * (kernel.kv_group if p.fan else 1)
    return out[READ], out[WRITE]


def _slot_rows(g0: int, n: int, slots: int) -> list:
    """Rows of local memory the CTAs ``g0..g0+n`` spill to: CTA g to its slot, g mod slots (in one or two runs)."""
    a = g0 % slots
    if a + n <= slots:
        return [(a, a + n)]
    return [(a, slots), (0, a + n - slots)]


def _cut(geometry: LineGeometry, r0: int, r1: int, c0: int, c1: int) -> tuple:
    """A rectangle's pieces of lines (:meth:`LineGeometry.pieces`) and its bytes."""
    cut = tuple(geometry.pieces(r0, r1, c0, c1))
    return cut, sum(p[2] for p in cut)


def _several(geometry: LineGeometry, r0: int, r1: int, c0: int, c1: int, tile: tuple) -> frozenset | None:
    """Lines of a rectangle that the tiles of more than one CTA meet, where it is several CTAs' tiles merged
    (longer than ``tile``, a CTA's rows and columns, along a side that follows the CTA's block); None if none.
    Run one by one, such a line is touched by a CTA other than its first user and held in every L2 partition;
    merged into one access it would stay private: the aggregated run marks it shared alike."""
    rb, cb = tile
    if not ((rb and r1 - r0 > rb) or (cb and c1 - c0 > cb)):
        return None
    t = geometry.tensor
    rows = _crossing(r0, min(r1, t.rows), geometry.line_rows, rb)
    cols = _crossing(c0, min(c1, t.cols), geometry.line_cols, cb)
    return frozenset((a, b) for a, a_crosses in rows for b, b_crosses in cols if a_crosses or b_crosses) or None


def _crossing(x0: int, x1: int, line: int, tile: int | None) -> list:
    """``(band, crosses)`` for each band of ``line`` (a line's rows or columns) that ``x0..x1`` meets: whether
    its part of ``x0..x1`` holds more than one tile of ``tile`` (a CTA's tile along that side; None: one)."""
    out = []
    for a in range(x0 // line, (x1 - 1) // line + 1):
        lo, hi = max(x0, a * line), min(x1, (a + 1) * line)
        out.append((a, bool(tile) and (hi - 1) // tile > lo // tile))
    return out


def _private_copies(profile, replicas: int) -> float:
    """Copies of the L2 a line only one CTA touches occupies, on average: a private cyclic sweep fits
    ``l2_sweep_bytes`` of the L2 (measured), because a line homed in the far partition is copied into
    the near one too; 1 where not measured."""
    if replicas <= 1 or not profile.l2_sweep_bytes:
        return 1.0
    return min(float(replicas), max(1.0, profile.l2_bytes / profile.l2_sweep_bytes))


def _lockstep_shares(profile) -> tuple | None:
    """The profile's lookups a load of CTAs in lockstep on present lines (the pair probe: a pair and a group of
    ``lrc_group_ctas``, of the first wave and launched together later) and that group's size, or None where it has not
    all five."""
    shares = tuple(getattr(profile, f) for f in LOCKSTEP_FIELDS)
    return None if None in shares or shares[-1] <= 2 else shares


def _unrolled(kernel, code):
    """``code`` with the blocks one pass of its loop covers (:attr:`KernelCode.unroll`): for FlashAttention-2's
    forward, whose block is one Q tile against one K/V tile (4·B_r·B_c·d FLOPs), the pass's tensor-core FLOPs over
    one block's, where that is a whole number of two or more: the compiler unrolled the loop, and each pass is the
    code of that many blocks. (Other kernels' blocks may pad their products, a decode tile's rows to 16.)"""
    if not (kernel.name in ("flash2_fwd", "flash2_varlen_fwd") and code.pass_flops and kernel.iter_flops.tensor):
        return code
    ratio = code.pass_flops * kernel.warps / kernel.iter_flops.tensor
    k = round(ratio)
    return replace(code, unroll=k) if k >= 2 and abs(ratio - k) <= 0.01 * k else code


def _persistent_code(kernel, code):
    """A persistent kernel's code per tile (the schedule's CTA): the loops around its tile loop, one pass a
    tile, and its code outside every loop spread over the tiles of each of its CTAs. Code with no loop around
    its tile loop (iosim's own kernels, launched as persistent to see what that would do) is a tile's as it is."""
    if not kernel.persistent or kernel.ctas <= kernel.persistent or not code.enclosing.instructions:
        return code
    return replace(code, outside=code.outside.scaled(kernel.persistent / kernel.ctas).plus(code.enclosing))


def _with_resources(kernel, code):
    """The kernel with the registers and shared memory its compiled code uses, where known."""
    changes = {}
    if code.regs_per_thread:
        changes["regs_per_thread"] = code.regs_per_thread
    if code.shared_bytes is not None and code.shared_bytes > 0:
        changes["smem_bytes"] = code.shared_bytes
    return replace(kernel, **changes) if changes else kernel


def _live_ctas(kernel) -> int:
    """CTAs that run the kernel's code: all but a variable-length batch's CTAs past their request's rows."""
    if kernel.ragged is None:
        return kernel.ctas
    sl, i, _ = kernel.coords(0, kernel.ctas)
    return int(kernel.live(i, sl).sum())


def masked_share(kernel, steps: int = 0) -> float:
    """Share of a kernel's loop iterations that run the masked loop body: the blocks the causal
    diagonal or a window's lower edge crosses, a ragged last block, and a window's first split block; or, for
    code that peels ``steps`` masking steps off its loop, each CTA's first ``steps`` blocks."""
    if not kernel.n_loop or kernel.program.value != "tile_loop":
        return 0.0
    if steps:
        sl, i, j = kernel.coords(0, kernel.ctas)
        trips = kernel.loop_bounds(i, j, sl)[1]
        total = float(trips.sum())
        return float(np.minimum(trips, steps).sum()) / total if total else 0.0
    every = kernel.ragged is not None  # a variable-length batch's slices differ; otherwise one slice says it all
    sl, i, j = kernel.coords(0, kernel.ctas if every else min(kernel.ctas, kernel.ti * kernel.tj))
    start, trips = kernel.loop_bounds(i, j, sl)
    total = float(trips.sum())
    if not total:
        return 0.0
    bi, bu, stop = kernel.block_i, kernel.block_u, start + trips
    extent = kernel.ragged.arrays[2][kernel.request(sl)] if every else kernel.loop_extent
    n = -(-extent // bu)
    edge = start
    o = kernel.causal_offset  # where the diagonal sits: row r sees keys up to r + o
    if kernel.causal.value == "stop":  # forward: from the block holding the CTA's first row's diagonal on
        lo, hi = np.clip((i * bi + o) // bu, start, stop), stop
        if kernel.window:  # and below the first block every row of the CTA sees whole
            edge = np.clip(-(-np.maximum(0, (i + 1) * bi - kernel.window) // bu), start, lo)
    elif kernel.causal.value == "start":  # backward: up to the block holding the row that sees the CTA's last key
        lo, hi = start, np.maximum(start, np.minimum(-(-((i + 1) * bi - o) // bu), stop))
    else:
        lo = hi = stop
        if kernel.window and kernel.split_blocks:  # a decode window: the first split's first block, if the
            cut = (extent - kernel.window) % bu != 0  # window starts inside it
            edge = start + ((i == 0) & (trips > 0) & (extent > kernel.window) & cut)
    masked = hi - lo + (edge - start)
    ragged = (extent % bu) != 0  # the ragged last block, where the CTA reaches it outside [lo, hi)
    inside = ((lo <= n - 1) & (n - 1 < hi)) | ((start <= n - 1) & (n - 1 < edge))
    masked = masked + (ragged & (trips > 0) & (stop == n) & ~inside)
    return float(masked.sum()) / total
