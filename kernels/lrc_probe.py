"""How Hopper's L2 request coalescer (LRC) merges identical reads from different SMs: k CTAs reading one buffer at once.

k CTAs (k in ``KS``) each read a buffer of ``BUFFER_BYTES`` with L1-bypassing loads (``.cg``), at the
same time (k ≤ 2 per SM, all resident at once). Variant ``same``: every CTA reads buffer 0;
``pairs``: CTA c reads buffer c // 2; ``mod2``: CTA c reads buffer c % 2. The ``_tma`` variants read the
same bytes by TMA: 4 × 256 fp32 boxes of a tensor descriptor, as Hopper kernels load their tiles. Under ncu (L2 flushed
before each launch) each launch reports crossbar read bytes (what the SMs received), L2 slice
lookup read sectors (what the slices served), the LRC's sectors in and out, and DRAM read bytes:
if the coalescer merges the k identical requests, lookups stay near one buffer's sectors while the
crossbar carries k buffers.

    python -m iosim.kernels.lrc_probe --out DIR     # runs ncu on itself; writes DIR/lrc_probe.json
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

from iosim.kernels.device import cuda_torch
from iosim.kernels.ncu import BASE_METRICS, kernel_counters, parse_ncu_raw_csv
from iosim.kernels.profiler import metrics_for, probe_cli, profiled_launch, require_ncu, run_probe

KS = (1, 2, 4, 8, 16, 33, 66, 132, 264)
VARIANTS = ("same", "pairs", "mod2", "same_tma", "pairs_tma", "mod2_tma")
BOX = (4, 256)  # a TMA box: rows × fp32 columns (at most 256 a dimension), BLOCK elements
BUFFER_BYTES = 256 * 2**10  # per CTA: 64 loads of 4 KiB (1024 fp32 per 4-warp CTA)
BLOCK = 1024  # fp32 per load
TAG = "lrc-{}-{}"  # NVTX range: variant, k
PROBE_FIELDS = ("xbar_read_bytes", "l2_lookup_read_sectors", "lrc_in_sectors", "lrc_out_sectors", "dram_read_bytes",
                "l2_bytes", "duration_s")
PROBE_METRICS = ("l1tex__m_xbar2l1tex_read_bytes.sum", "lts__t_sectors_srcunit_tex_op_read.sum")


def _kernel():
    import triton
    import triton.language as tl

    @triton.jit
    def shared_read(src, out, MODE: tl.constexpr, ITERS: tl.constexpr, BLOCK: tl.constexpr):
        """CTA c reads buffer 0 (MODE 0), c // 2 (MODE 1) or c % 2 (MODE 2): ITERS blocks of BLOCK fp32."""
        pid = tl.program_id(0)
        if MODE == 0:
            buf = 0
        elif MODE == 1:
            buf = pid // 2
        else:
            buf = pid % 2
        offs = tl.arange(0, BLOCK)
        base = src + buf.to(tl.int64) * ITERS * BLOCK
        acc = tl.zeros([BLOCK], tl.float32)
        for i in range(ITERS):
            acc += tl.load(base + i * BLOCK + offs, cache_modifier=".cg")
        tl.store(out + pid * BLOCK + offs, acc)  # keeps the loads alive

    return shared_read


def _tma_kernel():
    import triton
    import triton.language as tl

    @triton.jit
    def shared_read_tma(desc, out, MODE: tl.constexpr, ITERS: tl.constexpr, ROWS: tl.constexpr, COLS: tl.constexpr):
        """``shared_read`` by TMA: ITERS boxes of ROWS × COLS fp32 of the buffer MODE picks."""
        pid = tl.program_id(0)
        if MODE == 0:
            buf = 0
        elif MODE == 1:
            buf = pid // 2
        else:
            buf = pid % 2
        acc = tl.zeros([ROWS, COLS], tl.float32)
        for i in range(ITERS):
            acc += desc.load([(buf * ITERS + i) * ROWS, 0])
        offs = tl.arange(0, ROWS)[:, None] * COLS + tl.arange(0, COLS)[None, :]
        tl.store(out + pid * ROWS * COLS + offs, acc)

    return shared_read_tma


