"""``iosim measure`` and ``iosim calibrate``: the GPU side, run through the kernels extra (torch, triton)."""
from __future__ import annotations

import importlib
from pathlib import Path

import click
from click.core import ParameterSource

from iosim.files import unwritable
from iosim.hardware.profile import resolve_profile_path
from iosim.schedule.problem import CAUSAL_ALIGNS, ConfigError


def _kernels(module: str):
    """``iosim.kernels.<module>``, or a usage error naming the missing extra."""
    try:
        return importlib.import_module(f"iosim.kernels.{module}")
    except ImportError as e:  # torch or triton missing
        raise click.UsageError(f"needs the kernels extra (pip install -e '.[kernels]'): {e}") from None


@click.command()
@click.option("--out", required=True, type=click.Path(file_okay=False),
              help="Folder for measurements.json and measurements.csv (created if missing).")
@click.option("--grid", type=click.Choice(["default", "smoke", "h200", "decode", "paged", "paged_flex", "lone",
                                                "varlen", "window", "foreign", "hopper", "sdpa", "fp8", "smem",
                                                "dq", "sdpa_small", "small", "sdpa_split",
                                                "sdpa_split2"]),
              default="default",
              show_default=True,
              help="default: the 61-case data set (standard, flash1, flash2, eager PyTorch, SDPA); smoke: 8 small "
                   "cases; h200: default plus long causal d=128 cases; decode: 34 inference cases (flash_decode "
                   "at batch 1-256, KV 1K-256K, GQA, splits; flash2 and SDPA beside it); paged: 18 decode cases, "
                   "the KV cache contiguous and in pages of 16-256 tokens; paged_flex: 11 decode cases, FlexAttention on "
                   "a paged cache (PyTorch's PagedAttention) beside flash_decode on the same pages; lone: 8 decode "
                   "cases with fewer CTAs than SMs (one CTA's pass alone on its SM, 16-64 query rows, contiguous and "
                   "ragged); varlen: 16 variable-length batches "
                   "(prefill and decode, FlexAttention beside them); window: 12 sliding-window cases (prefill and "
                   "decode, FlexAttention beside them); foreign: the cases of "
                   "experiments/foreign_kernels/manifest.yaml; hopper: 20 cases, kernels/flash_hopper.py (TMA) "
                   "forward and forward + backward, SDPA cuDNN and flash on its shapes; sdpa: 24 cases, SDPA cuDNN and "
                   "flash on shapes held out from their models (d = 64/128, N = 2K-16K, causal, GQA, bf16); fp8: 5 cases, "
                   "kernels/flash_hopper.py's fp8 (e4m3) forward on the hopper grid's shapes; smem: 11 cases whose "
                   "loops move much through shared memory (16 x 16 tiles, decode, backward), its wavefronts counted; "
                   "dq: 12 cases, flash2's backward with dQ in a kernel of its own (--dq separate) beside the atomic one; "
                   "sdpa_small: 18 cases, SDPA flash and cuDNN where FlashAttention-2 splits the K/V length (small "
                   "grids) and forward + backward at new shapes; small: 10 cases, standard attention (ours, eager) on "
                   "small problems, flash1 and flash2 beside; sdpa_split: 7 cases, SDPA flash at more shapes where it "
                   "splits; sdpa_split2: 6 more, many splits.")
@click.option("--kernel", metavar="FILE.py:FN", help="Measure one user Triton kernel fn(q, k, v, causal, sm_scale) "
              "instead of a grid.")
@click.option("--manifest", type=click.Path(exists=True, dir_okay=False), metavar="FILE.yaml",
              help="Measure the cases of a kernel manifest instead of a grid: a YAML list of {kernel: FILE.py:FN, "
                   "algo, pass, problem: {batch, heads, kv_heads, seq_q, seq_k, head_dim, dtype, causal, causal_align}}, "
                   "each FILE "
                   "relative to the manifest (as experiments/foreign_kernels/manifest.yaml).")
@click.option("--algo", type=click.Choice(["flash2", "flash1", "standard"]), default="flash2", show_default=True,
              help="The schedule that models --kernel.")
