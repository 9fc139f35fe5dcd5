"""What the harness measures (kernels/cases.py): the case type, its names, and the grids; no GPU needed."""
from __future__ import annotations

import json
from dataclasses import replace
from importlib import resources
from pathlib import Path

import pytest

from iosim.files import read_json
from iosim.kernels import harness
from iosim.kernels.cases import REF_TILING, CaseSpec, case, default_grid, smoke_grid
from iosim.schedule.problem import ConfigError, Problem, RunConfig, Tiling

REPO = Path(__file__).resolve().parents[1]


def _committed_names(path: str) -> list[str]:
    """Case names of a committed measurement file: the keys its data is known by."""
    data = json.loads((resources.files("iosim.measurements") / path).read_text())
    return [c["name"] for c in data["cases"]]


def test_grid_names_are_the_keys_of_the_committed_data():
    assert [c.name for c in default_grid()] == _committed_names("h100/measurements.json")
    assert sorted(c.name for c in smoke_grid()) == sorted(_committed_names("h100/live-smoke/measurements.json"))
    assert default_grid()[1].name == "flash2-fwd-fp16-b4h16-n4096-d64-bm128bn64w4"


def test_default_grid_covers_the_h100_data_set():
    grid = default_grid()
    assert len(grid) >= 40
    assert len({c.name for c in grid}) == len(grid)
    assert {c.impl for c in grid} == {"flash2", "flash1", "standard", "standard_eager", "sdpa_flash", "sdpa_cudnn"}
    flash = [c for c in grid if c.impl in ("flash1", "flash2")]
    assert min(c.problem.seq_q for c in flash) == 512 and max(c.problem.seq_q for c in flash) == 65536
    assert all(c.problem.seq_k == c.problem.seq_q for c in grid)
    for impl in ("flash2", "flash1", "standard", "standard_eager"):
        assert {c.pass_ for c in grid if c.impl == impl} == {"fwd", "fwd_bwd"}, impl
    f2_fwd = [c for c in grid if c.impl == "flash2" and c.pass_ == "fwd"]
    assert {c.tiling.grid_order for c in f2_fwd} == {"rows", "heads"}
    p = [c.problem for c in grid]
    assert any(x.kv_heads < x.heads and x.heads == 16 and x.kv_heads in (2, 4) for x in p)
    assert {x.dtype for x in p} == {"fp16", "bf16"} and {x.head_dim for x in p} == {64, 128}
    assert {x.causal for x in p} == {True, False}
    assert {c.impl for c in grid if c.impl.startswith("sdpa")} == {"sdpa_flash", "sdpa_cudnn"}


def test_default_grid_holds_the_reference_cases_first():
    grid = default_grid()
    ref = dict(batch=4, heads=16, head_dim=64, dtype="fp16", causal=False, backward=False)
    for impl, seq, tiling in [("flash2", 4096, REF_TILING), ("flash2", 1024, REF_TILING),
                              ("standard_eager", 1024, Tiling()), ("standard_eager", 4096, Tiling())]:
        want = CaseSpec(impl, Problem(seq_q=seq, **ref), tiling)
        assert want in grid[:harness.BATCH_SIZE], want.name
    assert Tiling(block_m=128, block_n=64, warps=4, stages=None, grid_order="rows") == REF_TILING


def test_default_grid_stays_within_memory_and_time():
    """Scores in HBM at most ~9 GB per N×N tensor; no call much above 10 TFLOP (≈ 30 ms at 300 TFLOP/s forward)."""
    for c in default_grid():
        p = c.problem
        if c.impl in ("standard", "standard_eager"):
            assert p.batch * p.heads * p.seq_q * p.seq_k * 2 <= 9e9, c.name
        assert c.flops() <= 1e13, c.name


def test_case_checks_and_names():
    spec = case("flash2", "fwd_bwd", kv_heads=4, causal=True, tiling=Tiling(block_m=64, grid_order="heads"))
    assert spec.name == "flash2-fwd_bwd-fp16-b4h16kv4-n4096-d64-causal-bm64-heads"
    assert spec.flops() == pytest.approx(4 * 64 * 4096**2 * 64 / 2 * 3.5)
    assert spec.flops() == spec.problem.flops()  # the one FLOP convention
    assert case("flash2", tiling=Tiling(stages=3, warps=8)).name.endswith("-s3w8")
    assert case("sdpa_flash", seq=1024, seq_k=2048).name == "sdpa_flash-fwd-fp16-b4h16-n1024k2048-d64"
    with pytest.raises(ConfigError, match="impl: must be one of"):
        CaseSpec("xformers")
    with pytest.raises(ConfigError, match="only our kernels take tiling"):
        case("sdpa_flash", tiling=Tiling(block_m=64))
    with pytest.raises(ConfigError, match="grid_order"):
        case("flash1", tiling=Tiling(grid_order="heads"))
    with pytest.raises(ConfigError, match="head_dim"):
        case("flash2", head_dim=96)
    with pytest.raises(ConfigError, match="pass"):
        case("flash2", "bwd")


