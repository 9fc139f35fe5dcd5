"""Triton attention kernels (standard, flash1, flash2) against a float64 reference, forward and gradients.

Shapes are ragged (not multiples of the blocks). Without CUDA the kernels run in the Triton
interpreter on CPU (tests/conftest.py sets TRITON_INTERPRET=1) on small shapes and small blocks;
the ``gpu`` cases run compiled kernels on bigger shapes with the default tiling. Besides the values,
each run checks the launched kernels and grids against the schedule the simulator models.

Tolerance: we compare max|x − ref| / max|ref| (ref in float64 from the same dtype-rounded inputs)
with TOL_UNITS · u, u the unit roundoff of the input dtype (fp16 2^-11, bf16 2^-8). Matmuls
accumulate in fp32 (relative error ~N·2^-24, negligible), so the error comes from a handful of
roundings to the input dtype along the way, each ≤ u relative to the values it rounds: P before
the PV matmul (as FlashAttention does), the stored O, dK, dV, dS (rounded before its two matmuls)
and, in the standard path, S, P, dP, dS materialised in HBM, where the rounding of S (|S| up to
~4 on these inputs) perturbs P by up to ~4u. Measured errors stay below ~4u; TOL_UNITS = 10.
"""
from __future__ import annotations

import math
import os
from typing import NamedTuple

import pytest
import torch

from iosim.kernels import ALGO_NAMES, ALGOS, flash1, flash2, standard
from iosim.schedule.problem import HEAD_DIMS, Problem, RunConfig, Tiling

DEVICE = "cpu" if os.environ.get("TRITON_INTERPRET") == "1" else "cuda"
UNIT_ROUNDOFF = {torch.float16: 2.0**-11, torch.bfloat16: 2.0**-8}
TOL_UNITS = 10


class Case(NamedTuple):
    batch: int
    heads: int
    kv_heads: int
    seq_q: int
    seq_k: int
    head_dim: int
    causal: bool
    dtype: torch.dtype
    tiling: dict


F16, BF16 = torch.float16, torch.bfloat16
# Interpreter cases: small blocks so that every shape spans several ragged blocks.
SMALL = [
    Case(1, 2, 2, 37, 37, 16, False, F16, {"block_m": 16, "block_n": 32}),
    Case(1, 4, 2, 50, 50, 64, True, BF16, {"block_m": 32, "block_n": 16}),
    Case(2, 4, 1, 37, 50, 16, False, F16, {"block_m": 16, "block_n": 16}),  # multi-query, Nq != Nk
    Case(1, 2, 2, 100, 100, 16, True, F16, {"block_m": 16, "block_n": 32}),
    Case(1, 2, 1, 45, 45, 256, True, BF16, {"block_m": 16, "block_n": 16}),  # the largest head, GQA
    Case(1, 4, 2, 37, 70, 32, True, F16, {"block_m": 16, "block_n": 32}),  # causal, Nq < Nk: the diagonal top-left
]
# Compiled cases: default tiling (block sizes 32..128), d = 64, 128 and 256.
BIG = [
    Case(2, 8, 8, 1000, 1000, 64, False, F16, {}),
    Case(2, 8, 2, 1000, 1000, 128, True, BF16, {}),
    Case(1, 4, 1, 777, 1025, 64, False, BF16, {}),
    Case(2, 4, 4, 2048, 2048, 128, True, F16, {}),
    Case(1, 8, 2, 1500, 1500, 256, True, F16, {}),
    Case(1, 8, 2, 1000, 3000, 128, True, BF16, {}),  # causal, Nq < Nk: the diagonal top-left
]


def _cases():
    for algo in ALGO_NAMES:
        orders = ("rows", "heads") if algo == "flash2" else ("rows",)
        for order in orders:
            for n, case in enumerate(SMALL):
                if order == "heads" and n % 2:
                    continue  # the grid order changes launch order only; two cases suffice
                yield pytest.param(algo, case._replace(tiling=case.tiling | {"grid_order": order}),
                                   id=f"{algo}-{order}-small{n}")
            for n, case in enumerate(BIG):
                yield pytest.param(algo, case._replace(tiling={"grid_order": order}),
                                   id=f"{algo}-{order}-big{n}", marks=pytest.mark.gpu)
        if algo in ("flash1", "flash2"):  # the backward with dQ in a kernel of its own
            for n, case in enumerate(SMALL):
                yield pytest.param(algo, case._replace(tiling=case.tiling | {"dq": "separate"}),
                                   id=f"{algo}-dq-separate-small{n}")
            for n, case in enumerate(BIG[:2]):
                yield pytest.param(algo, case._replace(tiling={"dq": "separate"}), id=f"{algo}-dq-separate-big{n}",
                                   marks=pytest.mark.gpu)


