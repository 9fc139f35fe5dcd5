"""experiments/causal_trace_replay.py: the LRU replay of a CTA timeline, against cases with a closed form."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from conftest import load_experiment

ROOT = Path(__file__).resolve().parents[1]
TRACES = ROOT / "experiments" / "measurements" / "h200" / "trace"


@pytest.fixture(scope="module")
def replay():
    return load_experiment("causal_trace_replay")


def _trace(starts, heads=1, n_q=8, block_m=128, block_n=64, chunk=4, per_block_ns=100):
    """A synthetic trace: CTA (head, q) starts at ``starts[q]`` and reads one block every ``per_block_ns``."""
    ctas = []
    for h in range(heads):
        for q in range(n_q):
            unmasked = q * block_m // block_n
            t0 = starts[q]
            stamps = [t0 + min(unmasked, (c + 1) * chunk) * per_block_ns for c in range(-(-unmasked // chunk))]
            ctas.append({"head": h, "q_block": q, "sm": 0, "start_ns": t0, "stamps_ns": stamps,
                         "end_ns": t0 + (unmasked + block_m // block_n) * per_block_ns})
    return {"config": {"seq_len": n_q * block_m, "heads": heads, "head_dim": 64, "grid_order": "rows",
                       "block_m": block_m, "block_n": block_n, "chunk_blocks": chunk},
            "timing": {"flash2_fwd_median_s": 0.0}, "ctas": ctas}


def test_every_causal_block_read_once_per_cta(replay):
    # CTA q of a head reads the 2q unmasked blocks and the 2 diagonal ones: sum over q of 2(q + 1)
    times, keys = replay.block_reads(_trace([0] * 8, heads=2))
    assert len(keys) == 2 * sum(2 * (q + 1) for q in range(8))
    assert len(np.unique(keys)) == 2 * 16  # two heads' 16 K/V blocks


def test_lockstep_ctas_miss_only_compulsory(replay):
    # every CTA of a head starts together and reads block b at the same instant: one miss per block
    times, keys = replay.block_reads(_trace([0] * 8, heads=3))
    assert replay.lru_misses(times, keys, capacity_blocks=3) == len(np.unique(keys))


def test_no_capacity_misses_every_read_and_infinite_only_compulsory(replay):
    times, keys = replay.block_reads(_trace([1000 * q for q in range(8)], heads=2))
    assert replay.lru_misses(times, keys, capacity_blocks=0) == len(keys)
    assert replay.lru_misses(times, keys, capacity_blocks=10**6) == len(np.unique(keys))


def test_staggered_ctas_beyond_capacity_miss_every_reread(replay):
    # CTAs 10 µs apart, one after another, each sweeping its prefix at 100 ns a block: between two CTAs'
    # reads of a block at least one other block is read, so an LRU of one block misses every read
    times, keys = replay.block_reads(_trace([10_000 * q for q in range(8)]))
    assert replay.lru_misses(times, keys, capacity_blocks=1) == len(keys)
    assert replay.lru_misses(times, keys, capacity_blocks=16) == len(np.unique(keys))


def test_reuse_gaps_are_the_stagger(replay):
    times, keys = replay.block_reads(_trace([700 * q for q in range(8)]))
    gaps = replay.reuse_gaps(times, keys)
    assert np.allclose(gaps, 700)


@pytest.mark.skipif(not (TRACES / "causal_trace-rows-n65536.json").exists(), reason="committed trace missing")
def test_committed_trace_is_well_formed(replay):
    # the H200 trace at N = 64K: every CTA's stamps rise, and an LRU at the modelled capacity finds only
    # compulsory K/V misses, as the counters do (DRAM reads within 2 % of Q + K + V)
    trace = json.loads((TRACES / "causal_trace-rows-n65536.json").read_text())
    for cta in trace["ctas"][:: 97]:
        marks = [cta["start_ns"]] + cta["stamps_ns"] + [cta["end_ns"]]
        assert all(a <= b for a, b in zip(marks, marks[1:]))
    times, keys = replay.block_reads(trace)
    block_bytes = 2 * trace["config"]["block_n"] * trace["config"]["head_dim"] * 2
    assert replay.lru_misses(times, keys, int(30 * 2**20 / block_bytes)) == len(np.unique(keys))


def test_key_blocks_taller_than_the_query_block_are_read_to_the_diagonal(replay):
    """64 x 128 tiles (kernels/flash2.py at F4's configuration): CTA q reads the q // 2 key blocks wholly left of its
    first row, then the one its rows' diagonal crosses (each such block is the diagonal of two CTAs): q // 2 + 1 in
    all, every block of the sequence read, none beyond it."""
    trace = _trace([0] * 8, block_m=64, block_n=128)
    for cta in trace["ctas"]:  # as the kernel stamps them: unmasked blocks q * 64 // 128
        cta["stamps_ns"] = [cta["start_ns"] + 100 * (cta["q_block"] // 2)] if cta["q_block"] // 2 else []
    times, keys = replay.block_reads(trace)
    assert len(keys) == sum(q // 2 + 1 for q in range(8))
    assert sorted(np.unique(keys)) == list(range(4))


def test_a_cyclic_sweep_replayed_through_the_curve_misses_what_the_curve_says(replay):
    """Closed form: a cyclic sweep of S bytes read twice puts every second read at stack distance S, so its second
    pass misses the curve's share at S (interpolated between the curve's sizes), and the first pass every block."""
    block = 1024
    curve = [(16 * block, 0.0), (24 * block, 0.5), (32 * block, 1.0)]
    for blocks, share in ((8, 0.0), (16, 0.0), (20, 0.25), (24, 0.5), (28, 0.75), (32, 1.0), (40, 1.0)):
        keys = np.tile(np.arange(blocks), 2)
        times = np.arange(len(keys), dtype=float)
        assert replay.curve_misses(times, keys, block, curve) == pytest.approx(blocks + share * blocks)


def test_a_step_curve_is_an_lru_of_its_step(replay):
    """A curve that hits everything up to C and misses everything beyond is an LRU of C: the same misses on a
    staggered causal timeline, at two capacities on either side of its working set."""
    times, keys = replay.block_reads(_trace([3_000 * q for q in range(8)], heads=2))
    block = 1024
    for capacity in (3, 6, 12):
        step = [(capacity * block, 0.0), (capacity * block + 1, 1.0)]
        assert replay.curve_misses(times, keys, block, step) == replay.lru_misses(times, keys, capacity)
