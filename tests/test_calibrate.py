"""Turning microbenchmark numbers into a calibrated profile (kernels/calibrate.py), and the microbenchmarks'
helpers and kernels (kernels/microbench.py); no GPU needed.

The kernels run on tiny shapes (under TRITON_INTERPRET=1 without a GPU) against float64 references; what
the tile loops compile to for sm_90 is checked ahead of time with the cuobjdump Triton ships.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from types import SimpleNamespace

import pytest

from iosim.hardware.profile import ProfileError, load_profile, read_profile_dict, write_profile
from iosim.kernels.calibrate import calibrated_profile, summary

H100 = {"gpu": "NVIDIA H100 80GB HBM3", "date": "2026-11-25"}


def test_calibrated_profile_replaces_fractions_with_measured_values():
    base = read_profile_dict("h100-sxm")
    raw = {"dram_copy": 2.96e12, "l2_read": 6.0e12, "tile_fp16_d64": 5.0e14, "tile_fp16_d128": 6.0e14,
           "launch_triton_empty": 2.5e-6}
    profile, rows = calibrated_profile(base, raw, H100)
    fields = profile["fields"]
    assert fields["dram_efficiency"]["value"] == pytest.approx(2.96 / 3.35, abs=1e-4)
    assert fields["l2_efficiency"]["value"] == pytest.approx(6.0 / 12.0)
    assert fields["tensor_efficiency"]["value"] == pytest.approx(600 / 989.4, abs=1e-4)
    assert "128x64x128 fp16 tiles" in fields["tensor_efficiency"]["note"]  # flash2's default forward tiles
    assert (fields["launch_overhead"]["value"], fields["launch_overhead"]["unit"]) == (2.5, "us")
    source = "measured: iosim calibrate, NVIDIA H100 80GB HBM3, 2026-11-25"
    assert {r[0] for r in rows} == {"dram_efficiency", "l2_efficiency", "tensor_efficiency", "launch_overhead"}
    assert all(fields[r[0]]["source"] == source for r in rows)
    assert fields["hbm_bandwidth"] == base["fields"]["hbm_bandwidth"]  # datasheet values untouched
    assert profile["calibration"]["raw"]["l2_read"] == 6.0e12
    assert list(profile)[:len(base)] == list(base)


def test_calibrated_profile_loads_and_refuses_a_fraction_above_the_datasheet(tmp_path):
    base = read_profile_dict("h100-sxm")
    # An H200's copy bandwidth (4.27 TB/s) against the H100's datasheet 3.35 TB/s: the wrong profile.
    raw = {"dram_copy": 4.27e12, "l2_read": 12.2e12, "launch_triton_empty": 1.3e-6}
    profile, rows = calibrated_profile(base, raw, {"gpu": "NVIDIA H200", "date": "2026-11-25"})
    assert profile["fields"]["dram_efficiency"] == base["fields"]["dram_efficiency"]
    assert profile["fields"]["l2_efficiency"] == base["fields"]["l2_efficiency"]  # 1.017 > 1: refused too
    assert "NOT WRITTEN" in summary(rows)
    write_profile(profile, tmp_path / "cal.yaml")
    loaded = load_profile(tmp_path / "cal.yaml")
    assert loaded.launch_overhead == pytest.approx(1.3e-6)
    assert loaded.calibration["gpu"] == "NVIDIA H200"


def test_latencies_are_written_in_the_profiles_units_and_an_l2_latency_at_dram_speed_is_refused():
    base = read_profile_dict("h100-sxm")
    good, _ = calibrated_profile(base, {"latency_l2": 260e-9, "latency_dram": 640e-9}, H100)
    assert (good["fields"]["l2_latency"]["value"], good["fields"]["l2_latency"]["unit"]) == (260.0, "ns")
    assert good["fields"]["dram_latency"]["value"] == pytest.approx(640.0)
    # A chase that missed the L2 (flushed before each run) measures DRAM: refused, the base value stays.
    profile, rows = calibrated_profile(base, {"latency_l2": 650e-9, "latency_dram": 640e-9}, H100)
    assert profile["fields"].get("l2_latency") == base["fields"].get("l2_latency")
    assert profile["fields"]["dram_latency"]["value"] == pytest.approx(640.0)
    row = next(r for r in rows if r[0] == "l2_latency")
    assert row[2] is None and "NOT WRITTEN" in row[4] and "not below the DRAM latency 640 ns" in row[4]
    assert "l2_latency" in summary(rows) and "\n" not in row[4]
    # Without a DRAM measurement, the base profile's DRAM latency is the bound.
    base["fields"]["dram_latency"] = {"value": 0.6, "unit": "us", "source": "test"}
    alone, rows = calibrated_profile(base, {"latency_l2": 700e-9}, H100)
    assert "l2_latency" not in alone["fields"] and "DRAM latency 600 ns" in rows[0][4]
    assert calibrated_profile(base, {"latency_l2": 250e-9}, H100)[0]["fields"]["l2_latency"]["value"] == 250.0


def test_kernel_start_cost_is_the_fixed_span_less_the_first_loads_latency():
    base = read_profile_dict("h100-sxm")
    raw = {"latency_dram": 340e-9, "cta_span_fixed_s": 3.8e-6, "cta_span_iter_s": 0.79e-6, "cta_each_s": 2.3e-6}
    profile, _ = calibrated_profile(base, raw, H100)
    field = profile["fields"]["kernel_start_overhead"]
    assert (field["value"], field["unit"]) == (pytest.approx(3.46), "us")
    # a fixed part shorter than the DRAM latency can not be: refused, nothing written
    profile, rows = calibrated_profile(base, {**raw, "cta_span_fixed_s": 0.2e-6}, H100)
    assert "kernel_start_overhead" not in profile["fields"]
    assert "NOT WRITTEN" in next(r for r in rows if r[0] == "kernel_start_overhead")[4]


def test_a_unit_foreign_to_the_field_is_refused():
    base = read_profile_dict("h100-sxm")
    base["fields"]["launch_overhead"] = dict(base["fields"]["launch_overhead"], unit="GB/s")
    with pytest.raises(ValueError, match="launch_overhead: unit 'GB/s' is not one of s, ms, us, ns"):
        calibrated_profile(base, {"launch_triton_empty": 2.5e-6}, H100)


def test_the_writer_validates(tmp_path):
    base = read_profile_dict("h100-sxm")
    profile, _ = calibrated_profile(base, {"dram_copy": 2.96e12}, H100)
    profile["fields"]["dram_efficiency"]["value"] = -1
    with pytest.raises(ProfileError, match="dram_efficiency"):
        write_profile(profile, tmp_path / "bad.yaml")
    assert not (tmp_path / "bad.yaml").exists()


def test_sm_clock_and_solo_tile_efficiency_are_written_and_implausible_ones_refused():
    base = read_profile_dict("h200-sxm")
    raw = {"sm_clock_dot": 1.755e9, "sm_clock_fma": 1.98e9, "tile_solo_fp16_128x64x64w4": 2.6e14,
           "tile_solo_fp16_128x64x64w4_sms": 132.0, "tile_solo_fp16_128x64x128w8": 3.0e14,
           "tile_solo_fp16_128x64x128w8_sms": 132.0}
    profile, rows = calibrated_profile(base, raw, H100)
    fields = profile["fields"]
    assert (fields["sm_clock"]["value"], fields["sm_clock"]["unit"]) == (1755.0, "MHz")
    peak = load_profile("h200-sxm").tensor_flops["fp16"]
    assert fields["tensor_efficiency_solo"]["value"] == pytest.approx(2.8e14 / peak, abs=1e-4)
    assert profile["calibration"]["raw"]["tile_solo_fp16_128x64x64w4_sms"] == 132.0
    # A clock far from the boost clock, CTAs that shared SMs, a fraction above 1, a latency of 0: refused.
    bad = {"sm_clock_dot": 5.0e9, "tile_solo_fp16_128x64x64w4": 2.6e14, "tile_solo_fp16_128x64x64w4_sms": 66.0,
           "dram_copy": 9.9e12, "latency_dram": 0.0}
    profile, rows = calibrated_profile(base, bad, H100)
    refused = {r[0]: r[4] for r in rows if r[2] is None}
    assert set(refused) == {"sm_clock", "tensor_efficiency_solo", "dram_efficiency", "dram_latency"}
    assert "outside 0.5-1.5x the boost clock" in refused["sm_clock"]
    assert "shared SMs" in refused["tensor_efficiency_solo"] and "above 1" in refused["dram_efficiency"]
    assert "sm_clock" not in profile["fields"] or profile["fields"]["sm_clock"] == base["fields"].get("sm_clock")


def test_write_rates_become_fractions_of_the_datasheet_and_impossible_ones_are_refused():
    base = read_profile_dict("h200-sxm")  # HBM 4.8 TB/s, L2 12 TB/s
    profile, rows = calibrated_profile(base, {"dram_write": 3.6e12, "l2_write": 6.0e12}, H100)
    assert profile["fields"]["dram_write_efficiency"]["value"] == pytest.approx(0.75)
    assert profile["fields"]["l2_write_efficiency"]["value"] == pytest.approx(0.5)
    profile, rows = calibrated_profile(base, {"l2_write": 13e12}, H100)
    refused = {r[0]: r[4] for r in rows if r[2] is None}
    assert "above 1" in refused["l2_write_efficiency"] and "l2_write_efficiency" not in profile["fields"]


def test_a_read_stream_becomes_the_read_efficiency_and_one_above_the_datasheet_is_refused():
    base = read_profile_dict("h200-sxm")  # HBM 4.8 TB/s
    profile, _ = calibrated_profile(base, {"dram_read_stream": 4.56e12}, H100)
    assert profile["fields"]["dram_read_efficiency"]["value"] == pytest.approx(0.95)
    assert load_profile("h200-sxm").dram_read_bandwidth is None  # not measured: reads go at the copy rate
    _, rows = calibrated_profile(base, {"dram_read_stream": 5e12}, H100)
    assert "above 1" in {r[0]: r[4] for r in rows if r[2] is None}["dram_read_efficiency"]


def test_a_later_partial_run_adds_its_numbers_and_changes_nothing_else(tmp_path):
    """fold: the run's new raw numbers and the fields made from them join the profile, bit for bit beside it."""
    from iosim.kernels.calibrate import fold
    from iosim.kernels.device import HarnessError

    base = read_profile_dict("h200-calibrated")  # without its read stream: what the fold adds
    base["fields"].pop("dram_read_efficiency", None)
    base["calibration"]["raw"].pop("dram_read_stream", None)
    write_profile(base, tmp_path / "base.yaml")
    base = read_profile_dict(tmp_path / "base.yaml")
    run = dict(read_profile_dict("h200-sxm"), calibration={"gpu": "NVIDIA H200", "date": "2026-12-01",
                                                         "raw": {"dram_read_stream": 4.6e12, "dram_copy": 1.0}})
    write_profile(run, tmp_path / "run.yaml")
    out = tmp_path / "folded.yaml"
    fold(tmp_path / "base.yaml", tmp_path / "run.yaml", out, progress=lambda _: None)
    folded = read_profile_dict(out)
    assert folded["fields"].pop("dram_read_efficiency")["value"] == pytest.approx(4.6 / 4.8, abs=1e-4)
    assert folded["fields"] == base["fields"]  # dram_copy was in the profile already: not taken
    raw = folded["calibration"]["raw"]
    assert raw.pop("dram_read_stream") == 4.6e12 and raw == base["calibration"]["raw"]
    assert folded["calibration"]["added"][-1]["raw"] == ["dram_read_stream"]
    assert load_profile(out).dram_read_bandwidth == pytest.approx(4.6e12, rel=1e-4)
    with pytest.raises(HarnessError, match="adds no raw number"):
        fold(out, tmp_path / "run.yaml", tmp_path / "again.yaml", progress=lambda _: None)


