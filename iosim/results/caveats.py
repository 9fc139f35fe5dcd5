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

Two more name a user's kernel that does not follow its schedule, a tile loop whose compiled code loads more a pass
than the schedule it is priced on reads, or stores more than it writes: ``tile_beyond_schedule`` where the rest is
one tile of each (query block, key block) of a forward, read (a bias, a mask) or written (scores kept for the
caller) as a tensor of its own for each head; ``unmodelled_traffic`` where it is not, and is then in no byte count.
"""
from __future__ import annotations

CAUSAL_EVICTING = "causal_evicting"
SPILL_FRAMES = "spill_frames"
PERSISTENT_DRIFT = "persistent_drift"
UNMODELLED_TRAFFIC = "unmodelled_traffic"
TILE_BEYOND = "tile_beyond_schedule"

MESSAGES = {
    CAUSAL_EVICTING: ("causal, and its loop streams more of one head's K/V than the L2 holds of lines both "
                      "partitions read: which re-reads hit depends on how close together the causal CTAs run, "
                      "and DRAM bytes are the least certain figure (on held-out kernels iosim predicted from a fifth "
                      "to 2.4 times the DRAM bytes the H200 measured; on its own kernel 0.67-1.3 times the H100's, "
                      "short where K/V sits at the edge of what the L2 holds and where many heads run; "
                      "docs/validation.md, Long causal sequences)"),
    SPILL_FRAMES: ("its spilled registers' frames fill a quarter of the L2 or more: DRAM bytes are the least "
                   "certain figure (on spilling kernels others wrote iosim predicted from 0.36 to 1.5 times the "
                   "DRAM bytes the H200 measured; docs/validation.md, DRAM writes)"),
    PERSISTENT_DRIFT: ("a causal persistent kernel whose CTAs take tiles fixed in advance: how far CTAs of long "
                       "tiles fall behind decides how much K/V the L2 must hold, and DRAM bytes are the least "
                       "certain figure (on held-out cases iosim predicted from 0.8 to 1.7 times the DRAM bytes the "
                       "H200 measured; experiments/measurements/h200/persistent)"),
    UNMODELLED_TRAFFIC: ("its compiled loop loads 1.2 times or more the bytes a pass of the schedule it is priced on "
                         "reads, or stores beyond what it writes a fifth of that or more: the rest is in its time's "
                         "instructions but in no byte count, so DRAM and L2 bytes are low by what it moves beyond the "
                         "schedule"),
    TILE_BEYOND: ("its compiled loop moves a tile more of each (query block, key block) a pass than the schedule "
                  "it is priced on (loads 1.2 times what it reads, or stores a fifth of that beyond what it writes): "
                  "read (or written) as a bias, mask or score tensor of its own for every head, counted like K and V "
                  "(a bias that heads share reads less from DRAM: the L2 holds it for the next head)"),
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
    beyond = sum(getattr(k, "unmodelled_bytes", 0) for k in getattr(result, "kernels", ()))
    how_much = {UNMODELLED_TRAFFIC: f" ({beyond / 1e9:.3g} GB over the run)"} if beyond else {}
    return [f"{', '.join(names)}: {MESSAGES[regime]}{how_much.get(regime, '')}" for regime, names in named.items()]


def regimes(result) -> list[str]:
    """The regime names of a run's kernels, each once, in the order they first appear."""
    return list(dict.fromkeys(r for k in getattr(result, "kernels", ()) for r in k.regimes))
