"""``iosim simulate``: predicted bytes per memory level and time for attention algorithms."""
from __future__ import annotations

import json
import sys

import click

from iosim.hardware.catalog import builtin_profiles
from iosim.results import report
from iosim.schedule.problem import ALGOS, DTYPE_BYTES, GRID_ORDERS, MODES, Problem, RunConfig, Tiling

DEFAULT_SEQ = "1k,2k,4k,8k,16k"


def parse_sizes(ctx, param, value):
    """``1k,2k`` or ``512:64k`` (powers of two from 512 up to 64K); ``k`` means 1024."""
    if value is None:
        return None
    out = []
    try:
        for part in str(value).replace(" ", "").split(","):
            if ":" in part:
                lo, hi = (_size(x) for x in part.split(":"))
                while lo <= hi:
                    out.append(lo)
                    lo *= 2
            else:
                out.append(_size(part))
    except ValueError:
        raise click.BadParameter(f"{value!r}: give positive sizes like 4096, 4k or 1k:16k") from None
    if not out or any(n <= 0 for n in out):
        raise click.BadParameter(f"{value!r}: sequence lengths must be > 0")
    return out


def _size(text: str) -> int:
    text = text.lower()
    k = 1024 if text.endswith("k") else 1
    return int(float(text.rstrip("k")) * k)


def parse_algos(ctx, param, value):
    names = [a for v in value for a in v.split(",") if a] or ["standard", "flash2"]
    bad = [a for a in names if a not in ALGOS]
    if bad:
        raise click.BadParameter(f"{bad[0]!r} is not one of {', '.join(ALGOS)}")
    return names


def parse_gpus(ctx, param, value):
    from iosim.hardware.profile import load_profile  # validation machinery: only when options are parsed

    names = [g for v in value for g in v.split(",") if g] or ["a100"]
    return [load_profile(g) for g in names]


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
@click.option("--json", "as_json", is_flag=True, help="Print a JSON list, one object per run.")
@click.option("--csv", "as_csv", is_flag=True, help="Print CSV, one row per run, in bytes and seconds.")
def simulate(gpu, algo, seq, seq_k, head_dim, batch, heads, kv_heads, dtype, causal, backward, block_m, block_n,
             warps, stages, grid_order, mode, host, as_json, as_csv):
    """Simulate attention on a GPU: bytes per memory level (SRAM, L2, HBM, host), time, bound.

    With no options: standard attention vs FlashAttention-2, forward, fp16, d = 64, batch 4 × 16
    heads, N = 1K..16K on the A100 profile. Each run is a discrete-event simulation of the kernels
    a real implementation launches, CTA by CTA, with the L2 in between: HBM bytes are what
    Nsight Compute's dram__bytes counters would show, L2 bytes what the papers call HBM accesses.
    """
    configs = [
        RunConfig(algo=a, problem=Problem(batch=batch, heads=heads, kv_heads=kv_heads, seq_q=n, seq_k=seq_k,
                                          head_dim=head_dim, dtype=dtype, causal=causal, backward=backward),
                  tiling=Tiling(block_m=block_m, block_n=block_n, warps=warps, stages=stages, grid_order=grid_order),
                  mode=mode, host_tensors=host)
        for a in algo for n in seq
    ]
    jobs = [(c, g) for g in gpu for c in configs]
    quiet = as_json or as_csv or len(jobs) < 4 or not sys.stderr.isatty()
    from iosim.simulate import simulate as run_simulation

    results = []
    with click.progressbar(jobs, label="simulating", file=sys.stderr, hidden=quiet) as bar:
        for config, profile in bar:
            results.append(run_simulation(config, profile))
    if as_json:
        click.echo(json.dumps([_json(r) for r in results], indent=2))
    elif as_csv:
        click.echo(report.csv_text(results), nl=False)
    else:
        click.echo(report.table(results))


def _json(r) -> dict:
    d = r.to_dict()
    d.pop("timeline")
    return d
