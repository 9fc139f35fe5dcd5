"""``iosim simulate``: predicted bytes per memory level and time for attention algorithms."""
from __future__ import annotations

import contextlib
import json
import sys
from dataclasses import replace

import click
from click.core import ParameterSource

from iosim.cli.options import flash2_only, run_configs, run_options
from iosim.results import report
from iosim.results.result import Skipped
from iosim.schedule.problem import ConfigError


@click.command()
@run_options()
@click.option("--kernel", "kernel", default=None, metavar="FILE.py:FN",
              help="Your Triton kernel's launcher fn(q, k, v, causal) (needs the kernels extra): simulated as "
                   "flash2 with the tiling its launches use, its math priced from its own compiled SASS, and what "
                   "it runs in PyTorch between its kernels (fills, copies, casts, sums) as PyTorch kernels. A loop "
                   "that loads or stores more a pass than flash2's (a bias or mask tile, scores kept) is named, and "
                   "a (query block, key block) tile of it is counted as a tensor of its own.")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON list, one object per run.")
@click.option("--csv", "as_csv", is_flag=True, help="Print CSV, one row per run, in bytes and seconds.")
def simulate(kernel, as_json, as_csv, **opts):
    """Simulate attention on a GPU: bytes per memory level (SRAM, L2, HBM, host), time, bound.

    With no options: standard attention vs FlashAttention-2, forward, fp16, d = 64, batch 4 × 16
    heads, N = 1K..16K on the A100 profile. Each run is a discrete-event simulation of the kernels
    a real implementation launches, CTA by CTA, with the L2 in between: HBM bytes are what
    Nsight Compute's dram__bytes counters would show, L2 bytes what the papers call HBM accesses.

    With --kernel FILE.py:FN your own kernel is captured on CPU tensors, compiled for each GPU's
    architecture, and simulated as flash2 with its own tiling and instruction mix, beside what its launcher
    runs in PyTorch (a note lists those operations); the table then says per kernel where its time goes
    (tensor cores, SIMT pipes, memory).

    Where validation found the model least certain (long causal runs whose K/V outgrows the L2, spill frames
    that crowd it), or a kernel of yours moves more a pass than its schedule, a note on stderr says so, naming the
    kernels and rows; --json and --csv carry it too.
    """
    if kernel:
        opts["algo"] = flash2_only(opts["algo"], "--kernel")
    configs = run_configs(opts)
    if kernel:
        given = click.get_current_context().get_parameter_source("causal_align") != ParameterSource.DEFAULT
        configs = _kernel_causal(kernel, configs, given)
    workers = opts["workers"]
    if as_json and as_csv:
        raise click.UsageError("--json and --csv are exclusive: choose one output format")
    jobs = [(c, g) for g in opts["gpu"] for c in configs]
    quiet = as_json or as_csv or len(jobs) < 4 or not sys.stderr.isatty()
    known: dict = {}  # job index -> its result, where choosing an autotuned kernel's config already ran it
    if kernel:
        jobs, known = _kernel_jobs(kernel, jobs)
    else:
        jobs = [(c, g, None) for c, g in jobs]
    if workers > 1 and not kernel:
        from iosim import sweep

        with click.progressbar(length=len(jobs), label="simulating", file=sys.stderr, hidden=quiet) as bar:
            results = sweep.run([(c, g) for c, g, _ in jobs], jobs=workers, progress=lambda _: bar.update(1))
    else:
        results = _one_by_one(jobs, quiet, known)
    _print(results, jobs, kernel, as_json, as_csv)


def _one_by_one(jobs: list, quiet: bool, known: dict) -> list:
    from iosim.simulate import simulate_or_skip

    results = []
    with click.progressbar(jobs, label="simulating", file=sys.stderr, hidden=quiet) as bar:
        for n, (config, profile, codes) in enumerate(bar):
            if n in known:
                results.append(known[n])
            elif quiet:  # no bar over the runs: a long run shows its own CTAs instead (after a second)
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
        _caveat_notes(results)
    if len(skipped) == len(results):  # nothing could be simulated: the rows say why
        sys.exit(1)


