"""The one option set that describes a run, shared by ``iosim simulate`` and ``iosim plot`` (and the
same fields as :class:`~iosim.schedule.problem.RunConfig` and a sweep spec): GPU, algorithm, N, seq_k,
d, batch, heads, kv-heads, dtype, causal, backward, tiling, grid order, mode, host placement, jobs."""
from __future__ import annotations

import click

from iosim import sizes
from iosim.hardware.catalog import builtin_profiles
from iosim.schedule.problem import (
    ALGOS,
    CAUSAL_ALIGNS,
    DQ_MODES,
    DTYPE_BYTES,
    GRID_ORDERS,
    MODES,
    PAGE_SIZES,
    SDPA_IMPLS,
    Problem,
    RunConfig,
    Tiling,
)

DEFAULT_SEQ = "1k,2k,4k,8k,16k"
DEFAULT_BATCH = 4


def _size_option(parse):
    """A click callback for one of :mod:`iosim.sizes`' parsers: no value passes, a bad one is a usage error."""
    def callback(ctx, param, value):
        if value is None:
            return None
        try:
            return parse(value)
        except sizes.SizeError as e:
            raise click.BadParameter(str(e)) from None

    return callback


parse_sizes = _size_option(sizes.parse_sizes)  # 1k,2k or 512:64k (doubling); k means 1024; whole numbers > 0
_lengths = _size_option(sizes.parse_lengths)


parse_lengths = _size_option(sizes.parse_lengths)  # a variable-length batch: 512,4k,37 or 4x512,8k (repeats)


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
    from iosim.hardware.profile import ProfileError, load_profile  # validation machinery: only when parsed

    given = [g.strip() for v in value for g in v.split(",")]
    names = list(dict.fromkeys(g for g in given if g))
    if value and not names:
        raise click.BadParameter("no GPU given; see `iosim profiles` for the built-in ones")
    try:
        profiles = [load_profile(g) for g in names or ["a100"]]
    except ProfileError as e:
        raise click.BadParameter(str(e)) from None
    return list({p.path: p for p in profiles}.values())  # an alias and its id name one GPU: run it once



