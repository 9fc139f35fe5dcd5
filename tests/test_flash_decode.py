"""Flash-decoding kernels (decode_split, decode_reduce) against a float64 reference, with their launches.

Shapes are ragged: the K/V length is a multiple of neither the block nor the split, and a group's
G·Nq query rows fill neither a 16-row tile nor (1, 8, 2, 3, 777, 16: 12 rows) a power of two. Without
CUDA the kernels run in the Triton interpreter (tests/conftest.py) with small K/V blocks; the ``gpu``
cases run the compiled kernels with the default tiling.

Tolerance, as in tests/test_kernels.py: max|x − ref| / max|ref| < TOL_UNITS · u, u the unit roundoff of
the input dtype (fp16 2^-11, bf16 2^-8), the reference in float64 from the same dtype-rounded inputs.
The roundings to the input dtype are P before the PV matmul and the stored O, each ≤ u; the split
partials and their combination are fp32 (2^-24, negligible). TOL_UNITS = 10.
"""
from __future__ import annotations

import math
import os
from typing import NamedTuple

import pytest
import torch
import triton

from iosim.kernels import flash_decode
from iosim.schedule.problem import RunConfig
from iosim.schedule.tiling import FLASH_DECODE, decode_rows, decode_split_blocks, decode_splits

DEVICE = "cpu" if os.environ.get("TRITON_INTERPRET") == "1" else "cuda"
UNIT_ROUNDOFF = {torch.float16: 2.0**-11, torch.bfloat16: 2.0**-8}
TOL_UNITS = 10
F16, BF16 = torch.float16, torch.bfloat16


class Case(NamedTuple):
    batch: int
    heads: int
    kv_heads: int
    seq_q: int
    seq_k: int
    head_dim: int


SMALL = [  # (block_n for the interpreter)
    (Case(2, 4, 4, 1, 1000, 64), 64),
    (Case(1, 8, 2, 3, 777, 16), 32),
    (Case(3, 4, 1, 1, 130, 32), 32),  # multi-query
    (Case(1, 4, 4, 16, 2049, 64), 64),  # 16 rows: a full tile; the last K/V block holds one row
]
BIG = [Case(4, 32, 8, 1, 8191, 128), Case(2, 16, 2, 4, 4097, 64), Case(1, 8, 1, 16, 30000, 128)]


def _cases():
    for n, (case, block_n) in enumerate(SMALL):
        for dtype in (F16, BF16):
            for splits in (None, 1, 3, 7):
                overrides = {"block_n": block_n} | ({} if splits is None else {"splits": splits})
                yield pytest.param(case, dtype, overrides, id=f"small{n}-{str(dtype)[6:]}-s{splits}")
    for n, case in enumerate(BIG):
        for splits in (None, 1, 5):
            yield pytest.param(case, BF16 if n % 2 else F16, {} if splits is None else {"splits": splits},
                               id=f"big{n}-s{splits}", marks=pytest.mark.gpu)


def inputs(case: Case, dtype, seed: int = 0):
    gen = torch.Generator(device=DEVICE).manual_seed(seed)

    def randn(*shape):
        return torch.randn(*shape, generator=gen, device=DEVICE).to(dtype)

    return (randn(case.batch, case.heads, case.seq_q, case.head_dim),
            randn(case.batch, case.kv_heads, case.seq_k, case.head_dim),
            randn(case.batch, case.kv_heads, case.seq_k, case.head_dim))


def reference(q, k, v):
    """softmax(QKᵀ/√d) V in float64, query head h reading kv head h // (H / Hkv)."""
    group = q.shape[1] // k.shape[1]
    k, v = k.double().repeat_interleave(group, 1), v.double().repeat_interleave(group, 1)
    return torch.softmax(q.double() @ k.transpose(-1, -2) / math.sqrt(q.shape[-1]), dim=-1) @ v


def relative_error(x, ref) -> float:
    return ((x.double() - ref).abs().max() / ref.abs().max()).item()


def launched_splits(case: Case, block_n: int, splits: int | None) -> int:
    """The splits that hold K/V blocks: those given, else FlashAttention-2's choice for this device."""
    n_blocks = triton.cdiv(case.seq_k, block_n)
    if splits is None:
        sms = (torch.cuda.get_device_properties(DEVICE).multi_processor_count if DEVICE == "cuda"
               else flash_decode.INTERPRETER_SMS)
        splits = decode_splits(case.batch * case.kv_heads, sms, n_blocks)
    return decode_split_blocks(n_blocks, splits)[1]


