"""The ``iosim`` command through click's runner: exit codes, the table, the JSON schema, one-line errors."""
from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from iosim.cli import main


def run(*args):
    return CliRunner().invoke(main, list(args))


def test_simulate_table_compares_algorithms():
    r = run("simulate", "--seq-len", "1k,2k")
    assert r.exit_code == 0, r.output
    lines = r.output.splitlines()
    assert "gpu=a100-sxm4-80gb" in lines[0]
    assert sum(line.split()[0] == "standard" for line in lines[2:]) == 2
    assert sum(line.split()[0] == "flash2" for line in lines[2:]) == 2


def test_simulate_json_schema():
    r = run("simulate", "--gpu", "h100", "--algo", "flash1,flash2", "--seq-len", "1k", "--json")
    assert r.exit_code == 0, r.output
    runs = json.loads(r.output)
    assert [x["config"]["algo"] for x in runs] == ["flash1", "flash2"]
    for x in runs:
        assert set(x["levels"]) == {"sram", "l2", "hbm", "host"}
        for lv in x["levels"].values():
            assert set(lv) == {"read_bytes", "write_bytes"}
        assert x["time_s"] > 0 and x["bound"] and x["peak_hbm_bytes"] > 0
        assert x["config"]["problem"]["seq_q"] == 1024 and x["config"]["tiling"]["grid_order"] == "rows"
    # flash1 re-writes O, l, m (fp32) per K/V block: T_c = 8 passes of 4-byte O at d = 64 against
    # flash2's one 2-byte O, so at least 8 × 2 = 16× the L2 writes
    assert runs[0]["levels"]["l2"]["write_bytes"] > 16 * runs[1]["levels"]["l2"]["write_bytes"] * 0.9


def test_simulate_csv_has_a_row_per_run():
    r = run("simulate", "--seq-len", "512:2k", "--algo", "flash2", "--csv")
    assert r.exit_code == 0
    rows = r.output.strip().splitlines()
    assert rows[0].startswith("gpu,algo,seq_q") and [x.split(",")[2] for x in rows[1:]] == ["512", "1024", "2048"]


def test_dq_in_a_kernel_of_its_own_runs_its_kernels():
    """--dq separate: no fp32 accumulator (memset, cast) and no atomics, dQ from a kernel over Q blocks; --algo
    standard keeps its own backward."""
    args = ("simulate", "--gpu", "h100", "--algo", "flash2,standard", "--seq-len", "1k", "--backward", "--json")
    sep, atomic = (json.loads(run(*args, "--dq", dq).output) for dq in ("separate", "atomic"))
    names = [[k["name"] for k in r["kernels"]] for r in (sep[0], atomic[0])]
    assert names == [["flash2_fwd", "flash2_bwd_pre", "flash2_bwd_kv", "flash2_bwd_q"],
                     ["flash2_fwd", "zeros_dq", "flash2_bwd_pre", "flash2_bwd", "cast_dq"]]
    assert sep[0]["config"]["dq"] == "separate" and "dq" not in atomic[0]["config"]
    assert sep[1]["config"]["algo"] == "standard" and "dq" not in sep[1]["config"] and sep[1] == atomic[1]


def test_user_profile_file_works_like_a_builtin(tmp_path):
    from iosim.hardware.profile import read_profile_dict, write_profile

    d = read_profile_dict("h100")
    d["name"] = "my H100 with half the L2"
    d["fields"]["l2_bytes"]["value"] = 25
    d["fields"]["l2_bytes"]["unit"] = "MiB"
    path = write_profile(d, tmp_path / "mine.yaml")
    mine = json.loads(run("simulate", "--gpu", str(path), "--algo", "flash2", "--seq-len", "8k", "--json").output)
    base = json.loads(run("simulate", "--gpu", "h100", "--algo", "flash2", "--seq-len", "8k", "--json").output)
    assert mine[0]["gpu"] == "mine"
    assert mine[0]["levels"]["hbm"]["read_bytes"] >= base[0]["levels"]["hbm"]["read_bytes"]


