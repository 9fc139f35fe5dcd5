"""Microbenchmarks of the GPU at hand: DRAM and L2 bandwidth, tile-loop and cuBLAS throughput, latencies, atomics, launches.

Each is timed through :mod:`iosim.kernels.timing` (``time_fn``: ``do_bench`` medians with the L2
flushed), except those timed inside the kernel (``%globaltimer`` and ``%clock64`` read through
inline PTX): the pointer chases, whose L2 pass must find its lines resident, and the SM clock:

- DRAM read (a reduction over 2 GiB, ≫ the L2), write (a fill) and copy (bytes read + written);
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
  of launching is hidden and only the GPU's per-kernel cost remains.

Values in bytes/s, FLOP/s and seconds; :mod:`iosim.kernels.calibrate` turns them into profile fields.
"""
from __future__ import annotations

import statistics
import time

from iosim.kernels.device import cuda_torch, one_line
from iosim.kernels.timing import time_fn
from iosim.schedule.tiling import BWD, FWD, default_tiling

GiB = 2**30
CHASE_HOPS = 4096  # dependent loads per pointer-chase kernel


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


def _tile_kernel():
    import triton
    import triton.language as tl

    _, _, smid = _ptx()

    @triton.jit
    def tile_mma(Q, K, V, O, SMS, N_KV, ITERS: tl.constexpr, BM: tl.constexpr, BN: tl.constexpr, D: tl.constexpr,
                 RECORD_SM: tl.constexpr = False):
        pid = tl.program_id(0)
        if RECORD_SM:  # which SM this CTA ran on: a one-CTA-per-SM run checks that the SMs are distinct
            one = tl.arange(0, 1)
            tl.store(SMS + pid + one, smid(one))
        rm, rn, rd = tl.arange(0, BM), tl.arange(0, BN), tl.arange(0, D)
        q = tl.load(Q + rm[:, None] * D + rd[None, :])
        acc = tl.zeros([BM, D], tl.float32)
        for i in range(ITERS):
            j = (pid + i) % N_KV  # K/V tiles vary, so nothing is hoisted; all stay in L1/L2
            k = tl.load(K + j * BN * D + rn[:, None] * D + rd[None, :])
            v = tl.load(V + j * BN * D + rn[:, None] * D + rd[None, :])
            s = tl.dot(q, tl.trans(k))
            acc = tl.dot(s.to(v.dtype), v, acc)
        tl.store(O + pid * BM * D + rm[:, None] * D + rd[None, :], acc)

    return tile_mma


def tile_flops(torch, dtype, head_dim: int, iters: int = 256) -> float:
    """FLOP/s of the attention inner loop's two matmuls on (block_m × d) · (block_n × d)ᵀ tiles, no softmax,
    with flash2's default forward tiling (tiles, warps, stages) at this head dim."""
    kernel = _tile_kernel()
    t = default_tiling("flash2", FWD, head_dim)
    bm, bn, n_kv = t.block_m, t.block_n, 16
    programs = 2 * torch.cuda.get_device_properties(0).multi_processor_count
    q = torch.randn(bm, head_dim, dtype=dtype, device="cuda")
    k = torch.randn(n_kv * bn, head_dim, dtype=dtype, device="cuda") * 0.05
    v = torch.randn(n_kv * bn, head_dim, dtype=dtype, device="cuda")
    o = torch.empty(programs * bm, head_dim, dtype=torch.float32, device="cuda")
    fn = lambda: kernel[(programs,)](q, k, v, o, o, n_kv, ITERS=iters, BM=bm, BN=bn, D=head_dim,  # noqa: E731
                                     num_warps=t.warps, num_stages=t.stages)
    fn()
    seconds = time_fn(fn).median_s
    return programs * iters * 4.0 * bm * bn * head_dim / seconds


SOLO_TILES = ((128, 64, 64, 4), (128, 64, 128, 8))  # (block_m, block_n, head_dim, warps) run one CTA per SM


