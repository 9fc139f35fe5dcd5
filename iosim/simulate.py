"""One call from a run configuration and a GPU to a priced result: schedule, then engine."""
from __future__ import annotations

from iosim.engine.simulator import Engine
from iosim.hardware.profile import Profile, load_profile
from iosim.results.result import RunResult, Skipped
from iosim.schedule.build import build_schedule
from iosim.schedule.common import check_own_kernels
from iosim.schedule.problem import ConfigError, RunConfig


def simulate(config: RunConfig, gpu: str | Profile = "a100", *, aggregate: bool = True,
             l2_bytes: int | None = None, codes: list | None = None, triton_version: str | None = None,
             progress=None, l2_lines: int | None = None) -> RunResult:
    """Simulate ``config`` on ``gpu`` (a built-in profile name, a profile file, or a :class:`Profile`).

    ``l2_bytes`` overrides the L2 capacity the model uses (0: no L2; the closed forms' limit).
    Each kernel's math is priced from its compiled code: ``codes`` (one
    :class:`~iosim.costs.issue.KernelCode` or None per kernel, e.g. a user's kernel), else iosim's own
    kernels' committed SASS mixes for the profile's architecture and ``triton_version`` (the newest
    committed when None), else an estimate from FLOPs. ``progress(done, total, kernel)`` is called as
    CTAs finish (CTAs of the whole run, and the name of the kernel running). ``l2_lines`` sets the L2
    model's resolution, lines per L2 partition (default :data:`~iosim.engine.simulator.LINES_PER_L2`):
    how finely reuse is resolved, and what a prediction's sensitivity to it is measured with.
    Without ``codes`` the kernels are iosim's own, which take a power-of-two head dim.
    """
    if codes is None:
        check_own_kernels(config)
    profile = gpu if isinstance(gpu, Profile) else load_profile(gpu)
    return Engine(build_schedule(config, profile.sm_count), profile, mode=config.mode, aggregate=aggregate,
                  l2_bytes=l2_bytes, codes=codes, triton_version=triton_version, progress=progress,
                  l2_lines=l2_lines).run()


def simulate_or_skip(config: RunConfig, gpu: str | Profile = "a100", **options) -> RunResult | Skipped:
    """:func:`simulate`, or a :class:`Skipped` row where the run cannot happen: tensors beyond the GPU's
    memory (found from the schedule alone, before any simulation, so a huge size answers at once) or
    tiles the GPU cannot hold. What sweeps call, so that one such point never ends them."""
    from iosim.results.report import human_bytes

    if options.get("codes") is None:
        check_own_kernels(config)
    profile = gpu if isinstance(gpu, Profile) else load_profile(gpu)
    schedule = build_schedule(config, profile.sm_count)
    skip = {"config": schedule.config.to_dict(), "gpu": profile.id, "mode": config.mode,
            "peak_hbm_bytes": schedule.peak_hbm_bytes, "hbm_capacity_bytes": profile.hbm_bytes}
    if schedule.peak_hbm_bytes > profile.hbm_bytes:
        need, have = human_bytes(schedule.peak_hbm_bytes), human_bytes(profile.hbm_bytes)
        return Skipped(reason=f"OOM: needs {need} of {have}", **skip)
    try:
        return Engine(schedule, profile, mode=config.mode, **options).run()
    except ConfigError as e:
        return Skipped(reason=str(e), field=e.field, **skip)