@pytest.mark.parametrize("args,needle", [
    (("--seq-len", "0"), "--seq-len"),
    (("--seq-len", "abc"), "--seq-len"),
    (("--gpu", "nope"), "h100-sxm"),
    (("--algo", "flash3"), "flash2"),
    (("--head-dim", "48"), "--head-dim: iosim's kernels take 16, 32, 64, 128, 256 (a power of two, tiled whole), got 48"),
    (("--head-dim", "100"), "--head-dim: must be a multiple of 8 from 8 to 256, got 100"),
    (("--head-dim", "512"), "--head-dim: must be a multiple of 8 from 8 to 256, got 512"),
    (("--head-dim", "96", "--impl", "sdpa_flash"), "--head-dim: sdpa_flash is modelled at head dims 64, 128"),
    (("--heads", "16", "--kv-heads", "5"), "--kv-heads"),
    (("--algo", "flash2", "--head-dim", "128", "--block-m", "256", "--block-n", "256", "--stages", "4",
      "--gpu", "4090"), "shared memory per CTA"),
    (("--algo", "standard", "--grid-order", "heads"), "--grid-order"),
    (("--block-m", "100"), "--block-m"),
    # sizes that used to hang (a range from 0 or below doubles forever), truncate or raise a traceback
    (("--seq-len", "0:4k"), "'0' is not a whole number > 0"),
    (("--seq-len", "-1:4k"), "'-1' is not a whole number > 0"),
    (("--seq-len", "5.5"), "'5.5' is not a whole number > 0"),
    (("--seq-len", "inf"), "'inf' is not a whole number > 0"),
    (("--seq-len", "nan"), "'nan' is not a whole number > 0"),
    (("--seq-len", "4k:1k"), "a range goes up"),
    (("--algo", ",,,"), "no algorithm given"),
    (("--gpu", ","), "no GPU given"),
    (("--json", "--csv"), "--json and --csv are exclusive"),
    (("--causal", "--seq-k", "2048", "--impl", "sdpa_flash"), "--seq-k: sdpa_flash is modelled causal with seq_k == seq_q"),
    (("--causal", "--causal-align", "middle"), "--causal-align"),
    (("--algo", "flash2", "--stages", "10"), "--block-m/--block-n/--stages: flash2_fwd needs"),
    (("--dq", "merged"), "--dq"),
    (("--impl", "sdpa_flash", "--backward", "--dq", "separate"), "--dq: separate is a FlashAttention backward"),
])
def test_bad_input_is_one_line_exit_2(args, needle):
    r = run("simulate", *args)
    assert r.exit_code == 2
    assert needle in r.output
    assert "Traceback" not in r.output
    assert len([line for line in r.output.splitlines() if line.startswith("Error")]) == 1


