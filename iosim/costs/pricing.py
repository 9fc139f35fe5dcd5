"""Counts into time: the roofline of a kernel, priced with a hardware profile.

Pure functions, so counts recorded on one profile can be re-priced for another, and so the
discrete-event time can be checked against a bound it must never beat.
"""
from __future__ import annotations


def rates(profile, dtype: str, mma: str = "fwd") -> dict:
    """Sustained rates: bytes/s per memory level, operations/s per kind of math.

    ``mma="bwd"`` prices tensor-core work at the efficiency measured for the backward's tile shapes,
    where the profile has one.
    """
    efficiency = profile.tensor_efficiency
    if mma == "bwd" and profile.tensor_efficiency_bwd:
        efficiency = profile.tensor_efficiency_bwd
    return {
        "hbm": profile.hbm_bandwidth * profile.dram_efficiency,
        "l2": profile.l2_bandwidth * profile.l2_efficiency,
        "host": profile.host_bandwidth,
        "tensor": profile.tensor_flops[dtype] * efficiency,
        # simt_fp32_flops counts a fused multiply-add as two FLOPs; iosim counts instructions.
        "simt": profile.simt_fp32_flops / 2,
        "sfu": profile.sfu_ops_per_clk_per_sm * profile.sm_count * profile.clock_hz,
    }


def compute_time(flops, rate: dict, overlap: float = 0.0) -> float:
    """Math of one CTA: tensor cores, then SIMT and special functions, one after another within a CTA.

    ``overlap`` is the share of the shorter of the two that another CTA on the same SM hides (its
    softmax runs while this one's matrix products do): 0 with one CTA per SM.
    """
    return _math(flops.tensor / rate["tensor"], flops.simt / rate["simt"] + flops.sfu / rate["sfu"], overlap)


def _math(tensor: float, other: float, overlap: float) -> float:
    return tensor + other - overlap * min(tensor, other)


def roofline(levels: dict, flops: dict, profile, dtype: str, mma: str = "fwd") -> dict:
    """Seconds each resource alone would need for a kernel's counts."""
    r = rates(profile, dtype, mma)
    return {
        "hbm": levels["hbm"].total / r["hbm"],
        "l2": (levels["l2"].total) / r["l2"],
        "host": levels["host"].total / r["host"],
        # tensor cores, then SIMT and special functions, with the share co-resident CTAs can overlap
        "compute": _math(flops["tensor"] / r["tensor"], flops["simt"] / r["simt"] + flops["sfu"] / r["sfu"],
                         profile.math_overlap or 0.0),
    }


def reprice(result, profile) -> float:
    """Roofline time of a recorded run on another profile (counts unchanged)."""
    dtype = result.config["problem"]["dtype"]
    return sum(max(roofline(k.levels, k.flops, profile, dtype, k.mma).values()) for k in result.kernels)
