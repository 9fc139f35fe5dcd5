"""Standard attention vs FlashAttention-1 vs FlashAttention-2: bytes per memory level against N, on three GPUs.

Forward pass, fp16, d = 64, batch 4 × 16 heads, N = 512 … 16K, on the A100 (80 GB), RTX 4090 and
H100 SXM profiles (the uncalibrated one, so the overlay is a test, not a fit). One column per GPU:
HBM (DRAM) bytes read + written on top, L2 traffic below, the FlashAttention paper's closed-form HBM
accesses dashed, and the committed H100 Nsight Compute counters (DRAM and L2 bytes) as open markers
where a measured case has the same problem. Writes ``experiments/figures/io_vs_seqlen.png`` and
prints the numbers it plotted.

    python experiments/io_vs_seqlen.py [--jobs 2]
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from iosim.costs import closed_forms, plotting, sweep
from iosim.measure.measurement import load_measurement
from iosim.results.report import human_bytes, human_time
from iosim.schedule.problem import Problem, RunConfig

HERE = Path(__file__).resolve().parent
MEASURED = HERE / "measurements" / "h100" / "measurements.json"
FIGURE = HERE / "figures" / "io_vs_seqlen.png"
GPUS = ("a100", "4090", "h100")
ALGOS = ("standard", "flash1", "flash2")
NS = tuple(512 * 2**k for k in range(6))  # 512 … 16K


def work() -> list:
    return [(RunConfig(algo=a, problem=Problem(batch=4, heads=16, seq_q=n, head_dim=64, dtype="fp16")), g)
            for g in GPUS for a in ALGOS for n in NS]


def measured_case(measurement, result):
    """The measured case with the result's algorithm and problem, in the default grid order, if any."""
    for case in measurement.cases:
        tiling = case.run_config.get("tiling") or {}
        if (case.impl == result.config["algo"] and case.counters is not None and case.error is None
                and case.run_config["problem"] == result.config["problem"]
                and tiling.get("grid_order", "rows") == "rows"):
            return case
    return None


def table(results, measurement) -> str:
    head = (f"{'gpu':15s} {'algo':8s} {'N':>6s} {'HBM R+W':>9s} {'L2 R+W':>9s} {'SRAM':>9s} {'paper':>9s} "
            f"{'time':>9s} {'meas DRAM':>10s} {'meas L2':>9s} {'DRAM pred/meas':>14s}")
    rows = [head]
    for r in results:
        paper = sum(closed_forms.paper_bytes(RunConfig.from_dict(r.config)).values())
        lv = r.levels
        case = measured_case(measurement, r) if r.gpu.startswith("h100") else None
        meas = ("", "", "")
        if case:
            dram = case.counters.dram_read_bytes + case.counters.dram_write_bytes
            meas = (human_bytes(dram), human_bytes(case.counters.l2_bytes), f"{lv['hbm'].total / dram:.2f}")
        rows.append(f"{r.gpu:15s} {r.config['algo']:8s} {r.config['problem']['seq_q']:6d} "
                    f"{human_bytes(lv['hbm'].total):>9s} {human_bytes(lv['l2'].total):>9s} "
                    f"{human_bytes(lv['sram'].total):>9s} {human_bytes(paper):>9s} {human_time(r.time_s):>9s} "
                    f"{meas[0]:>10s} {meas[1]:>9s} {meas[2]:>14s}")
    return "\n".join(rows)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--jobs", type=int, default=2, help="worker processes (default 2)")
    args = ap.parse_args()
    jobs = work()
    done = []

    def progress(_):
        done.append(1)
        print(f"\rsimulated {len(done)}/{len(jobs)}", end="", file=sys.stderr, flush=True)

    results = sweep.run(jobs, jobs=args.jobs, progress=progress)
    print(file=sys.stderr)
    measurement = load_measurement(MEASURED)
    FIGURE.parent.mkdir(exist_ok=True)
    fig = plotting.io_vs_seqlen(results, measured=measurement, levels=("hbm", "l2"), by_gpu=True)
    plotting.save(fig, FIGURE)
    print(table(results, measurement))
    print(f"\npaper = the FlashAttention paper's HBM accesses (no cache). Predictions in plain mode; measured = "
          f"{MEASURED.relative_to(HERE.parent)} ({measurement.provenance.gpu_name}, Nsight Compute, cache control "
          f"{measurement.provenance.cache_control}: L2 flushed before each kernel).")
    print(f"wrote {FIGURE.relative_to(HERE.parent)} ({FIGURE.stat().st_size // 1024} KB)")


if __name__ == "__main__":
    main()
