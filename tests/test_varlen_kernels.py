"""Variable-length and sliding-window kernels against float64 references: the packed FlashAttention-2
forward (kernels/varlen.py) and the ragged flash-decoding kernels (kernels/flash_decode.py, ``seq_lens``,
``window``), with the launches and configurations they report.

Shapes are ragged: sequence lengths of 1, lengths that are no multiple of a block and lengths equal
to one; windows of 1 key, shorter than a block, no multiple of a block and longer than the sequence;
decode requests whose cache ends exactly on a split edge (their next split is empty). Without CUDA the
kernels run in the Triton interpreter (tests/conftest.py) with small blocks; the ``gpu`` cases run the
compiled kernels with the default tiling.

Tolerance, as in tests/test_kernels.py and tests/test_flash_decode.py: max|x − ref| / max|ref| <
TOL_UNITS · u, u the unit roundoff of the input dtype (fp16 2^-11, bf16 2^-8), the reference in float64
from the same dtype-rounded inputs; P before the PV matmul and the stored O are the only roundings to
the input dtype (≤ u each), TOL_UNITS = 10. The LSE is fp32 arithmetic on exact products of dtype
inputs (|LSE| < 10 here), so it is held to LSE_ATOL = 1e-4 absolute.

In the interpreter, rows past a sequence's end compute 0/0 and log2(0) (never stored): numpy's
RuntimeWarnings for them are silenced.
"""
from __future__ import annotations

import math
import os
from typing import NamedTuple

import pytest
import torch
import triton

from iosim.kernels import flash_decode, varlen
from iosim.schedule.problem import RunConfig
from iosim.schedule.tiling import FLASH_DECODE, decode_plan_blocks, decode_rows, decode_split_blocks

pytestmark = pytest.mark.filterwarnings("ignore::RuntimeWarning")

DEVICE = "cpu" if os.environ.get("TRITON_INTERPRET") == "1" else "cuda"
UNIT_ROUNDOFF = {torch.float16: 2.0**-11, torch.bfloat16: 2.0**-8}
TOL_UNITS = 10
LSE_ATOL = 1e-4
F16, BF16 = torch.float16, torch.bfloat16


def relative_error(x, ref) -> float:
    return ((x.double() - ref).abs().max() / ref.abs().max()).item()


def generator(seed: int = 0):
    return torch.Generator(device=DEVICE).manual_seed(seed)


# ---------------------------------------------------------------------------------------------
# Packed (varlen) FlashAttention-2 forward
# ---------------------------------------------------------------------------------------------
class Packed(NamedTuple):
    seq_lens: tuple[int, ...]
    heads: int
    kv_heads: int
    head_dim: int
    causal: bool
    window: int | None
    dtype: torch.dtype
    tiling: dict


SMALL = [  # blocks of 16 and 32 rows, so that every sequence spans several ragged blocks
    Packed((1, 37, 130), 4, 2, 16, True, None, F16, {"block_m": 32, "block_n": 16}),
    Packed((1, 37, 130), 4, 2, 16, True, 1, BF16, {"block_m": 32, "block_n": 16}),  # only the diagonal
    Packed((1, 37, 130), 4, 1, 16, True, 5, F16, {"block_m": 16, "block_n": 32}),  # W < BN, multi-query
    Packed((1, 37, 130), 2, 2, 32, True, 40, BF16, {"block_m": 32, "block_n": 16}),  # W no multiple of BN
    Packed((70, 3), 4, 2, 16, True, 200, F16, {"block_m": 16, "block_n": 16}),  # W ≥ L: plain causal
    Packed((16, 32, 48), 2, 1, 16, True, 16, F16, {"block_m": 16, "block_n": 16}),  # lengths and W = a block
    Packed((100,), 2, 2, 16, False, None, BF16, {"block_m": 32, "block_n": 32}),  # one sequence
    Packed((50, 16, 33), 4, 2, 32, False, None, F16, {"block_m": 16, "block_n": 32}),
]
BIG = [
    Packed((1, 1000, 4097, 513, 2048), 16, 16, 64, True, None, F16, {}),
    Packed((1, 1000, 4097, 513, 2048), 32, 8, 128, True, 1000, BF16, {}),
    Packed((3000, 77, 4096), 32, 8, 64, True, 256, F16, {}),
    Packed((1, 1000, 4097), 16, 16, 128, False, None, BF16, {}),
]


