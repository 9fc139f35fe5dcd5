"""Each CTA's own pace (iosim.engine.pace): factors drawn once per CTA from the profile's measured spread."""
from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from iosim.engine.pace import pace_factors
from iosim.hardware.profile import ProfileError, build_profile, load_profile, read_profile_dict
from iosim.schedule.problem import Problem, RunConfig
from iosim.simulate import simulate


def test_factors_have_mean_one_and_the_asked_spread_and_are_the_same_every_time():
    f = pace_factors(200_000, 0.01, seed=3)
    assert np.array_equal(f, pace_factors(200_000, 0.01, seed=3))
    assert not np.array_equal(f, pace_factors(200_000, 0.01, seed=4))  # another kernel draws its own
    assert abs(f.mean() - 1.0) < 4 * 0.01 / np.sqrt(len(f))  # lognormal with mean 1
    assert np.log(f).std() == pytest.approx(0.01, rel=0.01)
    assert np.array_equal(pace_factors(5, 0.0, seed=0), np.ones(5))


def _profile(spread):
    return dataclasses.replace(load_profile("h100-sxm-calibrated"), cta_pace_spread=spread)


CAUSAL = RunConfig(algo="flash2", problem=Problem(batch=1, heads=16, seq_q=4096, head_dim=64, causal=True))
SMALL_L2 = 512 * 1024  # one head's K and V (1 MiB) do not fit: the causal-evicting regime, 512 CTAs in two waves


def test_a_spread_moves_long_causal_cta_starts_and_nothing_else():
    plain, spread = simulate(CAUSAL, _profile(None), l2_bytes=SMALL_L2), simulate(CAUSAL, _profile(0.01), l2_bytes=SMALL_L2)
    assert spread.kernels[0].regimes == ("causal_evicting",)
    # the CTAs after the first wave run at their own paces: other CTAs meet in the L2, other bytes come from HBM
    assert (spread.levels["hbm"].total, spread.time_s) != (plain.levels["hbm"].total, plain.time_s)
    # a mean-one factor moves the kernel's time by about its spread, not more
    assert spread.time_s == pytest.approx(plain.time_s, rel=0.05)
    # bytes that do not depend on timing are the same: SM <-> L2 traffic, and the same run twice is the same run
    assert spread.kernels[0].levels["l2"] == plain.kernels[0].levels["l2"]
    again = simulate(CAUSAL, _profile(0.01), l2_bytes=SMALL_L2)
    assert (again.levels["hbm"].total, again.time_s) == (spread.levels["hbm"].total, spread.time_s)
    # where the L2 holds a head's K and V, or without a causal mask, every CTA keeps the common pace
    for config, l2 in ((CAUSAL, None), (CAUSAL.with_(problem=dataclasses.replace(CAUSAL.problem, causal=False)), SMALL_L2)):
        a, b = simulate(config, _profile(None), l2_bytes=l2), simulate(config, _profile(0.01), l2_bytes=l2)
        assert (a.levels["hbm"].total, a.time_s, a.events) == (b.levels["hbm"].total, b.time_s, b.events)


def test_a_spread_beyond_half_is_refused_naming_the_field():
    data = read_profile_dict("h100-sxm-calibrated")
    data["fields"]["cta_pace_spread"] = {"value": 0.9, "unit": "fraction", "source": "a typo"}
    with pytest.raises(ProfileError, match="cta_pace_spread"):
        build_profile(data, "typo.yaml")
