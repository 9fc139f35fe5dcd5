"""``iosim simulate``: predicted bytes per memory level and time for attention algorithms."""
from __future__ import annotations

import contextlib
import json
import math
import sys

import click

from iosim.hardware.catalog import builtin_profiles
from iosim.results import report
from iosim.results.result import Skipped
from iosim.schedule.problem import ALGOS, DTYPE_BYTES, GRID_ORDERS, MODES, ConfigError, Problem, RunConfig, Tiling

DEFAULT_SEQ = "1k,2k,4k,8k,16k"


def parse_sizes(ctx, param, value):
    """``1k,2k`` or ``512:64k`` (powers of two from 512 up to 64K); ``k`` means 1024; whole numbers > 0."""
    if value is None:
        return None
    out = []
    for part in str(value).replace(" ", "").split(","):
        if ":" in part:
            ends = part.split(":")
            if len(ends) != 2:
                raise click.BadParameter(f"{part!r}: a range is LOW:HIGH, e.g. 1k:16k")
            lo, hi = (_size(x, value) for x in ends)
            if lo > hi:
                raise click.BadParameter(f"{part!r}: a range goes up, LOW:HIGH with LOW <= HIGH")
            while lo <= hi:
                out.append(lo)
                lo *= 2
        else:
            out.append(_size(part, value))
    return list(dict.fromkeys(out))  # each size once, in the order given


def _size(text: str, value) -> int:
    """One size: a whole number > 0, optionally with ``k`` (×1024): ``4096``, ``4k``, ``1.5k``."""
    scale = 1024 if text.lower().endswith("k") else 1
    digits = text[:-1] if scale > 1 else text
    try:
        number = int(digits) * scale if digits.isdigit() else float(digits) * scale
    except ValueError:
        number = None
    if number is None or not math.isfinite(number) or number != int(number) or number <= 0:
        what = repr(text) if text else "an empty size"
        raise click.BadParameter(f"{value!r}: {what} is not a whole number > 0; give sizes like 4096, 4k or a "
                                 "doubling range 1k:16k")
    return int(number)


def parse_algos(ctx, param, value):
    given = [a.strip() for v in value for a in v.split(",")]
    names = list(dict.fromkeys(a for a in given if a))  # each algorithm once, in the order given
    if value and not names:
        raise click.BadParameter(f"no algorithm given; choose from {', '.join(ALGOS)}")
    names = names or ["standard", "flash2"]
    bad = [a for a in names if a not in ALGOS]
    if bad:
        raise click.BadParameter(f"{bad[0]!r} is not one of {', '.join(ALGOS)}")
    return names


def parse_gpus(ctx, param, value):
    from iosim.hardware.profile import load_profile  # validation machinery: only when options are parsed

    given = [g.strip() for v in value for g in v.split(",")]
    names = list(dict.fromkeys(g for g in given if g))
    if value and not names:
        raise click.BadParameter("no GPU given; see `iosim profiles` for the built-in ones")
    profiles = [load_profile(g) for g in names or ["a100"]]
    return list({p.path: p for p in profiles}.values())  # an alias and its id name one GPU: run it once


@click.command()
@click.option("--gpu", multiple=True, callback=parse_gpus, metavar="NAME|FILE",
              help=f"GPU profile, built in ({', '.join(builtin_profiles())}; aliases a100, h100, 4090) or a "
                   "profile YAML; repeat or comma-separate to compare. [default: a100]")
@click.option("--algo", multiple=True, callback=parse_algos, metavar="ALGO",
              help=f"Algorithm(s), comma-separated: {', '.join(ALGOS)}. [default: standard,flash2]")
@click.option("--seq-len", "seq", default=DEFAULT_SEQ, show_default=True, callback=parse_sizes,
              help="Sequence length(s) N: a list (1k,4k) or a doubling range (512:64k).")
@click.option("--seq-k", type=int, default=None, help="Key/value length if different from N (non-causal).")
@click.option("--head-dim", "-d", type=int, default=64, show_default=True, help="Head dimension d.")
@click.option("--batch", "-b", type=int, default=4, show_default=True, help="Batch size.")
@click.option("--heads", type=int, default=16, show_default=True, help="Query heads.")
@click.option("--kv-heads", type=int, default=None, help="Key/value heads (GQA; 1 = MQA). [default: --heads]")
@click.option("--dtype", type=click.Choice(list(DTYPE_BYTES)), default="fp16", show_default=True)
@click.option("--causal", is_flag=True, help="Causal mask (flash kernels skip fully masked blocks).")
@click.option("--backward", is_flag=True, help="Forward and backward pass.")
@click.option("--block-m", type=int, default=None, help="Rows of Q per tile (B_r). [default: per algorithm]")
@click.option("--block-n", type=int, default=None, help="Rows of K/V per tile (B_c). [default: per algorithm]")
@click.option("--warps", type=int, default=None, help="Warps per CTA. [default: per algorithm]")
@click.option("--stages", type=int, default=None, help="Software pipeline stages. [default: per algorithm]")
@click.option("--grid-order", type=click.Choice(GRID_ORDERS), default="rows", show_default=True,
              help="rows: the Q blocks of one head launch together (FlashAttention-2); "
                   "heads: the same Q block of every head launches together (flash2 only).")