def test_raw_only_numbers_are_kept_and_implausible_ones_flagged():
    base = read_profile_dict("h200-sxm")  # 132 SMs, fp16 tensor peak 989.5 TFLOP/s, L2 12 TB/s
    good = {"tile_occ_fp16_128x64x64w4_c2": 5.1e14, "tile_occ_fp16_128x64x64w4_c2_ok_sms": 132.0,
            "tile_bwd_atomic_fp16_128x64x64w8_c1": 4.0e14, "tile_bwd_atomic_fp16_128x64x64w8_c1_bytes_per_s": 6.0e12,
            "tile_hmma_fp16_32x64x64w4": 3.0e14}
    profile, rows = calibrated_profile(base, good, H100)
    assert rows == [] and profile["fields"] == base["fields"]  # raw only: no field is touched
    assert profile["calibration"]["raw"] == good
    assert "tile_*_bytes_per_s" in profile["calibration"]["raw_units"] and "*_ok_sms" in profile["calibration"]["raw_units"]
    # CTAs that did not sit c per SM, a tile rate above the datasheet peak, a rate of 0: kept in the raw
    # block, flagged in the summary.
    bad = {"tile_softmax_fp16_128x64x64w4_c2": 4.0e14, "tile_softmax_fp16_128x64x64w4_c2_ok_sms": 120.0,
           "tile_occ_fp16_128x64x64w4_c1": 1.2e15, "tile_bwd_plain_fp16_64x64x64w4_c2": 0.0}
    profile, rows = calibrated_profile(base, bad, H100)
    flagged = {r[0]: r[4] for r in rows}
    assert set(flagged) == {"tile_softmax_fp16_128x64x64w4_c2_ok_sms", "tile_occ_fp16_128x64x64w4_c1",
                            "tile_bwd_plain_fp16_64x64x64w4_c2"}
    assert all(why.startswith("FLAGGED (kept in calibration.raw)") for why in flagged.values())
    assert "only 120 of 132 SMs ran exactly 2 CTAs" in flagged["tile_softmax_fp16_128x64x64w4_c2_ok_sms"]
    assert "above the datasheet tensor_flops_fp16 989.5 TFLOP/s" in flagged["tile_occ_fp16_128x64x64w4_c1"]
    assert profile["calibration"]["raw"] == bad and profile["fields"] == base["fields"]
    assert "FLAGGED" in summary(rows)
    # an fp8 loop is held to the fp8 peak (1979 TFLOP/s on the H200): above fp16's is plausible, above fp8's not
    fp8 = {"tile_occ_fp8_128x64x128w4s3_c2": 1.2e15, "tile_occ_fp8_128x64x128w4_c2": 2.1e15}
    flagged = {r[0]: r[4] for r in calibrated_profile(base, fp8, H100)[1]}
    assert set(flagged) == {"tile_occ_fp8_128x64x128w4_c2"} and "tensor_flops_fp8 1979.0" in flagged.popitem()[1]


