"""Variable-length batches and sliding windows in the simulator: the kernels' bytes against counts made
pair by pair (a K/V block is read by a Q block exactly when some query of it sees some key of it),
the two cache limits, equal lengths against the uniform batch, aggregated against per-CTA runs, FLOPs,
and the options that describe them."""
from __future__ import annotations

import json

import numpy as np
import pytest
from click.testing import CliRunner

from iosim import sizes
from iosim.cli import main
from iosim.costs import closed_forms
from iosim.schedule.build import build_schedule
from iosim.schedule.problem import ConfigError, Problem, RunConfig, Tiling
from iosim.simulate import simulate
from iosim.spec import SpecError, runs

UNBOUNDED = 1 << 40
TILE = Tiling(block_m=64, block_n=32)


def prefill(lens=None, window=None, causal=True, kv_heads=2, seq=None, batch=None, head_dim=32):
    n = max(lens) if lens else seq
    return RunConfig(algo="flash2", mode="ncu", tiling=TILE,
                     problem=Problem(batch=batch or len(lens), heads=4, kv_heads=kv_heads, seq_q=n, seq_lens=lens,
                                     head_dim=head_dim, causal=causal, window=window))


def decode(lens=None, window=None, seq_k=None, seq_q=1, splits=None, batch=None):
    return RunConfig(algo="flash_decode", mode="ncu", tiling=Tiling(block_n=64, splits=splits),
                     problem=Problem(batch=batch or len(lens), heads=8, kv_heads=2, seq_q=seq_q, seq_k=seq_k,
                                     seq_lens=lens, head_dim=32, window=window))


PREFILLS = [prefill((1, 37, 130)), prefill((130, 37, 1), causal=False), prefill((200, 64), window=1),
            prefill((200, 64, 333), window=20), prefill((200, 64, 333), window=45, kv_heads=1),
            prefill((100,), window=500), prefill(seq=300, batch=2, window=70)]
DECODES = [decode((1000, 37, 1)), decode((1000, 37, 300), window=100), decode((1000, 37, 300), window=64, splits=3),
           decode(seq_k=1000, batch=2, window=129, seq_q=3), decode((129, 128, 1000), splits=5)]


def ident(c: RunConfig) -> str:
    p = c.problem
    return f"{c.algo}-{p.seq_lens or p.seq_k}-w{p.window}-{'c' if p.causal else 'n'}-s{c.tiling.splits}"


