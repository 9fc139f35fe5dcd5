"""experiments/l2_staircase.py: the steps read off a measured miss curve, against curves with a closed form."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import load_experiment

ROOT = Path(__file__).resolve().parents[1]
MiB = 2**20


@pytest.fixture(scope="module")
def staircase():
    return load_experiment("l2_staircase")


def test_a_sharp_edge_is_one_step_at_its_midpoint(staircase):
    curve = [(16 * MiB, 0.0), (24 * MiB, 0.0), (26 * MiB, 1.0), (32 * MiB, 1.0)]
    assert staircase.steps(curve) == [(25 * MiB, 1.0)]


def test_steps_weigh_the_rises_and_sum_to_one(staircase):
    # rises of 0.246, 0.5 and 0.25 between four sizes (0.996 in all, scaled to 1); noise below the threshold (0.004),
    # a dip (0.25 -> 0.24) and a miss above 1 are not steps
    curve = [(10, 0.004), (20, 0.25), (30, 0.24), (40, 0.75), (50, 1.0), (60, 1.003)]
    got = staircase.steps(curve)
    assert [s for s, _ in got] == [15.0, 35.0, 45.0]
    assert [w for _, w in got] == pytest.approx([0.246 / 0.996, 0.5 / 0.996, 0.25 / 0.996])
    assert sum(w for _, w in got) == pytest.approx(1.0)


def test_a_curve_that_never_misses_is_refused(staircase):
    with pytest.raises(ValueError, match="never misses"):
        staircase.steps([(10, 0.0), (20, 0.005)])


def test_the_committed_h100_curve_has_the_steps_its_readme_names(staircase):
    # experiments/measurements/h100/l2/: all hit to 23 MiB, all missed from 31; the steps lie between, in order
    probe = json.loads((ROOT / "experiments" / "measurements" / "h100" / "l2" / "l2_probe.json").read_text())
    curve = [(p["size_bytes"], p["second_pass_miss"]) for p in probe["summary"]["shared_sweep_curve"]]
    got = staircase.steps(curve)
    assert 23 * MiB < got[0][0] < got[-1][0] < 31 * MiB
    assert sum(w for _, w in got) == pytest.approx(1.0)
    assert len(got) >= 3  # a staircase, not one edge


def test_a_step_holds_its_size_of_shared_lines_and_private_lines_keep_their_room(staircase):
    import iosim.engine.simulator as sim
    from iosim.hardware.profile import load_profile
    from iosim.schedule.build import build_schedule
    from iosim.schedule.problem import Problem, RunConfig

    profile = load_profile("h200-calibrated")  # a private line takes 1.30 copies there (its l2_sweep_bytes)
    schedule = build_schedule(RunConfig(algo="flash2", problem=Problem(batch=1, heads=1, seq_q=512, head_dim=64)),
                              profile.sm_count)
    own = sim.Engine(schedule, profile).l2
    try:
        staircase._patch(20 * MiB)
        l2 = sim.Engine(schedule, profile).l2
        assert l2.capacity == 2 * 20 * MiB and l2.replicas == profile.l2_partitions  # 20 MiB of shared lines
        assert l2.capacity / l2.private == pytest.approx(own.capacity / own.private)  # a private line's room
    finally:
        staircase._patch(None)
    assert sim.Engine(schedule, profile).l2.capacity == own.capacity
