"""Calibrate a hardware profile on the GPU at hand: measured ceilings replace the assumed fractions.

Microbenchmarks, each timed with ``iosim.kernels.harness.time_fn`` (``do_bench``, medians):

- DRAM read (a reduction over 2 GiB, ≫ the L2), write (a fill) and copy (bytes read + written);
- L2 read bandwidth: every SM re-reads an 8 MiB buffer (about ¼ of an H100's L2) with ``.cg``
  loads, which skip L1, so every byte is served by the L2;
- tensor-core throughput: cuBLAS 8192³ matmuls (fp16, bf16) and a Triton loop of the tile shapes our
  attention kernels use (a 128×d Q tile against 64×d K and V tiles: S = Q Kᵀ, O += P V);
- launch overhead: empty Triton kernels back to back while the GPU is kept busy, so the CPU's cost
  of launching is hidden and only the GPU's per-kernel cost remains.

``calibrate(base, out)`` copies the base profile, replaces ``dram_efficiency`` (copy / datasheet
HBM bandwidth), ``l2_efficiency`` (L2 read / datasheet L2 bandwidth), ``tensor_efficiency``
(best Triton tile loop, fp16 / datasheet fp16 tensor peak) and ``launch_overhead``, each with
``source: "measured: iosim calibrate, <gpu>, <date>"``, and adds a ``calibration:`` block with the
provenance and every raw number.

    python3 -m iosim.kernels.calibrate --base hardware_profiles/h100-sxm.yaml --out FILE
"""
from __future__ import annotations

import argparse
import re
import socket
import statistics
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import yaml

from iosim.kernels.harness import HarnessError, _torch, time_fn

GiB = 2**30
UNIT_SCALE = {  # profile unit -> SI base unit
    "TB/s": 1e12, "GB/s": 1e9, "MB/s": 1e6, "B/s": 1.0, "bytes/s": 1.0,
    "TFLOP/s": 1e12, "GFLOP/s": 1e9, "FLOP/s": 1.0,
    "s": 1.0, "ms": 1e-3, "us": 1e-6, "ns": 1e-9,
}
TILE = (128, 64)  # BLOCK_M × BLOCK_N of our kernels' default forward tiling
MAX_FRACTION = 1.05  # a measured fraction of a datasheet peak above this means the profile is wrong


# --------------------------------------------------------------------------- microbenchmarks


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
    """FLOP/s of the attention inner loop's two matmuls on (128 × d) · (64 × d)ᵀ tiles, no softmax.

    4 warps for d ≤ 64, else 8, as our flash kernels use.
    """
    kernel = _tile_kernel()
    warps = 4 if head_dim <= 64 else 8
    bm, bn, n_kv = TILE[0], TILE[1], 16
    programs = 2 * torch.cuda.get_device_properties(0).multi_processor_count
    q = torch.randn(bm, head_dim, dtype=dtype, device="cuda")
    k = torch.randn(n_kv * bn, head_dim, dtype=dtype, device="cuda") * 0.05
    v = torch.randn(n_kv * bn, head_dim, dtype=dtype, device="cuda")
    o = torch.empty(programs * bm, head_dim, dtype=torch.float32, device="cuda")
    fn = lambda: kernel[(programs,)](q, k, v, o, n_kv, ITERS=iters, BM=bm, BN=bn, D=head_dim,  # noqa: E731
                                     num_warps=warps, num_stages=2)
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
    """FLOP/s of the backward's five matmuls on 128 K/V rows × 64 Q rows × d tiles, 8 warps (its default)."""
    kernel = _bwd_tile_kernel()
    bm, bn, n_q = 64, 128, 16
    programs = torch.cuda.get_device_properties(0).multi_processor_count
    q = torch.randn(n_q * bm, head_dim, dtype=dtype, device="cuda") * 0.05
    do = torch.randn(n_q * bm, head_dim, dtype=dtype, device="cuda") * 0.05
    k = torch.randn(bn, head_dim, dtype=dtype, device="cuda")
    v = torch.randn(bn, head_dim, dtype=dtype, device="cuda")
    out = torch.empty(programs * bn, head_dim, dtype=torch.float32, device="cuda")
    dq = torch.empty(programs * bm, head_dim, dtype=torch.float32, device="cuda")
    fn = lambda: kernel[(programs,)](q, do, k, v, out, dq, n_q, ITERS=iters, BM=bm, BN=bn, D=head_dim,  # noqa: E731
                                     num_warps=8, num_stages=2)
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


