"""Tests for iosim.profiles: every built-in file loads and obeys physical relations that follow from
facts outside the file; write_profile round-trips; each kind of bad file is refused with a one-line
message naming the file and the field."""
from __future__ import annotations

import dataclasses

import pytest
import yaml

from iosim.hardware.profile import (
    LISTED,
    LOCKSTEP_FIELDS,
    OPTIONAL,
    REQUIRED,
    ProfileError,
    build_profile,
    builtin_profiles,
    format_quantity,
    load_profile,
    profile_dir,
    read_profile_dict,
    write_profile,
)

BUILTIN = builtin_profiles()

# Dense FP16 tensor-core FLOP per clock per SM with FP32 accumulate, per architecture:
# sm_80: A100 whitepaper, "1024 dense FP16/FP32 FMA operations per clock" per SM;
# sm_89: 4 tensor cores x 128 FP16 FMA/clk per SM as on GA10x, at half rate with FP32 accumulate on
#        GeForce parts (the Ada whitepaper's 330.3 vs 165.2 TFLOPS);
# sm_90: Hopper Hot Chips 34 slide 33, 2048 dense FP16 MAC/clk per SM.
FP16_FLOP_PER_CLK_PER_SM = {"sm_80": 2 * 1024, "sm_89": 2 * 4 * 128 // 2, "sm_90": 2 * 2048}


def test_builtin_set_and_aliases():
    assert {"a100-sxm4-80gb", "a100-sxm4-40gb", "rtx4090", "h100-sxm", "h200-sxm"} <= set(BUILTIN)
    assert load_profile("a100").id == "a100-sxm4-80gb"
    assert load_profile("4090").id == "rtx4090"
    # a GPU's short name is the profile calibrated on it, where one is built in; the datasheet keeps its id
    assert load_profile("H100").id == "h100-sxm-calibrated" and load_profile("h200").id == "h200-calibrated"
    assert load_profile("h100").calibration and load_profile("h200").calibration
    assert load_profile("h100-sxm").calibration is None is load_profile("h200-sxm").calibration
    assert load_profile("h100") is load_profile("h100-sxm-calibrated")  # cached per file


@pytest.mark.parametrize("name", BUILTIN)
def test_builtin_loads_with_a_source_for_every_field(name):
    p = load_profile(name)
    assert p.id == name and p.path == profile_dir() / f"{name}.yaml"
    assert set(REQUIRED) <= set(p.sources)
    assert all(len(p.sources[f]) > 10 for f in REQUIRED)  # a document and section, not a stub


@pytest.mark.parametrize("name", BUILTIN)
def test_builtin_physical_relations(name):
    p = load_profile(name)
    # CUDA reserves 1 KiB of shared memory per block (cuda_occupancy.h reservedSharedMemPerBlock), so
    # the opt-in maximum per block is the per-SM carve-out minus 1 KiB on sm_80, sm_89 and sm_90.
    assert p.smem_per_sm - p.smem_per_cta == 1024
    assert p.l2_bytes < p.hbm_bytes
    assert p.l2_bytes % p.l2_partitions == 0
    assert p.host_bandwidth < p.hbm_bandwidth < p.l2_bandwidth  # each level faster than the one below
    assert p.peak_dram_bandwidth < p.peak_l2_bandwidth
    assert p.max_warps_per_sm * 32 in (1536, 2048)  # threads per SM on data-centre vs GA10x/Ada SMs
    # The RTX 4090's TF32 tensor rate equals its SIMT FP32 rate (82.6 TFLOP/s), hence <=.
    assert p.simt_fp32_flops <= p.tensor_flops["fp32"] < p.tensor_flops["fp16"] == p.tensor_flops["bf16"]
    # TF32 runs at half the 16-bit rate on sm_80, sm_89 and sm_90 (rounding of the datasheets: 1%).
    assert p.tensor_flops["fp32"] == pytest.approx(p.tensor_flops["fp16"] / 2, rel=0.01)


@pytest.mark.parametrize("name", BUILTIN)
def test_tensor_peak_matches_sms_times_clock_times_per_sm_rate(name):
    # Fails if boost_clock is not the clock the datasheet peak was computed at (e.g. 1980 MHz on H100).
    p = load_profile(name)
    per_sm = FP16_FLOP_PER_CLK_PER_SM[p.arch]
    assert p.tensor_flops["fp16"] == pytest.approx(p.sm_count * p.clock_hz * per_sm, rel=0.002)


@pytest.mark.parametrize("name", ["h100-sxm", "h200"])
def test_hopper_sfu_rate_matches_flashattention3(name):
    # FA3 §3.3: the H100 SXM5 has "only 3.9 TFLOPS of special functions" (exp2 and friends).
    assert load_profile(name).sfu_rate == pytest.approx(3.9e12, rel=0.02)


@pytest.mark.parametrize("name", BUILTIN)
def test_efficiencies_are_one_exactly_when_uncalibrated(name):
    p = load_profile(name)
    for f in ("dram_efficiency", "l2_efficiency", "tensor_efficiency"):
        uncalibrated = p.sources[f].startswith("uncalibrated")
        assert (p.value(f) == 1.0) == uncalibrated, f


def test_h100_fractions_reproduce_the_measured_ceilings():
    # reference-notes.md: device-to-device copy 2.96 TB/s, fp16 matmul 8192^3 702 TFLOP/s.
    p = load_profile("h100-sxm")
    assert p.peak_dram_bandwidth == pytest.approx(2.96e12, rel=0.002)
    assert p.peak_tensor_flops("fp16") == pytest.approx(702e12, rel=0.002)
    assert p.tensor_flops["fp8"] == pytest.approx(2 * p.tensor_flops["fp16"], rel=1e-4)  # WP104: fp8 dense 1978.9, fp16 989.4 TFLOP/s
    with pytest.raises(ValueError, match="fp4"):
        p.peak_tensor_flops("fp4")
    a100 = load_profile("a100")  # no fp8 tensor cores: no peak, and its summary leaves the field out
    with pytest.raises(ValueError, match="fp8"):
        a100.peak_tensor_flops("fp8")
    assert "tensor_flops_fp8" not in {row[0] for row in a100.summary_rows()}


def test_units_convert_to_base_units(tmp_path):
    raw = read_profile_dict("h100-sxm")
    raw["fields"]["l2_bytes"].update(value=0.5, unit="GiB")
    raw["fields"]["hbm_bytes"].update(value=80, unit="GiB")
    raw["fields"]["boost_clock"].update(value=1.41, unit="GHz")
    raw["fields"]["launch_overhead"].update(value=2500, unit="ns")
    raw["fields"]["hbm_bandwidth"].update(value=2039, unit="GB/s")
    p = load_profile(write_profile(raw, tmp_path / "units.yaml"))
    assert (p.l2_bytes, p.hbm_bytes) == (2**29, 80 * 2**30)
    assert (p.clock_hz, p.launch_overhead, p.hbm_bandwidth) == (1.41e9, 2.5e-6, 2.039e12)
    assert isinstance(p.l2_bytes, int) and isinstance(p.sm_count, int)


def test_format_quantity_picks_the_largest_exact_unit():
    assert format_quantity(52_428_800, "size") == "50 MiB"
    assert format_quantity(80 * 10**9, "size") == "80 GB"
    assert format_quantity(233_472, "size") == "228 KiB"
    assert format_quantity(3.35e12, "bandwidth") == "3.35 TB/s"
    assert format_quantity(2e-6, "time") == "2 us"


def test_summary_rows_show_every_field_with_unit_and_source():
    rows = load_profile("h100-sxm").summary_rows()
    # every required field, then the optional ones the file sets
    present = ("l2_dirty_limit", "fp32_lanes_per_sm", "int32_lanes_per_sm", "lsu_lanes_per_sm", "smem_bytes_per_clk_per_sm",
               "lrc_sms", "lrc_inflight_lookups", "lrc_pair_lookups", "lrc_group_lookups", "lrc_later_pair_lookups",
               "lrc_later_group_lookups", "lrc_group_ctas", "l1_bytes", "tensor_flops_fp8", "smem_carveout_min")
    assert [r[0] for r in rows] == list(REQUIRED) + [f for f in OPTIONAL if f in present] + list(LISTED)
    by_field = {f: (v, s) for f, v, s in rows}
    assert by_field["smem_carveouts"][0] == "0, 8, 16, 32, 64, 100, 132, 164, 196, 228 KiB"
    assert by_field["l2_bytes"][0] == "50 MiB"
    assert by_field["hbm_bandwidth"][0] == "3.35 TB/s"
    assert by_field["host_link"][0] == "PCIe Gen5 x16"
    curve = {f: v for f, v, _ in load_profile("h100").summary_rows()}["l1_cycle_hits"]  # the calibrated profile's
    assert curve.startswith("28 KiB: 0.286 -> 1, 0.571 -> 1, 0.857 -> 0.753, ")
    assert "; 124 KiB: 0.258 -> 1, 0.516 -> 1, 0.774 -> 0.997, " in curve and curve.endswith("2 -> 0.027, 2.286 -> 0")
    assert "reference-notes.md" in by_field["dram_efficiency"][1]


@pytest.mark.parametrize("name", BUILTIN)
def test_write_profile_round_trips(name, tmp_path):
    out = write_profile(read_profile_dict(name), tmp_path / f"{name}.yaml", comment="a copy\nfor a test")
    a, b = load_profile(name), load_profile(out)
    assert b.id == str(out.resolve())  # a copy named like the built-in is labelled by its path
    assert dataclasses.replace(b, path=a.path, id=a.id) == a
    assert hash(dataclasses.replace(b, path=a.path, id=a.id)) == hash(a)
    assert out.read_text().startswith("# a copy\n# for a test\n")


def test_calibrated_copy_keeps_its_provenance_and_leaves_the_base_alone(tmp_path):
    raw = read_profile_dict("h100-sxm")
    raw["fields"]["dram_efficiency"] = {"value": 0.9, "unit": "fraction", "source": "measured: calib.json"}
    raw["calibration"] = {"tool": "iosim calibrate", "base": "h100-sxm", "runs": [{"n": 4096}]}
    p = load_profile(write_profile(raw, tmp_path / "h100-calibrated.yaml"))
    assert p.dram_efficiency == 0.9 and p.sources["dram_efficiency"] == "measured: calib.json"
    assert p.calibration["tool"] == "iosim calibrate" and p.calibration["runs"][0]["n"] == 4096
    assert load_profile("h100-sxm").dram_efficiency == pytest.approx(2.96 / 3.35, abs=1e-3)
    assert load_profile("h100-sxm").calibration is None


def test_write_profile_refuses_an_invalid_dict_and_writes_nothing(tmp_path):
    raw = read_profile_dict("h100-sxm")
    raw["fields"]["sm_count"]["value"] = 0
    with pytest.raises(ProfileError, match="fields.sm_count: value must be > 0"):
        write_profile(raw, tmp_path / "bad.yaml")
    assert not (tmp_path / "bad.yaml").exists()


@pytest.mark.parametrize("edit,expected", [
    (lambda f: f.pop("lrc_later_group_lookups"), "fields.lrc_pair_lookups: set with lrc_pair_lookups, lrc_group_lookups, "
     "lrc_later_pair_lookups, lrc_group_ctas; the pair probe's fields go together, missing: lrc_later_group_lookups"),
    (lambda f: f["lrc_group_ctas"].update(value=2), "fields.lrc_group_ctas: must be at least 3"),
])
def test_the_pair_probes_fields_come_together_at_a_group_beyond_a_pair(tmp_path, edit, expected):
    raw = read_profile_dict("h200-sxm")
    edit(raw["fields"])
    with pytest.raises(ProfileError, match=expected):
        write_profile(raw, tmp_path / "bad.yaml")
    assert not (tmp_path / "bad.yaml").exists()
    for name in LOCKSTEP_FIELDS:  # none of them: the engine merges lockstep pairs whole
        raw["fields"].pop(name, None)
    assert load_profile(write_profile(raw, tmp_path / "none.yaml")).lrc_pair_lookups is None


def test_edited_file_is_reloaded(tmp_path):
    raw = read_profile_dict("h100-sxm")
    path = write_profile(raw, tmp_path / "p.yaml")
    assert load_profile(path).sm_count == 132
    raw["fields"]["sm_count"]["value"] = 114  # an H100 PCIe
    write_profile(raw, path)
    assert load_profile(path).sm_count == 114


def test_builtin_error_names_the_file_as_in_the_docs():
    raw = read_profile_dict("h100-sxm")
    raw["fields"]["l2_bytes"]["unit"] = "GB/s"
    with pytest.raises(ProfileError) as e:
        build_profile(raw, profile_dir() / "h100-sxm.yaml")
    assert str(e.value) == ("h100-sxm.yaml: fields.l2_bytes: unit 'GB/s' is not a size; "
                            "allowed: B, KB, KiB, MB, MiB, GB, GiB, TB, TiB")


_DELETE = object()
BAD = [  # (id, field named in the message, dotted key to change, new value, expected text)
    ("schema_version", "schema_version", "schema_version", 2, "unsupported version 2"),
    ("no_schema_version", "schema_version", "schema_version", _DELETE, "missing"),
    ("missing_field", "fields.l2_bytes", "fields.l2_bytes", _DELETE, "missing field"),
    ("unknown_field", "fields.l3_bytes", "fields.l3_bytes", {"value": 1, "unit": "MiB", "source": "x"},
     "unknown field; allowed: sm_count, boost_clock, "),
    ("unknown_top_key", "gpu", "gpu", "H100", "unknown field; allowed: schema_version, name, arch, fields, calibration"),
    ("unknown_entry_key", "fields.sm_count.units", "fields.sm_count.units", "count",
     "unknown field; allowed: value, unit, source, note"),
    ("missing_unit", "fields.hbm_bandwidth", "fields.hbm_bandwidth.unit", _DELETE,
     "missing unit; allowed: B/s, KB/s, MB/s, GB/s, TB/s"),
    ("missing_source", "fields.sm_count.source", "fields.sm_count.source", _DELETE, "missing field"),
    ("empty_source", "fields.sm_count.source", "fields.sm_count.source", "  ",
     "must name the document and section, or 'measured: <file/command>'"),
    ("wrong_dimension", "fields.boost_clock", "fields.boost_clock.unit", "ms",
     "unit 'ms' is not a frequency; allowed: Hz, kHz, MHz, GHz"),
    ("unknown_unit", "fields.l2_bytes", "fields.l2_bytes.unit", "Mb", "unit 'Mb' is not a size"),
    ("zero", "fields.hbm_bandwidth", "fields.hbm_bandwidth.value", 0, "value must be > 0, got 0"),
    ("negative", "fields.launch_overhead", "fields.launch_overhead.value", -1.0, "must be > 0"),
    ("not_a_number", "fields.sm_count.value", "fields.sm_count.value", "many", "must be a number, got 'many'"),
    ("number_as_string", "fields.sm_count.value", "fields.sm_count.value", "132", "must be a number, got '132'"),
    ("bool", "fields.sm_count.value", "fields.sm_count.value", True, "must be a number, got True"),
    ("nan", "fields.hbm_bandwidth.value", "fields.hbm_bandwidth.value", float("nan"), "must be a finite number"),
    ("inf", "fields.sm_count.value", "fields.sm_count.value", float("inf"), "must be a finite number, got inf"),
    ("fraction_above_one", "fields.dram_efficiency", "fields.dram_efficiency.value", 1.2,
     "a fraction must be in (0, 1], got 1.2"),
    ("fraction_zero", "fields.dram_efficiency", "fields.dram_efficiency.value", 0, "value must be > 0, got 0"),
    ("fractional_count", "fields.sm_count", "fields.sm_count.value", 131.5, "a count must be a whole number"),
    ("fractional_bytes", "fields.smem_per_cta", "fields.smem_per_cta.value", 0.3,
     "not a whole number of bytes"),
    ("string_with_unit", "fields.host_link", "fields.host_link.unit", "count", "takes no unit"),
    ("entry_not_mapping", "fields.sm_count", "fields.sm_count", 132, "must be a mapping, got 132"),
    ("optional_null", "fields.l2_dirty_limit", "fields.l2_dirty_limit", None, "must be a mapping, got None"),
    ("no_name", "name", "name", _DELETE, "missing field"),
    ("blank_name", "name", "name", " ", "must be a non-empty string"),
    ("multiline_note", "fields.sm_count.note", "fields.sm_count.note", "a\nb", "must be one line"),
    # relations that hold on every GPU
    ("cta_smem_above_sm", "fields.smem_per_cta", "fields.smem_per_cta.value", 229,
     "must be <= smem_per_sm (228 KiB), got 229 KiB"),
    ("l2_not_below_hbm", "fields.l2_bytes", "fields.l2_bytes", {"value": 80, "unit": "GB", "source": "a test"},
     "must be < hbm_bytes (80 GB), got 80 GB"),
    ("dirty_limit_above_l2", "fields.l2_dirty_limit", "fields.l2_dirty_limit.value", 60,
     "must be <= l2_bytes (50 MiB), got 60 MB"),
    ("bad_calibration", "calibration", "calibration", [1, 2], "must be a mapping"),
    # a listed field: its values in one unit, increasing, none beyond what an SM has
    ("carveouts_unordered", "fields.smem_carveouts", "fields.smem_carveouts.value", [0, 64, 32],
     "must be in increasing order, each value once, got [0, 64, 32]"),
    ("carveouts_empty", "fields.smem_carveouts", "fields.smem_carveouts.value", [], "must list at least one value"),
    ("carveouts_negative", "fields.smem_carveouts", "fields.smem_carveouts.value", [-8, 64], "must be > 0, got -8"),
    ("carveouts_not_numbers", "fields.smem_carveouts.value[1]", "fields.smem_carveouts.value", [8, "64"],
     "must be a number, got '64'"),
    ("carveouts_unit", "fields.smem_carveouts", "fields.smem_carveouts.unit", "MHz", "unit 'MHz' is not a size"),
    ("carveouts_above_sm", "fields.smem_carveouts", "fields.smem_carveouts.value", [0, 64, 256],
     "must be <= smem_per_sm (228 KiB), got 256 KiB"),
    # a curve: rows of (size, ratio, share), in order, the share a fraction
    ("curve_short_row", "fields.l1_cycle_hits", "fields.l1_cycle_hits",
     {"value": [[224, 1.0]], "unit": "KiB", "source": "a test"}, "each row must be [size, ratio, share], got [224, 1.0]"),
    ("curve_share_above_one", "fields.l1_cycle_hits", "fields.l1_cycle_hits",
     {"value": [[224, 1.0, 1.2]], "unit": "KiB", "source": "a test"}, "share in [0, 1], got [224, 1.0, 1.2]"),
    ("curve_unordered", "fields.l1_cycle_hits", "fields.l1_cycle_hits",
     {"value": [[224, 1.5, 0.5], [224, 1.0, 0.9]], "unit": "KiB", "source": "a test"},
     "rows must be in increasing order of size, then ratio"),
    ("curve_unit", "fields.l1_cycle_hits", "fields.l1_cycle_hits",
     {"value": [[224, 1.0, 0.9]], "unit": "GHz", "source": "a test"}, "unit 'GHz' is not a size"),
]


@pytest.mark.parametrize("field,key,value,expected", [b[1:] for b in BAD], ids=[b[0] for b in BAD])
def test_bad_file_is_refused_naming_file_and_field(tmp_path, field, key, value, expected):
    raw = read_profile_dict("h100-sxm")
    *parents, last = key.split(".")
    node = raw
    for k in parents:
        node = node[k]
    if value is _DELETE:
        del node[last]
    else:
        node[last] = value
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    with pytest.raises(ProfileError) as e:
        load_profile(path)
    msg = str(e.value)
    assert msg.startswith(f"{path}: {field}: "), msg
    assert expected in msg and "\n" not in msg
    assert e.value.field == field


def test_malformed_yaml_is_refused_in_one_line(tmp_path):
    path = tmp_path / "broken.yaml"
    path.write_text("schema_version: 1\nfields: {sm_count: [132,\n")
    with pytest.raises(ProfileError) as e:
        load_profile(path)
    assert str(e.value).startswith(f"{path}: malformed YAML: ") and "\n" not in str(e.value)


def test_top_level_must_be_a_mapping(tmp_path):
    path = tmp_path / "list.yaml"
    path.write_text("- 1\n- 2\n")
    with pytest.raises(ProfileError) as e:
        load_profile(path)
    assert str(e.value) == f"{path}: top level: must be a mapping, got list"


def test_unknown_name_lists_the_available_profiles(tmp_path):
    with pytest.raises(ProfileError) as e:
        load_profile("b200")
    assert "unknown profile 'b200'" in str(e.value)
    assert all(name in str(e.value) for name in BUILTIN)
    with pytest.raises(ProfileError, match="no such profile file"):
        load_profile(tmp_path / "absent.yaml")


def test_duplicate_key_is_refused_naming_its_path_and_lines(tmp_path):
    text = (profile_dir() / "h100-sxm.yaml").read_text()
    line = next(l for l in text.splitlines() if l.strip().startswith("sm_count:"))
    path = tmp_path / "dup.yaml"
    path.write_text(text.replace(line, line + "\n" + line.replace("132", "114")))  # PyYAML would keep 114
    first = text.splitlines().index(line) + 1
    with pytest.raises(ProfileError) as e:
        load_profile(path)
    assert str(e.value) == (f"{path}: fields.sm_count: duplicate key (lines {first} and {first + 1}); "
                            "YAML would keep only the last")
    assert e.value.field == "fields.sm_count"


def test_non_utf8_file_is_one_line(tmp_path):
    path = tmp_path / "latin1.yaml"
    data = (profile_dir() / "h100-sxm.yaml").read_bytes().replace(b"HOPPER", "H\xd6PPER".encode("latin-1"))
    path.write_bytes(data)
    with pytest.raises(ProfileError) as e:
        load_profile(path)
    assert str(e.value) == f"{path}: cannot read: not UTF-8 text (byte 0xd6 at offset {data.index(0xd6)})"


@pytest.mark.parametrize("name,value,unit,needle", [
    ("dram_efficiency", 1e-320, None, "outside what a GPU has"),  # used to divide to nan in the table
    ("hbm_bandwidth", 5e6, "TB/s", "outside what a GPU has"),
    ("launch_overhead", 5, "s", "outside what a GPU has"),
    ("regs_per_sm", 1000, None, "must hold one warp at max_regs_per_thread"),
])
def test_implausible_values_are_refused_where_written(tmp_path, name, value, unit, needle):
    import yaml

    from iosim.hardware.profile import ProfileError, load_profile, read_profile_dict

    d = read_profile_dict("h100-sxm")
    d["fields"][name]["value"] = value
    if unit:
        d["fields"][name]["unit"] = unit
    path = tmp_path / "odd.yaml"
    path.write_text(yaml.safe_dump(d))
    with pytest.raises(ProfileError, match=f"odd.yaml: fields.{name}: .*{needle}"):
        load_profile(path)


def test_a_users_profile_named_like_a_builtin_is_labelled_by_its_path(tmp_path):
    import shutil

    from iosim.hardware.profile import load_profile

    builtin = load_profile("h100-sxm")
    copy = tmp_path / f"{builtin.id}.yaml"
    shutil.copy(builtin.path, copy)
    assert load_profile(copy).id == str(copy.resolve()) != builtin.id


def test_profiles_new_writes_a_template_that_loads_like_its_base(tmp_path):
    from click.testing import CliRunner

    from iosim.cli import main
    from iosim.hardware.profile import load_profile

    out = tmp_path / "my-gpu.yaml"
    r = CliRunner().invoke(main, ["profiles", "new", "--base", "h100-sxm", "-o", str(out)])
    assert r.exit_code == 0, r.output
    mine, base = load_profile(out), load_profile("h100-sxm")
    assert mine.id == "my-gpu" and mine.name.endswith("(edited copy)")
    assert dataclasses.replace(mine, id=base.id, name=base.name, path=base.path) == base  # every number kept
    assert out.read_text().startswith("# A GPU profile for iosim, started from h100-sxm")
    again = CliRunner().invoke(main, ["profiles", "new", "-o", str(out)])
    assert again.exit_code == 2 and "exists" in again.output  # never overwrites an edited file
