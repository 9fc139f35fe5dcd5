"""``iosim validate``: predictions against measured counters and times, case by case."""
from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path

import click

from iosim.files import unwritable
from iosim.measure.measurement import IMPLS, committed_set
from iosim.measure.validate import METRICS, caveat_split, summary, validate_files
from iosim.results.report import human_bytes, human_time


@click.command()
@click.argument("files", nargs=-1, type=click.Path(exists=True, dir_okay=False))
@click.option("--live", is_flag=True, help="Measure on this machine's GPU first (iosim measure), then validate.")
@click.option("--grid", type=click.Choice(["default", "smoke"]), default="smoke", show_default=True,
              help="With --live: the cases to measure.")
@click.option("--out", type=click.Path(file_okay=False), default=None,
              help="With --live: folder for the measurement file. [default: a temporary folder]")
@click.option("--gpu", default=None, metavar="NAME|FILE",
              help="Profile to simulate with. [default: the measured GPU's calibrated profile, else its built-in one]")
@click.option("--json", "as_json", is_flag=True,
              help='Print {"summary": ..., "cases": [{"config", "predicted", "measured", ...}]}.')
@click.option("--plots", type=click.Path(file_okay=False), default=None,
              help="Folder to write validation_scatter.png and validation_error_vs_n.png into (made if missing).")
@click.option("--impl", "impls", default=None, metavar="IMPL[,IMPL]",
              help="Only the cases of these implementations (a case's impl: flash2, flash1, standard, "
                   "standard_eager, flash_decode, kernel, sdpa_cudnn, sdpa_flash, flex; ours: all but PyTorch's "
                   "SDPA and FlexAttention). [default: all]")
@click.option("--kernels", "per_kernel", is_flag=True,
              help="Under each case, its kernels: each simulated kernel beside the launch it stands for (CTAs "
                   "simulated, grid launched), DRAM bytes, crossbar bytes, L2 lookups and time, predicted and measured.")
@click.option("--jobs", "-j", "workers", type=click.IntRange(min=1), default=1, show_default=True,
              help="Worker processes for the cases (each is simulated on its own; the results are the same).")
@click.option("--per-cta", "per_cta", is_flag=True,
              help="Simulate each case one CTA at a time, one loop iteration a step: the reference run the default "
                   "(CTAs launched together stepped as one cohort) stands for. Seconds to a minute a case rather "
                   "than a fraction of a second; on forwards of several waves nearer the GPU, whose waves drift "
                   "apart as the per-CTA run's do (docs/validation.md).")