def pairwise_prefill_bytes(c: RunConfig) -> tuple[int, int]:
    """HBM bytes with no cache, from which (query, key) pairs are visible: each Q block of a request
    reads the K/V blocks holding a key one of its queries sees, clipped at the request's end."""
    p, t = c.problem, c.tiling
    e, d = p.elem_bytes, p.head_dim
    read = write = 0
    for n in p.lengths:
        q, k = np.arange(n)[:, None], np.arange(n)[None, :]
        seen = np.ones((n, n), dtype=bool)
        if p.causal:
            seen &= k <= q
        if p.window:
            seen &= k > q - p.window
        for r0 in range(0, n, t.block_m):
            blocks = np.unique(np.nonzero(seen[r0:r0 + t.block_m].any(0))[0] // t.block_n)
            rows = sum(min(n, (b + 1) * t.block_n) - b * t.block_n for b in blocks)
            read += p.heads * 2 * rows * d * e
        read += p.heads * n * d * e  # Q
        write += p.heads * n * (d * e + 4)  # O and the fp32 logsumexp
    return read, write


@pytest.mark.parametrize("config", PREFILLS, ids=ident)
def test_prefill_without_l2_reads_the_blocks_holding_seen_keys(config):
    hbm = simulate(config, "h100-sxm", l2_bytes=0).levels["hbm"]
    assert (hbm.read_bytes, hbm.write_bytes) == pairwise_prefill_bytes(config)
    assert closed_forms.no_cache_bytes(config) == {"read": hbm.read_bytes, "write": hbm.write_bytes}


@pytest.mark.parametrize("config", PREFILLS, ids=ident)
def test_prefill_with_unbounded_l2_reads_each_row_once(config):
    """No padding traffic: each request's own rows of Q, K and V, once."""
    hbm = simulate(config, "h100-sxm", l2_bytes=UNBOUNDED).levels["hbm"]
    assert hbm.read_bytes == closed_forms.compulsory_bytes(config)["read"]
    p = config.problem
    assert hbm.read_bytes == (p.heads + 2 * p.kv_heads) * sum(p.lengths) * p.head_dim * p.elem_bytes


@pytest.mark.parametrize("config", DECODES, ids=ident)
def test_decode_without_l2_reads_each_request_from_its_window(config):
    """Each split holding a block of a request reads the group's queries; K/V from the block holding
    the window's first key to the request's end; partials written and read back once per split."""
    r = simulate(config, "h100-sxm", l2_bytes=0)
    p, bn = config.problem, config.tiling.block_n
    splits = r.config["tiling"]["splits"]
    span = -(-p.seq_k // bn) if p.window is None else min(-(-p.seq_k // bn), -(-p.window // bn) + 1)
    per = -(-span // splits)
    e, d, q = p.elem_bytes, p.head_dim, p.heads * p.seq_q * p.head_dim * p.elem_bytes
    read = write = 0
    for n in p.lengths:
        first = (max(0, n - p.window) if p.window else 0) // bn * bn
        mine = len(range(first // bn, -(-n // bn), per))  # splits that hold a block of this request
        read += mine * q + 2 * p.kv_heads * (n - first) * d * e
        partials = p.heads * p.seq_q * mine * (d + 1) * 4 if splits > 1 else 0
        read, write = read + partials, write + partials + q
    hbm = r.levels["hbm"]
    assert (hbm.read_bytes, hbm.write_bytes) == (read, write)
    assert closed_forms.no_cache_bytes(RunConfig.from_dict(r.config)) == {"read": read, "write": write}


@pytest.mark.parametrize("config", PREFILLS[:4] + DECODES, ids=ident)
def test_aggregated_equals_per_cta(config):
    a, b = simulate(config, "h100-sxm"), simulate(config, "h100-sxm", aggregate=False)
    for lv in ("sram", "l2", "hbm"):
        assert a.levels[lv].total == pytest.approx(b.levels[lv].total, rel=0.005), lv
    assert a.time_s == pytest.approx(b.time_s, rel=0.02)
    assert sum(k.flops["tensor"] for k in a.kernels) == sum(k.flops["tensor"] for k in b.kernels)


def test_equal_lengths_move_the_uniform_batchs_bytes():
    """A ragged batch whose requests are all N long is the uniform batch, packed."""
    for causal in (False, True):
        ragged, uniform = prefill((300,) * 3, causal=causal), prefill(seq=300, batch=3, causal=causal)
        a, b = simulate(ragged, "h100-sxm"), simulate(uniform, "h100-sxm")
        assert a.kernels[0].name == "flash2_varlen_fwd" and b.kernels[0].name == "flash2_fwd"
        for lv in ("sram", "l2", "hbm"):
            assert (a.levels[lv].read_bytes, a.levels[lv].write_bytes) == (b.levels[lv].read_bytes,
                                                                           b.levels[lv].write_bytes)
    a, b = simulate(decode((1000,) * 2), "h100-sxm"), simulate(decode(seq_k=1000, batch=2), "h100-sxm")
    assert [k.name for k in a.kernels] == ["decode_split_ragged", "decode_reduce_ragged"]
    assert a.levels["hbm"] == b.levels["hbm"] and a.levels["l2"] == b.levels["l2"]


def test_a_window_as_long_as_the_sequence_is_causal_attention():
    a, b = simulate(prefill((300, 40), window=300), "h100-sxm"), simulate(prefill((300, 40)), "h100-sxm")
    assert a.levels["hbm"] == b.levels["hbm"] and a.levels["l2"] == b.levels["l2"]


def test_flops_count_the_pairs_a_window_keeps():
    for lens, window in (((37, 130), 20), ((100,), 100), ((64, 1), 7)):
        p = prefill(lens, window=window).problem
        pairs = sum(((np.arange(n)[None, :] <= np.arange(n)[:, None])
                     & (np.arange(n)[None, :] > np.arange(n)[:, None] - window)).sum() for n in lens)
        exact = 4.0 * p.heads * p.head_dim * pairs
        # the papers' convention counts N²/2 for causal (not N(N+1)/2): within a diagonal of each
        assert p.flops() == pytest.approx(exact, abs=4.0 * p.heads * p.head_dim * sum(lens))
    p = decode((1000, 37), window=100, seq_q=2).problem
    assert p.flops() == 4.0 * p.heads * p.head_dim * 2 * (100 + 37)
    assert Problem(seq_q=4096, causal=True).flops() == 4.0 * 4 * 16 * 4096 * 4096 * 64 / 2  # unchanged


def test_schedules_refuse_what_no_kernel_runs():
    with pytest.raises(ConfigError, match="seq_lens: needs one length per request"):
        Problem(batch=2, seq_lens=(1, 2, 3))
    with pytest.raises(ConfigError, match="seq_k: is the longest"):
        Problem(batch=2, seq_lens=(1, 2), seq_k=5)
    with pytest.raises(ConfigError, match="seq_lens: must be a positive integer"):
        Problem(batch=2, seq_lens=(1, 0))
    with pytest.raises(ConfigError, match="window: must be a positive integer"):
        Problem(window=0)
    for config, field in ((prefill((10, 20), window=4, causal=False), "window"),
                          (RunConfig("flash1", Problem(batch=2, seq_q=20, seq_lens=(10, 20))), "seq_lens"),
                          (RunConfig("flash2", Problem(batch=2, seq_q=20, seq_lens=(10, 20), backward=True)), "backward"),
                          (RunConfig("flash2", Problem(batch=2, seq_q=10, seq_lens=(10, 20))), "seq_q"),
                          (RunConfig("flash2", Problem(batch=2, seq_q=40, seq_lens=(10, 20), causal=True)), "seq_q")):
        with pytest.raises(ConfigError) as e:
            build_schedule(config)
        assert e.value.field == field


def test_packed_tensors_count_only_their_rows_in_the_footprint():
    s = build_schedule(prefill((1000, 10)))
    q_row, kv_row = 4 * 32 * 2, 2 * 32 * 2  # a token's bytes: 4 query heads, 2 key/value heads, d = 32, fp16
    assert s.peak_hbm_bytes == 1010 * (2 * q_row + 2 * kv_row + 4 * 4)  # Q, O, K, V and the fp32 logsumexp


def test_lengths_parse_and_print_back():
    assert sizes.parse_lengths("3x512,4k,37") == [512, 512, 512, 4096, 37]
    assert sizes.lengths_text([512, 512, 512, 4096, 37, 37]) == "3x512,4096,2x37"
    for bad in ("0x4", "ax4", "4x0", "4,,5"):
        with pytest.raises(sizes.SizeError):
            sizes.parse_lengths(bad)


def test_cli_takes_lengths_and_windows():
    runner = CliRunner()
    out = runner.invoke(main, ["simulate", "--gpu", "h100-sxm", "--algo", "flash2,flash_decode", "--seq-len", "1",
                               "--seq-lens", "2x300,1k", "-d", "32", "--heads", "4", "--json"])
    assert out.exit_code == 0, out.output
    got = json.loads(out.output)
    assert [r["config"]["problem"]["seq_lens"] for r in got] == [[300, 300, 1024]] * 2
    assert [r["config"]["problem"]["seq_q"] for r in got] == [1024, 1]  # a prefill's N is the longest request
    out = runner.invoke(main, ["simulate", "--gpu", "h100-sxm", "--algo", "flash2", "--seq-len", "1k", "--causal",
                               "--window", "128,256", "-d", "32", "--heads", "4", "--batch", "1"])
    assert out.exit_code == 0, out.output
    assert "window" in out.output and "128" in out.output and "256" in out.output
    for order in (["--seq-lens", "1k,2k", "--batch", "4"], ["--batch", "4", "--seq-lens", "1k,2k"]):
        clash = runner.invoke(main, ["simulate", "--algo", "flash2", "--causal", *order])
        assert clash.exit_code == 2 and "--batch" in clash.output and "2 requests" in clash.output
    bad = runner.invoke(main, ["simulate", "--algo", "flash2", "--window", "128"])
    assert bad.exit_code == 2 and "--window" in bad.output and "causal" in bad.output
    assert "Traceback" not in bad.output


def test_spec_takes_a_batch_of_lengths_or_several(tmp_path):
    doc = {"schema": "iosim-sweep", "schema_version": 1, "gpu": "h100-sxm", "algo": ["flash2"],
           "problem": {"seq_lens": [[512, 37], "3x100"], "causal": True, "window": [64, 128], "head_dim": 32}}
    got = runs(doc, tmp_path / "s.yaml")
    assert [(c.problem.seq_lens, c.problem.window, c.problem.batch, c.problem.seq_q) for c, _ in got] == [
        ((512, 37), 64, 2, 512), ((512, 37), 128, 2, 512), ((100, 100, 100), 64, 3, 100), ((100, 100, 100), 128, 3, 100)]
    one = runs(doc | {"problem": {"seq_lens": [512, 37], "causal": True}}, tmp_path / "s.yaml")
    assert [c.problem.seq_lens for c, _ in one] == [(512, 37)]
    with pytest.raises(SpecError, match="problem.seq_lens"):
        runs(doc | {"problem": {"seq_lens": "4x0"}}, tmp_path / "s.yaml")


def test_plots_sweep_the_window_and_tell_curves_apart_by_it():
    """Only the window varying: it is the x axis; N varying with two windows: a curve each, labelled W=."""
    from iosim.figures import plots

    runs = [simulate(prefill(seq=512, batch=1, window=w), "h100-sxm") for w in (32, 64, 128)]
    ax = plots.io_vs_seqlen(runs).axes[0]
    assert ax.get_xlabel() == "window W (keys a query sees)"
    assert [list(line.get_xdata()) for line in ax.get_lines()] == [[32, 64, 128]]
    runs = [simulate(prefill(seq=n, batch=1, window=w), "h100-sxm") for w in (32, 64) for n in (256, 512)]
    fig = plots.runtime_vs_seqlen(runs)
    labels = [line.get_label() for line in fig.axes[0].get_lines()]
    assert fig.axes[0].get_xlabel() == "sequence length N" and labels == ["flash2 (h100-sxm) W=32", "flash2 (h100-sxm) W=64"]
