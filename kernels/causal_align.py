"""Where a user's kernel puts its causal diagonal when the query and key lengths differ, found by running it.

A kernel ``fn(q, k, v, causal=True)`` is called once at a small problem (48 query rows against 112 keys, neither a
multiple of any tile) on random inputs and its output compared with softmax attention in float64 under each mask of
:data:`iosim.schedule.problem.CAUSAL_ALIGNS`: top-left (row i sees keys j <= i) and bottom-right (j <= i + Nk - Nq).
On a machine without a GPU the call runs under Triton's interpreter, in a child process (``TRITON_INTERPRET`` is
read when a kernel file is imported), so it takes a few seconds.

    python -m iosim.kernels.causal_align FILE.py:FN [--head-dim 64] [--group 1]   (prints the alignment as JSON)
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

NQ, NK = 48, 112  # the probe's lengths: the two masks differ on every row
TOLERANCE = 2e-2  # largest |error| over max |reference| that still matches a mask (fp16 inputs, fp32 math)


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


def detect(ref: str, head_dim: int, group: int = 1, base: Path | None = None, timeout: float = 300) -> tuple:
    """``(alignment or None, why)`` of the user's kernel ``ref``: run in a child process, under the interpreter
    where no GPU is present. ``why`` says what was compared or what failed."""
    env = dict(os.environ)
    try:
        import torch

        gpu = torch.cuda.is_available()
    except ImportError:
        gpu = False
    if not gpu:
        env["TRITON_INTERPRET"] = "1"
    cmd = [sys.executable, "-m", "iosim.kernels.causal_align", ref, "--head-dim", str(head_dim), "--group", str(group)]
    if base is not None:
        cmd += ["--base", str(base)]
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=timeout)
    except subprocess.TimeoutExpired:
        return None, f"its call at {NQ} query rows against {NK} keys took over {timeout:.0f} s"
    if done.returncode:
        last = (done.stderr.strip().splitlines() or ["no output"])[-1]
        return None, f"its call at {NQ} query rows against {NK} keys failed: {last[:160]}"
    errs = json.loads(done.stdout)
    found = choose(errs)
    where = "on the GPU" if gpu else "on CPU under Triton's interpreter"
    text = ", ".join(f"{a} {e:.1e}" for a, e in errs.items())
    return found, f"its output at {NQ} query rows against {NK} keys ({where}) against each mask: {text}"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("ref", help="path/to/file.py:fn")
    ap.add_argument("--head-dim", type=int, default=64)
    ap.add_argument("--group", type=int, default=1, help="query heads per key/value head")
    ap.add_argument("--base", type=Path, default=None, help="folder a relative kernel path is taken from")
    args = ap.parse_args(argv)
    import torch

    from iosim.kernels.user_kernel import load_kernel

    device = "cuda" if torch.cuda.is_available() else "cpu"
    fn = load_kernel(args.ref, args.base)
    print(json.dumps(errors(fn, args.head_dim, args.group, device)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
