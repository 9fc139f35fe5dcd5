"""The pair probe (iosim.kernels.pair_probe): its groups of CTAs read the tile sequences it says, and its loop computes
FlashAttention-2's softmax over them, on the CPU against float64."""
from __future__ import annotations

import math
import os

import pytest

from iosim.kernels.pair_probe import SHAPES, VARIANTS, WAVES, layout


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("per_sm", sorted({s[5] for s in SHAPES}))
def test_each_variant_keeps_its_work_and_its_wave(variant, per_sm):
    """One wave is a shape's CTAs an SM; the many-wave variant WAVES times the CTAs at a WAVES-th of the passes."""
    ctas, passes, group, partner = layout(variant, 512, 132, per_sm)
    assert ctas * passes == per_sm * 132 * 512
    assert (ctas == WAVES * per_sm * 132) == variant.endswith("waves")
    assert (partner == ctas // 2) == (variant == "far2") and group >= 1


@pytest.mark.parametrize("group,partner", [(1, 0), (2, 0), (4, 0), (1, 4)])
def test_the_loop_is_attention_over_its_groups_sequence(group, partner):
    """CTA pid's output is softmax(q kᵀ/√d) v over tiles (c + i) mod N_KV, i < ITERS, c = pid // group (or pid mod
    partner), in float64; a sequence wraps past the last tile; CTAs of one group get the same output."""
    torch = pytest.importorskip("torch")
    pytest.importorskip("triton")
    from iosim.kernels.pair_probe import _kernel

    device = "cpu" if os.environ.get("TRITON_INTERPRET") == "1" else "cuda"
    bm, bn, d, n_kv, iters, ctas = 16, 16, 16, 5, 7, 8
    gen = torch.Generator().manual_seed(3)
    q, k, v = (torch.randn(s, generator=gen).to(device=device, dtype=torch.float16)
               for s in ((bm, d), (n_kv * bn, d), (n_kv * bn, d)))
    o = torch.empty(ctas * bm, d, dtype=torch.float32, device=device)
    stamps = torch.empty(1, dtype=torch.int64, device=device)
    _kernel()[(ctas,)](q, k, v, o, stamps, n_kv, 1.4426950408889634 / math.sqrt(d), group, partner, ITERS=iters,
                       BM=bm, BN=bn, D=d, num_warps=4, num_stages=2)
    kt, vt = k.double().view(n_kv, bn, d), v.double().view(n_kv, bn, d)
    outs = []
    for pid in range(ctas):
        c = pid % partner if partner else pid // group
        seq = [(c + i) % n_kv for i in range(iters)]
        ks, vs = torch.cat([kt[j] for j in seq]), torch.cat([vt[j] for j in seq])
        ref = torch.softmax(q.double() @ ks.T / math.sqrt(d), -1) @ vs
        got = o[pid * bm:(pid + 1) * bm].double()
        torch.testing.assert_close(got, ref, atol=2e-2, rtol=2e-2)
        outs.append(got)
    same = [(a, b) for a in range(ctas) for b in range(a + 1, ctas)
            if (a % partner == b % partner if partner else a // group == b // group)]
    assert same or group == 1 and not partner
    for a, b in same:
        assert torch.equal(outs[a], outs[b])
