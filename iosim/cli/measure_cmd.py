"""``iosim measure`` and ``iosim calibrate``: the GPU side, run through the kernels extra (torch, triton)."""
from __future__ import annotations

import importlib
from pathlib import Path

import click

from iosim.hardware.profile import resolve_profile_path


def _kernels(module: str):
    """``iosim.kernels.<module>``, or a usage error naming the missing extra."""
    try:
        return importlib.import_module(f"iosim.kernels.{module}")
    except ImportError as e:  # torch or triton missing
        raise click.UsageError(f"needs the kernels extra (pip install -e '.[kernels]'): {e}") from None


@click.command()
@click.option("--out", required=True, type=click.Path(file_okay=False),
              help="Folder for measurements.json and measurements.csv (created if missing).")
@click.option("--grid", type=click.Choice(["default", "smoke"]), default="default", show_default=True,
              help="default: the 61-case data set (standard, flash1, flash2, eager PyTorch, SDPA); smoke: 8 small cases.")
@click.option("--no-ncu", is_flag=True, help="Timings only, without Nsight Compute counters.")
@click.option("--warmup-ms", type=float, default=25, show_default=True, help="do_bench warm-up budget per case.")
@click.option("--rep-ms", type=float, default=100, show_default=True, help="do_bench measuring budget per case.")
def measure(out, grid, no_ncu, warmup_ms, rep_ms):
    """Time our Triton kernels and PyTorch SDPA on this GPU and read Nsight Compute counters.

    Each case: median time from triton.testing.do_bench on random inputs after warm-up, then one
    call under `ncu --clock-control none --cache-control all` for DRAM read/write bytes, L2 bytes,
    hit rate and duration summed over the call's kernels. Writes one JSON (and a CSV twin) with
    provenance — GPU, driver, CUDA, torch, triton, ncu, date, command — and each case's full
    kernel configuration, rewritten after every batch so a cut-short run keeps what finished.
    Without ncu, or without permission to read counters, it records timings and the reason.
    """
    harness = _kernels("harness")
    path = Path(out) / "measurements.json"
    try:
        m = harness.measure(harness.GRIDS[grid](), path, ncu=not no_ncu, warmup_ms=warmup_ms, rep_ms=rep_ms,
                            progress=lambda s: click.echo(s, err=True))
    except harness.HarnessError as e:
        raise click.UsageError(str(e)) from None
    failed = sum(c.error is not None for c in m.cases)
    counted = sum(c.counters is not None for c in m.cases)
    click.echo(f"wrote {path}: {len(m.cases)} cases, {failed} failed, {counted} with counters")


@click.command()
@click.option("--base", default="h100", show_default=True, metavar="NAME|FILE",
              help="Profile whose datasheet numbers the measurements refine.")
@click.option("--out", required=True, type=click.Path(dir_okay=False),
              help="Calibrated profile to write (same schema; accepted by --gpu everywhere).")
def calibrate(base, out):
    """Measure what the datasheet only promises and write a calibrated profile.

    Microbenchmarks: DRAM copy bandwidth, L2 read bandwidth (every SM re-reading 8 MiB), tensor-core
    throughput of our kernels' tile loop and of cuBLAS, launch overhead, and L2/DRAM load latency
    (a pointer chase). Measured fields carry "measured: iosim calibrate, <gpu>, <date>" as source.
    """
    cal = _kernels("calibrate")
    base_path = resolve_profile_path(base)
    try:
        cal.calibrate(base_path, Path(out), progress=click.echo)  # one-line refusal without a CUDA GPU
    except cal.HarnessError as e:
        raise click.UsageError(str(e)) from None
    click.echo(f"wrote {out}")


COMMANDS = [measure, calibrate]
