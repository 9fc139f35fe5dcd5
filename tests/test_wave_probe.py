"""The wave probe (iosim.kernels.wave_probe): its shapes keep the work and set the waves it says, and the launchers its
predictions capture (experiments/probes/wave_kernels.py) compute attention, on the CPU."""
from __future__ import annotations

import importlib.util
import math
import os
from pathlib import Path

import pytest

from iosim.kernels.wave_probe import POINTS, WAVES, shapes

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("point", POINTS)
def test_one_wave_and_many_do_the_same_work_in_the_waves_named(point):
    """One wave: a Q block a CTA, exactly c CTAs an SM; the many-wave grid: WAVES times the CTAs, each a WAVES-th
    of the passes, the same FLOPs (4 · heads · Nq · Nk · d)."""
    bm, bn, d, _, c, _ = point
    sms = 132
    (_, one, h1, kv1, nq1, nk1), (_, many, h8, kv8, nq8, nk8), _ = shapes(point, sms)
    assert (one, many) == (1, WAVES) and kv1 == kv8 == 1
    assert h1 * math.ceil(nq1 / bm) == c * sms  # every SM's c slots once
    assert h8 * math.ceil(nq8 / bm) == WAVES * c * sms
    assert nk8 // bn * WAVES == nk1 // bn  # passes a CTA
    assert 4 * h1 * nq1 * nk1 * d == 4 * h8 * nq8 * nk8 * d


def _launchers():
    torch = pytest.importorskip("torch")
    pytest.importorskip("triton")
    spec = importlib.util.spec_from_file_location("wave_kernels", REPO / "experiments" / "probes" / "wave_kernels.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return torch, module


@pytest.mark.parametrize("fn", ["ours_s3", "f2_s2", "f2_s4"])
def test_the_probes_launchers_compute_attention(fn):
    """Each launcher against softmax(q kᵀ/√d) v in float64 on shapes that are not multiples of its 64 × 64 tiles, one K/V
    head shared by three query heads (as the probe's grids share one)."""
    torch, module = _launchers()
    device = "cpu" if os.environ.get("TRITON_INTERPRET") == "1" else "cuda"
    gen = torch.Generator().manual_seed(7)
    q, k, v = (torch.randn(s, generator=gen).to(device=device, dtype=torch.float16)
               for s in ((1, 3, 97, 64), (1, 1, 150, 64), (1, 1, 150, 64)))
    out = getattr(module, fn)(q, k, v)
    kk, vv = k.double().expand(1, 3, 150, 64), v.double().expand(1, 3, 150, 64)
    ref = torch.softmax(q.double() @ kk.transpose(-1, -2) / 8.0, -1) @ vv
    torch.testing.assert_close(out.double(), ref, atol=1e-2, rtol=1e-2)
