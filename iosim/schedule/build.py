"""Compile an attention problem into the kernels a real implementation launches (a :class:`Schedule`)."""
from __future__ import annotations

from iosim.schedule.problem import RunConfig
from iosim.schedule.tiling import resolve
from iosim.schedule import flash1, flash2, standard
from iosim.schedule.common import Schedule, TensorSet, check_problem

BUILDERS = {"standard": standard.build, "standard_eager": standard.build, "flash1": flash1.build, "flash2": flash2.build}
INPUTS = ("Q", "K", "V")
BACKWARD_INPUTS = ("dO",)
OUTPUTS = ("O",)
BACKWARD_OUTPUTS = ("dQ", "dK", "dV")


def build_schedule(config: RunConfig) -> Schedule:
    """The kernels of ``config.algo`` for ``config.problem``, in launch order; the schedule keeps the resolved config."""
    check_problem(config)
    config = resolve(config)
    ts = TensorSet(config)
    kernels = BUILDERS[config.algo](ts, config)
    p = config.problem
    inputs = INPUTS + (BACKWARD_INPUTS if p.backward else ())
    outputs = OUTPUTS + (BACKWARD_OUTPUTS if p.backward else ())
    return Schedule(config, ts.build(), tuple(kernels), inputs, outputs)


def peak_footprint(schedule: Schedule) -> int:
    """Bytes allocated at the busiest kernel: inputs and outputs always, intermediates while in use.

    An intermediate lives from the first kernel that touches it to the last (PyTorch frees a tensor
    when its last use ends); saved tensors of the forward pass (P, LSE) live on into the backward.
    """
    names = [t.name for t in schedule.tensors]
    size = {t.name: t.nbytes for t in schedule.tensors}
    first, last = {}, {}
    for k, kernel in enumerate(schedule.kernels):
        used = {p.tensor for p in kernel.patterns} | {name for name, _, _ in kernel.extents}
        for name in used:
            first.setdefault(name, k)
            last[name] = k
    keep = set(schedule.inputs) | set(schedule.outputs)
    peak = 0
    for k in range(len(schedule.kernels)):
        live = sum(size[n] for n in names if n in keep or first.get(n, -1) <= k <= last.get(n, -1))
        peak = max(peak, live)
    return peak


__all__ = ["build_schedule", "peak_footprint", "Schedule"]
