"""Compile an attention problem into the kernels a real implementation launches (a :class:`Schedule`)."""
from __future__ import annotations

from dataclasses import replace

from iosim.schedule import flash1, flash2, flash_decode, standard
from iosim.schedule.common import Schedule, TensorSet, check_problem
from iosim.schedule.ir import HOST
from iosim.schedule.launcher import kernels_view, with_launcher_ops
from iosim.schedule.problem import RunConfig
from iosim.schedule.references import flash_splits, reference_kernels
from iosim.schedule.tiling import resolve

BUILDERS = {"standard": standard.build, "standard_eager": standard.build, "flash1": flash1.build, "flash2": flash2.build,
            "flash_decode": flash_decode.build}
INPUTS = ("Q", "K", "V")
BACKWARD_INPUTS = ("dO",)
OUTPUTS = ("O",)
BACKWARD_OUTPUTS = ("dQ", "dK", "dV")


def build_schedule(config: RunConfig, sm_count: int | None = None) -> Schedule:
    """The kernels of ``config.algo`` for ``config.problem``, in launch order; the schedule keeps the resolved config.

    ``sm_count``: the GPU's SMs, for choices a real implementation makes at launch from them (the
    splits of flash-decoding); the resolved config records what was chosen.
    """
    check_problem(config)
    config = resolve(kernels_view(config) if config.launcher_ops else config)
    if config.algo == "flash_decode":
        config = replace(config, tiling=replace(config.tiling, splits=flash_decode.splits_for(config, sm_count)))
    elif config.impl == "sdpa_flash" and config.tiling.splits is None and (n := flash_splits(config.problem, sm_count)) > 1:
        config = replace(config, tiling=replace(config.tiling, splits=n))  # FlashAttention-2 splits its K/V length
    ts = TensorSet(config)
    kernels = BUILDERS[config.algo](ts, config)
    if config.impl is not None:  # PyTorch SDPA's kernels running the same schedule
        kernels = reference_kernels(kernels, config.impl, ts)
    if config.launcher_ops:  # what a user's launcher runs in PyTorch besides its Triton kernels
        kernels = with_launcher_ops(kernels, ts, config)
    p = config.problem
    inputs = INPUTS + (BACKWARD_INPUTS if p.backward else ())
    outputs = OUTPUTS + (BACKWARD_OUTPUTS if p.backward else ())
    tensors, kernels = ts.build(), tuple(kernels)
    return Schedule(config, tensors, kernels, inputs, outputs, peak_footprint(tensors, kernels, inputs + outputs))


def peak_footprint(tensors: tuple, kernels: tuple, keep: tuple) -> int:
    """Bytes allocated at the busiest kernel: inputs and outputs always, intermediates while in use.

    Tensors placed in host memory are not counted. An intermediate lives from the first kernel that
    touches it to the last (PyTorch frees a tensor when its last use ends); saved tensors of the
    forward pass (P, LSE) live on into the backward.
    ``keep`` names the tensors that live throughout (the call's inputs and outputs).
    """
    names = [t.name for t in tensors if t.placement != HOST]  # host-resident tensors take no HBM
    size = {t.name: t.nbytes for t in tensors}
    for kernel in kernels:  # a variable-length batch's tensors are packed: each request holds its own rows
        for name, rows in (kernel.ragged.rows if kernel.ragged else ()):
            t = next(t for t in tensors if t.name == name)
            size[name] = t.slices // len(rows) * sum(rows) * t.cols * t.elem_bytes
    first, last = {}, {}
    for k, kernel in enumerate(kernels):
        used = {p.tensor for p in kernel.patterns} | {name for name, _, _ in kernel.extents}
        for name in used:
            first.setdefault(name, k)
            last[name] = k
    keep = set(keep)
    peak = 0
    for k in range(len(kernels)):
        live = sum(size[n] for n in names if n in keep or first.get(n, -1) <= k <= last.get(n, -1))
        peak = max(peak, live)
    return peak


__all__ = ["build_schedule", "peak_footprint", "Schedule"]
