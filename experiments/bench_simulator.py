"""How fast the simulator runs: wall time and simulated events per second for fixed configurations.

Target (2-core CI machine): one FlashAttention-2 forward of N = 65,536, d = 128, batch·heads = 32 on
the H100 profile in under 2 s, with a cost that follows the number of CTAs, not the N² tile pairs.
The table prints both counts and the ratio of wall time to each as N doubles.

    python experiments/bench_simulator.py [--quick]
"""
from __future__ import annotations

import argparse
import time

from iosim.schedule.build import build_schedule
from iosim.schedule.problem import Problem, RunConfig
from iosim.simulate import simulate

CASES = [
    ("flash2", dict(batch=2, heads=16, seq_q=n, head_dim=128)) for n in (4096, 16384, 65536)
] + [
    ("flash2", dict(batch=2, heads=16, seq_q=65536, head_dim=128, backward=True)),
    ("flash1", dict(batch=2, heads=16, seq_q=16384, head_dim=128)),
    ("standard", dict(batch=4, heads=16, seq_q=8192, head_dim=64)),
    ("flash2", dict(batch=2, heads=16, seq_q=16384, head_dim=128, causal=True)),
]


def tile_pairs(config: RunConfig) -> int:
    """Q-block × K/V-block pairs of the main kernels: what a tile-by-tile simulation would step through."""
    return sum(k.ctas * max(1, k.n_loop) for k in build_schedule(config).kernels)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="skip the slow cases")
    args = ap.parse_args()
    print(f"{'algo':9s} {'N':>6s} {'pass':8s} {'CTAs':>7s} {'tile pairs':>11s} {'events':>8s} {'wall s':>7s} "
          f"{'events/s':>9s} {'µs/CTA':>7s}")
    for algo, problem in CASES[:4] if args.quick else CASES:
        config = RunConfig(algo=algo, problem=Problem(**problem))
        ctas = sum(k.ctas for k in build_schedule(config).kernels)
        simulate(config.with_(problem=Problem(**(problem | {"seq_q": 1024}))), "h100")  # warm imports
        t0 = time.perf_counter()
        r = simulate(config, "h100")
        wall = time.perf_counter() - t0
        mark = "fwd+bwd" if problem.get("backward") else "fwd" + ("/causal" if problem.get("causal") else "")
        print(f"{algo:9s} {problem['seq_q']:6d} {mark:8s} {ctas:7d} {tile_pairs(config):11d} {r.events:8d} "
              f"{wall:7.2f} {r.events / wall:9.0f} {1e6 * wall / ctas:7.1f}")


if __name__ == "__main__":
    main()