def _caveat_notes(results: list) -> None:
    """Each distinct caveat of the runs shown (:mod:`iosim.results.caveats`) once, as a note on stderr, with the
    rows it concerns where they are not all."""
    from iosim.results.caveats import caveats

    rows: dict[str, list[int]] = {}
    for n, r in enumerate(results, 1):
        for line in caveats(r):
            rows.setdefault(line, []).append(n)
    for line, ns in rows.items():
        which = "" if len(ns) == len(results) else f"row{'s' if len(ns) > 1 else ''} {', '.join(map(str, ns))}: "
        click.echo(f"note: {which}{line}", err=True)


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


def _kernel_causal(ref: str, configs: list, align_given: bool) -> list:
    """Causal runs of a user's kernel as it treats its mask, found by running it small (:mod:`iosim.kernels.causal_align`),
    with a note: the alignment where seq_k != seq_q and --causal-align was not given (top-left where it cannot be
    told), and a kernel that visits every block rather than skipping those its mask hides."""
    shapes = {(c.problem.head_dim, c.problem.group) for c in configs if c.problem.causal}
    if not shapes:
        return configs
    from iosim.kernels.causal_align import notes, probe

    found = {}
    for head_dim, group in sorted(shapes):
        unequal = any(c.problem.seq_q != c.problem.seq_k for c in configs
                      if c.problem.causal and (c.problem.head_dim, c.problem.group) == (head_dim, group))
        aligned = unequal and not align_given
        got = found[head_dim, group] = probe(ref, head_dim, group, align=aligned)
        for line in notes(ref, got, aligned, "simulated"):
            click.echo(f"note: {line}", err=True)
    out = []
    for c in configs:
        got = found.get((c.problem.head_dim, c.problem.group)) if c.problem.causal else None
        if got is not None:
            if c.problem.seq_q != c.problem.seq_k and not align_given:
                c = c.with_(problem=replace(c.problem, causal_align=got["align"] or "top-left"))
            if got["skips"] is False:
                c = c.with_(skips_masked=False)
        out.append(c)
    return out


def _kernel_jobs(ref: str, jobs: list) -> tuple[list, dict]:
    """(config with the kernel's own tiling, profile, the kernel's codes) per job, and the results already
    simulated by index; a note on stderr where the kernel's launches override a tiling option. An autotuned
    kernel is simulated at every config its autotuner would time, and runs at the one predicted fastest (as
    the autotuner would pick, if the model is right), with a note naming it."""
    try:
        import torch  # noqa: F401  (the capture runs the user's launcher on CPU tensors)
        import triton  # noqa: F401

        from iosim.kernels.user_codes import configure_all, schedule_names
        from iosim.kernels.user_kernel import HarnessError
    except ImportError as e:
        click.echo(f"Error: --kernel needs torch and triton ({e.name} is missing): pip install -e '.[kernels]'",
                   err=True)
        sys.exit(2)
    out, noted, known = [], set(), {}
    for config, profile in jobs:
        try:
            candidates = configure_all(ref, config, int(profile.arch.removeprefix("sm_")), profile.sm_count)
        except (HarnessError, ConfigError) as e:
            raise click.BadParameter(str(e), param_hint="--kernel") from None
        if len(candidates) > 1:
            (label, config, codes, conflicts, left), known[len(out)] = _fastest(ref, candidates, profile)
        else:
            label, config, codes, conflicts, left = candidates[0]
        lines = [f"launches with {line}" for line in conflicts] if label is None else []
        if left:  # e.g. a backward whose dQ is a kernel of its own: flash2's schedule adds it atomically
            lines.append(f"also launches {', '.join(left)}, which {config.algo}'s schedule has no kernel for: "
                         f"its time and bytes are left out")
        names = schedule_names(config)
        lines += [f"launches nothing iosim takes for {name} (a Triton kernel with tile-size constexprs such as BLOCK_M "
                  f"and BLOCK_N): it is priced from its FLOPs" for name, code in zip(names, codes)
                  if code is None and not _torch_kernel(name)]
        if config.launcher_ops:
            from iosim.schedule.launcher import kernels_view

            ops = ", ".join(f"{op.op} ({op.phase}, before {op.before or 'its end'})" for op in config.launcher_ops)
            lines.append(f"runs {len(config.launcher_ops)} PyTorch operations besides its Triton kernels, each priced "
                         f"as a PyTorch kernel (or as the schedule's own where it does the same): {ops}")
            seen = kernels_view(config).problem
            if seen.kv_heads != config.problem.kv_heads:
                lines.append(f"hands its kernels K and V copied for every query head: they run with {seen.kv_heads} "
                             f"key/value heads, not {config.problem.kv_heads}")
        for line in lines:
            if line not in noted:
                noted.add(line)
                click.echo(f"note: {ref} {line}", err=True)
        out.append((config, profile, codes))
    return out, known


