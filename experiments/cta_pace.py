"""How steady causal CTAs' pace is, and how their start times are spaced, from ``causal_trace`` files.

For each trace (``python -m iosim.kernels.causal_trace``: each CTA's start, end and a ``%globaltimer`` stamp every
``chunk_blocks`` unmasked K/V blocks) it prints:
- *CTA pace*: each CTA's time per K/V block over its whole loop against the median of the nine CTAs of its head
  around it (same tiles, nearly the same length): the robust spread (1.48 × the median absolute deviation) and the
  standard deviation of that ratio, over CTAs past the first 30 % of rows;
- *stamp pace*: the coefficient of variation of a CTA's time over 1, 2, 4 and 8 stamp intervals (its first interval,
  which holds the prologue, left out): iid noise falls as 1/sqrt(blocks), a timer's steps fall faster;
- *per SM*: the spread of the SMs' mean relative pace;
- *start gaps*: for consecutive CTAs of a head, how far apart they start in K/V blocks at the earlier one's pace
  (10th / 50th / 90th percentile): a regular lattice has a narrow spread, a random sequence an exponential-like one.

Last, the median of the files' robust spreads: what a profile's ``cta_pace_spread`` takes from calibration traces
(traces where every load hits: N = 32K, ``--chunk 8``, several tilings).

    python experiments/cta_pace.py experiments/measurements/h100/trace_jitter/*.json
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
from scipy.ndimage import median_filter


def cta_paces(trace: dict) -> dict:
    """Head -> array of (q block, time per K/V block in ns, SM, start ns), in q-block order."""
    cfg = trace["config"]
    bm, bn = cfg["block_m"], cfg["block_n"]
    heads: dict = {}
    for c in trace["ctas"]:
        blocks = -(-(c["q_block"] + 1) * bm // bn)  # the loop runs to the diagonal
        heads.setdefault(c["head"], []).append((c["q_block"], (c["end_ns"] - c["start_ns"]) / blocks, c["sm"],
                                                c["start_ns"]))
    return {h: np.array(sorted(rows)) for h, rows in heads.items()}


def pace_residuals(heads: dict, skip: float = 0.3) -> np.ndarray:
    """Each CTA's pace over the median of the nine CTAs of its head around it, minus one (rows past ``skip``)."""
    out = []
    for rows in heads.values():
        pace = rows[:, 1]
        out.append((pace / median_filter(pace, size=9, mode="nearest") - 1.0)[int(len(pace) * skip):])
    return np.concatenate(out)


def stamp_cv(trace: dict, groups=(1, 2, 4, 8)) -> dict:
    """Median over CTAs of the coefficient of variation of their time over ``g`` consecutive stamp intervals."""
    out = {}
    for g in groups:
        cvs = []
        for c in trace["ctas"]:
            d = np.diff([c["start_ns"], *c["stamps_ns"]])[1:]
            n = len(d) // g
            if n >= 6:
                d = d[:n * g].reshape(n, g).sum(1)
                cvs.append(d.std(ddof=1) / d.mean())
        out[g] = float(np.median(cvs)) if cvs else float("nan")
    return out


def start_gaps(heads: dict, skip: float = 0.3) -> np.ndarray:
    """For consecutive CTAs of a head (rows past ``skip``): their start times apart, in K/V blocks at the first's pace."""
    out = []
    for rows in heads.values():
        first = int(len(rows) * skip)
        r = rows[first:]
        out.append((r[1:, 3] - r[:-1, 3]) / r[:-1, 1])
    return np.concatenate(out)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("trace", type=Path, nargs="+", help="causal_trace-*.json files")
    args = parser.parse_args(argv)
    spreads = []
    for path in args.trace:
        trace = json.loads(path.read_text())
        cfg = trace["config"]
        heads = cta_paces(trace)
        r = pace_residuals(heads)
        spreads.append(1.4826 * np.median(np.abs(r - np.median(r))))
        rows = np.concatenate(list(heads.values()))
        rel = pace_residuals(heads, skip=0.0) + 1.0  # every CTA's, in the order of ``rows``
        sms = rows[:, 2].astype(int)
        per_sm = np.array([rel[sms == s].mean() for s in np.unique(sms)])
        cv = stamp_cv(trace)
        gaps = start_gaps(heads)
        print(f"{path.name}: N = {cfg['seq_len']}, {cfg['block_m']}x{cfg['block_n']} w{cfg['warps']} s{cfg['stages']}, "
              f"{cfg['grid_order']} order, a stamp every {cfg['chunk_blocks']} blocks, {trace['provenance']['gpu_name']}")
        print(f"  CTA pace against its neighbours: robust spread {spreads[-1]:.2%}, "
              f"std {r.std():.2%}")
        print("  stamp pace cv: " + ", ".join(f"{g * cfg['chunk_blocks']} blocks {v:.2%}" for g, v in cv.items()))
        print(f"  per-SM mean pace: std {per_sm.std():.2%}, range {per_sm.min():.3f}-{per_sm.max():.3f}")
        print("  start gaps (K/V blocks), 10/50/90th percentile: "
              + " / ".join(f"{v:.1f}" for v in np.percentile(gaps, [10, 50, 90])))
    print(f"median robust spread of the {len(spreads)} files (a profile's cta_pace_spread): {np.median(spreads):.5f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
