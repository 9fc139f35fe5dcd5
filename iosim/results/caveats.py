"""Where a prediction is least certain: the regimes in which validation against counters found iosim's
largest errors, named per kernel so that a reader can weigh the numbers (as Nsight Compute's rules flag
what its counters alone cannot settle).

The engine records which regimes a kernel ran in (``KernelResult.regimes``); this module words them. Three
regimes, all about DRAM bytes, where held-out kernels measured on the H200 read far from the prediction
while SRAM and L2 bytes, instructions and most times held:

- ``causal_evicting``: a causal kernel whose loop streams more of one head's K/V than the L2 holds of
  lines that SMs of both partitions read. Which re-reads hit then depends on how close together the
  causal CTAs run (docs/validation.md, *Long causal sequences*).
- ``spill_frames``: the spilled registers' frames of the resident CTAs, in the copies a stored line
  takes, fill a quarter of the L2 or more. How the GPU keeps and writes back such lines is not what the
  model's L2 does (docs/validation.md, *DRAM writes*).
- ``persistent_drift``: a causal persistent kernel whose CTAs each take tiles fixed in advance: CTAs of
  long diagonal tiles fall behind the others, and how far the tiles in flight drift apart, hence how much
  K/V the L2 must hold, decides the DRAM bytes (``experiments/measurements/h200/persistent/``).
"""
from __future__ import annotations

CAUSAL_EVICTING = "causal_evicting"
SPILL_FRAMES = "spill_frames"
PERSISTENT_DRIFT = "persistent_drift"

MESSAGES = {
    CAUSAL_EVICTING: ("causal, and its loop streams more of one head's K/V than the L2 holds of lines both "
                      "partitions read: which re-reads hit depends on how close together the causal CTAs run, "
                      "and DRAM bytes are the least certain figure (on held-out kernels iosim predicted from a fifth "
                      "to 2.4 times the DRAM bytes the H200 measured; docs/validation.md, Long causal sequences)"),
    SPILL_FRAMES: ("its spilled registers' frames fill a quarter of the L2 or more: DRAM bytes are the least "
                   "certain figure (on spilling kernels others wrote iosim predicted from 0.36 to 1.5 times the "
                   "DRAM bytes the H200 measured; docs/validation.md, DRAM writes)"),
    PERSISTENT_DRIFT: ("a causal persistent kernel whose CTAs take tiles fixed in advance: how far CTAs of long "
                       "tiles fall behind decides how much K/V the L2 must hold, and DRAM bytes are the least "
                       "certain figure (on held-out cases iosim predicted from 0.8 to 1.7 times the DRAM bytes the "
                       "H200 measured; experiments/measurements/h200/persistent)"),
}


def caveats(result) -> list[str]:
    """One line per regime a run's kernels ran in, naming those kernels: ``"flash2_fwd: causal, and ..."``;
    none for a run without any (or a skipped run)."""
    named: dict[str, list[str]] = {}
    for k in getattr(result, "kernels", ()):
        for regime in k.regimes:
            names = named.setdefault(regime, [])
            if k.name not in names:
                names.append(k.name)
    return [f"{', '.join(names)}: {MESSAGES[regime]}" for regime, names in named.items()]


def regimes(result) -> list[str]:
    """The regime names of a run's kernels, each once, in the order they first appear."""
    return list(dict.fromkeys(r for k in getattr(result, "kernels", ()) for r in k.regimes))