def run_options(seq_default: str = DEFAULT_SEQ, algo_default: str = "standard,flash2", seq_callback=parse_sizes,
                tiles: bool = True):
    """Decorate a command with the options that describe its runs (``tiles=False``: the command takes
    --block-m/--block-n itself, as lists)."""
    def algos(ctx, param, value):
        return parse_algos(ctx, param, value or (algo_default,))

    options = [
        click.option("--gpu", multiple=True, callback=parse_gpus, metavar="NAME|FILE",
                     help=f"GPU profile, built in ({', '.join(builtin_profiles())}; short names a100, h100, h200, 4090: "
                          "the profile calibrated on that GPU where one is built in, h100-sxm and h200-sxm are the "
                          "datasheets) or a profile YAML; repeat or comma-separate to compare. [default: a100]"),
        click.option("--algo", multiple=True, callback=algos, metavar="ALGO",
                     help=f"Algorithm(s), comma-separated: {', '.join(ALGOS)}. [default: {algo_default}]"),
        click.option("--seq-len", "seq", default=seq_default, show_default=True, callback=seq_callback,
                     help="Sequence length(s) N: a list (1k,4k) or a doubling range (512:64k)."),
        click.option("--seq-k", default=None, callback=parse_sizes,
                     help="Key/value length(s) if different from N, as --seq-len: with N = 1..16 a decode step "
                          "against a KV cache (try --algo flash_decode); with --causal see --causal-align."),
        click.option("--head-dim", "-d", type=click.IntRange(min=1), default=64, show_default=True,
                     help="Head dimension d: 16, 32, 64, 128 or 256 for iosim's kernels; with --kernel any "
                          "multiple of 8 up to 256 (a kernel that pads d to its tile)."),
        click.option("--batch", "-b", default=None, callback=parse_sizes,
                     help=f"Batch size(s), as --seq-len (1,8,64 or 1:256). [default: {DEFAULT_BATCH}]"),
        click.option("--heads", type=click.IntRange(min=1), default=16, show_default=True, help="Query heads."),
        click.option("--kv-heads", type=click.IntRange(min=1), default=None,
                     help="Key/value heads (GQA; 1 = MQA). [default: --heads]"),
        click.option("--dtype", type=click.Choice(list(DTYPE_BYTES)), default="fp16", show_default=True,
                     help="Element type of Q, K, V and O (fp8: e4m3 Q, K, V and an fp16 O, flash2 forward on GPUs "
                          "with fp8 tensor cores)."),
        click.option("--causal", is_flag=True, help="Causal mask (flash kernels skip fully masked blocks)."),
        click.option("--causal-align", type=click.Choice(CAUSAL_ALIGNS), default="top-left", show_default=True,
                     help="Where the causal diagonal sits when --seq-k differs from N: top-left (query row i sees "
                          "keys j <= i: PyTorch's is_causal) or bottom-right (j <= i + Nk - N: FlashAttention-2 "
                          "from 2.1, FlashInfer; a chunked prefill after its cached prefix)."),
        click.option("--backward", is_flag=True, help="Forward and backward pass."),
        click.option("--dq", type=click.Choice(DQ_MODES), default="atomic", show_default=True,
                     help="How a flash backward computes dQ: atomic (FlashAttention-2's: the kernel over K/V blocks "
                          "adds into an fp32 dQ), separate (a second kernel over Q blocks streams K/V again and "
                          "writes dQ once, as FlagAttention does) or fused (the same two loops in one kernel, each "
                          "CTA's Q block its K/V block's rows, as Triton's tutorial does; a user's kernel). flash1 "
                          "and flash2."),
        click.option("--page-size", type=click.Choice([str(n) for n in PAGE_SIZES]), default=None,
                     help="flash_decode: the KV cache in pages of this many tokens, in any order (vLLM-style)."),
        click.option("--seq-lens", default=None, callback=parse_lengths, metavar="LENGTHS",
                     help="A variable-length batch (cu_seqlens packing, no padding): each request's length, "
                          "e.g. 512,4k,37 or 4x512,8k; sets --batch. flash2: the prefill of each request "
                          "(N = the longest); flash_decode: each request's KV cache length (--seq-len query rows)."),
        click.option("--window", default=None, callback=parse_sizes,
                     help="Local (sliding-window) attention: a query sees its WINDOW most recent keys, itself "
                          "included; as --seq-len for several. flash2 (with --causal) and flash_decode (the "
                          "cache's last WINDOW keys)."),
    ]
    if tiles:
        options += [
            click.option("--block-m", type=int, default=None, help="Rows of Q per tile (B_r). [default: per algorithm]"),
            click.option("--block-n", type=int, default=None,
                         help="Rows of K/V per tile (B_c). [default: per algorithm]"),
        ]
    options += [
        click.option("--warps", type=int, default=None, help="Warps per CTA. [default: per algorithm]"),
        click.option("--stages", type=int, default=None, help="Software pipeline stages. [default: per algorithm]"),
        click.option("--splits", type=click.IntRange(min=1), default=None,
                     help="flash_decode, and SDPA's flash forward (--impl sdpa_flash): CTAs the K/V length is split "
                          "across, combined by a second kernel. [default: as FlashAttention-2 chooses for the GPU's "
                          "SMs: none where its CTAs fill 80 % of two a SM]"),
        click.option("--persistent", type=click.IntRange(min=1), default=None,
                     help="flash2's forward as a persistent kernel that launches N CTAs (e.g. the GPU's SM count), "
                          "each taking the output tiles in turn: CTA c the tiles c, c + N, ... [default: one CTA a "
                          "tile; --kernel reads it off a one-dimensional grid of fewer CTAs than tiles]"),
        click.option("--impl", type=click.Choice(("ours",) + SDPA_IMPLS), default="ours", show_default=True,
                     help="Whose kernels run flash2: ours (iosim's Triton kernels), or PyTorch SDPA's cuDNN or "
                          "FlashAttention-2 CUDA backend, on their own tiles and code (sm_90 GPUs, d = 64 or 128)."),
        click.option("--grid-order", type=click.Choice(GRID_ORDERS), default="rows", show_default=True,
                     help="rows: the Q blocks of one head launch together (FlashAttention-2); "
                          "heads: the same Q block of every head launches together (flash2 only)."),
        click.option("--mode", type=click.Choice(MODES), default="plain", show_default=True,
                     help="plain: L2 contents carry across kernels; ncu: L2 flushed before each kernel, as "
                          "Nsight Compute measures."),
        click.option("--host", "host", multiple=True, type=click.Choice(["Q", "K", "V", "O"]),
                     help="Place a tensor in host memory, read and written over the host link (repeatable)."),
        click.option("--jobs", "-j", "workers", type=click.IntRange(min=1), default=1, show_default=True,
                     help="Worker processes for the runs."),
    ]

    def decorate(f):
        for option in reversed(options):
            f = option(f)
        return f

    return decorate



