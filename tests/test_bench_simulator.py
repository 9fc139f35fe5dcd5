"""experiments/bench_simulator.py: the grid cases it lists beyond issue 9's tolerances, and its event floor."""
from __future__ import annotations

import pytest
from conftest import load_experiment

bench = load_experiment("bench_simulator")


def test_the_listing_holds_exactly_the_cases_beyond_either_tolerance_largest_hbm_difference_first():
    """Five cases, aggregated beside per CTA (HBM bytes, seconds, CPU): a hair within the tolerances (0.5 % in bytes,
    2 % in time) a case is not listed; a hair beyond either, it is; the largest HBM difference first."""
    cases = [("flash2", 512, False, True, 8, None), ("flash1", 1024, True, False, 2, 2_000_000),
             ("standard", 256, False, False, 8, None), ("flash2", 2048, True, True, 2, None),
             ("flash1", 256, False, True, 8, None)]
    runs = [((1004.9, 1.0), (1000.0, 1.0)),                 # bytes just within
            ((1000.0, 1.0199), (1000.0, 1.0)),              # time just within
            ((1000.0 * 1.0051, 1.0), (1000.0, 1.0)),        # bytes just beyond
            ((1000.0, 0.979), (1000.0, 1.0)),               # time just beyond
            ((970.0, 1.0), (1000.0, 1.0))]                  # bytes far beyond
    res = [r + (0.0,) for pair in runs for r in pair]
    lines = bench.beyond_tolerance(cases, res)
    assert len(lines) == 3
    assert "flash1    N=256" in lines[0] and "HBM -3.00%" in lines[0]
    assert "standard  N=256" in lines[1] and "HBM +0.51%" in lines[1]
    assert "flash2    N=2048  causal fwd+bwd kv_heads=2 L2=its own" in lines[2] and "time -2.10%" in lines[2]


def test_the_event_floor_runs_exactly_the_cases_events_and_nothing_else():
    """The floor's run takes exactly as many timeouts as the case took events, shared out over the processes so that
    none runs more than one beyond another: its clock ends at the longest share's count of 1 ns steps."""
    for events, processes in ((1000, 264), (264, 264), (7, 3)):
        _, run, now = bench.floor_run(events, processes)
        assert run == events
        assert now == pytest.approx(-(-events // processes) * 1e-9)
