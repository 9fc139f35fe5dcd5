"""``iosim plot``: figures of simulated (or saved) results, measured points overlaid."""
from __future__ import annotations

import sys
from pathlib import Path

import click

from iosim import sweep
from iosim.cli.options import parse_sizes, run_configs, run_options
from iosim.figures import plots as plotting
from iosim.files import atomic_write_text, unwritable
from iosim.measure.measurement import MeasurementError, load_measurement
from iosim.results.report import csv_text
from iosim.schedule.problem import Tiling

DEFAULT_ALGOS = "standard,flash1,flash2"


# --------------------------------------------------------------------------- option callbacks


def _one_size(ctx, param, value):
    sizes = parse_sizes(ctx, param, value)
    if len(sizes) != 1:
        raise click.BadParameter(f"{value!r}: give one sequence length for a block sweep")
    return sizes


def _blocks(ctx, param, value):
    try:
        return [int(x) for x in value.replace(" ", "").split(",") if x]
    except ValueError:
        raise click.BadParameter(f"{value!r}: give tile sizes like 64,128") from None


def _output(ctx, param, value):
    try:
        return plotting.check_output(value)[0]
    except plotting.PlotError as e:
        raise click.BadParameter(str(e)) from None


def _save_path(ctx, param, value):
    problem = None if value is None else unwritable(value)
    if problem:
        raise click.BadParameter(f"{value}: {problem}")
    return value


def _saved_results(ctx, param, value):
    try:
        return None if value is None else sweep.load_results(value)
    except sweep.SweepError as e:
        raise click.BadParameter(str(e)) from None


def _measurement(ctx, param, value):
    try:
        return None if value is None else load_measurement(value)
    except MeasurementError as e:
        raise click.BadParameter(str(e)) from None


PATH = click.Path(dir_okay=False, path_type=Path)


def sweep_options(seq_default: str, seq_callback=parse_sizes, tiles: bool = True):
    """The options every ``iosim plot`` command shares: the runs (as ``iosim simulate`` takes them),
    and where results go."""
    options = [
        run_options(seq_default, DEFAULT_ALGOS, seq_callback, tiles),
        click.option("--save", type=PATH, callback=_save_path, default=None,
                     help="Also write the simulated results to this JSON file (re-plot it with --from); written "
                          "as runs finish, and runs already in it are not simulated again."),
        click.option("--from", "saved", type=PATH, callback=_saved_results, default=None,
                     help="Plot the results saved in this file (or printed by `iosim simulate --json`) instead "
                          "of simulating; the options above that describe a simulation are then ignored."),
        click.option("--output", "-o", type=PATH, required=True, callback=_output,
                     help="Figure file; the format follows the extension: .png, .svg or .pdf. The plotted "
                          "numbers are written beside it as CSV (same name, .csv)."),
    ]

    def decorate(f):
        for option in reversed(options):
            f = option(f)
        return f

    return decorate


measured_option = click.option("--measured", type=PATH, callback=_measurement, default=None,
                               help="Measurement file (iosim measure) whose matching cases are overlaid.")


# --------------------------------------------------------------------------- commands


@click.group()
def plot():
    """Figures of simulation results: bytes per memory level, time, block sweeps, footprint.

    \b
      iosim plot io -o io.png --gpu a100,h100 --seq-len 512:16k
      iosim plot io -o io.png --gpu h100 --measured experiments/measurements/h100/measurements.json
      iosim plot runtime -o t.svg --save runs.json ; iosim plot runtime -o t.pdf --from runs.json
      iosim plot blocks -o blocks.png --algo flash2 --seq-len 4k --block-m 64,128 --block-n 32,64,128
      iosim plot bandwidth -o bw.png --algo flash2,flash_decode --seq-len 1 --seq-k 1k:128k --batch 1,8,64
    """


@plot.command()
@sweep_options("1k:16k")
@measured_option
@click.option("--by-gpu", is_flag=True, help="A column of panels per GPU (a row per level) instead of one panel per level.")
def io(output, measured, by_gpu, **opts):
    """Bytes read + written per level (HBM, L2, SRAM) against N, log-log, with the paper's closed forms.

    One line per GPU and algorithm; the FlashAttention paper's HBM access counts (no cache) dashed in
    the algorithm's colour; with --measured, the matching cases' DRAM and L2 counters as open markers.
    """
    runs = _simulated(_results(opts))
    _write(plotting.io_vs_seqlen(runs, measured=measured, by_gpu=by_gpu), output, runs)


