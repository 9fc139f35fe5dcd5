"""Measurement files (iosim/measurement.py) and the GPU harness's pure parts (kernels/harness.py); no GPU needed."""
from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest

from iosim.measure.measurement import (
    SCHEMA_VERSION, Case, Counters, KernelCounters, Measurement, MeasurementError, Provenance, Timing,
    dump_measurement, load_measurement,
)
from iosim.kernels import harness
from iosim.kernels.harness import CaseSpec, HarnessError

REPO = Path(__file__).resolve().parents[1]


def _kernel(name="flash2_fwd", read=824_576.0, l2=3_063_648.0, hit=51.65):
    return KernelCounters(name=name, dram_read_bytes=read, dram_write_bytes=0.0, l2_bytes=l2, l2_hit_rate=hit,
                          duration_s=15.424e-6, grid=(4, 4, 1), block=(128, 1, 1), registers=237, shared_bytes=49152)


def _problem(backward=False, **changes):
    return {"batch": 4, "heads": 16, "kv_heads": 16, "seq_q": 1024, "seq_k": 1024, "head_dim": 64,
            "dtype": "fp16", "causal": False, "backward": backward} | changes


def _measurement() -> Measurement:
    prov = Provenance(gpu_name="NVIDIA H100 80GB HBM3", driver="580.159.04", cuda="13.0", torch="2.11.0+cu130",
                      triton="3.6.0", ncu="2025.3.1.0", clock_control="none", cache_control="all",
                      date="2026-11-25T08:00:00+00:00", command=["python3", "-m", "kernels.harness", "--out", "x"],
                      hostname="gpu")
    timing = Timing(median_s=5.7e-5, p20_s=5.6e-5, p80_s=5.9e-5, warmup_ms=25, rep_ms=100)
    tiling = {"block_m": 128, "block_n": 64, "warps": 4, "stages": 2, "grid_order": "rows"}
    flash = Case(name="flash2-fwd", impl="flash2", pass_="fwd",
                 run_config={"algo": "flash2", "problem": _problem(), "tiling": tiling}, timing=timing,
                 counters=Counters.from_kernels([_kernel()]),
                 launches=[{"kernel": "flash2_fwd", "grid": [8, 64, 1], "num_warps": 4, "num_stages": 2,
                            "n_regs": 237, "shared_bytes": 49152}])
    sdpa = Case(name="sdpa-bwd", impl="sdpa_cudnn", pass_="fwd_bwd",
                run_config={"algo": None, "problem": _problem(backward=True), "tiling": None}, timing=timing,
                counters_error="ncu: no permission to read GPU performance counters (ERR_NVGPUCTRPERM)")
    oom = Case(name="standard-huge", impl="standard", pass_="fwd",
               run_config={"algo": "standard", "problem": _problem(seq_q=65536, seq_k=65536), "tiling": {}},
               error="out of memory")
    return Measurement(provenance=prov, cases=[flash, sdpa, oom])


# --------------------------------------------------------------------------- the file format


def test_round_trip_and_csv_twin(tmp_path):
    m = _measurement()
    json_path, csv_path = dump_measurement(m, tmp_path / "m.json")
    assert load_measurement(json_path) == m
    lines = csv_path.read_text().splitlines()
    assert len(lines) == 1 + len(m.cases)
    header = lines[0].split(",")
    assert {"name", "impl", "pass", "seq_q", "median_s", "dram_read_bytes", "l2_hit_rate", "error"} <= set(header)
    first = dict(zip(header, lines[1].split(",")))
    assert first["dram_read_bytes"] == "824576.0" and first["block_m"] == "128" and first["kernels"] == "1"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.csv", "m.json"]  # no temporary files left


def test_invalid_measurement_is_not_written_over_a_good_file(tmp_path):
    path = tmp_path / "m.json"
    dump_measurement(_measurement(), path)
    before = path.read_text()
    bad = _measurement()
    bad = replace(bad, cases=[replace(bad.cases[0], counters=replace(bad.cases[0].counters, l2_bytes=-1.0))])
    with pytest.raises(MeasurementError, match=r"cases\[0\]\.counters\.l2_bytes: must be >= 0"):
        dump_measurement(bad, path)
    assert path.read_text() == before


def _corrupt(tmp_path, edit) -> Path:
    data = _measurement().to_dict()
    edit(data)
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(data))
    return path


