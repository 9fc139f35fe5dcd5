"""Which lines an SM's L1 keeps of a set it reads in a cycle larger than the L1: its replacement policy.

A kernel that spills reloads slots it stores again every pass; between two reloads of a slot the SM's whole spill
space goes through its L1. Under LRU every such reload misses once that space exceeds the L1; under random
replacement a line survives the ``F/C`` misses of a cycle with probability ``exp(-m·F/C)``, ``m`` the miss rate
(``m = 1 − exp(−m·F/C)``: half miss at ``F = 1.4·C``). iosim prices those reloads by LRU
(``iosim.costs.issue.rewritten_miss``); the counters of sglang's causal d = 64 prefill (168 KiB of frames an SM in
124 KiB of L1) say most of them hit, and random replacement would say so (its crossbar +39 % → +11 %), while our
d = 128 backward's crossbar is exact under LRU and 2 % short under random (session 55). This probe measures the
policy instead of choosing one.

Each of ``c`` CTAs an SM (``c · SMs`` CTAs, one wave) owns ``F/c`` bytes of a buffer and loads them ``passes``
times in order with plain loads (``ld.global``: LDG, cached in L1), under Nsight Compute (caches flushed before the
launch). Per launch: ``reuse_hit``, the L1 hit sectors over the loads after each line's first
(``l1tex__t_sectors_pipe_lsu_mem_global_op_ld_lookup_hit`` / (sectors · (passes − 1) / passes)), and the crossbar
bytes. ``F`` from 32 to 512 KiB an SM: LRU reads 1 up to the L1's size and 0 beyond it, random replacement falls
as ``exp(−m·F/C)``. The series runs three times (``SERIES``): as the loop alone (the driver then leaves 32 KiB of
shared memory on the H100, C = 224 KiB); with a 64 × 64 × 64 fp16 product after the loop, whose operand takes 8 KiB
of shared memory a CTA, for which the driver configures 132 KiB (C = 124 KiB, the L1 sglang's spilling kernel ran
with); and with a 16 × 512 × 64 product (80 KiB a CTA: Triton's launcher then asks for the largest carve-out,
228 KiB, C = 28 KiB, the L1 of our d = 128 backward and most kernels of more than 48 KiB), over sizes scaled to it.
The product comes after the loop, so it changes the carve-out and nothing the cycles see. Then the same cycles
through each thread's own local memory (``LOCAL_SERIES``: ``ld.local``, LDL, as a spilling kernel reloads its
registers; inline PTX, two CTAs an SM), at each carve-out, with the local loads' sectors and hits: whether the L1
keeps local lines as it keeps global ones; and again with each pass storing every word back as it loads it
(``LOCAL_REWRITE``), as a spilling loop stores its slots again every pass: the rows :func:`cycle_curve` turns into a
profile's ``l1_cycle_hits``; that one also as one CTA an SM of eight warps (``LOCAL_WIDE``). (Asking for a carve-out by ``cuFuncSetAttribute`` instead does nothing for a kernel of almost no
shared memory: run 3 on the H100 got 32 KiB whatever it asked.) Each launch records its carve-out
(``launch__shared_mem_config_size``), so C is read, not guessed.

    python -m iosim.kernels.l1_probe --out DIR    # runs ncu on itself; writes DIR/l1_probe.json

Napkin math: the largest launch reads 512 KiB × 132 SMs × 16 passes ≈ 1.1 GB from L1 and L2 (well under 1 ms); ncu's
start and replay dominate, under a second a launch, 175 launches (about 60 s on an H100).
"""
from __future__ import annotations

import functools
import json
import math
import re
import sys
from pathlib import Path

from iosim.kernels.device import cuda_torch
from iosim.kernels.l2_probe import FIELDS, FP32, device_info, launch_counters
from iosim.kernels.ncu import OPTIONAL_FIELDS
from iosim.kernels.profiler import NCU_TIMEOUT_S, probe_cli, profiled_launch, run_counter_probe

