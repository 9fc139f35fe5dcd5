"""How a user's causal kernel treats its mask, found by running it small under Triton's interpreter.

Two questions, both answered by calling ``fn(q, k, v, causal=...)`` on CPU tensors in a child process (the interpreter
is chosen when a kernel file is imported), random fp16 inputs:
- where its diagonal sits when the query and key lengths differ: at 48 query rows against 112 keys (neither a multiple
  of any tile) its output is compared with softmax attention in float64 under each mask of
  :data:`iosim.schedule.problem.CAUSAL_ALIGNS`, top-left (row i sees keys j <= i) and bottom-right (j <= i + Nk - Nq);
- whether it skips the blocks its mask hides wholly, as FlashAttention does, or visits every block and masks: at
  512 rows, the tile products it issues causal against those it issues without the mask (tiles of 128 rows or fewer
  skip 3/8 or more of them).

    python -m iosim.kernels.causal_align FILE.py:FN [--head-dim 64] [--group 1] [--align]   (prints JSON)
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

NQ, NK = 48, 112  # the alignment probe's lengths: the two masks differ on every row
N_SKIP = 512  # the skip probe's length (queries and keys): 128-row tiles skip 3/8 of their products there
TOLERANCE = 2e-2  # largest |error| over max |reference| that still matches a mask (fp16 inputs, fp32 math)
SKIPPED = 0.85  # causal tile products over unmasked ones at or below which a kernel skips hidden blocks


def errors(fn, head_dim: int, group: int, device: str) -> dict:
    """Relative max |error| of ``fn``'s causal output against each alignment's float64 reference."""
    import torch

    gen = torch.Generator(device="cpu").manual_seed(0)
    heads = max(2, group)
    q, k, v = (torch.randn(1, h, n, head_dim, generator=gen).to(device=device, dtype=torch.float16)
               for h, n in ((heads, NQ), (heads // group, NK), (heads // group, NK)))
    o = fn(q, k, v, causal=True).double().cpu()
    q64, k64, v64 = (x.double().cpu() for x in (q, k, v))
    k64, v64 = k64.repeat_interleave(group, 1), v64.repeat_interleave(group, 1)
    s = q64 @ k64.transpose(-1, -2) / head_dim ** 0.5
    out = {}
    for align, shift in (("top-left", 0), ("bottom-right", NK - NQ)):
        seen = torch.arange(NK)[None, :] <= torch.arange(NQ)[:, None] + shift
        ref = torch.softmax(s.masked_fill(~seen, float("-inf")), dim=-1) @ v64
        out[align] = ((o - ref).abs().max() / ref.abs().max()).item()
    return out


def choose(errs: dict) -> str | None:
    """The alignment whose reference the output matches, None if it matches neither (or both)."""
    hits = [a for a, e in errs.items() if e <= TOLERANCE]
    return hits[0] if len(hits) == 1 else None


def dots(fn, head_dim: int, group: int, causal: bool) -> int:
    """Tile products (``tl.dot`` calls, every program's) ``fn`` issues at N_SKIP rows, under the interpreter."""
    import torch
    from triton.runtime import interpreter

    gen = torch.Generator(device="cpu").manual_seed(1)
    heads = max(2, group)
    q, k, v = (torch.randn(1, h, N_SKIP, head_dim, generator=gen).to(torch.float16)
               for h in (heads, heads // group, heads // group))
    count = [0]
    builder = interpreter.InterpreterBuilder
    original = builder.create_dot

    def counted(self, *args, **kwargs):
        count[0] += 1
        return original(self, *args, **kwargs)

    builder.create_dot = counted
    try:
        fn(q, k, v, causal=causal)
    finally:
        builder.create_dot = original
    return count[0]


def probe(ref: str, head_dim: int, group: int = 1, align: bool = True, base: Path | None = None,
          timeout: float = 300) -> dict:
    """``{"align": alignment or None, "align_why", "skips": bool or None, "skips_why"}`` for the user's kernel ``ref``,
    run in a child process under the interpreter; ``align`` False leaves the alignment out (None)."""
    env = dict(os.environ, TRITON_INTERPRET="1")
    cmd = [sys.executable, "-m", "iosim.kernels.causal_align", ref, "--head-dim", str(head_dim), "--group", str(group)]
    cmd += (["--align"] if align else []) + (["--base", str(base)] if base is not None else [])
    out = {"align": None, "align_why": "", "skips": None, "skips_why": ""}
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=timeout)
    except subprocess.TimeoutExpired:
        out["align_why"] = out["skips_why"] = f"its calls took over {timeout:.0f} s"
        return out
    if done.returncode:
        last = (done.stderr.strip().splitlines() or ["no output"])[-1]
        out["align_why"] = out["skips_why"] = f"its call on CPU tensors failed: {last[:160]}"
        return out
    got = json.loads(done.stdout)
    if align:
        errs = got["align"]
        if isinstance(errs, str):
            out["align_why"] = f"its call at {NQ} query rows against {NK} keys failed: {errs[:160]}"
        else:
            out["align"] = choose(errs)
            text = ", ".join(f"{a} {e:.1e}" for a, e in errs.items())
            out["align_why"] = f"its output at {NQ} query rows against {NK} keys against each mask: {text}"
    counts = got["dots"]
    if isinstance(counts, str):
        out["skips_why"] = f"its calls at {N_SKIP} rows failed: {counts[:160]}"
    elif counts["full"]:
        share = counts["causal"] / counts["full"]
        out["skips"] = share <= SKIPPED
        out["skips_why"] = (f"at {N_SKIP} rows it issues {counts['causal']} tile products causal, {counts['full']} "
                            f"without the mask ({share:.2f})")
    else:
        out["skips_why"] = f"it issued no tl.dot at {N_SKIP} rows"
    return out


def notes(ref: str, got: dict, aligned: bool, verb: str) -> list[str]:
    """What :func:`probe` found, as notes for the user (``verb``: what iosim does with it, "simulated" or "recorded"):
    the alignment where it was asked for (``aligned``), and a kernel that visits every block or may."""
    out = []
    if aligned:
        out.append(f"{ref} puts its causal diagonal {got['align']} ({got['align_why']}): {verb} so" if got["align"] else
                   f"{ref} does not show where it puts its causal diagonal ({got['align_why']}): {verb} top-left; "
                   f"--causal-align sets it")
    if got["skips"] is False:
        out.append(f"{ref} visits every block under its causal mask ({got['skips_why']}): {verb} so, its loops as long "
                   f"as without the mask")
    elif got["skips"] is None:
        out.append(f"{ref}: whether it skips the blocks its causal mask hides is not known ({got['skips_why']}): "
                   f"{verb} skipping them, as FlashAttention does")
    return out


def _scalar_index() -> None:
    """Let the interpreter take a one-element tensor as an index, as Triton 3.9's does: Triton 3.6's ``int()``s
    its array, which NumPy 2 refuses for any array that is not 0-dimensional, so a kernel with a one-dimensional
    block pointer (a row-sum's) or ``range(tl.cdiv(...))`` failed its probe. A shim on the interpreter, which the
    probe alone runs: iosim never interprets kernels elsewhere."""
    import numpy as np
    from triton.runtime import interpreter

    patch = getattr(interpreter, "_patch_lang_tensor", None)
    if patch is None or getattr(patch, "scalar_index", False):
        return

    def patched(tensor, scope):
        patch(tensor, scope)
        scope.set_attr(tensor, "__index__", lambda self: int(np.asarray(self.handle.data).reshape(-1)[0]))

    patched.scalar_index = True
    interpreter._patch_lang_tensor = patched


def _attempt(call):
    try:
        return call()
    except Exception as e:  # the user's launcher refusing a shape is an answer, not a crash
        return f"{type(e).__name__}: {e}"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("ref", help="path/to/file.py:fn")
    ap.add_argument("--head-dim", type=int, default=64)
    ap.add_argument("--group", type=int, default=1, help="query heads per key/value head")
    ap.add_argument("--align", action="store_true", help="also where the diagonal sits at unequal lengths")
    ap.add_argument("--base", type=Path, default=None, help="folder a relative kernel path is taken from")
    args = ap.parse_args(argv)
    from iosim.kernels.user_kernel import load_kernel

    _scalar_index()
    fn = load_kernel(args.ref, args.base)
    out = {"dots": _attempt(lambda: {"causal": dots(fn, args.head_dim, args.group, True),
                                     "full": dots(fn, args.head_dim, args.group, False)})}
    if args.align:
        out["align"] = _attempt(lambda: errors(fn, args.head_dim, args.group, "cpu"))
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