def buffers(variant: str, k: int) -> int:
    """Distinct buffers k CTAs read in ``variant``."""
    return {"same": 1, "pairs": (k + 1) // 2, "mod2": min(k, 2)}[variant.removesuffix("_tma")]


def child() -> int:
    """Runs under ncu: one warm-up launch per shape outside the profiled range, then one profiled and tagged."""
    torch = cuda_torch()
    kernel, tma = _kernel(), _tma_kernel()
    iters = BUFFER_BYTES // (4 * BLOCK)
    src = torch.randn(max(KS) * iters * BLOCK, dtype=torch.float32, device="cuda")
    out = torch.empty(max(KS) * BLOCK, dtype=torch.float32, device="cuda")
    from triton.tools.tensor_descriptor import TensorDescriptor
    desc = TensorDescriptor.from_tensor(src.view(-1, BOX[1]), list(BOX))
    for n, variant in enumerate(VARIANTS):
        mode = n % 3
        for k in KS:
            if variant.endswith("_tma"):
                launch = lambda k=k, mode=mode: tma[(k,)](desc, out, MODE=mode, ITERS=iters, ROWS=BOX[0], COLS=BOX[1],  # noqa: E731
                                                           num_warps=4)
            else:
                launch = lambda k=k, mode=mode: kernel[(k,)](src, out, MODE=mode, ITERS=iters, BLOCK=BLOCK,  # noqa: E731
                                                              num_warps=4)
            profiled_launch(torch, TAG.format(variant, k), launch)
    return 0


def results(rows: list[dict]) -> dict:
    """``{variant: {k: {field: value}}}`` from the parsed ncu rows, by their NVTX tags."""
    out: dict = {}
    for row in rows:
        tag = next((t for v in VARIANTS for k in KS if (t := TAG.format(v, k)) in row["nvtx"].split(":")), None)
        if tag is None:
            continue
        _, variant, k = tag.split("-")
        counters = kernel_counters(row)
        entry = {f: getattr(counters, f) for f in PROBE_FIELDS}
        entry.update(buffers=buffers(variant, int(k)), buffer_bytes=BUFFER_BYTES,
                     requested_bytes=int(k) * BUFFER_BYTES)
        out.setdefault(variant, {})[int(k)] = entry
    return out


def probe(out_dir: Path, timeout_s: float = 300) -> dict:
    """Run the probe under ncu, write ``out_dir/lrc_probe.json`` (and ncu's log and CSV), return the results."""
    ncu = require_ncu("LRC probe")
    metrics, missing = metrics_for(ncu)
    keep = [m for m in metrics if m in BASE_METRICS or m in PROBE_METRICS or m.startswith("lrc__")]
    csv = run_probe("iosim.kernels.lrc_probe", "lrc_probe", out_dir, keep, "LRC probe", timeout_s)
    data = {"metrics": keep, "metrics_missing": [m for m in missing if m.startswith(("lrc__", "l1tex__m", "lts__"))],
            "buffer_bytes": BUFFER_BYTES, "results": results(parse_ncu_raw_csv(csv))}
    (out_dir / "lrc_probe.json").write_text(json.dumps(data, indent=1) + "\n")
    return data


def report(data: dict) -> list[str]:
    """What the command prints: each launch's crossbar, L2-lookup, LRC and DRAM counts."""
    return [f"{variant:>5} k={k:>3}: xbar {r['xbar_read_bytes']}, L2 lookups {r['l2_lookup_read_sectors']}, "
            f"LRC in/out {r['lrc_in_sectors']}/{r['lrc_out_sectors']}, DRAM {r['dram_read_bytes']}"
            for variant, by_k in data["results"].items() for k, r in sorted(by_k.items())]


def main(argv=None) -> int:
    return probe_cli(argv, "python -m iosim.kernels.lrc_probe", __doc__, "lrc_probe", child, probe, report)


if __name__ == "__main__":
    sys.exit(main())
