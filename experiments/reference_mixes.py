"""Write iosim/costs/mixes/references-sm_90.json: SDPA's cuDNN and flash kernels' code per warp and iteration.

Reads the committed Nsight Compute source pages (``experiments/probes/sdpa_source_sass.sh`` on the
H200: every SASS line of each kernel with the warp instructions it executed, one forward and backward
at B 4 × H 16, N 4096, d = 64 and d = 128) and divides each forward and backward kernel's executed
counts by the loop iterations and computing warps of that launch as iosim schedules it
(:func:`iosim.schedule.references.reference_config`). Registers and shared memory per CTA come from
the committed measurements that ran the same kernel. A kernel is warp-specialised where its code
reallocates registers between warpgroups (``USETMAXREG``, CUTLASS's producer/consumer split).

FlashAttention-2's split-KV forward (``experiments/probes/sdpa_split_sass.sh``: B1 × H1, N 8192, d 64, and B1 × H2,
N 2048, d 128, where it splits; every CTA the same trips) runs a few K/V blocks a CTA, so its code outside the loop
weighs: its SASS lines executed more than once a warp are the loop's (its first block is peeled: they run trips − 1
or − 2 times), the rest once a CTA. The loop's mix is theirs over trips − 1 blocks; the code outside is the rest of
what a warp executed, less that mix's trips (``outside_*``). Its combine kernel has no loop: all its code is outside.

FlashAttention-2's instantiations that mask (captured on the H100, ``experiments/measurements/h100/``): the split-KV
forward causal or at a length that is not whole blocks (``sdpa_split_sass_variants``, ``gpu_session.sh svar``), the
forward and backward causal (``sdpa_sass_causal``, ``scau``). A forward peels one or two masking steps off its loop,
each CTA's first blocks through the mask (``iosim.schedule.references.flash_masking``); the backward masks the blocks
on the diagonal inside its loop (``iosim.engine.simulator.masked_share``). Their loop and the code outside it are the
plain instantiation's; what a masked block adds is the rest of what the instantiation executed (its source page's
every warp instruction, per pipe, less the plain code at that launch's blocks and CTAs), over the blocks its CTAs ran
masked (``masked_extra_*``, with ``masked_steps``: the forward's peeled steps, 0 for the backward's diagonal).

    python experiments/reference_mixes.py            # rewrite the JSON
    python experiments/reference_mixes.py --check    # exit 1 if the committed JSON differs
"""
from __future__ import annotations

import argparse
import json
import re
import sys
from collections import Counter
from pathlib import Path

import numpy as np

from iosim.costs.code import REFERENCE_MIXES
from iosim.costs.executed import read_source_page
from iosim.costs.sass import opcode_of, pipe_of
from iosim.engine.simulator import masked_share
from iosim.schedule.build import build_schedule
from iosim.schedule.problem import Problem
from iosim.schedule.references import REFERENCE_ARCH, flash_masking, reference_config

ROOT = Path(__file__).resolve().parent.parent
H200 = ROOT / "experiments" / "measurements" / "h200"
# the source pages and the launch each profiled (experiments/probes/sdpa_source_sass.sh, SHAPE)
CAPTURES = ((H200 / "sdpa_sass" / "sdpa_sass.csv.gz", Problem(batch=4, heads=16, seq_q=4096, head_dim=128, backward=True)),
            (H200 / "sdpa_sass_d64" / "sdpa_sass.csv.gz", Problem(batch=4, heads=16, seq_q=4096, head_dim=64, backward=True)))
SPLIT_CAPTURES = ((H200 / "sdpa_split_sass_d64" / "sdpa_sass.csv.gz", Problem(batch=1, heads=1, seq_q=8192, head_dim=64)),
                  (H200 / "sdpa_split_sass_d128" / "sdpa_sass.csv.gz", Problem(batch=1, heads=2, seq_q=2048, head_dim=128)))
SPLIT_ROLES = (("flash_fwd_splitkv_kernel<", "flash2_fwd_split"), ("flash_fwd_splitkv_combine_kernel<", "flash2_fwd_combine"))
# which profiled kernel is which schedule kernel, per backend
ROLES = {"sdpa_cudnn": (("flash_fprop_wgmma", "flash2_fwd"), ("flash_bprop_wgmma", "flash2_bwd")),
         "sdpa_flash": (("flash_fwd_kernel<", "flash2_fwd"), ("flash_bwd_dq_dk_dv_loop", "flash2_bwd"))}
