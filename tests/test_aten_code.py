"""PyTorch's softmax priced from what its kernel executed (iosim.kernels.aten_probe), not from an estimate."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from iosim.costs.code import _aten_softmax_variant, aten_softmax_code, compiled_codes
from iosim.schedule.build import build_schedule
from iosim.schedule.problem import Problem, RunConfig

REPO = Path(__file__).resolve().parents[1]
PROBE = json.loads((REPO / "experiments/measurements/h200/aten/aten_probe.json").read_text())["results"]


@pytest.mark.parametrize("n, variant", [(512, "softmax_warp_forward"), (2048, "softmax_warp_forward"),
                                        (2049, "cunn_SoftMaxForwardReg"), (9216, "cunn_SoftMaxForwardReg"),
                                        (9217, "cunn_SoftMaxForwardSmem")])
def test_the_kernel_follows_atens_dispatch(n, variant):
    assert _aten_softmax_variant(n) == variant


@pytest.mark.parametrize("n", [int(k) for k in PROBE])
def test_at_a_probed_length_the_code_is_what_the_kernel_executed(n):
    # the probe ran that kernel (its name says so) and executed exactly this many warp instructions
    measured = PROBE[str(n)]
    assert _aten_softmax_variant(n) in measured["name"]
    code = aten_softmax_code(n, 4, "sm_90")
    assert code.outside.instructions * 4 == pytest.approx(measured["inst_executed"] / measured["elements"] * n)
    assert code.outside.pipes["xu"] * 4 == pytest.approx(measured["inst_pipes"]["xu"] / measured["elements"] * n)


def test_between_probed_lengths_of_one_kernel_it_interpolates_and_never_across_kernels():
    lo, hi = (PROBE[k]["inst_executed"] / PROBE[k]["elements"] for k in ("3072", "6144"))
    per_elem = aten_softmax_code(4096, 1, "sm_90").outside.instructions / 4096
    assert min(lo, hi) < per_elem < max(lo, hi)
    # 2048 is the warp kernel's: the register kernel's 3072 is not mixed in
    warp = PROBE["1536"]["inst_executed"] / PROBE["1536"]["elements"]
    assert aten_softmax_code(2048, 1, "sm_90").outside.instructions / 2048 == pytest.approx(warp)
    assert aten_softmax_code(4096, 1, "sm_80") is None  # an architecture the probe never ran on


def test_eager_attention_runs_atens_softmax_and_ours_runs_its_own():
    problem = Problem(batch=1, heads=2, seq_q=4096)
    eager = build_schedule(RunConfig(algo="standard_eager", problem=problem))
    codes = dict(zip([k.name for k in eager.kernels], compiled_codes(eager, "sm_90")))
    assert codes["softmax"].source.startswith("ncu: ATen cunn_SoftMaxForwardReg")
    ours = build_schedule(RunConfig(algo="standard", problem=problem))
    assert not any(c is not None and "ATen" in c.source for c in compiled_codes(ours, "sm_90"))