def test_malformed_profile_is_refused(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("schema_version: 1\nname: x\nfields: {sm_count: {value: -3, unit: count, source: me}}\n")
    r = run("simulate", "--gpu", str(bad))
    assert r.exit_code == 2 and "bad.yaml" in r.output and "Traceback" not in r.output


def test_profiles_list_and_show():
    r = run("profiles")
    assert r.exit_code == 0 and "h100-sxm" in r.output and "rtx4090" in r.output
    r = run("profiles", "show", "h100")
    assert r.exit_code == 0 and "l2_bytes" in r.output and "source" not in r.output.splitlines()[0]


@pytest.mark.parametrize("args", [("measure", "--out", "{tmp}/m"), ("calibrate", "--out", "{tmp}/c.yaml"),
                                  ("validate", "--live", "--out", "{tmp}/v")])
def test_gpu_commands_without_a_gpu_refuse_in_one_line(tmp_path, args):
    pytest.importorskip("torch")
    import torch

    if torch.cuda.is_available():
        pytest.skip("a GPU is present")
    r = run(*[a.format(tmp=tmp_path) for a in args])
    assert r.exit_code == 2 and "no CUDA GPU" in r.output and "Traceback" not in r.output
    assert not (tmp_path / "m" / "measurements.json").exists() and not (tmp_path / "c.yaml").exists()


def test_a_sweep_keeps_points_that_cannot_run_as_rows_with_their_reason():
    """Standard attention's S and P outgrow the 4090's 24 GB between N = 8K and 16K (batch 4 × 16 heads):
    the 16K point is a row saying so, found without simulating, and the other points still run."""
    r = run("simulate", "--gpu", "4090", "--algo", "standard", "--seq-len", "512,16k", "--json")
    assert r.exit_code == 0, r.output
    fits, oom = json.loads(r.output)
    assert fits["time_s"] > 0 and not fits["out_of_memory"]
    s_bytes = 4 * 16 * 16384 ** 2 * 2
    assert oom["skipped"].startswith("OOM: needs ") and oom["skipped"].endswith(" of 24 GB")
    assert oom["out_of_memory"] and oom["peak_hbm_bytes"] >= 2 * s_bytes and "levels" not in oom
    csv_rows = run("simulate", "--gpu", "4090", "--algo", "standard", "--seq-len", "512,16k", "--csv").output
    header, first, second = csv_rows.strip().splitlines()
    assert {"block_m", "block_n", "warps", "stages", "grid_order", "host_tensors", "skipped"} <= set(header.split(","))
    assert second.endswith(oom["skipped"]) and ",,," in second and not first.endswith("GB")


def test_a_size_beyond_any_memory_answers_at_once_with_exit_1():
    for args in (("--seq-len", "99999999999999999999"), ("--batch", "1000000", "--seq-len", "1k")):
        r = run("simulate", "--algo", "flash2", *args)
        assert r.exit_code == 1 and "OOM: needs " in r.output and "Traceback" not in r.output


def test_repeated_sizes_and_algorithms_run_once():
    r = run("simulate", "--algo", "flash2,flash2", "--seq-len", "1k,1k,512:1k", "--csv")
    assert r.exit_code == 0
    assert [x.split(",")[2] for x in r.output.strip().splitlines()[1:]] == ["1024", "512"]


def test_measure_manifest_errors_name_the_option(tmp_path):
    """``iosim measure --manifest``: a file that is not a list of cases, or given with --kernel, is a one-line
    usage error (exit 2) before any GPU work, and nothing is written."""
    pytest.importorskip("torch")
    from click.testing import CliRunner

    from iosim.cli import main

    bad = tmp_path / "bad.yaml"
    bad.write_text("kernel: a.py:f\n")
    out = tmp_path / "out"
    result = CliRunner().invoke(main, ["measure", "--manifest", str(bad), "--out", str(out)])
    assert result.exit_code == 2 and "--manifest" in result.output and "must be a YAML list of cases" in result.output
    result = CliRunner().invoke(main, ["measure", "--manifest", str(bad), "--kernel", "a.py:f", "--out", str(out)])
    assert result.exit_code == 2 and "--kernel and --manifest" in result.output
    assert not (out / "measurements.json").exists()


def test_measure_kernel_records_a_causal_alignment_and_refuses_a_bad_one(tmp_path, monkeypatch):
    """``iosim measure --kernel`` takes --seq-k and --causal-align into the case it measures (a bottom-right case is
    named so), and a problem the model refuses is a one-line usage error before any GPU work."""
    pytest.importorskip("torch")
    from click.testing import CliRunner

    from iosim.cli import main
    from iosim.kernels import harness

    seen = []
    monkeypatch.setattr(harness, "measure", lambda cases, *a, **k: seen.extend(cases) or None)
    args = ["measure", "--kernel", "tests/data/user_kernel_tiny.py:attention", "--seq-len", "128", "--seq-k", "512",
            "--causal", "--out", str(tmp_path)]
    CliRunner().invoke(main, args + ["--causal-align", "bottom-right"])
    assert seen and seen[0].problem.causal_offset == 384 and seen[0].name.endswith("-n128k512-d64-causal-br")
    bad = CliRunner().invoke(main, args + ["--dtype", "fp8", "--heads", "3", "--kv-heads", "2"])
    assert bad.exit_code == 2 and "--kernel" in bad.output and "kv_heads" in bad.output
