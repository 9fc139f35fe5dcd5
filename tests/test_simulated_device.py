"""The GPU a user's launcher sees while captured without one (kernels/simulated_device.py): device queries
answer as the simulated GPU, are restored after, and a launcher that picks its config by the device picks
the one it would pick on that GPU."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from iosim.kernels.simulated_device import simulated_device

REPO = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.skipif(torch.cuda.is_available(), reason="a GPU answers for itself: nothing is simulated")


def test_device_queries_answer_as_the_simulated_gpu_and_are_restored():
    import triton

    before = torch.cuda.get_device_capability
    with simulated_device(90, 132):
        assert torch.cuda.get_device_capability() == (9, 0)
        props = torch.cuda.get_device_properties(torch.device("cpu"))
        assert (props.major, props.minor, props.multi_processor_count) == (9, 0, 132)
        assert triton.runtime.driver.active.get_current_target().arch == 90
        assert triton.runtime.driver.active.utils.get_device_properties(0)["multiprocessor_count"] == 132
        with torch.cuda.device(torch.device("cpu")):  # selects nothing, raises nothing
            assert torch.cuda.current_device() == 0
    assert torch.cuda.get_device_capability is before
    with pytest.raises((AssertionError, RuntimeError)):  # no GPU here: the real query fails again
        torch.cuda.get_device_capability()
    with pytest.raises(RuntimeError):
        triton.runtime.driver.active.get_current_target()


def test_an_unknown_sm_count_is_a_one_line_error_naming_what_is_known():
    with simulated_device(80):
        props = torch.cuda.get_device_properties()
        assert (props.major, props.minor) == (8, 0)
        with pytest.raises(AttributeError, match="multi_processor_count"):
            _ = props.multi_processor_count


LAUNCHER = '''
import torch, triton, triton.language as tl

@triton.jit
def _copy(X, Y, N, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr):
    offs = tl.program_id(0) * BLOCK_M + tl.arange(0, BLOCK_M)
    tl.store(Y + offs, tl.load(X + offs, mask=offs < N), mask=offs < N)

def fwd(q, k, v, causal=False, sm_scale=None):
    """Picks its tile by the device's capability and its grid by its SM count, as launchers in the wild do."""
    big = torch.cuda.get_device_capability()[0] >= 9
    sms = torch.cuda.get_device_properties(q.device).multi_processor_count
    with torch.cuda.device(q.device):
        o = torch.empty_like(q)
        _copy[(sms,)](q, o, q.numel(), BLOCK_M=128 if big else 32, BLOCK_N=64, num_warps=4)
    return o
'''


@pytest.mark.sass
def test_a_launcher_that_asks_the_device_picks_the_simulated_gpus_config(tmp_path):
    (tmp_path / "asks.py").write_text(LAUNCHER)
    script = f"""
import json
from iosim.kernels.user_codes import capture
from iosim.schedule.problem import Problem, RunConfig
config = RunConfig(algo="flash2", problem=Problem(batch=1, heads=2, seq_q=256, head_dim=64))
out = {{}}
for arch, sms in ((90, 132), (80, 108)):
    fwd, _, _ = capture({str(tmp_path / 'asks.py') + ':fwd'!r}, config, arch, sms=sms)
    out[arch] = [fwd[0].named_constexprs()["BLOCK_M"], fwd[0].grid[0]]
print(json.dumps(out))
"""
    env = dict(os.environ, TRITON_INTERPRET="0")
    run = subprocess.run([sys.executable, "-c", script], env=env, cwd=REPO, capture_output=True, text=True,
                         timeout=120)
    assert run.returncode == 0, run.stderr
    got = json.loads(run.stdout.strip().splitlines()[-1])
    assert got == {"90": [128, 132], "80": [32, 108]}
