"""Validation against the committed H100 measurements: the report's shape, bad input (the fidelity ceilings: test_fidelity.py)."""
from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest
from click.testing import CliRunner

from iosim.cli import main
from iosim.measure.measurement import dump_measurement, load_measurement
from iosim.measure.validate import METRICS, summary, validate

REPO = Path(__file__).resolve().parents[1]
DATA = REPO / json.loads((REPO / "tests" / "fidelity_thresholds.json").read_text())["sets"][0]["data"]
pytestmark = pytest.mark.xdist_group("validate")  # one worker computes the module's fixture once


@pytest.fixture(scope="module")
def validated():
    return validate(load_measurement(DATA))


def test_every_modelled_case_is_compared_sdpa_included(validated):
    """Every case is simulated: iosim's kernels by their run configuration, SDPA's cuDNN and flash
    backends (on this sm_90 GPU) as the references of iosim.schedule.references."""
    results, skipped = validated
    m = load_measurement(DATA)
    assert len(results) == len(m.cases) >= 40 and not skipped
    sdpa = [r for r in results if r.name.startswith("sdpa_")]
    assert len(sdpa) == 8 and all(r.config.get("impl") in ("sdpa_cudnn", "sdpa_flash") for r in sdpa)
    only = validate(m, impls=("sdpa_cudnn",))[0]
    assert {r.name for r in only} == {r.name for r in sdpa if r.name.startswith("sdpa_cudnn")}


def test_l2_aware_model_beats_the_paper_formula(validated):
    """The point of iosim: the cache-less closed form misses DRAM by far more than the simulation."""
    stats = summary(validated[0])
    assert stats["paper_dram_bytes"]["median_abs_error"] > 10 * stats["dram_bytes"]["median_abs_error"]


def test_cases_are_simulated_as_they_ran(validated):
    results, _ = validated
    by_name = {r.name: r for r in results}
    heads = next(r for n, r in by_name.items() if n.endswith("-heads"))
    assert heads.config["tiling"]["grid_order"] == "heads" and heads.config["mode"] == "ncu"
    assert heads.gpu == "h100-sxm-calibrated"


def _subset(tmp_path, n=2, **provenance):
    m = load_measurement(DATA)
    cases = tuple(c for c in m.cases if c.run_config and c.run_config.get("algo") == "flash2")[:n]
    m = replace(m, cases=cases, provenance=replace(m.provenance, **provenance))
    path = tmp_path / "m.json"
    dump_measurement(m, path)
    return path


def test_cli_json_shape(tmp_path):
    r = CliRunner().invoke(main, ["validate", str(_subset(tmp_path)), "--json"])
    assert r.exit_code == 0, r.output
    out = json.loads(r.output)
    assert set(out) >= {"summary", "cases"}
    for case in out["cases"]:
        # shared-memory wavefronts are predicted only for kernels without wgmma (flash2 on sm_90 has it)
        assert set(case["predicted"]) == set(METRICS) - {"shared_wavefronts"}
        # the H100 set predates the crossbar, slice-lookup and instruction counters
        assert set(case["measured"]) == {"dram_read_bytes", "dram_write_bytes", "dram_bytes", "l2_bytes", "time_s"}
        assert case["config"]["algo"] == "flash2"
    assert out["summary"]["dram_bytes"]["cases"] == 2


def test_cli_table_and_plots(tmp_path):
    r = CliRunner().invoke(main, ["validate", str(_subset(tmp_path)), "--plots", str(tmp_path)])
    assert r.exit_code == 0, r.output
    assert "median |err|" in r.output and "paper" in r.output
    for name in ("validation_scatter.png", "validation_error_vs_n.png"):
        assert (tmp_path / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_unknown_gpu_names_the_field(tmp_path):
    path = _subset(tmp_path, gpu_name="NVIDIA B300")
    r = CliRunner().invoke(main, ["validate", str(path)])
    assert r.exit_code == 2 and "provenance.gpu_name" in r.output and "Traceback" not in r.output


@pytest.mark.parametrize("mangle,needle", [
    (lambda d: d.update(schema_version=99), "schema_version"),
    (lambda d: d["cases"][0].pop("run_config"), "run_config"),
])
def test_bad_files_are_one_line_errors(tmp_path, mangle, needle):
    data = json.loads(_subset(tmp_path).read_text())
    mangle(data)
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps(data))
    r = CliRunner().invoke(main, ["validate", str(bad)])
    assert r.exit_code == 2 and "bad.json" in r.output and needle in r.output


