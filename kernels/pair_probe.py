"""Do CTAs that read the same tiles in lockstep stay together? Groups of CTAs over loops of growing length.

FlashAttention-2's forward in rows order launches the Q blocks of one head one after another, so neighbouring CTAs
read the same K/V tiles in the same order. Hopper's L2 request coalescer merges identical reads that arrive together
(``lrc_probe``: a pair reading one cold buffer costs one lookup); over a long loop a group may drift apart and its
reads stop merging. Measured on our flash2 in rows order (``h200`` set): 0.52 lookups a load at N = 4K, 0.70 at 8K,
0.86 at 32K. This probe measures the drift on the calibration's own tile loop (FlashAttention-2's online softmax, as
``microbench.tile_mma``), not on an attention kernel, at ``ITERS_SERIES`` passes:

- ``g1`` to ``g32``: CTAs ``g·c`` to ``g·c + g − 1`` read tiles ``(c + i) mod N_KV`` (``g1``: every CTA its own
  sequence, each tile read by its neighbour a pass later: what the calibration does);
- ``far2``: CTA ``c`` and ``c + G/2`` of ``G`` share a sequence: launched together, half a grid apart;
- ``g2_waves``, ``g8_waves``, ``g32_waves``: that group on ``WAVES`` × the CTAs at ``ITERS / WAVES`` passes each, later
  groups starting as slots free.

One wave is a shape's CTAs an SM, all resident; K/V (``N_KV`` tiles) stay in the L2 (not in L1). Under ncu
(L2 flushed before each launch) each launch gives crossbar read bytes, L2 lookup read sectors, LRC sectors out, DRAM
read bytes and duration. Without ncu, the ``g2`` launches again with every CTA stamping ``%globaltimer`` at its start
and after its last product: how far apart the two ends of each pair are (``pair_end_gap_ns``).

    python -m iosim.kernels.pair_probe --out DIR     # runs ncu on itself; writes DIR/pair_probe.json
"""
from __future__ import annotations

import json
import math
import statistics
import sys
from pathlib import Path

from iosim.kernels.device import cuda_torch
from iosim.kernels.ncu import BASE_METRICS, kernel_counters, parse_ncu_raw_csv
from iosim.kernels.profiler import metrics_for, probe_cli, profiled_launch, require_ncu, run_probe

# (block_m, block_n, d, warps, stages, CTAs an SM): flash2's forward defaults, as many CTAs an SM as their registers
# allow (190 a thread at d = 64, 138 at 128 with 8 warps: Triton 3.9's code for sm_90)
SHAPES = ((128, 64, 64, 4, 2, 2), (128, 64, 128, 8, 2, 1))
ITERS_SERIES = (16, 32, 64, 128, 256, 512, 1024, 2048)
VARIANTS = ("g1", "g2", "g4", "g8", "g16", "g32", "far2", "g2_waves", "g8_waves", "g32_waves")
WAVES = 8
N_KV = 512  # K/V tiles (8 MiB at d = 64, 16 at 128): L2-resident, far more than an SM's L1
TAG = "pair-{}-{}-{}-{}"  # NVTX range: d, variant, iters, ctas
PROBE_FIELDS = ("xbar_read_bytes", "l2_lookup_read_sectors", "lrc_out_sectors", "dram_read_bytes", "duration_s")
PROBE_METRICS = ("l1tex__m_xbar2l1tex_read_bytes.sum", "lts__t_sectors_srcunit_tex_op_read.sum")