def validate(files, live, grid, out, gpu, as_json, plots, impls, per_kernel, workers, per_cta):
    """Compare iosim's predictions with measured DRAM bytes, L2 bytes and time, case by case.

    FILES are measurement files written by `iosim measure` (default: the committed H100 set). Each
    case is simulated exactly as it ran — algorithm, tiles, warps, stages, grid order, dtype — on the
    measured GPU's profile, with the L2 flushed before every kernel when Nsight Compute did so. The
    table shows predicted, measured and the error; the paper's closed-form DRAM count stands beside
    it. The summary gives median and max |error| per metric and the worst cases.
    """
    source = click.get_current_context().get_parameter_source
    for option, name in (("--grid", "grid"), ("--out", "out")):
        if not live and source(name) != click.core.ParameterSource.DEFAULT:
            raise click.UsageError(f"{option} applies with --live (what to measure, and where); add --live or drop it")
    for option, folder in (("--plots", plots), ("--out", out)):
        problem = folder and unwritable(folder, folder=True)
        if problem:
            raise click.BadParameter(f"{folder}: {problem}", param_hint=option)
    wanted = _impls(impls)
    if live:
        files = (_measure_live(grid, out),)
    files = files or (str(committed_set("h100")),)
    from tqdm import tqdm

    # cases simulated, on stderr on a terminal only (tqdm's disable=None), once the work takes a second
    with tqdm(total=0, unit=" cases", desc="validating", delay=1.0, leave=False, disable=None, file=sys.stderr,
              dynamic_ncols=True) as bar:
        def progress(done: int, total: int, name: str) -> None:
            bar.total = total
            bar.set_postfix_str(name[:40], refresh=False)
            bar.update(done - bar.n)

        results, skipped = validate_files(files, gpu, progress=progress, impls=wanted, jobs=workers,
                                          aggregate=not per_cta)
    if wanted and not results and not skipped:
        raise click.BadParameter(f"no case of {', '.join(Path(f).name for f in files)} is of {', '.join(wanted)}",
                                 param_hint="--impl")
    stats = summary(results)
    split = caveat_split(results)
    if as_json:
        click.echo(json.dumps({"summary": stats, "per_cta": per_cta, "cases": [r.to_dict() for r in results],
                               "skipped": [{"name": n, "why": w} for n, w in skipped],
                               **({"caveats": split} if split else {})}, indent=2))
    else:
        click.echo(_table(results, per_kernel))
        click.echo("")
        click.echo(_summary_text(stats))
        if split:
            click.echo("\nDRAM |err| by where the model is least certain (iosim simulate's caveats): " + "; ".join(
                f"{name} {g['cases']} case{'s' if g['cases'] != 1 else ''} {_abs_pct(g['median_abs_error'])}"
                for name, g in split.items()))
        if skipped:
            click.echo(f"\nnot compared ({len(skipped)}): " + "; ".join(f"{n} ({w})" for n, w in skipped))
    if plots:
        _write_plots(results, Path(plots))


def _impls(text: str | None) -> tuple | None:
    """The --impl names, each one a case's impl or ``ours``; a one-line error names an unknown one."""
    if not text:
        return None
    names = tuple(x.strip() for x in text.split(",") if x.strip())
    allowed = ("ours",) + IMPLS
    unknown = [n for n in names if n not in allowed]
    if unknown or not names:
        raise click.BadParameter(f"{(unknown or [text])[0]!r}: must be one of {', '.join(allowed)}", param_hint="--impl")
    return names


def _measure_live(grid: str, out: str | None) -> str:
    try:
        from iosim.kernels import harness
    except ImportError as e:
        raise click.UsageError(f"--live needs the kernels extra (pip install -e '.[kernels]'): {e}") from None
    folder = Path(out or tempfile.mkdtemp(prefix="iosim-live-"))
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "measurements.json"
    try:
        harness.measure(harness.GRIDS[grid](), path, progress=lambda s: click.echo(s, err=True))
    except harness.HarnessError as e:
        raise click.UsageError(str(e)) from None
    return str(path)


def _pct(x) -> str:
    return "—" if x is None else f"{100 * x:+.1f}%"


def _abs_pct(x) -> str:
    return "—" if x is None else f"median {100 * x:.1f}%"


def _kernel_rows(r) -> list:
    """The lines ``--kernels`` adds under a case: one a kernel, the measured launch's name where it differs."""
    lines = []
    for k in r.kernels:
        p, m, e = k["predicted"], k["measured"], k["error"]
        name = k["name"] or "(not simulated)"
        if k["measured_name"] is None:
            name += " (not measured)"
        elif k["measured_name"] != k["name"]:
            name += f" = {k['measured_name'][:40]}"
        ctas = "—" if k["ctas"] is None else str(k["ctas"])
        grid = "—" if k["grid"] is None else "x".join(str(g) for g in k["grid"])
        lines.append(f"    {name[:58]:58s} {ctas:>7s} CTAs  grid {grid:>11s}  DRAM {_b(p.get('dram_bytes')):>9s} "
                     f"{_b(m.get('dram_bytes')):>9s} {_pct(e.get('dram_bytes')):>7s}  xbar {_b(p.get('xbar_bytes')):>9s} "
                     f"{_b(m.get('xbar_bytes')):>9s} {_pct(e.get('xbar_bytes')):>7s}  lookups "
                     f"{_b(p.get('l2_lookup_bytes')):>9s} {_b(m.get('l2_lookup_bytes')):>9s} "
                     f"{_pct(e.get('l2_lookup_bytes')):>7s}  time "
                     f"{_t(p.get('time_s')):>9s} {_t(m.get('time_s')):>9s} {_pct(e.get('time_s')):>7s}")
    return lines