@click.option("--pass", "pass_", type=click.Choice(["fwd", "fwd_bwd"]), default="fwd", show_default=True,
              help="--kernel: forward, or forward + backward through autograd.")
@click.option("--batch", type=click.IntRange(min=1), default=4, show_default=True, help="--kernel: batch size.")
@click.option("--heads", type=click.IntRange(min=1), default=16, show_default=True, help="--kernel: query heads.")
@click.option("--kv-heads", type=click.IntRange(min=1), help="--kernel: key/value heads (default: --heads).")
@click.option("--seq-len", type=click.IntRange(min=1), default=4096, show_default=True,
              help="--kernel: sequence length (queries, and keys unless --seq-k).")
@click.option("--seq-k", type=click.IntRange(min=1), default=None, help="--kernel: key/value length (default: --seq-len).")
@click.option("--head-dim", type=click.IntRange(min=1), default=64, show_default=True, help="--kernel: head dim.")
@click.option("--dtype", type=click.Choice(["fp16", "bf16", "fp32", "fp8"]), default="fp16", show_default=True,
              help="--kernel: element type (fp8: e4m3 inputs, V transposed to (B, Hkv, d, N) as FlashAttention-3 "
                   "takes it; forward only).")
@click.option("--causal", is_flag=True, help="--kernel: causal mask.")
@click.option("--causal-align", type=click.Choice(CAUSAL_ALIGNS), default="top-left", show_default=True,
              help="--kernel: where your kernel's causal diagonal sits when --seq-k differs from --seq-len (top-left: "
                   "row i sees keys j <= i; bottom-right: j <= i + Nk - N); it is recorded, not passed to the kernel.")
@click.option("--no-ncu", is_flag=True, help="Timings only, without Nsight Compute counters.")
@click.option("--warmup-ms", type=float, default=25, show_default=True, help="do_bench warm-up budget per case.")
@click.option("--rep-ms", type=float, default=100, show_default=True, help="do_bench measuring budget per case.")
def measure(out, grid, kernel, manifest, algo, pass_, batch, heads, kv_heads, seq_len, seq_k, head_dim, dtype, causal,
            causal_align, no_ncu, warmup_ms, rep_ms):
    """Time our Triton kernels and PyTorch SDPA on this GPU and read Nsight Compute counters.

    Each case: median time from triton.testing.do_bench on random inputs after warm-up, then one
    call under `ncu --clock-control none --cache-control all` for DRAM read/write bytes, L2 bytes,
    hit rate and duration summed over the call's kernels, and per kernel crossbar bytes, L2 slice
    lookups, L2 request-coalescer sectors, warp instructions per pipe, spills, occupancy and the SM
    clock (those this GPU's ncu lists; the others are named in the provenance). Writes one JSON (and a CSV twin) with
    provenance — GPU, driver, CUDA, torch, triton, ncu, date, command — and each case's full
    kernel configuration, rewritten after every batch so a cut-short run keeps what finished.
    Without ncu, or without permission to read counters, it records timings and the reason.
    """
    if kernel and manifest:
        raise click.UsageError("--kernel and --manifest: give one (a manifest names its kernels)")
    problem = unwritable(out, folder=True)
    if problem:  # before any GPU time is spent
        raise click.BadParameter(f"{out}: {problem}", param_hint="--out")
    harness = _kernels("harness")
    path = Path(out) / "measurements.json"
    skips = True
    if kernel and causal:
        given = click.get_current_context().get_parameter_source("causal_align") != ParameterSource.DEFAULT
        causal_align, skips = _kernel_causal(kernel, head_dim, heads // (kv_heads or heads),
                                             (seq_k or seq_len) != seq_len and not given, causal_align)
    if kernel:
        try:
            cases = [harness.kernel_case(kernel, algo, pass_, skips, batch=batch, heads=heads, kv_heads=kv_heads or heads,
                                         seq_q=seq_len, seq_k=seq_k or seq_len, head_dim=head_dim, dtype=dtype,
                                         causal=causal, causal_align=causal_align)]
        except ConfigError as e:
            raise click.BadParameter(str(e), param_hint="--kernel") from None
    elif manifest:
        try:
            cases = harness.manifest_cases(Path(manifest))
        except ConfigError as e:
            raise click.BadParameter(str(e), param_hint="--manifest") from None
    else:
        cases = harness.GRIDS[grid]()
    try:
        m = harness.measure(cases, path, ncu=not no_ncu, warmup_ms=warmup_ms, rep_ms=rep_ms,
                            progress=lambda s: click.echo(s, err=True))
    except harness.HarnessError as e:
        raise click.UsageError(str(e)) from None
    failed = sum(c.error is not None for c in m.cases)
    counted = sum(c.counters is not None for c in m.cases)
    click.echo(f"wrote {path}: {len(m.cases)} cases, {failed} failed, {counted} with counters")