# ---------------------------------------------------------------------------------------------
# The microbenchmarks' pure helpers (kernels/microbench.py)
# ---------------------------------------------------------------------------------------------
# An H100/H200 as torch reports it: 64 Ki registers, 228 KiB of shared memory per SM of which one CTA may
# opt in to 227 KiB, 2048 threads.
SM90 = SimpleNamespace(regs_per_multiprocessor=65536, shared_memory_per_multiprocessor=233472,
                       shared_memory_per_block_optin=232448, max_threads_per_multi_processor=2048, warp_size=32)


@pytest.mark.parametrize("n_regs, shared, warps, allow", [
    # 186 regs: 5952 per warp, rounded to 6144; a sub-partition's 16384 hold 2 such warps: 8 warps, 2 CTAs
    # of 4. 49152 + 1024 reserved B: 4 CTAs in 233472 B. (The 128x64x64 w4 tile loop, Triton 3.9, sm_90.)
    (186, 49152, 4, {"registers": 2, "shared memory": 4, "threads": 16}),
    (168, 0, 4, {"registers": 3, "shared memory": 228, "threads": 16}),  # 5376 = 21 units: 3 per sub-partition
    (169, 0, 4, {"registers": 2, "shared memory": 228, "threads": 16}),  # 5408, rounded up to 5632: 2
    (138, 98304, 8, {"registers": 1, "shared memory": 2, "threads": 8}),  # 4608: 3 per sub-partition, 12 warps
    (72, 24576, 4, {"registers": 7, "shared memory": 9, "threads": 16}),  # 2304: 7 per sub-partition; 25600 B
    (32, 65536, 4, {"registers": 16, "shared memory": 3, "threads": 16}),  # 66560 B per CTA
    (16, 0, 32, {"registers": 4, "shared memory": 228, "threads": 2}),  # 1024 threads per CTA
])
def test_ctas_per_sm_follows_the_occupancy_calculator(n_regs, shared, warps, allow):
    from iosim.kernels.microbench import SmLimits, ctas_per_sm

    limits = SmLimits.of(SM90)
    assert limits == SmLimits(regs=65536, shared=233472, reserved_shared=1024, threads=2048)
    assert ctas_per_sm(n_regs, shared, warps, limits) == allow


