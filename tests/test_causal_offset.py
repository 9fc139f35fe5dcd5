"""Causal attention with different query and key lengths: the diagonal top-left (PyTorch's is_causal) or
bottom-right (FlashAttention-2 from 2.1, a chunked prefill). The kernels' bytes with no cache against counts
made pair by pair from the mask itself (a tile pair is visited exactly when one of its queries sees one of its
keys), FLOPs against the mask's pairs, the closed forms, and the option that sets it."""
from __future__ import annotations

import json

import numpy as np
import pytest
from click.testing import CliRunner

from iosim.cli import main
from iosim.costs import closed_forms
from iosim.schedule.problem import ConfigError, Problem, RunConfig, Tiling
from iosim.simulate import simulate

# (seq_q, seq_k): keys beyond the queries (a prefix), fewer keys than queries, ragged against every tile
SHAPES = [(96, 320), (200, 72), (130, 130), (37, 301)]
ALIGNS = ["top-left", "bottom-right"]
TILE = Tiling(block_m=32, block_n=16)


def config(nq, nk, align, algo="flash2", backward=False, tiling=TILE):
    return RunConfig(algo=algo, mode="ncu", tiling=tiling, backward_tiling=Tiling(block_m=16, block_n=32),
                     problem=Problem(batch=2, heads=4, kv_heads=2, seq_q=nq, seq_k=nk, head_dim=32, causal=True,
                                     causal_align=align, backward=backward))


def mask(p: Problem, rows: int | None = None) -> np.ndarray:
    """Which key each query row sees: the diagonal where the alignment puts it; ``rows`` query rows (default
    seq_q: a tile's padding rows beyond seq_q see keys too, as Triton kernels bound their loop by the tile's
    last row, ``hi = (i + 1)·BM + offset``, clipped at the keys only)."""
    shift = p.seq_k - p.seq_q if p.causal_align == "bottom-right" else 0
    return np.arange(p.seq_k)[None, :] <= np.arange(rows or p.seq_q)[:, None] + shift


