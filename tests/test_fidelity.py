"""Fidelity guarded in CI: every committed measurement set validated against its ceilings.

One test per set, spread over the workers (each validates its own set: nothing is shared between them).
"""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from iosim.measure.measurement import load_measurement
from iosim.measure.validate import summary, validate

REPO = Path(__file__).resolve().parents[1]
THRESHOLDS = json.loads((REPO / "tests" / "fidelity_thresholds.json").read_text())["sets"]


@pytest.mark.parametrize("ceilings", THRESHOLDS, ids=[t["data"].split("measurements/")[-1] for t in THRESHOLDS])
def test_fidelity_does_not_regress(ceilings):
    """On every committed set, the medians (and worst cases) of |error| stay at or below the committed ceilings."""
    impls = tuple(ceilings["impls"]) if "impls" in ceilings else None  # a set's cases of these implementations
    stats = summary(validate(load_measurement(REPO / ceilings["data"]), impls=impls)[0])
    for metric, ceiling in ceilings["median_abs_error"].items():
        assert stats[metric]["median_abs_error"] <= ceiling, (metric, stats[metric])
    for metric, ceiling in ceilings["max_abs_error"].items():
        assert stats[metric]["max_abs_error"] <= ceiling, (metric, stats[metric]["worst"])
