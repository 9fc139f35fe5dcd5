"""A user's kernel's own compiled code: capture and compile (kernels/user_codes.py), the committed
per-case mixes read back (iosim/measure/kernel_codes.py), and ``iosim simulate --kernel``."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

from iosim.costs.code import kernel_code
from iosim.costs.sass import KernelMix
from iosim.files import read_json
from iosim.measure.kernel_codes import case_codes, load_case_codes, mixes_file

REPO = Path(__file__).resolve().parent.parent
F1 = "experiments/foreign_kernels/F1_exp_maskall.py:attention"
MIXES = REPO / "experiments/foreign_kernels/mixes"
F1_CASE = "kernel-F1_exp_maskall.attention-fwd-fp16-b4h16-n4096-d64"
B1_CASE = "kernel-B1_bwd_exp_maskall.attention-fwd_bwd-fp16-b2h16-n4096-d64-causal"



def _compiled(script: str) -> dict:
    """Run ``script`` (prints one JSON line) with compiled Triton functions, not the interpreter conftest sets."""
    env = dict(os.environ, TRITON_INTERPRET="0")
    out = subprocess.run([sys.executable, "-c", script], env=env, cwd=REPO, capture_output=True, text=True,
                         timeout=120, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.mark.sass
def test_user_codes_maps_the_forward_and_counts_its_tiles():
    got = _compiled(f"""
import json
from iosim.kernels.user_codes import user_codes
from iosim.schedule.problem import Problem, RunConfig
config = RunConfig(algo="flash2", problem=Problem(batch=1, heads=4, seq_q=4096, head_dim=64, dtype="fp16"))
codes, tiling = user_codes({F1!r}, config)
print(json.dumps({{"n": len(codes), "source": codes[0].source, "pipes": dict(codes[0].loop.pipes),
                  "masked": codes[0].masked is not None, "tiling": tiling}}))