def inputs(case: Case, seed: int = 0):
    gen = torch.Generator(device=DEVICE).manual_seed(seed)

    def randn(*shape):
        return torch.randn(*shape, generator=gen, device=DEVICE).to(case.dtype)

    q = randn(case.batch, case.heads, case.seq_q, case.head_dim)
    k = randn(case.batch, case.kv_heads, case.seq_k, case.head_dim)
    v = randn(case.batch, case.kv_heads, case.seq_k, case.head_dim)
    return q, k, v, randn(case.batch, case.heads, case.seq_q, case.head_dim)


def reference(q, k, v, causal: bool):
    """softmax(QKᵀ/√d + mask) V in float64, query head h reading kv head h // (H / Hkv)."""
    group = q.shape[1] // k.shape[1]
    k, v = k.repeat_interleave(group, 1), v.repeat_interleave(group, 1)
    s = (q @ k.transpose(-1, -2)) / math.sqrt(q.shape[-1])
    if causal:
        s = s.masked_fill(torch.ones_like(s, dtype=torch.bool).triu(1), float("-inf"))
    return torch.softmax(s, dim=-1) @ v


def relative_error(x, ref) -> float:
    return ((x.double() - ref).abs().max() / ref.abs().max()).item()


def expected_launches(algo: str, case: Case) -> list[tuple[str, list[int]]]:
    """The Triton kernels and grids of one forward + backward, as the simulator schedules them."""
    cdiv = lambda a, b: -(-a // b)  # noqa: E731
    bh, n_q, n_k, d = case.batch * case.heads, case.seq_q, case.seq_k, case.head_dim
    bwd = ALGOS[algo].bwd_tiling(d, case.dtype, **case.tiling)
    if algo == "standard":
        t = standard.tiling(d, case.dtype, **case.tiling)
        assert bwd == t  # one tiling for every matmul kernel of both passes
        m, n = t.block_m, t.block_n
        nn_tiles, rows = [cdiv(n_q, m) * cdiv(n_k, n), bh, 1], [n_q, bh, 1]
        return [("qk", nn_tiles), ("softmax", rows), ("pv", [cdiv(n_q, m), bh, 1]),
                ("dv", [cdiv(n_k, m), bh, 1]), ("dp", nn_tiles), ("ds", rows),
                ("dq", [cdiv(n_q, m), bh, 1]), ("dk", [cdiv(n_k, m), bh, 1])]
    backward = [("flash2_bwd_pre", [cdiv(n_q, bwd.block_m), bh, 1])]
    if case.tiling.get("dq") == "separate":  # dK, dV over K/V blocks, then dQ over Q blocks
        backward += [("flash2_bwd_kv", [cdiv(n_k, bwd.block_n), bh, 1]), ("flash2_bwd_q", [cdiv(n_q, bwd.block_m), bh, 1])]
    else:
        backward += [("flash2_bwd", [cdiv(n_k, bwd.block_n), bh, 1])]
    if algo == "flash1":
        return [("flash1_fwd", [bh, 1, 1]), ("flash1_lse", [cdiv(bh * n_q, flash1.LSE_BLOCK), 1, 1])] + backward
    t = flash2.tiling(d, case.dtype, **case.tiling)
    blocks = cdiv(n_q, t.block_m)
    grid = [bh, blocks, 1] if t.grid_order == "heads" else [blocks, bh, 1]
    return [("flash2_fwd", grid)] + backward


@pytest.mark.parametrize("algo, case", list(_cases()))
def test_forward_and_gradients_match_float64(algo, case):
    module = ALGOS[algo]
    q, k, v, do = inputs(case)
    leaves = [x.clone().requires_grad_() for x in (q, k, v)]
    out = module.attention(*leaves, causal=case.causal, **case.tiling)
    out.backward(do)

    ref_leaves = [x.double().requires_grad_() for x in (q, k, v)]
    ref = reference(*ref_leaves, case.causal)
    ref.backward(do.double())

    tol = TOL_UNITS * UNIT_ROUNDOFF[case.dtype]
    errors = {"o": relative_error(out, ref)}
    errors |= {f"d{name}": relative_error(x.grad, r.grad) for name, x, r in zip("qkv", leaves, ref_leaves)}
    assert out.dtype == case.dtype and all(x.grad.dtype == case.dtype for x in leaves)
    assert max(errors.values()) < tol, f"errors {errors} exceed {tol:.2e}"

    launched = [(rec["kernel"], rec["grid"]) for rec in module.LAUNCHES]
    assert launched == expected_launches(algo, case)
    if DEVICE == "cuda":
        assert all(isinstance(rec["n_regs"], int) and rec["shared_bytes"] is not None for rec in module.LAUNCHES)


@pytest.mark.parametrize("algo", ALGO_NAMES)
def test_module_reference_matches_float64(algo):
    """Each module's torch statement of its algorithm (loop order, block skipping) is exact."""
    case = SMALL[1]
    q, k, v, _ = inputs(case)
    q, k, v = q.double(), k.double(), v.double()
    kwargs = {} if algo == "standard" else {"block_m": 16, "block_n": 32}
    out = ALGOS[algo].reference(q, k, v, causal=True, **kwargs)
    out = out[0] if isinstance(out, tuple) else out
    # flash1/flash2 references do their block arithmetic in fp32: 2^-24 relative, times a few
    torch.testing.assert_close(out, reference(q, k, v, True), rtol=0, atol=1e-5)


@pytest.mark.parametrize("algo", ALGO_NAMES)
def test_run_config_is_plain_data_with_the_simulator_keys(algo):
    case = SMALL[1]
    q, k, v, _ = inputs(case)
    config = ALGOS[algo].run_config(q, k, v, causal=True, backward=True, block_m=32, stages=1)
    # given values as given, the rest each pass's default (flash1's backward is flash2's kernels)
    fwd = {"standard": (128, 4), "flash1": (128, 4), "flash2": (64, 4)}[algo]
    bwd = (128, 4) if algo == "standard" else (128, 8)
    assert config == {
        "algo": algo,
        "problem": {"batch": 1, "heads": 4, "kv_heads": 2, "seq_q": 50, "seq_k": 50, "head_dim": 64,
                    "dtype": "bf16", "causal": True, "backward": True},
        "tiling": {"block_m": 32, "block_n": fwd[0], "warps": fwd[1], "stages": 1, "grid_order": "rows"},
        "mode": "plain",
        "host_tensors": [],
        "backward_tiling": {"block_m": 32, "block_n": bwd[0], "warps": bwd[1], "stages": 1, "grid_order": "rows"},
    }
    assert RunConfig.from_dict(config).to_dict() == config  # the simulator takes it as is
    assert RunConfig.from_dict(config).resolved().to_dict() == config  # already resolved
    assert ALGOS[algo].run_config(q, k, v)["backward_tiling"] is None  # forward only


@pytest.mark.parametrize("algo", ["flash1", "flash2"])
def test_run_config_reports_how_dq_is_computed(algo):
    """``dq="separate"`` is reported as the simulator's RunConfig field; ``atomic`` (the default) keeps the old form;
    another value is refused naming the field."""
    q, k, v, _ = inputs(SMALL[1])
    config = ALGOS[algo].run_config(q, k, v, causal=True, backward=True, dq="separate")
    assert config["dq"] == "separate" and RunConfig.from_dict(config).dq == "separate"
    assert "dq" not in ALGOS[algo].run_config(q, k, v, causal=True, backward=True, dq="atomic")
    with pytest.raises(ValueError, match="^dq: must be one of atomic, separate"):
        ALGOS[algo].run_config(q, k, v, backward=True, dq="fused")


def test_tiling_defaults_and_overrides():
    assert flash2.tiling(64) == Tiling(block_m=128, block_n=64, warps=4, stages=2, grid_order="rows")
    assert flash2.tiling(128).warps == 8
    assert flash2.bwd_tiling(128) == Tiling(block_m=64, block_n=128, warps=8, stages=2, grid_order="rows")
    assert flash2.bwd_tiling(64, block_n=32, grid_order="heads") == Tiling(64, 32, 8, 2, "rows")
    assert flash2.tiling(64, grid_order="heads").grid_order == "heads"
    assert flash1.tiling(32) == Tiling(block_m=64, block_n=128, warps=4, stages=1, grid_order="rows")
    assert flash1.bwd_tiling(32) == flash2.bwd_tiling(32)
    assert standard.tiling(16, block_m=32).block_m == 32
    assert standard.bwd_tiling(16, block_m=32) == standard.tiling(16, block_m=32)
    with pytest.raises(ValueError, match="block_m"):
        flash2.tiling(64, block_m=48)
    with pytest.raises(ValueError, match="warps"):
        flash2.bwd_tiling(64, warps=3)
    with pytest.raises(ValueError, match="grid_order"):
        standard.tiling(64, grid_order="heads")
    with pytest.raises(ValueError, match="grid_order"):
        flash1.run_config(*inputs(SMALL[0])[:3], grid_order="heads")
    with pytest.raises(ValueError, match="blocks"):
        flash1.tiling(64, blocks=2)


@pytest.mark.parametrize("algo", ALGO_NAMES)
def test_bad_head_dim_is_refused(algo):
    q = torch.zeros(1, 1, 8, 48, dtype=F16, device=DEVICE)
    with pytest.raises(ValueError, match="head_dim"):
        ALGOS[algo].attention(q, q, q)
    with pytest.raises(ValueError, match="head_dim"):
        ALGOS[algo].run_config(q, q, q)


@pytest.mark.parametrize("algo", ALGO_NAMES)
def test_simulator_defaults_are_the_kernels_defaults(algo):
    """Without overrides a kernel reports exactly the simulator's resolved configuration, at every head dim."""
    for head_dim in HEAD_DIMS:
        q = torch.zeros(2, 4, 8, head_dim, dtype=BF16, device=DEVICE)
        k = torch.zeros(2, 2, 8, head_dim, dtype=BF16, device=DEVICE)
        for backward in (False, True):
            problem = Problem(batch=2, heads=4, kv_heads=2, seq_q=8, head_dim=head_dim, dtype="bf16",
                              causal=True, backward=backward)
            want = RunConfig(algo=algo, problem=problem).resolved()
            assert ALGOS[algo].run_config(q, k, k, causal=True, backward=backward) == want.to_dict(), head_dim
            assert ALGOS[algo].tiling(head_dim) == want.tiling
        assert ALGOS[algo].bwd_tiling(head_dim) == want.backward_tiling


# The kernels of each pass whose tiles, warps and stages come from the tiling (the one-row kernels
# softmax, ds and flash1_lse pick their own warps).
TILED = {"fwd": {"qk", "pv", "flash1_fwd", "flash2_fwd"}, "bwd": {"dv", "dp", "dq", "dk", "flash2_bwd_pre", "flash2_bwd"}}


@pytest.mark.parametrize("algo", ALGO_NAMES)
@pytest.mark.parametrize("overrides", [{}, {"block_n": 16, "warps": 2, "stages": 1}], ids=["defaults", "overrides"])
def test_launched_kernels_run_the_reported_configuration(algo, overrides):
    """What run_config reports is what LAUNCHES records: warps and stages of each pass, and the grids they imply."""
    case = Case(1, 2, 2, 40, 40, 16, False, F16, overrides)
    q, k, v, do = inputs(case)
    config = ALGOS[algo].run_config(q, k, v, backward=True, **overrides)
    leaves = [x.clone().requires_grad_() for x in (q, k, v)]
    ALGOS[algo].attention(*leaves, **overrides).backward(do)
    launched = ALGOS[algo].LAUNCHES
    for pass_, key in (("fwd", "tiling"), ("bwd", "backward_tiling")):
        tiled = [rec for rec in launched if rec["kernel"] in TILED[pass_]]
        assert tiled, pass_
        want = config[key]
        assert {(rec["num_warps"], rec["num_stages"]) for rec in tiled} == {(want["warps"], want["stages"])}, pass_
        for name, value in overrides.items():
            assert want[name] == value
    resolved = RunConfig.from_dict(config)
    tiles = {"fwd": resolved.tiling, "bwd": resolved.backward_tiling}
    assert [(rec["kernel"], rec["grid"]) for rec in launched] == expected_launches_from(algo, case, tiles)


def expected_launches_from(algo: str, case: Case, tiles: dict) -> list[tuple[str, list[int]]]:
    """``expected_launches`` with the tilings taken from a reported configuration instead of the kernel module."""
    fwd, bwd = tiles["fwd"], tiles["bwd"]
    overrides = {"block_m": fwd.block_m, "block_n": fwd.block_n, "grid_order": fwd.grid_order}
    expected = expected_launches(algo, case._replace(tiling=overrides))
    cdiv = lambda a, b: -(-a // b)  # noqa: E731
    bh = case.batch * case.heads
    if algo == "standard":  # one tiling for every matmul kernel of both passes
        assert (bwd.block_m, bwd.block_n) == (fwd.block_m, fwd.block_n)
    else:  # the backward's own tiles
        expected[-2:] = [("flash2_bwd_pre", [cdiv(case.seq_q, bwd.block_m), bh, 1]),
                         ("flash2_bwd", [cdiv(case.seq_k, bwd.block_n), bh, 1])]
    return expected