# causal and ragged instantiations of FlashAttention-2's split-KV forward (gpu_session.sh svar) and causal ones of its
# forward and backward (scau), at shapes no committed set has
H100 = ROOT / "experiments" / "measurements" / "h100"
VARIANT_CAPTURES = tuple((H100 / "sdpa_split_sass_variants" / tag / "sdpa_sass.csv.gz",
                          Problem(batch=1, heads=h, seq_q=n, head_dim=d, causal=causal), SPLIT_ROLES[0][0], "flash2_fwd_split")
                         for tag, h, n, d, causal in (("causal_d64", 1, 3000, 64, True), ("causal_even_d64", 2, 2048, 64, True),
                                                      ("ragged_d64", 4, 1500, 64, False), ("causal_d128", 1, 2500, 128, True),
                                                      ("causal_even_d128", 2, 2048, 128, True),
                                                      ("ragged_d128", 4, 1200, 128, False))) + tuple(
    (H100 / "sdpa_sass_causal" / f"d{d}" / "sdpa_sass.csv.gz",
     Problem(batch=2, heads=8, seq_q=3072, head_dim=d, causal=True, backward=True), needle, role)
    for d in (64, 128) for needle, role in ROLES["sdpa_flash"])
# measurement files whose per-kernel records carry registers and shared memory of these kernels
RESOURCE_FILES = (H200 / "hopper" / "ncu_bwd" / "measurements.json", H200 / "measurements.json",
                  H200 / "sdpa_small" / "measurements.json")


def _plain(name: str) -> str:
    """A kernel name without the casts ncu's source page prints in template arguments."""
    return re.sub(r"\((?:int|bool|unsigned int)\)", "", name).replace(" ", "")


def _resources() -> dict:
    out = {}
    for path in RESOURCE_FILES:
        for case in json.loads(path.read_text())["cases"]:
            for k in (case.get("counters") or {}).get("kernels") or []:
                out.setdefault(_plain(k["name"]), (k.get("registers"), k.get("shared_bytes"), k.get("block")))
    return out


def _iterations(impl: str, problem: Problem, kernel_name: str) -> tuple[float, int]:
    kernel = _kernel(impl, problem, kernel_name)
    sl, i, j = kernel.coords(0, kernel.ctas)
    _, trips = kernel.loop_bounds(i, j, sl)
    return float(trips.sum()), kernel.warps


def _kernel(impl: str, problem: Problem, kernel_name: str):
    schedule = build_schedule(reference_config(impl, problem, REFERENCE_ARCH), 132)
    return next(k for k in schedule.kernels if k.name == kernel_name)


def _split_entry(path: Path, problem: Problem, found, role: str, resources: dict) -> dict:
    """A split-KV kernel's entry: its loop's mix per warp and iteration and its code outside the loop per warp
    (see the module's docstring); the launch's CTAs must all run the same trips."""
    kernel = _kernel("sdpa_flash", problem, role)
    sl, i, j = kernel.coords(0, kernel.ctas)
    trips = kernel.loop_bounds(i, j, sl)[1] if kernel.loop_extent else None
    warps = kernel.ctas * kernel.warps
    if trips is not None and not (trips == trips[0]).all():
        raise SystemExit(f"{path}: the capture's CTAs run unequal trips")
    n = int(trips[0]) if trips is not None else 0
    loop, total, local = Counter(), Counter(), Counter()
    for text, count in found.lines:
        if not count:
            continue
        pipe, per = pipe_of(opcode_of(text)), count / warps
        total[pipe] += per
        if n > 1 and per > 1.5:  # a loop line: trips − 1 (or − 2) times a warp
            loop[pipe] += per / (n - 1)
            local[opcode_of(text)] += per / (n - 1)
    outside = {pipe: v - loop[pipe] * n for pipe, v in total.items()}
    if min(outside.values(), default=0.0) < -1e-9:  # per pipe the peeled block is the loop's; none is negative
        raise SystemExit(f"{path}: {role}'s loop lines exceed what a warp executed of them")
    regs, smem, block = resources.get(_plain(found.name), (None, None, None))
    return {"impl": "sdpa_flash", "kernel": role, "head_dim": problem.head_dim, "name": found.name,
            "capture": str(path.relative_to(ROOT)),
            "launch": {"batch": problem.batch, "heads": problem.heads, "seq": problem.seq_q,
                       "iterations": float(n * kernel.ctas), "warps": kernel.warps, "ctas": kernel.ctas},
            "instructions": sum(loop.values()), "pipes": {p: v for p, v in sorted(loop.items()) if v},
            "outside_instructions": sum(outside.values()),
            "outside_pipes": {p: v for p, v in sorted(outside.items()) if abs(v) > 1e-9},
            "local_loads": local["LDL"], "local_stores": local["STL"],
            "registers": regs, "shared_bytes": smem, "threads": block[0] if block else None,
            "specialised": False, "tma": False}


