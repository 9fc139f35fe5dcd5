"""Math time of a CTA from its own instructions: issue slots and pipe throughputs, tensor cores from FLOPs.

A kernel's loop body is described per warp and iteration by a :class:`LoopCode` — how many
instructions it issues and how many go to each functional pipe (the names Nsight Compute uses:
``fma``, ``alu``, ``xu``, ``lsu``, ``tensor``, ...), read from the kernel's compiled SASS
(:mod:`iosim.costs.sass`) or estimated from its FLOPs. One SM has four sub-partitions, each issuing
one warp instruction per clock; a pipe with ``L`` lanes per SM takes ``128 / L`` clocks of its
sub-partition per warp instruction (FP32: 128 lanes on Hopper, 1 clock; MUFU: 16, 8 clocks). A warp's
iteration therefore costs ``max(instructions, max over pipes of count × clocks)`` clocks of its
sub-partition, and a CTA's warps share the four sub-partitions.

Tensor-core time is the iteration's matrix FLOPs at the rate the calibration's tile loop reached
for the same head dimension (``calibration.raw`` ``tile_<dtype>_d<d>``), else the profile's
efficiency. Within one CTA the softmax waits for ``S = QKᵀ`` and the next product waits for ``P``:
SIMT and tensor time add up. Co-resident CTAs may hide the shorter of the two behind each other's
by the measured ``math_overlap`` (none where it was not measured).
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

SUBPARTITIONS = 4  # warp schedulers per SM on every architecture iosim models (Volta to Hopper)
WARP = 32
# pipe -> the profile field with its lanes per SM (None: the profile's SFU rate)
_LANES = {"fma": "fp32_lanes_per_sm", "fmaheavy": "fp32_lanes_per_sm", "fp16": "fp32_lanes_per_sm",
          "alu": "int32_lanes_per_sm", "xu": None, "lsu": "lsu_lanes_per_sm"}


@dataclass(frozen=True)
class LoopCode:
    """Warp instructions of one loop iteration (or of a CTA's code outside its loops), per warp."""

    instructions: float
    pipes: Mapping[str, float] = field(default_factory=lambda: MappingProxyType({}), hash=False)

    def scaled(self, k: float) -> LoopCode:
        return LoopCode(self.instructions * k, MappingProxyType({p: n * k for p, n in self.pipes.items()}))


@dataclass(frozen=True)
class KernelCode:
    """What a kernel's compiled code says about its cost: loop bodies, launch resources, spills.

    ``masked`` is the loop that runs for blocks needing a mask (causal diagonal, ragged tail) where
    the kernel has a separate one; ``source`` says where the numbers come from.
    """

    loop: LoopCode
    masked: LoopCode | None = None
    outside: LoopCode = LoopCode(0.0)
    regs_per_thread: int | None = None
    shared_bytes: int | None = None
    spill_bytes: int = 0  # local-memory bytes per thread the compiler spilled
    source: str = "estimate"


def lanes(profile, pipe: str) -> float | None:
    """Results per clock per SM of ``pipe`` (``None``: an issue slot only, e.g. branch or uniform)."""
    if pipe not in _LANES:
        return None
    attr = _LANES[pipe]
    if attr is None:
        return float(profile.sfu_ops_per_clk_per_sm)
    value = getattr(profile, attr, None)
    if value:
        return float(value)
    fp32 = profile.simt_fp32_flops / (2.0 * profile.sm_count * profile.clock_hz)  # FMA = 2 FLOPs
    return {"fp32_lanes_per_sm": fp32, "int32_lanes_per_sm": fp32 / 2, "lsu_lanes_per_sm": 32.0}[attr]


def warp_cycles(loop: LoopCode, profile) -> float:
    """Clocks of its sub-partition one warp's ``loop`` takes: issue-bound or bound by its busiest pipe."""
    busiest = 0.0
    for pipe, count in loop.pipes.items():
        n = lanes(profile, pipe)
        if n:
            busiest = max(busiest, count * WARP * SUBPARTITIONS / n)
    return max(loop.instructions, busiest)


def simt_seconds(loop: LoopCode, warps: int, profile) -> float:
    """Time one CTA of ``warps`` warps spends issuing ``loop`` once, alone on its SM."""
    per_subpartition = -(-warps // SUBPARTITIONS)
    return per_subpartition * warp_cycles(loop, profile) / profile.issue_clock_hz


def estimated_code(iter_flops, end_flops, warps: int) -> KernelCode:
    """A kernel's code from its FLOPs where no compiled code is known: one FP32 instruction per SIMT
    operation and one MUFU per special function, spread over the CTA's threads."""
    threads = WARP * warps

    def code(f):
        fma, xu = f.simt / threads, f.sfu / threads
        return LoopCode(fma + xu, MappingProxyType({"fma": fma, "xu": xu}))

    return KernelCode(loop=code(iter_flops), outside=code(end_flops))


def tensor_rate(profile, dtype: str, mma: str = "fwd", head_dim: int | None = None) -> float:
    """Tensor-core FLOP/s the whole GPU sustains on a kernel's tiles: the calibrated tile loop of the
    same head dimension where measured, else the profile's (forward or backward) efficiency."""
    raw = (profile.calibration or {}).get("raw") or {}
    key = f"tile_{'bwd_' if mma == 'bwd' else ''}{dtype}_d{head_dim}"
    if head_dim is not None and raw.get(key):
        return float(raw[key])
    efficiency = profile.tensor_efficiency
    if mma == "bwd" and profile.tensor_efficiency_bwd:
        efficiency = profile.tensor_efficiency_bwd
    return profile.tensor_flops[dtype] * efficiency


def cta_time(t_tensor: float, t_simt: float, share: int, overlap: float) -> float:
    """SM time per CTA for work of ``t_tensor`` + ``t_simt`` alone, with ``share`` CTAs on the SM.

    Within a CTA the two wait for each other; co-resident CTAs hide ``overlap`` of the shorter.
    """
    hidden = overlap * min(t_tensor, t_simt) if share > 1 else 0.0
    return t_tensor + t_simt - hidden


__all__ = ["KernelCode", "LoopCode", "cta_time", "estimated_code", "lanes", "simt_seconds", "tensor_rate",
           "warp_cycles"]
