"""Math time of a CTA from its own instructions: issue slots and pipe throughputs, tensor cores from FLOPs.

A kernel's loop body is described per warp and iteration by a :class:`LoopCode` — how many
instructions it issues and how many go to each functional pipe (the names Nsight Compute uses:
``fma``, ``alu``, ``xu``, ``lsu``, ``tensor``, ...), read from the kernel's compiled SASS
(:mod:`iosim.costs.sass`) or estimated from its FLOPs. One SM has four sub-partitions, each issuing
one warp instruction per clock; a pipe with ``L`` lanes per SM takes ``128 / L`` clocks of its
sub-partition per warp instruction (FP32: 128 lanes on Hopper, 1 clock; MUFU: 16, 8 clocks). A warp's
iteration therefore costs ``max(instructions, max over pipes of count × clocks)`` clocks of its
sub-partition, and a CTA's warps share the four sub-partitions.

Tensor-core time is the iteration's matrix FLOPs at the rate the calibration's tile loop reached
for the same head dimension (``calibration.raw`` ``tile_<dtype>_d<d>``), else the profile's
efficiency. Where the calibration ran the tile loop at several occupancies
(``tile_occ_fp16_<bm>x<bn>x<d>w<warps>_c<ctas>``), the rate follows the warpgroups resident per SM:
one warpgroup alone leaves the tensor cores idle while it waits for its own results, more fill the
gaps. A measured rate holds the tile loop's own instructions too: :func:`tensor_rates` takes out the
share of them (priced from the loop's committed SASS) that the calibration's softmax series says it
holds (:func:`own_simt_share`), so that a kernel's instructions are not counted twice.
Within one CTA the softmax waits for ``S = QKᵀ`` and the next product waits for ``P``: SIMT and
tensor time add up. Co-resident CTAs may hide the shorter of the two behind each other's by the
measured ``math_overlap`` (none where it was not measured). A CTA's atomic adds (FlashAttention-2
backward's dQ) leave through the same memory pipe as its next loads: the calibrated share of their
time adds to the CTA's loop (``tile_bwd_atomic_*`` against ``tile_bwd_plain_*``).
"""
from __future__ import annotations

import functools
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

from iosim.costs.banks import WAVEFRONT_BYTES
from iosim.costs.sass import WARPGROUP, LoopMix, load_mixes

SUBPARTITIONS = 4  # warp schedulers per SM on every architecture iosim models (Volta to Hopper)
WARP = 32
LOCAL_WORD = 4  # bytes: LoopCode counts spills in 32-bit words per thread

# pipe -> the profile field with its lanes per SM (None: the profile's SFU rate)
_LANES = {"fma": "fp32_lanes_per_sm", "fmaheavy": "fp32_lanes_per_sm", "fp16": "fp32_lanes_per_sm",
          "alu": "int32_lanes_per_sm", "xu": None, "lsu": "lsu_lanes_per_sm"}


@dataclass(frozen=True)
class LoopCode:
    """Warp instructions of one loop iteration (or of a CTA's code outside its loops), per warp."""

    instructions: float
    pipes: Mapping[str, float] = field(default_factory=lambda: MappingProxyType({}), hash=False)
    local_loads: float = 0.0  # registers the compiler spilled, reloaded (LDL): 4-byte words per thread
    local_stores: float = 0.0  # registers spilled (STL): 4-byte words per thread
    waits: Mapping[str, tuple] = field(default_factory=lambda: MappingProxyType({}), hash=False)  # see LoopMix.waits
    stall_cycles: float | None = None  # one warp's issue cycles by the compiler's stall counts (None: unknown)
    # bytes a warp instruction moves through shared memory -> such instructions per warp (None: not recorded)
    shared: Mapping[int, float] | None = field(default=None, hash=False)
    # bytes one thread loads from global memory (LDG, LDGSTS) and stores to it (STG) per pass (None: not recorded,
    # or estimated code)
    global_loads: float | None = None
    global_stores: float | None = None
    l1_loads: float | None = None  # of ``global_loads``, the bytes that allocate in the SM's L1 (see LoopMix)
    # wavefronts per warp on the shared-memory path with bank conflicts counted (None: not recorded; see LoopMix)
    shared_wavefronts: float | None = None

    def scaled(self, k: float) -> LoopCode:
        return LoopCode(self.instructions * k, MappingProxyType({p: n * k for p, n in self.pipes.items()}),
                        self.local_loads * k, self.local_stores * k, self.waits,
                        None if self.stall_cycles is None else self.stall_cycles * k,
                        None if self.shared is None else MappingProxyType({b: n * k for b, n in self.shared.items()}),
                        None if self.global_loads is None else self.global_loads * k,
                        None if self.global_stores is None else self.global_stores * k,
                        None if self.l1_loads is None else self.l1_loads * k,
                        None if self.shared_wavefronts is None else self.shared_wavefronts * k)

    def plus(self, other: LoopCode) -> LoopCode:
        """This code followed by ``other``, per warp: counts add, and so do their waits and stall cycles."""
        def add(a, b):  # keys in order of appearance (a set's order would follow the process's hash seed)
            return MappingProxyType({k: a.get(k, 0.0) + b.get(k, 0.0) for k in dict.fromkeys([*a, *b])})

        waits = MappingProxyType({op: tuple(self.waits.get(op, ())) + tuple(other.waits.get(op, ()))
                                  for op in dict.fromkeys([*self.waits, *other.waits])})
        shared = None if self.shared is None and other.shared is None else add(self.shared or {}, other.shared or {})
        return LoopCode(self.instructions + other.instructions, add(self.pipes, other.pipes),
                        self.local_loads + other.local_loads, self.local_stores + other.local_stores, waits,
                        _known_sum(self.stall_cycles, other.stall_cycles), shared,
                        _known_sum(self.global_loads, other.global_loads),
                        _known_sum(self.global_stores, other.global_stores),
                        _known_sum(self.l1_loads, other.l1_loads),
                        _wavefront_sum(self, other))

    def exposed_cycles(self, opcode: str, latency: float) -> float:
        """Cycles one warp waits per pass for ``opcode`` results of ``latency`` cycles that the
        compiler's schedule does not cover (see :func:`iosim.costs.sass.scoreboard_waits`)."""
        return sum(max(0.0, latency - d) for d in self.waits.get(opcode, ()))