def _variant_entry(path: Path, problem: Problem, found, base: dict, role: str) -> dict:
    """An instantiation's entry: the plain one's loop and outside code, and what its masked blocks add per block, per
    pipe (see the module's docstring). A forward's masked blocks are each CTA's first ``masking_steps``; the
    backward's, in its loop, those the causal diagonal crosses (``masked_steps`` 0: the engine's own share)."""
    kernel = _kernel("sdpa_flash", problem, role)
    causal, even, steps = flash_masking(problem, kernel.block_i, kernel.block_u)
    sl, i, j = kernel.coords(0, kernel.ctas)
    trips = kernel.loop_bounds(i, j, sl)[1]
    if role == "flash2_bwd":
        steps = 0
        masked = masked_share(kernel) * float(trips.sum())
    else:
        masked = float(np.minimum(trips, steps).sum())
    if not masked:
        raise SystemExit(f"{path}: {problem} runs no masked block in {role}, nothing to read")
    total = Counter()
    for text, count in found.lines:
        if count:
            total[pipe_of(opcode_of(text))] += count / kernel.warps
    outside = base.get("outside_pipes", {})
    pipes = set(total) | set(base["pipes"]) | set(outside)
    extra = {p: (total[p] - base["pipes"].get(p, 0.0) * float(trips.sum()) - outside.get(p, 0.0) * kernel.ctas) / masked
             for p in sorted(pipes)}
    return {**base, "name": found.name, "capture": str(path.relative_to(ROOT)),
            "variant": {"causal": causal, "even": even},
            "launch": {"batch": problem.batch, "heads": problem.heads, "seq": problem.seq_q, "causal": causal,
                       "backward": problem.backward, "iterations": float(trips.sum()), "warps": kernel.warps,
                       "ctas": kernel.ctas, "masked": masked},
            "masked_steps": steps, "masked_extra_instructions": sum(extra.values()),
            "masked_extra_pipes": {p: v for p, v in extra.items() if abs(v) > 1e-9}}


def build() -> dict:
    resources = _resources()
    entries = []
    for path, problem in CAPTURES:
        profiled = read_source_page(path)
        for impl, roles in ROLES.items():
            for needle, role in roles:
                found = next(k for k in profiled if needle in k.name)
                iterations, warps = _iterations(impl, problem, role)
                per = iterations * warps
                opcodes = found.opcodes()
                regs, smem, block = resources.get(_plain(found.name), (None, None, None))
                entries.append({
                    "impl": impl, "kernel": role, "head_dim": problem.head_dim, "name": found.name,
                    "capture": str(path.relative_to(ROOT)),
                    "launch": {"batch": problem.batch, "heads": problem.heads, "seq": problem.seq_q,
                               "iterations": iterations, "warps": warps},
                    "instructions": found.instructions / per,
                    "pipes": {p: n / per for p, n in sorted(found.pipes().items())},
                    "local_loads": opcodes.get("LDL", 0.0) / per, "local_stores": opcodes.get("STL", 0.0) / per,
                    "registers": regs, "shared_bytes": smem, "threads": block[0] if block else None,
                    "specialised": opcodes.get("USETMAXREG", 0) > 0,
                    "tma": opcodes.get("UTMALDG", 0) > 0,
                })
    for path, problem in SPLIT_CAPTURES:
        profiled = read_source_page(path)
        for needle, role in SPLIT_ROLES:
            entries.append(_split_entry(path, problem, next(k for k in profiled if needle in k.name), role, resources))
    plain = {(e["impl"], e["kernel"], e["head_dim"]): e for e in entries}
    for path, problem, needle, role in VARIANT_CAPTURES:
        found = next(k for k in read_source_page(path) if needle in k.name)
        entries.append(_variant_entry(path, problem, found, plain["sdpa_flash", role, problem.head_dim], role))
    return {"arch": REFERENCE_ARCH, "source": "ncu source pages (SourceCounters) on an NVIDIA H200 (the "
            "instantiations that mask on an H100), driver 580.159.04, torch 2.11.0+cu130, Nsight Compute 2025.3.1.0",
            "command": "python experiments/reference_mixes.py", "kernels": entries}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--check", action="store_true", help="compare with the committed file instead of writing it")
    args = parser.parse_args(argv)
    text = json.dumps(build(), indent=1) + "\n"
    target = ROOT / "iosim" / "costs" / "mixes" / REFERENCE_MIXES
    if args.check:
        same = target.exists() and target.read_text() == text
        print(f"{target.relative_to(ROOT)}: {'up to date' if same else 'differs from what the captures give'}")
        return 0 if same else 1
    target.write_text(text)
    print(f"wrote {target.relative_to(ROOT)}: {len(json.loads(text)['kernels'])} kernels")
    return 0


if __name__ == "__main__":
    sys.exit(main())