@plot.command()
@sweep_options("1k:16k")
@measured_option
def runtime(output, measured, **opts):
    """Predicted time against N, log-log; with --measured, the matching cases' median times as markers."""
    runs = _simulated(_results(opts))
    _write(plotting.runtime_vs_seqlen(runs, measured=measured), output, runs)


@plot.command()
@sweep_options("4k", seq_callback=_one_size, tiles=False)
@click.option("--block-m", default="64,128", show_default=True, callback=_blocks,
              help="Rows of Q per tile (B_r), comma-separated; every pair with --block-n is simulated.")
@click.option("--block-n", default="32,64,128", show_default=True, callback=_blocks,
              help="Rows of K/V per tile (B_c), comma-separated.")
def blocks(output, block_m, block_n, **opts):
    """HBM bytes and time against the tile shape (block_m × block_n) at one sequence length."""
    tilings = [Tiling(block_m=m, block_n=n, warps=opts["warps"], stages=opts["stages"], grid_order=opts["grid_order"],
                      splits=opts.get("splits"), persistent=opts.get("persistent"))
               for m in block_m for n in block_n]
    runs = _simulated(_results(opts, tilings))
    _write(plotting.block_sweep(runs), output, runs)


@plot.command()
@sweep_options("1k:16k")
def bandwidth(output, **opts):
    """Achieved HBM bandwidth (a fraction of the datasheet's) against N, or against the KV length when
    N is one value and --seq-k several (decode: --seq-len 1 --seq-k 1k:128k --algo flash_decode)."""
    runs = _simulated(_results(opts))
    from iosim.hardware.profile import load_profile  # the results' GPUs, also those of --from

    peak = {gpu: load_profile(gpu).hbm_bandwidth for gpu in dict.fromkeys(r.gpu for r in runs)}
    _write(plotting.bandwidth_vs_length(runs, peak), output, runs)


@plot.command()
@sweep_options("1k:16k")
def memory(output, **opts):
    """Peak HBM footprint against N, log-log, with each GPU's memory capacity as a dotted line; points
    beyond it (not simulated: out of memory) are marked ×."""
    results = _results(opts)
    _write(plotting.memory_vs_seqlen(results), output, results)


# --------------------------------------------------------------------------- shared steps


def _results(opts: dict, tilings: list | None = None) -> list:
    """The saved results of --from, or a sweep of every GPU × algorithm × tiling × N (saved if --save, as
    the runs finish)."""
    if opts["saved"] is not None:
        results = opts["saved"]
        if opts["save"] is not None:
            sweep.save_results(results, opts["save"])
    else:
        configs = run_configs(opts, None if tilings is None else list(tilings))
        work = [(c, g) for g in opts["gpu"] for c in configs]
        hidden = len(work) < 4 or not sys.stderr.isatty()
        with click.progressbar(length=len(work), label="simulating", file=sys.stderr, hidden=hidden) as bar:
            results = sweep.run(work, jobs=opts["workers"], progress=lambda _: bar.update(1),
                                results_file=opts["save"])  # saved as they finish; a rerun resumes
    if opts["save"] is not None:
        click.echo(f"wrote {opts['save']} ({len(results)} runs)")
    return results


def _simulated(results: list) -> list:
    """The runs that were simulated; each skipped one is named on stderr with its reason."""
    for r in results:
        if isinstance(r, sweep.Skipped):
            p = r.config["problem"]
            click.echo(f"skipped: {r.config['algo']} N={p['seq_q']} on {r.gpu}: {r.reason}", err=True)
    runs = [r for r in results if not isinstance(r, sweep.Skipped)]
    if not runs:
        raise click.UsageError("no point of the sweep could be simulated (see the reasons above)")
    return runs


def _write(fig, output: Path, results: list) -> None:
    """The figure, and beside it (same name, .csv) the runs it plots, one row each, every column."""
    plotting.save(fig, output)
    data = output.with_suffix(".csv")
    atomic_write_text(data, csv_text(results))
    click.echo(f"wrote {output} and {data.name}")