def packed_inputs(case: Packed, seed: int = 0):
    return varlen.random_packed(case.seq_lens, case.heads, case.kv_heads, case.head_dim, case.dtype, DEVICE,
                                generator(seed))


def check_varlen(case: Packed, q, k, v, cu_q, cu_k, max_q: int, max_k: int) -> None:
    """O and LSE against the float64 reference, and the one launch: its grid and constexprs."""
    o, lse = varlen.attention_varlen(q, k, v, cu_q, cu_k, max_q, max_k, causal=case.causal, window=case.window,
                                     return_lse=True, **case.tiling)
    ref_o, ref_lse = varlen.reference(q, k, v, cu_q, cu_k, causal=case.causal, window=case.window)
    tol = TOL_UNITS * UNIT_ROUNDOFF[case.dtype]
    assert o.dtype == q.dtype and o.shape == q.shape and lse.shape == (q.shape[1], q.shape[0])
    err = relative_error(o, ref_o)
    assert err < tol, f"error {err:.2e} exceeds {tol:.2e}"
    assert (lse.double() - ref_lse).abs().max().item() < LSE_ATOL
    cfg = varlen.tiling(case.head_dim, **case.tiling)
    (rec,) = varlen.LAUNCHES
    assert rec["kernel"] == "flash2_varlen_fwd"
    assert rec["grid"] == [triton.cdiv(max_q, cfg.block_m), (cu_q.shape[0] - 1) * case.heads, 1]
    assert (rec["num_warps"], rec["num_stages"]) == (cfg.warps, cfg.stages)
    assert rec["constexprs"] == {"CAUSAL": case.causal, "WINDOW": case.window is not None, "D": case.head_dim,
                                 "BM": cfg.block_m, "BN": cfg.block_n, "STRIDE_Q": case.heads * case.head_dim,
                                 "STRIDE_KV": case.kv_heads * case.head_dim}
    if DEVICE == "cuda":
        assert isinstance(rec["n_regs"], int)


def _varlen_cases():
    for n, case in enumerate(SMALL):
        yield pytest.param(case, id=f"small{n}")
    for n, case in enumerate(BIG):
        yield pytest.param(case, id=f"big{n}", marks=pytest.mark.gpu)


@pytest.mark.parametrize("case", list(_varlen_cases()))
def test_varlen_matches_float64(case):
    q, k, v, cu = packed_inputs(case)
    check_varlen(case, q, k, v, cu, cu, max(case.seq_lens), max(case.seq_lens))


@pytest.mark.parametrize("q_lens, k_lens, tiling", [
    ((5, 40, 17), (33, 9, 64), {"block_m": 16, "block_n": 32}),
    pytest.param((1, 999, 4000), (4097, 77, 1000), {}, marks=pytest.mark.gpu),
])
def test_varlen_non_causal_query_and_key_lengths_differ(q_lens, k_lens, tiling):
    """Without a causal mask sequence b's L_q queries see all its L_k keys, whatever the two lengths."""
    case = Packed(q_lens, 4, 2, 16 if tiling else 64, False, None, F16, tiling)
    gen = generator()
    q = torch.randn(sum(q_lens), 4, case.head_dim, generator=gen, device=DEVICE).to(F16)
    k, v = (torch.randn(sum(k_lens), 2, case.head_dim, generator=gen, device=DEVICE).to(F16) for _ in range(2))
    check_varlen(case, q, k, v, varlen.cu_seqlens(q_lens, DEVICE), varlen.cu_seqlens(k_lens, DEVICE),
                 max(q_lens), max(k_lens))


def test_varlen_run_config_describes_the_packed_batch():
    case = SMALL[3]
    q, k, v, cu = packed_inputs(case)
    config = varlen.run_config(q, k, v, cu, cu, list(case.seq_lens), causal=True, window=40, **case.tiling)
    assert config["algo"] == "flash2"
    problem = config["problem"]
    assert (problem["batch"], problem["heads"], problem["kv_heads"], problem["head_dim"]) == (3, 2, 2, 32)
    assert (problem["seq_q"], problem["seq_k"], problem["seq_lens"], problem["window"]) == (130, 130, [1, 37, 130], 40)
    assert (problem["dtype"], problem["causal"], problem["backward"]) == ("bf16", True, False)
    assert config["tiling"] == {"block_m": 32, "block_n": 16, "warps": 4, "stages": 2, "grid_order": "rows"}
    assert RunConfig.from_dict(config).resolved().to_dict() == config  # the simulator takes it as is
    default = varlen.run_config(q, k, v, cu, cu, case.seq_lens, causal=True)
    assert "window" not in default["problem"] and default["tiling"]["block_m"] == 128