def load_latency(torch, nbytes: int, iters: int = 4096) -> float:
    """Seconds per dependent load over a random cycle through ``nbytes`` (one 128-byte line per hop).

    A buffer well inside the L2 (but past L1, which .cg skips) gives the L2 hit latency; one far
    larger than the L2 gives the DRAM latency (plus the TLB walks of a random walk over it).
    """
    import triton

    slots = nbytes // 128
    order = torch.randperm(slots, device="cuda")
    nxt = torch.zeros(slots * 16, dtype=torch.int64, device="cuda")  # an int64 every 128 bytes
    nxt[order * 16] = torch.roll(order, -1) * 16
    out = torch.zeros(1, dtype=torch.int64, device="cuda")
    kernel = _chase_kernel()
    kernel[(1,)](nxt, out, ITERS=iters, num_warps=1)
    t = triton.testing.do_bench(lambda: kernel[(1,)](nxt, out, ITERS=iters, num_warps=1), warmup=5, rep=30)
    return t * 1e-3 / iters


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
    import triton

    out = {}
    kernel = _atomic_kernel()
    for label, targets in (("atomic_shared", ctas // sharers), ("atomic_distinct", ctas)):
        buf = torch.zeros(targets * bm * d, dtype=torch.float32, device="cuda")
        run = lambda: kernel[(ctas,)](buf, targets, ITERS=iters, BM=bm, D=d, num_warps=4)  # noqa: E731
        run()
        t = triton.testing.do_bench(run, warmup=10, rep=50) * 1e-3
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
    torch = _torch()
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
        ("latency", lambda: {"latency_l2": load_latency(torch, 4 * 2**20),
                             "latency_dram": load_latency(torch, 2 * GiB)}),
    ]
    for label, step in steps:
        t0 = time.perf_counter()
        try:
            raw.update(step())
        except Exception as e:  # one failing microbenchmark leaves the others and the base values
            progress(f"{label}: failed: {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}")
        else:
            progress(f"{label}: done ({time.perf_counter() - t0:.1f} s)")
        torch.cuda.empty_cache()
    return raw


# --------------------------------------------------------------------------- the profile (pure)


def _si(field: dict, name: str) -> float:
    unit = field.get("unit")
    if unit not in UNIT_SCALE:
        raise ValueError(f"{name}: unit {unit!r} is not one of {', '.join(UNIT_SCALE)}")
    return float(field["value"]) * UNIT_SCALE[unit]


def calibrated_profile(base: dict, raw: dict, provenance: dict) -> tuple[dict, list[tuple]]:
    """A copy of ``base`` (a profile as read from YAML) with measured fields; and summary rows.

    A field whose measurement is missing from ``raw`` keeps its base value. A fraction a little
    above 1 (noise, up to MAX_FRACTION) is written as 1 with a note; one further above means the
    datasheet peak is not this GPU's, and the field keeps its base value (the row says NOT WRITTEN).
    """
    out = {k: v for k, v in base.items() if k != "calibration"}
    fields = {k: dict(v) for k, v in base["fields"].items()}
    source = f"measured: iosim calibrate, {provenance['gpu']}, {provenance['date']}"
    rows = []

    def put(name, value, unit, how):
        old = fields.get(name, {})
        if unit == "fraction" and value > MAX_FRACTION:
            rows.append((name, old.get("value"), None, unit, f"NOT WRITTEN: {value:.3f} of the datasheet peak "
                         f"(is the base profile for this GPU?); {how}"))
            return
        if unit == "fraction" and value > 1:
            how += f" (measured {value:.4f}, within noise of the peak: written as 1)"
            value = 1.0
        rows.append((name, old.get("value"), value, unit, how))
        fields[name] = {"value": round(value, 4), "unit": unit, "source": source, "note": how}

    if "dram_copy" in raw:
        peak = _si(fields["hbm_bandwidth"], "hbm_bandwidth")
        put("dram_efficiency", raw["dram_copy"] / peak, "fraction",
            f"device-to-device copy of 2 GiB, {raw['dram_copy'] / 1e12:.3f} TB/s (bytes read + written) "
            f"/ hbm_bandwidth {peak / 1e12:.3f} TB/s")
    if "l2_read" in raw:
        peak = _si(fields["l2_bandwidth"], "l2_bandwidth")
        put("l2_efficiency", raw["l2_read"] / peak, "fraction",
            f"every SM re-reading 8 MiB with .cg loads, {raw['l2_read'] / 1e12:.3f} TB/s / l2_bandwidth {peak / 1e12:.3f} TB/s")
    tiles = {k: v for k, v in raw.items() if k.startswith("tile_fp16")}
    if tiles:
        best = max(tiles, key=tiles.get)
        peak = _si(fields["tensor_flops_fp16"], "tensor_flops_fp16")
        put("tensor_efficiency", tiles[best] / peak, "fraction",
            f"Triton loop of S = Q K^T, O += P V on 128x64x{best.rsplit('_d', 1)[1]} fp16 tiles, "
            f"{tiles[best] / 1e12:.0f} TFLOP/s / tensor_flops_fp16 {peak / 1e12:.1f} TFLOP/s"
            + (f"; cuBLAS 8192^3 fp16 {raw['matmul_fp16'] / 1e12:.0f} TFLOP/s" if "matmul_fp16" in raw else ""))
    bwd = {k: v for k, v in raw.items() if k.startswith("tile_bwd_fp16")}
    if bwd:
        peak = _si(fields["tensor_flops_fp16"], "tensor_flops_fp16")
        put("tensor_efficiency_bwd", statistics.median(bwd.values()) / peak, "fraction",
            "Triton loop of FlashAttention-2 backward's five matmuls (128 K/V x 64 Q rows, 8 warps), fp16, "
            + ", ".join(f"d={k.rsplit('_d', 1)[1]}: {v / 1e12:.0f} TFLOP/s" for k, v in sorted(bwd.items()))
            + f"; median / tensor_flops_fp16 {peak / 1e12:.1f} TFLOP/s")
    if "launch_triton_empty" in raw:
        unit = fields.get("launch_overhead", {}).get("unit", "us")
        put("launch_overhead", raw["launch_triton_empty"] / UNIT_SCALE[unit], unit,
            "empty Triton kernels back to back behind torch.cuda._sleep (GPU-side cost, CPU launch cost hidden); "
            "median of 15 x 200 launches")
    if "atomic_shared" in raw:
        unit = fields.get("l2_atomic_bandwidth", {}).get("unit", "GB/s")
        put("l2_atomic_bandwidth", raw["atomic_shared"] / UNIT_SCALE[unit], unit,
            "fp32 tl.atomic_add of 64x64 tiles, 32 CTAs per target tile at once (FlashAttention-2 backward's dQ); "
            f"payload bytes / time; distinct targets: {raw.get('atomic_distinct', 0) / 1e9:.0f} GB/s")
    if "cta_load_bandwidth" in raw:
        unit = fields.get("cta_load_bandwidth", {}).get("unit", "GB/s")
        put("cta_load_bandwidth", raw["cta_load_bandwidth"] / UNIT_SCALE[unit], unit,
            "one 4-warp CTA loading fp32 tiles one after another (num_stages=1), 64 CTAs, tiles of 8 and 32 KiB: "
            f"slope of time per tile; intercept {raw['cta_load_latency'] * 1e9:.0f} ns")
    for key, name, where in (("latency_l2", "l2_latency", "4 MiB (in L2)"), ("latency_dram", "dram_latency", "2 GiB")):
        if key in raw:
            unit = fields.get(name, {}).get("unit", "ns")
            put(name, raw[key] / UNIT_SCALE[unit], unit,
                f"one thread chasing a random pointer cycle through {where}, 128-byte hops, .cg loads; "
                f"median time / 4096 hops")
    out["fields"] = fields
    out["calibration"] = dict(provenance, raw={k: float(f"{v:.6g}") for k, v in sorted(raw.items())},
                              raw_units="bytes/s for dram_*, l2_* and atomic_*, FLOP/s for matmul_* and tile_*, seconds for launch_* and latency_*")
    return out, rows


def summary(rows) -> str:
    lines = [f"{'field':<20} {'base':>10} {'measured':>10}  unit      how"]
    for name, old, new, unit, how in rows:
        old_s = "-" if old is None else f"{old:.4g}"
        new_s = "-" if new is None else f"{new:.4g}"
        lines.append(f"{name:<20} {old_s:>10} {new_s:>10}  {unit:<9} {how}")
    return "\n".join(lines)


def _provenance(torch) -> dict:
    import triton
    try:
        smi = subprocess.run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                             capture_output=True, text=True, timeout=30).stdout.strip().splitlines()
    except (OSError, subprocess.TimeoutExpired):
        smi = []
    return {"gpu": torch.cuda.get_device_name(), "driver": smi[0].strip() if smi else None,
            "cuda": torch.version.cuda, "torch": str(torch.__version__), "triton": str(triton.__version__),
            "date": datetime.now(timezone.utc).isoformat(timespec="seconds"), "command": list(getattr(sys, "orig_argv", sys.argv)),
            "hostname": socket.gethostname()}