def _t(x) -> str:
    return "—" if x is None else human_time(x)


def _table(results, per_kernel: bool = False) -> str:
    head = (f"{'case':52s} {'DRAM pred':>10s} {'DRAM meas':>10s} {'err':>7s} {'paper':>9s} {'err':>8s} "
            f"{'xbar pred':>9s} {'xbar meas':>9s} {'err':>7s} {'L2 lookups':>10s} {'meas':>9s} {'err':>7s} "
            f"{'time pred':>9s} {'meas':>9s} {'err':>7s}  caveat")
    lines = [head]
    for r in results:
        p, m = r.predicted, r.measured
        paper = r.paper.get("dram_bytes")  # none for a decode step: the paper counts square problems
        paper_err = (paper - m["dram_bytes"]) / m["dram_bytes"] if m.get("dram_bytes") and paper is not None else None
        # measured slice lookups where counted, else every L2 tag lookup (older files' lts__t_bytes)
        lookups = m.get("l2_lookup_bytes", m.get("l2_bytes"))
        lookup_err = r.error("l2_lookup_bytes") if "l2_lookup_bytes" in m else r.error("l2_bytes")
        lines.append(
            f"{r.name[:52]:52s} {human_bytes(p['dram_bytes']):>10s} {_b(m.get('dram_bytes')):>10s} "
            f"{_pct(r.error('dram_bytes')):>7s} {_b(paper):>9s} {_pct(paper_err):>8s} "
            f"{human_bytes(p['xbar_bytes']):>9s} {_b(m.get('xbar_bytes')):>9s} {_pct(r.error('xbar_bytes')):>7s} "
            f"{human_bytes(p['l2_lookup_bytes']):>10s} {_b(lookups):>9s} {_pct(lookup_err):>7s} "
            f"{human_time(p['time_s']):>9s} {human_time(m['time_s']):>9s} {_pct(r.error('time_s')):>7s}"
            f"{'  ' + ','.join(r.regimes) if r.regimes else ''}")
        if per_kernel:
            lines += _kernel_rows(r)
    return "\n".join(lines)


def _b(x) -> str:
    return "—" if x is None else human_bytes(x)


def _summary_text(stats) -> str:
    lines = [f"{'metric':18s} {'cases':>5s} {'median |err|':>12s} {'max |err|':>10s}  within 1.35×  worst"]
    for metric in METRICS + ("paper_dram_bytes",):
        s = stats.get(metric)
        if not s:
            continue
        worst = ", ".join(f"{w['name']} ({_pct(w['error'])})" for w in s.get("worst", []))
        within = {True: "yes", False: "no"}.get(s.get("within_1_35x"), "")
        lines.append(f"{metric:18s} {s['cases']:5d} {100 * s['median_abs_error']:11.1f}% "
                     f"{100 * s['max_abs_error']:9.1f}%  {within:12s}  {worst}")
    return "\n".join(lines)


def _write_plots(results, folder: Path) -> None:
    from iosim.figures.plots import save
    from iosim.figures.validation import error_vs_n, scatter

    folder.mkdir(parents=True, exist_ok=True)
    gpu = results[0].gpu if results else "?"
    for name, fig in (("validation_scatter.png", scatter(results, gpu)),
                      ("validation_error_vs_n.png", error_vs_n(results, gpu))):
        click.echo(f"wrote {save(fig, folder / name)}", err=True)