def _kernel():
    import triton
    import triton.language as tl

    from iosim.kernels.microbench import _ptx

    _, globaltimer, _ = _ptx()

    @triton.jit
    def group_tiles(Q, K, V, O, STAMPS, N_KV, qk_scale, GROUP, PARTNER, ITERS: tl.constexpr, BM: tl.constexpr,
                    BN: tl.constexpr, D: tl.constexpr, RECORD_TIME: tl.constexpr = False):
        """``microbench.tile_mma`` with its softmax, the tile of pass i being (c + i) mod N_KV, where c is
        pid // GROUP, or pid mod PARTNER where PARTNER > 0 (CTA pid and pid + PARTNER share a sequence)."""
        pid = tl.program_id(0)
        if RECORD_TIME:
            one = tl.arange(0, 1)
            t_start = globaltimer(one)
        if PARTNER > 0:
            c = pid % PARTNER
        else:
            c = pid // GROUP
        rm, rn, rd = tl.arange(0, BM), tl.arange(0, BN), tl.arange(0, D)
        q = tl.load(Q + rm[:, None] * D + rd[None, :])
        acc = tl.zeros([BM, D], tl.float32)
        m_i = tl.full([BM], float("-inf"), tl.float32)
        l_i = tl.zeros([BM], tl.float32)
        for i in range(ITERS):
            j = (c + i) % N_KV
            k = tl.load(K + j * BN * D + rn[:, None] * D + rd[None, :])
            v = tl.load(V + j * BN * D + rn[:, None] * D + rd[None, :])
            s = tl.dot(q, tl.trans(k)) * qk_scale
            m_new = tl.maximum(m_i, tl.max(s, axis=1))
            p = tl.exp2(s - m_new[:, None])
            alpha = tl.exp2(m_i - m_new)
            l_i = l_i * alpha + tl.sum(p, axis=1)
            acc = tl.dot(p.to(v.dtype), v, acc * alpha[:, None])
            m_i = m_new
        acc = acc / l_i[:, None]
        tl.store(O + pid * BM * D + rm[:, None] * D + rd[None, :], acc)
        if RECORD_TIME:
            t_end = globaltimer(tl.sum(tl.sum(acc, 1), 0).to(tl.int32) + tl.zeros([1], tl.int32))
            tl.store(STAMPS + 2 * pid + one, t_start)
            tl.store(STAMPS + 2 * pid + 1 + one, t_end)

    return group_tiles