def test_varlen_refuses_what_it_cannot_run():
    q, k, v, cu = packed_inputs(SMALL[0])
    other = varlen.cu_seqlens((37, 1, 130), DEVICE)
    with pytest.raises(ValueError, match="window"):
        varlen.attention_varlen(q, k, v, cu, cu, 130, 130, causal=False, window=8)
    with pytest.raises(ValueError, match="window"):
        varlen.attention_varlen(q, k, v, cu, cu, 130, 130, causal=True, window=0)
    with pytest.raises(ValueError, match="causal"):
        varlen.attention_varlen(q, k, v, cu, cu, 130, 100, causal=True)
    with pytest.raises(ValueError, match="seq_lens"):
        varlen.run_config(q, k, v, cu, other, (1, 37, 130), causal=True)
    with pytest.raises(ValueError, match="seq_lens"):
        varlen.run_config(q, k, v, cu, cu, (1, 37), causal=True)
    with pytest.raises(ValueError, match="int32"):
        varlen.attention_varlen(q, k, v, cu.long(), cu, 130, 130)
    with pytest.raises(ValueError, match="contiguous"):
        varlen.attention_varlen(q.transpose(0, 1).contiguous().transpose(0, 1), k, v, cu, cu, 130, 130)
    with pytest.raises(ValueError, match="grid_order"):
        varlen.attention_varlen(q, k, v, cu, cu, 130, 130, grid_order="heads")
    if DEVICE == "cpu":  # offsets compared on the host only where that costs no sync
        with pytest.raises(ValueError, match="causal"):
            varlen.attention_varlen(q, k, v, cu, other, 130, 130, causal=True)


def test_cu_seqlens_are_the_packing_offsets():
    assert varlen.cu_seqlens((1, 37, 130), DEVICE).tolist() == [0, 1, 38, 168]
    assert varlen.cu_seqlens((5,), DEVICE).dtype == torch.int32


# ---------------------------------------------------------------------------------------------
# Ragged flash-decoding
# ---------------------------------------------------------------------------------------------
class Decode(NamedTuple):
    heads: int
    kv_heads: int
    seq_q: int
    seq_k: int  # the cache's allocation, Nk_max
    head_dim: int
    seq_lens: tuple[int, ...] | None
    window: int | None


# (case, block_n, splits). Lengths 64 and 128 end on a split edge of the 32-row blocks split 2 per split.
DECODE_SMALL = [
    (Decode(4, 2, 1, 130, 16, (1, 64, 130, 37), None), 32, 3),
    (Decode(4, 2, 4, 130, 16, (1, 64, 129, 100), 45), 32, 3),  # W no multiple of BN, 4 query rows
    (Decode(4, 1, 1, 130, 16, (5, 96, 130), 7), 16, 8),  # W < BN, multi-query
    (Decode(8, 2, 1, 200, 16, (17, 200, 128), 1), 32, 4),  # W = 1: only the newest key
    (Decode(4, 4, 4, 100, 32, (100, 3), 200), 32, 1),  # W ≥ every length; one split writes O
    (Decode(4, 2, 1, 150, 16, None, 30), 16, 5),  # a window over full caches
    (Decode(4, 2, 1, 1000, 16, (1000, 999, 1, 500), None), 64, None),  # the default splits
]
DECODE_PAGED = [  # (case, page size, block_n, splits): pages smaller than, equal to and larger than a block
    (Decode(4, 2, 1, 200, 16, (200, 33, 1), None), 16, 32, 3),
    (Decode(8, 2, 4, 200, 16, (17, 200, 64), 50), 32, 32, 4),
    (Decode(4, 1, 1, 300, 16, (300, 131), 70), 256, 64, 2),
]
DECODE_BIG = [
    (Decode(32, 8, 1, 8191, 128, (8191, 1, 4000, 129), None), None),
    (Decode(32, 8, 4, 8191, 128, (8191, 1, 4000, 129), 4096), None),
    (Decode(16, 2, 1, 30000, 64, (30000, 2047), 1000), 16),
    (Decode(32, 8, 1, 8191, 128, (8191, 1, 4000, 129), 4096), 256),
]


