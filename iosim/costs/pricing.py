"""Counts into time: the roofline of a kernel, priced with a hardware profile.

Pure functions, so counts recorded on one profile can be re-priced for another, and so the
discrete-event time can be checked against a bound it must never beat. Math is counted as
tensor-core FLOPs plus warp instructions per functional pipe (:mod:`iosim.costs.issue`).
"""
from __future__ import annotations

from collections.abc import Mapping

from iosim.costs.issue import LOCAL_WORD, SUBPARTITIONS, WARP, lanes, shared_cycles, tensor_rate


def rates(profile) -> dict:
    """Sustained bytes/s per memory level (tensor-core rates: :func:`iosim.costs.issue.tensor_rate`)."""
    return {
        "hbm": profile.hbm_bandwidth * profile.dram_efficiency,
        "l2": profile.l2_bandwidth * profile.l2_efficiency,
        "host": profile.host_bandwidth,
    }


def read_rates(profile) -> dict:
    """Sustained bytes/s of reads alone per memory level, where measured above :func:`rates` (HBM
    reads alone stream faster than a copy, which turns the bus around between reads and writes)."""
    return {"hbm": profile.dram_read_bandwidth} if profile.dram_read_bandwidth else {}


def write_rates(profile) -> dict:
    """Sustained bytes/s of writes alone per memory level, where measured: a level's writes go no
    faster than this even when its reads and writes together go at :func:`rates`."""
    out = {"hbm": profile.dram_write_bandwidth, "l2": profile.l2_write_bandwidth}
    return {lv: rate for lv, rate in out.items() if rate}


def instruction_totals(code, masked_share: float, iterations: float, ctas: int, warps: int, profile=None) -> dict:
    """Warp instructions a kernel executes, in total and per pipe: ``iterations`` loop iterations
    (summed over CTAs, ``masked_share`` of them masked, each of those ``code.masked_passes`` passes of the
    masked body) and each CTA's code outside its loops; with a
    ``profile``, also the wavefronts its shared-memory instructions take (``shared_wavefronts``, where every
    part of its code recorded them and none is a wgmma, whose operand reads by descriptor no instruction
    counts: :func:`iosim.costs.issue.shared_cycles`), and where it spills the bytes its threads load and store in
    local memory (``local_load_bytes``, ``local_store_bytes``: what Nsight Compute's local-memory counters read)."""
    out: dict[str, float] = {}
    parts = [code.loop, code.outside] + ([code.masked] if code.masked is not None else [])
    wavefronts = profile is not None and bool(profile.smem_bytes_per_clk_per_sm) and not code.wgmma and \
        all(p.shared is not None or not p.instructions for p in parts)

    def add(loop, times):
        out["total"] = out.get("total", 0.0) + loop.instructions * times
        for pipe, n in loop.pipes.items():
            out[pipe] = out.get(pipe, 0.0) + n * times
        if loop.local_loads or loop.local_stores:  # spilled registers: bytes its threads load and store locally
            for key, words in (("local_load_bytes", loop.local_loads), ("local_store_bytes", loop.local_stores)):
                out[key] = out.get(key, 0.0) + words * LOCAL_WORD * WARP * times
        if wavefronts:
            out["shared_wavefronts"] = out.get("shared_wavefronts", 0.0) + shared_cycles(loop, profile) * times

    unmasked = iterations * (1.0 - masked_share) if code.masked is not None else iterations
    add(code.loop, unmasked * warps / code.unroll)
    if code.masked is not None:
        add(code.masked, iterations * masked_share * code.masked_passes * warps / code.unroll)
    add(code.outside, ctas * warps)
    return out


def simt_time(instructions: Mapping, profile) -> float:
    """Seconds every SM's sub-partitions need for a kernel's warp instructions: issue-bound or bound
    by the busiest pipe."""
    per_clock = profile.sm_count * profile.issue_clock_hz
    issue = instructions.get("total", 0.0) / (SUBPARTITIONS * per_clock)
    pipes = [n * WARP / (lanes(profile, p) * per_clock) for p, n in instructions.items() if lanes(profile, p)]
    return max([issue, *pipes])


def shared_time(instructions: Mapping, profile) -> float:
    """Seconds every SM's shared-memory path needs for a kernel's wavefronts (one a clock per SM)."""
    return instructions.get("shared_wavefronts", 0.0) / (profile.sm_count * profile.issue_clock_hz)


def roofline(levels: dict, flops: dict, instructions: Mapping, profile, dtype: str, mma: str = "fwd",
             head_dim: int | None = None, specialised: bool = False) -> dict:
    """Seconds each resource alone would need for a kernel's counts; math is tensor cores then SIMT,
    which wait for each other within a CTA (or the longer of the two, for a warp-specialised kernel
    whose warpgroups take turns: :attr:`iosim.costs.issue.KernelCode.specialised`), and no shorter than
    the shared-memory path's wavefronts, which run beside both."""
    r, w = rates(profile), write_rates(profile)

    def level(lv):  # all its bytes at its rate, and no faster than its writes alone go
        t = levels[lv].total / r[lv]
        return max(t, levels[lv].write_bytes / w[lv]) if lv in w else t

    return {
        "hbm": level("hbm"),
        "l2": level("l2"),
        "host": levels["host"].total / r["host"],
        "compute": max(_math(flops["tensor"] / tensor_rate(profile, dtype, mma, head_dim),
                             simt_time(instructions, profile), 1.0 if specialised else profile.math_overlap or 0.0),
                       shared_time(instructions, profile)),
    }


def _math(tensor: float, simt: float, overlap: float) -> float:
    return tensor + simt - overlap * min(tensor, simt)


def reprice(result, profile) -> float:
    """Roofline time of a recorded run on another profile (counts unchanged)."""
    p = result.config["problem"]
    return sum(max(roofline(k.levels, k.flops, k.instructions, profile, p["dtype"], k.mma, p["head_dim"]).values())
               for k in result.kernels)