@pytest.mark.parametrize("edit, field, problem", [
    (lambda d: d.update(schema_version=SCHEMA_VERSION + 1), "schema_version", "reads version 1"),
    (lambda d: d.update(schema="something-else"), "schema", "expected 'iosim-measurement'"),
    (lambda d: d["cases"][0]["timing"].pop("median_s"), "cases[0].timing.median_s", "missing field"),
    (lambda d: d["provenance"].pop("gpu_name"), "provenance.gpu_name", "missing field"),
    (lambda d: d["cases"][0]["counters"]["kernels"][0].update(dram_read_bytes=-5),
     "cases[0].counters.kernels[0].dram_read_bytes", "must be >= 0"),
    (lambda d: d["cases"][0]["counters"].update(l2_hit_rate=101), "cases[0].counters.l2_hit_rate", "must be <= 100"),
    (lambda d: d["cases"][1].update(impl="xformers"), "cases[1].impl", "must be one of"),
    (lambda d: d["cases"][0].update({"pass": "bwd"}), "cases[0].pass", "must be one of"),
    (lambda d: d["cases"][0]["run_config"].update(algo="flash1"), "cases[0].run_config.algo", "must equal"),
    (lambda d: d["cases"][1]["run_config"]["problem"].update(backward=False),
     "cases[1].run_config.problem.backward", "must be true"),
    (lambda d: d["cases"][2].update(error="out of\nmemory"), "cases[2].error", "one line"),
    (lambda d: d["cases"][0]["counters"]["kernels"][0].update(grid=[4, 4]), "cases[0].counters.kernels[0].grid",
     "three positive integers"),
])
def test_bad_file_names_file_and_field(tmp_path, edit, field, problem):
    path = _corrupt(tmp_path, edit)
    with pytest.raises(MeasurementError) as info:
        load_measurement(path)
    message = str(info.value)
    assert message.startswith(f"{path}: {field}: ") and problem in message
    assert "\n" not in message


def test_truncated_file_names_file(tmp_path):
    good = tmp_path / "good.json"
    dump_measurement(_measurement(), good)
    cut = tmp_path / "cut.json"
    cut.write_text(good.read_text()[:500])
    with pytest.raises(MeasurementError, match=rf"^{cut}: document: not valid JSON \(truncated\?\) at line"):
        load_measurement(cut)
    with pytest.raises(MeasurementError, match=r"missing.json: cannot read"):
        load_measurement(tmp_path / "missing.json")


def test_counters_sum_kernels_and_weight_hit_rate_by_l2_bytes():
    c = Counters.from_kernels([_kernel(read=100.0, l2=1000.0, hit=50.0), _kernel(read=20.0, l2=3000.0, hit=90.0)])
    assert (c.dram_read_bytes, c.l2_bytes, len(c.kernels)) == (120.0, 4000.0, 2)
    assert c.l2_hit_rate == pytest.approx(80.0)  # (50·1000 + 90·3000) / 4000
    assert c.duration_s == pytest.approx(2 * 15.424e-6)


# --------------------------------------------------------------------------- ncu output

