"""``iosim plot``: figures of simulated (or saved) results, measured points overlaid."""
from __future__ import annotations

import sys
from pathlib import Path

import click

from iosim import sweep
from iosim.cli.simulate_cmd import parse_algos, parse_sizes
from iosim.figures import plots as plotting
from iosim.files import unwritable
from iosim.hardware.profile import ProfileError, load_profile
from iosim.measure.measurement import MeasurementError, load_measurement
from iosim.schedule.problem import DTYPE_BYTES, MODES, Problem, RunConfig, Tiling

DEFAULT_ALGOS = "standard,flash1,flash2"
DEFAULT_TILING = Tiling()  # every algorithm's own defaults


# --------------------------------------------------------------------------- option callbacks


def _gpus(ctx, param, value):
    given = [g.strip() for v in value for g in v.split(",")]
    names = [g for g in given if g]
    if value and not names:
        raise click.BadParameter("no GPU given; see `iosim profiles` for the built-in ones")
    paths = {}
    for name in names or ["a100"]:
        try:
            paths.setdefault(load_profile(name).path, name)  # an alias and its id name one GPU: once
        except ProfileError as e:
            raise click.BadParameter(str(e)) from None
    return list(paths.values())


def _algos(ctx, param, value):
    return parse_algos(ctx, param, value or (DEFAULT_ALGOS,))


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


def sweep_options(seq_default: str, seq_callback=parse_sizes):
    """The options every ``iosim plot`` command shares: what to simulate, how, and where results go."""
    options = [
        click.option("--gpu", multiple=True, callback=_gpus, metavar="NAME|FILE",
                     help="GPU profile(s), built-in name or YAML file; repeat or comma-separate. [default: a100]"),
        click.option("--algo", multiple=True, callback=_algos, metavar="ALGO",
                     help=f"Algorithm(s), comma-separated. [default: {DEFAULT_ALGOS}]"),
        click.option("--seq-len", "seq", default=seq_default, show_default=True, callback=seq_callback,
                     help="Sequence length(s) N: a list (1k,4k) or a doubling range (512:64k)."),
        click.option("--head-dim", "-d", type=int, default=64, show_default=True, help="Head dimension d."),
        click.option("--batch", "-b", type=int, default=4, show_default=True, help="Batch size."),
        click.option("--heads", type=int, default=16, show_default=True, help="Query heads."),
        click.option("--dtype", type=click.Choice(list(DTYPE_BYTES)), default="fp16", show_default=True,
                     help="Element type of Q, K, V and O."),
        click.option("--causal", is_flag=True, help="Causal mask."),
        click.option("--backward", is_flag=True, help="Forward and backward pass."),
        click.option("--mode", type=click.Choice(MODES), default="plain", show_default=True,
                     help="plain: L2 contents carry across kernels; ncu: L2 flushed before each kernel."),
        click.option("--jobs", "-j", type=click.IntRange(min=1), default=1, show_default=True,
                     help="Worker processes for the simulations."),
        click.option("--save", type=PATH, callback=_save_path, default=None,
                     help="Also write the simulated results to this JSON file (re-plot it with --from); written "
                          "as runs finish, and runs already in it are not simulated again."),
        click.option("--from", "saved", type=PATH, callback=_saved_results, default=None,
                     help="Plot the results saved in this file instead of simulating; the options above "
                          "that describe a simulation are then ignored."),
        click.option("--output", "-o", type=PATH, required=True, callback=_output,
                     help="Figure file; the format follows the extension: .png, .svg or .pdf."),
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
    """


@plot.command()
@sweep_options("1k:16k")
@measured_option
def io(output, measured, **opts):
    """Bytes read + written per level (HBM, L2, SRAM) against N, log-log, with the paper's closed forms.

    One line per GPU and algorithm; the FlashAttention paper's HBM access counts (no cache) dashed in
    the algorithm's colour; with --measured, the matching cases' DRAM and L2 counters as open markers.
    """
    _write(plotting.io_vs_seqlen(_simulated(_results(opts)), measured=measured), output)


@plot.command()
@sweep_options("1k:16k")
@measured_option
def runtime(output, measured, **opts):
    """Predicted time against N, log-log; with --measured, the matching cases' median times as markers."""
    _write(plotting.runtime_vs_seqlen(_simulated(_results(opts)), measured=measured), output)


@plot.command()
@sweep_options("4k", seq_callback=_one_size)
@click.option("--block-m", default="64,128", show_default=True, callback=_blocks,
              help="Rows of Q per tile (B_r), comma-separated; every pair with --block-n is simulated.")
@click.option("--block-n", default="32,64,128", show_default=True, callback=_blocks,
              help="Rows of K/V per tile (B_c), comma-separated.")
def blocks(output, block_m, block_n, **opts):
    """HBM bytes and time against the tile shape (block_m × block_n) at one sequence length."""
    tilings = [Tiling(block_m=m, block_n=n) for m in block_m for n in block_n]
    _write(plotting.block_sweep(_simulated(_results(opts, tilings))), output)


@plot.command()
@sweep_options("1k:16k")
def memory(output, **opts):
    """Peak HBM footprint against N, log-log, with each GPU's memory capacity as a dotted line; points
    beyond it (not simulated: out of memory) are marked ×."""
    _write(plotting.memory_vs_seqlen(_results(opts)), output)


# --------------------------------------------------------------------------- shared steps


def _results(opts: dict, tilings: tuple = (DEFAULT_TILING,)) -> list:
    """The saved results of --from, or a sweep of every GPU × algorithm × tiling × N (saved if --save)."""
    if opts["saved"] is not None:
        results = opts["saved"]
    else:
        configs = [
            RunConfig(algo=a, problem=Problem(batch=opts["batch"], heads=opts["heads"], seq_q=n,
                                              head_dim=opts["head_dim"], dtype=opts["dtype"],
                                              causal=opts["causal"], backward=opts["backward"]),
                      tiling=t, mode=opts["mode"])
            for a in opts["algo"] for t in tilings for n in opts["seq"]
        ]
        work = [(c, g) for g in opts["gpu"] for c in configs]
        hidden = len(work) < 4 or not sys.stderr.isatty()
        with click.progressbar(length=len(work), label="simulating", file=sys.stderr, hidden=hidden) as bar:
            results = sweep.run(work, jobs=opts["jobs"], progress=lambda _: bar.update(1),
                                results_file=opts["save"])  # saved as they finish; a rerun resumes
    if opts["save"] is not None:
        sweep.save_results(results, opts["save"])
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


def _write(fig, output) -> None:
    plotting.save(fig, output)
    click.echo(f"wrote {output}")