@pytest.mark.parametrize("spec", default_grid() + smoke_grid(), ids=lambda c: c.name)
def test_a_case_survives_json(spec):
    """What the ncu child receives: the case itself, back from JSON text."""
    assert CaseSpec.from_json(json.loads(json.dumps(spec.to_json()))) == spec


def test_run_config_is_resolved_for_ours_and_null_where_unknown():
    spec = case("flash2", "fwd_bwd", tiling=Tiling(block_m=64))
    config = spec.run_config()
    assert config == RunConfig("flash2", spec.problem, Tiling(block_m=64)).resolved().to_dict()
    assert config["tiling"]["block_m"] == 64 and config["backward_tiling"]["block_m"] == 64
    assert None not in config["tiling"].values() and None not in config["backward_tiling"].values()
    assert spec.overrides() == {"block_m": 64, "grid_order": "rows"}
    sdpa = case("sdpa_cudnn", "fwd_bwd").run_config()
    assert (sdpa["algo"], sdpa["tiling"], sdpa["problem"]["backward"]) == (None, None, True)
    eager = case("standard_eager").run_config()
    assert (eager["algo"], eager["tiling"]) == ("standard_eager", {})
    assert replace(spec, name="x").name == "x"


def test_h200_grid_is_the_default_grid_and_long_causal_sequences_at_d128():
    from iosim.kernels.cases import GRIDS, h200_grid

    grid, default = h200_grid(), default_grid()
    assert grid[-len(default):] == default and GRIDS["h200"] is h200_grid
    extra = grid[:-len(default)]
    assert len({c.name for c in grid}) == len(grid)
    assert all(c.problem.head_dim == 128 and c.problem.seq_q >= 49152 for c in extra)
    # one head's K and V (N x 512 bytes) from below to above the H200's L2 (60 MB), causal
    assert sorted(c.problem.seq_q * 512 / 2**20 for c in extra if c.impl == "flash2" and c.pass_ == "fwd"
                  and c.problem.causal) == [24, 32, 40, 48, 56, 64]
    assert {(c.impl, c.pass_, c.problem.seq_q, c.problem.causal) for c in extra} >= {
        ("flash2", "fwd", 65536, False), ("sdpa_flash", "fwd", 65536, True), ("sdpa_flash", "fwd", 131072, True),
        ("flash2", "fwd_bwd", 65536, True)}
    assert max(c.flops() for c in extra) < 1e14  # each call ≲ 0.2 s at 300 TFLOP/s


def test_a_user_kernel_case_names_file_and_function_and_travels_to_the_ncu_child():
    from iosim.kernels.cases import kernel_case

    spec = kernel_case("experiments/foreign_kernels/F1_exp_maskall.py:attention", "flash2", "fwd_bwd",
                       batch=1, heads=8, seq_q=4096, head_dim=128, causal=True)
    assert spec.name == "kernel-F1_exp_maskall.attention-fwd_bwd-fp16-b1h8-n4096-d128-causal"
    unsaid = {k: v for k, v in spec.problem.__dict__.items() if k != "causal_align"}  # the default, top-left
    assert spec.run_config() == {"algo": "flash2", "problem": unsaid, "tiling": {}}
    assert CaseSpec.from_json(json.loads(json.dumps(spec.to_json()))) == spec
    br = kernel_case("experiments/foreign_kernels/F1_exp_maskall.py:attention", "flash2", "fwd", batch=1, heads=8,
                     seq_q=1024, seq_k=4096, head_dim=128, causal=True, causal_align="bottom-right")
    assert br.name.endswith("-n1024k4096-d128-causal-br") and br.run_config()["problem"]["causal_align"] == "bottom-right"
    assert CaseSpec.from_json(json.loads(json.dumps(br.to_json()))) == br
    with pytest.raises(ConfigError, match="algo"):
        kernel_case("x.py:attention", "sdpa_flash")
    with pytest.raises(ConfigError, match="kernel"):
        kernel_case("x.txt", "flash2")
    with pytest.raises(ConfigError, match="kernel"):
        CaseSpec("flash2", kernel="x.py:attention")


