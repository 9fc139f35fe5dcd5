"""A user's Triton kernel as a case (kernels/user_kernel.py): loading by path, launches recorded, tiling read off them."""
from __future__ import annotations

from pathlib import Path

import pytest

from iosim.kernels.device import HarnessError

torch = pytest.importorskip("torch")
pytest.importorskip("triton")

from iosim.kernels import user_kernel  # noqa: E402
from iosim.kernels.cases import kernel_case  # noqa: E402
from iosim.kernels.harness import user_run_config  # noqa: E402

TINY = Path(__file__).parent / "data" / "user_kernel_tiny.py"


def test_launches_of_one_call_are_recorded_with_grid_warps_stages_and_constexprs():
    fn = user_kernel.load_kernel(f"{TINY}:attention")
    q = torch.randn(1, 2, 40, 16)
    with user_kernel.recording_launches() as launches:
        o = fn(q, q, q)
    assert torch.equal(o, q)
    assert len(launches) == 1
    rec = launches[0]
    assert rec["kernel"] == "tiny_fwd"
    assert rec["grid"] == [3, 2, 1]  # cdiv(40, 16) Q blocks x B·H
    assert (rec["num_warps"], rec["num_stages"]) == (2, 1)
    assert rec["constexprs"] == {"BLOCK_M": 16, "BLOCK_N": 8, "D": 16}
    with user_kernel.recording_launches() as after:
        pass
    assert after == []  # the patch is gone outside the block, and a new block starts empty


def test_the_main_launch_gives_the_tiling_and_the_grid_order():
    pre = {"kernel": "attn_bwd_preprocess", "grid": [64, 8, 1], "num_warps": 4, "num_stages": 1,
           "constexprs": {"BLOCK_M": 64}}
    fwd = {"kernel": "attn_fwd", "grid": [32, 8, 1], "num_warps": 8, "num_stages": 3,
           "constexprs": {"BLOCK_M": 128, "BLOCK_N": 64, "HEAD_DIM": 128}}
    bwd = {"kernel": "attn_bwd", "grid": [64, 8, 1], "num_warps": 4, "num_stages": 2,
           "constexprs": {"BLOCK_M": 64, "BLOCK_N": 64}}
    assert user_kernel.main_launch([pre, fwd, bwd], "fwd") is fwd
    assert user_kernel.main_launch([pre, fwd, bwd], "bwd") is bwd
    assert user_kernel.tiling_from_launch(fwd, 4096) == {"block_m": 128, "block_n": 64, "warps": 8, "stages": 3,
                                                          "grid_order": "rows"}
    heads_first = dict(fwd, grid=[8, 32, 1])
    assert user_kernel.tiling_from_launch(heads_first, 4096)["grid_order"] == "heads"
    # kernels/flash2.py spells its tiles BM/BN; a kernel that names none is ordered by which grid axis is B·H
    short = dict(fwd, grid=[8, 512, 1], constexprs={"BM": 128, "BN": 64, "HEADS_FIRST": True})
    assert user_kernel.tiling_from_launch(short, 65536)["block_m"] == 128
    assert user_kernel.tiling_from_launch(short, 65536)["grid_order"] == "heads"
    untiled = dict(fwd, constexprs={"D": 128})
    assert user_kernel.tiling_from_launch(dict(untiled, grid=[8, 512, 1]), 65536, bh=8)["grid_order"] == "heads"
    assert user_kernel.tiling_from_launch(dict(untiled, grid=[512, 8, 1]), 65536, bh=8)["grid_order"] == "rows"
    assert user_kernel.tiling_from_launch(dict(untiled, grid=[8, 512, 1]), 65536)["grid_order"] == "rows"
    # a serving engine's prefill kernel is the forward, not a backward's preprocess (lmdeploy's
    # _flash_prefill_fwd_kernel: read as one, its 128 x 32 tiles were recorded as none and validated at the defaults)
    prefill = dict(fwd, kernel="_flash_prefill_fwd_kernel", constexprs={"BLOCK_M": 128, "BLOCK_N": 32})
    assert user_kernel.main_launch([prefill], "fwd") is prefill
    assert user_kernel.tiling_from_launch(prefill, 4096)["block_n"] == 32
    spec = kernel_case("tests/data/user_kernel_tiny.py:attention", "flash2", "fwd_bwd", seq_q=4096, head_dim=128)
    config = user_run_config(spec, [pre, fwd, bwd])
    assert config["algo"] == "flash2" and config["problem"]["seq_q"] == 4096
    assert config["tiling"]["block_m"] == 128 and config["backward_tiling"]["block_m"] == 64


def test_a_missing_file_or_function_is_a_harness_error_naming_it(tmp_path):
    with pytest.raises(HarnessError, match="does not exist"):
        user_kernel.load_kernel(f"{tmp_path}/nope.py:attention")
    with pytest.raises(HarnessError, match=r"user_kernel_tiny.py has no function 'nothing'"):
        user_kernel.load_kernel(f"{TINY}:nothing")
    bad = tmp_path / "broken.py"
    bad.write_text("raise RuntimeError('boom')\n")
    with pytest.raises(HarnessError, match="failed to import: RuntimeError: boom"):
        user_kernel.load_kernel(f"{bad}:attention")
    with pytest.raises(HarnessError, match="must be 'path/to/file.py:function'"):
        user_kernel.load_kernel("no_colon.py")


@pytest.mark.parametrize("constexprs, tiles", [
    ({"BLOCK_M": 128, "BLOCK_N": 64, "BLOCK_DMODEL": 64}, (128, 64)),
    ({"BLOCK_SIZE_M": 64, "BLOCK_SIZE_N": 32, "HEAD_DIM": 128}, (64, 32)),
    ({"TILE_Q": 128, "TILE_KV": 64, "IS_CAUSAL": True}, (128, 64)),
    ({"Q_BLOCK_SIZE": 64, "KV_BLOCK_SIZE": 128}, (64, 128)),
    ({"block_q": 32, "block_k": 64}, (32, 64)),
    ({"BLOCK_DMODEL": 64, "HEAD_DIM": 64}, (None, None)),  # a head dim is not a tile
    ({"BLOCK_M1": 32, "BLOCK_N1": 128, "BLOCK_M2": 128, "BLOCK_N2": 32}, (32, 128)),  # a backward's first loop
    ({"BLOCK_M2": 128, "BLOCK_N2": 32}, (None, None)),  # other numbers: not guessed
    ({"BLOCK_M": 64, "TILE_M": 128, "BLOCK_N": 32, "TILE_N": 32}, (64, 32)),  # the plain names win
    ({"BLOCK_SIZE_M": 64, "TILE_Q": 128, "BLOCK_N": 32}, (None, None)),  # two query-side candidates: ambiguous
])
def test_tile_sizes_read_the_spellings_kernels_use(constexprs, tiles):
    from iosim.kernels.user_kernel import tile_sizes

    assert tile_sizes({"constexprs": constexprs}) == tiles
