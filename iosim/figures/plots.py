"""Figures of simulation results: bytes per memory level, time and footprint against N, block sweeps.

Each function takes results that already exist (a list of :class:`~iosim.result.RunResult`, and
optionally a :class:`~iosim.measurement.Measurement` to overlay) and returns a matplotlib
:class:`~matplotlib.figure.Figure`; nothing here runs a simulation. Figures are built without
pyplot (no global figure state, no GUI backend) and rendered by Agg. Colour names the algorithm,
the marker the GPU; the paper's closed-form counts are dashed in their algorithm's colour and
measured points are large open markers.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle
from matplotlib.ticker import FixedLocator, FuncFormatter, LogLocator, NullFormatter, NullLocator

from iosim.costs import closed_forms
from iosim.files import atomic_open, unwritable
from iosim.results.report import algo_label, human_bytes, human_time
from iosim.schedule.problem import RunConfig
from iosim.sizes import lengths_text

FORMATS = ("png", "svg", "pdf")
LEVEL_TITLE = {"hbm": "HBM (DRAM) traffic", "l2": "L2 traffic", "sram": "SRAM traffic", "host": "host traffic"}
ALGO_COLOUR = {"standard": "C3", "standard_eager": "C1", "flash1": "C0", "flash2": "C2",
               "sdpa_flash": "C4", "sdpa_cudnn": "C5", "flash_decode": "C6"}
GPU_MARKERS = ("o", "s", "^", "D", "v", "P")
PNG_DPI = 110


X_LABEL = {"seq_q": "sequence length N", "seq_k": "KV length", "window": "window W (keys a query sees)"}
SHAPE_STYLES = ("-", "--", "-.", ":")


class PlotError(ValueError):
    """A figure that cannot be drawn or written; the one-line message names the path or the problem."""


# --------------------------------------------------------------------------- figures


def io_vs_seqlen(results, measured=None, closed_form: bool = True, levels=("hbm", "l2", "sram"),
                 by_gpu: bool = False) -> Figure:
    """Bytes read + written per memory level against N (log-log), one line per (GPU, algorithm).

    One panel per level, side by side; ``by_gpu`` makes that a row per level and a column per GPU
    (whose title then names the GPU, so the legend names only the algorithm). ``closed_form`` dashes the
    paper's HBM access counts (:func:`iosim.closed_forms.paper_bytes`, which assume no cache) on the HBM
    and L2 panels. ``measured`` (a Measurement or a list of them) adds the cases that match a
    plotted series — DRAM bytes on the HBM panel, L2 bytes on the L2 panel.
    """
    results = _nonempty(results)
    field = _swept(results)
    columns = _gpus(results) if by_gpu else [None]
    # by_gpu: a level per row, a GPU per column; otherwise the levels side by side
    shape = (len(levels), len(columns)) if by_gpu else (1, len(levels))
    fig = Figure(figsize=(4.2 * shape[1], 3.0 * shape[0] + 1.2), layout="constrained")
    grid = fig.subplots(*shape, squeeze=False, sharex=True, sharey="row" if by_gpu else False)
    cases = _measured_cases(measured, results)
    for c, gpu in enumerate(columns):
        shown = [r for r in results if gpu is None or r.gpu == gpu]
        for row, level in enumerate(levels):
            i, j = (row, c) if by_gpu else (0, row)
            ax = grid[i][j]
            for key, rs in _series(shown, field=field).items():
                ax.plot(_ns(rs, field), [r.levels[level].total for r in rs], **_style(key, results, not by_gpu))
            if closed_form and level in ("hbm", "l2") and field == "seq_q":
                _paper_lines(ax, shown)
            counter = {"hbm": _dram_bytes, "l2": _l2_bytes}.get(level)
            if counter:
                _measured_points(ax, cases, gpu, counter, field)
            _log_axes(ax, _ns(shown, field), _bytes_formatter)
            ax.set_title(LEVEL_TITLE.get(level, level) + (f" — {gpu}" if gpu else ""), fontsize=10)
            if j == 0:
                ax.set_ylabel("bytes read + written")
            if i == shape[0] - 1:
                ax.set_xlabel(X_LABEL[field])
    _legend(fig)
    fig.suptitle(_problem_title(results), fontsize=10)
    return fig


def runtime_vs_seqlen(results, measured=None) -> Figure:
    """Predicted time against N (log-log), one line per (GPU, algorithm); measured medians as markers."""
    results = _nonempty(results)
    field = _swept(results)
    fig = Figure(figsize=(8.8, 4.2), layout="constrained")
    ax = fig.subplots()
    for key, rs in _series(results, field=field).items():
        ax.plot(_ns(rs, field), [r.time_s for r in rs], **_style(key, results))
    _measured_points(ax, _measured_cases(measured, results, need="timing"), None, lambda case: case.timing.median_s,
                     field)
    _log_axes(ax, _ns(results, field), _time_formatter)
    ax.set(xlabel=X_LABEL[field], ylabel="time", title="predicted time" + (" vs measured" if measured else ""))
    _legend(fig)
    fig.suptitle(_problem_title(results), fontsize=10)
    return fig


def bandwidth_vs_length(results, peak: dict) -> Figure:
    """Achieved HBM bandwidth — HBM bytes over predicted time, as a fraction of ``peak[gpu]`` (the
    profile's datasheet bytes/s) — against the swept length, one line per (GPU, algorithm, shape): how
    close a memory-bound run (a decode step) comes to the memory system, and where launches or too few
    CTAs hold it back."""
    results = _nonempty(results)
    field = _swept(results)
    fig = Figure(figsize=(8.8, 4.2), layout="constrained")
    ax = fig.subplots()
    for key, rs in _series(results, field=field).items():
        ax.plot(_ns(rs, field), [r.levels["hbm"].total / r.time_s / peak[r.gpu] for r in rs], **_style(key, results))
    _length_axis(ax, _ns(results, field))
    ax.set_ylim(0, 1.05)
    ax.axhline(1.0, color="0.5", linestyle=":", linewidth=1)
    ax.grid(True, which="major", alpha=0.3)
    ax.set(xlabel=X_LABEL[field], ylabel="HBM bandwidth / datasheet", title="achieved HBM bandwidth")
    _legend(fig)
    fig.suptitle(_problem_title(results), fontsize=10)
    return fig


def block_sweep(results) -> Figure:
    """HBM bytes and time over the tile shape at one N: a heatmap per (GPU, algorithm) and metric, rows
    block_m, columns block_n, each cell labelled with its value and the fastest tile outlined."""
    results = _nonempty(results)
    ns = sorted({r.config["problem"]["seq_q"] for r in results})
    if len(ns) != 1:
        raise PlotError(f"block_sweep takes results of one N, got N = {', '.join(map(str, ns))}")
    series = _series(results, by=_tile)
    ms = sorted({_tile(r)[0] for r in results})
    ns_ = sorted({_tile(r)[1] for r in results})
    fig = Figure(figsize=(1.2 * len(ns_) * 2 + 2.4, 1.0 * len(ms) * len(series) + 1.6), layout="constrained")
    grid = fig.subplots(len(series), 2, squeeze=False)
    metrics = (("HBM bytes read + written", lambda r: r.levels["hbm"].total, human_bytes),
               ("predicted time", lambda r: r.time_s, human_time))
    for row, (key, rs) in enumerate(series.items()):
        gpu, algo, _ = key
        for col, (title, value, text) in enumerate(metrics):
            ax = grid[row][col]
            cells = np.full((len(ms), len(ns_)), np.nan)
            for r in rs:
                m, n = _tile(r)
                cells[ms.index(m), ns_.index(n)] = value(r)
            # colour from the best cell (light) to twice it and beyond (dark): near-equal cells look alike
            low = np.log10(np.nanmin(cells))
            ax.imshow(np.log10(cells), cmap="viridis_r", aspect="auto", vmin=low, vmax=low + np.log10(2))
            for (i, j), v in np.ndenumerate(cells):
                if np.isfinite(v):
                    dark = np.log10(v) - low > 0.5 * np.log10(2)
                    ax.text(j, i, text(v), ha="center", va="center", fontsize=8, color="white" if dark else "black")
            best = np.unravel_index(np.nanargmin(cells), cells.shape)
            ax.add_patch(Rectangle((best[1] - 0.5, best[0] - 0.5), 1, 1, fill=False, edgecolor="red", linewidth=2))
            ax.set_xticks(range(len(ns_)), ns_)
            ax.set_yticks(range(len(ms)), ms)
            ax.set(xlabel="block_n", ylabel="block_m", title=f"{title} — {algo} ({gpu})")
            ax.title.set_fontsize(9)
    fig.suptitle(_problem_title(results) + f", N = {ns[0]}", fontsize=10)
    return fig


def memory_vs_seqlen(results) -> Figure:
    """Peak HBM footprint against N (log-log), one line per (GPU, algorithm), each GPU's capacity dotted."""
    results = _nonempty(results)
    fig = Figure(figsize=(8.8, 4.2), layout="constrained")
    ax = fig.subplots()
    for key, rs in _series(results).items():
        line, = ax.plot(_ns(rs), [r.peak_hbm_bytes for r in rs], **_style(key, results))
        oom = [r for r in rs if r.out_of_memory]
        if oom:  # beyond the GPU's memory: not simulated, the footprint still drawn
            ax.plot(_ns(oom), [r.peak_hbm_bytes for r in oom], linestyle="none", marker="x", markersize=9,
                    color=line.get_color())
    capacity = {r.gpu: r.hbm_capacity_bytes for r in results}
    for i, (gpu, cap) in enumerate(capacity.items()):
        ax.axhline(cap, color="0.35", linestyle=":", linewidth=1.2 + 0.4 * i,
                   label=f"{gpu} capacity ({human_bytes(cap)})")
    _log_axes(ax, _ns(results), _bytes_formatter)
    ax.set(xlabel="sequence length N", ylabel="peak HBM allocated", title="memory footprint")
    _legend(fig)
    fig.suptitle(_problem_title(results), fontsize=10)
    return fig


# --------------------------------------------------------------------------- writing


def check_output(path) -> tuple[Path, str]:
    """The path and format a figure would be written to; :class:`PlotError` if it cannot be."""
    path = Path(path)
    fmt = path.suffix.lower().lstrip(".")
    if fmt not in FORMATS:
        raise PlotError(f"{path}: unknown format {path.suffix or '(no extension)'!r}; use .png, .svg or .pdf")
    problem = unwritable(path)
    if problem:
        raise PlotError(f"{path}: {problem}")
    return path, fmt


def save(fig: Figure, path) -> Path:
    """Write ``fig`` in the format its extension names, atomically: a temporary file, then a rename."""
    path, fmt = check_output(path)
    with atomic_open(path, "wb") as f:
        fig.savefig(f, format=fmt, dpi=PNG_DPI)
    return path


# --------------------------------------------------------------------------- series and styles


def _legend(fig) -> None:
    """One legend for all panels, each label once in the order first drawn, below them (beside a panel it
    ran into the figure's title)."""
    entries = {}
    for ax in fig.axes:
        for handle, label in zip(*ax.get_legend_handles_labels()):
            entries.setdefault(label, handle)
    columns = max(1, min(len(entries), int(fig.get_figwidth() / 3.3)))  # ~3.3 in. per label at 8 pt
    fig.legend(list(entries.values()), list(entries), loc="outside lower center", ncols=columns, fontsize=8,
               frameon=False)


def _nonempty(results) -> list:
    results = list(results)
    if not results:
        raise PlotError("no results to plot")
    return results


def _gpus(results) -> list:
    return list(dict.fromkeys(r.gpu for r in results))


def _signature(config: dict, swept: str = "seq_q") -> tuple:
    """What identifies a curve besides the GPU, the algorithm and the swept variable."""
    p, t = config["problem"], config["tiling"]
    return (p["head_dim"], p["batch"] * p["heads"], p["heads"] // p["kv_heads"], p["dtype"], p["causal"],
            p["backward"], config.get("mode", "plain"), t["block_m"], t["block_n"], t["grid_order"],
            tuple(p.get("seq_lens") or ()), None if swept == "window" else p.get("window"))


def _series(results, by=None, field: str = "seq_q") -> dict:
    """{(gpu, algo, signature): results sorted by the swept length ``field`` (or by ``by``)}, in order of
    first appearance."""
    out: dict = {}
    for r in results:
        sig = _signature(r.config, field) if by is None else ()
        out.setdefault((r.gpu, algo_label(r.config), sig), []).append(r)
    key = by or (lambda r: _length(r.config["problem"], field))
    return {k: sorted(v, key=key) for k, v in out.items()}


def _swept(results) -> str:
    """Which length the x axis shows: the KV length when the query length is one and the KV length
    varies (decode: ``--seq-len 1 --seq-k 1k:128k``), the window when only it varies (``--window
    512:8k``), else the sequence length N."""
    problems = [r.config["problem"] for r in results]
    if len({p["seq_q"] for p in problems}) == 1:
        if len({_length(p, "seq_k") for p in problems}) > 1:
            return "seq_k"
        if len({p.get("window") for p in problems}) > 1:
            return "window"
    return "seq_q"


def _length(problem: dict, field: str) -> int:
    """The swept length of a run: no window is the whole sequence; results written before seq_k was
    recorded have it equal to N."""
    return problem.get(field) or (problem.get("seq_k") if field == "window" else None) or problem["seq_q"]


def _style(key, results, gpu_in_label: bool = True) -> dict:
    """Colour by algorithm, marker by GPU; without the GPU in the label (a panel per GPU) one marker for all."""
    gpu, algo, sig = key
    label = (f"{algo} ({gpu})" if gpu_in_label else algo) + _shape_suffix(sig, algo, results)
    marker = GPU_MARKERS[_gpus(results).index(gpu) % len(GPU_MARKERS)] if gpu_in_label else "o"
    # an algorithm's several shapes (batch sizes, head dims) share its colour and differ in line style
    sigs = list(dict.fromkeys(_signature(r.config) for r in results if algo_label(r.config) == algo))
    style = SHAPE_STYLES[sigs.index(sig) % len(SHAPE_STYLES)] if sig in sigs else "-"
    return dict(color=ALGO_COLOUR.get(algo, "C7"), marker=marker, markersize=4, linewidth=1.5, linestyle=style,
                label=label)


def _shape_suffix(sig, algo, results) -> str:
    """The fields of ``sig`` that vary among ``algo``'s results (`` causal``, `` d=128``), or nothing.

    Per algorithm, because each resolves its own default tiles: standard's 128 × 128 beside
    flash2's 128 × 64 is not a difference the legend should spell out.
    """
    swept = _swept(results)
    sigs = {_signature(r.config, swept) for r in results if algo_label(r.config) == algo}
    if not sig or len(sigs) < 2:
        return ""
    varying = [i for i in range(len(sig)) if len({x[i] for x in sigs}) > 1]
    return " " + " ".join(_describe(sig)[i] for i in varying)


def _describe(sig) -> list:
    d, bh, group, dtype, causal, backward, mode, bm, bn, order, lengths, window = sig
    return [f"d={d}", f"B·H={bh}", f"GQA {group}", dtype, "causal" if causal else "non-causal",
            "fwd+bwd" if backward else "fwd", mode, f"block_m={bm}", f"block_n={bn}",
            f"{order} order", f"lengths {lengths_text(lengths)}" if lengths else "padded",
            f"W={window}" if window else "no window"]


def _problem_title(results) -> str:
    p = results[0].config["problem"]
    same = len({_signature(r.config)[:7] for r in results}) == 1  # tiles aside
    if not same:
        return "attention, several problem shapes"
    return (f"{p['dtype']}, d = {p['head_dim']}, batch {p['batch']} × {p['heads']} heads, "
            f"{'causal, ' if p['causal'] else ''}{'forward + backward' if p['backward'] else 'forward'}"
            f"{', ncu mode' if results[0].config.get('mode') == 'ncu' else ''}")


def _ns(results, field: str = "seq_q") -> list:
    return [_length(r.config["problem"], field) for r in results]


def _tile(r) -> tuple:
    """The (block_m, block_n) the run used (results record resolved tiles)."""
    tiling = r.config["tiling"]
    return tiling["block_m"], tiling["block_n"]


def _paper_lines(ax, results) -> None:
    """The paper's closed-form HBM accesses, dashed, once per algorithm and problem shape."""
    for (_gpu, algo, sig), rs in _series(results).items():
        label = f"paper formula: {algo}" + _shape_suffix(sig, algo, results)
        if label in [line.get_label() for line in ax.get_lines()]:
            continue
        counts = [sum(closed_forms.paper_bytes(RunConfig.from_dict(r.config)).values()) for r in rs]
        # wide and pale beneath the simulated lines, so it shows where it coincides with one
        ax.plot(_ns(rs), counts, color=ALGO_COLOUR.get(algo, "C7"), linestyle="--", linewidth=2.2, alpha=0.55,
                zorder=1.5, label=label)


# --------------------------------------------------------------------------- measurements


def _measured_cases(measured, results, need: str = "counters") -> list:
    """(gpu name, impl, case) for each measured case with a plotted result's algorithm, problem and N."""
    if measured is None:
        return []
    files = measured if isinstance(measured, (list, tuple)) else [measured]
    wanted = {(r.config["algo"], _signature(r.config)[:6], r.config["tiling"]["grid_order"],
               r.config["tiling"].get("splits"), r.config["problem"]["seq_q"], _length(r.config["problem"], "seq_k"))
              for r in results}
    out = []
    for m in files:
        for case in m.cases:
            if case.error or getattr(case, need) is None or case.run_config.get("algo") is None:
                continue
            config = RunConfig.from_dict(case.run_config).resolved().to_dict()
            key = (case.impl, _signature(config)[:6], config["tiling"]["grid_order"], config["tiling"].get("splits"),
                   config["problem"]["seq_q"], _length(config["problem"], "seq_k"))
            if key in wanted:
                out.append((m.provenance.gpu_name, case.impl, case))
    return out


def _measured_points(ax, cases, gpu, value, field: str = "seq_q") -> None:
    """One open-marker series per (measured GPU, impl) against the swept length ``field``; with ``gpu``
    only the cases measured on it."""
    groups: dict = {}
    for gpu_name, impl, case in cases:
        if gpu is None or _same_gpu(gpu, gpu_name):
            groups.setdefault((gpu_name, impl), []).append(case)
    for (gpu_name, impl), cs in groups.items():
        cs = sorted(cs, key=lambda c: _length(c.run_config["problem"], field))
        ax.plot([_length(c.run_config["problem"], field) for c in cs], [value(c) for c in cs], linestyle="none",
                marker="o", markersize=8, markerfacecolor="none", markeredgewidth=1.5,
                color=ALGO_COLOUR.get(impl, "C7"), label=f"measured {impl} ({gpu_name})")


def _same_gpu(profile_id: str, gpu_name: str) -> bool:
    """Whether a profile id (``h100-sxm``, ``rtx4090``) names the GPU a measurement reports."""
    return profile_id.split("-")[0].lower() in gpu_name.lower().replace(" ", "")


def _dram_bytes(case) -> float:
    return case.counters.dram_read_bytes + case.counters.dram_write_bytes


def _l2_bytes(case) -> float:
    return case.counters.l2_bytes


# --------------------------------------------------------------------------- axes


def _log_axes(ax, ns, fmt) -> None:
    _length_axis(ax, ns)
    ax.set_yscale("log")
    _y_ticks(ax, fmt)
    ax.grid(True, which="major", alpha=0.3)


def _length_axis(ax, ns) -> None:
    """A log₂ x axis with a tick at each plotted length, labelled 1K, 2K, ..."""
    ax.set_xscale("log", base=2)
    ax.xaxis.set_major_locator(FixedLocator(sorted(set(ns))))
    ax.xaxis.set_minor_locator(NullLocator())
    ax.xaxis.set_major_formatter(FuncFormatter(_n_formatter))


def _y_ticks(ax, fmt) -> None:
    """Labelled ticks at 1, 2, 5 × 10ᵏ when the data span under ~2 decades, else at the decades only."""
    ax.autoscale_view()
    lo, hi = ax.get_ylim()
    subs = (1.0, 2.0, 5.0) if hi / lo < 10 ** 2.3 else (1.0,)
    ax.yaxis.set_major_locator(LogLocator(base=10, subs=subs))
    ax.yaxis.set_major_formatter(FuncFormatter(fmt))
    ax.yaxis.set_minor_formatter(NullFormatter())


def _n_formatter(x, _pos=None) -> str:
    return f"{x / 1024:g}K" if x >= 1024 else f"{x:g}"


def _bytes_formatter(x, _pos=None) -> str:
    return human_bytes(x)


def _time_formatter(x, _pos=None) -> str:
    return human_time(x)


__all__ = ["PlotError", "io_vs_seqlen", "runtime_vs_seqlen", "block_sweep", "memory_vs_seqlen", "save",
           "check_output"]