def test_sms_running_counts_sms_with_exactly_c_ctas():
    from iosim.kernels.microbench import sms_running

    assert sms_running([0, 0, 1, 1, 2, 2], 2) == 3
    assert sms_running([0, 0, 0, 1, 2, 2], 2) == 1  # SM 0 took three, SM 1 one
    assert sms_running([9, 5, 9, 5], 2) == 2  # %smid need not be dense
    assert sms_running([3, 4, 5], 1) == 3


# ---------------------------------------------------------------------------------------------
# The microbenchmarks' kernels, on tiny shapes (under TRITON_INTERPRET=1 without a GPU)
# ---------------------------------------------------------------------------------------------
def _kernel_env():
    """torch, the device the kernels run on, and the microbench module."""
    torch = pytest.importorskip("torch")
    pytest.importorskip("triton")
    from iosim.kernels import microbench

    return torch, "cpu" if os.environ.get("TRITON_INTERPRET") == "1" else "cuda", microbench


def _small_ints(torch, rows, cols, device, generator):
    """fp16 integers in [-2, 2]: every product and sum of the tile loops below is an integer far below
    2^11 (fp16) and 2^24 (fp32), so kernel and float64 reference agree exactly, whatever the order."""
    return torch.randint(-2, 3, (rows, cols), generator=generator).to(torch.float16).to(device)


def _visited(pid: int, iters: int, n: int) -> list[int]:
    return [(pid + i) % n for i in range(iters)]