@click.command()
@click.option("--base", default="h100-sxm", show_default=True, metavar="NAME|FILE",
              help="Profile whose datasheet numbers the measurements refine.")
@click.option("--out", required=True, type=click.Path(dir_okay=False),
              help="Calibrated profile to write (same schema; accepted by --gpu everywhere).")
@click.option("--from-raw", "from_raw", type=click.Path(exists=True, dir_okay=False), metavar="FILE", multiple=True,
              help="Derive the fields from the calibration.raw block of FILE, a calibrated profile (repeat the "
                   "option for several runs: each raw number's median) instead of measuring: no GPU needed.")
@click.option("--only", metavar="STEPS", default=None,
              help="Measure only these microbenchmark steps, comma-separated (e.g. 'DRAM read stream'); the "
                   "other fields keep the base profile's values.")
@click.option("--add-from", "add_from", type=click.Path(exists=True, dir_okay=False), metavar="FILE",
              help="Add to --base (a calibrated profile) the raw numbers FILE (a later, partial run) measured that "
                   "--base lacks, and the fields made from them; nothing --base has changes. No GPU needed.")
def calibrate(base, out, from_raw, only, add_from):
    """Measure what the datasheet only promises and write a calibrated profile.

    Microbenchmarks: DRAM copy bandwidth, L2 read bandwidth (every SM re-reading 8 MiB), tensor-core
    throughput of our kernels' tile loop (full occupancy, and one CTA per SM) and of cuBLAS, launch
    overhead, L2/DRAM load latency (a pointer chase timed in-kernel, the L2 one on resident lines)
    and the SM clock sustained under load. Implausible values are not written (the summary says why). Measured fields carry "measured: iosim calibrate, <gpu>, <date>" as source.
    """
    problem = unwritable(out)
    if problem:  # before any GPU time is spent
        raise click.BadParameter(f"{out}: {problem}", param_hint="--out")
    cal = _kernels("calibrate")
    base_path = resolve_profile_path(base)
    try:
        if from_raw and add_from:
            raise click.UsageError("--from-raw and --add-from are exclusive: derive a profile, or add to one")
        if from_raw:
            cal.rederive(base_path, [Path(f) for f in from_raw], Path(out), progress=click.echo)
        elif add_from:
            cal.fold(base_path, Path(add_from), Path(out), progress=click.echo)
        else:
            steps = None if only is None else [s for s in only.split(",") if s.strip()]
            cal.calibrate(base_path, Path(out), progress=click.echo, only=steps)  # one-line refusal without a GPU
    except cal.HarnessError as e:
        raise click.UsageError(str(e)) from None
    click.echo(f"wrote {out}")


COMMANDS = [measure, calibrate]


def _kernel_causal(ref: str, head_dim: int, group: int, align: bool, given: str) -> tuple[str, bool]:
    """(alignment, skips) of the user's causal kernel, found by running it small (:mod:`iosim.kernels.causal_align`),
    with a note: the alignment only where ``align`` (else ``given``; top-left where it cannot be told), and whether
    it skips the blocks its mask hides (assumed where it cannot be told)."""
    from iosim.kernels.causal_align import notes, probe

    got = probe(ref, head_dim, group, align)
    for line in notes(ref, got, align, "recorded"):
        click.echo(f"note: {line}", err=True)
    return (got["align"] or "top-left") if align else given, got["skips"] is not False