def test_truncated_file_and_a_plot_folder_that_cannot_be(tmp_path):
    good = _subset(tmp_path)
    cut = tmp_path / "cut.json"
    cut.write_text(good.read_text()[:500])
    r = CliRunner().invoke(main, ["validate", str(cut)])
    assert r.exit_code == 2 and "cut.json" in r.output
    r = CliRunner().invoke(main, ["validate", str(good), "--plots", str(cut / "figures")])  # under a file
    assert r.exit_code == 2 and "--plots" in r.output and "not a folder" in r.output


def test_validate_names_only_its_own_options(tmp_path):
    """Options of --live alone are refused without it; a case the model cannot run is listed with a
    reason that names no option of another command."""
    good = _subset(tmp_path)
    for extra in (["--grid", "default"], ["--out", str(tmp_path / "runs")]):
        r = CliRunner().invoke(main, ["validate", str(good), *extra])
        assert r.exit_code == 2 and f"{extra[0]} applies with --live" in r.output
    doc = json.loads(good.read_text())
    doc["cases"][0]["run_config"]["tiling"] |= {"block_m": 256, "block_n": 256, "stages": 6}
    good.write_text(json.dumps(doc))
    r = CliRunner().invoke(main, ["validate", str(good), "--json"])
    assert r.exit_code == 0, r.output
    (skipped,) = json.loads(r.output)["skipped"]
    assert "shared memory per CTA" in skipped["why"] and "--" not in skipped["why"]


def test_cases_on_several_processes_give_the_same_results():
    """``--jobs``: each case is simulated on its own (deterministically), so workers change nothing but time."""
    from iosim.measure.validate import validate_files

    path = [str(REPO / "experiments" / "measurements" / "h200" / "fp8" / "measurements.json")]
    one, two = validate_files(path), validate_files(path, jobs=2)
    assert [r.to_dict() for r in one[0]] == [r.to_dict() for r in two[0]] and one[1] == two[1]
    assert len(one[0]) == 5


def test_per_cta_validation_simulates_each_case_one_cta_at_a_time(tmp_path):
    """``--per-cta``: each case is the per-CTA run of its configuration (one process a CTA, one iteration a step),
    which on a forward of several waves differs from the aggregated one, and the JSON says which it is."""
    from iosim.hardware.profile import load_profile
    from iosim.schedule.problem import RunConfig
    from iosim.simulate import simulate

    path = tmp_path / "m.json"
    m = load_measurement(REPO / "experiments" / "measurements" / "h200" / "measurements.json")
    dump_measurement(replace(m, cases=tuple(c for c in m.cases if c.name == "flash2-fwd-fp16-b4h16-n1024-d128")), path)
    runs = {}
    for flag in ((), ("--per-cta",)):
        r = CliRunner().invoke(main, ["validate", str(path), "--json", *flag])
        assert r.exit_code == 0, r.output
        out = json.loads(r.output)
        assert out["per_cta"] == bool(flag)
        runs[bool(flag)] = out["cases"][0]
    config = RunConfig.from_dict(runs[True]["config"])
    expected = simulate(config, load_profile("h200"), aggregate=False, triton_version="3.6.0")
    assert runs[True]["predicted"]["time_s"] == pytest.approx(expected.time_s, rel=1e-12)
    assert runs[True]["predicted"]["time_s"] != pytest.approx(runs[False]["predicted"]["time_s"], rel=0.01)


def test_impl_filter_names_an_unknown_or_absent_implementation():
    fp8 = str(REPO / "experiments" / "measurements" / "h200" / "fp8" / "measurements.json")
    runner = CliRunner()
    bad = runner.invoke(main, ["validate", fp8, "--impl", "cudnn"])
    assert bad.exit_code == 2 and "'cudnn': must be one of ours, standard" in bad.output
    none = runner.invoke(main, ["validate", fp8, "--impl", "flex"])
    assert none.exit_code == 2 and "no case of measurements.json is of flex" in none.output
    ok = runner.invoke(main, ["validate", fp8, "--impl", "ours", "--json"])
    assert ok.exit_code == 0 and len(json.loads(ok.output)["cases"]) == 5


SMALL = REPO / "experiments" / "measurements" / "h200" / "small" / "measurements.json"


