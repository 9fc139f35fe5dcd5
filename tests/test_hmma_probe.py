"""The HMMA probe's premise, on the CPU: Triton compiles a Hopper tile's dot to wgmma, and to mma.sync where
DISABLE_MMA_V3=1 is set in the compiling process (what iosim.kernels.hmma_probe times both ways on a GPU)."""
from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest

COMPILE = textwrap.dedent('''
    import triton, triton.language as tl
    from triton.backends.compiler import GPUTarget

    @triton.jit
    def dot(A, B, C, BM: tl.constexpr, BN: tl.constexpr, BK: tl.constexpr):
        rm, rn, rk = tl.arange(0, BM), tl.arange(0, BN), tl.arange(0, BK)
        a = tl.load(A + rm[:, None] * BK + rk[None, :])
        b = tl.load(B + rk[:, None] * BN + rn[None, :])
        tl.store(C + rm[:, None] * BN + rn[None, :], tl.dot(a, b))

    src = triton.compiler.ASTSource(fn=dot, signature={"A": "*fp16", "B": "*fp16", "C": "*fp32", "BM": "constexpr",
                                    "BN": "constexpr", "BK": "constexpr"}, constexprs={"BM": 128, "BN": 64, "BK": 64})
    ptx = triton.compile(src, target=GPUTarget("cuda", 90, 32), options={"num_warps": 4}).asm["ptx"]
    print("wgmma" in ptx, "mma.sync" in ptx)
''')


@pytest.mark.sass
@pytest.mark.parametrize("disable, want", [(False, "True False"), (True, "False True")])
def test_disable_mma_v3_makes_triton_emit_mma_sync_on_hopper(tmp_path, disable, want):
    pytest.importorskip("triton")
    env = {k: v for k, v in os.environ.items() if k != "DISABLE_MMA_V3"}
    env.update(TRITON_CACHE_DIR=str(tmp_path), TRITON_INTERPRET="0", **({"DISABLE_MMA_V3": "1"} if disable else {}))
    script = tmp_path / "dot.py"  # @triton.jit reads its function's source from a file
    script.write_text(COMPILE)
    env["TRITON_CACHE_DIR"] = str(tmp_path / "cache")
    done = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip().splitlines()[-1] == want


def test_ptx_counts_name_each_kind(tmp_path):
    from iosim.kernels.hmma_probe import _ptx_counts

    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "k.ptx").write_text("wgmma.mma_async.sync.aligned.m64n64k16")
    (tmp_path / "b.ptx").write_text("mma.sync.aligned.m16n8k16.row.col")
    (tmp_path / "c.ptx").write_text("ld.global")
    assert _ptx_counts(tmp_path) == {"wgmma": 1, "mma_sync": 1, "kernels": 3}
