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
as ``exp(−m·F/C)``. The series runs twice: as the loop alone (the driver then leaves 32 KiB of shared memory on the
H100, C = 224 KiB), and with a 64 × 64 fp16 product after the loop (``SMEM_TILE``), whose operands take 16 KiB of
shared memory a CTA, as a kernel of 8-48 KiB a CTA does, for which the driver configures 132 KiB (C = 124 KiB, the
L1 sglang's spilling kernel ran with); the product comes after the loop, so it changes the carve-out and nothing
the cycles see. (Asking for a carve-out by ``cuFuncSetAttribute`` instead does nothing for a kernel of almost no
shared memory: run 3 on the H100 got 32 KiB whatever it asked.) Each launch records its carve-out
(``launch__shared_mem_config_size``), so C is read, not guessed.

    python -m iosim.kernels.l1_probe --out DIR    # runs ncu on itself; writes DIR/l1_probe.json

Napkin math: the largest launch reads 512 KiB × 132 SMs × 16 passes ≈ 1.1 GB from L1 and L2 (well under 1 ms); ncu's
start and replay dominate, under a second a launch, 30 launches a series.
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
SMEM_TILES = (0, 64)  # the side of the fp16 product after the loop (0: none): its operands' shared memory sets C
TAG = "l1-{}-{}-{}-s{}"  # NVTX range: CTAs an SM, bytes an SM, passes, SMEM_TILE
# run 3 (H100, 2026-12-06) tagged the carve-out it asked for, "-k<percent>", which the driver ignored; runs 1-2 neither
_TAG_RE = re.compile(r"l1-(\d+)-(\d+)-(\d+)(?:-k(-?\d+))?(?:-s(\d+))?")
# the L1's global-load sectors and hits, and the carve-out the launch ran with (the L1 it left: 256 KiB less it on Hopper)
L1_FIELDS = ("l1_global_load_sectors", "l1_global_load_hit_sectors", "shared_mem_config_bytes")
PROBE_METRICS = ("l1tex__m_xbar2l1tex_read_bytes.sum", *(m for f in L1_FIELDS for m in OPTIONAL_FIELDS[f]))


@functools.cache
def _kernel():
    import triton
    import triton.language as tl

    @triton.jit
    def cycle(buf, out, tile, chunk, passes, BLOCK: tl.constexpr, SMEM_TILE: tl.constexpr):
        """CTA c: ``passes`` times, every element of its ``chunk`` of ``buf`` in order, by plain (L1-cached) loads;
        then, where ``SMEM_TILE``, the product of the fp16 ``tile`` with itself (shared memory for its operands)."""
        pid = tl.program_id(0)
        start = pid.to(tl.int64) * chunk
        offs = tl.arange(0, BLOCK)
        acc = tl.zeros([BLOCK], tl.float32)
        for _ in range(passes):
            for i in range(0, chunk, BLOCK):
                acc += tl.load(buf + start + i + offs)
        total = tl.sum(acc, axis=0)
        if SMEM_TILE:
            r = tl.arange(0, SMEM_TILE)
            a = tl.load(tile + r[:, None] * SMEM_TILE + r[None, :], cache_modifier=".cg")
            total += tl.sum(tl.sum(tl.dot(a, a), axis=1), axis=0)
        tl.store(out + pid, total)  # keeps the loads alive

    return cycle


def chunk_elems(sm_bytes: int, ctas_per_sm: int) -> int:
    """fp32 elements each of ``ctas_per_sm`` CTAs cycles through for ``sm_bytes`` an SM: a whole number of BLOCKs."""
    if sm_bytes < 1 or ctas_per_sm < 1:
        raise ValueError(f"sm_bytes(={sm_bytes}) and ctas_per_sm(={ctas_per_sm}) must be >= 1")
    per = -(-sm_bytes // (FP32 * ctas_per_sm))
    return -(-per // BLOCK) * BLOCK


def run(buf, out, chunk: int, ctas: int, passes: int, tile=None):
    """One launch: ``ctas`` CTAs, each over its ``chunk`` elements of ``buf``, ``passes`` times; with ``tile`` (a
    square fp16 matrix) each then multiplies it by itself, which takes shared memory (see the module's doc)."""
    if chunk % BLOCK or chunk < BLOCK:
        raise ValueError(f"chunk(={chunk}) must be a positive multiple of BLOCK(={BLOCK})")
    if chunk * ctas > buf.numel() or ctas > out.numel():
        raise ValueError(f"buf.numel()(={buf.numel()}) must be >= chunk × ctas (={chunk * ctas}) and "
                         f"out.numel()(={out.numel()}) >= ctas(={ctas})")
    side = 0 if tile is None else tile.shape[0]
    if tile is not None and (tile.dim() != 2 or tile.shape[1] != side or side < 16 or side & (side - 1)):
        raise ValueError(f"tile.shape(={tuple(tile.shape)}) must be square, a power of two >= 16 a side")
    return _kernel()[(ctas,)](buf, out, buf if tile is None else tile, chunk, passes, BLOCK=BLOCK, SMEM_TILE=side,
                              num_warps=NUM_WARPS)


def child() -> int:
    """Runs under ncu: every launch warmed up outside the profiled range, then one profiled and tagged."""
    torch = cuda_torch()
    sms = torch.cuda.get_device_properties(0).multi_processor_count
    buf = torch.rand(sms * max(SIZES_KIB) * KiB // FP32 + BLOCK * max(CTAS_PER_SM), dtype=torch.float32, device="cuda")
    out = torch.empty(sms * max(CTAS_PER_SM), dtype=torch.float32, device="cuda")
    for side in SMEM_TILES:
        tile = torch.randn(side, side, dtype=torch.float16, device="cuda") if side else None
        for c in CTAS_PER_SM:
            for kib in SIZES_KIB:
                chunk = chunk_elems(kib * KiB, c)
                profiled_launch(torch, TAG.format(c, kib * KiB, PASSES, side),
                                lambda chunk=chunk, c=c, tile=tile: run(buf, out, chunk, c * sms, PASSES, tile))
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
           smem_tile: int = 0) -> dict:
    """A launch's L1 hit rate over the loads that could hit (each line's first load cannot), with the carve-out run 3
    asked for (None: not asked) and the side of the product after its loop (0: none)."""
    sectors, hits = row.get("l1_global_load_sectors"), row.get("l1_global_load_hit_sectors")
    reusable = None if not sectors else sectors * (passes - 1) / passes
    return {"ctas_per_sm": ctas_per_sm, "sm_bytes": sm_bytes, "passes": passes, "carveout_pct": carveout_pct,
            "smem_tile": smem_tile, "reuse_hit": None if not reusable or hits is None else hits / reusable}


def results(rows: list[dict]) -> list[dict]:
    """One row per launch, by (CTAs an SM, bytes an SM), from parsed ncu rows by their NVTX tags."""
    out = []
    for row in rows:
        m = next((m for m in map(_TAG_RE.fullmatch, re.split(r"[:\s\"]", row["nvtx"])) if m), None)
        if m is None:
            continue
        c, size, passes = (int(g) for g in m.groups()[:3])
        pct = None if m[4] is None else int(m[4])
        values, ctas = launch_counters(row, FIELDS + L1_FIELDS)
        out.append({**derive(c, size, passes, values, pct, int(m[5] or 0)), "ctas": ctas, **values})
    return sorted(out, key=lambda r: (r["smem_tile"], -2 if r["carveout_pct"] is None else r["carveout_pct"],
                                      r["ctas_per_sm"], r["sm_bytes"]))


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
        lines.append(f"product {r.get('smem_tile') or 0:>3} (carve-out {got}) {r['ctas_per_sm']} CTA/SM {r['sm_bytes'] // KiB:>4} KiB/SM x "
                     f"{r['passes']} passes: L1 reuse hit {hit}, crossbar {per} of the bytes a pass")
    return lines


def main(argv=None) -> int:
    return probe_cli(argv, "python -m iosim.kernels.l1_probe", __doc__, "l1_probe", child, probe, report)


if __name__ == "__main__":
    sys.exit(main())