@pytest.fixture(scope="module")
def small():
    return validate(load_measurement(SMALL))[0]


def test_each_case_pairs_its_kernels_and_their_times_add_up_to_the_case(small):
    """Against the committed small set: every simulated kernel stands beside a measured launch (our standard
    attention's kernels by their own names, eager PyTorch's cuBLAS and ATen kernels by order), and the
    kernels' predicted and measured times each sum to the case's (conservation: kernels run one by one)."""
    for r in small:
        assert r.kernels and all(k["name"] and k["measured_name"] for k in r.kernels), r.name
        assert sum(k["predicted"]["time_s"] for k in r.kernels) == pytest.approx(r.predicted["time_s"], rel=1e-9)
        assert sum(k["measured"]["time_s"] for k in r.kernels) == pytest.approx(r.measured["time_s"], rel=1e-9)
        assert sum(k["measured"]["dram_bytes"] for k in r.kernels) == pytest.approx(r.measured["dram_bytes"], rel=1e-9)
        for side, whole in (("predicted", r.predicted), ("measured", r.measured)):  # L2 lookups add up the same way
            assert sum(k[side]["l2_lookup_bytes"] for k in r.kernels) == pytest.approx(whole["l2_lookup_bytes"], rel=1e-9)
        if r.config["algo"] == "standard":  # Triton kernels carry the names the schedule gives them
            assert [k["name"] for k in r.kernels] == [k["measured_name"] for k in r.kernels]


def test_kernels_that_do_not_match_in_number_pair_by_name_and_the_rest_stand_alone():
    from types import SimpleNamespace as NS

    from iosim.measure.validate import kernel_pairs
    from iosim.results.result import Traffic

    def sim(name, t):
        return NS(name=name, ctas=4, time_s=t, levels={"hbm": Traffic(100, 0), "l2": Traffic(200, 0)}, l2_lookup_bytes=150)

    def ran(name, t):
        return NS(name=name, grid=(4, 1, 1), duration_s=t, dram_read_bytes=100.0, dram_write_bytes=0.0,
                  xbar_read_bytes=None, xbar_write_bytes=None, l2_lookup_read_sectors=None, l2_lookup_write_sectors=None)

    pairs = kernel_pairs([sim("qk", 2.0), sim("pv", 4.0)],
                         [ran("void ns::qk<1, 2>(float*)", 1.0), ran("fill", 1.0), ran("pv", 5.0)])
    assert [(k["name"], k["measured_name"]) for k in pairs] == [
        ("qk", "void ns::qk<1, 2>(float*)"), (None, "fill"), ("pv", "pv")]
    assert pairs[0]["error"] == {"dram_bytes": 0.0, "time_s": 1.0} and pairs[1]["predicted"] == {}
    assert pairs[2]["error"]["time_s"] == pytest.approx(-0.2)
    alone = kernel_pairs([sim("qk", 1.0), sim("extra", 1.0)], [ran("qk", 1.0)])
    assert [(k["name"], k["measured_name"]) for k in alone] == [("qk", "qk"), ("extra", None)]
    same = kernel_pairs([sim("a", 1.0)], [ran("nvjet_sm90_hsh_64x48", 2.0)])  # one each: paired in order
    assert same[0]["measured_name"] == "nvjet_sm90_hsh_64x48" and same[0]["error"]["time_s"] == -0.5


