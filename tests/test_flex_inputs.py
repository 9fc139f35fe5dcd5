"""FlexAttention as the harness runs it beside our kernels (kernels/inputs.py), eagerly on the CPU against
a float64 reference: a decode on a paged cache (PyTorch's PagedAttention page table) with ragged
request lengths that are no multiple of the page, with and without a sliding window, and GQA."""
from __future__ import annotations

import math

import pytest

from iosim.kernels.inputs import _flex
from iosim.schedule.problem import Problem

torch = pytest.importorskip("torch")
pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")  # flex's eager path warns it is unfused


def _reference(q, k, v, lens, window):
    """Each request's query rows against its own first ``lens[b]`` keys (the last ``window`` of them), float64."""
    group = q.shape[1] // k.shape[1]
    out = []
    for b, n in enumerate(lens):
        lo = max(0, n - window) if window else 0
        kk = k[b, :, lo:n].double().repeat_interleave(group, 0)
        vv = v[b, :, lo:n].double().repeat_interleave(group, 0)
        s = q[b].double() @ kk.transpose(-1, -2) / math.sqrt(q.shape[-1])
        out.append(torch.softmax(s, -1) @ vv)
    return torch.stack(out)


@pytest.mark.parametrize(("lens", "page", "window"), [((200, 37, 130), 16, None), ((100, 64, 17), 64, 40),
                                                     ((256, 1), 256, None)])
def test_flex_decode_on_a_paged_cache_matches_float64(lens, page, window):
    p = Problem(batch=len(lens), heads=4, kv_heads=2, seq_q=1, seq_lens=lens, head_dim=64, page_size=page,
                window=window)
    gen = torch.Generator().manual_seed(0)
    q = torch.randn(p.batch, p.heads, 1, p.head_dim, generator=gen)
    k, v = (torch.randn(p.batch, p.kv_heads, max(lens), p.head_dim, generator=gen) for _ in range(2))
    flex = _flex(torch, p, compiled=False)
    out = flex(q, k, v)
    torch.testing.assert_close(out.double(), _reference(q, k, v, lens, window), rtol=1e-5, atol=1e-5)
    again = flex(q, k, v)  # the cache and its page table are built once, on the first call
    assert torch.equal(again, out)
