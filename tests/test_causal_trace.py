"""The causal-trace probe (kernels/causal_trace.py): its kernel is flash2's forward with time stamps."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from iosim.kernels import causal_trace

COMPILE = """
import json, torch
from iosim.kernels import causal_trace, flash2
from iosim.kernels.sass import capture_launches, compile_sass
traced = causal_trace.traced_fwd = causal_trace._kernel()  # compile_sass finds a kernel by module and name
q = torch.randn(1, 2, 1024, 128, dtype=torch.float16)
o, lse = torch.empty_like(q), torch.empty(1, 2, 1024)
cfg = flash2._common.pass_tiling(flash2.ALGO, flash2.FWD, 128, {})
_, (launch,) = capture_launches(lambda: traced[(8, 2)](
    q, q, q, o, lse, torch.zeros(16, 8, dtype=torch.int64), 2, 2, 1024, 1024, 0.1, STAMPS=8, HEADS_FIRST=False,
    D=128, BM=cfg.block_m, BN=cfg.block_n, CHUNK=causal_trace.CHUNK, num_warps=cfg.warps, num_stages=cfg.stages))
_, (plain,) = capture_launches(flash2.forward, q, q, q, True, 0.1, cfg, [])
out = []
for mix in (compile_sass(launch), compile_sass(plain)):
    body = mix.loop_bodies()[0].opcodes
    out.append({"spills": mix.n_spill_bytes, **{op: sum(n for o, n in body.items() if o.startswith(op))
                                                for op in ("HGMMA", "MUFU")}})
print(json.dumps(out))
"""


@pytest.mark.sass
def test_the_traced_kernel_compiles_to_flash2s_loop_without_spills(tmp_path):
    # compiled for sm_90 on this machine: the traced forward's innermost loop is flash2_fwd's own loop
    # (_fwd_blocks), with the same tensor-core and MUFU instructions per K/V block, and nothing spilled
    env = {**os.environ, "TRITON_INTERPRET": "0", "TRITON_CACHE_DIR": str(tmp_path / "cache")}
    run = subprocess.run([sys.executable, "-c", COMPILE], capture_output=True, text=True, env=env, timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    mine, theirs = json.loads(run.stdout)
    assert mine["spills"] == 0
    assert (mine["HGMMA"], mine["MUFU"]) == (theirs["HGMMA"], theirs["MUFU"]) and mine["HGMMA"] > 0


@pytest.mark.gpu
def test_a_trace_stamps_every_cta_in_order():
    # trace() itself checks the traced output against flash2's; here: every CTA, stamps rising, in bounds
    data = causal_trace.trace(4096, "rows", heads=2, head_dim=64)
    assert len(data["ctas"]) == 2 * 4096 // data["config"]["block_m"]
    for cta in data["ctas"]:
        marks = [cta["start_ns"], *cta["stamps_ns"], cta["end_ns"]]
        assert all(a <= b for a, b in zip(marks, marks[1:]))


def test_a_tiling_reads_as_flash2s_overrides_and_a_bad_one_is_one_line():
    assert causal_trace.parse_tiling("64x128w4s3") == {"block_m": 64, "block_n": 128, "warps": 4, "stages": 3}
    run = subprocess.run([sys.executable, "-m", "iosim.kernels.causal_trace", "--out", "unused", "--tiling", "64x128"],
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 2 and "Traceback" not in run.stderr
    assert run.stderr.strip().endswith("error: argument --tiling: '64x128': expected BMxBNwWARPSsSTAGES, e.g. 128x64w4s2")


def test_a_chunk_below_one_block_is_refused_in_one_line(tmp_path):
    run = subprocess.run([sys.executable, "-m", "iosim.kernels.causal_trace", "--out", str(tmp_path / "t"), "--chunk", "0"],
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 2 and "Traceback" not in run.stderr
    assert run.stderr.strip().endswith("--chunk: must be a positive number of K/V blocks, got 0")
    assert not (tmp_path / "t").exists()  # nothing written