def test_a_kernel_compiled_from_a_users_function_pairs_with_that_functions_launch():
    """B1's launcher runs its preprocess before PyTorch's zero-fill of dQ, the model the other way round: the kernels
    priced from B1's compiled functions pair with those functions' launches, PyTorch's kernels in order among the
    rest; where the numbers differ, a compiled function's name finds its launch too."""
    from types import SimpleNamespace as NS

    from iosim.measure.validate import kernel_pairs
    from iosim.results.result import Traffic

    def sim(name, code):
        return NS(name=name, ctas=4, time_s=1.0, code=code, levels={"hbm": Traffic(100, 0), "l2": Traffic(200, 0)}, l2_lookup_bytes=150)

    def ran(name):
        return NS(name=name, grid=(4, 1, 1), duration_s=1.0, dram_read_bytes=100.0, dram_write_bytes=0.0,
                  xbar_read_bytes=None, xbar_write_bytes=None, l2_lookup_read_sectors=None, l2_lookup_write_sectors=None)

    aten = "ncu: ATen at::vectorized_elementwise_kernel, sm_90, torch 2.11.0+cu130"
    model = [sim("flash2_fwd", "sass: B1.py _fwd_kernel, sm_90, triton 3.6.0"), sim("zeros_dq", aten),
             sim("flash2_bwd_pre", "sass: B1.py _bwd_preprocess, sm_90, triton 3.6.0"),
             sim("flash2_bwd", "sass: B1.py _bwd_kernel, sm_90, triton 3.6.0"), sim("cast_dq", aten)]
    gpu = [ran("_fwd_kernel"), ran("_bwd_preprocess"), ran("void at::vectorized_elementwise_kernel<4, at::FillFunctor<float>>(int)"),
           ran("_bwd_kernel"), ran("void at::vectorized_elementwise_kernel<8, at::float16_copy_kernel_cuda>(int)")]
    pairs = kernel_pairs(model, gpu)
    assert [(k["name"], bare(k["measured_name"])) for k in pairs] == [
        ("flash2_fwd", "_fwd_kernel"), ("zeros_dq", "Fill"), ("flash2_bwd_pre", "_bwd_preprocess"),
        ("flash2_bwd", "_bwd_kernel"), ("cast_dq", "copy")]
    fewer = kernel_pairs(model[2:4], gpu[:2] + gpu[3:4])  # unequal numbers: by the compiled function's name
    assert [(k["name"], k["measured_name"]) for k in fewer] == [
        (None, "_fwd_kernel"), ("flash2_bwd_pre", "_bwd_preprocess"), ("flash2_bwd", "_bwd_kernel")]


def test_launches_of_one_function_pair_by_the_bytes_they_move():
    """B1's GQA launcher casts dQ to bf16 after its two group sums and their casts; the model casts dQ first. All
    four copies and the fill are ATen's ``vectorized_elementwise_kernel``: each pairs with the launch that moves
    its bytes (dQ's 101 MB with the last), copies of equal bytes in order, and the sums between stay in order."""
    from types import SimpleNamespace as NS

    from iosim.measure.validate import kernel_pairs
    from iosim.results.result import Traffic

    def sim(name, xbar):
        return NS(name=name, ctas=4, time_s=1.0, code="ncu: ATen at::vectorized_elementwise_kernel, sm_90, torch",
                  levels={"hbm": Traffic(xbar, 0), "l2": Traffic(xbar, 0)}, l2_lookup_bytes=xbar)

    def ran(name, xbar, grid, crossbar=True):
        return NS(name=name, grid=(grid, 1, 1), duration_s=1.0, dram_read_bytes=float(xbar), dram_write_bytes=0.0,
                  xbar_read_bytes=float(xbar) if crossbar else None, xbar_write_bytes=0.0 if crossbar else None,
                  l2_lookup_read_sectors=None, l2_lookup_write_sectors=None)

    def total(name, nbytes):
        return NS(name=name, ctas=4, time_s=1.0, code="", levels={"hbm": Traffic(nbytes, 0), "l2": Traffic(nbytes, 0)},
                  l2_lookup_bytes=nbytes)

    fill, copy = "void at::vectorized_elementwise_kernel<4, at::FillFunctor<float>>(int)", \
        "void at::vectorized_elementwise_kernel<8, at::bfloat16_copy_kernel_cuda>(int)"
    model = [sim("zeros_dq", 67), sim("cast_dq", 101), total("sum_dk", 40), sim("copy_dk", 12), total("sum_dv", 40),
             sim("copy_dv", 13)]
    for crossbar in (True, False):  # the DRAM bytes where a file has no crossbar counters
        gpu = [ran(fill, 67, 16384, crossbar), ran(copy, 12, 2048, crossbar), ran("reduce_kernel", 41, 4096, crossbar),
               ran(copy, 13, 2049, crossbar), ran("reduce_kernel", 41, 4096, crossbar), ran(copy, 101, 16384, crossbar)]
        pairs = kernel_pairs(model, gpu)
        assert [(k["name"], k["grid"][0]) for k in pairs] == [
            ("zeros_dq", 16384), ("cast_dq", 16384), ("sum_dk", 4096), ("copy_dk", 2048), ("sum_dv", 4096),
            ("copy_dv", 2049)]
        assert all(k["error"]["dram_bytes"] == pytest.approx(0, abs=0.03) for k in pairs if k["name"] != "sum_dk"
                   and k["name"] != "sum_dv")


