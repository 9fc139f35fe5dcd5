"""Which shared-memory carve-out the driver configured for each measured kernel, from its launch record.

Nsight Compute's ``launch__occupancy_limit_shared_mem`` is how many CTAs of a kernel the configured carve-out holds,
each CTA with its shared memory and the 1 KiB the system reserves: ``floor(carve-out / (shared + 1 KiB))``. Over every
committed H100 and H200 measurement with that counter, this script tests rules for the carve-out against it, with the
CTAs the kernel's registers and warps let reside (``launch__occupancy_limit_registers``, 64 warps an SM):

- ``largest``: the largest carve-out (228 KiB), what a Triton kernel of more than 48 KiB a CTA asks for;
- ``smallest``: the smallest listed carve-out holding those CTAs (the CUDA programming guide's "the driver
  configures the shared memory capacity ... to avoid shared memory occupancy bottlenecks");
- ``smallest, at least M``: the same, but no smaller than M KiB (the profiles' ``smem_carveout_min``).

Kernels of at most 48 KiB a CTA (which ask for no carve-out) and of more are counted apart, those of under 8 KiB
(a split-KV reduction's scratch) apart too. Prints how many launches each rule gets exactly.

    python experiments/carveouts.py [--min-kib 132]
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from iosim.costs.issue import TRITON_OPTIN_SHARED
from iosim.hardware.profile import load_profile

REPO = Path(__file__).resolve().parents[1]
KIB = 1024
PROFILE = load_profile("h200-sxm")  # its carve-outs and reserve are the H100's too (HOPPER-TG §1.4.1.1)
RESERVED = PROFILE.smem_per_sm - PROFILE.smem_per_cta  # shared memory the system reserves a CTA


def launches() -> list[tuple[int, int, int]]:
    """(shared bytes a CTA, CTAs its registers and warps allow, CTAs the configured carve-out holds) of every
    measured kernel on the H100 and H200 with a launch record."""
    out = []
    for path in sorted((REPO / "experiments" / "measurements").rglob("measurements.json")):
        data = json.loads(path.read_text())
        gpu = data.get("provenance", {}).get("gpu_name", "")
        if "H100" not in gpu and "H200" not in gpu:
            continue
        for case in data.get("cases", []):
            counters = case.get("counters")
            for k in (counters or {}).get("kernels") or [] if isinstance(counters, dict) else []:
                shared, held, regs = (k.get(f) for f in ("shared_bytes", "occupancy_limit_shared_mem",
                                                         "occupancy_limit_registers"))
                if not shared or held is None or regs is None:
                    continue
                block = k.get("block") or [1, 1, 1]
                warps = -(-(block[0] * block[1] * block[2]) // 32)
                out.append((int(shared), min(int(regs), 64 // warps, 32), int(held)))
    return out


def carveout(shared: int, ctas: int, floor_kib: int = 0) -> int:
    """KiB of the smallest of the profile's carve-outs holding ``ctas`` CTAs of ``shared`` bytes (and the reserve each),
    no smaller than ``floor_kib``: the rule :func:`iosim.costs.issue.l1_left` applies at 48 KiB a CTA or less, here
    tried on every launch."""
    need = ctas * (shared + RESERVED)
    carve = min((c for c in PROFILE.smem_carveouts if c >= need), default=PROFILE.smem_per_sm)
    return max(carve, floor_kib * KIB) // KIB


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--min-kib", type=int, default=132, help="the floor the last rule tries (default 132)")
    args = ap.parse_args()
    sizes = [c // KIB for c in PROFILE.smem_carveouts]
    if args.min_kib not in sizes:
        ap.error(f"--min-kib: {args.min_kib} is not a carve-out; allowed: {', '.join(map(str, sizes))}")
    rows = launches()
    rules = {"largest": lambda s, n: PROFILE.smem_per_sm // KIB, "smallest": lambda s, n: carveout(s, n),
             f"smallest, at least {args.min_kib} KiB": lambda s, n: carveout(s, n, args.min_kib)}
    groups = {"8-48 KiB a CTA": lambda s: 8 * KIB <= s <= TRITON_OPTIN_SHARED, "under 8 KiB": lambda s: s < 8 * KIB,
              "over 48 KiB": lambda s: s > TRITON_OPTIN_SHARED}
    print(f"{len(rows)} kernel launches on the H100 and H200 with a launch record; launches whose CTAs each rule's "
          "carve-out holds as Nsight Compute says:")
    print(f"{'shared memory':16s} {'launches':>8s} " + " ".join(f"{r:>28s}" for r in rules))
    for label, pick in groups.items():
        sub = [r for r in rows if pick(r[0])]
        hits = [sum(rule(s, n) * KIB // (s + RESERVED) == held for s, n, held in sub) for rule in rules.values()]
        print(f"{label:16s} {len(sub):8d} " + " ".join(f"{h:28d}" for h in hits))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