@pytest.mark.parametrize("case, dtype, overrides", list(_cases()))
def test_forward_matches_float64_and_launches_the_reported_splits(case, dtype, overrides):
    q, k, v = inputs(case, dtype)
    out = flash_decode.attention(q, k, v, **overrides)
    tol = TOL_UNITS * UNIT_ROUNDOFF[dtype]
    assert out.dtype == dtype and out.shape == q.shape
    err = relative_error(out, reference(q, k, v))
    assert err < tol, f"error {err:.2e} exceeds {tol:.2e}"

    config = flash_decode.run_config(q, k, v, **overrides)
    t = config["tiling"]
    block_n = overrides.get("block_n", FLASH_DECODE.block_n)
    used = launched_splits(case, block_n, overrides.get("splits"))
    block_m = decode_rows(case.heads // case.kv_heads, case.seq_q)
    assert (t["splits"], t["block_m"], t["block_n"]) == (used, block_m, block_n)
    want = [("decode_split", [used, case.batch * case.kv_heads, 1])]
    if used > 1:
        want.append(("decode_reduce", [case.batch * case.heads * case.seq_q, 1, 1]))
    assert [(rec["kernel"], rec["grid"]) for rec in flash_decode.LAUNCHES] == want
    split = flash_decode.LAUNCHES[0]
    assert (split["num_warps"], split["num_stages"]) == (t["warps"], t["stages"])
    assert split["constexprs"] | {"BM": block_m, "BN": block_n, "ONE": used == 1} == split["constexprs"]
    if used > 1:
        assert flash_decode.LAUNCHES[1]["constexprs"]["BS"] == triton.next_power_of_2(used)
    if DEVICE == "cuda":
        assert all(isinstance(rec["n_regs"], int) for rec in flash_decode.LAUNCHES)


def test_run_config_reports_the_splits_that_hold_blocks():
    """1000 rows in 64-row blocks are 16 blocks; 7 splits take 3 each, so only 6 splits hold any."""
    q, k, v = inputs(SMALL[0][0], F16)
    config = flash_decode.run_config(q, k, v, splits=7, block_n=64)
    assert config["tiling"] == {"block_m": 16, "block_n": 64, "warps": 4, "stages": 2, "grid_order": "rows",
                                "splits": 6}
    assert config["problem"]["seq_q"] == 1 and config["problem"]["seq_k"] == 1000
    assert RunConfig.from_dict(config).resolved().to_dict() == config  # the simulator takes it as is
    assert flash_decode.run_config(q, k, v, splits=7, block_m=64)["tiling"]["block_m"] == 64
    assert flash_decode.run_config(q, k, v, splits=100, block_n=64)["tiling"]["splits"] == 16  # one per block at most
    assert flash_decode.run_config(q, k, v, splits=100)["tiling"]["splits"] == 8  # 128-row blocks by default


def test_module_reference_matches_float64():
    """The torch statement of the split-and-combine is exact up to its fp32 arithmetic."""
    q, k, v = (x.double() for x in inputs(SMALL[1][0], F16))
    out = flash_decode.reference(q, k, v, splits=3, block_n=32)
    torch.testing.assert_close(out, reference(q, k, v), rtol=0, atol=1e-5)


def test_what_decode_does_not_do_is_refused():
    q, k, v = inputs(Case(1, 8, 2, 5, 40, 16), F16)  # a group holds 4 heads × 5 rows = 20 rows
    with pytest.raises(ValueError, match="causal"):
        flash_decode.attention(q, k, v, causal=True)
    with pytest.raises(ValueError, match="causal"):
        flash_decode.run_config(q, k, v, causal=True)
    with pytest.raises(ValueError, match="backward"):
        flash_decode.run_config(q, k, v, backward=True)
    with pytest.raises(ValueError, match="block_m.*needs >= 32, got 16"):
        flash_decode.attention(q, k, v, block_m=16)
    with pytest.raises(ValueError, match="splits"):
        flash_decode.attention(q, k, v, splits=0)
    with pytest.raises(ValueError, match="blocks"):
        flash_decode.run_config(q, k, v, blocks=2)


PAGED = [  # (case, page size, block_n): pages smaller than, equal to and larger than a K/V block
    (Case(2, 4, 2, 1, 1000, 16), 16, 32),
    (Case(1, 8, 2, 3, 777, 32), 64, 32),
    (Case(3, 4, 1, 1, 130, 16), 256, 64),
    (Case(1, 4, 4, 16, 300, 16), 32, 32),
]


@pytest.mark.parametrize("case, page, block_n", PAGED, ids=[f"paged{n}-p{p}" for n, (_, p, _) in enumerate(PAGED)])
@pytest.mark.parametrize("dtype", (F16, BF16), ids=("fp16", "bf16"))
def test_paged_cache_matches_float64(case, page, block_n, dtype):
    """A cache in pages of ``page`` tokens in a random order gives the contiguous answer; the last page is ragged."""
    q, k, v = inputs(case, dtype)
    k_pages, v_pages, table = flash_decode.to_pages(k, v, page)
    n = triton.cdiv(case.seq_k, page)
    assert table.shape == (case.batch, n) and sorted(table.flatten().tolist()) == list(range(case.batch * n))
    b, t = case.batch - 1, case.seq_k - 1  # the last token of the last sequence, where its page says
    assert torch.equal(k_pages[table[b, t // page], t % page], k[b, :, t])
    out = flash_decode.attention_paged(q, k_pages, v_pages, table, case.seq_k, block_n=block_n, splits=3)
    err = relative_error(out, reference(q, k, v))
    assert err < TOL_UNITS * UNIT_ROUNDOFF[dtype], f"error {err:.2e}"
    assert flash_decode.LAUNCHES[0]["kernel"] == "decode_split_paged"
    assert flash_decode.LAUNCHES[0]["constexprs"]["PAGE"] == page
    config = flash_decode.run_config(q, k, v, page_size=page, block_n=block_n, splits=3)
    assert config["problem"]["page_size"] == page and config["tiling"]["splits"] == flash_decode.LAUNCHES[0]["grid"][0]


@pytest.mark.gpu
def test_paged_cache_on_the_gpu():
    case = Case(4, 32, 8, 1, 8191, 128)
    q, k, v = inputs(case, F16)
    for page in (16, 256):
        out = flash_decode.attention_paged(q, *flash_decode.to_pages(k, v, page), case.seq_k)
        assert relative_error(out, reference(q, k, v)) < TOL_UNITS * UNIT_ROUNDOFF[F16]


def test_paged_pools_must_be_contiguous():
    q, k, v = inputs(PAGED[0][0], F16)
    k_pages, v_pages, table = flash_decode.to_pages(k, v, 16)
    with pytest.raises(ValueError, match="contiguous"):
        flash_decode.attention_paged(q, k_pages.transpose(1, 2), v_pages.transpose(1, 2), table, 1000)
