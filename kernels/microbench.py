"""Microbenchmarks of the GPU at hand: DRAM and L2 bandwidth, tile-loop and cuBLAS throughput, latencies, atomics, launches.

Each is timed through :mod:`iosim.kernels.timing` (``time_fn``: ``do_bench`` medians with the L2
flushed), except those timed inside the kernel (``%globaltimer`` and ``%clock64`` read through
inline PTX): the pointer chases, whose L2 pass must find its lines resident, and the SM clock; and
except the L2 write, timed by ``time_warm`` (CUDA events, no flush: its buffer must stay in the L2):

- DRAM read (a reduction over 2 GiB, ≫ the L2), write (a fill) and copy (bytes read + written), and
  reads alone as fast as a Triton stream gets them (the best of a few CTA counts and load widths);
- L2 read bandwidth: every SM re-reads an 8 MiB buffer (about ¼ of an H100's L2) with ``.cg``
  loads, which skip L1, so every byte is served by the L2;
- tensor-core throughput: cuBLAS 8192³ matmuls (fp16, bf16) and Triton loops of the tile shapes our
  flash2 kernels use by default (forward: S = Q Kᵀ, O += P V; backward: its five matmuls);
- load latency: one thread chasing a random pointer cycle, inside the L2 (after a warm-up pass
  over the whole cycle in the same launch, then timed in-kernel: no flush, no launch in the time)
  and through DRAM (the L2 flushed before the launch);
- the SM clock sustained under load: every SM runs an FMA chain, then a ``tl.dot`` loop, between two
  reads of ``%clock64`` and ``%globaltimer`` (cycles / ns);
- tensor-core throughput with ONE CTA per SM (grid = SM count, each CTA's SM read from ``%smid``):
  what a CTA alone on its SM gets of the tile loop (``tensor_efficiency_solo``);
- fp32 atomic-add bandwidth as FlashAttention-2's backward issues it, and per-CTA unpipelined loads;
- launch overhead: empty Triton kernels back to back while the GPU is kept busy, so the CPU's cost
  of launching is hidden and only the GPU's per-kernel cost remains;
- a kernel's start (:func:`cta_fixed_cost`): in-kernel ``%globaltimer`` spans of the tile loop over 1-32
  trips and 1-8 waves, the fixed part becoming ``kernel_start_overhead``;
- instruction latencies (``lat_*``, :mod:`iosim.kernels.latency_bench`).

Values in bytes/s, FLOP/s and seconds; :mod:`iosim.kernels.calibrate` turns them into profile fields.
These feed no field yet and are kept only under ``calibration.raw`` (fp16 throughout; tile shapes are
block_m × block_n × d and w<warps>, the backward's block_n K/V rows × block_m Q rows × d):

- ``tile_occ_fp16_<bm>x<bn>x<d>w<w>[s<stages>]_c<c>`` (FLOP/s, 4·bm·bn·d per iteration): the forward tile loop
  (no softmax) with exactly c CTAs resident on every SM: grid = c × SM count on an idle GPU, which
  the block scheduler spreads evenly; 128x64x64w4 and 64x64x64w4 at c = 1-4, 128x64x128w8 and 128x64x128w4 at
  c = 1, 2, 64x64x128w4 at c = 1-3 (the small tiles reach the occupancies the large ones' registers forbid);
- ``tile_softmax_fp16_<...>_c<c>`` (FLOP/s, the two matmuls only): the same loop with FlashAttention-2's
  online softmax of S (row max, exp2 of S minus it, row sum, the accumulator rescaled by
  exp2(m_old - m_new)); 128x64x64w4 and 128x64x128w4 at c = 1, 2, 128x64x128w8 at c = 1, 64x64x64w4 at
  c = 1-4 and 64x64x128w4 at c = 1-3. Against ``tile_occ``:
  how much of one CTA's softmax a co-resident CTA's matrix products hide;
- every ``..._c<c>`` key has a ``..._c<c>_ok_sms``: the SMs (by the CTAs' ``%smid``, last launch) that ran
  exactly c CTAs, the SM count when the occupancy was as intended. A c that the compiled kernel's
  registers or shared memory cannot fit on one SM (:func:`ctas_per_sm`, from ``n_regs``,
  ``metadata.shared`` and the device's limits) is skipped: no key, a line through ``progress``;
- ``tile_hmma_fp16_32x64x64w4`` (FLOP/s): the tile loop at block_m = 32, 4 CTAs per SM, where Triton's
  tl.dot compiles to mma.sync (SASS HMMA) instead of wgmma (HGMMA: only for M ≥ 64 per warpgroup);
- ``tile_bwd_plain_fp16_<bn>x<bm>x<d>w<w>_c<c>`` and ``tile_bwd_atomic_...`` (FLOP/s, the five matmuls,
  10·bm·bn·d per iteration): the backward tile loop with dQ kept in registers, and with the (bm × d) fp32
  dQ tile added every iteration by relaxed ``tl.atomic_add`` into its Q block's tile of a zeroed buffer
  (16 tiles, ≈ c·SMs/16 CTAs adding into each at once), at 128x64x64w8 c = 1 and 64x64x64w4 c = 2;
  ``<atomic key>_bytes_per_s``: its atomic payload bytes / time; ``tile_bwd_<plain|atomic>_tma_...`` the
  same with Q and dO loaded by TMA (128x64x64w8, c = 1, 2 and 3 stages);
- ``tile_bwd_softmax_<plain|atomic>_fp16_<bn>x<bm>x<d>w<w>_c<c>`` (FLOP/s, the five matmuls): the same loop with the
  backward's own SIMT work between its products (P = exp2(S·scale − LSE), dS = P ⊙ (dP − D), as kernels/flash2.py),
  at flash2's default backward tiles for d = 64 and 128, c = 1: beside the bare loop, how much of that work a
  backward CTA's products hide and how much of the atomics' time it covers;
- ``l2_write`` (bytes/s): plain stores by 16 CTAs per SM into an L2-resident 16 MiB fp32 buffer, ≈ 500
  passes per launch, timed without an L2 flush (``time_warm``);
- ``serial_<ld|rw>_<bytes>_s`` (seconds per tile, :func:`cta_store_cost`): a 4-warp CTA's unpipelined loop over
  fp32 tiles loading each (``ld``), and loading and storing each back (``rw``), as flash1 writes O_i;
- ``miss_pass_s`` (seconds, :func:`miss_cost`): what a two-stage pass of the tile loop waits when its
  loads miss the L2, against the same loop on resident tiles; ``miss_pass_<bm>x<bn>x<d>w<warps>_s``
  (:func:`miss_costs`) the same over tiles of 16-64 KiB of K and V a pass;
- ``convoy_miss_softmax_*`` (seconds, :func:`convoy_costs`): the same wait for each CTA of a group reading the
  same missing tiles together (a convoy), by group size and CTAs an SM.
"""
from __future__ import annotations

import functools
import math
import statistics
import time
from collections import Counter
from dataclasses import dataclass

from iosim.kernels.device import HarnessError, cuda_torch, one_line
from iosim.kernels.timing import time_fn, time_warm
from iosim.schedule.tiling import BWD, FWD, default_tiling

GiB = 2**30
CHASE_HOPS = 4096  # dependent loads per pointer-chase kernel
LOG2E = 1.4426950408889634  # exp(x) = exp2(x · log2 e): FlashAttention-2's softmax works in log2 units


def _ptx():
    """In-kernel readers of the SM's cycle counter, the global nanosecond timer and the SM id.

    Each takes a value ``dep`` it does not use: the read cannot issue before ``dep`` is computed,
    which orders it after the work being timed (``is_pure=False`` keeps it from being merged or moved).
    """
    import triton
    import triton.language as tl

    @triton.jit
    def clock64(dep):
        return tl.inline_asm_elementwise("mov.u64 $0, %clock64;", "=l,r", [dep.to(tl.int32, bitcast=False)],
                                         dtype=tl.int64, is_pure=False, pack=1)

    @triton.jit
    def globaltimer(dep):
        return tl.inline_asm_elementwise("mov.u64 $0, %globaltimer;", "=l,r", [dep.to(tl.int32, bitcast=False)],
                                         dtype=tl.int64, is_pure=False, pack=1)

    @triton.jit
    def smid(dep):
        return tl.inline_asm_elementwise("mov.u32 $0, %smid;", "=r,r", [dep.to(tl.int32, bitcast=False)],
                                         dtype=tl.int32, is_pure=False, pack=1)

    return clock64, globaltimer, smid