KiB = 1024
BLOCK = 1024  # fp32 a CTA loads a step: 4 KiB, 8 per thread of 4 warps (two 16-byte loads)
NUM_WARPS = 4
PASSES = 16
SIZES_KIB = (32, 64, 96, 128, 144, 160, 176, 192, 224, 256, 288, 320, 352, 384, 512)  # bytes an SM cycles through
CTAS_PER_SM = (1, 2)
SMALL_SIZES_KIB = (8, 16, 24, 32, 40, 48, 56, 64)  # for the largest carve-out's 28 KiB of L1
# (M, K, N) of the fp16 product after the loop (its operand's shared memory sets the carve-out), the sizes it runs
SERIES = (((0, 0, 0), SIZES_KIB), ((64, 64, 64), SIZES_KIB), ((16, 512, 64), SMALL_SIZES_KIB))
TAG = "l1-{}-{}-{}-p{}x{}x{}"  # NVTX range: CTAs an SM, bytes an SM, passes, the product (M, K, N)
# the same cycles through each thread's local memory (ld.local, as spilled registers are reloaded), two CTAs an SM,
# at each carve-out over the sizes where its hits fall
LOCAL_SERIES = (((0, 0, 0), (64, 128, 160, 192, 224, 256, 288, 320, 352, 384, 448, 512)),
                ((64, 64, 64), (32, 64, 96, 128, 144, 160, 176, 192, 224, 256, 320, 384, 512)),
                ((16, 512, 64), (8, 16, 24, 32, 40, 48, 64, 96)))
# each pass loads every word and stores it back (``rewrite``), as a spilling loop reloads the slots it stores again:
# whether stores that keep lines fresh change which ones the L1 keeps
LOCAL_REWRITE = (False, True)
LOCAL_CTAS = 2
# the stored-back cycle again as one CTA an SM of twice the warps (as a d = 128 backward of 8 warps runs): the same
# threads an SM in one CTA, whether the L1 keeps a CTA's frames as it keeps two CTAs' of half the warps
LOCAL_WIDE = (1, 8)  # (CTAs an SM, warps a CTA)
LOCAL_MIN_WORDS = 64  # a local array ptxas leaves in local memory (it promoted one of 8 words to registers)
LOCAL_TAG = "l1local-{}-{}-{}-p{}x{}x{}{}{}"  # ... "-rw" where each pass stores its words back, "-w<warps>" if not 4
_LOCAL_TAG_RE = re.compile(r"l1local-(\d+)-(\d+)-(\d+)-p(\d+x\d+x\d+)(-rw)?(?:-w(\d+))?")
LOCAL_METRICS = ("l1tex__t_sectors_pipe_lsu_mem_local_op_ld.sum", "l1tex__t_sectors_pipe_lsu_mem_local_op_ld_lookup_hit.sum")
# run 3 (H100, 2026-12-06) tagged the carve-out it asked for, "-k<percent>", which the driver ignored; runs 1-2 neither
_TAG_RE = re.compile(r"l1-(\d+)-(\d+)-(\d+)(?:-k(-?\d+))?(?:-p(\d+x\d+x\d+))?")
# the L1's global-load sectors and hits, and the carve-out the launch ran with (the L1 it left: 256 KiB less it on Hopper)
L1_FIELDS = ("l1_global_load_sectors", "l1_global_load_hit_sectors", "shared_mem_config_bytes")
PROBE_METRICS = ("l1tex__m_xbar2l1tex_read_bytes.sum", *(m for f in L1_FIELDS for m in OPTIONAL_FIELDS[f]), *LOCAL_METRICS)


@functools.cache
def _kernel():
    import triton
    import triton.language as tl

    @triton.jit
    def cycle(buf, out, tile, chunk, passes, BLOCK: tl.constexpr, TM: tl.constexpr, TK: tl.constexpr,
              TN: tl.constexpr):
        """CTA c: ``passes`` times, every element of its ``chunk`` of ``buf`` in order, by plain (L1-cached) loads;
        then, where ``TM``, the product of ``tile`` read as TM × TK and as TK × TN (shared memory for an operand)."""
        pid = tl.program_id(0)
        start = pid.to(tl.int64) * chunk
        offs = tl.arange(0, BLOCK)
        acc = tl.zeros([BLOCK], tl.float32)
        for _ in range(passes):
            for i in range(0, chunk, BLOCK):
                acc += tl.load(buf + start + i + offs)
        total = tl.sum(acc, axis=0)
        if TM:
            m, k, n = tl.arange(0, TM), tl.arange(0, TK), tl.arange(0, TN)
            a = tl.load(tile + m[:, None] * TK + k[None, :], cache_modifier=".cg")
            b = tl.load(tile + k[:, None] * TN + n[None, :], cache_modifier=".cg")
            total += tl.sum(tl.sum(tl.dot(a, b), axis=1), axis=0)
        tl.store(out + pid, total)  # keeps the loads alive

    return cycle


