"""Flash-decoding (split-KV) in the simulator: its schedule against closed forms in the two limits
(no L2: every CTA fetches its own tiles; an unbounded L2: each input once), FlashAttention-2's split
heuristic, aggregated against per-CTA runs, and the CLI's decode options."""
from __future__ import annotations

import itertools
import json
from dataclasses import replace

import pytest
from click.testing import CliRunner

from iosim.cli import main
from iosim.costs import closed_forms
from iosim.schedule.build import build_schedule
from iosim.schedule.problem import ConfigError, Problem, RunConfig, Tiling
from iosim.schedule.tiling import decode_rows, decode_split_blocks, decode_splits
from iosim.simulate import simulate

UNBOUNDED = 1 << 40


def decode(batch=2, heads=8, kv_heads=2, seq_q=1, seq_k=1000, head_dim=32, splits=None, block_n=64, mode="ncu"):
    return RunConfig(algo="flash_decode", mode=mode, tiling=Tiling(block_n=block_n, splits=splits),
                     problem=Problem(batch=batch, heads=heads, kv_heads=kv_heads, seq_q=seq_q, seq_k=seq_k,
                                     head_dim=head_dim))


CASES = [decode(kv_heads=kvh, seq_q=nq, seq_k=nk, splits=sp)
         for kvh, nq, nk, sp in itertools.product((8, 2, 1), (1, 3), (1000, 4096), (1, 3, 7))]