def test_a_launchs_later_loop_stands_with_its_first_as_one_launch():
    """The Triton tutorial's backward is one launch of two loops (dK/dV, then dQ), which the model records as two
    kernels: paired, they stand as one beside the one launch, their bytes and times summed (conservation)."""
    from types import SimpleNamespace as NS

    from iosim.measure.validate import kernel_pairs
    from iosim.results.result import Traffic

    def sim(name, nbytes, t, launched=True):
        return NS(name=name, ctas=8, time_s=t, code="sass: tutorial_bwd.py _attn_bwd, sm_90, triton 3.6.0",
                  launched=launched, levels={"hbm": Traffic(nbytes, 0), "l2": Traffic(2 * nbytes, 0)},
                  l2_lookup_bytes=nbytes)

    launch = NS(name="_attn_bwd", grid=(8, 1, 16), duration_s=4.0, dram_read_bytes=300.0, dram_write_bytes=0.0,
                xbar_read_bytes=600.0, xbar_write_bytes=0.0, l2_lookup_read_sectors=9.0, l2_lookup_write_sectors=1.0,
                l2_lookup_atom_sectors=2.0, l2_lookup_red_sectors=None)
    (pair,) = kernel_pairs([sim("flash2_bwd_kv", 200, 3.0), sim("flash2_bwd_q", 100, 1.0, launched=False)], [launch])
    assert (pair["name"], pair["measured_name"], pair["ctas"]) == ("flash2_bwd_kv+flash2_bwd_q", "_attn_bwd", 8)
    assert pair["predicted"] == {"dram_bytes": 300, "xbar_bytes": 600, "l2_lookup_bytes": 300, "time_s": 4.0}
    assert pair["measured"]["l2_lookup_bytes"] == 32 * (9 + 1 + 2)  # read, write and atomic sectors
    assert pair["error"] == {"dram_bytes": 0.0, "xbar_bytes": 0.0, "l2_lookup_bytes": 300 / 384 - 1, "time_s": 0.0}


def bare(name: str) -> str:
    return "Fill" if "FillFunctor" in name else "copy" if "copy_kernel" in name else name


@pytest.mark.parametrize("name, bare", [
    ("void <unnamed>::softmax_warp_forward<c10::Half, c10::Half, float, 10, 0, 0>(T2 *, const T1 *, int)",
     "softmax_warp_forward"),
    ("void at::vectorized_elementwise_kernel<8, at::AUnaryFunctor<c10::Half, binary_internal::MulFunctor<float>>, "
     "std::array<char *, 2>>(int, T2, T3)", "vectorized_elementwise_kernel"),
    ("void at::reduce_kernel<128, 4, at::ReduceOp<c10::Half, at::func_wrapper_t<c10::Half, at::sum_functor<c10::Half, "
     "float, c10::Half>::operator ()(at::TensorIterator &)::[lambda(float, float) (instance 1)]>, unsigned int, "
     "c10::Half, 4, 8>>(T3)", "reduce_kernel"),
    ("flash2_fwd", "flash2_fwd"), ("pytorch_flash::flash_fwd_kernel<Flash_fwd_kernel_traits<64>>(Params)",
                                   "flash_fwd_kernel")])
def test_a_measured_kernels_bare_name(name, bare):
    from iosim.measure.validate import bare_name
    assert bare_name(name) == bare


def test_cli_kernels_lists_each_kernel_under_its_case(tmp_path):
    r = CliRunner().invoke(main, ["validate", str(SMALL), "--kernels"])
    assert r.exit_code == 0, r.output
    lines = r.output.splitlines()
    at = next(n for n, line in enumerate(lines) if line.startswith("standard-fwd-fp16-b1h4-n1024-d64"))
    assert [line.split()[0] for line in lines[at + 1:at + 4]] == ["qk", "softmax", "pv"]
    assert " 32 CTAs " in lines[at + 3] and lines[at + 3].split("grid")[1].split()[0] == "8x4x1"
    assert " lookups " in lines[at + 3]
    eager = next(line for line in lines if line.strip().startswith("pv = nvjet_"))  # cuBLAS's product, by order
    assert eager.split("grid")[1].split()[0] == "4x24x1"
    out = json.loads(CliRunner().invoke(main, ["validate", str(SMALL), "--json"]).output)
    assert all(len(c["kernels"]) >= 1 for c in out["cases"])
