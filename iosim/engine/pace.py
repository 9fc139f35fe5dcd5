"""Each CTA's own pace: CTAs of one kernel on the same tiles do not run exactly alike.

Traced on the GPU (``python -m iosim.kernels.causal_trace``, ``experiments/cta_pace.py``), a causal CTA's time per
K/V block over its whole loop strays from that of the CTAs of its head around it by a few tenths of a percent, even
where every load hits. The model's CTAs of one tile shape are otherwise exactly alike, and at long causal N that
matters: after the first wave each slot frees where a CTA whose length follows its row ends, so identical paces start
the later CTAs in a regular lattice that never breaks, where the GPU's start times spread like a random sequence, and
which K/V lines the L2 still holds when the next CTA of a head comes depends on those gaps. A pace factor per CTA,
drawn once from the profile's measured spread (``cta_pace_spread``) and the same in every run, breaks the lattice as
the GPU's own spread does.
"""
from __future__ import annotations

import numpy as np


def pace_factors(ctas: int, spread: float, seed: int) -> np.ndarray:
    """One factor per CTA of a kernel (its time per iteration over the mean CTA's): lognormal with mean 1 and
    log-spread ``spread``, drawn from a generator seeded by ``seed`` (the kernel's place in its schedule), so that the
    same schedule draws the same factors whatever the engine's cohorts (CTA ``g`` takes factor ``g``)."""
    if spread <= 0:
        return np.ones(ctas)
    z = np.random.default_rng([seed, ctas]).standard_normal(ctas)
    return np.exp(spread * z - spread * spread / 2.0)


__all__ = ["pace_factors"]