def flash2_only(algo: list, who: str) -> list:
    """``who`` (--kernel, --impl) runs flash2's schedule: the default algorithms give way to it; others are refused."""
    source = click.get_current_context().get_parameter_source("algo")
    if source == click.core.ParameterSource.DEFAULT:
        return ["flash2"]
    if algo != ["flash2"]:
        raise click.BadParameter(f"{who} is simulated as flash2 (the FlashAttention-2 schedule), not "
                                 f"{','.join(algo)}", param_hint="--algo")
    return algo


def run_configs(o: dict, tilings=None) -> list:
    """Every run the options describe, algorithm by algorithm, tiling by tiling, N by N.

    With --seq-lens the batch is those requests: a prefill's N is the longest (--seq-len and --seq-k
    do not apply), a decode keeps --seq-len query rows against caches of those lengths."""
    if o.get("impl", "ours") != "ours":  # PyTorch SDPA's kernels run flash2's schedule
        o = {**o, "algo": flash2_only(o["algo"], f"--impl {o['impl']}")}
    if tilings is None:
        tilings = [Tiling(block_m=o.get("block_m"), block_n=o.get("block_n"), warps=o["warps"], stages=o["stages"],
                          grid_order=o["grid_order"], splits=o.get("splits"), persistent=o.get("persistent"))]
    lens = o.get("seq_lens")
    page = int(o["page_size"]) if o.get("page_size") else None
    batches = o.get("batch") or [DEFAULT_BATCH]
    if lens is not None and o.get("batch") not in (None, [len(lens)]):
        raise click.BadParameter(f"--seq-lens gives {len(lens)} requests, the batch; leave --batch out or give "
                                 f"--batch {len(lens)}", param_hint="--batch")

    def sizes(algo):  # (batch, N, seq_k, seq_lens) of each run
        if lens is None:
            return [(b, n, nk, None) for b in batches for n in o["seq"] for nk in (o["seq_k"] or [None])]
        if algo == "flash_decode":
            return [(len(lens), n, None, tuple(lens)) for n in o["seq"]]
        return [(len(lens), max(lens), None, tuple(lens))]

    return [
        RunConfig(algo=a, problem=Problem(batch=b, heads=o["heads"], kv_heads=o["kv_heads"], seq_q=n,
                                          seq_k=nk, head_dim=o["head_dim"], dtype=o["dtype"],
                                          causal=o["causal"], backward=o["backward"], seq_lens=ls, page_size=page,
                                          window=w, causal_align=o.get("causal_align", "top-left")),
                  tiling=t, mode=o["mode"], host_tensors=o["host"],
                  impl=None if o.get("impl", "ours") == "ours" else o["impl"],
                  dq=o.get("dq", "atomic") if a in ("flash1", "flash2") else "atomic")
        for a in o["algo"] for t in tilings for b, n, nk, ls in sizes(a) for w in (o.get("window") or [None])
    ]
