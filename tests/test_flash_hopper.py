"""The Hopper forward (TMA tensor descriptors) against float64, fp16/bf16 and fp8, on ragged shapes.

Without CUDA the kernel runs in the Triton interpreter (tensor descriptors included) on small shapes
and blocks; the ``gpu`` cases run it compiled with its default tiles. fp16/bf16: as in
tests/test_kernels.py, max|O − ref| ≤ 10 u · max|ref| (u the input dtype's unit roundoff). fp8: the
reference takes the dequantised inputs, so the kernel's error is its rounding of P (in [0, 1]) to
e4m3 before P V: at most 2⁻⁴ relative for normal values and 2⁻¹⁰ absolute below e4m3's smallest
normal (2⁻⁶), so |O − ref| ≤ (2⁻⁴ + Nk · 2⁻¹⁰) · max|V| (the softmax denominator is ≥ 1), plus O's own
rounding to fp16.
Backward: dQ, dK, dV against float64 autograd of the reference, max|g − ref| ≤ 20 u · max|ref| (P and dS
are rounded to the input dtype before their products, as in every FlashAttention backward).
"""
from __future__ import annotations

import math
import os

import pytest
import torch

from iosim.kernels import flash_hopper as fh

DEVICE = "cpu" if os.environ.get("TRITON_INTERPRET") == "1" else "cuda"
UNIT = {torch.float16: 2.0**-11, torch.bfloat16: 2.0**-8}

# (batch, heads, kv_heads, N, d, causal, dtype, tiles): N never a multiple of the blocks
SMALL = [(1, 2, 1, 200, 64, True, torch.float16, {"block_m": 64, "block_n": 32}),
         (2, 2, 2, 77, 64, False, torch.bfloat16, {"block_m": 32, "block_n": 64}),
         (1, 4, 2, 150, 128, True, torch.float16, {"block_m": 64, "block_n": 32})]
BIG = [pytest.param(2, 8, 2, 1000, 128, True, torch.float16, {}, marks=pytest.mark.gpu),
       pytest.param(1, 8, 8, 3000, 64, False, torch.bfloat16, {}, marks=pytest.mark.gpu)]


def reference(q, k, v, causal):
    """softmax(QKᵀ/√d [+ causal mask]) V and the LSE in float64, GQA by repeating K/V heads."""
    group = q.shape[1] // k.shape[1]
    k, v = (t.double().repeat_interleave(group, 1) for t in (k, v))
    s = q.double() @ k.transpose(-1, -2) / math.sqrt(q.shape[-1])
    if causal:
        s = s.masked_fill(torch.ones(s.shape[-2:], dtype=torch.bool, device=s.device).triu(1), float("-inf"))
    return torch.softmax(s, -1) @ v, torch.logsumexp(s, -1)


def _inputs(batch, heads, kv_heads, n, d, dtype=torch.float32, seed=0):
    g = torch.Generator(device="cpu").manual_seed(seed)
    return [torch.randn(shape, generator=g).to(DEVICE, dtype)
            for shape in ((batch, heads, n, d), (batch, kv_heads, n, d), (batch, kv_heads, n, d))]


@pytest.mark.parametrize("batch, heads, kv_heads, n, d, causal, dtype, tiles", SMALL + BIG)
def test_forward_matches_float64(batch, heads, kv_heads, n, d, causal, dtype, tiles):
    q, k, v = _inputs(batch, heads, kv_heads, n, d, dtype)
    o, lse = fh.attention(q, k, v, causal, **tiles)
    ref, ref_lse = reference(q, k, v, causal)
    assert o.dtype == dtype and o.shape == q.shape and lse.shape == q.shape[:3]
    assert (o.double() - ref).abs().max() <= 10 * UNIT[dtype] * ref.abs().max()
    assert (lse.double() - ref_lse).abs().max() <= 1e-4 * ref_lse.abs().max()


@pytest.mark.parametrize("batch, heads, kv_heads, n, d, causal, tiles", [
    (1, 2, 1, 150, 64, True, {"block_m": 64, "block_n": 32}),
    (1, 2, 2, 77, 128, False, {"block_m": 32, "block_n": 64}),
    pytest.param(2, 8, 2, 1000, 128, True, {}, marks=pytest.mark.gpu)])
def test_fp8_forward_within_e4m3s_rounding_of_p(batch, heads, kv_heads, n, d, causal, tiles):
    q, k, v = _inputs(batch, heads, kv_heads, n, d)
    (q8, qs), (k8, ks), (v8, vs) = fh.quantize(q), fh.quantize(k), fh.quantize(v, transpose=True)
    assert v8.shape == (batch, kv_heads, d, n) and v8.stride(-2) % 16 == 0
    o, lse = fh.attention(q8, k8, v8, causal, scales=(qs, ks, vs), **tiles)
    dq, dk, dv = q8.double() * qs, k8.double() * ks, v8.double().transpose(-1, -2) * vs
    ref, ref_lse = reference(dq, dk, dv, causal)
    bound = (2.0**-4 + n * 2.0**-10) * dv.abs().max() + UNIT[torch.float16] * ref.abs().max()
    assert o.dtype == torch.float16 and (o.double() - ref).abs().max() <= bound
    assert (lse.double() - ref_lse).abs().max() <= 1e-4 * ref_lse.abs().max()  # S is exact in fp32