def dram_bandwidth(torch, nbytes: int = 2 * GiB) -> dict:
    """Bytes per second for a read (sum), a write (fill) and a copy (read + written) of ``nbytes``."""
    src = torch.randn(nbytes // 2, dtype=torch.float16, device="cuda")
    dst = torch.empty_like(src)
    read = time_fn(lambda: src.sum(dtype=torch.float32)).median_s
    write = time_fn(lambda: dst.fill_(1.0)).median_s
    copy = time_fn(lambda: dst.copy_(src)).median_s
    return {"dram_read": nbytes / read, "dram_write": nbytes / write, "dram_copy": 2 * nbytes / copy}


def _stream_kernel():
    import triton
    import triton.language as tl

    @triton.jit
    def dram_stream(src, out, per_cta, BLOCK: tl.constexpr, STRIDED: tl.constexpr = False):
        """Each CTA sums per_cta elements: its own contiguous share, or (STRIDED) every grid-th block."""
        pid = tl.program_id(0)
        offs = tl.arange(0, BLOCK)
        acc = tl.zeros([BLOCK], tl.float32)
        if STRIDED:
            ctas = tl.num_programs(0)
            for i in range(0, per_cta // BLOCK):
                acc += tl.load(src + (i * ctas + pid).to(tl.int64) * BLOCK + offs).to(tl.float32)
        else:
            base = src + pid.to(tl.int64) * per_cta
            for i in range(0, per_cta, BLOCK):
                acc += tl.load(base + i + offs).to(tl.float32)
        tl.store(out + pid * BLOCK + offs, acc)  # keeps the loads alive

    return dram_stream


# CTAs per SM, fp16 elements a load, warps, stages, and whether CTAs interleave their blocks (grid-stride)
STREAM_CONFIGS = tuple((c, block, warps, stages, strided) for c in (2, 4, 8) for block in (4096, 8192)
                       for warps, stages in ((4, 3), (8, 4)) for strided in (False, True))


def dram_read_stream(torch, nbytes: int = 2 * GiB) -> dict:
    """Bytes per second a Triton kernel reads from DRAM alone: each CTA sums its share of ``nbytes``
    (≫ the L2), contiguous or grid-strided, with wide loads; the best of :data:`STREAM_CONFIGS`, because a
    ceiling is what the best-fed stream reaches (``torch.sum``'s reduction, ``dram_read``, reads slower)."""
    kernel = _stream_kernel()
    src = torch.randn(nbytes // 2, dtype=torch.float16, device="cuda")
    sms = torch.cuda.get_device_properties(0).multi_processor_count
    best = 0.0
    for c, block, warps, stages, strided in STREAM_CONFIGS:
        ctas = c * sms
        per_cta = src.numel() // ctas // block * block
        out = torch.empty(ctas * block, dtype=torch.float32, device="cuda")
        fn = lambda: kernel[(ctas,)](src, out, per_cta, BLOCK=block, STRIDED=strided,  # noqa: E731
                                     num_warps=warps, num_stages=stages)
        fn()
        best = max(best, ctas * per_cta * 2 / time_fn(fn).median_s)
    return {"dram_read_stream": best}


def _l2_kernel():
    import triton
    import triton.language as tl

    @triton.jit
    def l2_read(src, out, n_blocks, ITERS: tl.constexpr, BLOCK: tl.constexpr):
        pid = tl.program_id(0)
        offs = tl.arange(0, BLOCK)
        acc = tl.zeros([BLOCK], tl.float32)
        for i in range(ITERS):
            block = (pid * 7 + i) % n_blocks
            acc += tl.load(src + block * BLOCK + offs, cache_modifier=".cg")
        tl.store(out + pid * BLOCK + offs, acc)  # keeps the loads alive

    return l2_read


def l2_bandwidth(torch, nbytes: int = 8 * 2**20, iters: int = 512, block: int = 2048) -> dict:
    """Bytes per second read from an L2-resident buffer by 16 CTAs per SM."""
    kernel = _l2_kernel()
    src = torch.randn(nbytes // 4, dtype=torch.float32, device="cuda")
    n_blocks = src.numel() // block
    programs = 16 * torch.cuda.get_device_properties(0).multi_processor_count
    out = torch.empty(programs * block, dtype=torch.float32, device="cuda")
    fn = lambda: kernel[(programs,)](src, out, n_blocks, ITERS=iters, BLOCK=block, num_warps=4)  # noqa: E731
    fn()
    seconds = time_fn(fn).median_s
    return {"l2_read": programs * iters * block * 4 / seconds}


@functools.cache
def _l2_write_kernel():
    import triton
    import triton.language as tl

    @triton.jit
    def l2_write(dst, n_blocks, ITERS: tl.constexpr, BLOCK: tl.constexpr):
        """Each CTA stores ITERS blocks of BLOCK fp32 (block (pid·7 + i) mod n_blocks): BLOCK·4 bytes per store
        sweep, full 32-byte sectors, so the L2 takes them without reading DRAM."""
        pid = tl.program_id(0)
        offs = tl.arange(0, BLOCK)
        val = offs.to(tl.float32)  # the same values whoever writes a block: a test can check the buffer
        for i in range(ITERS):
            block = (pid * 7 + i) % n_blocks
            tl.store(dst + block * BLOCK + offs, val)

    return l2_write


def l2_write_loop(dst, ctas: int, iters: int, block: int, warps: int = 4):
    """Launch ``l2_write`` on ``ctas`` CTAs over ``dst`` (fp32, a whole number of ``block`` s)."""
    return _l2_write_kernel()[(ctas,)](dst, dst.numel() // block, ITERS=iters, BLOCK=block, num_warps=warps)


def l2_write_bandwidth(torch, nbytes: int = 16 * 2**20, iters: int = 512, block: int = 2048) -> dict:
    """Bytes per second stored into an L2-resident buffer by 16 CTAs per SM, ``iters`` blocks each (≈ 500
    passes over the buffer per launch on an H100). Timed by :func:`time_warm`, NOT ``do_bench``: its L2
    flush before every run would leave the L2 full of the flush buffer's dirty lines, whose write-back to
    DRAM would share the time; without it the buffer stays resident from the warm-up runs on."""
    props = torch.cuda.get_device_properties(0)
    if 2 * nbytes > props.L2_cache_size:
        raise ValueError(f"nbytes(={nbytes}) must be at most half the L2 ({props.L2_cache_size} B) to stay resident")
    dst = torch.zeros(nbytes // 4, dtype=torch.float32, device="cuda")
    ctas = 16 * props.multi_processor_count
    seconds = time_warm(lambda: l2_write_loop(dst, ctas, iters, block))  # the first warm-up run compiles
    return {"l2_write": ctas * iters * block * 4 / seconds}


# ---------------------------------------------------------------------------------------------
# How many CTAs fit on one SM
# ---------------------------------------------------------------------------------------------
# The CUDA occupancy calculator's allocation rules (cuda_occupancy.h, CUDA 12-13): registers are given
# to a warp in units of 256 (cudaOccRegAllocationGranularity, cc 3-12) from one of the SM's 4
# sub-partitions, each holding a quarter of the register file (cudaOccSubPartitionsPerMultiprocessor,
# cc 7-12); shared memory is given to a CTA in units of 128 bytes (cudaOccSMemAllocationGranularity, cc 8-12).
REG_UNIT = 256
REG_PARTITIONS = 4
SMEM_UNIT = 128


@dataclass(frozen=True)
class SmLimits:
    """What one SM holds, as the device reports it (``torch.cuda.get_device_properties``)."""

    regs: int  # 32-bit registers per SM
    shared: int  # shared memory per SM at the largest carve-out, bytes
    reserved_shared: int  # bytes the driver adds to every CTA's shared memory (cudaDevAttrReservedSharedMemoryPerBlock)
    threads: int  # resident threads per SM
    warp_size: int = 32

    @classmethod
    def of(cls, props) -> SmLimits:
        # torch does not report the per-CTA reservation; it is what separates the SM's shared memory from
        # the most one CTA may opt in to (228 - 227 KiB on sm_90, 164 - 163 KiB on sm_80).
        return cls(regs=props.regs_per_multiprocessor, shared=props.shared_memory_per_multiprocessor,
                   reserved_shared=props.shared_memory_per_multiprocessor - props.shared_memory_per_block_optin,
                   threads=props.max_threads_per_multi_processor, warp_size=props.warp_size)


def ctas_per_sm(n_regs: int, shared_bytes: int, warps: int, sm: SmLimits) -> dict[str, int]:
    """CTAs of a compiled kernel (``n_regs`` registers per thread, ``shared_bytes`` of shared memory per CTA,
    ``warps`` warps) that one SM's registers, shared memory and threads each allow; it holds the least.

    Registers: a warp takes ⌈n_regs·32 / 256⌉·256 of them from one sub-partition, so an SM holds
    4·⌊(regs / 4) / that⌋ warps, ⌊that / warps⌋ CTAs. Shared memory: a CTA takes
    ⌈(shared_bytes + reserved) / 128⌉·128 bytes of the largest carve-out (the driver picks it when the
    kernel needs it). Threads: ⌊threads / (32·warps)⌋. The SM's cap on CTAs (16-32 on every GPU since
    Kepler) is not reported by torch; the microbenchmarks ask for at most 4.
    """
    regs_per_warp = -(-n_regs * sm.warp_size // REG_UNIT) * REG_UNIT
    smem_per_cta = -(-(shared_bytes + sm.reserved_shared) // SMEM_UNIT) * SMEM_UNIT
    return {"registers": (sm.regs // REG_PARTITIONS // max(regs_per_warp, 1)) * REG_PARTITIONS // warps,
            "shared memory": sm.shared // max(smem_per_cta, 1),
            "threads": sm.threads // (sm.warp_size * warps)}


def sms_running(sm_ids, ctas: int) -> int:
    """SMs that ran exactly ``ctas`` of the CTAs whose ``%smid`` values are listed."""
    return sum(n == ctas for n in Counter(sm_ids).values())


def _fitting(torch, compiled, warps: int, counts, key, progress) -> list[int]:
    """The CTA counts per SM in ``counts`` that the compiled kernel's resources allow (:func:`ctas_per_sm`);
    the others are reported through ``progress`` and not measured."""
    regs, shared = compiled.n_regs, compiled.metadata.shared
    allow = ctas_per_sm(regs, shared, warps, SmLimits.of(torch.cuda.get_device_properties(0)))
    for c in counts:
        if c > min(allow.values()):
            progress(f"  {key(c)}: skipped, {regs} registers/thread, {shared} B shared, {warps} warps: "
                     + ", ".join(f"{what} allow {n} CTA(s) per SM" for what, n in allow.items()))
    return [c for c in counts if c <= min(allow.values())]


# ---------------------------------------------------------------------------------------------
# Forward tile loop: S = Q Kᵀ, O += P V
# ---------------------------------------------------------------------------------------------
@functools.cache
def _tile_kernel():
    import triton
    import triton.language as tl

    _, globaltimer, smid = _ptx()

    @triton.jit
    def tile_mma(Q, K, V, O, SMS, N_KV, qk_scale, ITERS: tl.constexpr, BM: tl.constexpr, BN: tl.constexpr,
                 D: tl.constexpr, RECORD_SM: tl.constexpr = False, SOFTMAX: tl.constexpr = False,
                 RECORD_TIME: tl.constexpr = False, STREAM: tl.constexpr = False, V_T: tl.constexpr = False,
                 GROUP: tl.constexpr = 1):
        """ITERS times: read BN·d of K and of V (tile (pid + i) mod N_KV, L1/L2-resident), S = Q Kᵀ and
        O += P V with P = S (no softmax) or, with SOFTMAX, FlashAttention-2's online softmax of S·qk_scale
        (log2 units), line for line as kernels/flash2.py's _fwd_blocks computes it; O is then normalised.
        RECORD_TIME: each CTA writes %globaltimer at its start and after its last product to SMS[2·pid]
        and SMS[2·pid + 1] (int64). STREAM: CTA pid reads tiles pid·ITERS + i instead, each once (from
        DRAM when the L2 was flushed); with GROUP > 1, each run of GROUP consecutive CTAs reads the tiles
        (pid // GROUP)·ITERS + i together (a convoy on each missing line). V_T: V is stored transposed,
        (d × N_KV·BN), and P V multiplies by the transpose of its (d × BN) tile: both operands K-major, as fp8
        wgmma takes them (the fp8 loop)."""
        pid = tl.program_id(0)
        if RECORD_SM:  # which SM this CTA ran on: checks how many CTAs each SM held
            one = tl.arange(0, 1)
            tl.store(SMS + pid + one, smid(one))
        if RECORD_TIME:
            one = tl.arange(0, 1)
            t_start = globaltimer(one)
        rm, rn, rd = tl.arange(0, BM), tl.arange(0, BN), tl.arange(0, D)
        q = tl.load(Q + rm[:, None] * D + rd[None, :])
        acc = tl.zeros([BM, D], tl.float32)
        m_i = tl.full([BM], float("-inf"), tl.float32)  # unused (and removed) without SOFTMAX
        l_i = tl.zeros([BM], tl.float32)
        for i in range(ITERS):
            if STREAM:
                j = (pid // GROUP) * ITERS + i  # every tile read once (by its group): its loads miss the (flushed) L2
            else:
                j = (pid + i) % N_KV  # K/V tiles vary, so nothing is hoisted; all stay in L1/L2
            k = tl.load(K + j * BN * D + rn[:, None] * D + rd[None, :])
            if V_T:
                v = tl.trans(tl.load(V + rd[:, None] * (N_KV * BN) + j * BN + rn[None, :]))
            else:
                v = tl.load(V + j * BN * D + rn[:, None] * D + rd[None, :])
            s = tl.dot(q, tl.trans(k))
            if SOFTMAX:
                s = s * qk_scale
                m_new = tl.maximum(m_i, tl.max(s, axis=1))
                p = tl.exp2(s - m_new[:, None])
                alpha = tl.exp2(m_i - m_new)
                l_i = l_i * alpha + tl.sum(p, axis=1)
                acc = tl.dot(p.to(v.dtype), v, acc * alpha[:, None])
                m_i = m_new
            else:
                acc = tl.dot(s.to(v.dtype), v, acc)
        if SOFTMAX:
            acc = acc / l_i[:, None]
        tl.store(O + pid * BM * D + rm[:, None] * D + rd[None, :], acc)
        if RECORD_TIME:
            t_end = globaltimer(tl.sum(tl.sum(acc, 1), 0).to(tl.int32) + tl.zeros([1], tl.int32))
            tl.store(SMS + 2 * pid + one, t_start)
            tl.store(SMS + 2 * pid + 1 + one, t_end)

    return tile_mma


def tile_loop(q, k, v, o, sm_ids, *, bn: int, ctas: int, iters: int, warps: int, stages: int,
              softmax: bool = False, qk_scale: float = 1.0, record_sm: bool = False):
    """Launch ``tile_mma`` on ``ctas`` CTAs (0: compile and load only) and return the compiled kernel.

    q is (block_m × d), k and v (N_KV·bn × d); every CTA writes its (block_m × d) fp32 O at row
    pid·block_m of ``o`` and, with ``record_sm``, its ``%smid`` at ``sm_ids[pid]``.
    """
    bm, d = q.shape
    v_t = v.element_size() == 1  # fp8: V stored transposed, (d × N_KV·bn) (_tile_inputs)
    return _tile_kernel()[(ctas,)](q, k, v, o, sm_ids, k.shape[0] // bn, qk_scale, ITERS=iters, BM=bm, BN=bn, D=d,
                                   RECORD_SM=record_sm, SOFTMAX=softmax, V_T=v_t, num_warps=warps, num_stages=stages)


CTA_SPAN_ITERS = (1, 2, 4, 8, 16, 32)  # loop trips of the one-wave spans cta_fixed_cost fits
CTA_SPAN_WAVES = (1, 2, 4, 8)  # waves (of 2 CTAs per SM) at CTA_WAVE_ITERS trips, to part per-CTA from per-kernel cost
CTA_WAVE_ITERS = 4


def cta_fixed_cost(torch, bm: int = 128, bn: int = 64, d: int = 64, warps: int = 4, reps: int = 9) -> dict:
    """What CTAs cost beyond their loop trips: the tile loop at two CTAs per SM, the L2 flushed before
    every launch (as Nsight Compute does), each CTA stamping ``%globaltimer`` at its start and after its
    last product; a launch's span is its last end − first start (launch overhead excluded), the median
    over ``reps`` launches. One wave (grid = 2 × SM count) at ``CTA_SPAN_ITERS`` trips: a least-squares
    line gives the fixed part (``cta_span_fixed_s``) and the part per trip (``cta_span_iter_s``).
    ``CTA_SPAN_WAVES`` waves at ``CTA_WAVE_ITERS`` trips: the slope per wave (``cta_wave_s``) less its
    trips is what each further CTA costs (``cta_each_s``: prologue, pipeline fill, epilogue); the rest
    of the fixed part happens once per kernel (``cta_kernel_s``: the first wave's dispatch, cold
    instruction caches). Also returns every span (``cta_span_<trips>_s``, ``cta_waves_<waves>_s``)."""
    import numpy as np

    sms = torch.cuda.get_device_properties(0).multi_processor_count
    q, k, v = _tile_inputs(torch, torch.float16, bm, bn, d)
    stages = default_tiling("flash2", FWD, d).stages
    flush = torch.empty(256 * 2**20, dtype=torch.int8, device="cuda")

    def span(ctas: int, iters: int) -> float:
        return statistics.median(s for s, _ in wave_stamps(torch, q, k, v, flush, ctas=ctas, iters=iters, bn=bn,
                                                            warps=warps, stages=stages, reps=reps))

    out = {f"cta_span_{i}_s": span(2 * sms, i) for i in CTA_SPAN_ITERS}
    per_trip, fixed = np.polyfit(CTA_SPAN_ITERS, [out[f"cta_span_{i}_s"] for i in CTA_SPAN_ITERS], 1)
    waves = {w: span(2 * sms * w, CTA_WAVE_ITERS) for w in CTA_SPAN_WAVES}
    out.update({f"cta_waves_{w}_s": t for w, t in waves.items()})
    per_wave, _ = np.polyfit(list(waves), list(waves.values()), 1)
    each = float(per_wave - CTA_WAVE_ITERS * per_trip)
    return {**out, "cta_span_fixed_s": float(fixed), "cta_span_iter_s": float(per_trip), "cta_wave_s": float(per_wave),
            "cta_each_s": each, "cta_kernel_s": float(fixed) - each}


def wave_stamps(torch, q, k, v, flush, *, ctas: int, iters: int, bn: int, warps: int, stages: int,
                reps: int) -> list:
    """``(span, spread)`` of ``reps`` launches of the tile loop on ``ctas`` CTAs at ``iters`` trips, the L2
    flushed (``flush`` zeroed) before each, every CTA stamping ``%globaltimer`` at its start and after its last
    product: last end − first start, and last start − first start, in seconds (a launch before them compiles
    and loads the kernel)."""
    bm, d = q.shape
    o = torch.empty(ctas * bm, d, dtype=torch.float32, device="cuda")
    stamps = torch.zeros(2 * ctas, dtype=torch.int64, device="cuda")
    out = []
    for _ in range(reps + 1):
        flush.zero_()
        _tile_kernel()[(ctas,)](q, k, v, o, stamps, k.shape[0] // bn, 1.0, ITERS=iters, BM=bm, BN=bn, D=d,
                                RECORD_TIME=True, num_warps=warps, num_stages=stages)
        t = stamps.view(ctas, 2).cpu()
        out.append((float(t[:, 1].max() - t[:, 0].min()) * 1e-9, float(t[:, 0].max() - t[:, 0].min()) * 1e-9))
    return out[1:]


def miss_cost(torch, bm: int = 128, bn: int = 64, d: int = 64, warps: int = 4, iters: int = 256,
              softmax: bool = False, ctas: int | None = None, stages: int | None = None, group: int = 1) -> dict:
    """What a pipelined pass waits when its loads miss the L2: the tile loop (two stages, one CTA on
    every other SM, so DRAM bandwidth never binds) reading each K/V tile once from DRAM (``STREAM``,
    the L2 flushed before each launch) against the same loop on L2-resident tiles. Returns seconds
    per pass: ``miss_pass_resident_s``, ``miss_pass_stream_s`` and their difference ``miss_pass_s``.
    ``ctas`` and ``stages`` (the stream probe's): other counts of CTAs and pipeline depths than calibrate's;
    ``group`` (the convoy probe's): that many consecutive CTAs read the same tiles together."""
    if ctas is None:
        ctas = torch.cuda.get_device_properties(0).multi_processor_count // 2
    q = torch.randn(bm, d, dtype=torch.float16, device="cuda")
    streams = -(-ctas // group)  # distinct streams of tiles: one a group
    k = torch.randn(streams * iters * bn, d, dtype=torch.float16, device="cuda") * 0.05
    v = torch.randn(streams * iters * bn, d, dtype=torch.float16, device="cuda")
    o = torch.empty(ctas * bm, d, dtype=torch.float32, device="cuda")
    stages = default_tiling("flash2", FWD, d).stages if stages is None else stages
    out = {}
    for label, stream in (("resident", False), ("stream", True)):
        n_kv = k.shape[0] // bn if stream else 16
        fn = lambda: _tile_kernel()[(ctas,)](q, k, v, o, o, n_kv, 1.0, ITERS=iters, BM=bm, BN=bn, D=d,  # noqa: E731
                                             STREAM=stream, SOFTMAX=softmax, GROUP=group, num_warps=warps,
                                             num_stages=stages)
        fn()
        out[f"miss_pass_{label}_s"] = time_fn(fn).median_s / iters
    out["miss_pass_s"] = out["miss_pass_stream_s"] - out["miss_pass_resident_s"]
    return out


# tiles (bm, bn, d, warps) of the miss-cost series: 16, 32 and 64 KiB of K and V a pass, at FlashAttention-2's
# forward tiles (128 query rows) and at flash-decoding's (16 rows; 32 for multi-query: 32 query heads a KV head)
MISS_TILES = ((128, 64, 64, 4), (128, 64, 128, 8), (64, 64, 64, 4), (16, 64, 128, 4), (16, 128, 128, 4),
              (32, 64, 128, 4), (32, 128, 128, 4))


def miss_costs(torch, softmax: bool = False) -> dict:
    """:func:`miss_cost` over :data:`MISS_TILES`: ``miss_pass_<bm>x<bn>x<d>w<warps>_s`` (and its ``_stream_s``,
    ``_resident_s``), what a missed pass waits as its K/V bytes grow; with ``softmax`` the loop runs
    FlashAttention-2's online softmax (keys ``miss_pass_softmax_*``)."""
    out = {}
    for bm, bn, d, warps in MISS_TILES:
        tag = f"miss_pass_{'softmax_' if softmax else ''}{bm}x{bn}x{d}w{warps}"
        for key, value in miss_cost(torch, bm, bn, d, warps, softmax=softmax).items():
            out[key.replace("miss_pass", tag)] = value
    return out


# the convoy series (kernels/convoy_probe.py's softmax loops): the forward loops at d = 64 and 128, one and two
# CTAs an SM, groups of 2-64 consecutive CTAs reading the same tiles
CONVOY_LOOPS = ((128, 64, 64, 4), (128, 64, 128, 8))
CONVOY_PER_SM = (1, 2)
CONVOY_GROUPS = (2, 4, 8, 16, 32, 64)
CONVOY_ITERS = 128


def convoy_costs(torch) -> dict:
    """What each CTA of a convoy waits a pass when the tiles it shares with the others miss the L2:
    :func:`miss_cost` with the online softmax, ``group`` consecutive CTAs reading the same tiles, at one and two
    CTAs an SM (``convoy_miss_softmax_<bm>x<bn>x<d>w<warps>_c<per SM>_g<group>_s``). The engine charges a convoy
    of CTAs started together this much a missed pass (:func:`iosim.costs.issue.convoy_series`)."""
    sms = torch.cuda.get_device_properties(0).multi_processor_count
    out = {}
    for bm, bn, d, warps in CONVOY_LOOPS:
        for per_sm in CONVOY_PER_SM:
            for group in CONVOY_GROUPS:
                got = miss_cost(torch, bm, bn, d, warps, CONVOY_ITERS, softmax=True, ctas=per_sm * sms, stages=2,
                                group=group)
                out[f"convoy_miss_softmax_{bm}x{bn}x{d}w{warps}_c{per_sm}_g{group}_s"] = got["miss_pass_s"]
    return out


def _tile_inputs(torch, dtype, bm: int, bn: int, d: int, n_kv: int = 16):
    """q (bm × d), k and v (n_kv·bn × d) random; fp8 (e4m3): cast from fp16, V stored transposed (d × n_kv·bn)."""
    fp8 = dtype == torch.float8_e4m3fn
    make = torch.float16 if fp8 else dtype
    q = torch.randn(bm, d, dtype=make, device="cuda")
    k = torch.randn(n_kv * bn, d, dtype=make, device="cuda") * 0.05
    v = torch.randn(n_kv * bn, d, dtype=make, device="cuda")
    if fp8:
        return q.to(dtype), k.to(dtype), v.t().contiguous().to(dtype)
    return q, k, v


def _tile_rate(torch, bm, bn, d, warps, ctas, *, iters, dtype=None, stages=None, softmax=False, record_sm=False):
    """FLOP/s (two matmuls, 4·bm·bn·d per iteration) of the tile loop on ``ctas`` CTAs, and the CTAs' SMs."""
    q, k, v = _tile_inputs(torch, dtype or torch.float16, bm, bn, d)
    o = torch.empty(ctas * bm, d, dtype=torch.float32, device="cuda")
    sm_ids = torch.full((ctas,), -1, dtype=torch.int32, device="cuda")
    stages = default_tiling("flash2", FWD, d).stages if stages is None else stages
    fn = lambda: tile_loop(q, k, v, o, sm_ids, bn=bn, ctas=ctas, iters=iters, warps=warps, stages=stages,  # noqa: E731
                           softmax=softmax, qk_scale=LOG2E / math.sqrt(d), record_sm=record_sm)
    fn()
    seconds = time_fn(fn).median_s
    return ctas * iters * 4.0 * bm * bn * d / seconds, sm_ids.tolist()


def tile_flops(torch, dtype, head_dim: int, iters: int = 256) -> float:
    """FLOP/s of the attention inner loop's two matmuls on (block_m × d) · (block_n × d)ᵀ tiles, no softmax,
    with flash2's default forward tiling (tiles, warps, stages) at this head dim, 2 CTAs per SM."""
    t = default_tiling("flash2", FWD, head_dim)
    sms = torch.cuda.get_device_properties(0).multi_processor_count
    return _tile_rate(torch, t.block_m, t.block_n, head_dim, t.warps, 2 * sms, iters=iters, dtype=dtype,
                      stages=t.stages)[0]


def fp8_tile_flops(torch) -> dict:
    """The tile loop's two matmuls in fp8 (e4m3, V transposed: both operands K-major, as fp8 wgmma takes
    them) and in fp16 back to back, at each head dim: ``tile_fp8_d<d>`` and ``beside_fp8_tile_fp16_d<d>``
    (the same run's fp16, against which the fp8 rate is read: :func:`iosim.costs.issue.occupancy_rate`)."""
    out = {}
    for d in (64, 128):
        out[f"tile_fp8_d{d}"] = tile_flops(torch, torch.float8_e4m3fn, d)
        out[f"beside_fp8_tile_fp16_d{d}"] = tile_flops(torch, torch.float16, d)
    return out


SOLO_TILES = ((128, 64, 64, 4), (128, 64, 128, 8))  # (block_m, block_n, head_dim, warps) run one CTA per SM


def tile_flops_solo(torch, dtype, bm: int, bn: int, head_dim: int, warps: int, iters: int = 4096) -> dict:
    """FLOP/s of the tile loop with exactly one CTA per SM: grid = SM count, launched on an idle GPU,
    so the block scheduler gives each SM one CTA (checked: the CTAs' ``%smid`` must all differ).

    Returns ``{"tile_solo_fp16_<bm>x<bn>x<d>w<warps>": FLOP/s, "..._sms": distinct SMs used}``.
    """
    sms = torch.cuda.get_device_properties(0).multi_processor_count
    rate, sm_ids = _tile_rate(torch, bm, bn, head_dim, warps, sms, iters=iters, dtype=dtype, record_sm=True)
    key = f"tile_solo_fp16_{bm}x{bn}x{head_dim}w{warps}"
    return {key: rate, f"{key}_sms": float(len(set(sm_ids)))}


# (block_m, block_n, head_dim, warps, CTAs per SM) of the occupancy and softmax-overlap series
OCC_TILES = ((128, 64, 64, 4, (1, 2, 3, 4)), (64, 64, 64, 4, (1, 2, 3, 4)), (128, 64, 128, 8, (1, 2)),
             (128, 64, 128, 4, (1, 2)), (64, 64, 128, 4, (1, 2, 3)))
# the same loops three stages deep: a load issued a whole pass ahead of its use (the default tiling's two
# stages wait at the top of each pass for the load the pass before issued)
OCC_TILES_S3 = ((128, 64, 64, 4, (1, 2)), (64, 64, 64, 4, (1, 2, 3, 4)), (128, 64, 128, 8, (1,)),
                (128, 64, 128, 4, (1, 2)), (64, 64, 128, 4, (1, 2)))
# with FlashAttention-2's softmax: the large tiles where their registers allow, and the small ones at the
# occupancies three and four CTAs an SM reach (how much of each other's softmax co-resident CTAs hide)
SOFTMAX_TILES = ((128, 64, 64, 4, (1, 2)), (128, 64, 128, 8, (1,)), (64, 64, 64, 4, (1, 2, 3, 4)),
                 (64, 64, 128, 4, (1, 2, 3)), (128, 64, 128, 4, (1, 2)))


# the softmax loops deeper than the default two stages (stages last), at the tiles and depths others' kernels run
# (Triton's tutorial: 3 and 4 stages): held out of own_simt_share's fit, they check how the model prices depth
SOFTMAX_TILES_DEEP = ((128, 64, 64, 4, (1, 2), 3), (64, 64, 64, 4, (1, 2, 3), 3), (64, 64, 64, 4, (1, 2, 3), 4),
                      (64, 64, 128, 4, (1, 2), 3), (128, 64, 128, 4, (1,), 3), (128, 64, 128, 8, (1,), 3))


def tile_flops_resident(torch, bm: int, bn: int, d: int, warps: int, counts, softmax: bool = False,
                        iters: int = 4096, progress=print, stages: int | None = None, dtype=None) -> dict:
    """FLOP/s of the fp16 tile loop (with FlashAttention-2's online softmax when ``softmax``) with exactly c
    CTAs on every SM, for each c in ``counts``: grid = c × SM count on an idle GPU, which the block
    scheduler spreads evenly. A c that the compiled kernel's registers or shared memory do not allow
    (:func:`ctas_per_sm`) is skipped and reported through ``progress``.

    Returns ``{"tile_<occ|softmax>_fp16_<bm>x<bn>x<d>w<warps>_c<c>": FLOP/s (the two matmuls only),
    "..._ok_sms": SMs that ran exactly c CTAs (by ``%smid``; the SM count when all did)}``; with
    ``stages`` other than the default tiling's, the key reads ``...w<warps>s<stages>_c<c>``; with ``dtype``
    float8_e4m3fn the loop multiplies fp8 operands (V transposed) and the key reads ``tile_occ_fp8_...``.
    """
    sms = torch.cuda.get_device_properties(0).multi_processor_count
    default = default_tiling("flash2", FWD, d).stages
    stages = default if stages is None else stages
    tag = f"w{warps}" + (f"s{stages}" if stages != default else "")
    dtype = dtype or torch.float16
    name = "fp8" if dtype == torch.float8_e4m3fn else "fp16"
    key = lambda c: f"tile_{'softmax' if softmax else 'occ'}_{name}_{bm}x{bn}x{d}{tag}_c{c}"  # noqa: E731
    q, k, v = _tile_inputs(torch, dtype, bm, bn, d)
    one_f, one_i = (torch.empty(1, dtype=t, device="cuda") for t in (torch.float32, torch.int32))
    compiled = tile_loop(q, k, v, one_f, one_i, bn=bn, ctas=0, iters=iters, warps=warps, softmax=softmax,
                         stages=stages, record_sm=True)
    out = {}
    for c in _fitting(torch, compiled, warps, counts, key, progress):
        rate, sm_ids = _tile_rate(torch, bm, bn, d, warps, c * sms, iters=iters, stages=stages, softmax=softmax,
                                  record_sm=True, dtype=dtype)
        out[key(c)], out[key(c) + "_ok_sms"] = rate, float(sms_running(sm_ids, c))
    return out


HMMA_TILE = (32, 64, 64, 4)  # (block_m, block_n, head_dim, warps): block_m < 64, so tl.dot is mma.sync (HMMA)


def hmma_tile_flops(torch, ctas_per_sm: int = 4, iters: int = 4096) -> dict:
    """FLOP/s of the fp16 tile loop at 32 × 64 × 64, 4 warps, ``ctas_per_sm`` × SM count CTAs. Triton
    issues wgmma (SASS HGMMA) only for a warpgroup tile of M ≥ 64 with num_warps a multiple of 4; at
    block_m = 32 its tl.dot falls back to Ampere's mma.sync (SASS HMMA), which Hopper still runs."""
    bm, bn, d, warps = HMMA_TILE
    sms = torch.cuda.get_device_properties(0).multi_processor_count
    rate, _ = _tile_rate(torch, bm, bn, d, warps, ctas_per_sm * sms, iters=iters)
    return {f"tile_hmma_fp16_{bm}x{bn}x{d}w{warps}": rate}


def _clock_kernel():
    import triton
    import triton.language as tl

    clock64, globaltimer, _ = _ptx()

    @triton.jit
    def clock_probe(X, OUT, ZERO, ITERS: tl.constexpr, DOT: tl.constexpr, B: tl.constexpr):
        """Cycles and nanoseconds of a busy loop on this SM: an FMA chain, or (DOT) B x B x B tl.dot's."""
        pid = tl.program_id(0)
        one = tl.arange(0, 1)
        start = tl.load(X + one)
        c0 = clock64(start)
        t0 = globaltimer(start)
        kick = (c0 * ZERO).to(tl.float32)  # ZERO is 0 at run time: the loop starts after the reads
        if DOT:
            r = tl.arange(0, B)
            a = (tl.load(X + r[:, None] * B + r[None, :]) + tl.sum(kick)).to(tl.float16)
            acc = tl.zeros([B, B], tl.float32)
            for _ in range(ITERS):
                acc = tl.dot(a, a, acc)
            done = tl.sum(tl.sum(acc, 1), 0) + tl.zeros([1], tl.float32)
        else:
            x = tl.load(X + tl.arange(0, B)) + tl.sum(kick)
            for _ in range(ITERS):
                x = x * 0.999 + 0.001
            done = tl.sum(x, 0) + tl.zeros([1], tl.float32)
        c1 = clock64(done)
        t1 = globaltimer(done)
        tl.store(OUT + 3 * pid + one, c1 - c0)
        tl.store(OUT + 3 * pid + 1 + one, t1 - t0)
        tl.store(OUT + 3 * pid + 2 + one, done.to(tl.int64))  # keeps the loop's result alive

    return clock_probe


def sm_clock(torch) -> dict:
    """The SM clock (Hz) sustained under load on every SM: ``%clock64`` cycles / ``%globaltimer`` ns of
    an FMA chain (≈ 2·10⁷ cycles) and of a loop of 64³ ``tl.dot``s; the median over the SMs."""
    kernel = _clock_kernel()
    sms = torch.cuda.get_device_properties(0).multi_processor_count
    x = torch.rand(64 * 64, dtype=torch.float32, device="cuda") * 0.01
    out = {}
    for label, dot, iters, b in (("sm_clock_fma", False, 5_000_000, 512), ("sm_clock_dot", True, 200_000, 64)):
        res = torch.zeros(3 * sms, dtype=torch.int64, device="cuda")
        kernel[(sms,)](x, res, 0, ITERS=iters, DOT=dot, B=b, num_warps=4)  # compile and warm the clocks up
        kernel[(sms,)](x, res, 0, ITERS=iters, DOT=dot, B=b, num_warps=4)
        torch.cuda.synchronize()
        cycles, ns = res.view(sms, 3)[:, 0].double(), res.view(sms, 3)[:, 1].double()
        out[label] = float((cycles / ns).median()) * 1e9
    return out


@functools.cache
def _bwd_tile_kernel():
    import triton
    import triton.language as tl

    _, _, smid = _ptx()

    @triton.jit
    def tile_mma_bwd(Q, DO, K, V, OUT, DQ, SMS, N_Q, ITERS: tl.constexpr, BM: tl.constexpr, BN: tl.constexpr,
                     D: tl.constexpr, ATOMIC: tl.constexpr = False, RECORD_SM: tl.constexpr = False):
        """The five matmuls of FlashAttention-2's backward per Q block, on a resident K/V block, no softmax.

        dQ stays in registers (summed over the Q blocks, written once per CTA at row pid·BM of DQ) or, with
        ATOMIC, is added every iteration as FlashAttention-2 does: BM·d fp32 into tile j (the Q block's
        index) of DQ with relaxed atomics, so the CTAs at the same j add into the same tile.
        """
        pid = tl.program_id(0)
        if RECORD_SM:
            one = tl.arange(0, 1)
            tl.store(SMS + pid + one, smid(one))
        rm, rn, rd = tl.arange(0, BM), tl.arange(0, BN), tl.arange(0, D)
        k = tl.load(K + rn[:, None] * D + rd[None, :])
        v = tl.load(V + rn[:, None] * D + rd[None, :])
        dk = tl.zeros([BN, D], tl.float32)
        dv = tl.zeros([BN, D], tl.float32)
        dq = tl.zeros([BM, D], tl.float32)
        for i in range(ITERS):
            j = (pid + i) % N_Q
            q = tl.load(Q + j * BM * D + rm[:, None] * D + rd[None, :])
            do = tl.load(DO + j * BM * D + rm[:, None] * D + rd[None, :])
            st = tl.dot(k, tl.trans(q)).to(q.dtype)  # Sᵀ (recomputed scores)
            dv = tl.dot(st, do, dv)  # dV += Pᵀ dO
            dpt = tl.dot(v, tl.trans(do)).to(q.dtype)  # dPᵀ = V dOᵀ
            dk = tl.dot(dpt, q, dk)  # dK += dSᵀ Q
            if ATOMIC:  # dQ_j += dS K: read-modify-write of BM·d fp32 in the L2
                tl.atomic_add(DQ + j * BM * D + rm[:, None] * D + rd[None, :], tl.dot(tl.trans(dpt), k),
                              sem="relaxed")  # as kernels/flash2.py issues them
            else:
                dq = tl.dot(tl.trans(dpt), k, dq)  # dQ = dS K
        tl.store(OUT + pid * BN * D + rn[:, None] * D + rd[None, :], dk + dv)
        if not ATOMIC:
            tl.store(DQ + pid * BM * D + rm[:, None] * D + rd[None, :], dq)

    return tile_mma_bwd


@functools.cache
def _bwd_tile_tma_kernel():
    import triton
    import triton.language as tl

    _, _, smid = _ptx()

    @triton.jit
    def tile_mma_bwd_tma(DESC_Q, DESC_DO, K, V, OUT, DQ, SMS, N_Q, ITERS: tl.constexpr, BM: tl.constexpr,
                         BN: tl.constexpr, D: tl.constexpr, ATOMIC: tl.constexpr = False, RECORD_SM: tl.constexpr = False):
        """``tile_mma_bwd`` with Q and dO loaded by TMA (BM × d boxes of tensor descriptors), as Hopper kernels
        load them: the loads no longer queue in the memory pipe beside the dQ atomics. A kernel of its own
        rather than a constexpr of ``tile_mma_bwd``, whose committed compiled mixes are keyed by its constexprs."""
        pid = tl.program_id(0)
        if RECORD_SM:
            one = tl.arange(0, 1)
            tl.store(SMS + pid + one, smid(one))
        rm, rn, rd = tl.arange(0, BM), tl.arange(0, BN), tl.arange(0, D)
        k = tl.load(K + rn[:, None] * D + rd[None, :])
        v = tl.load(V + rn[:, None] * D + rd[None, :])
        dk = tl.zeros([BN, D], tl.float32)
        dv = tl.zeros([BN, D], tl.float32)
        dq = tl.zeros([BM, D], tl.float32)
        for i in range(ITERS):
            j = (pid + i) % N_Q
            q = DESC_Q.load([j * BM, 0])
            do = DESC_DO.load([j * BM, 0])
            st = tl.dot(k, tl.trans(q)).to(q.dtype)
            dv = tl.dot(st, do, dv)
            dpt = tl.dot(v, tl.trans(do)).to(q.dtype)
            dk = tl.dot(dpt, q, dk)
            if ATOMIC:
                tl.atomic_add(DQ + j * BM * D + rm[:, None] * D + rd[None, :], tl.dot(tl.trans(dpt), k), sem="relaxed")
            else:
                dq = tl.dot(tl.trans(dpt), k, dq)
        tl.store(OUT + pid * BN * D + rn[:, None] * D + rd[None, :], dk + dv)
        if not ATOMIC:
            tl.store(DQ + pid * BM * D + rm[:, None] * D + rd[None, :], dq)

    return tile_mma_bwd_tma


def bwd_tile_loop(q, do, k, v, out, dq, sm_ids, *, bm: int, ctas: int, iters: int, warps: int, stages: int,
                  atomic: bool = False, record_sm: bool = False, tma: bool = False):
    """Launch ``tile_mma_bwd`` on ``ctas`` CTAs (0: compile and load only) and return the compiled kernel.

    q and do are (N_Q·bm × d), k and v (block_n × d); ``out`` takes each CTA's dK + dV (block_n × d fp32),
    ``dq`` each CTA's dQ (bm × d fp32) or, with ``atomic``, the N_Q atomically summed dQ tiles.
    """
    bn, d = k.shape
    n_q = q.shape[0] // bm
    if tma:  # q and do as tensor descriptors of BM × d boxes
        from triton.tools.tensor_descriptor import TensorDescriptor
        q, do = (TensorDescriptor.from_tensor(t, [bm, d]) for t in (q, do))
        kernel = _bwd_tile_tma_kernel()
    else:
        kernel = _bwd_tile_kernel()
    return kernel[(ctas,)](q, do, k, v, out, dq, sm_ids, n_q, ITERS=iters, BM=bm, BN=bn, D=d, ATOMIC=atomic,
                           RECORD_SM=record_sm, num_warps=warps, num_stages=stages)


@functools.cache
def _bwd_softmax_kernel():
    import triton
    import triton.language as tl

    _, _, smid = _ptx()

    @triton.jit
    def tile_mma_bwd_softmax(Q, DO, LSE, DELTA, K, V, OUT, DQ, SMS, N_Q, qk_scale, ITERS: tl.constexpr,
                             BM: tl.constexpr, BN: tl.constexpr, D: tl.constexpr, ATOMIC: tl.constexpr = False,
                             RECORD_SM: tl.constexpr = False):
        """``tile_mma_bwd`` with the backward's own SIMT work between its products, as kernels/flash2.py's
        loop does it: P = exp2(S·scale − LSE) from the recomputed scores and dS = P ⊙ (dP − D), with each Q
        block's LSE and D rows (log2 units) loaded beside Q and dO. Its time beside the bare loop's says how
        much of that work the products hide in a backward CTA (two warpgroups at 8 warps), and with ATOMIC how
        much of the dQ atomics' time that work covers."""
        pid = tl.program_id(0)
        if RECORD_SM:
            one = tl.arange(0, 1)
            tl.store(SMS + pid + one, smid(one))
        rm, rn, rd = tl.arange(0, BM), tl.arange(0, BN), tl.arange(0, D)
        k = tl.load(K + rn[:, None] * D + rd[None, :])
        v = tl.load(V + rn[:, None] * D + rd[None, :])
        dk = tl.zeros([BN, D], tl.float32)
        dv = tl.zeros([BN, D], tl.float32)
        dq = tl.zeros([BM, D], tl.float32)
        for i in range(ITERS):
            j = (pid + i) % N_Q
            q_t = tl.load(Q + j * BM * D + rm[None, :] * D + rd[:, None])  # Qᵀ, as kernels/flash2.py loads it
            do = tl.load(DO + j * BM * D + rm[:, None] * D + rd[None, :])
            lse = tl.load(LSE + j * BM + rm)
            delta = tl.load(DELTA + j * BM + rm)
            s_t = tl.dot(k, q_t)  # Sᵀ (recomputed scores)
            p_t = tl.exp2(s_t * qk_scale - lse[None, :])
            dv = tl.dot(p_t.to(do.dtype), do, dv)  # dV += Pᵀ dO
            dp_t = tl.dot(v, tl.trans(do))  # dPᵀ = V dOᵀ
            ds_t = (p_t * (dp_t - delta[None, :])).to(do.dtype)
            dk = tl.dot(ds_t, tl.trans(q_t), dk)  # dK += dSᵀ Q
            if ATOMIC:  # dQ_j += dS K, added in the L2 as kernels/flash2.py adds it
                tl.atomic_add(DQ + j * BM * D + rm[:, None] * D + rd[None, :], tl.dot(tl.trans(ds_t), k),
                              sem="relaxed")
            else:
                dq = tl.dot(tl.trans(ds_t), k, dq)
        tl.store(OUT + pid * BN * D + rn[:, None] * D + rd[None, :], dk + dv)
        if not ATOMIC:
            tl.store(DQ + pid * BM * D + rm[:, None] * D + rd[None, :], dq)

    return tile_mma_bwd_softmax


def bwd_softmax_tile_loop(q, do, lse, delta, k, v, out, dq, sm_ids, *, bm: int, ctas: int, iters: int, warps: int,
                          stages: int, qk_scale: float, atomic: bool = False, record_sm: bool = False):
    """Launch ``tile_mma_bwd_softmax`` on ``ctas`` CTAs (0: compile and load only); return the compiled kernel.

    q and do are (N_Q·bm × d), lse and delta (N_Q·bm) fp32 in log2 units, k and v (block_n × d); ``out`` takes each
    CTA's dK + dV (block_n × d fp32), ``dq`` each CTA's dQ (bm × d fp32) or, with ``atomic``, the N_Q summed tiles.
    """
    bn, d = k.shape
    return _bwd_softmax_kernel()[(ctas,)](q, do, lse, delta, k, v, out, dq, sm_ids, q.shape[0] // bm, qk_scale,
                                          ITERS=iters, BM=bm, BN=bn, D=d, ATOMIC=atomic, RECORD_SM=record_sm,
                                          num_warps=warps, num_stages=stages)


def _bwd_setup(torch, bn, bm, d, warps, ctas, *, iters, atomic=False, record_sm=False, dtype=None, stages=None,
               tma=False, softmax=False):
    """A no-argument launcher of the backward tile loop on ``ctas`` CTAs (0: compile only) over random inputs
    (16 Q blocks), and the tensor its CTAs write their ``%smid`` into. The atomic variant's dQ buffer is
    zeroed once and keeps adding over the repetitions: only the time is kept. ``softmax``: the loop with the
    backward's own SIMT work (``tile_mma_bwd_softmax``), its exponent's arguments of order one (no overflow)."""
    dtype, n_q, room = dtype or torch.float16, 16, max(ctas, 1)
    q = torch.randn(n_q * bm, d, dtype=dtype, device="cuda") * 0.05
    do = torch.randn(n_q * bm, d, dtype=dtype, device="cuda") * 0.05
    k = torch.randn(bn, d, dtype=dtype, device="cuda")
    v = torch.randn(bn, d, dtype=dtype, device="cuda")
    out = torch.empty(room * bn, d, dtype=torch.float32, device="cuda")
    dq = torch.zeros((n_q if atomic else room) * bm, d, dtype=torch.float32, device="cuda")
    sm_ids = torch.full((room,), -1, dtype=torch.int32, device="cuda")
    stages = default_tiling("flash2", BWD, d).stages if stages is None else stages
    if softmax:
        lse = torch.randn(n_q * bm, dtype=torch.float32, device="cuda")
        delta = torch.randn(n_q * bm, dtype=torch.float32, device="cuda") * 0.05
        return (lambda: bwd_softmax_tile_loop(q, do, lse, delta, k, v, out, dq, sm_ids, bm=bm, ctas=ctas, iters=iters,
                                              warps=warps, stages=stages, qk_scale=d ** -0.5 * LOG2E, atomic=atomic,
                                              record_sm=record_sm)), sm_ids
    return (lambda: bwd_tile_loop(q, do, k, v, out, dq, sm_ids, bm=bm, ctas=ctas, iters=iters, warps=warps,
                                  stages=stages, atomic=atomic, record_sm=record_sm, tma=tma)), sm_ids


BWD_TILE_ITERS = 128  # passes of the backward's tile loop ``tile_bwd_<dtype>_d<d>`` times (its compiled code has them)


def bwd_tile_flops(torch, dtype, head_dim: int, iters: int = BWD_TILE_ITERS) -> float:
    """FLOP/s of the backward's five matmuls on block_n K/V rows × block_m Q rows × d tiles, with flash2's
    default backward tiling (tiles, warps, stages), one CTA per SM."""
    t = default_tiling("flash2", BWD, head_dim)
    programs = torch.cuda.get_device_properties(0).multi_processor_count
    fn, _ = _bwd_setup(torch, t.block_n, t.block_m, head_dim, t.warps, programs, iters=iters, dtype=dtype,
                       stages=t.stages)
    fn()
    seconds = time_fn(fn).median_s
    return programs * iters * 10.0 * t.block_m * t.block_n * head_dim / seconds


# (block_n K/V rows, block_m Q rows, head_dim, warps, CTAs per SM) of the backward's atomics series; the last is the
# default d = 128 backward's (twice the payload a pass, a pass twice as long: how much of its atomics it waits for)
BWD_ATOMIC_TILES = ((128, 64, 64, 8, 1), (64, 64, 64, 4, 2), (128, 64, 128, 8, 1))
# pipeline depths measured besides the default tiling's: a deeper loop hides more of its atomics
# (experiments/measurements/h200/atomics: 0.91 of the payload time exposed at 2 stages, 0.60 at 3)
BWD_ATOMIC_STAGES = (1, 3, 4)
# the same loop with Q and dO loaded by TMA (``tile_bwd_*_tma_*``), as the Hopper backward loads them,
# at its pipeline depths: does a loop whose loads bypass the memory pipe wait for its atomics alike?
BWD_ATOMIC_TMA_STAGES = (2, 3)


def bwd_tile_atomics(torch, bn: int, bm: int, d: int, warps: int, c: int, iters: int = 1024, progress=print,
                     stages: int | None = None, tma: bool = False, softmax: bool = False) -> dict:
    """The backward tile loop with dQ kept in registers ("plain") and with dQ added atomically every
    iteration ("atomic", as FlashAttention-2), one after the other, fp16, exactly ``c`` CTAs per SM
    (grid = c × SM count; a variant whose resources do not allow c is skipped, see :func:`ctas_per_sm`).
    Each atomic launch adds c·SMs·iters tiles of bm·d fp32 into 16 target tiles, ≈ c·SMs/16 CTAs per tile
    at once.

    Returns ``{"tile_bwd_<plain|atomic>_fp16_<bn>x<bm>x<d>w<warps>[s<stages>]_c<c>": FLOP/s (the five
    matmuls, 10·bm·bn·d per iteration), "..._ok_sms": SMs that ran exactly c CTAs, "<atomic
    key>_bytes_per_s": atomic payload bytes / time}``; ``s<stages>`` where ``stages`` is given (else the
    default tiling's depth). ``tma``: Q and dO loaded by TMA, keys ``tile_bwd_<plain|atomic>_tma_fp16_...``.
    ``softmax``: the loop with the backward's own SIMT work (``tile_mma_bwd_softmax``), keys
    ``tile_bwd_softmax_<plain|atomic>_fp16_...``: beside the bare loop's, what that work costs a pass and how much
    of the atomics' time it covers.
    """
    sms, out = torch.cuda.get_device_properties(0).multi_processor_count, {}
    depth = "" if stages is None else f"s{stages}"
    for atomic in (False, True):
        key = (f"tile_bwd_{'softmax_' if softmax else ''}{'atomic' if atomic else 'plain'}{'_tma' if tma else ''}"
               f"_fp16_{bn}x{bm}x{d}w{warps}{depth}_c{c}")
        setup = lambda ctas: _bwd_setup(torch, bn, bm, d, warps, ctas, iters=iters, atomic=atomic, record_sm=True,
                                        stages=stages, tma=tma, softmax=softmax)
        if not _fitting(torch, setup(0)[0](), warps, (c,), lambda _: key, progress):
            continue
        fn, sm_ids = setup(c * sms)
        fn()
        seconds = time_fn(fn).median_s
        out[key] = c * sms * iters * 10.0 * bm * bn * d / seconds
        out[key + "_ok_sms"] = float(sms_running(sm_ids.tolist(), c))
        if atomic:
            out[key + "_bytes_per_s"] = c * sms * iters * bm * d * 4 / seconds
    return out


# (block_n, block_m, head_dim, warps, CTAs per SM) of the backward's softmax series (bwd_tile_atomics(softmax=True)):
# flash2's default backward tiles at d = 64 and 128, as its atomics series has them (the bare loops' keys beside)
BWD_SOFTMAX_TILES = ((128, 64, 64, 8, 1), (128, 64, 128, 8, 1))


def matmul_flops(torch, dtype, n: int = 8192) -> float:
    a = torch.randn(n, n, dtype=dtype, device="cuda")
    b = torch.randn(n, n, dtype=dtype, device="cuda")
    return 2.0 * n**3 / time_fn(lambda: a @ b).median_s


def _chase_kernel():
    import triton
    import triton.language as tl

    clock64, globaltimer, _ = _ptx()

    @triton.jit
    def chase(nxt, out, WARM: tl.constexpr, ITERS: tl.constexpr):
        """One thread follows a random cycle of pointers, each load needing the one before it: WARM hops
        untimed (a whole cycle brings every line into the L2 and ends where it began), then ITERS hops
        between two reads of the global timer (ns) and the SM's cycle counter."""
        one = tl.arange(0, 1)
        j = tl.load(nxt + one)
        for _ in range(WARM):
            j = tl.load(nxt + j, cache_modifier=".cg")
        t0 = globaltimer(j)
        c0 = clock64(j)
        for _ in range(ITERS):
            j = tl.load(nxt + j, cache_modifier=".cg")
        t1 = globaltimer(j)
        c1 = clock64(j)
        tl.store(out + one, j)
        tl.store(out + 1 + one, t1 - t0)
        tl.store(out + 2 + one, c1 - c0)

    return chase


def load_latency(torch, nbytes: int, in_l2: bool, iters: int = CHASE_HOPS, reps: int = 5) -> dict:
    """Seconds (and SM cycles) per dependent load over a random cycle through ``nbytes`` (128-byte hops).

    Timed inside the kernel, so neither the launch nor an L2 flush is in the time. ``in_l2``: a
    buffer well inside the L2 (but past L1, which .cg skips); the launch first walks the whole cycle
    (every line into the L2), then times ``iters`` hops that hit. Otherwise the L2 is flushed (a
    write of twice its size) before each launch and a buffer far larger than the L2 gives the DRAM
    latency (plus the TLB walks of a random walk over it). Medians of ``reps`` launches.
    """
    slots = nbytes // 128
    order = torch.randperm(slots, device="cuda")
    nxt = torch.zeros(slots * 16, dtype=torch.int64, device="cuda")  # an int64 every 128 bytes
    nxt[order * 16] = torch.roll(order, -1) * 16
    out = torch.zeros(3, dtype=torch.int64, device="cuda")
    kernel = _chase_kernel()
    flush = torch.empty(2 * torch.cuda.get_device_properties(0).L2_cache_size, dtype=torch.int8, device="cuda")
    warm = slots if in_l2 else 0
    ns, cycles = [], []
    for _ in range(reps + 1):  # the first launch compiles
        if not in_l2:
            flush.zero_()
        kernel[(1,)](nxt, out, WARM=warm, ITERS=iters, num_warps=1)
        torch.cuda.synchronize()
        ns.append(int(out[1]))
        cycles.append(int(out[2]))
    label = "l2" if in_l2 else "dram"
    return {f"latency_{label}": statistics.median(ns[1:]) * 1e-9 / iters,
            f"latency_{label}_cycles": statistics.median(cycles[1:]) / iters}


def _atomic_kernel():
    import triton
    import triton.language as tl

    @triton.jit
    def tile_atomics(out, TARGETS, ITERS: tl.constexpr, BM: tl.constexpr, D: tl.constexpr):
        """Each CTA atomically adds a BM×D fp32 tile ITERS times into tile (pid % TARGETS) of ``out``."""
        pid = tl.program_id(0)
        offs = (pid % TARGETS) * BM * D + tl.arange(0, BM)[:, None] * D + tl.arange(0, D)[None, :]
        val = tl.full((BM, D), 1.0, tl.float32)
        for _ in range(ITERS):
            tl.atomic_add(out + offs, val, sem="relaxed")  # as kernels/flash2.py issues them

    return tile_atomics


def atomic_bandwidth(torch, ctas: int = 2048, sharers: int = 32, iters: int = 16, bm: int = 64, d: int = 64) -> dict:
    """fp32 atomic-add payload bytes/s, as FlashAttention-2's backward issues them: 64×64 fp32 tiles,
    ``sharers`` CTAs adding into the same tile at once (the K/V blocks of one head into one dQ block)."""
    out = {}
    kernel = _atomic_kernel()
    for label, targets in (("atomic_shared", ctas // sharers), ("atomic_distinct", ctas)):
        buf = torch.zeros(targets * bm * d, dtype=torch.float32, device="cuda")
        run = lambda: kernel[(ctas,)](buf, targets, ITERS=iters, BM=bm, D=d, num_warps=4)  # noqa: E731
        run()
        t = time_fn(run, 10, 50).median_s
        out[label] = ctas * iters * bm * d * 4 / t
    return out


def _serial_kernel():
    import triton
    import triton.language as tl

    @triton.jit
    def serial_tiles(src, out, ITERS: tl.constexpr, ROWS: tl.constexpr, D: tl.constexpr):
        """One CTA loads ROWS×D fp32 tiles one after another, each used before the next is issued
        (num_stages=1, as flash1's inner loop): time per tile = latency + bytes / per-CTA bandwidth."""
        pid = tl.program_id(0)
        offs = tl.arange(0, ROWS)[:, None] * D + tl.arange(0, D)[None, :]
        base = src + pid.to(tl.int64) * ITERS * ROWS * D
        acc = tl.zeros((ROWS, D), tl.float32)
        for i in range(ITERS):
            acc += tl.load(base + i * ROWS * D + offs)
            acc = acc * 0.5
        tl.store(out + pid * ROWS * D + offs, acc)

    return serial_tiles


def _serial_rw_kernel():
    import triton
    import triton.language as tl

    @triton.jit
    def serial_rw_tiles(src, dst, ITERS: tl.constexpr, ROWS: tl.constexpr, D: tl.constexpr):
        """``serial_tiles`` that also stores each tile it loaded (scaled) to its own place of ``dst`` before
        loading the next, as flash1's inner loop writes O_i back (num_stages=1)."""
        pid = tl.program_id(0)
        offs = tl.arange(0, ROWS)[:, None] * D + tl.arange(0, D)[None, :]
        base = pid.to(tl.int64) * ITERS * ROWS * D
        for i in range(ITERS):
            x = tl.load(src + base + i * ROWS * D + offs)
            tl.store(dst + base + i * ROWS * D + offs, x * 0.5)

    return serial_rw_tiles


def cta_store_cost(torch, ctas: int = 64, iters: int = 256, d: int = 64) -> dict:
    """What storing each tile adds to an unpipelined CTA's loop: seconds per tile of ``serial_tiles`` (load,
    use) and of ``serial_rw_tiles`` (load, store it back elsewhere), fp32 tiles of 32 and 128 rows × 64, 64
    CTAs of 4 warps; raw keys ``serial_<ld|rw>_<bytes>_s``."""
    load, rw = _serial_kernel(), _serial_rw_kernel()
    out = {}
    for rows in (32, 128):
        src = torch.randn(ctas * iters * rows * d, dtype=torch.float32, device="cuda")
        dst = torch.empty_like(src)
        small = torch.empty(ctas * rows * d, dtype=torch.float32, device="cuda")
        for key, run in ((f"serial_ld_{rows * d * 4}_s",
                          lambda: load[(ctas,)](src, small, ITERS=iters, ROWS=rows, D=d, num_warps=4, num_stages=1)),
                         (f"serial_rw_{rows * d * 4}_s",
                          lambda: rw[(ctas,)](src, dst, ITERS=iters, ROWS=rows, D=d, num_warps=4, num_stages=1))):
            run()
            out[key] = time_fn(run).median_s / iters
    return out


def cta_load_rate(torch, ctas: int = 64, iters: int = 256, d: int = 64) -> dict:
    """Per-CTA latency and bandwidth of unpipelined tile loads from DRAM (4 warps, fp32 tiles of 32
    and 128 rows × 64): the line through the two times per tile."""
    kernel = _serial_kernel()
    times = {}
    for rows in (32, 128):
        src = torch.randn(ctas * iters * rows * d, dtype=torch.float32, device="cuda")
        out = torch.empty(ctas * rows * d, dtype=torch.float32, device="cuda")
        run = lambda: kernel[(ctas,)](src, out, ITERS=iters, ROWS=rows, D=d, num_warps=4, num_stages=1)  # noqa: E731
        run()
        times[rows * d * 4] = time_fn(run).median_s / iters
    (b0, t0), (b1, t1) = sorted(times.items())
    bandwidth = (b1 - b0) / (t1 - t0)
    return {"cta_load_bandwidth": bandwidth, "cta_load_latency": t0 - b0 / bandwidth}


def _empty_kernel():
    import triton

    @triton.jit
    def empty(x):
        pass

    return empty


def launch_overhead(torch, launches: int = 200, repeats: int = 15) -> dict:
    """Seconds per kernel, end to end on the GPU, for back-to-back launches queued behind a sleep.

    ``torch.cuda._sleep`` keeps the GPU busy while the CPU queues every launch, so the time between
    the events is the GPU's per-kernel cost alone; the sleep is doubled until the queueing fits in it.
    """
    kernel = _empty_kernel()
    x = torch.zeros(1, device="cuda")
    ops = {"launch_triton_empty": lambda: kernel[(1,)](x), "launch_torch_add": lambda: x.add_(1)}
    out = {}
    for name, op in ops.items():
        op()
        torch.cuda.synchronize()
        cycles, samples = 20_000_000, []
        while len(samples) < repeats:
            asleep, start, end = (torch.cuda.Event(enable_timing=True) for _ in range(3))
            asleep.record()
            torch.cuda._sleep(cycles)
            start.record()
            t0 = time.perf_counter()
            for _ in range(launches):
                op()
            queued = time.perf_counter() - t0
            end.record()
            end.synchronize()
            if asleep.elapsed_time(start) / 1e3 < 1.2 * queued:  # the GPU may have waited for the CPU
                cycles *= 2
                samples.clear()
                continue
            samples.append(start.elapsed_time(end) / 1e3 / launches)
        out[name] = sorted(samples)[len(samples) // 2]
    return out


def _series_steps(torch, progress) -> list:
    """One step per configuration of the occupancy, softmax-overlap, mma.sync, backward-atomics and L2-write
    benchmarks, so that one configuration failing (say, out of resources) loses only its own keys."""
    part = functools.partial
    return ([(f"occupancy tiles {bm}x{bn}x{d}w{w}", part(tile_flops_resident, torch, bm, bn, d, w, cs, progress=progress))
             for bm, bn, d, w, cs in OCC_TILES]
            + [(f"occupancy tiles {bm}x{bn}x{d}w{w}s3",
                part(tile_flops_resident, torch, bm, bn, d, w, cs, progress=progress, stages=3))
               for bm, bn, d, w, cs in OCC_TILES_S3]
            + [(f"softmax tiles {bm}x{bn}x{d}w{w}",
                part(tile_flops_resident, torch, bm, bn, d, w, cs, softmax=True, progress=progress))
               for bm, bn, d, w, cs in SOFTMAX_TILES]
            + [(f"softmax tiles {bm}x{bn}x{d}w{w}s{st}",
                part(tile_flops_resident, torch, bm, bn, d, w, cs, softmax=True, progress=progress, stages=st))
               for bm, bn, d, w, cs, st in SOFTMAX_TILES_DEEP]
            + [("mma.sync tiles", part(hmma_tile_flops, torch))]
            + [(f"bwd atomics {bn}x{bm}x{d}w{w} c={c}", part(bwd_tile_atomics, torch, bn, bm, d, w, c, progress=progress))
               for bn, bm, d, w, c in BWD_ATOMIC_TILES]
            + [(f"bwd atomics {bn}x{bm}x{d}w{w}s{st} c={c}",
                part(bwd_tile_atomics, torch, bn, bm, d, w, c, progress=progress, stages=st))
               for bn, bm, d, w, c in BWD_ATOMIC_TILES for st in BWD_ATOMIC_STAGES]
            + [(f"bwd atomics tma {bn}x{bm}x{d}w{w}s{st} c={c}",
                part(bwd_tile_atomics, torch, bn, bm, d, w, c, progress=progress, stages=st, tma=True))
               for bn, bm, d, w, c in BWD_ATOMIC_TILES[:1] for st in BWD_ATOMIC_TMA_STAGES]
            + [(f"bwd softmax {bn}x{bm}x{d}w{w} c={c}", part(bwd_tile_atomics, torch, bn, bm, d, w, c, progress=progress,
                                                                softmax=True))
               for bn, bm, d, w, c in BWD_SOFTMAX_TILES]
            + [("L2 write", part(l2_write_bandwidth, torch))])


def _latencies(torch, progress) -> dict:
    from iosim.kernels.latency_bench import instruction_latencies  # its own module: chains of inline PTX

    return instruction_latencies(torch, progress=progress)


def run_all(progress=print, only=None) -> dict:
    """Every microbenchmark (``only``: those whose step names it gives, e.g. ``("DRAM read stream",)``);
    values in bytes/s, FLOP/s and seconds."""
    torch = cuda_torch()
    raw = {}
    steps = [
        ("DRAM", lambda: dram_bandwidth(torch)),
        ("DRAM read stream", lambda: dram_read_stream(torch)),
        ("L2", lambda: l2_bandwidth(torch)),
        ("cuBLAS", lambda: {f"matmul_{n}": matmul_flops(torch, dt) for n, dt in
                            (("fp16", torch.float16), ("bf16", torch.bfloat16))}),
        ("tiles", lambda: {f"tile_{n}_d{d}": tile_flops(torch, dt, d) for n, dt in
                           (("fp16", torch.float16), ("bf16", torch.bfloat16)) for d in (64, 128)}),
        ("fp8 tiles", lambda: fp8_tile_flops(torch)),
        ("fp8 occupancy", lambda: {k: v for (bm, bn, d, w, cs), st in
                                   [(t, None) for t in OCC_TILES] + [(t, 3) for t in OCC_TILES_S3]
                                   for k, v in tile_flops_resident(torch, bm, bn, d, w, cs, progress=progress,
                                                                   stages=st, dtype=torch.float8_e4m3fn).items()}),
        ("bwd tiles", lambda: {f"tile_bwd_fp16_d{d}": bwd_tile_flops(torch, torch.float16, d) for d in (64, 128)}),
        ("launch", lambda: launch_overhead(torch)),
        ("atomics", lambda: atomic_bandwidth(torch)),
        ("serial loads", lambda: cta_load_rate(torch)),
        ("serial stores", lambda: cta_store_cost(torch)),
        ("latency", lambda: {**load_latency(torch, 4 * 2**20, in_l2=True),
                             **load_latency(torch, 2 * GiB, in_l2=False)}),
        ("SM clock", lambda: sm_clock(torch)),
        ("solo tiles", lambda: {k: v for bm, bn, d, w in SOLO_TILES
                                for k, v in tile_flops_solo(torch, torch.float16, bm, bn, d, w).items()}),
        *_series_steps(torch, progress),
        ("instruction latencies", lambda: _latencies(torch, progress)),
        ("CTA fixed cost", lambda: cta_fixed_cost(torch)),
        ("miss cost", lambda: miss_cost(torch)),
        ("miss cost series", lambda: miss_costs(torch)),
        ("miss cost series softmax", lambda: miss_costs(torch, softmax=True)),
        ("convoy cost series", lambda: convoy_costs(torch)),
    ]
    if only is not None:
        wanted = {name.strip().lower() for name in only}
        unknown = wanted - {label.lower() for label, _ in steps}
        if unknown:
            raise HarnessError(f"only: no microbenchmark step {sorted(unknown)[0]!r}; the steps are "
                               + ", ".join(label for label, _ in steps))
        steps = [(label, step) for label, step in steps if label.lower() in wanted]
    for label, step in steps:
        t0 = time.perf_counter()
        try:
            raw.update(step())
        except Exception as e:  # one failing microbenchmark leaves the others and the base values
            progress(f"{label}: failed: {one_line(e)}")
        else:
            progress(f"{label}: done ({time.perf_counter() - t0:.1f} s)")
        torch.cuda.empty_cache()
    return raw


_FACTORIES = {"dram_stream": _stream_kernel, "l2_read": _l2_kernel, "l2_write": _l2_write_kernel, "tile_mma": _tile_kernel, "clock_probe": _clock_kernel,
              "tile_mma_bwd": _bwd_tile_kernel, "tile_mma_bwd_tma": _bwd_tile_tma_kernel,
              "tile_mma_bwd_softmax": _bwd_softmax_kernel, "chase": _chase_kernel, "tile_atomics": _atomic_kernel,
              "serial_tiles": _serial_kernel, "empty": _empty_kernel}


def __getattr__(name: str):
    """The Triton kernels by name (``microbench.tile_mma``), built on first use (PEP 562): how
    :class:`iosim.kernels.sass.Launch` finds a captured launch's kernel to compile it for sm_XX."""
    if name in _FACTORIES:
        return _FACTORIES[name]()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