@dataclass(frozen=True)
class KernelCode:
    """What a kernel's compiled code says about its cost: loop bodies, launch resources, spills.

    ``masked`` is the loop that runs for blocks needing a mask (causal diagonal, ragged tail) where
    the kernel has a separate one; ``source`` says where the numbers come from.
    """

    loop: LoopCode
    masked: LoopCode | None = None
    # passes of the masked loop per block of the unmasked one's: a masked copy over smaller tiles (the Triton
    # tutorial's backward steps its diagonal blocks in halves) runs more of them, as many as its products are smaller
    masked_passes: float = 1.0
    # the masked body runs for the first ``masked_steps`` blocks each CTA walks, whatever the diagonal: a kernel that
    # peels its masking steps off its loop (FlashAttention-2's CUDA forward: one, two where a causal CTA's rows or
    # the key length are not whole blocks); 0: the blocks a mask needs (causal diagonal, ragged tail), as Triton's
    masked_steps: int = 0
    outside: LoopCode = LoopCode(0.0)
    regs_per_thread: int | None = None
    shared_bytes: int | None = None
    spill_bytes: int = 0  # local-memory bytes per thread the compiler spilled
    local_bytes: int = 0  # local memory per thread in all (spills and stack frame): the spill footprint
    source: str = "estimate"
    tma: bool = False  # its loop loads its tiles by TMA (UTMALDG), not through the memory pipe
    # warp-specialised (FlashAttention-3, cuDNN): producer warps load the tiles and reduce dQ by TMA, and
    # the consumer warpgroups take turns on the tensor cores, one's softmax running under the other's
    # products (ping-pong), so within a CTA tensor and SIMT time overlap and no atomic waits in the loop
    specialised: bool = False
    # bytes its stores move over the crossbar per byte of output: ATen's reduce kernel (a group sum) writes its
    # outputs in 32-byte sectors a quarter full (iosim.kernels.aten_probe: 3.3-3.9x for fp16), which the L2 merges
    # before DRAM; 1 for every kernel whose stores fill their sectors
    store_bytes: float = 1.0
    # its products are wgmma, whose operands the tensor cores read from shared memory by descriptor: through the
    # same data path as the LSU's wavefronts (Nsight Compute counts them together), but no instruction says how much
    wgmma: bool = False
    # the own code of the loops enclosing the tile loop, one pass of each: a persistent kernel's tile loop (each
    # pass one tile's prologue and epilogue; FlashAttention-1's outer loop is priced apart, see its schedule)
    enclosing: LoopCode = LoopCode(0.0)
    # the loop around the tile loop draws its next tile from a counter (an atomic in it): a persistent kernel's
    # tiles go to whichever CTA asks first, not to a CTA fixed in advance
    tile_counter: bool = False
    # tensor-core FLOPs one warp's pass of the (unmasked) loop does, from its MMA instructions' shapes (None: unknown)
    pass_flops: float | None = None
    # loop iterations (K/V blocks) one pass covers: a loop the compiler unrolled (``tl.range(...,
    # loop_unroll_factor=k)``) runs one pass every ``unroll`` blocks, each pass the code of ``unroll`` of them
    unroll: int = 1


def _known_sum(a: float | None, b: float | None) -> float | None:
    """A count two codes add up to where both recorded it, else unknown (None)."""
    return None if a is None or b is None else a + b


def _wavefront_sum(a: LoopCode, b: LoopCode) -> float | None:
    """Shared-memory wavefronts of two codes, one after the other: counted where a code recorded them, its
    accesses at 128 bytes a wavefront (:func:`shared_cycles`' rule) where it did not; None if neither did."""
    if a.shared_wavefronts is None and b.shared_wavefronts is None:
        return None
    return sum(c.shared_wavefronts if c.shared_wavefronts is not None else _ideal_wavefronts(c) for c in (a, b))


def _ideal_wavefronts(loop: LoopCode) -> float:
    return sum(n * max(1, math.ceil(b / WAVEFRONT_BYTES)) for b, n in (loop.shared or {}).items())


def loop_code(mix: LoopMix) -> LoopCode:
    """A compiled loop's (or a kernel's code outside its loops') cost description from its SASS mix; its
    spills in 4-byte words by each LDL/STL's width where the mix recorded them, else a word an instruction."""
    loads, stores = float(mix.opcodes.get("LDL", 0)), float(mix.opcodes.get("STL", 0))
    if mix.local_load_bytes is not None:
        loads, stores = mix.local_load_bytes / 4.0, (mix.local_store_bytes or 0) / 4.0
    return LoopCode(float(mix.instructions), MappingProxyType({p: float(n) for p, n in mix.pipes.items()}),
                    loads, stores, MappingProxyType({k: tuple(v) for k, v in mix.waits.items()}),
                    None if mix.stall_cycles is None else float(mix.stall_cycles),
                    None if mix.shared is None else MappingProxyType({b: float(n) for b, n in mix.shared.items()}),
                    None if mix.global_load_bytes is None else float(mix.global_load_bytes),
                    None if mix.global_store_bytes is None else float(mix.global_store_bytes),
                    None if mix.l1_load_bytes is None else float(mix.l1_load_bytes),
                    None if mix.shared_wavefronts is None else float(mix.shared_wavefronts))