def sizes(c: RunConfig):
    p = c.problem
    used = decode_split_blocks(-(-p.seq_k // c.tiling.block_n), c.tiling.splits)[1]
    e = p.elem_bytes
    q = p.bh * p.seq_q * p.head_dim * e
    kv = 2 * p.bh_kv * p.seq_k * p.head_dim * e
    partials = p.bh * p.seq_q * used * (p.head_dim + 1) * 4 if used > 1 else 0  # fp32 O and logsumexp per split
    return used, q, kv, partials


@pytest.mark.parametrize("config", CASES, ids=lambda c: f"kv{c.problem.kv_heads}-q{c.problem.seq_q}-"
                         f"k{c.problem.seq_k}-s{c.tiling.splits}")
def test_no_l2_is_every_tile_fetched(config):
    """Without an L2 each split CTA reads the group's queries and its K/V share; partials go out and come back once."""
    used, q, kv, partials = sizes(config)
    hbm = simulate(config, "h100-sxm", l2_bytes=0).levels["hbm"]
    assert hbm.read_bytes == used * q + kv + partials
    assert hbm.write_bytes == q + partials  # O is Q's size
    assert closed_forms.no_cache_bytes(config) == {"read": hbm.read_bytes, "write": hbm.write_bytes}


@pytest.mark.parametrize("config", CASES[::3], ids=lambda c: f"kv{c.problem.kv_heads}-q{c.problem.seq_q}-"
                         f"k{c.problem.seq_k}-s{c.tiling.splits}")
def test_unbounded_l2_reads_each_input_once(config):
    _, q, kv, _ = sizes(config)
    r = simulate(config, "h100-sxm", l2_bytes=UNBOUNDED)
    assert r.levels["hbm"].read_bytes == q + kv
    assert r.levels["l2"].read_bytes >= q + kv  # every byte an SM asked for went through the L2


@pytest.mark.parametrize("config", [decode(kv_heads=2, seq_q=2, seq_k=3000, splits=s, mode="plain") for s in (1, 5)]
                         + [decode(batch=4, heads=16, kv_heads=4, seq_k=2000, mode="plain")])
def test_aggregated_equals_per_cta(config):
    """Issue 9's bar: bytes within 0.5 % at every level and time within 2 %, with an L2 small enough to evict."""
    a = simulate(config, "h100-sxm", l2_bytes=2_000_000)
    b = simulate(config, "h100-sxm", l2_bytes=2_000_000, aggregate=False)
    for lv, t in b.levels.items():
        assert a.levels[lv].total == pytest.approx(t.total, rel=0.005), lv
    assert a.time_s == pytest.approx(b.time_s, rel=0.02)


def test_splits_follow_flash_attention_2():
    # enough CTAs for 80 % of two per SM: no split
    assert decode_splits(ctas=212, sm_count=132, n_blocks=1000) == 1
    # 8 CTAs on 264 slots: the fewest splits within 85 % of the best wave efficiency (32 fill 256 of 264)
    assert decode_splits(ctas=8, sm_count=132, n_blocks=128) == 32
    # never more splits than K/V blocks
    assert decode_splits(ctas=1, sm_count=132, n_blocks=3) == 3
    # splits that hold no block are not launched: 10 blocks over 4 splits is 3 + 3 + 3 + 1, over 6 it is 2 × 5
    assert decode_split_blocks(10, 4) == (3, 4) and decode_split_blocks(10, 6) == (2, 5)


def test_default_splits_come_from_the_gpu():
    c = decode(batch=1, heads=32, kv_heads=8, seq_k=8192, head_dim=128)
    h100, a100 = simulate(c, "h100-sxm"), simulate(c, "a100")
    n_blocks = 8192 // 64
    assert h100.config["tiling"]["splits"] == decode_split_blocks(n_blocks, decode_splits(8, 132, n_blocks))[1]
    assert a100.config["tiling"]["splits"] == decode_split_blocks(n_blocks, decode_splits(8, 108, n_blocks))[1]
    with pytest.raises(ConfigError, match="splits"):
        build_schedule(c)  # no GPU to choose them for


def test_decode_rows_and_refusals():
    assert decode_rows(1, 1) == 16 and decode_rows(4, 3) == 16 and decode_rows(8, 4) == 32
    assert build_schedule(decode(kv_heads=2, seq_q=3, splits=2)).config.tiling.block_m == 16
    with pytest.raises(ConfigError, match="block_m"):
        build_schedule(RunConfig(algo="flash_decode", tiling=Tiling(block_m=16, splits=2),
                                 problem=Problem(batch=1, heads=32, kv_heads=1, seq_q=1, seq_k=100)))
    for field, kw in (("causal", {"causal": True, "seq_k": 100, "seq_q": 100}), ("backward", {"backward": True})):
        with pytest.raises(ConfigError, match=field):
            build_schedule(RunConfig(algo="flash_decode", tiling=Tiling(splits=2), problem=Problem(**kw)))


def test_bound_names_why_a_decode_is_slow():
    few = simulate(RunConfig(algo="flash2", problem=Problem(batch=1, heads=32, kv_heads=8, seq_q=1, seq_k=8192,
                                                             head_dim=128)), "h100-sxm")
    assert few.bound == "grid"  # 32 CTAs for 132 SMs, each streaming all of K/V
    split = simulate(decode(batch=1, heads=32, kv_heads=8, seq_k=8192, head_dim=128, mode="plain"), "h100-sxm")
    assert split.bound == "hbm" and split.time_s < few.time_s / 4
    short = simulate(decode(batch=1, heads=32, kv_heads=8, seq_k=1024, head_dim=128, splits=4, mode="plain"), "h100-sxm")
    assert short.bound == "launch"  # two kernel launches for 4 MB
    # a combine that takes most of the time and no resource explains: the reduction (made so by hand)
    split_k, combine = split.kernels
    slow = replace(combine, time_s=3 * split.time_s, roofline={lv: 0.0 for lv in combine.roofline})
    assert replace(split, kernels=(split_k, slow), time_s=split_k.time_s + slow.time_s).bound == "reduction"


def test_cli_sweeps_kv_length_and_takes_splits():
    r = CliRunner().invoke(main, ["simulate", "--gpu", "h100-sxm", "--algo", "flash_decode", "--seq-len", "1",
                                  "--seq-k", "1k:4k", "--heads", "32", "--kv-heads", "8", "--batch", "2",
                                  "--splits", "3", "--json"])
    assert r.exit_code == 0, r.output
    runs = json.loads(r.output)
    assert [x["config"]["problem"]["seq_k"] for x in runs] == [1024, 2048, 4096]
    assert {x["config"]["tiling"]["splits"] for x in runs} == {3}
    table = CliRunner().invoke(main, ["simulate", "--gpu", "h100-sxm", "--algo", "flash_decode", "--seq-len", "1",
                                      "--seq-k", "1k,2k", "--heads", "32", "--kv-heads", "8"])
    assert table.exit_code == 0 and "Nk" in table.output.splitlines()[1]
    plain = CliRunner().invoke(main, ["simulate", "--algo", "flash2", "--seq-len", "1k,2k"])
    assert plain.exit_code == 0 and "Nk" not in plain.output  # self-attention: Nk is N
    bad = CliRunner().invoke(main, ["simulate", "--algo", "flash_decode", "--splits", "0"])
    assert bad.exit_code == 2 and "--splits" in bad.output


def test_decode_plots_sweep_the_kv_length():
    from iosim.figures import plots

    runs = [simulate(decode(batch=b, heads=32, kv_heads=8, seq_k=n, head_dim=128, mode="plain"), "h100-sxm")
            for b in (1, 8) for n in (1024, 4096, 16384)]
    peak = {"h100-sxm": 3.35e12}
    fig = plots.bandwidth_vs_length(runs, peak)
    ax = fig.axes[0]
    assert ax.get_xlabel() == "KV length" and len(ax.get_lines()) == 3  # two batches and the datasheet line
    for line, b in zip(ax.get_lines(), (1, 8)):
        assert list(line.get_xdata()) == [1024, 4096, 16384]
        expected = [r.levels["hbm"].total / r.time_s / 3.35e12 for r in runs if r.config["problem"]["batch"] == b]
        assert list(line.get_ydata()) == pytest.approx(expected)
        assert all(0 < y <= 1 for y in line.get_ydata())
    assert plots.io_vs_seqlen(runs).axes[0].get_xlabel() == "KV length"
    out = CliRunner().invoke(main, ["plot", "bandwidth", "-o", "/dev/null/x.png"])
    assert out.exit_code != 0 and "-o" in out.output  # an unwritable output is refused before any work


def test_a_sweep_spec_takes_kv_lengths_and_splits(tmp_path):
    from iosim.spec import load_spec

    spec = tmp_path / "decode.yaml"
    spec.write_text("schema: iosim-sweep\nschema_version: 1\ngpu: h200\nalgo: flash_decode\n"
                    "problem: {seq_q: 1, seq_k: 1k:4k, heads: 32, kv_heads: 8, batch: [1, 8]}\n"
                    "tiling: {splits: [1, 4]}\n")
    runs = load_spec(spec)
    assert [(c.problem.seq_k, c.problem.batch, c.tiling.splits) for c, _ in runs][:4] == [
        (1024, 1, 1), (1024, 1, 4), (1024, 8, 1), (1024, 8, 4)]
    assert len(runs) == 12


def test_a_paged_cache_moves_the_contiguous_bytes():
    """Pages in any order hold the same K/V bytes; the block table's 4 bytes a page are left out."""
    flat, paged = (simulate(replace_problem(decode(kv_heads=2, seq_k=3000, splits=3), page_size=page), "h100-sxm",
                            l2_bytes=l2)
                   for page, l2 in ((None, 0), (16, 0)))
    assert [k.name for k in paged.kernels] == ["decode_split_paged", "decode_reduce"]
    assert {lv: t.total for lv, t in paged.levels.items()} == {lv: t.total for lv, t in flat.levels.items()}
    with pytest.raises(ConfigError, match="page_size"):
        build_schedule(RunConfig(algo="flash2", problem=Problem(seq_q=1, seq_k=100, page_size=16)))
    with pytest.raises(ConfigError, match="page_size"):
        Problem(page_size=100)
    bad = CliRunner().invoke(main, ["simulate", "--algo", "flash_decode", "--page-size", "100"])
    assert bad.exit_code == 2 and "--page-size" in bad.output


def replace_problem(config: RunConfig, **changes) -> RunConfig:
    return replace(config, problem=replace(config.problem, **changes))
