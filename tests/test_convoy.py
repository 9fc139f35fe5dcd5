"""What a convoy of CTAs pays for the tiles it shares when they miss the L2: the calibrated convoy series, and the
committed warm probe (experiments/measurements/h100/warm_probe/), which times kernels/flash2.py's forward with its
inputs in DRAM and in the L2.

The first wave's CTAs start together; those reading one head's K/V each wait the series' share of a missed pass
(measured on the calibration's loop, ``h100/convoy_probe/softmax``). Before it, the aggregated engine charged one
CTA in the convoy (1/g each) and the engine run one CTA at a time charged every follower the whole miss.
"""
from __future__ import annotations

import json
import math
from dataclasses import replace
from pathlib import Path

import pytest

from iosim.costs.issue import convoy_series, convoy_wait
from iosim.engine.simulator import Engine
from iosim.hardware.profile import load_profile
from iosim.schedule.build import build_schedule
from iosim.schedule.problem import Problem, RunConfig, Tiling
from iosim.simulate import simulate

ROOT = Path(__file__).resolve().parents[1]
WARM = ROOT / "experiments" / "measurements" / "h100" / "warm_probe" / "run2" / "warm_probe.json"
H100 = load_profile("h100")
SERIES = "convoy_miss_softmax_"


def _with_raw(profile, raw: dict):
    return replace(profile, calibration=dict(profile.calibration, raw=raw))


def _fwd(heads: int, n: int, d: int, mode: str = "ncu") -> RunConfig:
    warps = 4 if d == 64 else 8
    return RunConfig(algo="flash2", problem=Problem(batch=1, heads=heads, seq_q=n, head_dim=d),
                     tiling=Tiling(block_m=128, block_n=64, warps=warps, stages=2), mode=mode)


def test_the_series_is_the_loop_nearest_the_head_dim_and_occupancy():
    """d = 96 is nearer 128 than 64 by ratio; three CTAs an SM take the two-CTA series; every group measured."""
    got = convoy_series(H100, 96, 3)
    raw = H100.calibration["raw"]
    assert got == tuple(sorted((int(k.rsplit("_g", 1)[1][:-2]), v) for k, v in raw.items()
                               if k.startswith(SERIES + "128x64x128w8_c2_")))
    assert [g for g, _ in got] == [2, 4, 8, 16, 32, 64]
    assert convoy_series(H100, 32, 1)[0][1] == raw[SERIES + "128x64x64w4_c1_g2_s"]


def test_the_wait_is_interpolated_in_log2_of_the_group_and_held_at_the_ends():
    series = ((2, 4.0), (8, 1.0))
    assert convoy_wait(series, 4) == pytest.approx(2.5)  # halfway in log2 between 2 and 8
    assert convoy_wait(series, 1) == 4.0 and convoy_wait(series, 64) == 1.0


def test_a_profile_without_the_series_charges_as_before():
    """No series: no convoy share (one CTA of the convoy pays). A series of miss_pass_s / g is that same rule
    written as a series: the aggregated run is the same to the last bit."""
    raw = {k: v for k, v in H100.calibration["raw"].items() if not k.startswith(SERIES)}
    bare = _with_raw(H100, raw)
    assert convoy_series(bare, 64, 2) is None
    miss = raw["miss_pass_s"]
    as_series = _with_raw(H100, {**raw, **{f"{SERIES}128x64x64w4_c2_g{g}_s": miss / g for g in (2, 4, 8, 16, 32, 64)},
                                 **{f"{SERIES}128x64x64w4_c1_g{g}_s": miss / g for g in (2, 4, 8, 16, 32, 64)}})
    config = _fwd(16, 2048, 64)
    a = simulate(config, bare, triton_version="3.6.0").kernels[0].time_s
    b = simulate(config, as_series, triton_version="3.6.0").kernels[0].time_s
    assert b == pytest.approx(a, rel=1e-9)


def _measured(heads: int, n: int, d: int) -> dict:
    rows = json.loads(WARM.read_text())["rows"]
    return next(r for r in rows if (r["heads"], r["seq_len"], r["head_dim"], r["block_m"]) == (heads, n, d, 128))


# one wave of CTAs (128 at d = 128, one an SM; 256 at d = 64, two an SM), groups of 16-64 CTAs a head
ONE_WAVE = [(8, 4096, 64), (16, 2048, 64), (4, 4096, 128), (8, 2048, 128)]


@pytest.mark.parametrize("heads,n,d", ONE_WAVE)
def test_a_cold_wave_takes_what_the_warm_probe_measured(heads, n, d):
    """Inputs in DRAM, one wave: within 5 % of the probe's time, aggregated and run one CTA at a time alike
    (before the series: 9-15 % short aggregated, 7-10 % long one by one)."""
    measured = _measured(heads, n, d)["cold_s"]
    for aggregate in (True, False):
        got = simulate(_fwd(heads, n, d), H100, aggregate=aggregate, triton_version="3.6.0").kernels[0].time_s
        assert got == pytest.approx(measured, rel=0.05), aggregate


@pytest.mark.parametrize("heads,n,d", ONE_WAVE[:2])
def test_the_convoy_costs_what_the_warm_probe_measured_beyond_the_warm_run(heads, n, d):
    """The cold run's excess over the run with every input in the L2 (the same kernel launched twice in ``plain``
    mode): within a third of what the probe measured, where the per-CTA run charged 2-3 times it before."""
    row = _measured(heads, n, d)
    config = _fwd(heads, n, d, mode="plain")
    schedule = build_schedule(config, H100.sm_count)
    twice = replace(schedule, kernels=schedule.kernels * 2)
    warm = Engine(twice, H100, mode="plain").run().kernels[-1].time_s
    cold = simulate(_fwd(heads, n, d), H100, triton_version="3.6.0").kernels[0].time_s
    excess, measured = cold - warm, row["cold_s"] - row["warm_s"]
    assert math.isclose(excess, measured, rel_tol=0.34)