def _torch_kernel(name: str) -> bool:
    """Whether a schedule kernel is a PyTorch operation (the schedule's own, or one the user's launcher runs)."""
    from iosim.schedule.launcher import TORCH_KERNELS

    return name in TORCH_KERNELS or name.startswith("torch_")


def _fastest(ref: str, candidates: list, profile) -> tuple:
    """The candidate (label, config, codes, conflicts, unmodelled) of an autotuned kernel whose simulated time is least,
    and its result."""
    from iosim.results.report import human_time
    from iosim.simulate import simulate_or_skip

    timed, first = [], None
    for candidate in candidates:
        result = simulate_or_skip(candidate[1], profile, codes=candidate[2])
        first = first or result
        if getattr(result, "time_s", None) is not None:
            timed.append((result.time_s, candidate, result))
    if not timed:  # no config can run (each one skipped): the first, whose row says why
        return candidates[0], first
    best_time, best, best_result = min(timed, key=lambda t: t[0])
    slowest = max(t[0] for t in timed)
    p = best[1].problem
    unfit = f" ({len(candidates) - len(timed)} more do not fit)" if len(timed) < len(candidates) else ""
    click.echo(f"note: {ref} is autotuned: {len(timed)} configs simulated{unfit} on {profile.id} at "
               f"N = {p.seq_q}, d = {p.head_dim}; the fastest predicted ({human_time(best_time)}, slowest "
               f"{human_time(slowest)}) is {best[0]}", err=True)
    return best, best_result


def time_split(kernel, profile, dtype: str, head_dim: int) -> dict:
    """Shares of one kernel's roofline time: tensor cores, SIMT (and what bounds it: issue slots, a pipe, or the
    SM's shared-memory path), memory (the busiest of HBM, L2, host link). Shares of their sum, so the three add
    up to 1."""
    from iosim.costs.issue import SUBPARTITIONS, WARP, lanes, tensor_rate
    from iosim.costs.pricing import shared_time

    tensor = kernel.flops.get("tensor", 0.0) / tensor_rate(profile, dtype, kernel.mma, head_dim)
    per_clock = profile.sm_count * profile.issue_clock_hz
    simt = {"issue": kernel.instructions.get("total", 0.0) / (SUBPARTITIONS * per_clock)}
    simt |= {p: n * WARP / (lanes(profile, p) * per_clock) for p, n in kernel.instructions.items()
             if p != "total" and lanes(profile, p)}
    if kernel.instructions.get("shared_wavefronts"):  # the SM's shared-memory path, one wavefront a clock
        simt["shared memory"] = shared_time(kernel.instructions, profile)
    bound = max(simt, key=simt.get)
    memory = max(kernel.roofline[k] for k in ("hbm", "l2", "host"))
    total = tensor + simt[bound] + memory or 1.0
    return {"tensor": tensor / total, "simt": simt[bound] / total, "simt_bound": bound, "memory": memory / total}


def _split_lines(r, profile) -> str:
    p = r.config["problem"]
    lines = []
    for k in r.kernels:
        s = time_split(k, profile, p["dtype"], p["head_dim"])
        spills = ""
        if k.instructions.get("local_load_bytes") or k.instructions.get("local_store_bytes"):  # registers spilled
            spills = (f", spills {k.instructions.get('local_load_bytes', 0.0) / 1e9:.2f} GB reloaded and "
                      f"{k.instructions.get('local_store_bytes', 0.0) / 1e9:.2f} GB stored (local memory)")
        lines.append(f"N={p['seq_q']} {k.name}: time split: tensor {100 * s['tensor']:.0f}%, SIMT {100 * s['simt']:.0f}% "
                     f"({s['simt_bound']} bound), memory {100 * s['memory']:.0f}%{spills}  [code: {k.code}]")
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
