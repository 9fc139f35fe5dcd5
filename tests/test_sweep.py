"""Sweeps as data: spec files, results streamed to a file and resumed, local processes vs a Dask cluster,
and Ctrl-C. The oracle is the sequential run: every other way must give the same file, byte for byte."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest
import yaml
from click.testing import CliRunner

from iosim import spec as specs
from iosim import sweep
from iosim.cli import main

SPEC = {
    "schema": "iosim-sweep", "schema_version": 1,
    "gpu": ["h100", 4090], "algo": ["standard", "flash2"],
    "problem": {"seq_q": "512:1k", "head_dim": 64, "batch": 2, "heads": 4, "causal": [False, True]},
}


def write_spec(tmp_path, doc=SPEC, name="spec.yaml"):
    path = tmp_path / name
    path.write_text(yaml.safe_dump(doc))
    return path


def test_a_spec_means_every_combination_in_a_fixed_order(tmp_path):
    work = specs.load_spec(write_spec(tmp_path))
    assert len(work) == 2 * 2 * 2 * 2  # gpus × algos × sizes × causal
    first, last = work[0], work[-1]
    assert first[1] == "h100" and first[0].algo == "standard" and first[0].problem.seq_q == 512
    assert not first[0].problem.causal and work[1][0].problem.causal  # the last field turns fastest
    assert last[1] == "4090" and last[0].algo == "flash2" and last[0].problem.seq_q == 1024


def test_a_spec_compares_whose_kernels_run_flash2(tmp_path):
    """``impl``: iosim's kernels (ours) beside PyTorch SDPA's, an axis like any other."""
    doc = SPEC | {"gpu": "h200", "algo": "flash2", "impl": ["ours", "sdpa_cudnn"], "problem": {"seq_q": 1024}}
    work = specs.load_spec(write_spec(tmp_path, doc))
    assert [c.impl for c, _ in work] == [None, "sdpa_cudnn"] and all(c.algo == "flash2" for c, _ in work)


@pytest.mark.parametrize("change,needle", [
    ({"problem": {"seq_len": 4096}}, "problem.seq_len: unknown field; allowed: seq_q, seq_k"),
    ({"problem": {"seq_q": "0:4k"}}, "problem.seq_q: '0:4k': '0' is not a whole number > 0"),
    ({"problem": {"head_dim": 48}}, "problem.head_dim: iosim's kernels take 16, 32, 64, 128, 256"),
    ({"problem": {"head_dim": 36}}, "problem.head_dim: must be a multiple of 8 from 8 to 256, got 36"),
    ({"tiling": {"block_m": 100}}, "tiling.block_m: must be a power of two"),
    ({"algo": "flash3"}, "algo: must be one of standard"),
    ({"gpu": "nope"}, "gpu: unknown profile 'nope'"),
    ({"schema_version": 2}, "schema_version: expected 1, got 2"),
    ({"problem": {"causal": []}}, "problem.causal: an empty list means no run"),
    ({"host_tensors": ["X"]}, "host_tensors: can place Q, K, V, O in host memory, got 'X'"),
    ({"algo": "flash2", "problem": {"seq_q": 1024, "seq_k": 2048, "causal": True, "window": 256}},
     "problem.seq_k: local attention in a prefill needs seq_k == seq_q"),
    ({"problem": {"causal": True, "causal_align": "center"}}, "problem.causal_align: must be one of top-left, bottom-right"),
    ({"impl": "cudnn"}, "impl: must be one of ours, sdpa_cudnn, sdpa_flash"),
])
def test_a_bad_spec_is_one_line_naming_the_field(tmp_path, change, needle):
    path = write_spec(tmp_path, SPEC | change)
    with pytest.raises(specs.SpecError, match="spec.yaml: " + needle.replace("(", r"\(").replace(")", r"\)")):
        specs.load_spec(path)
    r = CliRunner().invoke(main, ["sweep", str(path)])
    assert r.exit_code == 2 and needle in r.output and "Traceback" not in r.output


def test_a_rerun_resumes_from_what_the_file_holds(tmp_path, monkeypatch):
    path = write_spec(tmp_path)
    out = tmp_path / "runs.json"
    r = CliRunner().invoke(main, ["sweep", str(path), "-o", str(out)])
    assert r.exit_code == 0, r.output
    whole = out.read_bytes()
    # keep the first half, as an interrupted sweep would have; the rerun simulates only the rest
    doc = sweep.load_results(out)
    sweep.save_results(doc[:7], out)
    simulated = []
    real = sweep.simulate_or_skip
    monkeypatch.setattr(sweep, "simulate_or_skip", lambda c, g: simulated.append(c) or real(c, g))
    assert CliRunner().invoke(main, ["sweep", str(path), "-o", str(out)]).exit_code == 0
    assert len(simulated) == 16 - 7 and out.read_bytes() == whole


def test_an_interrupted_sweep_keeps_what_finished(tmp_path):
    work = specs.load_spec(write_spec(tmp_path))
    out = tmp_path / "runs.json"
    done = []

    def progress(result):
        done.append(result)
        if len(done) == 5:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        sweep.run(work, progress=progress, results_file=out)
    kept = sweep.load_results(out)
    assert [r.to_dict() for r in kept] == [r.to_dict() for r in done]
    assert sorted(os.listdir(tmp_path)) == ["runs.json", "spec.yaml"]  # no temporary file left behind


def test_points_beyond_the_gpus_memory_are_rows_and_the_sweep_goes_on(tmp_path):
    doc = SPEC | {"gpu": [4090], "algo": ["standard"], "problem": {"seq_q": [512, 16384], "batch": 4, "heads": 16}}
    out = tmp_path / "runs.json"
    r = CliRunner().invoke(main, ["sweep", str(write_spec(tmp_path, doc)), "-o", str(out)])
    assert r.exit_code == 0 and "1 skipped" in r.output
    ran, oom = sweep.load_results(out)
    assert ran.time_s > 0 and oom.reason.startswith("OOM: needs")


def test_local_processes_and_a_dask_cluster_write_the_same_file(tmp_path):
    distributed = pytest.importorskip("distributed")
    path = write_spec(tmp_path)
    files = {}
    for name, extra in (("serial", []), ("processes", ["-j", "2"])):
        files[name] = tmp_path / f"{name}.json"
        r = CliRunner().invoke(main, ["sweep", str(path), "-o", str(files[name]), *extra])
        assert r.exit_code == 0, r.output
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None) as cluster:
        files["dask"] = tmp_path / "dask.json"
        r = CliRunner().invoke(main, ["sweep", str(path), "-o", str(files["dask"]), "--scheduler",
                                      cluster.scheduler_address])
        assert r.exit_code == 0, r.output
    serial = files["serial"].read_bytes()
    assert files["processes"].read_bytes() == serial and files["dask"].read_bytes() == serial


def test_ctrl_c_stops_a_parallel_sweep_before_its_remaining_runs(tmp_path):
    """Ctrl-C ends the sweep without running what is left (the kept runs are fewer than the sweep's 256),
    exits 130 with a one-line hint and leaves only the results file. Asserted on work, not on seconds."""
    doc = SPEC | {"problem": {"seq_q": "1k:8k", "head_dim": 64, "batch": [1, 2, 4, 8], "heads": [4, 8],
                              "causal": [False, True]}}
    path, out = write_spec(tmp_path, doc), tmp_path / "runs.json"
    # as from a terminal: Ctrl-C's default action, even where this test runs in a background job (which
    # the shell starts with SIGINT ignored, and a child inherits that)
    p = subprocess.Popen([sys.executable, "-m", "iosim", "sweep", str(path), "-j", "2", "-o", str(out)],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True,
                         preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    deadline = time.monotonic() + 60
    while not out.exists() and time.monotonic() < deadline:  # the first runs have been kept
        time.sleep(0.1)
    os.killpg(p.pid, signal.SIGINT)  # what a terminal's Ctrl-C sends: the whole process group
    _, err = p.communicate(timeout=60)
    assert p.returncode == 130
    assert "run again to resume" in err and "Traceback" not in err
    assert len(specs.load_spec(path)) == 256 and 0 < len(sweep.load_results(out)) < 256
    assert sorted(os.listdir(tmp_path)) == ["runs.json", "spec.yaml"]


def test_an_unreachable_scheduler_is_one_line_and_writes_nothing(tmp_path, monkeypatch):
    pytest.importorskip("distributed")
    monkeypatch.setattr(sweep, "CONNECT_TIMEOUT_S", 1)
    out = tmp_path / "runs.json"
    r = CliRunner().invoke(main, ["sweep", str(write_spec(tmp_path)), "-o", str(out), "--scheduler", "tcp://127.0.0.1:1"])
    assert r.exit_code == 2 and "scheduler: cannot reach tcp://127.0.0.1:1" in r.output and not out.exists()


def test_fresh_simulates_everything_again_and_keeps_the_old_file_until_then(tmp_path, monkeypatch):
    path, out = write_spec(tmp_path), tmp_path / "runs.json"
    assert CliRunner().invoke(main, ["sweep", str(path), "-o", str(out)]).exit_code == 0
    whole = out.read_bytes()
    simulated = []
    real = sweep.simulate_or_skip
    monkeypatch.setattr(sweep, "simulate_or_skip", lambda c, g: simulated.append(c) or real(c, g))
    assert CliRunner().invoke(main, ["sweep", str(path), "-o", str(out), "--fresh"]).exit_code == 0
    assert len(simulated) == 16 and out.read_bytes() == whole