def lanes(profile, pipe: str) -> float | None:
    """Results per clock per SM of ``pipe`` (``None``: an issue slot only, e.g. branch or uniform)."""
    if pipe not in _LANES:
        return None
    attr = _LANES[pipe]
    if attr is None:
        return float(profile.sfu_ops_per_clk_per_sm)
    value = getattr(profile, attr, None)
    if value:
        return float(value)
    fp32 = profile.simt_fp32_flops / (2.0 * profile.sm_count * profile.clock_hz)  # FMA = 2 FLOPs
    return {"fp32_lanes_per_sm": fp32, "int32_lanes_per_sm": fp32 / 2, "lsu_lanes_per_sm": 32.0}[attr]


def warp_cycles(loop: LoopCode, profile) -> float:
    """Clocks of its sub-partition one warp's ``loop`` takes: issue-bound or bound by its busiest pipe."""
    busiest = 0.0
    for pipe, count in loop.pipes.items():
        n = lanes(profile, pipe)
        if n:
            busiest = max(busiest, count * WARP * SUBPARTITIONS / n)
    return max(loop.instructions, busiest)


def shared_cycles(loop: LoopCode, profile) -> float:
    """SM clocks one warp's ``loop`` holds the shared-memory data path: its wavefronts, bank conflicts
    counted from the lanes' addresses where the code recorded them (:mod:`iosim.costs.banks`), else each
    instruction's bytes at 128 a wavefront (at least one each), at ``smem_bytes_per_clk_per_sm`` bytes a
    clock. One path per SM, shared by its four sub-partitions: a loop of ``ldmatrix``, shared loads and
    shuffles (mma.sync tiles, cross-warp reductions) can be bound by it rather than by its issue slots or
    products. 0 where the code or the profile does not say."""
    width = profile.smem_bytes_per_clk_per_sm
    if not (loop.shared and width):
        return 0.0
    waves = loop.shared_wavefronts if loop.shared_wavefronts is not None else _ideal_wavefronts(loop)
    return waves * WAVEFRONT_BYTES / width