@click.option("--mode", type=click.Choice(MODES), default="plain", show_default=True,
              help="plain: L2 contents carry across kernels; ncu: L2 flushed before each kernel, as "
                   "Nsight Compute measures.")
@click.option("--host", "host", multiple=True, type=click.Choice(["Q", "K", "V", "O"]),
              help="Place a tensor in host memory, read over the host link (repeatable).")
@click.option("--kernel", "kernel", default=None, metavar="FILE.py:FN",
              help="Your Triton kernel's launcher fn(q, k, v, causal) (needs the kernels extra): simulated as "
                   "flash2 with the tiling its launches use, its math priced from its own compiled SASS.")
@click.option("--jobs", "-j", "workers", type=click.IntRange(min=1), default=1, show_default=True,
              help="Worker processes for the runs (not with --kernel).")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON list, one object per run.")
@click.option("--csv", "as_csv", is_flag=True, help="Print CSV, one row per run, in bytes and seconds.")
def simulate(gpu, algo, seq, seq_k, head_dim, batch, heads, kv_heads, dtype, causal, backward, block_m, block_n,
             warps, stages, grid_order, mode, host, kernel, workers, as_json, as_csv):
    """Simulate attention on a GPU: bytes per memory level (SRAM, L2, HBM, host), time, bound.

    With no options: standard attention vs FlashAttention-2, forward, fp16, d = 64, batch 4 × 16
    heads, N = 1K..16K on the A100 profile. Each run is a discrete-event simulation of the kernels
    a real implementation launches, CTA by CTA, with the L2 in between: HBM bytes are what
    Nsight Compute's dram__bytes counters would show, L2 bytes what the papers call HBM accesses.

    With --kernel FILE.py:FN your own kernel is captured on CPU tensors, compiled for each GPU's
    architecture, and simulated as flash2 with its own tiling and instruction mix; the table then says
    per kernel where its time goes (tensor cores, SIMT pipes, memory).
    """
    if kernel:
        algo = _kernel_algo(algo)
    configs = [
        RunConfig(algo=a, problem=Problem(batch=batch, heads=heads, kv_heads=kv_heads, seq_q=n, seq_k=seq_k,
                                          head_dim=head_dim, dtype=dtype, causal=causal, backward=backward),
                  tiling=Tiling(block_m=block_m, block_n=block_n, warps=warps, stages=stages, grid_order=grid_order),
                  mode=mode, host_tensors=host)
        for a in algo for n in seq
    ]
    if as_json and as_csv:
        raise click.UsageError("--json and --csv are exclusive: choose one output format")
    jobs = [(c, g) for g in gpu for c in configs]
    quiet = as_json or as_csv or len(jobs) < 4 or not sys.stderr.isatty()
    if kernel:
        jobs = _kernel_jobs(kernel, jobs)
    else:
        jobs = [(c, g, None) for c, g in jobs]
    if workers > 1 and not kernel:
        from iosim import sweep

        with click.progressbar(length=len(jobs), label="simulating", file=sys.stderr, hidden=quiet) as bar:
            results = sweep.run([(c, g) for c, g, _ in jobs], jobs=workers, progress=lambda _: bar.update(1))
    else:
        results = _one_by_one(jobs, quiet)
    _print(results, jobs, kernel, as_json, as_csv)


def _one_by_one(jobs: list, quiet: bool) -> list:
    from iosim.simulate import simulate_or_skip

    results = []
    with click.progressbar(jobs, label="simulating", file=sys.stderr, hidden=quiet) as bar:
        for config, profile, codes in bar:
            if quiet:  # no bar over the runs: a long run shows its own CTAs instead (after a second)
                with cta_progress(config.algo) as progress:
                    results.append(simulate_or_skip(config, profile, codes=codes, progress=progress))
            else:
                results.append(simulate_or_skip(config, profile, codes=codes))
    return results


def _print(results: list, jobs: list, kernel, as_json: bool, as_csv: bool) -> None:
    """The table (or JSON, CSV); exit 2 where every run was refused for one option, 1 where none ran."""
    skipped = [r for r in results if isinstance(r, Skipped)]
    if skipped and len(skipped) == len(results) and all(r.field for r in skipped):
        raise ConfigError(skipped[0].field, skipped[0].reason.removeprefix(f"{skipped[0].field}: "))
    profiles = [g for _, g, _ in jobs]
    if as_json:
        click.echo(json.dumps([_json(r, p if kernel else None) for r, p in zip(results, profiles)], indent=2))
    elif as_csv:
        click.echo(report.csv_text(results), nl=False)
    else:
        click.echo(report.table(results))
        if kernel:
            click.echo("\n".join(_split_lines(r, p) for r, p in zip(results, profiles) if not isinstance(r, Skipped)))
    if len(skipped) == len(results):  # nothing could be simulated: the rows say why
        sys.exit(1)


