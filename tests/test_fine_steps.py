"""Steps of a causal-evicting kernel (Engine._fine) span FINE_LINES lines of what its loop streams."""
from __future__ import annotations

import dataclasses

import pytest

from iosim.engine import simulator
from iosim.schedule.problem import Problem, RunConfig
from iosim.simulate import simulate

CAUSAL = RunConfig(algo="flash2", problem=Problem(batch=1, heads=16, seq_q=4096, head_dim=64, causal=True))
SMALL_L2 = 512 * 1024  # one head's K and V (1 MiB) do not fit: the causal-evicting regime


def _run(monkeypatch, lines, config=CAUSAL, l2=SMALL_L2):
    monkeypatch.setattr(simulator, "FINE_LINES", lines)
    return simulate(config, "h100-sxm-calibrated", l2_bytes=l2)


def test_longer_fine_steps_take_fewer_events_and_move_the_same_sm_bytes(monkeypatch):
    one, two, four = (_run(monkeypatch, n) for n in (1, 2, 4))
    assert one.kernels[0].regimes == ("causal_evicting",)
    # every CTA still reads and computes what it did: SM <-> L2 bytes and FLOPs do not depend on the step
    for run in (two, four):
        assert run.kernels[0].levels["l2"] == one.kernels[0].levels["l2"]
        assert run.kernels[0].flops == one.kernels[0].flops
    # a step spans more lines: fewer steps (each CTA's last step ends where its loop does, so not exactly half)
    assert four.events < 0.7 * two.events < 0.7 * 0.7 * one.events
    # DRAM at least what the kernel must read and write once (Q, K, V, O), whatever the step
    p = CAUSAL.problem
    compulsory = 4 * p.batch * p.heads * p.seq_q * p.head_dim * 2
    assert min(one.levels["hbm"].total, two.levels["hbm"].total, four.levels["hbm"].total) >= 0.99 * compulsory
    assert two.time_s == pytest.approx(one.time_s, rel=0.05)


@pytest.mark.parametrize("config, l2", [
    (CAUSAL, None),  # the L2 holds a head's K and V: steps of up to MAX_STEPS a loop, not line-long ones
    (CAUSAL.with_(problem=dataclasses.replace(CAUSAL.problem, causal=False)), SMALL_L2),  # no mask: lockstep waves
])
def test_fine_lines_change_nothing_outside_the_causal_evicting_regime(monkeypatch, config, l2):
    a, b = _run(monkeypatch, 1, config, l2), _run(monkeypatch, 4, config, l2)
    assert not any("causal_evicting" in k.regimes for k in a.kernels)
    assert (a.levels["hbm"].total, a.time_s, a.events) == (b.levels["hbm"].total, b.time_s, b.events)