def decode_inputs(case: Decode, batch: int, dtype, seed: int = 0):
    """q (B, H, Nq, d) and caches k, v (B, Hkv, Nk_max, d) whose rows no request may read are NaN:
    those past its length and those before its window's first block (``block_n`` rows)."""
    gen = generator(seed)

    def randn(*shape):
        return torch.randn(*shape, generator=gen, device=DEVICE).to(dtype)

    return (randn(batch, case.heads, case.seq_q, case.head_dim),
            randn(batch, case.kv_heads, case.seq_k, case.head_dim),
            randn(batch, case.kv_heads, case.seq_k, case.head_dim))


def poison(k, v, lens, window, block_n):
    """NaN in the cache rows the ragged kernels must never load: past nk_b and before the window's block."""
    k, v = k.clone(), v.clone()
    for b, nk in enumerate(lens):
        first = (max(nk - window, 0) if window else 0) // block_n * block_n
        for x in (k, v):
            x[b, :, :first] = float("nan")
            x[b, :, nk:] = float("nan")
    return k, v


def decode_reference(q, k, v, lens, window):
    """softmax(QKᵀ/√d) V in float64 per request over its keys [max(nk − W, 0), nk)."""
    group = q.shape[1] // k.shape[1]
    out = torch.empty(q.shape, dtype=torch.float64, device=q.device)
    for b, nk in enumerate(lens):
        keys = slice(max(nk - window, 0) if window else 0, nk)
        kb, vb = (x[b, :, keys].double().repeat_interleave(group, 0) for x in (k, v))
        out[b] = torch.softmax(q[b].double() @ kb.transpose(-1, -2) / math.sqrt(q.shape[-1]), -1) @ vb
    return out


