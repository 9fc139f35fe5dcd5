"""A head's DRAM traffic at long causal N against the heads run with it: the H100's head-count sets, measured and as
iosim predicted them before they ran and validates them now (experiments/measurements/<gpu>/heldout/head_count/ and its
one_head/ where there is one).

    python experiments/head_count.py [--gpu h100|h200]
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from iosim.measure.measurement import load_measurement
from iosim.measure.validate import validate

MEASUREMENTS = Path(__file__).resolve().parent / "measurements"


def rows(folder: Path) -> list:
    """(N, heads, table row) of every case of ``folder``'s measurements, beside its prediction written before it ran."""
    before = json.loads((folder / "predicted-before.json").read_text())["runs"]
    out = []
    for r in validate(load_measurement(folder / "measurements.json"))[0]:
        p = r.config["problem"]
        n, h = p["seq_q"], p["heads"]
        compulsory = 4 * n * p["head_dim"] * 2 * h  # Q, K, V read and O written once, fp16
        measured, validated = r.measured["dram_bytes"], r.predicted["dram_bytes"]
        hbm = before[r.name]["levels"]["hbm"]
        predicted = hbm["read_bytes"] + hbm["write_bytes"]
        t, tp = r.measured["time_s"], r.predicted["time_s"]
        out.append((n, h, f"| {n // 1024}K | {h} | {measured / 1e9:.3f} GB | {measured / compulsory:.2f} | "
                          f"{measured / h / 1e9:.3f} GB | {predicted / measured - 1:+.1%} | "
                          f"{validated / measured - 1:+.1%} | {validated / compulsory:.2f} | {t * 1e3:.1f} ms | "
                          f"{tp / t - 1:+.1%} |"))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--gpu", default="h100", choices=("h100", "h200"), help="whose head-count sets (default: h100)")
    sets = MEASUREMENTS / ap.parse_args().gpu / "heldout" / "head_count"
    print("| N | heads | DRAM measured | × compulsory | a head | as predicted | validated | model × compulsory | time "
          "| time validated |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    folders = [f for f in (sets, sets / "one_head") if (f / "measurements.json").exists()]
    for _, _, row in sorted(sum((rows(f) for f in folders), [])):
        print(row)


if __name__ == "__main__":
    main()
