"""A lone CTA's steps whose every load hits, and its spill frame where all of it hits, take Engine._cohort's short
way (Engine._hit_form, Engine._frame_hits): exactly the counts, the L2's order and the times of the steps they stand
for, with fewer calls into the L2's own code (the reference: the same run with the short way off)."""
from __future__ import annotations

import dataclasses

import pytest

from iosim.costs.issue import KernelCode, LoopCode
from iosim.engine import simulator
from iosim.engine.l2 import L2Cache
from iosim.schedule.problem import Problem, RunConfig, Tiling
from iosim.simulate import simulate

CAUSAL = RunConfig(algo="flash2", problem=Problem(batch=1, heads=16, seq_q=4096, head_dim=64, causal=True))
SMALL_L2 = 512 * 1024  # one head's K and V (1 MiB) do not fit: causal CTAs re-read what the L2 lost
MANY_HEADS = CAUSAL.with_(problem=dataclasses.replace(CAUSAL.problem, heads=64))  # CTAs beyond the first wave


def _backward(config: RunConfig, **changes) -> RunConfig:
    return dataclasses.replace(config, problem=dataclasses.replace(config.problem, backward=True, **changes))


# a forward that spills 240 bytes a thread, reloaded and stored every pass: 16 MB of frames on the H100's slots
SPILLING = KernelCode(loop=LoopCode(500.0, {"fma": 300.0}, local_loads=60.0, local_stores=60.0),
                      regs_per_thread=128, shared_bytes=48 * 1024, local_bytes=240)
SPILL_CONFIG = RunConfig(algo="flash2", problem=Problem(batch=1, heads=32, seq_q=4096, head_dim=64, causal=True),
                         tiling=Tiling(block_m=128, block_n=64, warps=4, stages=2), mode="ncu")


CASES = [
    pytest.param(CAUSAL, SMALL_L2, id="causal-evicting"),
    pytest.param(MANY_HEADS, None, id="causal-l2-holds-it"),
    pytest.param(CAUSAL.with_(tiling=Tiling(grid_order="heads")), SMALL_L2, id="heads-order"),
    pytest.param(_backward(CAUSAL, heads=8, kv_heads=2, seq_q=8192), None, id="gqa-fwd-bwd"),
    pytest.param(dataclasses.replace(_backward(CAUSAL, heads=8, kv_heads=8, seq_q=8192), dq="fused"), None, id="dq-fused"),
    pytest.param(CAUSAL.with_(tiling=Tiling(persistent=132)), SMALL_L2, id="persistent"),
    pytest.param(SPILL_CONFIG, 40 << 20, id="spill-frames-pinned"),
    pytest.param(SPILL_CONFIG, 12 << 20, id="spill-frames-thrash"),
    pytest.param(_backward(SPILL_CONFIG), 40 << 20, id="spill-frames-backward"),
]


def _run(monkeypatch, config, l2, quick: bool, codes=None):
    """The run, and how many accesses it served through the L2's own code."""
    calls = [0]
    serve = L2Cache.access_pieces

    def counted(self, *args, **kwargs):
        calls[0] += 1
        return serve(self, *args, **kwargs)

    with monkeypatch.context() as m:
        m.setattr(L2Cache, "access_pieces", counted)
        if not quick:
            m.setattr(simulator.Engine, "_hit_form", lambda self, ph, step: False)
            m.setattr(simulator.Engine, "_frame_hits", lambda self, spill, now, who: False)
        return simulate(config, "h100-sxm-calibrated", l2_bytes=l2, codes=codes), calls[0]


@pytest.mark.parametrize("config, l2", CASES)
def test_the_short_way_changes_no_count_and_no_time(monkeypatch, config, l2):
    codes = None
    if config.tiling == SPILL_CONFIG.tiling:  # the forward spills, and the backward (dQ atomic: its tiles the usual way)
        codes = [SPILLING, None, None, SPILLING, None] if config.problem.backward else [SPILLING]
    quick, served = _run(monkeypatch, config, l2, True, codes)
    slow, served_slow = _run(monkeypatch, config, l2, False, codes)
    assert served < served_slow  # the short way served some steps: the L2's own code fewer
    assert quick.events == slow.events  # a step each, as before
    assert quick.final_writeback_bytes == slow.final_writeback_bytes
    for a, b in zip(quick.kernels, slow.kernels, strict=True):
        assert (a.levels, a.l2_hit_bytes, a.l2_lookup_bytes, a.flops) == (b.levels, b.l2_hit_bytes, b.l2_lookup_bytes,
                                                                          b.flops), a.name
        assert a.time_s == b.time_s, a.name
    assert quick.time_s == slow.time_s


def test_most_steps_of_a_long_causal_forward_take_the_short_way(monkeypatch):
    """At N = 16K, d = 128 a head's K and V (8 MiB) exceed a 6 MB L2: causal CTAs after the first wave run alone,
    a line a step, and but for the lines the CTAs ahead of them lost, each step hits."""
    config = RunConfig(algo="flash2", problem=Problem(batch=1, heads=2, seq_q=16384, head_dim=128, causal=True))
    quick, served = _run(monkeypatch, config, 6_000_000, True)
    slow, served_slow = _run(monkeypatch, config, 6_000_000, False)
    assert quick.kernels[0].regimes == ("causal_evicting",)
    assert served < 0.3 * served_slow
    assert quick.kernels[0].levels == slow.kernels[0].levels and quick.time_s == slow.time_s
    assert quick.kernels[0].l2_hit_bytes == slow.kernels[0].l2_hit_bytes