def local_asm(words: int, passes: int, rewrite: bool = False) -> str:
    """PTX for one thread: store ``words`` 32-bit words of a local array (at places the compiler cannot know: offset by
    ``$2``, a zero read from memory, which the count adds to as well), then load them in order ``passes`` times, summing
    into ``$0`` (from ``$1``); with ``rewrite`` each load's word is stored back changed (the running sum) as it is read.
    The array lives in the thread's local memory, as spilled registers do, and is read by ``ld.local`` (LDL); it is
    declared at least ``LOCAL_MIN_WORDS`` long (ptxas keeps a smaller one in registers), only ``words`` of it touched."""
    if words < 1 or passes < 1:
        raise ValueError(f"words(={words}) and passes(={passes}) must be >= 1")
    return f"""{{
.local .align 16 .b32 fr[{max(words, LOCAL_MIN_WORDS)}];
.reg .u32 %ci, %cp, %cx, %ca, %cn;
.reg .u64 %cb, %cd;
.reg .pred %cq;
mov.u64 %cb, fr;
mov.u32 %ca, $1;
add.u32 %cn, $2, {words};
mov.u32 %ci, 0;
LI${{:uid}}:
add.u32 %cx, %ci, $2;
rem.u32 %cx, %cx, %cn;
mul.wide.u32 %cd, %cx, 4;
add.u64 %cd, %cd, %cb;
mad.lo.u32 %cx, %ci, $2, $1;
st.local.u32 [%cd], %cx;
add.u32 %ci, %ci, 1;
setp.lt.u32 %cq, %ci, %cn;
@%cq bra LI${{:uid}};
mov.u32 %cp, 0;
LP${{:uid}}:
mov.u32 %ci, 0;
LL${{:uid}}:
mul.wide.u32 %cd, %ci, 4;
add.u64 %cd, %cd, %cb;
ld.local.u32 %cx, [%cd];
add.u32 %ca, %ca, %cx;
{"st.local.u32 [%cd], %ca;" + chr(10) if rewrite else ""}add.u32 %ci, %ci, 1;
setp.lt.u32 %cq, %ci, %cn;
@%cq bra LL${{:uid}};
add.u32 %cp, %cp, 1;
setp.lt.u32 %cq, %cp, {passes};
@%cq bra LP${{:uid}};
mov.u32 $0, %ca;
}}"""


@functools.cache
def _local_kernel():
    import triton
    import triton.language as tl

    @triton.jit
    def local_cycle(out, zero, tile, ASM: tl.constexpr, THREADS: tl.constexpr, TM: tl.constexpr, TK: tl.constexpr,
                    TN: tl.constexpr):
        """Each thread: ``ASM`` (:func:`local_asm`) over its own local array; then, where ``TM``, :func:`_kernel`'s
        product (shared memory, which sets the carve-out)."""
        pid = tl.program_id(0)
        t = tl.arange(0, THREADS)
        z = tl.load(zero + t)
        r = tl.inline_asm_elementwise(ASM, "=r,r,r", [(t + pid).to(tl.int32), z], dtype=tl.int32, is_pure=False,
                                      pack=1)
        if TM:
            m, k, n = tl.arange(0, TM), tl.arange(0, TK), tl.arange(0, TN)
            a = tl.load(tile + m[:, None] * TK + k[None, :], cache_modifier=".cg")
            b = tl.load(tile + k[:, None] * TN + n[None, :], cache_modifier=".cg")
            r += tl.sum(tl.sum(tl.dot(a, b), axis=1), axis=0).to(tl.int32)
        tl.store(out + pid * THREADS + t, r)

    return local_cycle