# Cut from a real `ncu --import R --csv --page raw --print-units base` (H200, ncu 2025.3.1, 2026-11-25):
# the columns we read plus a few, three cases. Case 1 is a forward + backward whose backward kernels
# (IDs 2-5) ran on autograd's thread, outside the push/pop range, so their NVTX columns are empty.
NCU_RAW = '''"ID","Process ID","Process Name","Host Name","thread Domain:Push/Pop_Range:PL_Type:PL_Value:CLR_Type:Color:Msg_Type:Msg","Id:Domain:Start/Stop_Range:PL_Type:PL_Value:CLR_Type:Color:Msg_Type:Msg","Kernel Name","Context","Stream","Block Size","Grid Size","Device","CC","dram__bytes_read.avg","dram__bytes_read.sum","dram__bytes_write.sum","gpu__time_duration.sum","launch__registers_per_thread","launch__shared_mem_per_block_dynamic","launch__shared_mem_per_block_static","lts__t_bytes.sum","lts__t_sector_hit_rate.pct"
"","","","","","","","","","","","","","byte","byte","byte","ns","register/thread","byte/block","byte/block","byte","%"
"0","833","python3.12","127.0.0.1","833  ""<default domain>:iosim-case-0:none:none:none:none:none:none"" ","","flash2_fwd","1","7","(128, 1, 1)","(4, 4, 1)","0","9.0","17,178.67","824,576","0","15,424","237","49,152","0","3,063,648","51.65"
"1","833","python3.12","127.0.0.1","833  ""<default domain>:iosim-case-1:none:none:none:none:none:none"" ","","flash2_fwd","1","7","(128, 1, 1)","(4, 4, 1)","0","9.0","17,184","824,832","0","14,816","237","49,152","0","3,098,176","51.34"
"2","833","python3.12","127.0.0.1","","","void at::vectorized_elementwise_kernel<4, at::FillFunctor<float>, std::array<char *, 1>>(int, T2, T3)","1","7","(128, 1, 1)","(128, 1, 1)","0","9.0","85.33","4,096","0","1,920","16","0","0","1,015,392","92.91"
"3","833","python3.12","127.0.0.1","","","flash2_bwd_pre","1","7","(128, 1, 1)","(8, 4, 1)","0","9.0","11,056","530,688","0","2,912","32","256","0","1,034,976","13.94"
"4","833","python3.12","127.0.0.1","","","flash2_bwd","1","7","(128, 1, 1)","(4, 4, 1)","0","9.0","34,080","1,635,840","0","132,064","255","82,432","0","33,987,680","92.69"
"5","833","python3.12","127.0.0.1","","","void at::vectorized_elementwise_kernel<8, at::float16_copy_kernel_cuda(at::TensorIteratorBase &)::[lambda(float) (instance 1)], std::array<char *, 2>>(int, T2, T3)","1","7","(128, 1, 1)","(128, 1, 1)","0","9.0","11,029.33","529,408","0","2,464","32","0","0","1,437,024","39.53"
"6","833","python3.12","127.0.0.1","833  ""<default domain>:iosim-case-2:none:none:none:none:none:none"" ","","void at::vectorized_elementwise_kernel<4, at::FillFunctor<float>, std::array<char *, 1>>(int, T2, T3)","1","7","(128, 1, 1)","(128, 1, 1)","0","9.0","80","3,840","0","1,824","16","0","0","1,036,928","92.02"
'''


def test_parse_ncu_raw_csv_reads_base_units():
    rows = harness.parse_ncu_raw_csv("==PROF== Disconnected from process 833\n" + NCU_RAW)
    assert [r["id"] for r in rows] == list(range(7))
    first = harness.kernel_counters(rows[0])
    assert first.name == "flash2_fwd"
    assert first.dram_read_bytes == 824_576 and first.l2_bytes == 3_063_648  # thousands separators gone
    assert first.duration_s == pytest.approx(15.424e-6)  # "ns"
    assert first.l2_hit_rate == 51.65
    assert (first.grid, first.block, first.registers, first.shared_bytes) == ((4, 4, 1), (128, 1, 1), 237, 49_152)


def test_kernels_are_summed_per_case_and_untagged_backward_kernels_join_their_forward():
    by_case = harness.counters_by_case(harness.parse_ncu_raw_csv(NCU_RAW))
    assert sorted(by_case) == [0, 1, 2]
    assert [k.name for k in by_case[0].kernels] == ["flash2_fwd"]
    fwd_bwd = by_case[1]
    names = [k.name.split("<")[0] for k in fwd_bwd.kernels]
    assert names == ["flash2_fwd", "void at::vectorized_elementwise_kernel", "flash2_bwd_pre", "flash2_bwd",
                     "void at::vectorized_elementwise_kernel"]
    assert fwd_bwd.dram_read_bytes == 824_832 + 4_096 + 530_688 + 1_635_840 + 529_408
    assert fwd_bwd.duration_s == pytest.approx((14_816 + 1_920 + 2_912 + 132_064 + 2_464) * 1e-9)
    weighted = (51.34 * 3_098_176 + 92.91 * 1_015_392 + 13.94 * 1_034_976 + 92.69 * 33_987_680 + 39.53 * 1_437_024)
    assert fwd_bwd.l2_hit_rate == pytest.approx(weighted / fwd_bwd.l2_bytes)


