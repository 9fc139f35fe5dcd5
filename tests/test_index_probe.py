"""The index probe's loop (iosim.kernels.index_probe) computes what the calibrated tile loop computes, on the CPU."""
from __future__ import annotations

import os

import pytest


def _env():
    torch = pytest.importorskip("torch")
    pytest.importorskip("triton")
    from iosim.kernels import index_probe

    return torch, "cpu" if os.environ.get("TRITON_INTERPRET") == "1" else "cuda", index_probe


def _visited(pid: int, iters: int, n: int) -> list[int]:
    return [(pid + i) % n for i in range(iters)]


def test_fixed_index_loop_sums_the_visited_tiles_products():
    torch, dev, ip = _env()
    g = torch.Generator().manual_seed(5)
    bm, bn, d, n_kv, ctas, iters = 16, 16, 32, 4, 3, 7  # 7 passes over 4 tiles from each CTA's own first
    q, k, v = (torch.randint(-2, 3, (r, d), generator=g).to(torch.float16).to(dev) for r in (bm, n_kv * bn, n_kv * bn))
    o = torch.full((ctas * bm, d), float("nan"), device=dev)
    ip.fixed_loop(q, k, v, o, bn=bn, ctas=ctas, iters=iters, warps=4, stages=2)
    tile = lambda x, j: x[j * bn:(j + 1) * bn].double().cpu()  # noqa: E731
    for pid in range(ctas):  # small integers: every product and sum exact in fp16 and fp32
        ref = sum((q.double().cpu() @ tile(k, j).T) @ tile(v, j) for j in _visited(pid, iters, n_kv))
        assert torch.equal(o[pid * bm:(pid + 1) * bm].double().cpu(), ref)


def test_fixed_index_loop_with_softmax_is_softmax_of_the_visited_tiles():
    torch, dev, ip = _env()
    g = torch.Generator().manual_seed(6)
    bm, bn, d, n_kv, ctas, iters = 16, 16, 32, 2, 2, 5
    q, k, v = (torch.randn(r, d, generator=g).to(torch.float16).to(dev) for r in (bm, n_kv * bn, n_kv * bn))
    o = torch.full((ctas * bm, d), float("nan"), device=dev)
    scale = d ** -0.5
    ip.fixed_loop(q, k, v, o, bn=bn, ctas=ctas, iters=iters, warps=4, stages=2, softmax=True,
                  qk_scale=scale * 1.4426950408889634)
    for pid in range(ctas):
        rows = torch.cat([torch.arange(j * bn, (j + 1) * bn) for j in _visited(pid, iters, n_kv)])
        kk, vv = k.double().cpu()[rows], v.double().cpu()[rows]
        ref = torch.softmax(q.double().cpu() @ kk.T * scale, dim=-1) @ vv
        err = (o[pid * bm:(pid + 1) * bm].double().cpu() - ref).abs().max()
        assert err <= 2**-11 * vv.abs().max()  # P rounded to fp16 before P V, as in the calibrated loop


def test_fixed_index_loop_refuses_a_tile_count_that_is_not_a_power_of_two():
    torch, dev, ip = _env()
    q = torch.zeros(16, 16, dtype=torch.float16, device=dev)
    k = torch.zeros(3 * 16, 16, dtype=torch.float16, device=dev)
    with pytest.raises(ValueError, match="power of two"):
        ip.fixed_loop(q, k, k, q, bn=16, ctas=1, iters=1, warps=4, stages=2)


def test_the_series_points_are_every_calibrated_tile_point_once():
    """``--series``: each (tile, warps, stages) of a profile's fp16 tile series once, with every CTA count any of
    its keys names, the plain and softmax keys merged; a key naming no stages is the two-stage loop's; other
    dtypes and keys without a value are not points."""
    from types import SimpleNamespace

    from iosim.kernels.index_probe import series_points

    raw = {"tile_occ_fp16_64x64x64w4_c1": 1.0, "tile_occ_fp16_64x64x64w4_c2": 2.0,
           "tile_softmax_fp16_64x64x64w4_c3": 3.0, "tile_occ_fp16_64x64x64w4s3_c1": 4.0,
           "tile_softmax_fp16_128x64x128w8s3_c1": 5.0, "tile_occ_fp8_128x64x128w4_c1": 6.0,
           "tile_occ_fp16_128x64x64w4_c2": None, "tile_occ_fp16_64x64x64w4_c1_ok_sms": 132}
    got = series_points(SimpleNamespace(calibration={"raw": raw}))
    assert got == ((64, 64, 64, 4, 2, (1, 2, 3)), (64, 64, 64, 4, 3, (1,)), (128, 64, 128, 8, 3, (1,)))
    assert series_points(SimpleNamespace(calibration=None)) == ()
