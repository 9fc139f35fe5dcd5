"""Turning microbenchmark numbers into a calibrated profile (kernels/calibrate.py); no GPU needed."""
from __future__ import annotations

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
    base = read_profile_dict("h200")
    raw = {"sm_clock_dot": 1.755e9, "sm_clock_fma": 1.98e9, "tile_solo_fp16_128x64x64w4": 2.6e14,
           "tile_solo_fp16_128x64x64w4_sms": 132.0, "tile_solo_fp16_128x64x128w8": 3.0e14,
           "tile_solo_fp16_128x64x128w8_sms": 132.0}
    profile, rows = calibrated_profile(base, raw, H100)
    fields = profile["fields"]
    assert (fields["sm_clock"]["value"], fields["sm_clock"]["unit"]) == (1755.0, "MHz")
    peak = load_profile("h200").tensor_flops["fp16"]
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
