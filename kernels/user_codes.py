"""A user's Triton attention kernel's own compiled code, mapped onto the kernels of the schedule iosim models.

:func:`user_codes` calls the user's launcher ``fn(q, k, v, causal)`` (and, for a backward, autograd
through it) on CPU tensors of the problem's own shape (:func:`_capture_seqs`) with every Triton launch
recorded, not run (:func:`iosim.kernels.sass.capture_launches`), compiles each launch for sm_XX and parses
its SASS: a launcher that picks its tiles by length picks there what it runs on the GPU.
The forward's output is garbage (nothing executes) but has the right shape, which is all autograd
needs to reach the file's backward. Launches map onto the flash2 schedule by role: the forward's
main launch (BLOCK_M and BLOCK_N, the largest grid) is ``flash2_fwd``; in the backward, the
preprocess (no BLOCK_N, or named pre/delta/preprocess) is ``flash2_bwd_pre`` (its rows per CTA and warps
the run config's ``preprocess_tiling``) and the main launch ``flash2_bwd``. What the launcher runs in PyTorch between its launches is recorded in the same call
(:mod:`iosim.kernels.launcher_ops`) and becomes the run config's ``launcher_ops``: PyTorch kernels of the
schedule (:mod:`iosim.schedule.launcher`). An autotuned kernel is recorded at every config its autotuner would time, each a candidate
(:func:`user_candidates`, :func:`configure_all`). ``python -m iosim.kernels.user_codes --manifest M --out DIR`` writes the mixes of
every case of a foreign-kernel manifest (``--grid hopper``: of a measurement grid's user-kernel cases),
read back by :mod:`iosim.measure.kernel_codes`.
"""
from __future__ import annotations

import argparse
import math
import os
import sys
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import replace
from pathlib import Path

from iosim.costs.code import kernel_code
from iosim.costs.sass import KernelMix, mixes_filename, split_loops
from iosim.files import read_json, write_json
from iosim.kernels.device import HarnessError, one_line
from iosim.kernels.sass import DEFAULT_ARCH, Launch, capture_launches, compile_sass
from iosim.kernels.simulated_device import simulated_device
from iosim.kernels.user_kernel import load_kernel, tile_sizes, tiling_from_launch
from iosim.schedule.build import build_schedule
from iosim.schedule.problem import ConfigError, RunConfig, Tiling
from iosim.schedule.tiling import preprocess_name, preprocess_tiling

SEQ = 384  # a short capture's sequence length: a multiple of 128 (16-divisible lengths and strides, as on the GPU)
CAPTURE_BYTES = 2 << 30  # the call's tensors a capture at the problem's own lengths may fill (see _capture_seqs)
SCHEMA = "iosim-kernel-mixes"


def _is_tiled(launch: Launch) -> bool:
    return tile_sizes({"constexprs": launch.named_constexprs()})[0] is not None


def _is_pre(launch: Launch) -> bool:
    return not _is_tiled(launch) or preprocess_name(launch.kernel)


def _main(launches: list[Launch]) -> Launch | None:
    """The attention kernel among one phase's launches: tiled, not a preprocess, the largest grid (the last on ties)."""
    pool = [x for x in launches if _is_tiled(x) and not _is_pre(x)] or [x for x in launches if not _is_pre(x)]
    best = None
    for launch in pool:
        if best is None or math.prod(launch.grid) >= math.prod(best.grid):
            best = launch
    return best


def _record(launch: Launch) -> dict:
    """A launch as :mod:`iosim.kernels.user_kernel`'s records (what :func:`tiling_from_launch` reads)."""
    grid = list(launch.grid) + [1] * (3 - len(launch.grid))
    return {"kernel": launch.kernel, "grid": grid, "num_warps": launch.num_warps, "num_stages": launch.num_stages,
            "constexprs": launch.named_constexprs()}


def _call_bytes(p, seq_q: int, seq_k: int) -> int:
    """Bytes of the tensors the capture fills: q, k, v, and a backward's dO."""
    q = p.batch * p.heads * seq_q * p.head_dim
    kv = p.batch * p.kv_heads * seq_k * p.head_dim
    return p.elem_bytes * ((2 if p.backward else 1) * q + 2 * kv)


