"""fp8 (e4m3) attention in the simulator: the bytes of e4m3 Q, K, V and an fp16 O, the tensor rate of
the fp8 tile loop as calibrated (or the datasheet's fp8 peak over fp16's where it was not), and the
refusals. Its fidelity against the H200's counters is tests/test_fidelity.py's (h200/fp8)."""
from __future__ import annotations

from dataclasses import replace

import pytest

from iosim.costs import closed_forms
from iosim.costs.issue import occupancy_curve, tensor_rate, tensor_rates
from iosim.hardware.profile import load_profile
from iosim.schedule.problem import ConfigError, Problem, RunConfig, Tiling
from iosim.simulate import simulate

UNBOUNDED = 1 << 40


def fp8(**problem):
    base = dict(batch=2, heads=4, seq_q=300, head_dim=64, dtype="fp8")
    return RunConfig(algo="flash2", problem=Problem(**(base | problem)), tiling=Tiling(block_m=64, block_n=32),
                     mode="plain")


def test_fp8_moves_one_byte_an_input_and_two_an_output():
    """Unbounded L2: Q, K, V read once at 1 byte an element; O written at 2 (fp16) and the LSE at 4."""
    c = fp8(kv_heads=2, causal=True)
    r = simulate(c, "h200", l2_bytes=UNBOUNDED)
    p = c.problem
    assert r.levels["hbm"].read_bytes == closed_forms.compulsory_bytes(c)["read"] == \
        (p.bh + 2 * p.bh_kv) * p.seq_q * p.head_dim
    assert r.levels["hbm"].write_bytes == p.bh * p.seq_q * (p.head_dim * 2 + 4)


def test_fp8_without_l2_is_the_tiled_count():
    c = fp8(seq_q=257)
    hbm = simulate(c.with_(mode="ncu"), "h200", l2_bytes=0).levels["hbm"]
    expected = closed_forms.no_cache_bytes(c)
    assert (hbm.read_bytes, hbm.write_bytes) == (expected["read"], expected["write"])
    half = simulate(replace(c, problem=replace(c.problem, dtype="fp16")).with_(mode="ncu"), "h200", l2_bytes=0)
    assert hbm.read_bytes * 2 == half.levels["hbm"].read_bytes  # the same tiles, half the bytes


def test_fp8_tensor_rate_is_the_fp8_loops_own_where_calibrated():
    """The H200's calibration ran the tile loop in fp8 at several occupancies: an fp8 kernel takes that
    series (freed of the loop's own SIMT code like fp16's), not fp16's doubled; a profile without it
    takes fp16's times the datasheets' fp8 / fp16 peak ratio."""
    cal = load_profile("h200-calibrated")
    args = (128, 8, 1, (128, 64), 3)  # head dim, warps, CTAs per SM, tile, stages
    curve = occupancy_curve(tensor_rates(cal), 128, (128, 64), 8, cal.sm_count, 3, dtype="fp8")
    assert curve and tensor_rate(cal, "fp8", "fwd", *args) == pytest.approx(curve[0][1])
    assert 1.2 < tensor_rate(cal, "fp8", "fwd", *args) / tensor_rate(cal, "fp16", "fwd", *args) < 2.0
    h100 = load_profile("h100-sxm-calibrated")  # its fp8 loops measured too (run 2): left out, as a profile without
    raw = {k: v for k, v in h100.calibration["raw"].items() if "fp8" not in k}
    bare = replace(h100, calibration={**h100.calibration, "raw": raw})
    assert tensor_rate(bare, "fp8", "fwd", *args) == pytest.approx(
        tensor_rate(bare, "fp16", "fwd", *args) * h100.tensor_flops["fp8"] / h100.tensor_flops["fp16"])
    assert tensor_rate(h100, "fp8", "fwd", *args) != pytest.approx(tensor_rate(bare, "fp8", "fwd", *args))


@pytest.mark.parametrize("change, field", [
    (dict(backward=True), "dtype"),
    (dict(algo="standard"), "dtype"),
    (dict(impl="sdpa_cudnn"), "dtype"),
    (dict(seq_lens=(300, 200)), "dtype"),
])
def test_fp8_refusals_name_the_field(change, field):
    algo = change.pop("algo", "flash2")
    impl = change.pop("impl", None)
    c = fp8(**change)
    c = RunConfig(algo=algo, problem=c.problem, impl=impl) if impl or algo != "flash2" else c
    with pytest.raises(ConfigError, match=f"^{field}: fp8"):
        simulate(c, "h200")


def test_fp8_needs_fp8_tensor_cores():
    with pytest.raises(ConfigError, match="^dtype: fp8 needs fp8 tensor cores: the a100-sxm4-80gb profile has none"):
        simulate(fp8(), "a100")