""")
    t = got["tiling"]["tiling"]
    assert got["n"] == 1 and got["source"].startswith("sass: F1_exp_maskall.py _fwd_kernel, sm_90")
    assert (t["block_m"], t["block_n"], t["warps"], t["stages"], t["grid_order"]) == (128, 64, 4, 2, "rows")
    # One warpgroup (4 warps) owns all BLOCK_M rows: BLOCK_M/64 wgmma row tiles, each K/16 deep for
    # S = Q·Kᵀ (K = head_dim) plus BLOCK_N/16 deep for O += P·V: 2 · (64/16 + 64/16) = 16 HGMMA per warp.
    assert got["pipes"]["tensor"] == (128 // 64) * (64 // 16 + 64 // 16)
    # exp of every score: BLOCK_M·BLOCK_N / (32 lanes · 4 warps) = 64 MUFU.EX2 per thread, plus a few
    # for the running-max rescale (one exp per row, over 32 rows' worth of lanes).
    per_thread = 128 * 64 // (32 * 4)
    assert per_thread <= got["pipes"]["xu"] <= per_thread + 8
    assert not got["masked"]  # F1 masks every block in one loop


def test_committed_mixes_read_back_as_kernel_codes():
    path = MIXES / "sm_90-triton-3.9.0.json.gz"
    entry = read_json(path)["cases"][B1_CASE]
    assert entry["schedule"] == ["flash2_fwd", "zeros_dq", "flash2_bwd_pre", "flash2_bwd", "cast_dq"]
    assert [m is None for m in entry["mixes"]] == [False, True, False, False, True]
    codes = load_case_codes(path, B1_CASE)
    for mix, code in zip(entry["mixes"], codes):
        if mix is None:
            assert code is None
            continue
        assert KernelMix.from_dict(mix).to_dict() == mix  # the file is exactly what compile_sass returned
        want = kernel_code(KernelMix.from_dict(mix), code.source)
        assert code == want
    assert codes[3].source == "sass: B1_bwd_exp_maskall.py _bwd_kernel, sm_90, triton 3.9.0"
    assert load_case_codes(path, "no-such-case") is None


def test_mixes_file_takes_the_measured_version_else_the_nearest():
    assert mixes_file(F1, "sm_90", "3.6.0").name == "sm_90-triton-3.6.0.json.gz"
    assert mixes_file(F1, "sm_90", "3.7.0").name == "sm_90-triton-3.6.0.json.gz"
    assert mixes_file(F1, "sm_90", "3.10.0").name == "sm_90-triton-3.9.0.json.gz"
    assert mixes_file(F1, "sm_90", None).name == "sm_90-triton-3.9.0.json.gz"
    assert mixes_file(F1, "sm_80", "3.6.0") is None


def test_case_codes_of_a_measured_case_come_from_the_committed_file():
    case = SimpleNamespace(kernel=F1, name=F1_CASE)
    codes, note = case_codes(case, None, "sm_90", "3.6.0")
    assert note == "" and codes[0].source == "sass: F1_exp_maskall.py _fwd_kernel, sm_90, triton 3.6.0"
    codes, note = case_codes(case, None, "sm_90", "3.7.0")
    assert note == "code from sm_90-triton-3.6.0.json.gz"


@pytest.mark.sass
def test_simulate_kernel_end_to_end():
    env = dict(os.environ, TRITON_INTERPRET="0")
    out = subprocess.run([sys.executable, "-m", "iosim", "simulate", "--kernel", F1, "--gpu", "h200", "--seq-len",
                          "4k", "--json"], env=env, cwd=REPO, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    (run,) = json.loads(out.stdout)
    assert run["config"]["algo"] == "flash2" and run["config"]["tiling"]["block_m"] == 128
    (kernel,) = run["kernels"]
    assert kernel["name"] == "flash2_fwd" and kernel["code"].startswith("sass: F1_exp_maskall.py _fwd_kernel")
    assert kernel["instructions"]["total"] > 0
    split = kernel["time_split"]
    assert split["tensor"] + split["simt"] + split["memory"] == pytest.approx(1.0)


def test_the_padded_test_kernel_matches_float64():
    """tests/data/user_kernel_padded.py (d = 96 padded to 128, masked; the interpreter) against softmax(QKᵀ/√d)V in
    float64 on a length that is no multiple of its blocks."""
    import importlib.util

    import torch

    spec = importlib.util.spec_from_file_location("user_kernel_padded", REPO / "tests/data/user_kernel_padded.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    gen = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(1, 2, 75, 96, generator=gen).to(torch.float16) for _ in range(3))
    ref = torch.softmax(q.double() @ k.double().transpose(-1, -2) / 96 ** 0.5, -1) @ v.double()
    out = mod.attention(q, k, v)
    assert ((out.double() - ref).abs().max() / ref.abs().max()).item() < 10 * 2 ** -11


@pytest.mark.sass
def test_a_kernel_that_pads_its_head_dim_moves_bytes_of_its_own():
    """A user's kernel at d = 96 (padded to a 128-column tile, its loads masked) is simulated at its own head dim:
    where the L2 holds everything it reads Q, K and V once at 96 columns (compulsory bytes, not the tile's 128),
    its math from its own code. iosim's own kernels take powers of two, and say so."""
    env = dict(os.environ, TRITON_INTERPRET="0")
    args = ["--gpu", "h200", "--seq-len", "1k", "--batch", "1", "--heads", "4", "-d", "96", "--json"]
    out = subprocess.run([sys.executable, "-m", "iosim", "simulate", "--kernel",
                          "tests/data/user_kernel_padded.py:attention", *args],
                         env=env, cwd=REPO, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    (run,) = json.loads(out.stdout)
    assert run["levels"]["hbm"]["read_bytes"] == 3 * 4 * 1024 * 96 * 2
    assert run["levels"]["hbm"]["write_bytes"] >= 4 * 1024 * 96 * 2
    (kernel,) = run["kernels"]
    assert kernel["code"].startswith("sass: user_kernel_padded.py padded_fwd") and kernel["instructions"]["tensor"] > 0
    own = subprocess.run([sys.executable, "-m", "iosim", "simulate", "--algo", "flash2", *args],
                         cwd=REPO, capture_output=True, text=True, timeout=120)
    assert own.returncode == 2 and "iosim's kernels take 16, 32, 64, 128, 256" in own.stderr


@pytest.mark.parametrize("launcher, shared", [("attention", False), ("attention_wide", False),
                                               ("attention_shared", True), ("attention_scores", False)])
def test_the_bias_test_kernel_matches_float64(launcher, shared):
    """tests/data/user_kernel_bias.py (a bias tile added to every block of scores, each head's own or one all heads
    share; the interpreter) against softmax(QKᵀ/√d + bias)V in float64 on a length that is no multiple of its blocks,
    and the scores it keeps for the caller against QKᵀ/√d + bias."""
    import importlib.util

    import torch

    spec = importlib.util.spec_from_file_location("user_kernel_bias", REPO / "tests/data/user_kernel_bias.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    gen = torch.Generator().manual_seed(1)
    q, k, v = (torch.randn(2, 2, 83, 32, generator=gen).to(torch.float16) for _ in range(3))
    bias = torch.randn(*(() if shared else (2, 2)), 83, 83, generator=gen).to(torch.float16)
    scores = q.double() @ k.double().transpose(-1, -2) / 32 ** 0.5 + bias.double()
    ref = torch.softmax(scores, -1) @ v.double()
    kept = {"scores": torch.zeros(2, 2, 83, 83, dtype=torch.float16)} if launcher == "attention_scores" else {}
    out = getattr(mod, launcher)(q, k, v, bias=bias, **kept)
    assert ((out.double() - ref).abs().max() / ref.abs().max()).item() < 10 * 2 ** -11
    if kept:
        assert ((kept["scores"].double() - scores).abs().max() / scores.abs().max()).item() < 10 * 2 ** -11


@pytest.mark.sass
def test_a_kernel_that_moves_more_than_its_schedule_is_named():
    """A user's kernel whose loop reads a bias tile beside K and V: its compiled loop loads 1.5 times what flash2's
    schedule reads a pass, one fp16 tile more of each (query block, key block), so the run reads it as a bias of
    its own (``tile_beyond_schedule``, in its caveats): each tile once, by the CTA of its query block, beside Q once
    and K, V once per CTA. The same kernel storing its scores for the caller also writes one such tile a pass. A
    kernel that follows the schedule (tests/data/user_kernel_padded.py, d = 96 in 128-column tiles) is not named. The
    scores count in the run's peak memory."""
    env = dict(os.environ, TRITON_INTERPRET="0")
    args = ["--gpu", "h200", "--seq-len", "1k", "--batch", "2", "--heads", "4", "--json"]
    runs = {}
    for ref, d in (("bias.py:attention", "64"), ("bias.py:attention_scores", "64"), ("padded.py:attention", "96")):
        out = subprocess.run([sys.executable, "-m", "iosim", "simulate", "--kernel", f"tests/data/user_kernel_{ref}",
                              *args, "-d", d], env=env, cwd=REPO, capture_output=True, text=True, timeout=180)
        assert out.returncode == 0, out.stderr
        runs[ref] = json.loads(out.stdout)[0]
    bh, n, row = 2 * 4, 1024, 64 * 2  # slices, rows, bytes of a row of Q, K, V or O
    q, kv, tiles = bh * n * row, bh * (n // 64) * n * 2 * row, bh * n * n * 2
    for ref, stored in (("bias.py:attention", 0), ("bias.py:attention_scores", tiles)):
        run = runs[ref]
        kernel = run["kernels"][-1]
        assert kernel["name"] == "flash2_fwd" and kernel["regimes"] == ["tile_beyond_schedule"]
        assert kernel["levels"]["l2"]["read_bytes"] == q + kv + tiles
        # O (as many bytes as Q), the schedule's LSE (fp32 a row, which this kernel does not keep), the scores
        assert kernel["levels"]["l2"]["write_bytes"] == q + bh * n * 4 + stored
        assert kernel["unmodelled_bytes"] == 0
        (said,) = run["caveats"]  # --json: in the run's caveats (a note on stderr without it)
        assert said.startswith("flash2_fwd: its compiled loop moves a tile more of each (query block, key block)")
    # the scores are an output the caller keeps: allocated beside the bias (the launcher's randn) and Q, K, V, O
    assert runs["bias.py:attention_scores"]["peak_hbm_bytes"] - runs["bias.py:attention"]["peak_hbm_bytes"] == tiles
    run = runs["padded.py:attention"]
    assert all(k["regimes"] == [] and k["unmodelled_bytes"] == 0 for k in run["kernels"]) and not run["caveats"]


@pytest.mark.sass
def test_simulate_kernel_whose_backward_computes_dq_apart():
    """A user's backward with dQ in a kernel of its own runs flash2's ``dq: separate`` schedule, each kernel with
    its own compiled code, and says that it took it."""
    env = dict(os.environ, TRITON_INTERPRET="0")
    out = subprocess.run([sys.executable, "-m", "iosim", "simulate", "--kernel",
                          "tests/data/user_kernel_dq_separate.py:attention", "--gpu", "h200", "--seq-len", "2k",
                          "--head-dim", "64", "--backward", "--json"],
                         env=env, cwd=REPO, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    (run,) = json.loads(out.stdout)
    assert run["config"]["dq"] == "separate" and "dq atomic -> separate" in out.stderr
    codes = {k["name"]: k["code"] for k in run["kernels"]}
    assert list(codes) == ["flash2_fwd", "flash2_bwd_pre", "flash2_bwd_kv", "flash2_bwd_q"]
    for name in ("flash2_bwd_kv", "flash2_bwd_q"):
        assert codes[name].startswith(f"sass: user_kernel_dq_separate.py {name}")


def test_simulate_kernel_prices_what_its_launcher_runs_in_pytorch():
    """A launcher that copies K and V for every query head (``repeat_interleave``) before its kernel: each copy is
    a kernel of the run, placed before the attention kernel, moving K (or V) once in and G copies out, and the
    kernel, handed the copies, runs without GQA."""
    env = dict(os.environ, TRITON_INTERPRET="0")
    out = subprocess.run([sys.executable, "-m", "iosim", "simulate", "--kernel",
                          "tests/data/user_kernel_expand_kv.py:attention", "--gpu", "h200", "--seq-len", "1536",
                          "--head-dim", "64", "--heads", "8", "--kv-heads", "2", "-b", "1", "--mode", "ncu", "--json"],
                         env=env, cwd=REPO, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert "runs 2 PyTorch operations besides its Triton kernels" in out.stderr
    assert "they run with 8 key/value heads, not 2" in out.stderr
    (run,) = json.loads(out.stdout)
    assert [k["name"] for k in run["kernels"]] == ["torch_clone", "torch_clone", "flash2_fwd"]
    kv = 1 * 2 * 1536 * 64 * 2  # one of K, V: bytes
    for copy in run["kernels"][:2]:  # read once from DRAM; 4 copies written (what the L2 keeps dirty stays unseen)
        assert copy["levels"]["hbm"]["read_bytes"] == kv
        assert copy["levels"]["l2"]["write_bytes"] == 4 * kv
    # the kernel reads Q and the copies, 8 heads each, once from DRAM (the L2 is flushed before it)
    assert run["kernels"][2]["levels"]["hbm"]["read_bytes"] == 3 * 4 * kv


def test_simulate_kernel_refuses_another_algorithm():
    from click.testing import CliRunner

    from iosim.cli import main

    result = CliRunner().invoke(main, ["simulate", "--kernel", F1, "--algo", "standard"])
    assert result.exit_code == 2 and "--kernel is simulated as flash2" in result.output


_BROKEN = '''
import triton
import triton.language as tl


@triton.jit
def _k(X, BLOCK_SIZE_M: tl.constexpr, BLOCK_SIZE_N: tl.constexpr):
    x = tl.load(X + tl.arange(0, BLOCK_SIZE_M))
    tl.store(X + tl.arange(0, BLOCK_SIZE_M), tl.no_such_function(x))


@triton.jit
def _untiled(X, N: tl.constexpr):
    tl.store(X + tl.arange(0, N), tl.load(X + tl.arange(0, N)) * 2)


def fwd(q, k, v, causal=False, sm_scale=None):
    if q.shape[-1] != 64:
        raise ValueError("this kernel takes head dim 64 only")
    _k[(3, 64)](q, BLOCK_SIZE_M=128, BLOCK_SIZE_N=64)
    return q


def untiled(q, k, v, causal=False, sm_scale=None):
    _untiled[(1,)](q, N=16)
    return q
'''


@pytest.mark.sass
@pytest.mark.parametrize("head_dim, said", [(128, "its call on CPU tensors (q (4, 16, 1024, 128)"),
                                             (64, "_k does not compile for sm_90 with Triton")])
def test_simulate_kernel_that_fails_is_one_line_naming_the_kernel(tmp_path, head_dim, said):
    """A user's launcher that raises, or a kernel the installed Triton cannot compile: exit 2 and one line that
    names the kernel and why, no traceback."""
    (tmp_path / "broken.py").write_text(_BROKEN)
    env = dict(os.environ, TRITON_INTERPRET="0")
    out = subprocess.run([sys.executable, "-m", "iosim", "simulate", "--kernel", f"{tmp_path}/broken.py:fwd", "--gpu",
                          "h200", "-d", str(head_dim)], env=env, cwd=REPO, capture_output=True, text=True, timeout=120)
    assert out.returncode == 2 and "Traceback" not in out.stderr, out.stderr
    error = [line for line in out.stderr.splitlines() if line.startswith("Error:")]
    assert len(error) == 1 and said in error[0] and "broken.py:fwd" in error[0], out.stderr
    if head_dim == 64:
        assert "no_such_function" in error[0]


@pytest.mark.sass
def test_simulate_kernel_without_tiles_says_it_is_estimated(tmp_path):
    """A launcher whose kernel names no tile sizes: the run goes on, priced from FLOPs, with a note saying so."""
    (tmp_path / "broken.py").write_text(_BROKEN)
    env = dict(os.environ, TRITON_INTERPRET="0")
    out = subprocess.run([sys.executable, "-m", "iosim", "simulate", "--kernel", f"{tmp_path}/broken.py:untiled",
                          "--gpu", "h200", "--seq-len", "1k", "--json"], env=env, cwd=REPO, capture_output=True,
                         text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "launches nothing iosim takes for flash2_fwd" in out.stderr
    (run,) = json.loads(out.stdout)
    assert run["kernels"][0]["code"] == "estimate"


_AUTOTUNED = '''
import torch
import triton
import triton.language as tl


@triton.autotune(configs=[triton.Config({"BLOCK_M": 64, "BLOCK_N": 32}, num_warps=4, num_stages=2),
                          triton.Config({"BLOCK_M": 128, "BLOCK_N": 64}, num_warps=8, num_stages=3),
                          triton.Config({"BLOCK_M": 128, "BLOCK_N": 256}, num_warps=4, num_stages=2)],
                 key=["N"])
@triton.jit
def _fwd(Q, K, O, N, D: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr):
    tl.static_assert(BLOCK_N <= 2 * D)  # the last config does not compile at D = 64 (as the tutorial's asserts)
    rows = tl.program_id(0) * BLOCK_M + tl.arange(0, BLOCK_M)
    cols = tl.arange(0, D)
    base = tl.program_id(1) * N * D
    q = tl.load(Q + base + rows[:, None] * D + cols[None, :])
    acc = tl.zeros([BLOCK_M, D], dtype=tl.float32)
    for start in range(0, N, BLOCK_N):
        keys = start + tl.arange(0, BLOCK_N)
        k = tl.load(K + base + keys[:, None] * D + cols[None, :])
        s = tl.dot(q, tl.trans(k))
        acc += tl.dot(tl.exp2(s).to(tl.float16), k)
    tl.store(O + base + rows[:, None] * D + cols[None, :], acc.to(tl.float16))


def fwd(q, k, v, causal=False, sm_scale=None):
    o = torch.empty_like(q)
    n = q.shape[2]
    _fwd[lambda meta: (triton.cdiv(n, meta["BLOCK_M"]), q.shape[0] * q.shape[1])](q, k, o, n, D=q.shape[3])
    return o
'''


@pytest.mark.sass
def test_an_autotuned_kernel_is_priced_at_each_config_and_runs_at_the_fastest(tmp_path):
    """An autotuned kernel: each config the autotuner would time is recorded (none run), the ones that compile
    become candidates with their own tiles, and ``simulate --kernel`` runs the one it predicts fastest."""
    (tmp_path / "tuned.py").write_text(_AUTOTUNED)
    script = f"""
import json, os, sys
os.environ["TRITON_INTERPRET"] = "0"
from iosim.kernels.user_codes import configure_all
from iosim.schedule.problem import Problem, RunConfig
from iosim.simulate import simulate
config = RunConfig(algo="flash2", problem=Problem(batch=1, heads=4, seq_q=2048, head_dim=64))
out = []
for label, run, codes, _, _ in configure_all({str(tmp_path / 'tuned.py') + ':fwd'!r}, config):
    t = run.tiling
    out.append([label, t.block_m, t.block_n, t.warps, t.stages, simulate(run, "h200", codes=codes).time_s])
print(json.dumps(out))
"""
    found = _compiled(script)
    assert [row[1:5] for row in found] == [[64, 32, 4, 2], [128, 64, 8, 3]]
    assert all(row[0].startswith("_fwd: BLOCK_M=") for row in found)
    fastest = min(found, key=lambda row: row[5])
    env = dict(os.environ, TRITON_INTERPRET="0")
    out = subprocess.run([sys.executable, "-m", "iosim", "simulate", "--kernel", f"{tmp_path}/tuned.py:fwd", "--gpu",
                          "h200", "--seq-len", "2k", "--heads", "4", "--batch", "1", "--json"], env=env, cwd=REPO,
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert "is autotuned: 2 configs simulated" in out.stderr and fastest[0] in out.stderr
    (run,) = json.loads(out.stdout)
    assert run["config"]["tiling"]["block_m"] == fastest[1] and run["config"]["tiling"]["block_n"] == fastest[2]
    assert run["time_s"] == pytest.approx(fastest[5])


def test_an_autotuned_case_reads_the_config_the_gpu_ran(tmp_path):
    """A mixes file's autotuned entry holds every config: validation takes the one whose tiles the GPU ran,
    and the first config where none matches."""
    first, second = (read_json(MIXES / "sm_90-triton-3.6.0.json.gz")["cases"][c] for c in (F1_CASE, B1_CASE))
    entry = {**first, "variants": [{"label": "a", "mixes": first["mixes"], "tiling": {**first["tiling"]}},
                                   {"label": "b", "mixes": second["mixes"][:1], "tiling": {**first["tiling"], "block_m": 64}}]}
    doc = {"schema": "iosim-kernel-mixes", "arch": "sm_90", "triton": "3.6.0", "cases": {"c": entry}}
    path = tmp_path / "sm_90-triton-3.6.0.json"
    path.write_text(json.dumps(doc))
    plain = load_case_codes(path, "c")
    ran_b = load_case_codes(path, "c", {**first["tiling"], "block_m": 64})
    unknown = load_case_codes(path, "c", {**first["tiling"], "block_m": 32})
    assert plain[0].loop.instructions == unknown[0].loop.instructions
    assert ran_b[0].loop.instructions == kernel_code(KernelMix.from_dict(second["mixes"][0]), "").loop.instructions
    assert ran_b[0].loop.instructions != plain[0].loop.instructions


@pytest.mark.parametrize("data", ["autotuned", "blockptr"])
def test_every_autotuned_case_has_the_code_of_the_config_it_ran(data):
    """The committed third-party sets: each autotuned case's mixes entry holds the compiled code of exactly the
    config the GPU ran (its recorded tiles, warps, stages), so validation never falls back to another config's."""
    from iosim.measure.measurement import load_measurement

    m = load_measurement(REPO / f"experiments/measurements/h200/thirdparty/{data}/measurements.json")
    doc = read_json(REPO / "experiments/thirdparty_kernels/mixes/sm_90-triton-3.6.0.json.gz")
    fields = ("block_m", "block_n", "warps", "stages")
    tuned = [c for c in m.cases if "variants" in doc["cases"][c.name]]
    assert tuned  # the autotuned launchers' cases
    for case in tuned:
        ran = case.run_config["tiling"]
        matching = [v for v in doc["cases"][case.name]["variants"] if all(v["tiling"][f] == ran[f] for f in fields)]
        assert len(matching) == 1, case.name
        mix = KernelMix.from_dict(matching[0]["mixes"][0])
        assert (mix.meta["constexprs"]["BLOCK_M"], mix.meta["constexprs"]["BLOCK_N"]) == (ran["block_m"], ran["block_n"])
        assert (mix.meta["num_stages"], mix.num_warps) == (ran["stages"], ran["warps"])


def _launch(name: str, grid: tuple, tiled: bool = True):
    from iosim.kernels.sass import Launch

    constexprs = {(0,): 64, (1,): 64} if tiled else {}
    return Launch(name, "m", grid, 4, 2, {}, constexprs, {}, {}, ("BLOCK_M", "BLOCK_N"))


def test_tiled_kernels_no_schedule_kernel_stands_for_are_named():
    """A backward that computes dQ in a kernel of its own (FlagAttention's: a K/V-outer dK/dV kernel and a
    Q-outer dQ kernel) has one more tiled kernel than flash2's schedule: the K/V one stands for flash2_bwd and
    the other is named, so the run can say its time is left out; a preprocess and kernels without tiles are not."""
    from iosim.kernels.user_codes import roles, unmodelled

    names = ["flash2_fwd", "zeros_dq", "flash2_bwd_pre", "flash2_bwd", "cast_dq"]
    fwd = [_launch("_fwd_kernel", (32, 16, 4))]
    bwd = [_launch("_bwd_preprocess", (32, 16, 4), tiled=False), _launch("_bwd_kv_kernel", (32, 16, 4)),
           _launch("_bwd_q_kernel", (32, 16, 4))]
    taken = [x.kernel if x else None for x in roles(names, fwd, bwd)]
    assert taken == ["_fwd_kernel", None, "_bwd_preprocess", "_bwd_kv_kernel", None]  # over K/V blocks, as flash2's
    assert unmodelled(names, fwd, bwd) == ["_bwd_q_kernel"]
    assert unmodelled(names, fwd, bwd[:2]) == []  # flash2's own shape: one tiled backward kernel
    assert unmodelled(names[:1], fwd, []) == []


def test_a_backward_with_dq_in_a_kernel_of_its_own_takes_the_separate_schedule():
    """FlagAttention's shape (dK/dV over K/V blocks, dQ over Q blocks) is flash2's ``dq: separate`` schedule: each
    of its tiled kernels has a place and none is left out; flash2's own shape (one tiled backward kernel) is not."""
    from iosim.kernels.user_codes import roles, separate_dq, unmodelled

    names = ["flash2_fwd", "flash2_bwd_pre", "flash2_bwd_kv", "flash2_bwd_q"]
    fwd = [_launch("_fwd_kernel", (32, 16, 4))]
    bwd = [_launch("_bwd_preprocess", (32, 16, 4), tiled=False), _launch("_bwd_q_kernel", (64, 16, 4)),
           _launch("_bwd_kv_kernel", (32, 16, 4))]
    assert separate_dq(bwd[1:]) and not separate_dq(bwd[2:])
    assert not separate_dq([_launch("attn_bwd_a", (32, 16, 4)), _launch("attn_bwd_b", (32, 16, 4))])  # no K/V name
    taken = [x.kernel if x else None for x in roles(names, fwd, bwd)]
    assert taken == ["_fwd_kernel", "_bwd_preprocess", "_bwd_kv_kernel", "_bwd_q_kernel"]
    assert unmodelled(names, fwd, bwd) == []


def test_a_backward_whose_one_kernel_runs_both_loops_takes_the_fused_schedule():
    """Triton's tutorial shape: one backward kernel whose tiles name a second loop (BLOCK_M1/N1 for dK, dV over the
    CTA's K/V block, BLOCK_M2/N2 for dQ over its Q block) is flash2's ``dq: fused``, that one launch standing for
    both loops; a kernel with one pair of tiles is not, nor is FlagAttention's shape."""
    from iosim.kernels.sass import Launch
    from iosim.kernels.user_codes import dq_mode, fused_dq, roles, unmodelled

    tiles = {(0,): 32, (1,): 128, (2,): 128, (3,): 32}
    fused = Launch("_attn_bwd", "m", (32, 1, 64), 4, 5, {}, tiles, {}, {},
                   ("BLOCK_M1", "BLOCK_N1", "BLOCK_M2", "BLOCK_N2"))
    pre = _launch("_attn_bwd_preprocess", (32, 64), tiled=False)
    assert fused_dq([fused]) and dq_mode([pre, fused], "atomic") == "fused"
    assert not fused_dq([_launch("_bwd_kernel", (32, 16, 4))])
    assert dq_mode([pre, _launch("_bwd_q_kernel", (64, 16, 4)), _launch("_bwd_kv_kernel", (32, 16, 4))],
                   "atomic") == "separate"
    names = ["flash2_fwd", "flash2_bwd_pre", "flash2_bwd_kv", "flash2_bwd_q"]
    fwd = [_launch("_attn_fwd", (32, 64, 1))]
    taken = roles(names, fwd, [pre, fused])
    assert [x.kernel if x else None for x in taken] == ["_attn_fwd", "_attn_bwd_preprocess", "_attn_bwd", "_attn_bwd"]
    assert taken[2] is taken[3] and unmodelled(names, fwd, [pre, fused]) == []


def test_a_kernel_of_two_loops_is_split_where_its_second_loop_begins():
    """The innermost loops in code order (each as a masked and an unmasked copy) are cut in half: the first loop's
    copies and the code outside loops for the first kernel, the second loop's copies for the second."""
    from iosim.costs.code import kernel_code
    from iosim.costs.sass import KernelMix, LoopMix, split_loops

    loops = tuple(LoopMix(opcodes={"HMMA": n}, instructions=n, depth=1) for n in (40, 30, 20, 10))
    mix = KernelMix("_attn_bwd", loops=loops, outside=LoopMix(instructions=7), n_regs=255, shared_bytes=1024)
    first, second = split_loops(mix)
    assert [x.instructions for x in first.loops] == [40, 30] and [x.instructions for x in second.loops] == [20, 10]
    assert first.outside.instructions == 7 and second.outside.instructions == 0
    assert (first.n_regs, second.n_regs, second.shared_bytes) == (255, 255, 1024)
    a, b = kernel_code(first, "a"), kernel_code(second, "b")
    assert (a.loop.instructions, a.masked.instructions, b.loop.instructions, b.masked.instructions) == (30, 40, 10, 20)
    assert split_loops(KernelMix("one", loops=loops[:1]))[1].loops == ()


_BY_LENGTH = '''
import torch
import triton
import triton.language as tl


@triton.jit
def _fwd(Q, K, O, N, D: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, HEADS_FIRST: tl.constexpr):
    if HEADS_FIRST:
        bh, block = tl.program_id(0), tl.program_id(1)
    else:
        block, bh = tl.program_id(0), tl.program_id(1)
    rows = block * BLOCK_M + tl.arange(0, BLOCK_M)
    cols = tl.arange(0, D)
    base = bh * N * D
    q = tl.load(Q + base + rows[:, None] * D + cols[None, :])
    acc = tl.zeros([BLOCK_M, D], dtype=tl.float32)
    for start in range(0, N, BLOCK_N):
        keys = start + tl.arange(0, BLOCK_N)
        k = tl.load(K + base + keys[:, None] * D + cols[None, :])
        acc += tl.dot(tl.exp2(tl.dot(q, tl.trans(k))).to(tl.float16), k)
    tl.store(O + base + rows[:, None] * D + cols[None, :], acc.to(tl.float16))


def _launch(q, k, heads_first):
    o = torch.empty_like(q)
    n, bh = q.shape[2], q.shape[0] * q.shape[1]
    # the launcher picks its tiles and warps by length, as many in the wild do
    bm, bn, warps = (128, 64, 8) if n >= 2048 else (64, 32, 4)
    grid = (bh, triton.cdiv(n, bm)) if heads_first else (triton.cdiv(n, bm), bh)
    _fwd[grid](q, k, o, n, D=q.shape[3], BLOCK_M=bm, BLOCK_N=bn, HEADS_FIRST=heads_first, num_warps=warps)
    return o


def rows(q, k, v, causal=False, sm_scale=None):
    return _launch(q, k, False)


def heads(q, k, v, causal=False, sm_scale=None):
    return _launch(q, k, True)
'''


@pytest.mark.sass
def test_a_launcher_that_picks_its_tiles_by_length_is_captured_at_the_problems_own(tmp_path):
    """The capture runs the launcher at the problem's own lengths: one that picks 128 × 64 tiles and 8 warps from
    N = 2048 on gets them at N = 4096 and 64 × 32 at 1024 (a capture at a fixed short length saw 64 × 32 for both);
    where the query blocks at that length number as many as the heads, the grid order comes from a short capture
    (heads first: 16 blocks of 128 at N = 2048 and 16 heads); a problem whose tensors pass the capture's budget is
    captured at a halving of its lengths, and says so."""
    (tmp_path / "bylen.py").write_text(_BY_LENGTH)
    script = f"""
import json
import iosim.kernels.user_codes as uc
from iosim.schedule.problem import Problem, RunConfig
out = {{}}
for fn, n, heads in (("rows", 4096, 4), ("rows", 1024, 4), ("heads", 2048, 16), ("rows", 2048, 16)):
    config = RunConfig(algo="flash2", problem=Problem(batch=1, heads=heads, seq_q=n, head_dim=64))
    ((_, mixes, found),) = uc.user_candidates({str(tmp_path / 'bylen.py')!r} + ":" + fn, config)
    t = found["tiling"]
    out[f"{{fn}}{{n}}"] = [t["block_m"], t["block_n"], t["warps"], t["grid_order"], mixes[0].num_warps,
                          found.get("capture_seqs")]
uc.CAPTURE_BYTES = 3 * 1 * 4 * 4096 * 64 * 2 // 2  # q, k, v of the first problem at half its length fit, not more
config = RunConfig(algo="flash2", problem=Problem(batch=1, heads=4, seq_q=4096, head_dim=64))
((_, run, _, conflicts, _),) = uc.configure_all({str(tmp_path / 'bylen.py')!r} + ":rows", config)
out["budget"] = [run.tiling.block_m, conflicts]
print(json.dumps(out))
"""
    got = _compiled(script)
    assert got["rows4096"] == [128, 64, 8, "rows", 8, None]
    assert got["rows1024"] == [64, 32, 4, "rows", 4, None]
    assert got["heads2048"] == [128, 64, 8, "heads", 8, None]  # 16 blocks, 16 heads: read off a short capture
    assert got["rows2048"] == [128, 64, 8, "rows", 8, None]
    block_m, conflicts = got["budget"]
    assert block_m == 128 and any("capture at N = 2048" in line for line in conflicts)


def test_a_preprocess_launch_gives_its_rows_per_cta_and_warps():
    """A backward preprocess's launch as the run config's ``preprocess_tiling``: its grid covers batch × heads ×
    N rows, so rows per CTA follow (a power of two, as tiles are); the schedule's ``flash2_bwd_pre`` then has
    those CTAs and warps, and without it the backward's."""
    from iosim.schedule.build import build_schedule
    from iosim.schedule.problem import Problem, RunConfig, Tiling
    from iosim.schedule.tiling import is_preprocess, preprocess_tiling

    launch = {"kernel": "_attn_bwd_preprocess", "grid": [4096 // 128, 2 * 16, 1], "num_warps": 4}
    assert is_preprocess(launch) and not is_preprocess({"kernel": "_attn_bwd", "grid": [1, 1, 1]})
    # a word of the name says so: a serving engine's prefill kernel is not a preprocess
    assert [is_preprocess({"kernel": k}) for k in ("_bwd_preprocess", "_attn_bwd_delta", "bwd_prep", "_prefill_fwd_kernel",
                                                    "prefetch_kv", "_fwd_kernel")] == [True, True, True, False, False, False]
    assert preprocess_tiling(launch, 4096, 32) == {"block_m": 128, "warps": 4}
    assert preprocess_tiling({**launch, "grid": [3, 32, 1]}, 1000, 32)["block_m"] == 512  # 334 rows: up to 512
    problem = Problem(batch=2, heads=16, seq_q=4096, head_dim=64, backward=True)
    base = RunConfig(algo="flash2", problem=problem, backward_tiling=Tiling(block_m=32, block_n=64, warps=8))
    own = base.with_(preprocess_tiling=Tiling(**preprocess_tiling(launch, 4096, 32)))
    pre = {c: next(k for k in build_schedule(c).kernels if k.name == "flash2_bwd_pre") for c in (base, own)}
    assert (pre[base].ctas, pre[base].block_i, pre[base].warps) == (32 * 4096 // 32, 32, 8)
    assert (pre[own].ctas, pre[own].block_i, pre[own].warps) == (32 * 4096 // 128, 128, 4)
    assert RunConfig.from_dict(own.to_dict()) == own and "preprocess_tiling" not in base.to_dict()


def test_every_committed_user_kernel_code_is_the_kernel_its_measurement_ran():
    """Each measured user-kernel case's committed code (the mixes file of the Triton version it ran, the variant
    of its tiles) compiles exactly the kernels the GPU launched: the same constexprs, warps and registers. A
    capture at a fixed short length compiled 5 of these 250-odd kernels differently (FlagAttention's A100 launcher
    picks 128 × 128 tiles and 8 warps beyond N = 1024; at N = 3000 its blocks do not divide the length)."""
    from iosim.measure.kernel_codes import mixes_file

    checked = 0
    for path in sorted((REPO / "experiments/measurements").rglob("measurements.json")):
        doc = json.loads(path.read_text())
        version = (doc.get("provenance") or {}).get("triton", "").split("+")[0]
        for case in doc["cases"]:
            if case.get("impl") != "kernel" or case.get("error"):
                continue
            found = mixes_file(case["kernel"], "sm_90", version)
            entry = read_json(found)["cases"].get(case["name"]) if found else None
            if entry is None:  # validation compiles it, or says it cannot
                continue
            ran_tiles = case["run_config"].get("tiling") or {}
            fields = ("block_m", "block_n", "warps", "stages")
            variant = next((v for v in entry.get("variants", [entry])
                            if all(v.get("tiling", {}).get(f) == ran_tiles.get(f) for f in fields)), entry)
            launched = {}
            for launch in case["launches"]:
                launched.setdefault(launch["kernel"], launch)
            for mix in filter(None, variant["mixes"]):
                ran = launched[mix["meta"]["kernel"]]
                compiled = {k: v for k, v in mix["meta"]["constexprs"].items() if k in ran["constexprs"]}
                assert (compiled, mix["num_warps"]) == (ran["constexprs"], ran["num_warps"]), (case["name"], mix["key"])
                assert ran.get("n_regs") in (None, mix["n_regs"]), (case["name"], mix["key"])
                checked += 1
    assert checked > 200


def test_a_prefill_kernel_is_the_forward_not_a_preprocess():
    """A serving engine's forward named for prefill (``_prefill_fwd_kernel``) is the forward's attention kernel: only a
    word of the name that is or begins with ``prep``/``delta`` (or is ``pre``) marks a preprocess."""
    from iosim.kernels.user_codes import _main, roles

    fwd = [_launch("_prefill_fwd_kernel", (32, 16, 4))]
    assert _main(fwd) is fwd[0]
    bwd = [_launch("_bwd_prep", (32, 16, 4), tiled=False), _launch("_bwd_kernel", (32, 16, 4))]
    assert [x.kernel for x in roles(["flash2_fwd", "flash2_bwd_pre", "flash2_bwd"], fwd, bwd)] == \
        ["_prefill_fwd_kernel", "_bwd_prep", "_bwd_kernel"]


def test_a_forward_grid_of_other_than_flash2s_tiles_is_noted():
    """A split K/V loop (a third grid axis) or one CTA for a group's query heads runs another number of CTAs than
    flash2's schedule has tiles: a note says so; one CTA a tile, in either order, or a persistent grid, does not."""
    from types import SimpleNamespace

    from iosim.kernels.user_codes import _grid_mismatch
    from iosim.schedule.problem import Problem
    p = Problem(batch=1, heads=8, kv_heads=2, seq_q=4096, head_dim=64)
    tiling = {"block_m": 64, "block_n": 64}
    split = _grid_mismatch(SimpleNamespace(grid=(64, 8, 4)), tiling, 4096, p)
    assert split.startswith("2048 CTAs (64 x 8 x 4) where flash2's schedule has 512")
    assert _grid_mismatch(SimpleNamespace(grid=(64, 2, 1)), tiling, 4096, p)  # the group's heads in one CTA
    assert _grid_mismatch(SimpleNamespace(grid=(64, 8, 1)), tiling, 4096, p) is None
    assert _grid_mismatch(SimpleNamespace(grid=(8, 64, 1)), tiling, 4096, p) is None
    assert _grid_mismatch(SimpleNamespace(grid=(132, 1, 1)), dict(tiling, persistent=132), 4096, p) is None
    flat = _grid_mismatch(SimpleNamespace(grid=(512, 1, 1)), dict(tiling, grid_order="heads"), 4096, p)
    assert flat.startswith("a one-dimensional grid of its 512 tiles") and flat.endswith("grid order heads")


def test_a_loop_the_compiler_unrolled_is_priced_per_block(tmp_path):
    """F1 with its K/V loop unrolled twice (``tl.range(..., loop_unroll_factor=2)``): each pass of its compiled loop
    is two blocks' code (twice the products a pass), so iosim prices a block as half a pass: the kernel executes
    F1's instructions within 5 % (read as one block a pass they came out twice F1's, and its time 1.9 times), and
    its time stays within a quarter of F1's (the unrolled code, at 255 registers, stalls 25 % more a block)."""
    source = (REPO / F1.split(":")[0]).read_text()
    plain_loop = "for start_n in range(0, hi, BLOCK_N):"
    assert plain_loop in source
    (tmp_path / "f1_unrolled.py").write_text(
        source.replace(plain_loop, "for start_n in tl.range(0, hi, BLOCK_N, loop_unroll_factor=2):"))
    env = dict(os.environ, TRITON_INTERPRET="0")

    def run(ref):
        out = subprocess.run([sys.executable, "-m", "iosim", "simulate", "--kernel", ref, "--gpu", "h200", "--seq-len",
                              "4k", "--json"], env=env, cwd=REPO, capture_output=True, text=True, timeout=180)
        assert out.returncode == 0, out.stderr
        (result,) = json.loads(out.stdout)
        return result["time_s"], result["kernels"][0]["instructions"]["total"]

    (t1, i1), (t2, i2) = run(F1), run(f"{tmp_path}/f1_unrolled.py:attention")
    assert i2 == pytest.approx(i1, rel=0.05) and t2 < 1.25 * t1