def simt_seconds(loop: LoopCode, warps: int, profile) -> float:
    """Time one CTA of ``warps`` warps spends issuing ``loop`` once, alone on its SM."""
    per_subpartition = -(-warps // SUBPARTITIONS)
    return per_subpartition * warp_cycles(loop, profile) / profile.issue_clock_hz


def shared_seconds(loop: LoopCode, warps: int, profile) -> float:
    """Time the SM's shared-memory path takes for one pass of ``loop`` by a CTA of ``warps`` warps: its
    warps take turns on it whatever sub-partition they issue from."""
    return warps * shared_cycles(loop, profile) / profile.issue_clock_hz


# producer opcode -> the calibration's raw latency keys (SM cycles) that price a wait for its result
_LATENCY_KEYS = {"MUFU": ("lat_mufu_ex2", "lat_mufu_rcp"), "SHFL": ("lat_shfl",), "LDS": ("lat_lds",),
                 "LDSM": ("lat_lds",)}


def latencies(profile, miss: float = 0.0) -> dict[str, float]:
    """SM cycles until the result of each variable-latency producer is ready: measured by the
    calibration (``lat_*``), and for a spill reload the L1 hit latency (taken as shared memory's) or,
    for the share ``miss`` that misses L1 (:func:`reload_miss`), the round trip to the L2."""
    raw = _raw(profile)
    out = {}
    for opcode, keys in _LATENCY_KEYS.items():
        found = [float(raw[k]) for k in keys if raw.get(k)]
        if found:
            out[opcode] = max(found)
    if profile.l2_latency:
        out["LDL"] = miss * profile.l2_latency * profile.issue_clock_hz + (1 - miss) * out.get("LDS", 0.0)
    return out


def chain_seconds(loop: LoopCode, profile, latency: Mapping[str, float]) -> float:
    """One warp's pass through ``loop`` alone: its issue cycles by the compiler's stall counts plus the
    waits its schedule does not cover at ``latency`` (producer → cycles); 0 where the code carries no
    schedule. However many warps share the sub-partition, a pass never takes less."""
    if loop.stall_cycles is None:
        return 0.0
    cycles = loop.stall_cycles + sum(loop.exposed_cycles(op, lat) for op, lat in latency.items())
    return cycles / profile.issue_clock_hz


CTA_LOAD_WARPS = 4  # warps of the CTA whose load rate a profile's cta_load_bandwidth is (microbench.cta_load_rate)


def cta_load_seconds(nbytes: float, warps: int, cta_load_bandwidth: float) -> float:
    """Seconds one CTA of ``warps`` warps takes to pull ``nbytes`` it could not issue ahead: the calibrated
    4-warp CTA's rate, times the warps keeping loads in flight."""
    return nbytes / (cta_load_bandwidth * warps / CTA_LOAD_WARPS)


MISS_SERIES = re.compile(r"miss_pass_(softmax_)?(\d+)x(\d+)x(\d+)w(\d+)_resident_s")


def cta_stream_bandwidth(profile) -> float | None:
    """Bytes/s one 4-warp CTA pulls its pipelined K/V tiles from the L2 at best: the fastest pass of the
    calibrated tile loop on L2-resident tiles (``miss_pass_[softmax_]<bm>x<bn>x<d>w<warps>_resident_s``,
    2·bn·d fp16 bytes a pass; per 4 warps) — with FlashAttention-2's online softmax where measured, the
    loop our kernels run — None where not measured. A loop with little math per byte (decode's 16 query
    rows) runs at this rate, not at its instructions' pace."""
    raw = (profile.calibration or {}).get("raw") or {}
    rates: dict = {}
    for key, seconds in raw.items():
        m = MISS_SERIES.fullmatch(key)
        if m and seconds > 0:
            softmax, _, bn, d, warps = m.groups()
            rates.setdefault(bool(softmax), []).append(2 * int(bn) * int(d) * 2 / seconds * CTA_LOAD_WARPS / int(warps))
    best = rates.get(True) or rates.get(False)
    return max(best) if best else None


def lone_excess(profile, rows: int, bn: int, d: int, warps: int) -> float:
    """Seconds a CTA alone on its SM spends in each pass of an online-softmax tile loop of this shape
    (``rows`` × ``bn`` × ``d``, ``warps`` warps) beyond what its own code prices at: the calibrated loop
    of that shape on L2-resident tiles (``miss_pass_softmax_<rows>x<bn>x<d>w<warps>_resident_s``, one
    CTA on every other SM, fp16) less what :func:`sm_time` prices that loop's own compiled code at. Large
    tiles are priced right (none); tiles of a few query rows (decode) wait more than their code explains.
    0 where the shape or its loop's code was not calibrated."""
    resident = _raw(profile).get(f"miss_pass_softmax_{rows}x{bn}x{d}w{warps}_resident_s")
    loop = calibration_loop(profile, rows, bn, d, warps, CALIBRATION_STAGES, True)
    if not resident or loop is None:
        return 0.0
    rate = tensor_rate(profile, "fp16", "fwd", d, warps, 1, (rows, bn), CALIBRATION_STAGES) / profile.sm_count
    own = sm_time(4.0 * rows * bn * d / rate, simt_seconds(loop, warps, profile),
                  chain_seconds(loop, profile, latencies(profile, 0.0)), 1, profile.math_overlap or 0.0,
                  t_shared=shared_seconds(loop, warps, profile))
    return max(0.0, float(resident) - own)


TRITON_OPTIN_SHARED = 48 * 1024  # bytes a CTA: above this Triton's launcher opts in to the largest carve-out


def l1_left(shared_bytes: int | None, ctas_per_sm: int, profile) -> int | None:
    """Bytes of L1 the shared-memory carve-out leaves an SM running ``ctas_per_sm`` CTAs of ``shared_bytes`` each;
    None where the profile has no L1 size. A Triton kernel of more than 48 KiB a CTA asks for the largest carve-out
    (its launcher sets ``CU_FUNC_CACHE_PREFER_SHARED``), leaving ``l1_bytes − smem_per_sm``; one of less asks for
    nothing, and the driver configures the smallest carve-out that holds its resident CTAs, each with the shared
    memory the system reserves a CTA (``smem_per_sm − smem_per_cta``, 1 KiB), of those the profile lists
    (``smem_carveouts``, CUDA's tuning guides), and no smaller than the profile's ``smem_carveout_min`` where
    measured (132 KiB on the H100 and H200: ``python experiments/carveouts.py``). Unknown shared memory or
    carve-outs: the largest."""
    if not profile.l1_bytes:
        return None
    carveout = profile.smem_per_sm
    if shared_bytes is not None and shared_bytes <= TRITON_OPTIN_SHARED and profile.smem_carveouts:
        need = ctas_per_sm * (shared_bytes + profile.smem_per_sm - profile.smem_per_cta)
        carveout = min((c for c in profile.smem_carveouts if c >= need), default=profile.smem_per_sm)
        carveout = min(profile.smem_per_sm, max(carveout, profile.smem_carveout_min or 0))
    return max(0, profile.l1_bytes - carveout)


def l1_shared_loads(code: KernelCode, warps: int, ctas_per_sm: int, profile) -> float:
    """Share of a loop pass's global loads that CTAs resident on one SM share through its L1: the loads that
    allocate there (:func:`iosim.costs.sass.l1_cached`: a plain ``LDG``, as a one-stage Triton loop loads its tiles),
    where the L1 the carve-out leaves (:func:`l1_left`) holds a pass of every resident CTA's loads beside their spill
    frames. Such CTAs reading one tile at once (GQA heads of one K/V head, a head's Q blocks) fetch it over the
    crossbar once an SM. 0 where the code does not say (mixes written before it was recorded), for ``LDGSTS.BYPASS``
    and TMA loads, or where the profile has no L1 size."""
    loop = code.loop
    if not loop.l1_loads or not loop.global_loads:
        return 0.0
    footprint, free = _spill_space(code, warps, ctas_per_sm, profile)
    if free is None or footprint + loop.global_loads * WARP * warps * ctas_per_sm > free:
        return 0.0
    return min(1.0, loop.l1_loads / loop.global_loads)


def _spill_space(code: KernelCode, warps: int, ctas_per_sm: int, profile) -> tuple[int, int | None]:
    """(bytes of local memory the SM's resident threads spill to, bytes of L1 the shared-memory carve-out leaves
    (:func:`l1_left`); None where the profile has no L1 size)."""
    footprint = code.local_bytes * WARP * warps * ctas_per_sm
    return footprint, l1_left(code.shared_bytes, ctas_per_sm, profile)


def reload_miss(code: KernelCode, warps: int, ctas_per_sm: int, profile) -> float:
    """Share of spill reloads that miss L1: the spill space of the SM's resident threads against the
    L1 that shared memory leaves (:func:`_spill_space`); 1 where the profile has no L1 size."""
    footprint, free = _spill_space(code, warps, ctas_per_sm, profile)
    if not footprint:
        return 0.0
    if free is None:
        return 1.0
    return min(1.0, max(0.0, 1.0 - free / footprint))


def spill_traffic(loop: LoopCode, warps: int, miss: float = 1.0, rewritten: float | None = None) -> tuple[float, float]:
    """Bytes one CTA's pass through ``loop`` moves between the SM and the L2 for spilled registers:
    (reloads, spills), from the 4-byte words each thread loads and stores a pass; a spill store always crosses
    to the L2 (measured on the H200: local stores ≈ crossbar writes), a reload only when it misses L1
    (the share ``miss``, :func:`reload_miss`). Reloads of words the pass stores again (as many as it stores)
    are reused only after the whole spill space has cycled through L1, so they miss as ``rewritten`` says
    (:func:`rewritten_miss`; ``miss`` where not given); the rest reload values spilled once."""
    per = WARP * LOCAL_WORD * warps
    paired = min(loop.local_loads, loop.local_stores)
    cycled = miss if rewritten is None else rewritten
    return (paired * cycled + (loop.local_loads - paired) * miss) * per, loop.local_stores * per


def rewritten_miss(code: KernelCode, warps: int, ctas_per_sm: int, profile) -> float:
    """Share of reloads of spill slots rewritten every pass that miss L1: the slots cycle, each reused only after
    the SM's whole spill space went through, so they miss as the L1 the shared-memory carve-out leaves keeps a set read
    again and again (:func:`cycle_hits`, measured); where not measured at that L1 size, as LRU would (all miss where
    that space exceeds the L1, none where it fits); 1 where the profile has no L1 size."""
    footprint, free = _spill_space(code, warps, ctas_per_sm, profile)
    if not footprint:
        return 0.0
    if not free:
        return 1.0
    hit = cycle_hits(profile, footprint, free)
    if hit is None:
        return 1.0 if footprint > free else 0.0
    return 1.0 - hit


CYCLE_SIZE_TOLERANCE = 0.1  # how far an L1's size may be from the one a cycle curve was measured at, relatively


def cycle_hits(profile, cycled: float, l1: int) -> float | None:
    """Share of the reloads of ``cycled`` bytes an SM reads again and again, in order, that hit ``l1`` bytes of L1:
    the profile's measured curve (``l1_cycle_hits``, :mod:`iosim.kernels.l1_probe`: by cycle / L1 size, interpolated,
    flat beyond its ends) at the L1 size it was measured at nearest ``l1``; None where none was measured within
    :data:`CYCLE_SIZE_TOLERANCE` of it (the hits fall with the ratio differently at another size: the L1's ways)."""
    rows = profile.l1_cycle_hits
    if not rows or l1 <= 0:
        return None
    size = min({row[0] for row in rows}, key=lambda c: (abs(c - l1), c))
    if abs(size - l1) > CYCLE_SIZE_TOLERANCE * l1:
        return None
    return _interpolate(sorted((r, h) for c, r, h in rows if c == size), cycled / l1)


def estimated_code(iter_flops, end_flops, warps: int) -> KernelCode:
    """A kernel's code from its FLOPs where no compiled code is known: one FP32 instruction per SIMT
    operation and one MUFU per special function, spread over the CTA's threads."""
    threads = WARP * warps

    def code(f):
        fma, xu = f.simt / threads, f.sfu / threads
        return LoopCode(fma + xu, MappingProxyType({"fma": fma, "xu": xu}))

    return KernelCode(loop=code(iter_flops), outside=code(end_flops))


CONVOY_SERIES = re.compile(r"convoy_miss_softmax_(\d+)x(\d+)x(\d+)w(\d+)_c(\d+)_g(\d+)_s")


def convoy_series(profile, head_dim: int, per_sm: int) -> tuple | None:
    """``((group, seconds), ...)``: what each CTA of a convoy of ``group`` CTAs started together waits a pass whose
    shared tiles missed the L2, from the calibrated convoy series (``convoy_miss_softmax_*``,
    :func:`iosim.kernels.microbench.convoy_costs`) of the loop nearest ``head_dim`` (by ratio) and, of it, the
    occupancy nearest ``per_sm`` CTAs an SM; None where the profile has no such series."""
    loops: dict = {}
    for key, value in _raw(profile).items():
        m = CONVOY_SERIES.fullmatch(key)
        if m and isinstance(value, (int, float)):
            loops.setdefault((int(m[3]), int(m[5])), []).append((int(m[6]), float(value)))
    if not loops:
        return None
    d = min({d for d, _ in loops}, key=lambda x: (abs(math.log2(x / max(1, head_dim or x))), x))
    c = min({c for dd, c in loops if dd == d}, key=lambda x: (abs(x - per_sm), x))
    return tuple(sorted(loops[(d, c)]))


def convoy_wait(series: tuple, group: int) -> float:
    """Seconds each CTA of a convoy of ``group`` waits a missed pass: the series (:func:`convoy_series`)
    interpolated in log2 of the group, held at its ends."""
    if group <= series[0][0]:
        return series[0][1]
    for (g0, w0), (g1, w1) in zip(series, series[1:]):
        if group <= g1:
            t = math.log2(group / g0) / math.log2(g1 / g0)
            return w0 + t * (w1 - w0)
    return series[-1][1]


def _raw(profile) -> Mapping:
    return (profile.calibration or {}).get("raw") or {}


@functools.lru_cache(maxsize=8)
def _calibration_loops(arch: str, triton_version: str | None) -> dict:
    """(block_m, block_n, head_dim, warps, stages, softmax, dtype) -> the loop body of that tile loop as
    ``iosim calibrate`` ran it (the committed calibration mixes of the Triton it ran under); the backward's
    loop under ("bwd", block_m, block_n, head_dim, warps, stages)."""
    try:
        found = load_mixes(arch, triton_version, calibration=True)
    except FileNotFoundError:
        return {}
    out = {}
    for mix in found.mixes:
        c = mix.meta.get("constexprs", {})
        loops = mix.loop_bodies()
        if loops and mix.kernel == "tile_mma_bwd":  # the backward's five-matmul loop, keyed apart
            out[("bwd", c["BM"], c["BN"], c["D"], mix.num_warps, mix.meta["num_stages"])] = loop_code(loops[0])
        elif loops:
            dtype = "fp8" if mix.key.split("|")[1].startswith("fp8") else "fp16"  # its operands (fp8e4nv: e4m3)
            out[(c["BM"], c["BN"], c["D"], mix.num_warps, mix.meta["num_stages"], bool(c.get("SOFTMAX")), dtype)] = \
                loop_code(loops[0])
    return out


def calibration_loop(profile, bm: int, bn: int, d: int, warps: int, stages: int, softmax: bool = False,
                     dtype: str = "fp16"):
    """The compiled loop body of the calibration's tile loop of that shape (and operand type), or None."""
    version = (profile.calibration or {}).get("triton")
    return _calibration_loops(str(profile.arch).removeprefix("sm_"), version).get(
        (bm, bn, d, warps, stages, softmax, dtype))


_SOFTMAX = re.compile(r"^tile_softmax_fp16_(\d+)x(\d+)x(\d+)w(\d+)(?:s(\d+))?_c(\d+)$")


def _simt_round(profile, loop, warps: int, ctas: int) -> float:
    """SM seconds :func:`sm_time` gives one pass of ``ctas`` resident CTAs' own instructions."""
    return max(ctas * simt_seconds(loop, warps, profile), chain_seconds(loop, profile, latencies(profile, 0.0)))


@functools.lru_cache(maxsize=16)
def own_simt_share(profile) -> float:
    """Share of the calibrated tile loop's own SIMT time (as :func:`sm_time` prices it) that its measured
    rate contains: the rest its asynchronous products hid. The one number that makes the model reproduce
    the calibration's loop with FlashAttention-2's softmax from the loop without, added instructions
    priced alike (least squares over the measured softmax series, relative errors); 0 where the series
    or the loops' compiled code is missing (the measured rate then stands for the products alone)."""
    raw = _raw(profile)
    num = den = 0.0
    for key, value in raw.items():
        m = _SOFTMAX.match(key)
        if not (m and value):
            continue
        bm, bn, d, w, st, c = (int(g) if g else CALIBRATION_STAGES for g in m.groups())
        if st != CALIBRATION_STAGES:  # the deeper loops check the model (tests/test_code_effects.py), not fit it
            continue
        plain = raw.get(f"tile_occ_fp16_{bm}x{bn}x{d}w{w}_c{c}")
        with_sm, without = (calibration_loop(profile, bm, bn, d, w, st, sm) for sm in (True, False))
        ok = raw.get(f"{key}_ok_sms")
        if not (plain and with_sm and without) or (ok is not None and ok < profile.sm_count):
            continue
        flops = 4.0 * bm * bn * d * c * profile.sm_count
        measured = flops / float(value)
        # predicted(share) = flops/plain − share·own + with_sm's; a = its error at share 0, b = d error / d share
        a = (flops / float(plain) + _simt_round(profile, with_sm, w, c) - measured) / measured
        b = _simt_round(profile, without, w, c) / measured
        num, den = num + a * b, den + b * b
    return min(1.0, max(0.0, num / den)) if den else 0.0


def bwd_products_rate(profile, head_dim: int, rate: float) -> float:
    """The backward's calibrated five-matmul rate (``tile_bwd_fp16_d<d>``, one CTA an SM at flash2's backward
    tiling) freed of its loop's own SIMT code as the forward's rates are (:func:`tensor_rates`): what is left
    is the tensor-core time a kernel's own instructions are added to. The measured rate where the loop's
    compiled code is missing."""
    from iosim.schedule.tiling import BWD, default_tiling

    t = default_tiling("flash2", BWD, head_dim)
    version = (profile.calibration or {}).get("triton")
    loop = _calibration_loops(str(profile.arch).removeprefix("sm_"), version).get(
        ("bwd", t.block_m, t.block_n, head_dim, t.warps, t.stages))
    if loop is None:
        return rate
    flops = 10.0 * t.block_m * t.block_n * head_dim * profile.sm_count  # one pass of one CTA on every SM
    products = flops / rate - own_simt_share(profile) * _simt_round(profile, loop, t.warps, 1)
    return flops / products if products > 0 else rate


@functools.lru_cache(maxsize=16)
def tensor_rates(profile) -> Mapping:
    """The calibration's raw numbers with each occupancy point's rate freed of its own loop's SIMT code:
    a pass of the tile loop is its products and its own instructions, which :func:`sm_time` prices as
    it prices a kernel's (``c`` passes take ``c·t + max(c·issue, chain)``); what is left for ``t`` is
    the tensor-core time a kernel's own instructions are then added to. Points whose loop was not
    compiled keep their measured rate."""
    raw = _raw(profile)
    share = own_simt_share(profile)
    out = dict(raw)
    for key, value in raw.items():
        m = _OCC.match(key)
        if not (m and value):
            continue
        dtype = m.group(1)
        bm, bn, d, w, st, c = (int(g) if g else CALIBRATION_STAGES for g in m.groups()[1:])
        loop = calibration_loop(profile, bm, bn, d, w, st, dtype=dtype)
        if loop is None:
            continue
        flops = 4.0 * bm * bn * d * c * profile.sm_count  # one pass of each of the c CTAs on every SM
        products = flops / float(value) - share * _simt_round(profile, loop, w, c)
        if products > 0:
            out[key] = flops / products
    return MappingProxyType(out)


def tensor_rate(profile, dtype: str, mma: str = "fwd", head_dim: int | None = None, warps: int | None = None,
                ctas_per_sm: int | None = None, tile: tuple[int, int] | None = None, stages: int | None = None) -> float:
    """Tensor-core FLOP/s the whole GPU sustains on a kernel's tiles: for a forward kernel of ``warps``
    warps with ``ctas_per_sm`` resident, the calibrated tile loop nearest its ``tile`` (block_m,
    block_n) at that occupancy; else the calibrated tile loop of the same head dimension; else the
    profile's (forward or backward) efficiency. A head dim no loop was calibrated at takes the nearest
    calibrated one's loops (:func:`calibrated_head_dim`): a product's rate per FLOP, not its width."""
    raw = _raw(profile)
    head_dim = calibrated_head_dim(raw, head_dim)
    if mma != "bwd" and warps and ctas_per_sm and head_dim is not None:
        rate = occupancy_rate(tensor_rates(profile), dtype, head_dim, tile, warps, ctas_per_sm * warps / WARPGROUP, profile.sm_count,
                              stages, profile)
        if rate:
            return rate
    key = f"tile_{'bwd_' if mma == 'bwd' else ''}{dtype}_d{head_dim}"
    if head_dim is not None and raw.get(key):
        return bwd_products_rate(profile, head_dim, float(raw[key])) if mma == "bwd" else float(raw[key])
    bwd16, fwd, fwd16 = (raw.get(f"tile_bwd_fp16_d{head_dim}"), raw.get(f"tile_{dtype}_d{head_dim}"),
                         raw.get(f"beside_{dtype}_tile_fp16_d{head_dim}") or raw.get(f"tile_fp16_d{head_dim}"))
    if mma == "bwd" and head_dim is not None and bwd16 and fwd and fwd16:  # as the forward's rates scale to dtype
        return bwd_products_rate(profile, head_dim, float(bwd16)) * float(fwd) / float(fwd16)
    fp16 = raw.get(key.replace(f"_{dtype}_", "_fp16_"))
    if dtype in PEAK_SCALED and head_dim is not None and fp16 and dtype in profile.tensor_flops:
        fp16 = bwd_products_rate(profile, head_dim, float(fp16)) if mma == "bwd" else float(fp16)
        return fp16 * profile.tensor_flops[dtype] / profile.tensor_flops["fp16"]
    efficiency = profile.tensor_efficiency
    if mma == "bwd" and profile.tensor_efficiency_bwd:
        efficiency = profile.tensor_efficiency_bwd
    return profile.tensor_flops[dtype] * efficiency


def calibrated_head_dim(raw: Mapping, head_dim: int | None) -> int | None:
    """``head_dim`` where the calibration ran tile loops at it, else the nearest head dim it ran them at (in ratio;
    of two as near, the larger): d = 256 takes d = 128's loops, 32 takes 64's. ``head_dim`` where none ran."""
    dims = {int(m.group(4)) for m in map(_OCC.match, raw) if m} | {
        int(k.rpartition("_d")[2]) for k in raw if re.fullmatch(r"tile_(bwd_)?[a-z0-9]+_d\d+", k)}
    if head_dim is None or not dims or head_dim in dims:
        return head_dim
    return min(dims, key=lambda d: (abs(math.log2(d / head_dim)), -d))


_OCC = re.compile(r"^tile_occ_(fp16|fp8)_(\d+)x(\d+)x(\d+)w(\d+)(?:s(\d+))?_c(\d+)$")  # fp8: its own series
_BWD_ATOMIC = re.compile(r"^tile_bwd_atomic_fp16_(\d+)x(\d+)x(\d+)w(\d+)(?:s(\d+))?_c(\d+)$")
_BWD_ATOMIC_TMA = re.compile(r"^tile_bwd_atomic_tma_fp16_(\d+)x(\d+)x(\d+)w(\d+)(?:s(\d+))?_c(\d+)$")
CALIBRATION_STAGES = 2  # pipeline stages of the tile loops whose key names none (the default tiling's)


def occupancy_curve(raw: Mapping, head_dim: int, tile: tuple[int, int] | None = None, warps: int | None = None,
                    sm_count: int | None = None, stages: int | None = None, dtype: str = "fp16") -> list[tuple[float, float]]:
    """(warpgroups per SM, FLOP/s) of the calibrated tile loop at several occupancies, at ``head_dim``
    (another head dim's loop is another loop) with ``warps`` warps per CTA (one CTA of 8 warps is not
    two of 4: its warpgroups wait for each other at every barrier); of the pipeline depths measured,
    the one nearest ``stages`` (a deeper loop issues each load a pass ahead); of the tile shapes, the
    one nearest ``tile`` (block_m, block_n): the same product size per iteration first, then the
    nearest sides, then the one measured at more occupancies. Empty where none was measured; a point
    whose CTAs did not spread as intended (``_ok_sms`` short of ``sm_count``) is left out. ``dtype``: the
    series of loops run on those operands (fp16, or fp8 where calibrated)."""
    series: dict[tuple, list] = {}
    for key, value in raw.items():
        m = _OCC.match(key)
        ok = raw.get(f"{key}_ok_sms")
        if not (m and value) or (ok is not None and ok < (sm_count or 1)) or m.group(1) != dtype:
            continue
        bm, bn, d, w, st, ctas = (int(g) if g else CALIBRATION_STAGES for g in m.groups()[1:])
        if d == head_dim and (warps is None or w == warps):
            series.setdefault((bm, bn, st), []).append((ctas * w / WARPGROUP, float(value)))
    if not series:
        return []
    want = CALIBRATION_STAGES if stages is None else stages
    depth = min({k[2] for k in series}, key=lambda x: (abs(x - want), x))
    series = {k: v for k, v in series.items() if k[2] == depth}
    bm, bn = tile or (0, 0)

    def distance(k):  # the product's size per iteration first (its instruction shapes), then its sides
        if not (bm and bn):
            return 0.0, 0.0, -len(series[k]), k
        area = abs(math.log2(k[0] * k[1] / (bm * bn)))
        return area, abs(math.log2(k[0] / bm)) + abs(math.log2(k[1] / bn)), -len(series[k]), k

    return sorted(series[min(series, key=distance)])


PEAK_SCALED = ("fp8",)  # dtypes no tile loop was calibrated in: the fp16 loop's rate times the datasheets' peak ratio


def occupancy_rate(raw: Mapping, dtype: str, head_dim: int, tile: tuple[int, int] | None, warps: int,
                   warpgroups: float, sm_count: int | None = None, stages: int | None = None,
                   profile=None) -> float | None:
    """FLOP/s of the calibrated tile loop nearest the kernel's tiles and warps at ``warpgroups`` per SM
    (interpolated, flat beyond the measured occupancies), scaled from fp16 to ``dtype`` by the plain
    tile calibration (``tile_<dtype>_d<d>`` over the fp16 loop measured beside it where there is one,
    ``beside_<dtype>_tile_fp16_d<d>``), else for a dtype in ``PEAK_SCALED`` by ``profile``'s datasheet
    peaks (fp8 wgmma does twice fp16's work per clock); an fp8 kernel takes the fp8 loops' own series
    (``tile_occ_fp8_*``) where they were measured. None where nothing was."""
    own = occupancy_curve(raw, head_dim, tile, warps, sm_count, stages, dtype) if dtype == "fp8" else []
    if own:  # fp8 loops measured at these occupancies: their own rates
        return _interpolate(own, warpgroups)
    curve = occupancy_curve(raw, head_dim, tile, warps, sm_count, stages)
    if not curve:
        return None
    rate = _interpolate(curve, warpgroups)
    base = raw.get(f"beside_{dtype}_tile_fp16_d{head_dim}") or raw.get(f"tile_fp16_d{head_dim}")  # the same run's fp16
    if dtype != "fp16" and raw.get(f"tile_{dtype}_d{head_dim}") and base:
        rate *= float(raw[f"tile_{dtype}_d{head_dim}"]) / float(base)
    elif dtype in PEAK_SCALED and profile is not None and dtype in profile.tensor_flops:
        rate *= profile.tensor_flops[dtype] / profile.tensor_flops["fp16"]
    return rate


def _interpolate(curve: list[tuple[float, float]], x: float) -> float:
    """Piecewise-linear through sorted (x, y) points, flat beyond the ends."""
    if x <= curve[0][0]:
        return curve[0][1]
    for (x0, y0), (x1, y1) in zip(curve, curve[1:]):
        if x <= x1:
            return y0 + (y1 - y0) * (x - x0) / (x1 - x0)
    return curve[-1][1]


def atomic_exposure(profile, share: int, stages: int = CALIBRATION_STAGES, tma: bool = False,
                    head_dim: int | None = None) -> float:
    """Share of a CTA's atomic-add time (its payload at the SM's share of ``l2_atomic_bandwidth``)
    that lengthens its loop, from the calibration's backward tile loop with and without the dQ
    atomics at one and at two CTAs per SM and, where measured, at several head dims and pipeline depths
    (a deeper loop hides more; at d = 128 a pass is twice as long and carries twice the payload, and the
    H100 waits for 0.67 of it where at d = 64 it waits for all): the CTAs per SM nearest ``share``, then
    the head dim nearest ``head_dim`` (the smaller on a tie; None: the smallest measured), then the depth
    nearest ``stages``; 0 where not measured (atomics then only load the L2). ``tma``: the loop loads
    its tiles by TMA, whose copies do not queue in the memory pipe behind the atomics; the same loop
    loading by TMA (``tile_bwd_*_tma_*``) where it was measured."""
    raw = _raw(profile)
    if not profile.l2_atomic_bandwidth:
        return 0.0
    pattern = _BWD_ATOMIC
    if tma and any(_BWD_ATOMIC_TMA.match(key) for key in raw):
        pattern = _BWD_ATOMIC_TMA
    found = {}
    for key, value in raw.items():
        m = pattern.match(key)
        plain = raw.get(key.replace("_atomic_", "_plain_"))
        if not (m and value and plain):
            continue
        bn, bm, d, _, depth, ctas = (int(g) if g else CALIBRATION_STAGES for g in m.groups())
        flops = 10.0 * bm * bn * d  # five matmuls per iteration
        per_sm = profile.l2_atomic_bandwidth / profile.sm_count
        # one round (every resident CTA one iteration) takes ctas·SMs·flops / rate; per CTA and
        # iteration the atomics add (round with − round without) and carry bm·d fp32
        added = ctas * profile.sm_count * flops * (1.0 / float(value) - 1.0 / float(plain))
        payload = ctas * bm * d * 4 / per_sm  # the round's atomics at the SM's share of the L2 rate
        found[ctas, d, depth] = min(1.0, max(0.0, added / payload))
    if not found:
        return 0.0
    key = min(found, key=lambda k: (abs(k[0] - share), k[0], 0 if head_dim is None else abs(k[1] - head_dim), k[1],
                                    abs(k[2] - stages), k[2]))
    return found[key]


def cta_time(t_tensor: float, t_simt: float, share: int, overlap: float, specialised: bool = False) -> float:
    """SM time per CTA for work of ``t_tensor`` + ``t_simt`` alone, with ``share`` CTAs on the SM.

    Within a CTA the two wait for each other; co-resident CTAs hide ``overlap`` of the shorter. A
    warp-specialised CTA (:attr:`KernelCode.specialised`) hides all of the shorter: its consumer
    warpgroups alternate, one's softmax under the other's products, so it takes the longer of the two.
    """
    hidden = min(t_tensor, t_simt) if specialised else overlap * min(t_tensor, t_simt) if share > 1 else 0.0
    return t_tensor + t_simt - hidden


def sm_time(t_tensor: float, t_issue: float, t_chain: float, share: int, overlap: float,
            specialised: bool = False, t_shared: float = 0.0) -> float:
    """SM time for ``share`` resident CTAs to do one step each: per CTA ``t_tensor`` of tensor-core
    work and ``t_issue`` of issue slots, and one warp's own pass ``t_chain`` (its stall counts and
    uncovered waits). The sub-partitions issue the CTAs' warps in turn, so SIMT takes the longer of
    all their issue slots and one warp's chain; tensor and SIMT time add within a CTA unless it is
    warp-specialised (see :func:`cta_time`). Nor can the step be shorter than ``share`` turns of
    ``t_shared`` on the SM's one shared-memory path (:func:`shared_seconds`), which runs beside the
    tensor cores and the other pipes: a bound, not a term."""
    simt = max(share * t_issue, t_chain)
    return max(share * cta_time(t_tensor, simt / share, share, overlap, specialised), share * t_shared)


__all__ = ["KernelCode", "LoopCode", "atomic_exposure", "calibration_loop", "chain_seconds", "convoy_series",
           "convoy_wait", "cta_load_seconds", "cta_time", "cycle_hits", "estimated_code", "lanes", "latencies",
           "lone_excess", "loop_code", "occupancy_curve",
           "occupancy_rate", "own_simt_share", "reload_miss", "rewritten_miss", "shared_cycles", "shared_seconds", "simt_seconds",
           "sm_time", "spill_traffic", "tensor_rate", "tensor_rates", "warp_cycles"]