def layout(variant: str, iters: int, sms: int, per_sm: int) -> tuple[int, int, int, int]:
    """(CTAs, passes each, GROUP, PARTNER) of ``variant`` at ``iters`` passes on ``sms`` SMs of ``per_sm`` CTAs."""
    ctas = per_sm * sms
    if variant == "far2":
        return ctas, iters, 1, ctas // 2
    group = int(variant.split("_")[0].removeprefix("g"))
    if variant.endswith("_waves"):
        return WAVES * ctas, max(1, iters // WAVES), group, 0
    return ctas, iters, group, 0


def _inputs(torch, bm, bn, d):
    q = torch.randn(bm, d, dtype=torch.float16, device="cuda")
    k = torch.randn(N_KV * bn, d, dtype=torch.float16, device="cuda") * 0.05
    v = torch.randn(N_KV * bn, d, dtype=torch.float16, device="cuda")
    return q, k, v


def _launcher(torch, kernel, shape, variant, iters, sms, stamps=None):
    bm, bn, d, warps, stages, per_sm = shape
    ctas, passes, group, partner = layout(variant, iters, sms, per_sm)
    q, k, v = _inputs(torch, bm, bn, d)
    o = torch.empty(ctas * bm, d, dtype=torch.float32, device="cuda")
    st = stamps if stamps is not None else torch.empty(1, dtype=torch.int64, device="cuda")
    scale = 1.4426950408889634 / math.sqrt(d)

    def launch():
        kernel[(ctas,)](q, k, v, o, st, N_KV, scale, group, partner, ITERS=passes, BM=bm, BN=bn, D=d,
                        RECORD_TIME=stamps is not None, num_warps=warps, num_stages=stages)
    return launch, ctas, passes


def child() -> int:
    """Runs under ncu: every (shape, variant, iters) once to warm up, then once profiled and tagged."""
    torch = cuda_torch()
    kernel = _kernel()
    sms = torch.cuda.get_device_properties(0).multi_processor_count
    for shape in SHAPES:
        for variant in VARIANTS:
            for iters in ITERS_SERIES:
                launch, ctas, _ = _launcher(torch, kernel, shape, variant, iters, sms)
                profiled_launch(torch, TAG.format(shape[2], variant, iters, ctas), launch)
    return 0


def stamps(torch, reps: int = 3) -> dict:
    """``{d: {iters: {...}}}``: each ``g2`` pair's end-time gap (median and 90th percentile over pairs, the median
    over ``reps`` launches) and the spread of the CTAs' starts, from ``%globaltimer`` stamps (no ncu)."""
    kernel = _kernel()
    sms = torch.cuda.get_device_properties(0).multi_processor_count
    out: dict = {}
    for shape in SHAPES:
        for iters in ITERS_SERIES:
            ctas = shape[5] * sms
            buf = torch.zeros(2 * ctas, dtype=torch.int64, device="cuda")
            launch, _, _ = _launcher(torch, kernel, shape, "g2", iters, sms, stamps=buf)
            launch()
            gaps, p90, starts, spans = [], [], [], []
            for _ in range(reps):
                launch()
                torch.cuda.synchronize()
                t = buf.view(ctas, 2).cpu().tolist()
                g = sorted(abs(t[2 * c][1] - t[2 * c + 1][1]) for c in range(ctas // 2))
                gaps.append(statistics.median(g))
                p90.append(g[int(0.9 * (len(g) - 1))])
                starts.append(max(s for s, _ in t) - min(s for s, _ in t))
                spans.append(max(e for _, e in t) - min(s for s, _ in t))
            out.setdefault(shape[2], {})[iters] = {
                "pair_end_gap_ns": statistics.median(gaps), "pair_end_gap_p90_ns": statistics.median(p90),
                "start_spread_ns": statistics.median(starts), "span_ns": statistics.median(spans)}
    return out


def results(rows: list[dict]) -> dict:
    """``{d: {variant: {iters: {field: value}}}}`` from the parsed ncu rows, by their NVTX tags."""
    out: dict = {}
    for row in rows:
        tag = next((t for t in row["nvtx"].split(":") if t.startswith("pair-")), None)
        if tag is None:
            continue
        _, d, variant, iters, ctas = tag.split("-")
        counters = kernel_counters(row)
        entry = {f: getattr(counters, f) for f in PROBE_FIELDS}
        shape = next(s for s in SHAPES if s[2] == int(d))
        sms = int(ctas) // (WAVES if variant.endswith("_waves") else 1) // shape[5]
        passes = layout(variant, int(iters), sms, shape[5])[1]
        entry.update(ctas=int(ctas), passes=passes, loaded_bytes=int(ctas) * passes * 2 * shape[1] * shape[2] * 2)
        out.setdefault(int(d), {}).setdefault(variant, {})[int(iters)] = entry
    return out


def probe(out_dir: Path, timeout_s: float = 420) -> dict:
    """The timestamps, then the probe under ncu; writes ``out_dir/pair_probe.json`` (and ncu's log and CSV)."""
    ncu = require_ncu("pair probe")
    from iosim.kernels.harness import provenance

    torch = cuda_torch()
    stamped = stamps(torch)
    metrics, missing = metrics_for(ncu)
    keep = [m for m in metrics if m in BASE_METRICS or m in PROBE_METRICS or m.startswith("lrc__")]
    csv = run_probe("iosim.kernels.pair_probe", "pair_probe", out_dir, keep, "pair probe", timeout_s)
    from dataclasses import asdict
    data = {"schema": "iosim-pair-probe", "schema_version": 1, "provenance": asdict(provenance(ncu, counters=True)),
            "metrics": keep, "metrics_missing": [m for m in missing if m.startswith(("lrc__", "l1tex__m", "lts__"))],
            "shapes": [dict(zip(("block_m", "block_n", "head_dim", "warps", "stages", "ctas_per_sm"), s)) for s in SHAPES],
            "n_kv_tiles": N_KV, "waves": WAVES, "stamps": stamped,
            "results": results(parse_ncu_raw_csv(csv))}
    (out_dir / "pair_probe.json").write_text(json.dumps(data, indent=1) + "\n")
    return data


def report(data: dict) -> list[str]:
    """What the command prints: L2 lookups a loaded sector, by head dim, variant and passes."""
    lines = []
    for d, by_variant in data["results"].items():
        for variant, by_iters in by_variant.items():
            cells = [f"{i}:{r['l2_lookup_read_sectors'] * 32 / r['loaded_bytes']:.2f}"
                     for i, r in sorted(by_iters.items(), key=lambda kv: int(kv[0])) if r["l2_lookup_read_sectors"]]
            lines.append(f"d={d} {variant:>8}: lookups a load by passes " + " ".join(cells))
    for d, by_iters in data["stamps"].items():
        lines.append(f"d={d} g2 pair end gap (ns) by passes " + " ".join(
            f"{i}:{r['pair_end_gap_ns']:.0f}" for i, r in by_iters.items()))
    return lines


def main(argv=None) -> int:
    return probe_cli(argv, "python -m iosim.kernels.pair_probe", __doc__, "pair_probe", child, probe, report)


if __name__ == "__main__":
    sys.exit(main())