@contextlib.contextmanager
def cta_progress(label: str):
    """A callback for :func:`iosim.simulate.simulate` that shows CTAs done on stderr once a run has
    taken a second (tqdm's ``delay``), on a terminal only, and clears the line when the run ends."""
    from tqdm import tqdm

    with tqdm(total=0, unit=" CTAs", desc=label, delay=1.0, leave=False, disable=None, file=sys.stderr,
              dynamic_ncols=True) as bar:
        def progress(done: int, total: int, kernel: str) -> None:
            if bar.total != total:
                bar.total = total
            bar.set_description_str(f"{label} {kernel}", refresh=False)
            bar.update(done - bar.n)

        yield progress


def _kernel_algo(algo: list) -> list:
    """--kernel models the user's kernel as flash2: the default algorithms give way; others are refused."""
    source = click.get_current_context().get_parameter_source("algo")
    if source == click.core.ParameterSource.DEFAULT:
        return ["flash2"]
    if algo != ["flash2"]:
        raise click.BadParameter(f"--kernel is simulated as flash2 (the FlashAttention-2 schedule), not "
                                 f"{','.join(algo)}", param_hint="--algo")
    return algo


def _kernel_jobs(ref: str, jobs: list) -> list:
    """(config with the kernel's own tiling, profile, the kernel's codes) per job; a note on stderr where
    the kernel's launches override a tiling option."""
    try:
        import torch  # noqa: F401  (the capture runs the user's launcher on CPU tensors)
        import triton  # noqa: F401

        from iosim.kernels.user_codes import configure
        from iosim.kernels.user_kernel import HarnessError
    except ImportError as e:
        click.echo(f"Error: --kernel needs torch and triton ({e.name} is missing): pip install -e '.[kernels]'",
                   err=True)
        sys.exit(2)
    out, noted = [], set()
    for config, profile in jobs:
        try:
            config, codes, conflicts = configure(ref, config, int(profile.arch.removeprefix("sm_")))
        except (HarnessError, ConfigError) as e:
            raise click.BadParameter(str(e), param_hint="--kernel") from None
        for line in conflicts:
            if line not in noted:
                noted.add(line)
                click.echo(f"note: {ref} launches with {line}", err=True)
        out.append((config, profile, codes))
    return out


def time_split(kernel, profile, dtype: str, head_dim: int) -> dict:
    """Shares of one kernel's roofline time: tensor cores, SIMT (and what bounds it), memory (the busiest
    of HBM, L2, host link). Shares of their sum, so the three add up to 1."""
    from iosim.costs.issue import SUBPARTITIONS, WARP, lanes, tensor_rate

    tensor = kernel.flops.get("tensor", 0.0) / tensor_rate(profile, dtype, kernel.mma, head_dim)
    per_clock = profile.sm_count * profile.issue_clock_hz
    simt = {"issue": kernel.instructions.get("total", 0.0) / (SUBPARTITIONS * per_clock)}
    simt |= {p: n * WARP / (lanes(profile, p) * per_clock) for p, n in kernel.instructions.items()
             if p != "total" and lanes(profile, p)}
    bound = max(simt, key=simt.get)
    memory = max(kernel.roofline[k] for k in ("hbm", "l2", "host"))
    total = tensor + simt[bound] + memory or 1.0
    return {"tensor": tensor / total, "simt": simt[bound] / total, "simt_bound": bound, "memory": memory / total}


def _split_lines(r, profile) -> str:
    p = r.config["problem"]
    lines = []
    for k in r.kernels:
        s = time_split(k, profile, p["dtype"], p["head_dim"])
        lines.append(f"N={p['seq_q']} {k.name}: time split: tensor {100 * s['tensor']:.0f}%, SIMT {100 * s['simt']:.0f}% "
                     f"({s['simt_bound']} bound), memory {100 * s['memory']:.0f}%  [code: {k.code}]")
    return "\n".join(lines)


def _json(r, profile=None) -> dict:
    """A run without its timeline; with ``profile`` (a --kernel run) each kernel's time split too."""
    d = r.to_dict()
    if isinstance(r, Skipped):
        return d
    d.pop("timeline")
    if profile is not None:
        p = r.config["problem"]
        for k, out in zip(r.kernels, d["kernels"]):
            out["time_split"] = time_split(k, profile, p["dtype"], p["head_dim"])
    return d
