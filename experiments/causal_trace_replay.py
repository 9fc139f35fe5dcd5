"""Replay a measured causal-forward trace through an LRU of K/V blocks: which DRAM bytes the hardware's own timeline implies.

``python -m iosim.kernels.causal_trace`` records, on the GPU, when each CTA of kernels/flash2.py's causal
forward passes every 64th K/V block. This script turns those stamps into the time of every K/V block
read (linear between stamps), replays them in time order through an LRU holding ``--capacity-mib`` of
K/V blocks, and prints the K/V bytes that would come from DRAM. Beside it: the measured DRAM reads of
the same case from the committed data set (Q included) where one exists, and statistics of the
timeline (how long after a CTA reads a block the next CTA of the head reads it).

It separates the two halves of a long-causal DRAM prediction: *when* the CTAs read (the timeline, here
the hardware's) and *what the L2 keeps* (the LRU capacity). Where the replay at the model's capacity
matches the counters, the capacity is right and only the simulated timeline can be wrong.

    python experiments/causal_trace_replay.py experiments/measurements/h200/trace/causal_trace-rows-n131072.json
    python experiments/causal_trace_replay.py experiments/measurements/h100/heldout/long_tiles/trace/*.json \
        --measured experiments/measurements/h100/heldout/long_tiles/measurements.json --capacity-mib 25 50

``--sweep L2_PROBE_JSON`` adds a replay through the L2's measured edge instead of a sharp one: each re-read misses
the share the probe's shared sweep missed at that read's stack distance (experiments/measurements/h100/l2/).
"""
from __future__ import annotations

import argparse
import json
import sys
from collections import OrderedDict
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
DATA_SET = ROOT / "experiments" / "measurements" / "h200" / "measurements.json"