def test_the_foreign_grid_reads_a_manifest_relative_to_its_folder(tmp_path):
    from iosim.kernels.cases import REPO, manifest_cases

    (tmp_path / "manifest.yaml").write_text(
        "- kernel: F1_exp_maskall.py:attention\n  algo: flash2\n  pass: fwd\n"
        "  problem: {batch: 1, heads: 8, kv_heads: 8, seq_q: 4096, seq_k: 4096, head_dim: 128, dtype: fp16, causal: true}\n"
        "- kernel: F2.py:attention\n  pass: fwd_bwd\n  problem: {seq_q: 1024, head_dim: 64}\n")
    cases = manifest_cases(tmp_path / "manifest.yaml")
    assert [c.kernel for c in cases] == [f"{tmp_path.resolve()}/F1_exp_maskall.py:attention",
                                          f"{tmp_path.resolve()}/F2.py:attention"]
    assert (cases[0].problem.causal, cases[1].backward, cases[1].algo) == (True, True, "flash2")
    inside = REPO / "experiments/foreign_kernels/manifest.yaml"
    if inside.exists():  # the committed manifest, paths relative to the repository
        assert all(c.kernel.startswith("experiments/foreign_kernels/") for c in manifest_cases(inside))
    (tmp_path / "bad.yaml").write_text("kernel: F1.py:attention\n")
    with pytest.raises(ConfigError, match="YAML list"):
        manifest_cases(tmp_path / "bad.yaml")


def test_varlen_and_window_grids_name_build_and_travel():
    """Each case once, back from JSON, its schedule built (ours) or its algo null (FlexAttention), caches in memory."""
    from iosim.kernels.cases import spread, varlen_grid, window_grid
    from iosim.kernels.inputs import packed
    from iosim.schedule.build import build_schedule

    for grid in (varlen_grid(), window_grid()):
        assert len({c.name for c in grid}) == len(grid)
        for spec in grid:
            assert CaseSpec.from_json(json.loads(json.dumps(spec.to_json()))) == spec
            config = spec.run_config()
            if spec.impl == "flex":
                assert config["algo"] is None
                continue
            schedule = build_schedule(RunConfig.from_dict(config), sm_count=132)
            assert schedule.peak_hbm_bytes < 40e9, spec.name
            p = spec.problem
            assert packed(spec) == (spec.impl == "flash2" and (p.seq_lens is not None or p.window is not None))
    lens = spread(64, 1024, 65536)
    assert min(lens) >= 1024 and max(lens) <= 65536 and len(set(lens)) == 64
    assert spread(64, 1024, 65536) == lens  # no random generator: the same batch on every machine
    names = [c.name for c in varlen_grid()]
    assert "flash2-fwd-fp16-b64h32kv8-n512-d128-causal-vl64x512" in names  # short: the lengths themselves
    assert any(n.endswith("-vl64r1024-63357t1002584") for n in names)  # long: count, range and total


def test_the_lone_grid_leaves_each_decode_cta_alone_on_its_sm_then_fills_one_and_two_waves():
    from iosim.hardware.profile import load_profile
    from iosim.kernels.cases import GRIDS, lone_grid
    from iosim.schedule.build import build_schedule

    sms = load_profile("h200").sm_count
    grid = lone_grid()
    assert GRIDS["lone"] is lone_grid and len({c.name for c in grid}) == len(grid)
    ctas, rows = [], set()
    for spec in grid:
        config = RunConfig.from_dict(spec.run_config())
        split = build_schedule(config).kernels[0]
        ctas.append(split.ctas)
        rows.add((config.tiling.block_m, split.name))
    assert all(n < sms // 2 for n in ctas[:-2]) and sms // 2 < ctas[-2] <= sms < ctas[-1] <= 2 * sms
    assert rows == {(m, k) for m in (16, 32, 64) for k in ("decode_split", "decode_split_ragged")}


def test_hopper_grid_is_the_committed_set_and_its_compiled_code():
    """The hopper grid: the Hopper kernel forward and forward + backward on five shapes, SDPA beside it; the
    committed H200 set measured exactly these cases and kernels/mixes holds each kernel case's code."""
    from iosim.kernels.cases import GRIDS, HOPPER_KERNEL, hopper_grid

    grid = hopper_grid()
    assert GRIDS["hopper"] is hopper_grid
    assert [c.name for c in grid] == _committed_names("h200/hopper/ncu_bwd/measurements.json")
    kernels = [c for c in grid if c.impl == "kernel"]
    assert len(kernels) == 10 and {c.kernel for c in kernels} == {HOPPER_KERNEL}
    assert {c.pass_ for c in kernels} == {"fwd", "fwd_bwd"} and {c.impl for c in grid} >= {"sdpa_cudnn", "sdpa_flash"}
    from iosim.kernels.cases import fp8_grid

    fp8 = fp8_grid()  # the fp8 forward on the same shapes, committed as h200/fp8
    assert [c.name for c in fp8] == _committed_names("h200/fp8/measurements.json")
    assert {c.problem.dtype for c in fp8} == {"fp8"} and not any(c.problem.backward for c in fp8)
    for version in ("3.6.0", "3.9.0"):
        mixes = read_json(REPO / "kernels" / "mixes" / f"sm_90-triton-{version}.json.gz")
        assert sorted(mixes["cases"]) == sorted(c.name for c in kernels + fp8), version
