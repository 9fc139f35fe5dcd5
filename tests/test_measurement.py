"""Measurement files (iosim/measurement.py) and the GPU harness's pure parts (kernels/harness.py); no GPU needed."""
from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest

from iosim.measure.measurement import (
    SCHEMA_VERSION,
    Case,
    Counters,
    KernelCounters,
    Measurement,
    MeasurementError,
    Provenance,
    Timing,
    dump_measurement,
    load_measurement,
)

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
    (lambda d: d.update(schema_version=SCHEMA_VERSION + 1), "schema_version", "reads schema_version 1"),
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
    (lambda d: d["cases"][0]["timing"].update(median_s=float("nan")), "cases[0].timing.median_s",
     "must be a finite number, got nan"),
    (lambda d: d["cases"][0]["counters"].update(l2_bytes=float("inf")), "cases[0].counters.l2_bytes",
     "must be a finite number, got inf"),
    (lambda d: d["cases"][0]["timing"].update(p20_s="5e-5"), "cases[0].timing.p20_s", "must be a number, got '5e-5'"),
    (lambda d: d["cases"][0]["counters"]["kernels"][0].update(sm_busy=1), "cases[0].counters.kernels[0].sm_busy",
     "unknown field; allowed: name, dram_read_bytes, dram_write_bytes, l2_bytes, l2_hit_rate, duration_s, grid"),
    (lambda d: d["cases"][0]["run_config"].update(backward_tiling={"warps": 0}),
     "cases[0].run_config.backward_tiling.warps", "must be > 0, got 0"),
    (lambda d: d["cases"][0]["run_config"]["tiling"].update(grid_order="cols"),
     "cases[0].run_config.tiling.grid_order", "must be one of rows, heads, got 'cols'"),
    (lambda d: d["cases"][1]["run_config"].update(algo="flash2"), "cases[1].run_config.algo", "must be null"),
    (lambda d: d.update(cases={}), "cases", "must be a list, got dict"),
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


def test_non_utf8_file_is_one_line(tmp_path):
    path = tmp_path / "latin1.json"
    path.write_bytes(json.dumps(_measurement().to_dict()).replace("gpu", "g\xfcu").encode("latin-1"))
    with pytest.raises(MeasurementError) as info:
        load_measurement(path)
    assert str(info.value).startswith(f"{path}: cannot read: not UTF-8 text (byte 0xfc at offset ")
    assert "\n" not in str(info.value)


def test_committed_files_load_and_write_back_unchanged(tmp_path):
    for path in (REPO / "experiments/measurements/h100/measurements.json",
                 REPO / "experiments/measurements/h100/live-smoke/measurements.json"):
        m = load_measurement(path)
        assert m.to_dict() == json.loads(path.read_text())  # ints stay ints, nothing added or dropped


def test_kernel_reported_run_config_with_backward_tiling_is_accepted(tmp_path):
    from iosim.schedule.problem import Problem, RunConfig, Tiling

    config = RunConfig(algo="flash2", problem=Problem(seq_q=1024, backward=True), tiling=Tiling(block_m=64),
                       backward_tiling=Tiling(block_n=32)).resolved().to_dict()
    assert config["backward_tiling"]["block_n"] == 32
    case = replace(_measurement().cases[0], name="flash2-bwd", pass_="fwd_bwd", run_config=config)
    m = replace(_measurement(), cases=[case])
    path, _ = dump_measurement(m, tmp_path / "m.json")
    assert load_measurement(path).cases[0].run_config == config


def test_a_kernel_without_launch_shape_reads_as_null(tmp_path):
    """Counters may grow (issue 8): a kernel's optional counters default to null."""
    data = _measurement().to_dict()
    for key in ("grid", "block", "registers", "shared_bytes"):
        del data["cases"][0]["counters"]["kernels"][0][key]
    path = tmp_path / "old.json"
    path.write_text(json.dumps(data))
    k = load_measurement(path).cases[0].counters.kernels[0]
    assert (k.grid, k.block, k.registers, k.shared_bytes) == (None, None, None, None)


