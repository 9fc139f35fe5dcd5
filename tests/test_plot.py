"""Sweeps, the results file, the figures (their axes and lines, not pixels) and ``iosim plot``."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from iosim import sweep
from iosim.cli import main
from iosim.figures import plots as plotting
from iosim.measure.measurement import load_measurement
from iosim.schedule.problem import Problem, RunConfig, Tiling

H100_MEASURED = Path(__file__).resolve().parent.parent / "experiments" / "measurements" / "h100" / "measurements.json"
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def configs(algos=("standard", "flash2"), ns=(512, 1024), **tiling):
    return [RunConfig(algo=a, problem=Problem(seq_q=n), tiling=Tiling(**tiling)) for a in algos for n in ns]


@pytest.fixture(scope="module")
def results():
    """2 GPUs × 2 algorithms × N = 512, 1024 (b4 × h16, d = 64, fp16, forward), as the committed H100 set has."""
    return sweep.run([(c, g) for g in ("a100", "h100-sxm") for c in configs()])


@pytest.fixture(scope="module")
def measured():
    return load_measurement(H100_MEASURED)


def labels(fig):
    return [t.get_text() for legend in fig.legends for t in legend.get_texts()]


def lines(ax, prefix=""):
    return [line for line in ax.get_lines() if line.get_label().startswith(prefix)]


# --------------------------------------------------------------------------- sweep and results file


def test_run_keeps_input_order_and_reports_progress(results):
    seen = []
    work = [(c, "a100") for c in configs(ns=(1024, 512))]
    out = sweep.run(work, progress=seen.append)
    assert [(r.config["algo"], r.config["problem"]["seq_q"]) for r in out] == [
        ("standard", 1024), ("standard", 512), ("flash2", 1024), ("flash2", 512)]
    assert seen == out
    assert [r.gpu for r in results] == ["a100-sxm4-80gb"] * 4 + ["h100-sxm"] * 4


def test_run_refuses_a_bad_configuration_by_name():
    bad = RunConfig(algo="flash2", problem=Problem(seq_q=512, head_dim=48))
    with pytest.raises(ValueError, match="head_dim"):
        sweep.run([(bad, "a100")] * 2, jobs=2)
    with pytest.raises(sweep.SweepError, match="jobs"):
        sweep.run([], jobs=0)


def test_results_round_trip(results, tmp_path):
    path = sweep.save_results(results, tmp_path / "runs.json")
    doc = json.loads(path.read_text())
    assert (doc["schema"], doc["schema_version"], len(doc["results"])) == ("iosim-results", 1, 8)
    back = sweep.load_results(path)
    assert back == results
    assert [r.to_dict() for r in back] == [r.to_dict() for r in results]
    assert [p.name for p in tmp_path.iterdir()] == ["runs.json"]  # no temporary file left behind


def _truncate(doc, text):
    return text[: len(text) // 2]


def _other_schema(doc, text):
    return H100_MEASURED.read_text()


def _drop(key):
    def edit(doc, text):
        del doc["results"][1][key]
        return json.dumps(doc)
    return edit


def _set(path, value):
    def edit(doc, text):
        target = doc
        for k in path[:-1]:
            target = target[k]
        target[path[-1]] = value
        return json.dumps(doc)
    return edit


@pytest.mark.parametrize("edit,field", [
    (_truncate, "not valid JSON"),
    (_other_schema, "schema: expected 'iosim-results', got 'iosim-measurement'"),
    (_set(["schema_version"], 2), "schema_version"),
    (_set(["results"], {}), "results: must be a list"),
    (_drop("time_s"), "results[1].time_s: missing field"),
    (_set(["results", 0, "peak_hbm_bytes"], -1), "results[0].peak_hbm_bytes"),
    (_set(["results", 0, "config", "algo"], "flash3"), "results[0].config"),
    (_set(["results", 0, "kernels", 0, "levels"], {"hbm": {}}), "results[0].kernels[0].levels"),
])
def test_bad_results_file_names_file_and_field(results, tmp_path, edit, field):
    good = sweep.save_results(results[:2], tmp_path / "good.json")
    bad = tmp_path / "bad.json"
    bad.write_text(edit(json.loads(good.read_text()), good.read_text()))
    with pytest.raises(sweep.SweepError) as e:
        sweep.load_results(bad)
    assert str(bad) in str(e.value) and field in str(e.value) and "\n" not in str(e.value)


# --------------------------------------------------------------------------- figures


def test_io_vs_seqlen_lines_per_level(results):
    fig = plotting.io_vs_seqlen(results)
    hbm, l2, sram = fig.axes
    for ax in fig.axes:
        assert (ax.get_xscale(), ax.get_yscale()) == ("log", "log")
    # 2 GPUs × 2 algorithms, plus the paper's count once per algorithm on the HBM and L2 panels only
    assert (len(hbm.get_lines()), len(l2.get_lines()), len(sram.get_lines())) == (6, 6, 4)
    flash2_a100 = lines(hbm, "flash2 (a100-sxm4-80gb)")[0]
    assert list(flash2_a100.get_xdata()) == [512, 1024]
    assert list(flash2_a100.get_ydata()) == [r.levels["hbm"].total for r in results[2:4]]
    paper = lines(hbm, "paper formula: standard")[0]
    assert paper.get_linestyle() == "--" and paper.get_color() == plotting.ALGO_COLOUR["standard"]
    assert flash2_a100.get_color() == plotting.ALGO_COLOUR["flash2"]
    assert "standard (h100-sxm)" in labels(fig) and "paper formula: flash2" in labels(fig)


def test_io_vs_seqlen_overlays_matching_measurements(results, measured):
    fig = plotting.io_vs_seqlen(results, measured=measured, closed_form=False, by_gpu=True, levels=("hbm", "l2"))
    assert len(fig.axes) == 4  # a row per level, a column per GPU
    a100_hbm, h100_hbm, a100_l2, h100_l2 = fig.axes
    assert lines(a100_hbm, "measured") == []  # H100 measurements stay on the H100 panels
    points = lines(h100_hbm, "measured flash2 (NVIDIA H100 80GB HBM3)")[0]
    case = next(c for c in measured.cases if c.name == "flash2-fwd-fp16-b4h16-n1024-d64-bm128bn64w4")
    assert list(points.get_xdata()) == [512, 1024]
    assert points.get_ydata()[1] == case.counters.dram_read_bytes + case.counters.dram_write_bytes
    assert lines(h100_l2, "measured flash2")[0].get_ydata()[1] == case.counters.l2_bytes
    assert len(lines(h100_hbm, "measured")) == 2  # standard and flash2; standard_eager and SDPA are not plotted
    assert a100_hbm.get_title().endswith("a100-sxm4-80gb") and "flash2" in labels(fig)  # the GPU is in the title


def test_runtime_vs_seqlen(results, measured):
    fig = plotting.runtime_vs_seqlen(results, measured=measured)
    (ax,) = fig.axes
    assert (ax.get_xscale(), ax.get_yscale()) == ("log", "log")
    assert len(lines(ax)) == 6 and len(lines(ax, "measured")) == 2
    assert list(lines(ax, "flash2 (h100-sxm)")[0].get_ydata()) == [r.time_s for r in results[6:]]


def test_memory_vs_seqlen_draws_capacity(results):
    fig = plotting.memory_vs_seqlen(results)
    (ax,) = fig.axes
    assert (ax.get_xscale(), ax.get_yscale()) == ("log", "log")
    capacity = lines(ax, "h100-sxm capacity")[0]
    assert set(capacity.get_ydata()) == {results[-1].hbm_capacity_bytes}
    assert len(lines(ax)) == 4 + 2


def test_block_sweep_is_a_heatmap_over_the_tiles():
    rs = sweep.run([(c, "a100") for bm, bn in ((64, 32), (64, 64), (128, 32))
                    for c in configs(("flash2",), (512,), block_m=bm, block_n=bn)])
    fig = plotting.block_sweep(rs)
    hbm, time = fig.axes
    assert [t.get_text() for t in time.get_yticklabels()] == ["64", "128"]  # block_m down the rows
    assert [t.get_text() for t in time.get_xticklabels()] == ["32", "64"]  # block_n across
    cells = time.get_images()[0].get_array()
    expected = {(64, 32): rs[0].time_s, (64, 64): rs[1].time_s, (128, 32): rs[2].time_s}
    for (m, n), t in expected.items():
        assert cells[[64, 128].index(m), [32, 64].index(n)] == pytest.approx(np.log10(t))
    assert cells.mask[1, 1]  # 128 × 64 was not simulated: an empty cell, not a zero
    best = min(expected, key=expected.get)
    (outline,) = time.patches
    assert outline.get_xy() == ([32, 64].index(best[1]) - 0.5, [64, 128].index(best[0]) - 0.5)
    assert len(hbm.texts) == len(time.texts) == 3
    with pytest.raises(plotting.PlotError, match="one N"):
        plotting.block_sweep(rs + sweep.run([(configs(("flash2",), (1024,))[0], "a100")]))


@pytest.mark.parametrize("name,magic", [("f.png", PNG_SIGNATURE), ("f.svg", b"<?xml"), ("f.pdf", b"%PDF")])
def test_save_writes_the_format_of_the_extension(results, tmp_path, name, magic):
    plotting.save(plotting.memory_vs_seqlen(results[:2]), tmp_path / name)
    assert (tmp_path / name).read_bytes().startswith(magic)
    assert [p.name for p in tmp_path.iterdir()] == [name]


@pytest.mark.parametrize("name,needle", [("f.jpg", "unknown format '.jpg'"), ("f", "unknown format"),
                                         ("missing/f.png", "does not exist")])
def test_save_refuses_without_creating_files(results, tmp_path, name, needle):
    with pytest.raises(plotting.PlotError, match=needle) as e:
        plotting.save(plotting.memory_vs_seqlen(results[:2]), tmp_path / name)
    assert str(tmp_path / name) in str(e.value)
    assert list(tmp_path.iterdir()) == []


# --------------------------------------------------------------------------- iosim plot


def invoke(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


def test_plot_help_lists_commands():
    r = invoke("plot", "--help")
    assert r.exit_code == 0
    assert all(name in r.output for name in ("io", "runtime", "blocks", "memory"))


def test_plot_io_writes_png(tmp_path):
    r = invoke("plot", "io", "-o", tmp_path / "x.png", "--seq-len", "512,1k", "--algo", "flash2")
    assert r.exit_code == 0, r.output
    assert (tmp_path / "x.png").read_bytes()[:8] == PNG_SIGNATURE


def test_plot_from_saved_results_does_not_simulate(tmp_path, monkeypatch):
    saved = tmp_path / "runs.json"
    r = invoke("plot", "runtime", "-o", tmp_path / "a.svg", "--seq-len", "512,1k", "--algo", "flash2",
               "--save", saved)
    assert r.exit_code == 0, r.output

    def refuse(*args, **kwargs):
        raise AssertionError("--from must not simulate")

    monkeypatch.setattr(sweep, "run", refuse)
    monkeypatch.setattr(sweep, "simulate_or_skip", refuse)
    r = invoke("plot", "runtime", "-o", tmp_path / "b.png", "--from", saved)
    assert r.exit_code == 0, r.output
    assert (tmp_path / "b.png").read_bytes()[:8] == PNG_SIGNATURE


@pytest.mark.parametrize("args,needle", [
    (("-o", "{tmp}/missing/x.png"), "does not exist"),
    (("-o", "{tmp}/x.gif"), "unknown format '.gif'"),
    (("-o", "{tmp}/x.png", "--from", "{tmp}/bad.json"), "bad.json: document: not valid JSON"),
    (("-o", "{tmp}/x.png", "--gpu", "nope"), "--gpu"),
    (("-o", "{tmp}/x.png", "--measured", "{tmp}/bad.json"), "--measured"),
])
def test_plot_bad_input_is_one_line_exit_2(tmp_path, monkeypatch, args, needle):
    (tmp_path / "bad.json").write_text('{"schema": "iosim-results", "resu')
    monkeypatch.setattr(sweep, "run", lambda *a, **k: pytest.fail("bad input must be refused before simulating"))
    r = invoke("plot", "io", *(a.format(tmp=tmp_path) for a in args))
    assert r.exit_code == 2
    assert needle in r.output and "Traceback" not in r.output
    assert len([line for line in r.output.splitlines() if line.startswith("Error")]) == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.json"]


def test_plot_io_overlays_a_measurement_file(tmp_path):
    r = invoke("plot", "io", "-o", tmp_path / "m.svg", "--gpu", "h100-sxm", "--algo", "flash2", "--seq-len", "512",
               "--measured", H100_MEASURED)
    assert r.exit_code == 0, r.output
    assert "measured flash2 (NVIDIA H100 80GB HBM3)" in (tmp_path / "m.svg").read_text()


def test_plot_blocks_sweeps_every_pair(tmp_path):
    saved = tmp_path / "runs.json"
    r = invoke("plot", "blocks", "-o", tmp_path / "b.png", "--algo", "flash2", "--seq-len", "512",
               "--block-m", "64", "--block-n", "32,64", "--save", saved)
    assert r.exit_code == 0, r.output
    tiles = [(x["config"]["tiling"]["block_m"], x["config"]["tiling"]["block_n"])
             for x in json.loads(saved.read_text())["results"]]
    assert tiles == [(64, 32), (64, 64)]


def test_jobs_2_saves_the_same_results_as_jobs_1(tmp_path):
    for jobs in (1, 2):
        r = invoke("plot", "memory", "-o", tmp_path / f"m{jobs}.png", "--seq-len", "512,1k", "--algo",
                   "standard,flash2", "--gpu", "a100,4090", "--jobs", jobs, "--save", tmp_path / f"r{jobs}.json")
        assert r.exit_code == 0, r.output
    assert (tmp_path / "r1.json").read_bytes() == (tmp_path / "r2.json").read_bytes()


def test_a_sweep_past_the_gpus_memory_is_plotted_and_saved_not_lost(tmp_path):
    """The README's memory sweep, shrunk to the 4090 (24 GB): standard attention's 16K point is out of
    memory. ``plot memory`` marks it (its footprint comes from the schedule alone); the saved file keeps
    it as a skipped row; re-plotting time from that file names it on stderr and plots the rest."""
    saved = tmp_path / "sweep.json"
    r = invoke("plot", "memory", "--gpu", "4090", "--algo", "standard,flash2", "--seq-len", "512,16k",
               "-o", tmp_path / "mem.png", "--save", saved)
    assert r.exit_code == 0, r.output
    results = sweep.load_results(saved)
    skipped = [x for x in results if isinstance(x, sweep.Skipped)]
    assert [(x.config["algo"], x.config["problem"]["seq_q"]) for x in skipped] == [("standard", 16384)]
    assert skipped[0].reason.startswith("OOM: needs") and skipped[0].out_of_memory
    r = invoke("plot", "runtime", "--from", saved, "-o", tmp_path / "t.png")
    assert r.exit_code == 0 and "skipped: standard N=16384 on rtx4090: OOM: needs" in r.output


def test_plot_reads_what_simulate_json_prints_and_writes_its_numbers_beside_the_figure(tmp_path):
    """One results format: ``simulate --json`` output is a ``--from`` file; each figure gets a CSV of
    the runs it plots (every configuration column, so tiling sweeps stay apart)."""
    printed = invoke("simulate", "--algo", "flash2", "--seq-len", "512,1k", "--json").output
    saved = tmp_path / "printed.json"
    saved.write_text(printed)
    r = invoke("plot", "runtime", "--from", saved, "-o", tmp_path / "t.png")
    assert r.exit_code == 0, r.output
    rows = (tmp_path / "t.csv").read_text().splitlines()
    header = rows[0].split(",")
    assert len(rows) == 3 and {"block_m", "block_n", "time_s", "hbm_read_bytes"} <= set(header)
    times = [float(row.split(",")[header.index("time_s")]) for row in rows[1:]]
    assert times == [x["time_s"] for x in json.loads(printed)]
    r = invoke("plot", "blocks", "--algo", "flash2", "--seq-len", "1k", "--block-m", "64,128", "--block-n", "64",
               "-o", tmp_path / "b.png")
    assert r.exit_code == 0, r.output
    blocks = [row.split(",") for row in (tmp_path / "b.csv").read_text().splitlines()]
    i = blocks[0].index("block_m")
    assert [row[i] for row in blocks[1:]] == ["64", "128"]


def test_plot_io_by_gpu_has_a_column_per_gpu(tmp_path):
    r = invoke("plot", "io", "--gpu", "a100,h100-sxm", "--algo", "flash2", "--seq-len", "512,1k", "--by-gpu",
               "-o", tmp_path / "io.png")
    assert r.exit_code == 0, r.output
    r = invoke("plot", "io", "--gpu", "a100,h100-sxm", "--algo", "flash2", "--seq-len", "512,1k", "-o", tmp_path / "one.png")
    assert r.exit_code == 0 and (tmp_path / "io.csv").read_text() == (tmp_path / "one.csv").read_text()
    fig = plotting.io_vs_seqlen(sweep.run([(c, g) for g in ("a100", "h100-sxm") for c in configs(("flash2",), (512, 1024))]),
                                by_gpu=True)
    assert len(fig.axes) == 3 * 2 and "a100" in fig.axes[0].get_title() and "h100-sxm" in fig.axes[1].get_title()


def test_single_panel_legend_sits_below_the_panel_clear_of_the_title(results):
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    fig = plotting.runtime_vs_seqlen(results)
    canvas = FigureCanvasAgg(fig)
    canvas.draw()  # lay out (constrained layout) before measuring
    renderer = canvas.get_renderer()
    (legend,) = fig.legends
    box = legend.get_window_extent(renderer)
    axes, title = fig.axes[0].get_tightbbox(renderer), fig._suptitle.get_window_extent(renderer)
    assert box.y1 <= axes.y0 and box.y1 <= title.y0  # below the panel, where no title reaches