def check_decode_launches(case: Decode, batch: int, block_n: int, paged: bool, config: dict) -> None:
    """The ragged split kernel over the plan's splits and, with two or more, the ragged combine."""
    used = config["tiling"]["splits"]
    want = [("decode_split_ragged", [used, batch * case.kv_heads, 1])]
    if used > 1:
        want.append(("decode_reduce_ragged", [batch * case.heads * case.seq_q, 1, 1]))
    assert [(rec["kernel"], rec["grid"]) for rec in flash_decode.LAUNCHES] == want
    split = flash_decode.LAUNCHES[0]["constexprs"]
    assert {k: split[k] for k in ("ONE", "PAGED", "WINDOW", "BM", "BN")} == {
        "ONE": used == 1, "PAGED": paged, "WINDOW": case.window is not None,
        "BM": decode_rows(case.heads // case.kv_heads, case.seq_q), "BN": block_n}
    if used > 1:
        assert flash_decode.LAUNCHES[1]["constexprs"]["BS"] == triton.next_power_of_2(used)
    if DEVICE == "cuda":
        assert all(isinstance(rec["n_regs"], int) for rec in flash_decode.LAUNCHES)


def _decode_cases():
    for n, (case, block_n, splits) in enumerate(DECODE_SMALL):
        yield pytest.param(case, {"block_n": block_n} | ({} if splits is None else {"splits": splits}),
                           F16 if n % 2 else BF16, id=f"small{n}")
    for n, (case, _) in enumerate(DECODE_BIG):
        yield pytest.param(case, {}, BF16 if n % 2 else F16, id=f"big{n}", marks=pytest.mark.gpu)


@pytest.mark.parametrize("case, overrides, dtype", list(_decode_cases()))
def test_ragged_decode_matches_float64_and_reads_only_its_keys(case, overrides, dtype):
    batch = len(case.seq_lens) if case.seq_lens else 2
    lens = case.seq_lens or (case.seq_k,) * batch
    block_n = overrides.get("block_n", FLASH_DECODE.block_n)
    q, k, v = decode_inputs(case, batch, dtype)
    k, v = poison(k, v, lens, case.window, block_n)
    seq_lens = None if case.seq_lens is None else torch.tensor(lens, dtype=torch.int32, device=DEVICE)
    out = flash_decode.attention(q, k, v, seq_lens=seq_lens, window=case.window, **overrides)
    err = relative_error(out, decode_reference(q, k, v, lens, case.window))
    assert err < TOL_UNITS * UNIT_ROUNDOFF[dtype], f"error {err:.2e}"
    config = flash_decode.run_config(q, k, v, seq_lens=case.seq_lens, window=case.window, **overrides)
    check_decode_launches(case, batch, block_n, False, config)


@pytest.mark.parametrize("case, page, block_n, splits", DECODE_PAGED,
                         ids=[f"paged{n}-p{p}" for n, (_, p, _, _) in enumerate(DECODE_PAGED)])
def test_ragged_decode_on_a_paged_cache(case, page, block_n, splits):
    """Paged, ragged and windowed at once: the lengths are no multiple of the page; a list of lengths works."""
    lens = case.seq_lens
    q, k, v = decode_inputs(case, len(lens), F16)
    k, v = poison(k, v, lens, case.window, block_n)
    k_pages, v_pages, table = flash_decode.to_pages(k, v, page)
    out = flash_decode.attention_paged(q, k_pages, v_pages, table, case.seq_k, seq_lens=list(lens),
                                       window=case.window, block_n=block_n, splits=splits)
    err = relative_error(out, decode_reference(q, k, v, lens, case.window))
    assert err < TOL_UNITS * UNIT_ROUNDOFF[F16], f"error {err:.2e}"
    config = flash_decode.run_config(q, k, v, page_size=page, seq_lens=lens, window=case.window, block_n=block_n,
                                     splits=splits)
    assert flash_decode.LAUNCHES[0]["constexprs"]["PAGE"] == page
    check_decode_launches(case, len(lens), block_n, True, config)


@pytest.mark.gpu
@pytest.mark.parametrize("page", (16, 64, 256))
def test_ragged_paged_decode_on_the_gpu(page):
    case = DECODE_BIG[1][0]
    lens = case.seq_lens
    q, k, v = decode_inputs(case, len(lens), F16)
    k, v = poison(k, v, lens, case.window, FLASH_DECODE.block_n)
    out = flash_decode.attention_paged(q, *flash_decode.to_pages(k, v, page), case.seq_k, seq_lens=list(lens),
                                       window=case.window)
    assert relative_error(out, decode_reference(q, k, v, lens, case.window)) < TOL_UNITS * UNIT_ROUNDOFF[F16]


def test_ragged_decode_plans_from_the_allocation():
    """The splits follow Nk_max (and the window), never the lengths: 1000 rows of 64 are 16 blocks, so
    4 splits of 4 blocks even if every request is short; a 100-key window touches at most 3 blocks."""
    case = Decode(4, 2, 1, 1000, 16, (10, 70), None)
    q, k, v = decode_inputs(case, 2, F16)
    config = flash_decode.run_config(q, k, v, seq_lens=[10, 70], splits=4, block_n=64)
    assert config["tiling"]["splits"] == 4
    assert (config["problem"]["seq_k"], config["problem"]["seq_lens"]) == (70, [10, 70])
    assert RunConfig.from_dict(config).resolved().to_dict() == config
    windowed = flash_decode.run_config(q, k, v, seq_lens=[10, 70], window=100, splits=4, block_n=64)
    assert windowed["tiling"]["splits"] == 3 and windowed["problem"]["window"] == 100
    assert decode_plan_blocks(1000, 64, None) == 16
    assert decode_plan_blocks(1000, 64, 100) == 3 and decode_plan_blocks(1000, 64, 128) == 3
    assert decode_plan_blocks(100, 64, 1000) == 2


def test_module_reference_with_lengths_and_window_matches_float64():
    """The torch statement of the ragged split-and-combine is exact up to its fp32 arithmetic."""
    case = DECODE_SMALL[1][0]
    q, k, v = (x.double() for x in decode_inputs(case, 4, F16))
    out = flash_decode.reference(q, k, v, splits=3, block_n=32, seq_lens=case.seq_lens, window=case.window)
    torch.testing.assert_close(out, decode_reference(q, k, v, case.seq_lens, case.window), rtol=0, atol=1e-5)
    assert decode_split_blocks(decode_plan_blocks(130, 32, 45), 3) == (1, 3)


def test_ragged_decode_refuses_bad_lengths():
    case = Decode(4, 2, 1, 100, 16, (100, 3), None)
    q, k, v = decode_inputs(case, 2, F16)
    with pytest.raises(ValueError, match="seq_lens"):
        flash_decode.attention(q, k, v, seq_lens=[101, 3])
    with pytest.raises(ValueError, match="seq_lens"):
        flash_decode.attention(q, k, v, seq_lens=[0, 3])
    with pytest.raises(ValueError, match="seq_lens"):
        flash_decode.attention(q, k, v, seq_lens=[5])
    with pytest.raises(ValueError, match="int32"):
        flash_decode.attention(q, k, v, seq_lens=torch.tensor([100, 3], device=DEVICE))
    with pytest.raises(ValueError, match="window"):
        flash_decode.attention(q, k, v, window=0)
