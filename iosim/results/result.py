"""What a simulation produced: byte counts per memory level (kept apart from time) and the timing.

Levels, as in the FlashAttention papers: ``sram`` is on-chip shared memory (``write_bytes``: bytes
landed in it from L2; ``read_bytes``: operand bytes the math read from it), ``l2`` the L2 as the SMs
see it (loads and stores, each CTA counted), ``hbm`` device memory (what Nsight Compute's
``dram__bytes_read/write`` count per kernel; a plain run adds the final write-back of what is still
dirty in L2), ``host`` host memory over the host link. Every result converts to
plain JSON and back unchanged.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields

from iosim.results.caveats import caveats

LEVELS = ("sram", "l2", "hbm", "host")


@dataclass(frozen=True)
class Traffic:
    """Bytes read from and written to one level."""

    read_bytes: int = 0
    write_bytes: int = 0

    @property
    def total(self) -> int:
        return self.read_bytes + self.write_bytes

    def __add__(self, o: Traffic) -> Traffic:
        return Traffic(self.read_bytes + o.read_bytes, self.write_bytes + o.write_bytes)


@dataclass(frozen=True)
class KernelResult:
    """Counts and timing of one kernel launch."""

    name: str
    ctas: int
    ctas_per_sm: int
    waves: float
    levels: dict  # level -> Traffic
    l2_hit_bytes: int
    l2_miss_bytes: int
    flops: dict  # "tensor" / "simt" / "sfu" -> operations
    dirty_left_bytes: int  # written by this kernel (or earlier) and still only in L2 when it ended
    start_s: float
    time_s: float
    roofline: dict  # resource -> seconds if that resource alone limited the kernel
    mma: str = "fwd"  # which calibrated tensor-core efficiency priced it
    instructions: dict = field(default_factory=dict)  # warp instructions: "total" and per pipe (fma, alu, xu, ...)
    code: str = "estimate"  # where the instruction mix came from: compiled SASS, or estimated from FLOPs
    l2_lookup_bytes: int = 0  # bytes the L2 slices looked up: SM loads after request coalescing, stores, atomics
    regs_per_thread: int = 0  # launch resources the occupancy came from
    smem_bytes: int = 0
    launch_s: float = 0.0  # of time_s: the launch overhead and first-wave start every kernel pays
    regimes: tuple = ()  # where validation found the model least certain (iosim.results.caveats)
    launched: bool = True  # False: a later loop of the launch before it (a fused dq), not a launch of its own
    # bytes its compiled loop loads and stores beyond what its schedule reads and writes, over every CTA's passes, that
    # no byte count above includes (a user's kernel that does not follow its schedule; regime ``unmodelled_traffic``)
    unmodelled_bytes: int = 0

    @property
    def bound(self) -> str:
        return max(self.roofline, key=self.roofline.get)


REDUCTION = "decode_reduce"  # flash-decoding's combine kernels: a run they dominate is ``reduction``-bound


@dataclass(frozen=True)
class RunResult:
    """One simulated attention call on one GPU profile."""

    config: dict
    gpu: str
    mode: str
    kernels: tuple
    time_s: float
    peak_hbm_bytes: int
    hbm_capacity_bytes: int
    timeline: dict = field(default_factory=dict)  # {"t_s": [...], level: [bytes per bin]}
    events: int = 0
    final_writeback_bytes: int = 0  # plain mode: dirty L2 bytes written back after the last kernel

    @property
    def levels(self) -> dict:
        """Bytes per level over the whole call; HBM writes include the final write-back (plain mode)."""
        out = {lv: Traffic() for lv in LEVELS}
        for k in self.kernels:
            for lv in LEVELS:
                out[lv] = out[lv] + k.levels[lv]
        out["hbm"] = out["hbm"] + Traffic(0, self.final_writeback_bytes)
        return out

    @property
    def flops(self) -> dict:
        out = {"tensor": 0.0, "simt": 0.0, "sfu": 0.0}
        for k in self.kernels:
            for key in out:
                out[key] += k.flops[key]
        return out

    @property
    def l2_hit_rate(self) -> float:
        hit = sum(k.l2_hit_bytes for k in self.kernels)
        miss = sum(k.l2_miss_bytes for k in self.kernels)
        return hit / (hit + miss) if hit + miss else 0.0

    @property
    def roofline_time_s(self) -> float:
        return sum(max(k.roofline.values()) for k in self.kernels)

    @property
    def bound(self) -> str:
        """The resource whose busy time dominates; when none explains the time, ``reduction`` if
        flash-decoding's combine of the splits takes half of it, ``launch`` if kernel
        launches and starts take half of it, ``grid`` if the kernel
        that takes longest has fewer CTAs than the GPU has slots for (a decode step without splits),
        else ``occupancy`` (latency the resident CTAs do not hide)."""
        busy = {}
        for k in self.kernels:
            for res, t in k.roofline.items():
                busy[res] = busy.get(res, 0.0) + t
        res = max(busy, key=busy.get)
        if busy[res] >= 0.6 * self.time_s:
            return res
        if sum(k.time_s for k in self.kernels if k.name.startswith(REDUCTION)) >= 0.5 * self.time_s:
            return "reduction"
        if sum(k.launch_s for k in self.kernels) >= 0.5 * self.time_s:
            return "launch"
        return "grid" if max(self.kernels, key=lambda k: k.time_s).waves < 1 else "occupancy"

    @property
    def out_of_memory(self) -> bool:
        return self.peak_hbm_bytes > self.hbm_capacity_bytes

    def to_dict(self) -> dict:
        lv = self.levels
        return {
            "config": self.config,
            "gpu": self.gpu,
            "mode": self.mode,
            "levels": {k: asdict(v) for k, v in lv.items()},
            "time_s": self.time_s,
            "bound": self.bound,
            "peak_hbm_bytes": self.peak_hbm_bytes,
            "hbm_capacity_bytes": self.hbm_capacity_bytes,
            "out_of_memory": self.out_of_memory,
            "l2_hit_rate": self.l2_hit_rate,
            "flops": self.flops,
            "achieved": {
                "hbm_bytes_per_s": lv["hbm"].total / self.time_s if self.time_s else 0.0,
                "flop_per_s": self.flops["tensor"] / self.time_s if self.time_s else 0.0,
            },
            "roofline_time_s": self.roofline_time_s,
            "kernels": [_kernel_dict(k) for k in self.kernels],
            "caveats": caveats(self),
            "final_writeback_bytes": self.final_writeback_bytes,
            "timeline": self.timeline,
            "events": self.events,
        }

    @classmethod
    def from_dict(cls, d: dict) -> RunResult:
        kernels = tuple(
            KernelResult(**{f.name: k[f.name] for f in fields(KernelResult) if f.name not in ("levels", "regimes")
                            and f.name in k},
                         levels={lv: Traffic(**t) for lv, t in k["levels"].items()}, regimes=tuple(k.get("regimes", ())))
            for k in d["kernels"]
        )
        return cls(d["config"], d["gpu"], d["mode"], kernels, d["time_s"], d["peak_hbm_bytes"],
                   d["hbm_capacity_bytes"], d.get("timeline", {}), d.get("events", 0),
                   d.get("final_writeback_bytes", 0))


@dataclass(frozen=True)
class Skipped:
    """A run that was not simulated, and why: its tensors exceed the GPU's memory (``OOM: needs 1.1 TB of
    40 GB``, as the FlashAttention paper's tables mark PyTorch) or its tiles do not fit. A sweep keeps it
    as a row with its reason, so one such point never ends the sweep."""

    config: dict
    gpu: str
    mode: str
    reason: str  # one line
    peak_hbm_bytes: int
    hbm_capacity_bytes: int
    field: str | None = None  # the configuration field at fault (None: the problem's size, for OOM)

    @property
    def out_of_memory(self) -> bool:
        return self.peak_hbm_bytes > self.hbm_capacity_bytes

    def to_dict(self) -> dict:
        return {"config": self.config, "gpu": self.gpu, "mode": self.mode, "skipped": self.reason,
                "field": self.field, "peak_hbm_bytes": self.peak_hbm_bytes,
                "hbm_capacity_bytes": self.hbm_capacity_bytes, "out_of_memory": self.out_of_memory}

    @classmethod
    def from_dict(cls, d: dict) -> Skipped:
        return cls(d["config"], d["gpu"], d["mode"], d["skipped"], d["peak_hbm_bytes"], d["hbm_capacity_bytes"],
                   d.get("field"))


def result_from_dict(d: dict) -> RunResult | Skipped:
    """A simulated run or a skipped one, from what its ``to_dict`` wrote."""
    return Skipped.from_dict(d) if "skipped" in d else RunResult.from_dict(d)


def _kernel_dict(k: KernelResult) -> dict:
    d = {f.name: getattr(k, f.name) for f in fields(k)}
    d["levels"] = {lv: asdict(t) for lv, t in k.levels.items()}
    d["regimes"] = list(k.regimes)
    d["bound"] = k.bound
    return d
