"""Counts into time: the roofline of a kernel, priced with a hardware profile.

Pure functions, so counts recorded on one profile can be re-priced for another, and so the
discrete-event time can be checked against a bound it must never beat.
"""
from __future__ import annotations


def rates(profile, dtype: str) -> dict:
    """Sustained rates: bytes/s per memory level, operations/s per kind of math."""
    return {
        "hbm": profile.hbm_bandwidth * profile.dram_efficiency,
        "l2": profile.l2_bandwidth * profile.l2_efficiency,
        "host": profile.host_bandwidth,
        "tensor": profile.tensor_flops[dtype] * profile.tensor_efficiency,
        # simt_fp32_flops counts a fused multiply-add as two FLOPs; iosim counts instructions.
        "simt": profile.simt_fp32_flops / 2,
        "sfu": profile.sfu_ops_per_clk_per_sm * profile.sm_count * profile.clock_hz,
    }


def compute_time(flops, rate: dict) -> float:
    """Math of one CTA or one kernel: tensor cores, SIMT and special functions issue one after another."""
    return flops.tensor / rate["tensor"] + flops.simt / rate["simt"] + flops.sfu / rate["sfu"]


def roofline(levels: dict, flops: dict, profile, dtype: str) -> dict:
    """Seconds each resource alone would need for a kernel's counts."""
    r = rates(profile, dtype)
    return {
        "hbm": levels["hbm"].total / r["hbm"],
        "l2": (levels["l2"].total) / r["l2"],
        "host": levels["host"].total / r["host"],
        "compute": flops["tensor"] / r["tensor"] + flops["simt"] / r["simt"] + flops["sfu"] / r["sfu"],
    }


def reprice(result, profile) -> float:
    """Roofline time of a recorded run on another profile (counts unchanged)."""
    dtype = result.config["problem"]["dtype"]
    return sum(max(roofline(k.levels, k.flops, profile, dtype).values()) for k in result.kernels)