def write_profile(profile: dict, path: Path) -> None:
    """Write the profile with ``iosim.profiles.write_profile`` (which validates it) when importable."""
    cal = profile["calibration"]
    comment = (f"Calibrated by python3 -m iosim.kernels.calibrate on {cal['gpu']}, {cal['date']}.\n"
               "Fields whose source starts with 'measured: iosim calibrate' were measured; the rest are the base profile's.")
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        from iosim.hardware.profile import write_profile as validated_write
    except ImportError:
        validated_write = None
    if validated_write is not None:
        validated_write(profile, path, comment=comment)
        return
    body = yaml.safe_dump(profile, sort_keys=False, default_flow_style=None, width=10_000, allow_unicode=True)
    path.write_text("".join(f"# {line}\n" for line in comment.splitlines()) + body)


def calibrate(base_profile_path, out_path, progress=print) -> dict:
    """Measure, write the calibrated profile to ``out_path``, print and return the summary rows."""
    torch = _torch()
    base = yaml.safe_load(Path(base_profile_path).read_text())
    provenance = _provenance(torch)
    models = re.findall(r"[A-Z]\d{3}", base.get("name", ""))
    if models and not any(m in provenance["gpu"] for m in models):
        progress(f"warning: {base_profile_path} describes {base.get('name')}, this GPU is {provenance['gpu']}")
    raw = run_all(progress)
    profile, rows = calibrated_profile(base, raw, provenance)
    write_profile(profile, Path(out_path))
    progress(summary(rows))
    return {"rows": rows, "raw": raw}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python3 -m iosim.kernels.calibrate", description=__doc__.splitlines()[0])
    parser.add_argument("--base", required=True, type=Path, help="the profile YAML to start from")
    parser.add_argument("--out", required=True, type=Path, help="where to write the calibrated profile YAML")
    args = parser.parse_args(argv)
    try:
        calibrate(args.base, args.out)
    except HarnessError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