def block_reads(trace: dict) -> tuple[np.ndarray, np.ndarray]:
    """Time (ns) and key (head, K/V block) of every K/V block read, the unmasked ones placed linearly
    between their CTA's stamps and the diagonal ones between its last stamp and its end."""
    cfg = trace["config"]
    chunk, bm, bn = cfg["chunk_blocks"], cfg["block_m"], cfg["block_n"]
    n_blocks = -(-cfg["seq_len"] // bn)
    times, keys = [], []
    for cta in trace["ctas"]:
        marks = [cta["start_ns"]] + cta["stamps_ns"]
        # blocks wholly left of the CTA's first row, then those its rows' diagonal crosses (as kernels/flash2.py
        # splits its loop; a block taller than the CTA's rows, 64 x 128 tiles, is the diagonal of two CTAs)
        unmasked, diagonal = cta["q_block"] * bm // bn, -(-(cta["q_block"] + 1) * bm // bn)
        spans = [(marks[k], marks[k + 1], k * chunk, min(unmasked, (k + 1) * chunk)) for k in range(len(marks) - 1)]
        spans.append((marks[-1], cta["end_ns"], unmasked, min(n_blocks, diagonal)))
        for t0, t1, lo, hi in spans:
            if hi > lo:
                times.append(np.linspace(t0, t1, hi - lo, endpoint=False))
                keys.append(cta["head"] * n_blocks + np.arange(lo, hi))
    return np.concatenate(times), np.concatenate(keys)


def lru_misses(times: np.ndarray, keys: np.ndarray, capacity_blocks: int) -> int:
    """Reads that miss an LRU of ``capacity_blocks`` blocks, replayed in time order."""
    lru: OrderedDict = OrderedDict()
    misses = 0
    for key in keys[np.argsort(times, kind="stable")].tolist():
        if key in lru:
            lru.move_to_end(key)
            continue
        misses += 1
        lru[key] = True
        if len(lru) > capacity_blocks:
            lru.popitem(last=False)
    return misses


def curve_misses(times: np.ndarray, keys: np.ndarray, block_bytes: int, curve: list) -> float:
    """Expected reads that miss an L2 whose chance to miss a block read again depends on its stack distance, as the
    L2 probe's shared sweep measured it: ``curve`` holds ``(size, second-pass miss)`` of cyclic sweeps every SM reads
    whole, where every read is at stack distance ``size`` (linear between sizes; no miss below the first, all beyond
    the last). A read's stack distance is the bytes of the distinct blocks read since that block, itself included."""
    sizes, miss = np.array([c[0] for c in curve], dtype=float), np.clip([c[1] for c in curve], 0.0, 1.0)
    depth = int(sizes[-1] // block_bytes) + 1  # blocks further back all miss
    table = np.interp((np.arange(depth) + 1.0) * block_bytes, sizes, miss, left=0.0, right=1.0).tolist()
    stack: list = []  # most recent first, at most ``depth`` blocks
    expected = 0.0
    for key in keys[np.argsort(times, kind="stable")].tolist():
        try:
            at = stack.index(key)
        except ValueError:  # never read, or further back than the curve reaches
            expected += 1.0
            stack.insert(0, key)
            if len(stack) > depth:
                stack.pop()
            continue
        expected += table[at]
        if at:
            del stack[at]
            stack.insert(0, key)
    return expected


def reuse_gaps(times: np.ndarray, keys: np.ndarray) -> np.ndarray:
    """For every read but a block's first: the time (ns) since the previous read of that block."""
    order = np.lexsort((times, keys))
    t, k = times[order], keys[order]
    return np.diff(t)[k[1:] == k[:-1]]


def measured_reads(cfg: dict, data_set: Path = DATA_SET) -> float | None:
    """DRAM read bytes of the same case (shape, grid order, and tiles where the trace names them) in a committed
    data set (the H200's by default; None where it has none)."""
    if not data_set.exists():
        return None
    data = json.loads(data_set.read_text())
    for case in data.get("cases", []):
        rc, counters = case.get("run_config") or {}, case.get("counters") or {}
        p, t = rc.get("problem") or {}, rc.get("tiling") or {}
        if (rc.get("algo") == "flash2" and not p.get("backward") and p.get("causal") and p.get("seq_q") == cfg["seq_len"]
                and p.get("heads") == cfg["heads"] and p.get("batch") == 1 and p.get("head_dim") == cfg["head_dim"]
                and t.get("grid_order") == cfg["grid_order"] and counters.get("dram_read_bytes")
                and all(t.get(f) == cfg[f] for f in ("block_m", "block_n", "warps", "stages") if f in cfg)):
            return counters["dram_read_bytes"]
    return None


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("trace", type=Path, nargs="+", help="causal_trace-*.json files")
    parser.add_argument("--capacity-mib", type=float, nargs="+", default=[20.0, 30.0, 40.0, 50.0],
                        help="LRU capacities for K/V blocks, MiB")
    parser.add_argument("--measured", type=Path, default=DATA_SET,
                        help="measurement file whose counters stand beside each trace (default: the H200 set)")
    parser.add_argument("--sweep", type=Path, metavar="L2_PROBE_JSON",
                        help="also replay through an L2 that misses a re-read by its stack distance as this L2 probe's "
                             "shared sweep measured (python -m iosim.kernels.l2_probe), in place of an LRU's sharp edge")
    args = parser.parse_args(argv)
    curve = None
    if args.sweep is not None:
        summary = json.loads(args.sweep.read_text())["summary"]
        curve = [(p["size_bytes"], p["second_pass_miss"]) for p in summary["shared_sweep_curve"]]
    for path in args.trace:
        trace = json.loads(path.read_text())
        cfg = trace["config"]
        block_bytes = 2 * cfg["block_n"] * cfg["head_dim"] * 2
        times, keys = block_reads(trace)
        distinct = len(np.unique(keys))
        gaps = reuse_gaps(times, keys) / 1e3
        span = (max(c["end_ns"] for c in trace["ctas"]) - min(c["start_ns"] for c in trace["ctas"])) / 1e6
        print(f"{path.name}: {cfg['grid_order']} order, N = {cfg['seq_len']}, {cfg['heads']} heads, d = {cfg['head_dim']}, "
              f"{len(trace['ctas'])} CTAs over {span:.1f} ms (traced; untraced kernel "
              f"{trace['timing']['flash2_fwd_median_s'] * 1e3:.1f} ms)")
        print(f"  K/V block reads {len(keys):,}, compulsory {distinct * block_bytes / 1e9:.2f} GB; time since the "
              f"previous read of the block, median / 90th / 99th percentile: "
              f"{np.percentile(gaps, 50):.1f} / {np.percentile(gaps, 90):.1f} / {np.percentile(gaps, 99):.1f} us")
        measured = measured_reads(cfg, args.measured)
        if measured is not None:
            print(f"  measured DRAM reads (ncu, untraced, Q included): {measured / 1e9:.2f} GB")
        print("  LRU capacity   K/V from DRAM   x compulsory")
        for mib in args.capacity_mib:
            misses = lru_misses(times, keys, int(mib * 2**20 / block_bytes))
            print(f"  {mib:8g} MiB   {misses * block_bytes / 1e9:9.2f} GB   {misses / distinct:8.2f}")
        if curve is not None:
            misses = curve_misses(times, keys, block_bytes, curve)
            print(f"  {args.sweep.parent.name + ' sweep':>12s}   {misses * block_bytes / 1e9:9.2f} GB   {misses / distinct:8.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