def visited(seen: np.ndarray, rows: int, cols: int) -> np.ndarray:
    """Tile pairs (row block, column block) holding at least one seen pair."""
    nr, nc = -(-seen.shape[0] // rows), -(-seen.shape[1] // cols)
    out = np.zeros((nr, nc), dtype=bool)
    for a in range(nr):
        for b in range(nc):
            out[a, b] = seen[a * rows:(a + 1) * rows, b * cols:(b + 1) * cols].any()
    return out


def span(block: int, size: int, n: int) -> int:
    return min(n, (block + 1) * size) - block * size


@pytest.mark.parametrize("align", ALIGNS)
@pytest.mark.parametrize("nq, nk", SHAPES)
def test_forward_without_l2_reads_the_key_blocks_its_queries_see(nq, nk, align):
    c = config(nq, nk, align)
    p, bm, bn = c.problem, c.tiling.block_m, c.tiling.block_n
    seen = visited(mask(p, -(-nq // bm) * bm), bm, bn)  # the last Q tile's padding rows bound its loop
    kv_rows = sum(span(b, bn, nk) for a in range(seen.shape[0]) for b in np.nonzero(seen[a])[0])
    e, d = p.elem_bytes, p.head_dim
    read = p.bh * (nq * d * e + 2 * kv_rows * d * e)
    write = p.bh * nq * (d * e + 4)  # O and the fp32 logsumexp
    hbm = simulate(c, "h100-sxm", l2_bytes=0).levels["hbm"]
    assert (hbm.read_bytes, hbm.write_bytes) == (read, write)
    assert closed_forms.no_cache_bytes(c) == {"read": read, "write": write}


@pytest.mark.parametrize("align", ALIGNS)
@pytest.mark.parametrize("nq, nk", SHAPES)
def test_backward_without_l2_reads_the_query_blocks_that_see_each_key_block(nq, nk, align):
    """The K/V-outer backward: each K/V block re-reads Q, dO, LSE, D and adds into dQ for every Q block from the
    first whose rows see one of its keys; the mask is monotone, so those are all the blocks holding a seen pair."""
    c = config(nq, nk, align, backward=True)
    p, t = c.problem, c.backward_tiling
    bm, bn, e, d = t.block_m, t.block_n, p.elem_bytes, p.head_dim
    seen = visited(mask(p).T, bn, bm)  # K/V blocks by Q blocks
    q_rows = sum(span(a, bm, nq) for b in range(seen.shape[0]) for a in np.nonzero(seen[b])[0])
    read = p.bh * (2 * nk * d * e + q_rows * (2 * d * e + 2 * 4 + d * 4))  # K, V; Q, dO, LSE, D, dQ read
    r = simulate(c, "h100-sxm", l2_bytes=0)
    bwd = next(k for k in r.kernels if k.name == "flash2_bwd")
    assert bwd.levels["hbm"].read_bytes == read
    assert closed_forms.no_cache_bytes(c)["read"] == sum(k.levels["hbm"].read_bytes for k in r.kernels)


@pytest.mark.parametrize("align", ALIGNS)
@pytest.mark.parametrize("nq, nk", SHAPES[:2])
def test_flash1_without_l2_revisits_the_query_blocks_that_see_each_key_block(nq, nk, align):
    c = config(nq, nk, align, algo="flash1")
    r = simulate(c, "h100-sxm", l2_bytes=0)
    assert closed_forms.no_cache_bytes(c) == {"read": r.levels["hbm"].read_bytes, "write": r.levels["hbm"].write_bytes}
    p, bm, bn = c.problem, c.tiling.block_m, c.tiling.block_n
    seen = visited(mask(p).T, bn, bm)
    q_rows = sum(span(a, bm, nq) for b in range(seen.shape[0]) for a in np.nonzero(seen[b])[0])
    main_kernel = next(k for k in r.kernels if k.name == "flash1_fwd")
    e, d = p.elem_bytes, p.head_dim
    assert main_kernel.levels["hbm"].read_bytes == p.bh * (2 * nk * d * e + q_rows * (d * e + d * 4 + 2 * 4))


@pytest.mark.parametrize("align", ALIGNS)
@pytest.mark.parametrize("nq, nk", SHAPES)
def test_flops_count_the_area_the_mask_keeps(nq, nk, align):
    """The papers' convention counts the area under the diagonal (N²/2 at equal lengths): within half a pair a
    query row of the pairs the mask keeps, and at equal lengths N²/2 whichever the alignment."""
    p = config(nq, nk, align, backward=True).problem
    pairs = p.flops() / (4.0 * p.heads * p.head_dim * p.batch * 3.5)
    assert abs(pairs - mask(p).sum()) <= nq / 2
    if nq == nk:
        assert pairs == nq * nq / 2


def test_alignment_changes_nothing_at_equal_lengths():
    a, b = (simulate(config(130, 130, x, backward=True), "h100-sxm") for x in ALIGNS)
    assert a.levels["hbm"].total == b.levels["hbm"].total and a.time_s == b.time_s


def test_a_chunk_after_a_long_prefix_reads_the_whole_prefix_bottom_right_and_only_its_own_rows_top_left():
    """With an unbounded L2, what is read is what is needed: bottom-right the chunk sees every key; top-left
    only the first Nq keys."""
    runs = {x: simulate(config(64, 512, x), "h100-sxm", l2_bytes=1 << 40).levels["hbm"].read_bytes for x in ALIGNS}
    q = 2 * 4 * 64 * 32 * 2
    kv = 2 * 2 * 2 * 32 * 2  # K and V rows of both kv heads of both batch items, per key
    assert runs["bottom-right"] == q + 512 * kv and runs["top-left"] == q + 64 * kv


def test_sdpa_and_windows_refuse_it():
    with pytest.raises(ConfigError, match="seq_k: sdpa_cudnn is modelled causal with seq_k == seq_q"):
        simulate(RunConfig(impl="sdpa_cudnn", problem=Problem(seq_q=1024, seq_k=2048, causal=True, head_dim=64)), "h200")
    with pytest.raises(ConfigError, match="causal_align: must be one of top-left, bottom-right"):
        Problem(causal=True, causal_align="centre")


def test_the_option_sets_it_and_the_table_says_where_the_diagonal_is():
    args = ["simulate", "--gpu", "h100", "--algo", "flash2", "--seq-len", "1k", "--seq-k", "4k", "--causal", "--json"]
    out = {}
    for align in ALIGNS:
        r = CliRunner().invoke(main, args + ["--causal-align", align])
        assert r.exit_code == 0, r.output
        run = json.loads(r.output)[0]
        out[align] = run["levels"]["hbm"]["read_bytes"]
        assert run["config"]["problem"].get("causal_align", "top-left") == align
    assert out["bottom-right"] > 2 * out["top-left"]
    table = CliRunner().invoke(main, args[:-1] + ["--causal-align", "bottom-right"])
    assert "bottom-right" in table.output
    csv = CliRunner().invoke(main, args[:-1] + ["--causal-align", "bottom-right", "--csv"]).output.splitlines()
    assert dict(zip(csv[0].split(","), csv[1].split(",")))["causal_align"] == "bottom-right"


def test_our_kernels_are_measured_top_left_only():
    """iosim's Triton kernels bound their loops by the top-left diagonal: a bottom-right case of theirs is refused before
    it runs (a kernel of one's own is measured either way)."""
    from iosim.kernels.cases import CaseSpec, kernel_case

    with pytest.raises(ConfigError, match="causal_align: iosim's kernels put a causal diagonal top-left"):
        CaseSpec("flash2", Problem(seq_q=512, seq_k=2048, causal=True, causal_align="bottom-right"))
    CaseSpec("flash2", Problem(seq_q=512, seq_k=2048, causal=True))  # top-left: theirs
    kernel_case("experiments/foreign_kernels/F1_exp_maskall.py:attention", "flash2", "fwd", seq_q=512, seq_k=2048,
                causal=True, causal_align="bottom-right")


def _masked_attention(shift_of):
    """A stand-in for a user's kernel in plain torch: softmax attention whose row i sees keys j <= i + shift_of(Nq, Nk)."""
    import torch

    def fn(q, k, v, causal=False, sm_scale=None):
        g = q.shape[1] // k.shape[1]
        k, v = k.float().repeat_interleave(g, 1), v.float().repeat_interleave(g, 1)
        s = q.float() @ k.transpose(-1, -2) / q.shape[-1] ** 0.5
        nq, nk = q.shape[2], k.shape[2]
        if causal:
            seen = torch.arange(nk)[None, :] <= torch.arange(nq)[:, None] + shift_of(nq, nk)
            s = s.masked_fill(~seen, float("-inf"))
        return (torch.softmax(s, -1) @ v).to(q.dtype)
    return fn


@pytest.mark.parametrize("shift_of, expected", [(lambda nq, nk: 0, "top-left"), (lambda nq, nk: nk - nq, "bottom-right"),
                                               (lambda nq, nk: nk, None), (lambda nq, nk: 5, None)])
def test_a_kernels_alignment_is_told_from_its_output(shift_of, expected):
    """The probe compares the kernel's output with each mask's float64 reference: a mask that is neither (none, or
    shifted elsewhere) is told as such."""
    pytest.importorskip("torch")
    from iosim.kernels.causal_align import choose, errors

    for group in (1, 2):
        assert choose(errors(_masked_attention(shift_of), 32, group, "cpu")) == expected


def test_simulate_finds_a_triton_kernels_alignment_and_says_so():
    """F2 (a foreign kernel) puts its diagonal top-left: without --causal-align, iosim runs the kernel small (Triton's
    interpreter here), says what it found and simulates that; given, the option wins unasked."""
    pytest.importorskip("triton")
    from pathlib import Path

    ref = "experiments/foreign_kernels/F2_exp2_masksplit.py:attention"  # top-left, committed
    assert Path(ref.split(":")[0]).exists()
    args = ["simulate", "--gpu", "h200", "--kernel", ref, "--seq-len", "256", "--seq-k", "640", "--causal", "-d", "64",
            "--heads", "2", "-b", "1", "--json"]
    r = CliRunner().invoke(main, args)
    assert r.exit_code == 0, r.output
    assert "puts its causal diagonal top-left" in r.stderr
    assert json.loads(r.stdout)[0]["config"]["problem"].get("causal_align", "top-left") == "top-left"
    r = CliRunner().invoke(main, args + ["--causal-align", "bottom-right"])
    assert "causal diagonal" not in r.stderr
    assert json.loads(r.stdout)[0]["config"]["problem"]["causal_align"] == "bottom-right"


def test_a_multi_token_decode_is_causal_bottom_right_and_reads_the_whole_cache():
    """Speculative decoding's check: 4 query rows against a cache, the diagonal bottom-right. The last row sees every
    key and a CTA holds all its group's rows, so the kernels move what they move without the mask; the FLOPs count
    the pairs the mask keeps. Top-left (rows would see the cache's first keys) and a prefill's lengths are refused."""
    def decode(**kw):
        return RunConfig(algo="flash_decode", mode="ncu", problem=Problem(batch=2, heads=8, kv_heads=2, seq_q=4,
                                                                          seq_k=3000, head_dim=64, **kw))
    masked, plain = (simulate(decode(**kw), "h200") for kw in ({"causal": True, "causal_align": "bottom-right"}, {}))
    assert masked.levels["hbm"].total == plain.levels["hbm"].total and masked.time_s == plain.time_s
    p = decode(causal=True, causal_align="bottom-right").problem
    assert p.flops() < decode().problem.flops() and abs(p.flops() / (4 * 8 * 64 * 2) - mask(p).sum()) <= 4 / 2
    for kw in ({"causal": True}, {"causal": True, "causal_align": "bottom-right", "seq_lens": (3000, 100)}):
        with pytest.raises(ConfigError, match="causal: flash_decode is modelled causal only as a multi-token decode"):
            simulate(decode(**kw), "h200")


def test_a_kernel_that_masks_every_block_is_found_and_simulated_so():
    """tests/data/user_kernel_noskip.py visits every K/V block causal or not (masking each): the probe counts its tile
    products under the interpreter (as many causal as without the mask, where F1 issues 5/8 of them), and iosim then
    simulates its causal run moving what its non-causal run moves, with a note."""
    pytest.importorskip("triton")
    from iosim.kernels.causal_align import probe

    assert probe("tests/data/user_kernel_noskip.py:attention", 32, 2, align=False)["skips"] is False
    assert probe("experiments/foreign_kernels/F1_exp_maskall.py:attention", 32, 1, align=False)["skips"] is True
    args = ["simulate", "--gpu", "h200", "--kernel", "tests/data/user_kernel_noskip.py:attention", "--seq-len", "512",
            "-d", "32", "--heads", "2", "-b", "1", "--json"]
    causal, plain = (CliRunner().invoke(main, args + extra) for extra in (["--causal"], []))
    assert causal.exit_code == 0, causal.output
    assert "visits every block under its causal mask" in causal.stderr
    run, full = json.loads(causal.stdout)[0], json.loads(plain.stdout)[0]
    assert run["config"]["skips_masked"] is False and run["config"]["problem"]["causal"]
    assert run["levels"]["l2"] == full["levels"]["l2"]


def test_visiting_every_block_is_a_users_flash2_kernels_and_round_trips():
    from iosim.kernels.cases import CaseSpec, kernel_case

    c = RunConfig(problem=Problem(causal=True), skips_masked=False)
    assert RunConfig.from_dict(c.to_dict()) == c and "skips_masked" not in RunConfig().to_dict()
    with pytest.raises(ConfigError, match="skips_masked: False is a user's kernel's"):
        RunConfig(algo="flash1", skips_masked=False)
    spec = kernel_case("tests/data/user_kernel_noskip.py:attention", "flash2", "fwd", False, causal=True)
    assert spec.run_config()["skips_masked"] is False
    assert CaseSpec.from_json(json.loads(json.dumps(spec.to_json()))) == spec


def test_the_probes_interpreter_takes_a_one_element_tensor_as_an_index(monkeypatch):
    """Triton 3.6's interpreter int()s a tensor used as an index, which NumPy 2 refuses unless it is 0-dimensional
    (a one-dimensional block pointer's shape, ``range(tl.cdiv(...))``): the probe's child process shims it so such a
    kernel is probed, not assumed to skip; a one-element array of any shape then indexes as its value."""
    pytest.importorskip("triton")
    from triton.runtime import interpreter

    from iosim.kernels.causal_align import _scalar_index
    monkeypatch.setattr(interpreter, "_patch_lang_tensor", interpreter._patch_lang_tensor)  # restored after the test

    class Scope:
        def __init__(self):
            self.attrs = {}

        def set_attr(self, obj, name, value):
            self.attrs[name] = value

    _scalar_index()
    shimmed = interpreter._patch_lang_tensor
    _scalar_index()
    assert interpreter._patch_lang_tensor is shimmed  # once only
    scope = Scope()
    interpreter._patch_lang_tensor(type("T", (), {}), scope)
    index = scope.attrs["__index__"]
    for data in (np.array(7), np.array([7]), np.array([[7]])):
        assert index(type("X", (), {"handle": type("H", (), {"data": data})()})()) == 7
