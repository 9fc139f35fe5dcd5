"""Microbenchmarks of the GPU at hand: DRAM and L2 bandwidth, tile-loop and cuBLAS throughput, latencies, atomics, launches.

Each is timed through :mod:`iosim.kernels.timing` (``time_fn``: ``do_bench`` medians with the L2
flushed; ``time_warm`` for the L2 pointer chase, which must find its lines in the L2):

- DRAM read (a reduction over 2 GiB, ≫ the L2), write (a fill) and copy (bytes read + written);
- L2 read bandwidth: every SM re-reads an 8 MiB buffer (about ¼ of an H100's L2) with ``.cg``
  loads, which skip L1, so every byte is served by the L2;
- tensor-core throughput: cuBLAS 8192³ matmuls (fp16, bf16) and Triton loops of the tile shapes our
  flash2 kernels use by default (forward: S = Q Kᵀ, O += P V; backward: its five matmuls);
- load latency: one thread chasing a random pointer cycle, inside the L2 and through DRAM;
- fp32 atomic-add bandwidth as FlashAttention-2's backward issues it, and per-CTA unpipelined loads;
- launch overhead: empty Triton kernels back to back while the GPU is kept busy, so the CPU's cost
  of launching is hidden and only the GPU's per-kernel cost remains.

Values in bytes/s, FLOP/s and seconds; :mod:`iosim.kernels.calibrate` turns them into profile fields.
"""
from __future__ import annotations

import time

from iosim.kernels.device import cuda_torch, one_line
from iosim.kernels.timing import time_fn, time_warm
from iosim.schedule.tiling import BWD, FWD, default_tiling

GiB = 2**30
CHASE_HOPS = 4096  # dependent loads per pointer-chase kernel


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

    @triton.jit
    def tile_mma(Q, K, V, O, N_KV, ITERS: tl.constexpr, BM: tl.constexpr, BN: tl.constexpr, D: tl.constexpr):
        pid = tl.program_id(0)
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
    fn = lambda: kernel[(programs,)](q, k, v, o, n_kv, ITERS=iters, BM=bm, BN=bn, D=head_dim,  # noqa: E731
                                     num_warps=t.warps, num_stages=t.stages)
    fn()
    seconds = time_fn(fn).median_s
    return programs * iters * 4.0 * bm * bn * head_dim / seconds


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

    @triton.jit
    def chase(nxt, out, ITERS: tl.constexpr):
        """One thread follows a random cycle of pointers: each load needs the one before it."""
        j = tl.load(nxt)
        for _ in range(ITERS):
            j = tl.load(nxt + j, cache_modifier=".cg")
        tl.store(out, j)

    return chase


def load_latency(torch, nbytes: int, in_l2: bool, iters: int = CHASE_HOPS) -> float:
    """Seconds per dependent load over a random cycle through ``nbytes`` (one 128-byte line per hop).

    Every run starts at the same slot, so it visits the same ``iters`` lines. ``in_l2``: a buffer
    well inside the L2 (but past L1, which .cg skips), timed without a flush after warm-up runs
    that leave those lines in the L2, gives the L2 hit latency. Otherwise the L2 is flushed before
    each run (``do_bench``) and a buffer far larger than the L2 gives the DRAM latency (plus the TLB
    walks of a random walk over it).
    """
    slots = nbytes // 128
    order = torch.randperm(slots, device="cuda")
    nxt = torch.zeros(slots * 16, dtype=torch.int64, device="cuda")  # an int64 every 128 bytes
    nxt[order * 16] = torch.roll(order, -1) * 16
    out = torch.zeros(1, dtype=torch.int64, device="cuda")
    kernel = _chase_kernel()
    run = lambda: kernel[(1,)](nxt, out, ITERS=iters, num_warps=1)  # noqa: E731
    run()  # compile
    seconds = time_warm(run) if in_l2 else time_fn(run, 5, 30).median_s
    return seconds / iters


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
        ("latency", lambda: {"latency_l2": load_latency(torch, 4 * 2**20, in_l2=True),
                             "latency_dram": load_latency(torch, 2 * GiB, in_l2=False)}),
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