@pytest.mark.parametrize("n, causal", [(150, True), pytest.param(1000, False, marks=pytest.mark.gpu)])
def test_fp8_entry_on_the_harness_inputs(n, causal):
    """``fwd_fp8`` (what ``iosim measure --dtype fp8`` times) on the inputs the harness makes
    (``fp8_inputs``: e4m3 casts, V transposed, rows padded): unit scales, the same bound as above."""
    from iosim.kernels._common import fp8_inputs

    q, k, v = _inputs(1, 2, 1, n, 64)
    q8, k8, v8 = fp8_inputs(q, k, v)
    assert v8.dtype == torch.float8_e4m3fn and v8.shape == (1, 1, 64, n) and v8.stride(-2) % 16 == 0
    o = fh.fwd_fp8(q8, k8, v8, causal)
    dq, dk, dv = q8.double(), k8.double(), v8.double().transpose(-1, -2)
    ref, _ = reference(dq, dk, dv, causal)
    bound = (2.0**-4 + n * 2.0**-10) * dv.abs().max() + UNIT[torch.float16] * ref.abs().max()
    assert o.dtype == torch.float16 and (o.double() - ref).abs().max() <= bound


def test_bad_inputs_are_refused_with_the_field():
    q, k, v = _inputs(1, 2, 2, 80, 64, torch.float16)
    with pytest.raises(ValueError, match="head_dim"):
        fh.attention(q[..., :48].contiguous(), k[..., :48].contiguous(), v[..., :48].contiguous())
    (q8, qs), (k8, ks), (v8, vs) = fh.quantize(q), fh.quantize(k), fh.quantize(v, transpose=True)
    with pytest.raises(ValueError, match="scales"):
        fh.attention(q8, k8, v8)
    with pytest.raises(ValueError, match="v shape"):  # V not transposed
        fh.attention(q8, k8, fh.quantize(v)[0], scales=(qs, ks, vs))
    with pytest.raises(ValueError, match="transposed"):  # transposed but rows not 16-byte aligned
        odd = v8.new_zeros((1, 2, 64, 81))[..., :80]
        fh.attention(q8, k8, odd, scales=(qs, ks, vs))


# backward cases: (batch, heads, kv_heads, N, d, causal, dtype, tiles), N never a multiple of the blocks
BWD_SMALL = [(1, 2, 1, 150, 64, True, torch.float16, {"block_m": 32, "block_n": 64}),
             (2, 2, 2, 77, 64, False, torch.bfloat16, {"block_m": 32, "block_n": 32}),
             (1, 4, 2, 100, 128, True, torch.float16, {"block_m": 64, "block_n": 32})]
BWD_BIG = [pytest.param(2, 8, 2, 1000, 128, True, torch.float16, {}, marks=pytest.mark.gpu),
           pytest.param(1, 8, 8, 3000, 64, False, torch.bfloat16, {}, marks=pytest.mark.gpu),
           pytest.param(1, 8, 4, 1000, 128, False, torch.float16, {"dq_tma": True}, marks=pytest.mark.gpu),
           pytest.param(1, 4, 4, 777, 128, True, torch.bfloat16, {"dq_tma": True}, marks=pytest.mark.gpu)]


@pytest.mark.parametrize("batch, heads, kv_heads, n, d, causal, dtype, tiles", BWD_SMALL + BWD_BIG)
def test_backward_matches_float64(batch, heads, kv_heads, n, d, causal, dtype, tiles):
    q, k, v = (t.requires_grad_() for t in _inputs(batch, heads, kv_heads, n, d, dtype))
    do = _inputs(batch, heads, heads, n, d, dtype, seed=1)[0]
    o = fh.fwd(q, k, v, causal, **tiles)
    grads = torch.autograd.grad(o, (q, k, v), do)
    leaves = [t.detach().double().requires_grad_() for t in (q, k, v)]
    ref, _ = reference(*leaves, causal)
    refs = torch.autograd.grad(ref, leaves, do.double())
    assert [r["kernel"] for r in fh.LAUNCHES] == ["hopper_fwd", "flash2_bwd_pre", "hopper_bwd"]
    for g, r, t in zip(grads, refs, (q, k, v)):
        assert g.dtype == dtype and g.shape == t.shape
        assert (g.double() - r).abs().max() <= 20 * UNIT[dtype] * r.abs().max()


def _bench_kernels():
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "experiments" / "bench_kernels.py"
    spec = importlib.util.spec_from_file_location("bench_kernels", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_bench_kernels_reads_the_hopper_tiles_and_refuses_bad_ones(capsys):
    import argparse

    bench = _bench_kernels()
    assert bench.tiles_arg("128x64x8x3ws") == {"block_m": 128, "block_n": 64, "warps": 8, "stages": 3,
                                               "warp_specialize": True}
    assert bench.bwd_tiles_arg("64x128x8x2TMA") == {"block_m": 64, "block_n": 128, "warps": 8, "stages": 2,
                                                    "dq_tma": True}
    assert bench._tiles_label(bench.bwd_tiles_arg("64x128x8x3")) == "64x128x8x3"
    for bad in ("64x128x8", "64x128x8x2ws"):
        with pytest.raises(argparse.ArgumentTypeError, match="BMxBNxWARPSxSTAGES"):
            bench.bwd_tiles_arg(bad)
    if DEVICE == "cpu":  # no GPU: one line naming why, exit status 2, no traceback
        assert bench.main(["--seq", "256", "--head-dim", "64", "128", "--causal", "both"]) == 2
        err = capsys.readouterr().err
        assert err.startswith("bench_kernels: ") and len(err.strip().splitlines()) == 1