def tile_flops_solo(torch, dtype, bm: int, bn: int, head_dim: int, warps: int, iters: int = 4096) -> dict:
    """FLOP/s of the tile loop with exactly one CTA per SM: grid = SM count, launched on an idle GPU,
    so the block scheduler gives each SM one CTA (checked: the CTAs' ``%smid`` must all differ).

    Returns ``{"tile_solo_fp16_<bm>x<bn>x<d>w<warps>": FLOP/s, "..._sms": distinct SMs used}``.
    """
    kernel = _tile_kernel()
    sms, n_kv = torch.cuda.get_device_properties(0).multi_processor_count, 16
    q = torch.randn(bm, head_dim, dtype=dtype, device="cuda")
    k = torch.randn(n_kv * bn, head_dim, dtype=dtype, device="cuda") * 0.05
    v = torch.randn(n_kv * bn, head_dim, dtype=dtype, device="cuda")
    o = torch.empty(sms * bm, head_dim, dtype=torch.float32, device="cuda")
    sm_ids = torch.full((sms,), -1, dtype=torch.int32, device="cuda")
    stages = default_tiling("flash2", FWD, head_dim).stages
    fn = lambda: kernel[(sms,)](q, k, v, o, sm_ids, n_kv, ITERS=iters, BM=bm, BN=bn, D=head_dim,  # noqa: E731
                                RECORD_SM=True, num_warps=warps, num_stages=stages)
    fn()
    seconds = time_fn(fn).median_s
    key = f"tile_solo_fp16_{bm}x{bn}x{head_dim}w{warps}"
    return {key: sms * iters * 4.0 * bm * bn * head_dim / seconds, f"{key}_sms": float(sm_ids.unique().numel())}


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


def _bwd_tile_kernel():
    import triton
    import triton.language as tl

    @triton.jit
    def tile_mma_bwd(Q, DO, K, V, OUT, DQ, N_Q, ITERS: tl.constexpr, BM: tl.constexpr, BN: tl.constexpr,
                     D: tl.constexpr):
        """The five matmuls of FlashAttention-2's backward per Q block, on a resident K/V block, no softmax."""
        pid = tl.program_id(0)
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
            dq = tl.dot(tl.trans(dpt), k, dq)  # dQ = dS K
        tl.store(OUT + pid * BN * D + rn[:, None] * D + rd[None, :], dk + dv)
        tl.store(DQ + pid * BM * D + rm[:, None] * D + rd[None, :], dq)

    return tile_mma_bwd


def bwd_tile_flops(torch, dtype, head_dim: int, iters: int = 128) -> float:
    """FLOP/s of the backward's five matmuls on block_n K/V rows × block_m Q rows × d tiles, with flash2's
    default backward tiling (tiles, warps, stages)."""
    kernel = _bwd_tile_kernel()
    t = default_tiling("flash2", BWD, head_dim)
    bm, bn, n_q = t.block_m, t.block_n, 16
    programs = torch.cuda.get_device_properties(0).multi_processor_count
    q = torch.randn(n_q * bm, head_dim, dtype=dtype, device="cuda") * 0.05
    do = torch.randn(n_q * bm, head_dim, dtype=dtype, device="cuda") * 0.05
    k = torch.randn(bn, head_dim, dtype=dtype, device="cuda")
    v = torch.randn(bn, head_dim, dtype=dtype, device="cuda")
    out = torch.empty(programs * bn, head_dim, dtype=torch.float32, device="cuda")
    dq = torch.empty(programs * bm, head_dim, dtype=torch.float32, device="cuda")
    fn = lambda: kernel[(programs,)](q, do, k, v, out, dq, n_q, ITERS=iters, BM=bm, BN=bn, D=head_dim,  # noqa: E731
                                     num_warps=t.warps, num_stages=t.stages)
    fn()
    seconds = time_fn(fn).median_s
    return programs * iters * 10.0 * bm * bn * head_dim / seconds


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


def run_all(progress=print) -> dict:
    """Every microbenchmark; values in bytes/s, FLOP/s and seconds."""
    torch = cuda_torch()
    raw = {}
    steps = [
        ("DRAM", lambda: dram_bandwidth(torch)),
        ("L2", lambda: l2_bandwidth(torch)),
        ("cuBLAS", lambda: {f"matmul_{n}": matmul_flops(torch, dt) for n, dt in
                            (("fp16", torch.float16), ("bf16", torch.bfloat16))}),
        ("tiles", lambda: {f"tile_{n}_d{d}": tile_flops(torch, dt, d) for n, dt in
                           (("fp16", torch.float16), ("bf16", torch.bfloat16)) for d in (64, 128)}),
        ("bwd tiles", lambda: {f"tile_bwd_fp16_d{d}": bwd_tile_flops(torch, torch.float16, d) for d in (64, 128)}),
        ("launch", lambda: launch_overhead(torch)),
        ("atomics", lambda: atomic_bandwidth(torch)),
        ("serial loads", lambda: cta_load_rate(torch)),
        ("latency", lambda: {**load_latency(torch, 4 * 2**20, in_l2=True),
                             **load_latency(torch, 2 * GiB, in_l2=False)}),
        ("SM clock", lambda: sm_clock(torch)),
        ("solo tiles", lambda: {k: v for bm, bn, d, w in SOLO_TILES
                                for k, v in tile_flops_solo(torch, torch.float16, bm, bn, d, w).items()}),
    ]
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