def test_tile_loop_without_softmax_sums_the_tiles_products():
    torch, dev, mb = _kernel_env()
    g = torch.Generator().manual_seed(1)
    bm, bn, d, n_kv, ctas, iters = 16, 16, 32, 3, 2, 5  # 5 iterations over 3 tiles: some visited twice
    q, k, v = (_small_ints(torch, r, d, dev, g) for r in (bm, n_kv * bn, n_kv * bn))
    o = torch.full((ctas * bm, d), float("nan"), device=dev)
    mb.tile_loop(q, k, v, o, torch.zeros(ctas, dtype=torch.int32, device=dev), bn=bn, ctas=ctas, iters=iters,
                 warps=4, stages=2)
    tile = lambda x, j: x[j * bn:(j + 1) * bn].double().cpu()  # noqa: E731
    for pid in range(ctas):
        ref = sum((q.double().cpu() @ tile(k, j).T) @ tile(v, j) for j in _visited(pid, iters, n_kv))
        assert torch.equal(o[pid * bm:(pid + 1) * bm].double().cpu(), ref)


def test_streaming_tile_loop_reads_each_ctas_own_tiles_once():
    """miss_cost's STREAM variant: CTA pid sums the products of tiles pid·iters .. pid·iters + iters − 1."""
    torch, dev, mb = _kernel_env()
    g = torch.Generator().manual_seed(2)
    bm, bn, d, ctas, iters = 16, 16, 32, 2, 3
    q, k, v = (_small_ints(torch, r, d, dev, g) for r in (bm, ctas * iters * bn, ctas * iters * bn))
    o = torch.full((ctas * bm, d), float("nan"), device=dev)
    mb._tile_kernel()[(ctas,)](q, k, v, o, o, ctas * iters, 1.0, ITERS=iters, BM=bm, BN=bn, D=d, STREAM=True,
                               num_warps=4, num_stages=2)
    tile = lambda x, j: x[j * bn:(j + 1) * bn].double().cpu()  # noqa: E731
    for pid in range(ctas):
        ref = sum((q.double().cpu() @ tile(k, j).T) @ tile(v, j) for j in range(pid * iters, (pid + 1) * iters))
        assert torch.equal(o[pid * bm:(pid + 1) * bm].double().cpu(), ref)


