"""Why causal CTAs reuse K/V in the L2 at long N: grid-order scheduling and LRU, with and without misses that cost time.

An abstract model of FlashAttention-2's causal forward (128-row Q blocks, 64-row K/V blocks, d = 128):
CTAs start in grid order as SM slots free up, CTA i of a head reads K/V blocks 0 .. 2i + 1 one per time
unit, and an LRU of ``--l2-mb`` megabytes holds K/V blocks. A block read that misses delays its CTA by
``--miss`` time units (0: misses cost nothing), and a read of a block whose fill is still in flight waits
for it. Prints K/V blocks read from DRAM as a multiple of the compulsory ones.

    python experiments/causal_convoy.py --n 131072 --heads 2 --l2-mb 30 --miss 0 0.05 0.2 1

With --miss 0 the staircase of start times (wave w's CTAs start 2w blocks apart) spreads the CTAs over
more K/V than the L2 holds: 150-330x compulsory. A miss that costs even a fraction of a pass lets the
CTAs behind the one that missed catch up and stream behind it (a convoy): 4-6x, the H200's figure for
the same shape (experiments/measurements/h200/measurements.json, causal N = 128K).
"""
from __future__ import annotations

import argparse
import heapq
import itertools
from collections import OrderedDict

BM, BN, D, SLOTS = 128, 64, 128, 132


def kv_misses(n: int, heads: int, l2_mb: float, miss: float) -> float:
    """K/V blocks read from DRAM over the compulsory ones, for one run of the abstract model."""
    block = BN * D * 2 * 2  # a K and a V block, fp16
    capacity = int(l2_mb * 1e6 / block)
    ctas = [(h, i) for h in range(heads) for i in range(n // BM)]
    seq = itertools.count()
    events = [(0.0, next(seq), c, 0) for c in range(min(SLOTS, len(ctas)))]
    heapq.heapify(events)
    nxt, lru, ready, misses = len(events), OrderedDict(), {}, 0
    while events:
        t, _, c, u = heapq.heappop(events)
        h, i = ctas[c]
        key, cost = (h, u), 1.0
        if key in lru:
            lru.move_to_end(key)
            cost += max(0.0, ready.get(key, 0.0) - t)  # a fill still in flight
        else:
            misses += 1
            lru[key] = True
            ready[key] = t + miss
            cost += miss
            if len(lru) > capacity:
                lru.popitem(last=False)
        if u + 1 < 2 * (i + 1):
            heapq.heappush(events, (t + cost, next(seq), c, u + 1))
        elif nxt < len(ctas):  # the slot goes to the next CTA in grid order
            heapq.heappush(events, (t + cost, next(seq), nxt, 0))
            nxt += 1
    return misses / (heads * (n // BN))


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=131072, help="sequence length (a multiple of 128)")
    parser.add_argument("--heads", type=int, default=2, help="heads run one after another in grid order")
    parser.add_argument("--l2-mb", type=float, default=30.0, help="L2 megabytes that hold K/V")
    parser.add_argument("--miss", type=float, nargs="+", default=[0.0, 0.05, 0.2, 1.0],
                        help="passes a missed read delays its CTA")
    args = parser.parse_args(argv)
    print(f"N = {args.n}, {args.heads} heads, L2 {args.l2_mb} MB")
    print("miss cost (passes)   K/V reads / compulsory")
    for m in args.miss:
        print(f"{m:18.2f}   {kv_misses(args.n, args.heads, args.l2_mb, m):8.2f}")


if __name__ == "__main__":
    main()