def run_local(out, zero, sm_bytes: int, ctas_per_sm: int, sms: int, passes: int, tile=None,
              product: tuple = (0, 0, 0), rewrite: bool = False, warps: int = NUM_WARPS):
    """One launch of the local-memory cycle: ``ctas_per_sm · sms`` CTAs of ``warps`` warps, each thread over its
    share of ``sm_bytes`` an SM (whole 32-bit words), ``passes`` times (storing each word back: ``rewrite``), then the
    product (see :func:`run`)."""
    threads = 32 * warps
    words = sm_bytes // (ctas_per_sm * threads * 4)
    ctas = ctas_per_sm * sms
    if out.numel() < ctas * threads or zero.numel() < threads:
        raise ValueError(f"out.numel()(={out.numel()}) must be >= {ctas * threads} and zero.numel()(={zero.numel()}) "
                         f">= {threads}")
    tm, tk, tn = _checked_product(tile, product)
    return _local_kernel()[(ctas,)](out, zero, zero if tile is None else tile, ASM=local_asm(words, passes, rewrite),
                                    THREADS=threads, TM=tm, TK=tk, TN=tn, num_warps=warps)


def chunk_elems(sm_bytes: int, ctas_per_sm: int) -> int:
    """fp32 elements each of ``ctas_per_sm`` CTAs cycles through for ``sm_bytes`` an SM: a whole number of BLOCKs."""
    if sm_bytes < 1 or ctas_per_sm < 1:
        raise ValueError(f"sm_bytes(={sm_bytes}) and ctas_per_sm(={ctas_per_sm}) must be >= 1")
    per = -(-sm_bytes // (FP32 * ctas_per_sm))
    return -(-per // BLOCK) * BLOCK


def run(buf, out, chunk: int, ctas: int, passes: int, tile=None, product: tuple = (0, 0, 0)):
    """One launch: ``ctas`` CTAs, each over its ``chunk`` elements of ``buf``, ``passes`` times; with ``product``
    (M, K, N, powers of two, M, K and N >= 16) each then multiplies fp16 ``tile`` read as M × K by it read as K × N,
    which takes shared memory (see the module's doc)."""
    if chunk % BLOCK or chunk < BLOCK:
        raise ValueError(f"chunk(={chunk}) must be a positive multiple of BLOCK(={BLOCK})")
    if chunk * ctas > buf.numel() or ctas > out.numel():
        raise ValueError(f"buf.numel()(={buf.numel()}) must be >= chunk × ctas (={chunk * ctas}) and "
                         f"out.numel()(={out.numel()}) >= ctas(={ctas})")
    tm, tk, tn = _checked_product(tile, product)
    return _kernel()[(ctas,)](buf, out, buf if tile is None else tile, chunk, passes, BLOCK=BLOCK, TM=tm, TK=tk, TN=tn,
                              num_warps=NUM_WARPS)


def _checked_product(tile, product: tuple) -> tuple:
    """``product`` (M, K, N) where it is none (0s) or powers of two >= 16 that ``tile`` holds; else a ValueError."""
    tm, tk, tn = product
    if tm and any(x < 16 or x & (x - 1) for x in product):
        raise ValueError(f"product(={product}) must be 0s or powers of two >= 16")
    if tm and (tile is None or tile.numel() < max(tm * tk, tk * tn)):
        raise ValueError(f"tile must hold max(M·K, K·N) = {max(tm * tk, tk * tn)} elements for product(={product})")
    return product


def _tile(torch, product: tuple):
    """Random fp16 operands for ``product`` on the GPU (None: no product)."""
    tm, tk, tn = product
    return torch.randn(max(tm * tk, tk * tn), dtype=torch.float16, device="cuda") if tm else None


def child() -> int:
    """Runs under ncu: every launch warmed up outside the profiled range, then one profiled and tagged."""
    torch = cuda_torch()
    sms = torch.cuda.get_device_properties(0).multi_processor_count
    buf = torch.rand(sms * max(SIZES_KIB) * KiB // FP32 + BLOCK * max(CTAS_PER_SM), dtype=torch.float32, device="cuda")
    out = torch.empty(sms * max(CTAS_PER_SM), dtype=torch.float32, device="cuda")
    for product, sizes in SERIES:
        tile = _tile(torch, product)
        for c in CTAS_PER_SM:
            for kib in sizes:
                chunk = chunk_elems(kib * KiB, c)
                profiled_launch(torch, TAG.format(c, kib * KiB, PASSES, *product),
                                lambda chunk=chunk, c=c, tile=tile, product=product:
                                run(buf, out, chunk, c * sms, PASSES, tile, product))
    shapes = [(rewrite, LOCAL_CTAS, NUM_WARPS) for rewrite in LOCAL_REWRITE] + [(True, *LOCAL_WIDE)]
    words_out = torch.empty(max(c * w for _, c, w in shapes) * sms * 32, dtype=torch.int32, device="cuda")
    zero = torch.zeros(32 * max(w for _, _, w in shapes), dtype=torch.int32, device="cuda")
    for rewrite, ctas, warps in shapes:
        for product, sizes in LOCAL_SERIES:
            tile = _tile(torch, product)
            for kib in sizes:
                tag = LOCAL_TAG.format(ctas, kib * KiB, PASSES, *product, "-rw" * rewrite,
                                       "" if warps == NUM_WARPS else f"-w{warps}")
                profiled_launch(torch, tag, lambda kib=kib, tile=tile, product=product, rewrite=rewrite, ctas=ctas,
                                warps=warps: run_local(words_out, zero, kib * KiB, ctas, sms, PASSES, tile, product,
                                                       rewrite, warps))
    return 0


def policies(sm_bytes: float, l1_bytes: float) -> dict:
    """Reuse hit rates of a cycle of ``sm_bytes`` through ``l1_bytes`` of L1: LRU's (1 or 0) and random replacement's
    (``exp(−m·F/C)`` with ``m = 1 − exp(−m·F/C)``, 1 where the cycle fits)."""
    r = sm_bytes / l1_bytes
    if r <= 1.0:
        return {"lru": 1.0, "random": 1.0}
    m = 1.0
    for _ in range(200):  # the fixed point other than 0, which exists where r > 1
        m = 1.0 - math.exp(-m * r)
    return {"lru": 0.0, "random": 1.0 - m}


def derive(ctas_per_sm: int, sm_bytes: int, passes: int, row: dict, carveout_pct: int | None = None,
           product: str = "", loads: str = "global") -> dict:
    """A launch's L1 hit rate over the loads that could hit (each line's first load cannot), of its ``loads``
    (``global`` or ``local``), with the carve-out run 3 asked for (None: not asked) and the product after its loop
    ("MxKxN"; "": none)."""
    sectors, hits = row.get(f"l1_{loads}_load_sectors"), row.get(f"l1_{loads}_load_hit_sectors")
    reusable = None if not sectors else sectors * (passes - 1) / passes
    return {"ctas_per_sm": ctas_per_sm, "sm_bytes": sm_bytes, "passes": passes, "carveout_pct": carveout_pct,
            "product": product, "reuse_hit": None if not reusable or hits is None else hits / reusable}


def cycle_curve(datasets: list[dict], l1_bytes: int, loads: str = "local", rewrite: bool = False,
                ctas_per_sm: int = LOCAL_CTAS, warps: int = NUM_WARPS) -> list[list]:
    """A profile's ``l1_cycle_hits`` rows from probe runs: ``[L1 KiB, F / C, hit share]`` for each L1 size C (``l1_bytes``
    less the launch's carve-out) and cycle F an SM of ``loads`` (``rewrite``: the local cycle that stores its words back
    every pass) at ``ctas_per_sm`` CTAs of ``warps``, the mean over ``datasets`` (each a probe's ``l1_probe.json``), rounded to 3 places.
    The share: of a local cycle's loads, all of them (its lines were stored just before its first pass, as a spill
    frame's are: hits over sectors); of a global cycle's, those after its first pass (:func:`derive`); at most 1."""
    got: dict = {}
    for data in datasets:
        for r in data["results"]:
            if (r.get("loads", "global") != loads or bool(r.get("rewrite")) != rewrite
                    or r["ctas_per_sm"] != ctas_per_sm or r.get("warps", NUM_WARPS) != warps
                    or not r.get("shared_mem_config_bytes")):
                continue
            if loads == "local":
                sectors, hits = r.get("l1_local_load_sectors"), r.get("l1_local_load_hit_sectors")
                share = None if not sectors or hits is None else hits / sectors
            else:
                share = r["reuse_hit"]
            if share is not None:
                l1 = l1_bytes - int(r["shared_mem_config_bytes"])
                got.setdefault((l1, r["sm_bytes"]), []).append(min(1.0, share))
    return [[l1 // KiB, round(f / l1, 3), round(sum(v) / len(v), 3)] for (l1, f), v in sorted(got.items())]


def results(rows: list[dict]) -> list[dict]:
    """One row per launch, by (CTAs an SM, bytes an SM), from parsed ncu rows by their NVTX tags."""
    out = []
    for row in rows:
        words = re.split(r"[:\s\"]", row["nvtx"])
        local = next((m for m in map(_LOCAL_TAG_RE.fullmatch, words) if m), None)
        if local is not None:
            c, size, passes = (int(g) for g in local.groups()[:3])
            values, ctas = launch_counters(row, FIELDS + L1_FIELDS)
            values = {**values, "l1_local_load_sectors": row.get(LOCAL_METRICS[0]),
                      "l1_local_load_hit_sectors": row.get(LOCAL_METRICS[1])}
            product = "" if local[4] == "0x0x0" else local[4]
            out.append({**derive(c, size, passes, values, None, product, "local"), "loads": "local",
                        "rewrite": local[5] is not None, "warps": int(local[6] or NUM_WARPS), "ctas": ctas, **values})
            continue
        m = next((m for m in map(_TAG_RE.fullmatch, words) if m), None)
        if m is None:
            continue
        c, size, passes = (int(g) for g in m.groups()[:3])
        pct = None if m[4] is None else int(m[4])
        values, ctas = launch_counters(row, FIELDS + L1_FIELDS)
        product = "" if m[5] in (None, "0x0x0") else m[5]
        out.append({**derive(c, size, passes, values, pct, product), "loads": "global", "ctas": ctas, **values})
    return sorted(out, key=lambda r: (r["loads"], r.get("rewrite", False), r.get("warps", NUM_WARPS), r["product"],
                                      -2 if r["carveout_pct"] is None else r["carveout_pct"], r["ctas_per_sm"],
                                      r["sm_bytes"]))


def probe(out_dir: Path, timeout_s: float = NCU_TIMEOUT_S) -> dict:
    """Run the probe under ncu, write ``out_dir/l1_probe.json`` (and ncu's log and raw CSV), return the data."""
    torch = cuda_torch()
    keep, missing, prov, rows = run_counter_probe("iosim.kernels.l1_probe", "l1_probe", out_dir, PROBE_METRICS,
                                                  "L1 probe", timeout_s)
    data = {"provenance": prov, "device": device_info(torch), "metrics": keep, "metrics_missing": missing,
            "block": BLOCK, "num_warps": NUM_WARPS, "passes": PASSES, "results": results(rows)}
    (out_dir / "l1_probe.json").write_text(json.dumps(data, indent=1) + "\n")
    return data


def report(data: dict) -> list[str]:
    """Each launch's reuse hit rate and crossbar bytes an SM-pass."""
    sms = (data.get("device") or {}).get("sm_count") or 1
    lines = []
    for r in data["results"]:
        hit = "n/a" if r["reuse_hit"] is None else f"{r['reuse_hit']:.3f}"
        xbar = r.get("xbar_read_bytes")
        per = "n/a" if xbar is None else f"{xbar / (sms * r['passes'] * r['sm_bytes']):.3f}"
        cfg = r.get("shared_mem_config_bytes")
        got = "n/a" if cfg is None else f"{cfg / KiB:.0f} KiB"
        loads = r.get("loads", "global") + ("+st" if r.get("rewrite") else "") + (
            f" w{r['warps']}" if r.get("warps", NUM_WARPS) != NUM_WARPS else "")
        lines.append(f"{loads:8s} product {r.get('product') or 'none':>9} (carve-out {got}) {r['ctas_per_sm']} CTA/SM {r['sm_bytes'] // KiB:>4} KiB/SM x "
                     f"{r['passes']} passes: L1 reuse hit {hit}, crossbar {per} of the bytes a pass")
    return lines


def main(argv=None) -> int:
    return probe_cli(argv, "python -m iosim.kernels.l1_probe", __doc__, "l1_probe", child, probe, report)


if __name__ == "__main__":
    sys.exit(main())