def test_streaming_tile_loop_in_groups_reads_each_groups_tiles_once():
    """The convoy probe's variant: CTAs pid of one group (pid // group) all sum the products of that group's tiles."""
    torch, dev, mb = _kernel_env()
    g = torch.Generator().manual_seed(3)
    bm, bn, d, ctas, group, iters = 16, 16, 32, 5, 2, 3
    streams = -(-ctas // group)
    q, k, v = (_small_ints(torch, r, d, dev, g) for r in (bm, streams * iters * bn, streams * iters * bn))
    o = torch.full((ctas * bm, d), float("nan"), device=dev)
    mb._tile_kernel()[(ctas,)](q, k, v, o, o, streams * iters, 1.0, ITERS=iters, BM=bm, BN=bn, D=d, STREAM=True,
                               GROUP=group, num_warps=4, num_stages=2)
    tile = lambda x, j: x[j * bn:(j + 1) * bn].double().cpu()  # noqa: E731
    for pid in range(ctas):
        first = pid // group * iters
        ref = sum((q.double().cpu() @ tile(k, j).T) @ tile(v, j) for j in range(first, first + iters))
        assert torch.equal(o[pid * bm:(pid + 1) * bm].double().cpu(), ref)


def test_softmax_tile_loop_is_softmax_of_the_visited_tiles():
    torch, dev, mb = _kernel_env()
    g = torch.Generator().manual_seed(2)
    bm, bn, d, n_kv, ctas, iters = 16, 16, 32, 3, 2, 5
    q = torch.randn(bm, d, generator=g).to(torch.float16).to(dev)
    k = torch.randn(n_kv * bn, d, generator=g).to(torch.float16).to(dev)
    v = torch.randn(n_kv * bn, d, generator=g).to(torch.float16).to(dev)
    o = torch.full((ctas * bm, d), float("nan"), device=dev)
    scale = d ** -0.5
    mb.tile_loop(q, k, v, o, torch.zeros(ctas, dtype=torch.int32, device=dev), bn=bn, ctas=ctas, iters=iters,
                 warps=4, stages=2, softmax=True, qk_scale=scale * mb.LOG2E)
    for pid in range(ctas):
        rows = torch.cat([torch.arange(j * bn, (j + 1) * bn) for j in _visited(pid, iters, n_kv)])
        kk, vv = k.double().cpu()[rows], v.double().cpu()[rows]
        ref = torch.softmax(q.double().cpu() @ kk.T * scale, dim=-1) @ vv
        # P is rounded to fp16 before P V (as FlashAttention does), the row sum is not: each weight is off
        # by at most 2^-11 of itself, so each output by at most 2^-11 · max |v| (fp32 rounding is far below).
        err = (o[pid * bm:(pid + 1) * bm].double().cpu() - ref).abs().max()
        assert err <= 2**-11 * vv.abs().max()


@pytest.mark.parametrize("bn, bm", [(32, 16), (16, 16)])
def test_bwd_tile_loop_atomic_dq_tiles_add_up_to_the_registers_sum(bn, bm):
    torch, dev, mb = _kernel_env()
    g = torch.Generator().manual_seed(3)
    d, n_q, ctas, iters = 16, 3, 4, 5  # 4 CTAs x 5 iterations over 3 Q blocks: CTAs share dQ tiles
    q, do = (_small_ints(torch, n_q * bm, d, dev, g) for _ in range(2))
    k, v = (_small_ints(torch, bn, d, dev, g) for _ in range(2))
    ids = torch.zeros(ctas, dtype=torch.int32, device=dev)
    run = lambda dq, atomic: mb.bwd_tile_loop(q, do, k, v, out, dq, ids, bm=bm, ctas=ctas, iters=iters,  # noqa: E731
                                              warps=4, stages=2, atomic=atomic)
    out = torch.full((ctas * bn, d), float("nan"), device=dev)
    plain = torch.full((ctas * bm, d), float("nan"), device=dev)
    run(plain, False)
    out_plain = out.clone()
    atomic = torch.zeros(n_q * bm, d, device=dev)
    run(atomic, True)
    assert torch.equal(out, out_plain)  # dK + dV do not depend on where dQ goes
    qt, dot, k64, v64 = (x.double().cpu() for x in (q, do, k, v))
    blk = lambda x, j: x[j * bm:(j + 1) * bm]  # noqa: E731
    ref_atomic = torch.zeros(n_q * bm, d, dtype=torch.float64)
    for pid in range(ctas):
        dk = dv = dq = 0
        for j in _visited(pid, iters, n_q):
            st, dpt = k64 @ blk(qt, j).T, v64 @ blk(dot, j).T  # Sᵀ and dPᵀ
            dv, dk, dq = dv + st @ blk(dot, j), dk + dpt @ blk(qt, j), dq + dpt.T @ k64
            blk(ref_atomic, j).add_(dpt.T @ k64)
        assert torch.equal(out[pid * bn:(pid + 1) * bn].double().cpu(), dk + dv)
        assert torch.equal(plain[pid * bm:(pid + 1) * bm].double().cpu(), dq)
    assert torch.equal(atomic.double().cpu(), ref_atomic)
    # What the atomics gathered per Q block is, summed, what the CTAs kept in registers.
    assert torch.equal(atomic.view(n_q, bm, d).sum(0), plain.view(ctas, bm, d).sum(0))


@pytest.mark.parametrize("bn, bm, d", [(32, 16, 16), (16, 16, 32)])
def test_bwd_softmax_tile_loop_is_the_backward_of_the_visited_blocks(bn, bm, d):
    """The backward's softmax series computes what kernels/flash2.py's loop does with each visited Q block:
    P = exp2(S·scale − LSE), dV += Pᵀ dO, dS = P ⊙ (dP − D), dK += dSᵀ Q, dQ = dS K (in registers, or added
    atomically into the block's tile), against float64 with P and dS rounded to fp16 where the kernel rounds."""
    torch, dev, mb = _kernel_env()
    g = torch.Generator().manual_seed(4)
    n_q, ctas, iters, scale = 3, 4, 5, 0.3
    q, do = (torch.randn(n_q * bm, d, generator=g).to(torch.float16) for _ in range(2))
    k, v = (torch.randn(bn, d, generator=g).to(torch.float16) for _ in range(2))
    lse, delta = (torch.randn(n_q * bm, generator=g) for _ in range(2))
    ids = torch.zeros(ctas, dtype=torch.int32, device=dev)
    out = torch.full((ctas * bn, d), float("nan"), device=dev)
    plain = torch.full((ctas * bm, d), float("nan"), device=dev)
    atomic = torch.zeros(n_q * bm, d, device=dev)
    for dq, add in ((plain, False), (atomic, True)):
        mb.bwd_softmax_tile_loop(*(x.to(dev) for x in (q, do, lse, delta, k, v)), out, dq, ids, bm=bm, ctas=ctas,
                                 iters=iters, warps=4, stages=2, qk_scale=scale, atomic=add)
    q64, do64, k64, v64, lse64, delta64 = (x.double() for x in (q, do, k, v, lse, delta))
    blk = lambda x, j: x[j * bm:(j + 1) * bm]  # noqa: E731
    half = lambda x: x.to(torch.float16).double()  # noqa: E731
    ref_atomic = torch.zeros(n_q * bm, d, dtype=torch.float64)
    close = lambda got, want: (got.double().cpu() - want).abs().max() <= 2**-8 * want.abs().max() + 1e-3  # noqa: E731
    for pid in range(ctas):
        dk = dv = dq = 0
        for j in _visited(pid, iters, n_q):
            p_t = torch.exp2(k64 @ blk(q64, j).T * scale - blk(lse64, j)[None, :])
            ds_t = half(p_t * (v64 @ blk(do64, j).T - blk(delta64, j)[None, :]))
            dv, dk, dq = dv + half(p_t) @ blk(do64, j), dk + ds_t @ blk(q64, j), dq + ds_t.T @ k64
            blk(ref_atomic, j).add_(ds_t.T @ k64)
        assert close(out[pid * bn:(pid + 1) * bn], dk + dv)
        assert close(plain[pid * bm:(pid + 1) * bm], dq)
    assert close(atomic, ref_atomic)


def test_the_gpu_sessions_backward_steps_are_steps_calibrate_runs():
    """Every backward series experiments/gpu_session.sh asks ``iosim calibrate --only`` for (ba, bsm) is one of the
    calibration's steps: a misspelt name would measure nothing on a lent GPU."""
    import re
    from pathlib import Path

    from iosim.kernels import microbench as mb
    text = (Path(__file__).resolve().parents[1] / "experiments" / "gpu_session.sh").read_text().replace("\\\n", "")
    asked = {name.strip() for only in re.findall(r'--only "([^"]+)"', text) for name in only.split(",")
             if name.strip().startswith("bwd ")}
    assert {"bwd softmax 128x64x64w8 c=1", "bwd softmax 128x64x128w8 c=1"} <= asked
    assert asked <= {name for name, _ in mb._series_steps(None, print)}


def test_dram_stream_sums_each_ctas_own_share():
    torch, dev, mb = _kernel_env()
    ctas, per_cta, block = 3, 64, 16
    src = torch.randint(-4, 5, (ctas * per_cta,), generator=torch.Generator().manual_seed(3)).to(torch.float16)
    out = torch.zeros(ctas * block, dtype=torch.float32, device=dev)
    mb.dram_stream[(ctas,)](src.to(dev), out, per_cta, BLOCK=block)
    want = src.double().view(ctas, per_cta // block, block).sum(1)
    assert torch.equal(out.cpu().double().view(ctas, block), want)
    mb.dram_stream[(ctas,)](src.to(dev), out, per_cta, BLOCK=block, STRIDED=True)  # every ctas-th block
    want = src.double().view(per_cta // block, ctas, block).sum(0)
    assert torch.equal(out.cpu().double().view(ctas, block), want)


def test_l2_write_stores_every_visited_block():
    torch, dev, mb = _kernel_env()
    block, n_blocks, ctas, iters = 16, 13, 3, 2  # blocks (7·pid + i) mod 13: 0, 1, 7, 8, 1, 2
    dst = torch.full((n_blocks * block,), -1.0, device=dev)
    mb.l2_write_loop(dst, ctas, iters, block)
    written = {(pid * 7 + i) % n_blocks for pid in range(ctas) for i in range(iters)}
    assert written == {0, 1, 2, 7, 8}
    for b in range(n_blocks):
        want = torch.arange(block, dtype=torch.float32) if b in written else torch.full((block,), -1.0)
        assert torch.equal(dst[b * block:(b + 1) * block].cpu(), want)


# ---------------------------------------------------------------------------------------------
# What the tile loops compile to for sm_90 (ahead of time, no GPU)
# ---------------------------------------------------------------------------------------------
SASS_SCRIPT = textwrap.dedent('''
    import json, sys
    import torch
    from iosim.kernels import microbench as mb
    from iosim.kernels.sass import capture_launches, compile_sass

    def tiles(bm, bn, d, warps, softmax=False):
        q, k = torch.zeros(bm, d, dtype=torch.float16), torch.zeros(16 * bn, d, dtype=torch.float16)
        mb.tile_loop(q, k, k, torch.zeros(4 * bm, d), torch.zeros(4, dtype=torch.int32), bn=bn, ctas=4, iters=4096,
                     warps=warps, stages=2, softmax=softmax, record_sm=True)

    def bwd(atomic):
        q, k = torch.zeros(16 * 64, 64, dtype=torch.float16), torch.zeros(128, 64, dtype=torch.float16)
        mb.bwd_tile_loop(q, q, k, k, torch.zeros(4 * 128, 64), torch.zeros(16 * 64, 64), torch.zeros(4, dtype=torch.int32),
                         bm=64, ctas=4, iters=1024, warps=8, stages=2, atomic=atomic, record_sm=True)

    def bwd_softmax(atomic):
        q, k = torch.zeros(16 * 64, 64, dtype=torch.float16), torch.zeros(128, 64, dtype=torch.float16)
        rows = torch.zeros(16 * 64)
        mb.bwd_softmax_tile_loop(q, q, rows, rows, k, k, torch.zeros(4 * 128, 64), torch.zeros(16 * 64, 64),
                                 torch.zeros(4, dtype=torch.int32), bm=64, ctas=4, iters=1024, warps=8, stages=2,
                                 qk_scale=1.0, atomic=atomic, record_sm=True)

    def launcher():
        tiles(*mb.HMMA_TILE)
        tiles(128, 64, 64, 4)
        tiles(128, 64, 64, 4, softmax=True)
        bwd(False)
        bwd(True)
        bwd_softmax(False)
        bwd_softmax(True)

    _, launches = capture_launches(launcher)
    json.dump([compile_sass(launch).to_dict() for launch in launches], sys.stdout)
''')



@pytest.mark.sass
def test_tile_loops_compile_to_hmma_below_64_rows_and_to_hgmma_from_64(tmp_path):
    from iosim.costs.sass import KernelMix

    script = tmp_path / "tile_sass.py"
    script.write_text(SASS_SCRIPT)
    env = {**os.environ, "TRITON_INTERPRET": "0", "TRITON_CACHE_DIR": str(tmp_path / "cache")}
    run = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, env=env, timeout=600)
    assert run.returncode == 0, run.stderr[-3000:]
    mixes = [KernelMix.from_dict(m) for m in json.loads(run.stdout)]
    hmma, wgmma, softmax, bwd_plain, bwd_atomic, bwd_sm_plain, bwd_sm_atomic = mixes
    loop = lambda mix: mix.innermost()[0]  # noqa: E731
    assert all(len(m.innermost()) == 1 for m in mixes)
    # 32 × 64 × 64, 4 warps: mma.sync m16n8k16, (32·64·64) / (16·8·16) = 64 per matmul, two matmuls, over 4
    # warps: 32 HMMA per iteration (a multiple, should ptxas unroll), no HGMMA.
    assert loop(hmma).opcode("HGMMA") == 0 and loop(hmma).opcode("HMMA") % 32 == 0 < loop(hmma).opcode("HMMA")
    # 128 × 64 × 64, one warpgroup: wgmma m64nNk16, 128/64 row blocks × (64/16 for S + 64/16 for P V) = 16.
    for mix in (wgmma, softmax):
        assert loop(mix).opcode("HMMA") == 0 and loop(mix).opcode("HGMMA") % 16 == 0 < loop(mix).opcode("HGMMA")
    # The softmax variant: one exp2 (MUFU.EX2) per score element, 128·64 over 128 threads.
    assert loop(softmax).opcode("MUFU") >= 128 * 64 // 128 > loop(wgmma).opcode("MUFU")
    # The backward: five matmuls on HGMMA in both variants; only the atomic one reduces into global memory.
    reductions = lambda mix: sum(loop(mix).opcode(op) for op in ("RED", "REDG", "ATOM", "ATOMG"))  # noqa: E731
    assert loop(bwd_plain).opcode("HGMMA") == loop(bwd_atomic).opcode("HGMMA") > 0
    assert reductions(bwd_plain) == 0 < reductions(bwd_atomic)
    # Its softmax series: the same five products, one exp2 per score element (128·64 over 256 threads) where the bare
    # loop has none, and again only the atomic variant reduces.
    for plain, atomic in ((bwd_plain, bwd_sm_plain), (bwd_atomic, bwd_sm_atomic)):
        assert loop(atomic).opcode("HGMMA") == loop(plain).opcode("HGMMA")
        assert loop(atomic).opcode("MUFU") >= 128 * 64 // 256 > loop(plain).opcode("MUFU")
    assert reductions(bwd_sm_plain) == 0 < reductions(bwd_sm_atomic)


def test_fields_derive_again_from_a_calibrated_profiles_raw_block_without_a_gpu(tmp_path):
    """The committed H200 profile's fields are what its own raw numbers give; a probe's field stays."""
    from iosim.kernels.calibrate import rederive

    committed = read_profile_dict("h200-calibrated")
    out = tmp_path / "again.yaml"
    rederive("h200-sxm", "h200-calibrated", out, progress=lambda _: None)
    again = read_profile_dict(out)
    assert again["calibration"]["raw"] == committed["calibration"]["raw"]
    for name in ("tensor_efficiency", "kernel_start_overhead", "sm_clock", "l2_latency", "l2_dirty_limit"):
        assert again["fields"][name]["value"] == pytest.approx(committed["fields"][name]["value"], rel=1e-4), name
    assert load_profile(out).l2_dirty_limit == committed["fields"]["l2_dirty_limit"]["value"]