def test_start_end_range_tags_too_and_an_untagged_first_kernel_is_refused():
    lines = NCU_RAW.splitlines()
    moved = lines[2].replace('"833  ""<default domain>:iosim-case-0:none:none:none:none:none:none"" ",""',
                             '"","7 ""<default domain>:iosim-case-0:none:none:none:none:none:none"""')
    assert moved != lines[2]
    rows = harness.parse_ncu_raw_csv("\n".join(lines[:2] + [moved]))
    assert list(harness.counters_by_case(rows)) == [0]
    with pytest.raises(ValueError, match="precedes every iosim-case NVTX range"):
        harness.counters_by_case(harness.parse_ncu_raw_csv("\n".join(lines[:2] + lines[4:])))
    with pytest.raises(ValueError, match="no CSV header"):
        harness.parse_ncu_raw_csv("==ERROR== something went wrong")


def test_ncu_failures_are_one_line_and_say_whether_to_give_up():
    perm = "==PROF== Connected\n==ERROR== ERR_NVGPUCTRPERM - The user does not have permission to access NVIDIA GPU Performance Counters\n"
    assert harness.ncu_failure(perm, 1) == ("ncu: no permission to read GPU performance counters (ERR_NVGPUCTRPERM)", True)
    reason, fatal = harness.ncu_failure("==ERROR== Failed to prepare kernel for profiling\n", 1)
    assert reason == "ncu: ==ERROR== Failed to prepare kernel for profiling" and not fatal
    assert harness.ncu_failure("", 3) == ("ncu exited with code 3", False)


# --------------------------------------------------------------------------- cases and the harness


def test_default_grid_covers_the_h100_data_set():
    grid = harness.default_grid()
    assert len(grid) >= 40
    assert len({c.name for c in grid}) == len(grid)
    assert {c.impl for c in grid} == {"flash2", "flash1", "standard", "standard_eager", "sdpa_flash", "sdpa_cudnn"}
    flash = [c for c in grid if c.impl in ("flash1", "flash2")]
    assert min(c.seq for c in flash) == 512 and max(c.seq for c in flash) == 65536
    for impl in ("flash2", "flash1", "standard", "standard_eager"):
        assert {c.pass_ for c in grid if c.impl == impl} == {"fwd", "fwd_bwd"}, impl
    f2_fwd = [c for c in grid if c.impl == "flash2" and c.pass_ == "fwd"]
    assert {c.tiling.get("grid_order", "rows") for c in f2_fwd} == {"rows", "heads"}
    assert any(c.kv_heads < c.heads and c.heads == 16 and c.kv_heads in (2, 4) for c in grid)
    assert {c.dtype for c in grid} == {"fp16", "bf16"} and {c.head_dim for c in grid} == {64, 128}
    assert {c.causal for c in grid} == {True, False}
    assert {c.impl for c in grid if c.impl.startswith("sdpa")} == {"sdpa_flash", "sdpa_cudnn"}


def test_default_grid_holds_the_reference_cases_first():
    grid = harness.default_grid()
    ref = dict(batch=4, heads=16, head_dim=64, dtype="fp16", causal=False, pass_="fwd")
    for impl, seq, tiling in [("flash2", 4096, harness.REF_TILING), ("flash2", 1024, harness.REF_TILING),
                              ("standard_eager", 1024, {}), ("standard_eager", 4096, {})]:
        want = CaseSpec(impl, seq=seq, tiling=dict(tiling), **ref)
        assert want in grid[:harness.BATCH_SIZE], want.name
    assert harness.REF_TILING == {"block_m": 128, "block_n": 64, "warps": 4}


def test_default_grid_stays_within_memory_and_time():
    """Scores in HBM at most ~9 GB per N×N tensor; no call much above 10 TFLOP (≈ 30 ms at 300 TFLOP/s forward)."""
    for c in harness.default_grid():
        if c.impl in ("standard", "standard_eager"):
            assert c.batch * c.heads * c.seq**2 * 2 <= 9e9, c.name
        assert c.flops() <= 1e13, c.name


def test_case_spec_checks_and_names():
    spec = CaseSpec("flash2", "fwd_bwd", kv_heads=4, causal=True, tiling={"grid_order": "heads", "block_m": 64})
    assert spec.name == "flash2-fwd_bwd-fp16-b4h16kv4-n4096-d64-causal-bm64-heads"
    assert spec.flops() == pytest.approx(4 * 64 * 4096**2 * 64 / 2 * 3.5)
    assert CaseSpec(**spec.to_json()) == spec  # what the ncu child receives
    with pytest.raises(HarnessError, match="impl: must be one of"):
        CaseSpec("xformers")
    with pytest.raises(HarnessError, match="only our kernels take tiling"):
        CaseSpec("sdpa_flash", tiling={"block_m": 64})