def test_counters_sum_kernels_and_weight_hit_rate_by_l2_bytes():
    c = Counters.from_kernels([_kernel(read=100.0, l2=1000.0, hit=50.0), _kernel(read=20.0, l2=3000.0, hit=90.0)])
    assert (c.dram_read_bytes, c.l2_bytes, len(c.kernels)) == (120.0, 4000.0, 2)
    assert c.l2_hit_rate == pytest.approx(80.0)  # (50·1000 + 90·3000) / 4000
    assert c.duration_s == pytest.approx(2 * 15.424e-6)



def _new_kernel(name="flash2_fwd", xbar=2.0e6, pipes=None):
    return replace(_kernel(name), xbar_read_bytes=xbar, xbar_write_bytes=65_536.0, l2_lookup_read_sectors=62_500.0,
                   l2_lookup_read_bytes=2.0e6, inst_executed=1.0e6, inst_pipes=pipes or {"tensor_op_hmma": 65_536.0},
                   local_load_bytes=0.0, local_store_bytes=512.0, achieved_occupancy_pct=12.5, sm_clock_hz=1.755e9,
                   cycles=27_100.0)


def test_new_counters_kernel_cases_and_missing_metrics_round_trip(tmp_path):
    """The counters added for the H200 runs, a user's kernel as a case, and ncu's missing metrics all survive a file."""
    m = _measurement()
    counters = Counters.from_kernels([_new_kernel(), _new_kernel("flash2_bwd", xbar=1.0e6)])
    assert (counters.xbar_read_bytes, counters.inst_executed, counters.local_store_bytes) == (3.0e6, 2.0e6, 1024.0)
    assert counters.l2_lookup_write_sectors is None  # no kernel has it
    user = Case(name="kernel-F1_exp_maskall.attention-fwd", impl="kernel", pass_="fwd", kernel="F1.py:attention",
                run_config={"algo": "flash2", "problem": _problem(), "tiling": {"block_m": 128, "block_n": 64,
                                                                              "warps": 4, "stages": 2}},
                timing=m.cases[0].timing, counters=counters,
                launches=[{"kernel": "_fwd_kernel", "grid": [8, 64, 1], "constexprs": {"BLOCK_M": 128}}])
    m = replace(m, provenance=replace(m.provenance, ncu_metrics_missing=("lrc__t_sectors.sum",)), cases=[*m.cases, user])
    path, csv_path = dump_measurement(m, tmp_path / "m.json")
    back = load_measurement(path)
    assert back == m
    assert back.cases[-1].counters.kernels[0].inst_pipes == {"tensor_op_hmma": 65_536.0}
    assert back.provenance.ncu_metrics_missing == ("lrc__t_sectors.sum",)
    header = csv_path.read_text().splitlines()[0].split(",")
    assert {"xbar_read_bytes", "l2_lookup_read_bytes", "inst_executed", "kernel"} <= set(header)
    # Null optional counters are not written: a file from before they existed writes back unchanged.
    assert "xbar_read_bytes" not in json.loads(path.read_text())["cases"][0]["counters"]["kernels"][0]


def test_a_kernel_case_must_name_its_file_and_schedule(tmp_path):
    data = _measurement().to_dict()
    data["cases"][0]["impl"] = "kernel"
    path = tmp_path / "m.json"
    path.write_text(json.dumps(data))
    with pytest.raises(MeasurementError, match="cases\\[0\\].kernel"):
        load_measurement(path)
    data["cases"][0]["kernel"] = "F1.py:attention"
    data["cases"][0]["run_config"]["algo"] = None
    path.write_text(json.dumps(data))
    with pytest.raises(MeasurementError, match="run_config.algo"):
        load_measurement(path)
