"""``iosim sweep``: the runs of a spec file, on local processes or a Dask cluster, into a results file."""
from __future__ import annotations

import sys
from pathlib import Path

import click

from iosim.files import unwritable


@click.command()
@click.argument("spec", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--out", "-o", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Results file (iosim-results JSON, what `iosim plot --from` reads). Runs already in it are "
                   "not simulated again. [default: the spec's name with .results.json]")
@click.option("--jobs", "-j", type=click.IntRange(min=1), default=1, show_default=True,
              help="Local worker processes.")
@click.option("--scheduler", default=None, metavar="tcp://HOST:PORT",
              help="Run on this Dask cluster (dask.distributed; its workers need iosim installed) instead of "
                   "local processes.")
@click.option("--fresh", is_flag=True, help="Ignore what the results file holds and simulate every run again.")
def sweep(spec, out, jobs, scheduler, fresh):
    """Simulate every run a SPEC.yaml describes and write them, in the spec's order, to one results file.

    \b
    A spec names each field once, as a value or a list; the runs are every combination:
      schema: iosim-sweep
      schema_version: 1
      gpu: [h100, a100]
      algo: [standard, flash2]
      problem: {seq_q: 1k:16k, head_dim: [64, 128], causal: [false, true]}
      tiling: {block_m: 128}

    Results are saved as they finish, so an interrupted sweep (Ctrl-C) keeps what finished and a rerun
    resumes from it. Points that cannot run (out of memory, tiles that do not fit) are kept as rows with
    their reason. Local processes and a Dask cluster give the same file, byte for byte.
    """
    from tqdm import tqdm

    from iosim import spec as specs
    from iosim import sweep as sweeps

    if jobs > 1 and scheduler:
        raise click.UsageError("--jobs and --scheduler are exclusive: local processes or a Dask cluster")
    try:
        work = specs.load_spec(spec)
    except specs.SpecError as e:
        raise click.BadParameter(str(e), param_hint="SPEC") from None
    out = out or spec.with_name(spec.name.rsplit(".", 1)[0] + ".results.json")
    problem = unwritable(out)
    if problem:
        raise click.BadParameter(f"{out}: {problem}", param_hint="--out")
    with tqdm(total=len(work), unit=" runs", desc="sweep", disable=None, file=sys.stderr, dynamic_ncols=True) as bar:
        try:
            results = sweeps.run(work, jobs=jobs, scheduler=scheduler, results_file=out, resume=not fresh,
                                 progress=lambda _: bar.update(1))
        except KeyboardInterrupt:
            bar.close()
            kept = len(sweeps.load_results(out)) if out.exists() else 0
            click.echo(f"interrupted: {kept} of {len(work)} runs kept in {out}; run again to resume", err=True)
            sys.exit(130)
    skipped = sum(isinstance(r, sweeps.Skipped) for r in results)
    click.echo(f"wrote {out} ({len(results)} runs" + (f", {skipped} skipped: see their reasons" if skipped else "")
               + ")")