def test_measure_without_cuda_is_a_one_line_harness_error(tmp_path, monkeypatch):
    try:
        import torch
    except ImportError:
        torch = None
    if torch is not None:
        monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(HarnessError) as info:
        harness.measure(harness.smoke_grid(), tmp_path / "m.json", progress=lambda *_: None)
    assert str(info.value).startswith("no CUDA GPU: ") and "\n" not in str(info.value)
    assert not (tmp_path / "m.json").exists()


def test_calibrated_profile_replaces_fractions_with_measured_values():
    yaml = pytest.importorskip("yaml")
    from iosim.kernels.calibrate import calibrated_profile

    base = yaml.safe_load((REPO / "hardware_profiles" / "h100-sxm.yaml").read_text())
    raw = {"dram_copy": 2.96e12, "l2_read": 6.0e12, "tile_fp16_d64": 5.0e14, "tile_fp16_d128": 6.0e14,
           "launch_triton_empty": 2.5e-6}
    profile, rows = calibrated_profile(base, raw, {"gpu": "NVIDIA H100 80GB HBM3", "date": "2026-11-25"})
    fields = profile["fields"]
    assert fields["dram_efficiency"]["value"] == pytest.approx(2.96 / 3.35, abs=1e-4)
    assert fields["l2_efficiency"]["value"] == pytest.approx(6.0 / 12.0)
    assert fields["tensor_efficiency"]["value"] == pytest.approx(600 / 989.4, abs=1e-4)
    assert (fields["launch_overhead"]["value"], fields["launch_overhead"]["unit"]) == (2.5, "us")
    source = "measured: iosim calibrate, NVIDIA H100 80GB HBM3, 2026-11-25"
    assert {r[0] for r in rows} == {"dram_efficiency", "l2_efficiency", "tensor_efficiency", "launch_overhead"}
    assert all(fields[r[0]]["source"] == source for r in rows)
    assert fields["hbm_bandwidth"] == base["fields"]["hbm_bandwidth"]  # datasheet values untouched
    assert profile["calibration"]["raw"]["l2_read"] == 6.0e12
    assert list(profile)[:len(base)] == list(base)


def test_calibrated_profile_loads_and_refuses_a_fraction_above_the_datasheet(tmp_path):
    yaml = pytest.importorskip("yaml")
    from iosim.hardware.profile import load_profile
    from iosim.kernels.calibrate import calibrated_profile, summary, write_profile

    base = yaml.safe_load((REPO / "hardware_profiles" / "h100-sxm.yaml").read_text())
    # An H200's copy bandwidth (4.27 TB/s) against the H100's datasheet 3.35 TB/s: the wrong profile.
    raw = {"dram_copy": 4.27e12, "l2_read": 12.2e12, "launch_triton_empty": 1.3e-6}
    profile, rows = calibrated_profile(base, raw, {"gpu": "NVIDIA H200", "date": "2026-11-25"})
    assert profile["fields"]["dram_efficiency"] == base["fields"]["dram_efficiency"]
    assert profile["fields"]["l2_efficiency"]["value"] == 1.0  # 1.017: noise above the peak
    assert "NOT WRITTEN" in summary(rows)
    write_profile(profile, tmp_path / "cal.yaml")
    loaded = load_profile(tmp_path / "cal.yaml")
    assert loaded.launch_overhead == pytest.approx(1.3e-6)
    assert loaded.calibration["gpu"] == "NVIDIA H200"


def test_each_case_gets_its_counters_or_a_one_line_reason():
    case = replace(_measurement().cases[0], counters=None)
    counters = {case.name: Counters.from_kernels([_kernel()])}
    assert harness._with_counters(case, counters, {}, None).counters == counters[case.name]
    no_ncu = harness._with_counters(case, counters, {}, "ncu not found")
    assert (no_ncu.counters, no_ncu.counters_error) == (None, "ncu not found")
    failed = harness._with_counters(case, counters, {case.name: "out of memory"}, None)
    assert (failed.counters, failed.counters_error) == (None, "out of memory")  # partial counts are dropped
    assert harness._with_counters(case, {}, {}, None).counters_error == "ncu profiled no kernel of this case"