def _capture_seqs(config: RunConfig) -> tuple[int, int]:
    """(Nq, Nk) the capture runs at: the problem's own, so that a launcher that picks its tiles, warps or stages
    by length picks what it runs on the GPU, and its kernels compile with the lengths' own specialisation; where
    the call's tensors would pass :data:`CAPTURE_BYTES` there, the longest halving of them (multiples of 128
    in the problem's ratio) that fits, no shorter than :func:`_short_seqs`'."""
    p = config.problem
    if _call_bytes(p, p.seq_q, p.seq_k) <= CAPTURE_BYTES:
        return p.seq_q, p.seq_k
    seq_q = p.seq_q
    while True:
        seq_q = seq_q // 2 // 128 * 128
        seq_k = max(128, round(seq_q * p.seq_k / p.seq_q / 128) * 128)
        if seq_q <= SEQ:
            return _short_seqs(config)
        if _call_bytes(p, seq_q, seq_k) <= CAPTURE_BYTES:
            return seq_q, seq_k


def _short_seqs(config: RunConfig) -> tuple[int, int]:
    """(Nq, Nk) of a short capture: multiples of 128 in the problem's ratio, Nq chosen so that the number of
    query blocks differs from the batch and head counts (the grid order is read off grid[0])."""
    p = config.problem
    heads = {p.batch, p.heads, p.batch * p.heads}
    seq_q = next((n for n in (SEQ, 640, 896, 1152) if all(n // b not in heads for b in (16, 32, 64, 128, 256))), SEQ)
    seq_k = max(128, round(seq_q * p.seq_k / p.seq_q / 128) * 128)
    return seq_q, seq_k


def _ambiguous(launch: Launch | None, seq_q: int, p) -> bool:
    """Whether a forward launch's grid order cannot be read off its grid: its query blocks at ``seq_q`` number as
    many as the batch, the heads or both (``grid[0]`` could be either)."""
    bm = tile_sizes({"constexprs": launch.named_constexprs()})[0] if launch is not None else None
    return bool(bm) and -(-seq_q // bm) in {p.batch, p.heads, p.batch * p.heads}


def capture(ref: str, config: RunConfig, arch: int = DEFAULT_ARCH, base: Path | None = None, sms: int | None = None):
    """(forward launches, backward launches, Nq of the capture) of one call of the user's kernel ``ref``,
    its module loaded and its launcher run as on an sm_``arch`` GPU of ``sms`` SMs (:func:`simulated_device`)."""
    return capture_all(ref, config, arch, base, sms)[:3]


def capture_all(ref: str, config: RunConfig, arch: int = DEFAULT_ARCH, base: Path | None = None,
                sms: int | None = None, seqs: tuple[int, int] | None = None):
    """:func:`capture`'s launches and Nq, and what the launcher ran in PyTorch: (forward launches, backward
    launches, Nq, Nk, the :class:`~iosim.kernels.launcher_ops.Recording`, the call's tensors by role).
    ``seqs``: (Nq, Nk) to capture at (default :func:`_capture_seqs`)."""
    with simulated_device(arch, sms):
        return _capture(ref, config, arch, base, seqs or _capture_seqs(config))


def _capture(ref: str, config: RunConfig, arch: int, base: Path | None, seqs: tuple[int, int]):
    import torch

    from iosim.kernels.launcher_ops import Recording, recording

    fn = load_kernel(ref, base, f"_sm{arch}")  # imported as on that GPU
    p = config.problem
    from iosim.kernels._common import TORCH_DTYPES, fp8_inputs

    fp8 = p.dtype == "fp8"
    dtype = torch.float16 if fp8 else TORCH_DTYPES[p.dtype]
    seq_q, seq_k = seqs
    grad = p.backward
    q = torch.zeros((p.batch, p.heads, seq_q, p.head_dim), dtype=dtype, requires_grad=grad)
    k = torch.zeros((p.batch, p.kv_heads, seq_k, p.head_dim), dtype=dtype, requires_grad=grad)
    v = torch.zeros_like(k, requires_grad=grad)
    if fp8:  # as the harness gives them (e4m3, V transposed)
        q, k, v = fp8_inputs(q, k, v)
    shape = f"q {tuple(q.shape)}, k and v {tuple(k.shape)}, {p.dtype}, causal={p.causal}"
    rec = Recording()
    fwd: list[Launch] = []
    rec.launches = fwd
    try:
        with recording(rec):
            o, _ = capture_launches(fn, q, k, v, causal=p.causal, arch=arch, launches=fwd)
    except Exception as e:  # the user's launcher failed: say so in one line, not a traceback
        raise HarnessError(f"kernel {ref}: its call on CPU tensors ({shape}) failed: {_reason(e)}") from None
    tensors = {"Q": q, "K": k, "V": v, "O": o if isinstance(o, torch.Tensor) else None}
    bwd: list[Launch] = []
    if grad:
        rec.phase, rec.launches = "bwd", bwd
        try:
            do = torch.zeros_like(o)  # made before the recording: the caller's gradient, not the launcher's work
            with recording(rec):
                grads, _ = capture_launches(torch.autograd.grad, o, (q, k, v), do, arch=arch, launches=bwd)
        except Exception as e:
            raise HarnessError(f"kernel {ref}: its backward through autograd ({shape}) failed: {_reason(e)}") from None
        tensors.update({"dO": do, "dQ": grads[0], "dK": grads[1], "dV": grads[2]})
    return fwd, bwd, seq_q, seq_k, rec, tensors


def _reason(e: BaseException) -> str:
    """A failure in the user's code in one line: Triton's compile errors as ``at LINE:COL: what``."""
    lines = [x.strip() for x in str(e).strip().splitlines() if x.strip()]
    compile_error = any(c.__name__ == "CompilationError" for c in type(e).__mro__)  # and its subclasses
    if compile_error and len(lines) > 1:  # "at 30:18:", the source, "^", the reason
        return f"{lines[0]} {lines[-1]}"[:300]
    return one_line(e)


_KV_WORDS = ("kv", "dk")  # a backward kernel over key/value blocks (``_bwd_kv_kernel``, ``_attn_bwd_dkdv``, ...)


def _bwd_main(bwd: list[Launch]) -> Launch | None:
    """The backward's attention kernel: where there are several tiled ones (dK/dV and dQ apart), the one over
    key/value blocks, as flash2's backward is, if its name says so; else as :func:`_main` picks."""
    tiled = [x for x in bwd if _is_tiled(x) and not _is_pre(x)]
    kv = [x for x in tiled if any(w in x.kernel.lower() for w in _KV_WORDS)]
    return _main(kv) if len(tiled) > 1 and kv else _main(bwd)


def _dq_main(bwd: list[Launch]) -> Launch | None:
    """The backward's kernel over query blocks beside the one over key/value blocks (dQ in a kernel of its own,
    as FlagAttention's ``_bwd_q_kernel``): None unless the backward has both."""
    main = _bwd_main(bwd)
    if main is None or not any(w in main.kernel.lower() for w in _KV_WORDS):
        return None
    return _main([x for x in bwd if x is not main and _is_tiled(x) and not _is_pre(x)])


def separate_dq(bwd: list[Launch]) -> bool:
    """Whether the user's backward computes dQ in a kernel of its own (run config ``dq: separate``)."""
    return _dq_main(bwd) is not None


FUSED_TILES = ("BLOCK_M2", "BLOCK_N2")  # a backward kernel's second loop's tiles (Triton's tutorial's dQ loop)


def fused_dq(bwd: list[Launch]) -> bool:
    """Whether the user's backward computes dQ in a second loop of its one kernel over K/V blocks, over the Q block
    of each CTA's own rows (run config ``dq: fused``): its tiles name a second loop's sizes (``BLOCK_M2``,
    ``BLOCK_N2``, Triton's tutorial) and no other kernel computes dQ."""
    main = _bwd_main(bwd)
    if main is None or _dq_main(bwd) is not None:
        return False
    c = main.named_constexprs()
    return all(isinstance(c.get(name), int) and not isinstance(c.get(name), bool) for name in FUSED_TILES)


def dq_mode(bwd: list[Launch], default: str) -> str:
    """How the user's backward computes dQ (:data:`iosim.schedule.problem.DQ_MODES`): a kernel of its own, a
    second loop of its one kernel, else ``default``."""
    rest = [x for x in bwd if not _is_pre(x)]
    return "separate" if separate_dq(rest) else "fused" if fused_dq(rest) else default


_ROLES = (("_bwd_pre", "bwd_pre"), ("_bwd_kv", "bwd"), ("_bwd_q", "bwd_q"), ("_bwd", "bwd"), ("_fwd", "fwd"))


def roles(schedule_names: list[str], fwd: list[Launch], bwd: list[Launch]) -> list[Launch | None]:
    """The launch that runs each schedule kernel (None where the user's code has no counterpart)."""
    pre = next((x for x in bwd if _is_pre(x)), None)
    rest = [x for x in bwd if x is not pre]
    by_role = {"fwd": _main(fwd), "bwd_pre": pre, "bwd": _bwd_main(rest),
               "bwd_q": _bwd_main(rest) if fused_dq(rest) else _dq_main(rest)}
    return [by_role.get(next((role for end, role in _ROLES if name.endswith(end)), None)) for name in schedule_names]


def unmodelled(schedule_names: list[str], fwd: list[Launch], bwd: list[Launch]) -> list[str]:
    """Tiled kernels the user's code launches that no schedule kernel stands for (a backward that computes dQ
    in a kernel of its own, as FlagAttention's does, where flash2's schedule adds it atomically): their names,
    each once, so that the run can say its time leaves them out."""
    taken = {id(x) for x in roles(schedule_names, fwd, bwd) if x is not None}
    names: list[str] = []
    for launch in fwd + bwd:
        if id(launch) not in taken and _is_tiled(launch) and not _is_pre(launch) and launch.kernel not in names:
            names.append(launch.kernel)
    return names


def tilings(fwd: list[Launch], bwd: list[Launch], seq_q: int, bh: int | None = None) -> dict:
    """The run config's ``tiling`` (forward main launch), ``backward_tiling`` (backward main launch) and
    ``preprocess_tiling`` (the backward's preprocess: its rows per CTA and warps, given ``bh``)."""
    out = {}
    main = _main(fwd)
    if main is not None:
        out["tiling"] = tiling_from_launch(_record(main), seq_q, bh, sum(x.kernel == main.kernel for x in fwd))
    main = _bwd_main([x for x in bwd if not _is_pre(x)])
    if main is not None:
        out["backward_tiling"] = dict(tiling_from_launch(_record(main), seq_q), grid_order="rows")
    pre = next((x for x in bwd if _is_pre(x)), None)
    if pre is not None and bh:
        out["preprocess_tiling"] = preprocess_tiling(_record(pre), seq_q, bh)
    return out


def schedule_names(config: RunConfig) -> list[str]:
    """The names of the schedule's kernels. They do not depend on the sequence lengths, so a problem the
    schedule refuses for its lengths (causal with seq_k != seq_q) is named as its seq_k = seq_q twin."""
    try:
        return [k.name for k in build_schedule(config).kernels]
    except ConfigError:
        problem = replace(config.problem, seq_k=config.problem.seq_q)
        return [k.name for k in build_schedule(config.with_(problem=problem)).kernels]


def _tuner(label: str) -> str:
    return label.split(":", 1)[0]


def choices(launches: list[Launch]) -> list[str | None]:
    """The configs the phase's attention kernel was recorded at when it is autotuned (its autotuner's
    labels, in the autotuner's order), else ``[None]``."""
    tuned = [x for x in launches if x.variant is not None and _is_tiled(x) and not _is_pre(x)]
    if not tuned:
        return [None]
    kernel = _tuner(tuned[0].variant)
    return list(dict.fromkeys(x.variant for x in tuned if _tuner(x.variant) == kernel))


def at_choice(launches: list[Launch], choice: str | None) -> list[Launch]:
    """The launches one call makes with the autotuned kernel ``choice`` names at that config and every other
    autotuned kernel at its first config (launches of kernels not autotuned are always in)."""
    pick: dict[str, str] = {}
    for x in launches:
        if x.variant is not None:
            pick.setdefault(_tuner(x.variant), x.variant)
    if choice is not None:
        pick[_tuner(choice)] = choice
    return [x for x in launches if x.variant is None or pick.get(_tuner(x.variant)) == x.variant]


def _compiled_mixes(ref: str, names: list[str], fwd: list[Launch], bwd: list[Launch], arch: int) -> list:
    """Per schedule kernel the compiled mix of the launch that runs it; one launch that runs two schedule kernels
    (a backward's two loops, ``dq: fused``) gives each its own loops (:func:`iosim.costs.sass.split_loops`)."""
    compiled: dict[int, KernelMix] = {}
    mixes = []
    launches = roles(names, fwd, bwd)
    for launch in launches:
        if launch is not None and id(launch) not in compiled:
            try:
                compiled[id(launch)] = compile_sass(launch, arch)
            except Exception as e:  # e.g. a Triton version that no longer takes the kernel's code
                import triton

                raise HarnessError(f"kernel {ref}: {launch.kernel} does not compile for sm_{arch} with Triton "
                                   f"{triton.__version__}: {_reason(e)}") from None
        mixes.append(None if launch is None else compiled[id(launch)])
    for launch in {id(x): x for x in launches if x is not None}.values():
        places = [n for n, x in enumerate(launches) if x is launch]
        if len(places) == 2:
            mixes[places[0]], mixes[places[1]] = split_loops(compiled[id(launch)])
    return mixes


def user_candidates(ref: str, config: RunConfig, arch: int = DEFAULT_ARCH, base: Path | None = None,
                    sms: int | None = None) -> list[tuple[str | None, list[KernelMix | None], dict]]:
    """``(config label, mixes, tiling)`` per config of the user's forward kernel: one, labelled None, unless
    the kernel is autotuned; then one per config its autotuner would time (see :func:`user_mixes`). The
    backward's autotuned kernels, if any, run their first config. ``sms``: the simulated GPU's SM count,
    for launchers that read it."""
    fwd_all, bwd_all, seq_q, seq_k, rec, tensors = capture_all(ref, config, arch, base, sms)
    fwd, bwd = fwd_all, at_choice(bwd_all, None)
    dq = dq_mode(bwd, config.dq)
    bare = schedule_names(config.with_(dq=dq))  # the schedule's kernels before the launcher's own operations
    out, failed = [], []
    for choice in choices(fwd):
        launches = at_choice(fwd, choice)
        ops = _launcher_ops(rec, tensors, seq_q, seq_k, bare, launches, bwd, {"fwd": fwd_all, "bwd": bwd_all})
        names = schedule_names(config.with_(dq=dq, launcher_ops=ops))
        try:
            mixes = _compiled_mixes(ref, names, launches, bwd, arch)
        except HarnessError as e:  # a config the autotuner would skip too (it does not compile): leave it out
            if choice is None:
                raise
            failed.append(e)
            continue
        found = tilings(launches, bwd, seq_q, config.problem.batch * config.problem.heads)
        if "tiling" in found and "persistent" not in found["tiling"] and _ambiguous(_main(launches), seq_q, config.problem):
            found["tiling"]["grid_order"] = _grid_order(ref, config, arch, base, sms, choice)
        odd = _grid_mismatch(_main(launches), found.get("tiling"), seq_q, config.problem)
        if odd:
            found["grid_note"] = odd
        if (seq_q, seq_k) != (config.problem.seq_q, config.problem.seq_k):
            found["capture_seqs"] = [seq_q, seq_k]
        if dq != config.dq:
            found["dq"] = dq
        if ops:
            found["launcher_ops"] = ops
        left = unmodelled(names, launches, bwd)
        if left:
            found["unmodelled"] = left
        out.append((choice, mixes, found))
    if not out:
        raise failed[0]
    return out


def _grid_mismatch(main: Launch | None, tiling: dict | None, seq_q: int, p) -> str | None:
    """A line saying so where the forward's main launch runs another number of CTAs than flash2's schedule has
    tiles (one a Q block of each head) and is not a persistent kernel's: a grid with a split of the K/V loop, or
    one CTA for the query heads of a group, runs a schedule iosim does not model, and its numbers are flash2's;
    or where a one-dimensional grid of exactly its tiles leaves the grid order to its code."""
    if main is None or not tiling or tiling.get("persistent") or not tiling.get("block_m"):
        return None
    blocks = -(-seq_q // tiling["block_m"])
    tiles = blocks * p.batch * p.heads
    ctas = math.prod(main.grid)
    if ctas == tiles and tuple(main.grid)[1:] == (1, 1) and blocks > 1 and p.batch * p.heads > 1:
        return (f"a one-dimensional grid of its {tiles} tiles: which it walks first, one head's Q blocks or every "
                f"head's, is in its code, not its grid; simulated as grid order {tiling.get('grid_order')}")
    if ctas == tiles:
        return None
    return (f"{ctas} CTAs ({' x '.join(map(str, main.grid))}) where flash2's schedule has {tiles} (a Q block "
            f"of {tiling['block_m']} rows of each head): simulated as flash2's, whose K/V loop and CTAs may not be "
            f"its own")


def _grid_order(ref: str, config: RunConfig, arch: int, base: Path | None, sms: int | None, choice: str | None) -> str:
    """The forward's grid order where the capture at the problem's lengths cannot tell (:func:`_ambiguous`): read
    off a short capture (:func:`_short_seqs`), whose query blocks number neither the batch nor the heads."""
    seqs = _short_seqs(config)
    fwd = capture_all(ref, config, arch, base, sms, seqs)[0]
    labels = choices(fwd)
    main = _main(at_choice(fwd, choice if choice in labels else labels[0]))
    return tiling_from_launch(_record(main), seqs[0], config.problem.batch * config.problem.heads)["grid_order"]


def _launcher_ops(rec, tensors: dict, seq_q: int, seq_k: int, names: list[str], fwd: list[Launch], bwd: list[Launch],
                  recorded: dict) -> tuple:
    """What the launcher ran in PyTorch (:func:`iosim.kernels.launcher_ops.launcher_ops`), each operation placed
    before the schedule kernel (of ``names``) whose launch follows it among the ``recorded`` launches of its pass."""
    from iosim.kernels.launcher_ops import launcher_ops

    runs = {id(launch): name for name, launch in zip(names, roles(names, fwd, bwd)) if launch is not None}
    args = {rec.at_launch(address, phase, n) for phase, launches in recorded.items()
            for n, launch in enumerate(launches) if id(launch) in runs for address in launch.extra.get("storages", ())}

    def next_kernel(phase: str, after: int) -> str | None:
        return next((runs[id(x)] for x in recorded[phase][after:] if id(x) in runs), None)

    return launcher_ops(rec, tensors, seq_q, seq_k, next_kernel, tensors["Q"].shape[-1], args)


def user_mixes(ref: str, config: RunConfig, arch: int = DEFAULT_ARCH, base: Path | None = None,
               sms: int | None = None) -> tuple[list[KernelMix | None], dict]:
    """Per schedule kernel of ``config`` (algo flash2) the user's compiled mix (None: no counterpart), and
    the tiling the launches imply (``{"tiling": ..., "backward_tiling": ...}``); an autotuned kernel at the
    first of its configs that compiles (:func:`user_candidates` gives every one)."""
    return user_candidates(ref, config, arch, base, sms)[0][1:]


def _codes(ref: str, mixes: list, arch: int) -> list:
    import triton

    name = Path(ref.rpartition(":")[0]).name
    return [None if m is None else kernel_code(m, f"sass: {name} {m.meta.get('kernel', '?')}, sm_{arch}, "
                                                  f"triton {triton.__version__}") for m in mixes]


def user_codes(ref: str, config: RunConfig, arch: int = DEFAULT_ARCH, base: Path | None = None,
               sms: int | None = None) -> tuple[list, dict]:
    """Per schedule kernel of ``config`` a :class:`~iosim.costs.issue.KernelCode` of the user's kernel ``ref``
    (``file.py:fn``) or None, and the tiling its launches imply (see :func:`user_mixes`)."""
    mixes, tiling = user_mixes(ref, config, arch, base, sms)
    return _codes(ref, mixes, arch), tiling


def _with_tiling(config: RunConfig, found: dict) -> tuple[RunConfig, list[str]]:
    changes, conflicts = {}, []
    if found.get("launcher_ops"):  # what the launcher runs in PyTorch besides its Triton kernels
        changes["launcher_ops"] = found["launcher_ops"]
    if found.get("dq", config.dq) != config.dq:  # the user's backward computes dQ in a kernel of its own
        changes["dq"] = found["dq"]
        conflicts.append(f"dq {config.dq} -> {found['dq']}")
    for key in ("tiling", "backward_tiling", "preprocess_tiling"):
        if key not in found:
            continue
        mine = getattr(config, key) or Tiling()
        theirs = {f: v for f, v in found[key].items() if v is not None}
        conflicts += [f"{key}.{f} {getattr(mine, f)} -> {v}" for f, v in theirs.items()
                      if getattr(mine, f) is not None and getattr(mine, f) != v]
        changes[key] = replace(mine, **theirs)
    return config.with_(**changes), conflicts


def configure_all(ref: str, config: RunConfig, arch: int = DEFAULT_ARCH,
                  sms: int | None = None) -> list[tuple[str | None, RunConfig, list, list[str], list[str]]]:
    """``(config label, run config, codes, overridden fields, unmodelled kernels)`` per config of the user's
    kernel ``ref``: the run config (algo flash2) as the kernel runs it, the tiling its launches imply in place
    of ``config``'s, its codes, one line per tiling field the kernel overrode (``block_m 64 -> 128``), and the
    tiled kernels it launches that the schedule has no place for (:func:`unmodelled`). One entry, labelled
    None, unless its forward is autotuned."""
    if config.algo != "flash2":
        raise ConfigError("algo", f"a user's kernel is modelled as flash2, got {config.algo!r}")
    out = []
    for label, mixes, found in user_candidates(ref, config, arch, sms=sms):
        run, conflicts = _with_tiling(config, found)
        if found.get("capture_seqs"):  # the call's tensors at the problem's lengths would not fit the capture
            conflicts.append(f"its tiles read off a capture at N = {found['capture_seqs'][0]} (at N = "
                             f"{config.problem.seq_q} the call's tensors pass {CAPTURE_BYTES >> 30} GiB on the CPU): a "
                             f"launcher that picks its tiles by length may pick others at {config.problem.seq_q}")
        if found.get("grid_note"):
            conflicts.append(found["grid_note"])
        out.append((label, run, _codes(ref, mixes, arch), conflicts, found.get("unmodelled", [])))
    return out


# ---------------------------------------------------------------------------------------------
# A manifest's mixes, per Triton version
# ---------------------------------------------------------------------------------------------
def _case_mixes(ref: str, config: dict, arch: int, sms: int | None = None) -> dict:
    """One case's entry: its mixes and tiling; for an autotuned kernel those of its first config, and every
    config's under ``variants`` (validation takes the one whose tiles the GPU ran)."""
    run = RunConfig.from_dict(config)
    candidates = user_candidates(ref, run, arch, sms=sms)
    entries = [{"label": label, "mixes": [None if m is None else m.to_dict() for m in mixes],
                **{k: v for k, v in tiling.items() if k not in ("unmodelled", "launcher_ops", "grid_note")},
                **({"launcher_ops": run.with_(launcher_ops=tiling["launcher_ops"]).to_dict()["launcher_ops"]}
                   if tiling.get("launcher_ops") else {})} for label, mixes, tiling in candidates]
    schedule = schedule_names(run.with_(dq=entries[0].get("dq", run.dq),
                                        launcher_ops=entries[0].get("launcher_ops", ())))
    out = {"kernel": ref, "schedule": schedule, **{k: v for k, v in entries[0].items() if k != "label"}}
    if len(entries) > 1:
        out["variants"] = entries
    return out


def manifest_mixes(manifest: Path | None, arch: int, workers: int, log=None, grid: str | None = None,
                   sms: int | None = None) -> dict:
    """{case name: {kernel, schedule, mixes, tiling, backward_tiling}} for every case of ``manifest``, or
    every user-kernel case of the measurement grid ``grid`` (``iosim measure --grid``); a case whose kernel
    this Triton cannot compile is logged and left out."""
    import multiprocessing

    from iosim.kernels.cases import GRIDS, manifest_cases
    from iosim.measure.measurement import KERNEL_IMPL

    cases = manifest_cases(manifest) if grid is None else [c for c in GRIDS[grid]() if c.impl == KERNEL_IMPL]
    jobs = {c.name: (c.kernel, {"algo": c.algo, "problem": c.run_config()["problem"]}) for c in cases}
    out: dict = {}
    failed: dict = {}  # case name -> why it did not compile (logged; left out of the file)
    start = time.perf_counter()
    if workers <= 1:
        for name, (ref, config) in jobs.items():
            try:
                out[name] = _case_mixes(ref, config, arch, sms)
            except HarnessError as e:  # one kernel this Triton cannot compile: the others still count
                failed[name] = str(e)
            if log:
                log(f"[{len(out) + len(failed)}/{len(jobs)}] {time.perf_counter() - start:6.1f} s  {name}"
                    + (f"  FAILED: {failed[name]}" if name in failed else ""))
        return out
    with ProcessPoolExecutor(max(1, workers), mp_context=multiprocessing.get_context("spawn"),
                             initializer=_child_env) as pool:
        futures = {pool.submit(_case_mixes, ref, config, arch, sms): name for name, (ref, config) in jobs.items()}
        for future in as_completed(futures):
            name = futures[future]
            try:
                out[name] = future.result()
            except HarnessError as e:
                failed[name] = str(e)
            if log:
                log(f"[{len(out) + len(failed)}/{len(jobs)}] {time.perf_counter() - start:6.1f} s  {name}"
                    + (f"  FAILED: {failed[name]}" if name in failed else ""))
    return {name: out[name] for name in jobs if name in out}


def _child_env() -> None:
    os.environ["TRITON_INTERPRET"] = "0"


def main(argv=None) -> int:
    """Compile every case of a foreign-kernel manifest (or a grid's user-kernel cases) for sm_ARCH; write
    DIR/sm_<arch>-triton-<version>.json.gz (cases already in that file and not compiled now are kept)."""
    from iosim.kernels.cases import GRIDS

    parser = argparse.ArgumentParser(prog="python -m iosim.kernels.user_codes", description=main.__doc__)
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--manifest", type=Path, help="foreign-kernel manifest (YAML)")
    source.add_argument("--grid", choices=sorted(GRIDS), help="the user-kernel cases of this measurement grid (hopper)")
    parser.add_argument("--out", type=Path, required=True, help="folder for the mixes file")
    parser.add_argument("--arch", type=int, default=DEFAULT_ARCH, help="compute capability as an int (90 = sm_90)")
    parser.add_argument("--sms", type=int, default=None,
                        help="SM count the launchers see (get_device_properties; default: unknown, an error if read)")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1, help="compile processes")
    args = parser.parse_args(argv)
    import triton

    def log(msg):
        print(msg, file=sys.stderr, flush=True)

    cases = manifest_mixes(args.manifest, args.arch, args.workers, log, args.grid, args.sms)
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / mixes_filename(args.arch, triton.__version__)
    before = next((p for p in (path, path.with_name(path.name.removesuffix(".gz"))) if p.exists()), None)
    if before is not None:  # another grid's cases (the hopper grid beside the fp8 one) stay, from a plain file too
        cases = {**read_json(before).get("cases", {}), **cases}
    doc = {"schema": SCHEMA, "schema_version": 1, "arch": f"sm_{args.arch}", "triton": triton.__version__,
           "cases": cases}
    write_json(path, doc)
    log(f"wrote {len(cases)} cases to {path}")
    return 0


if __name__ == "__main__":
    os.environ["TRITON_INTERPRET"] = "0"  # compiled JITFunctions, not the interpreter's
    sys.exit(main())
