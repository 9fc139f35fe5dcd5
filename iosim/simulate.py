"""One call from a run configuration and a GPU to a priced result: schedule, then engine."""
from __future__ import annotations

from iosim.engine.simulator import Engine
from iosim.hardware.profile import Profile, load_profile
from iosim.results.result import RunResult
from iosim.schedule.build import build_schedule
from iosim.schedule.problem import RunConfig


def simulate(config: RunConfig, gpu: str | Profile = "a100", *, aggregate: bool = True,
             l2_bytes: int | None = None, codes: list | None = None, triton_version: str | None = None,
             progress=None) -> RunResult:
    """Simulate ``config`` on ``gpu`` (a built-in profile name, a profile file, or a :class:`Profile`).

    ``l2_bytes`` overrides the L2 capacity the model uses (0: no L2; the closed forms' limit).
    Each kernel's math is priced from its compiled code: ``codes`` (one
    :class:`~iosim.costs.issue.KernelCode` or None per kernel, e.g. a user's kernel), else iosim's own
    kernels' committed SASS mixes for the profile's architecture and ``triton_version`` (the newest
    committed when None), else an estimate from FLOPs. ``progress(done, total, kernel)`` is called as
    CTAs finish (CTAs of the whole run, and the name of the kernel running).
    """
    profile = gpu if isinstance(gpu, Profile) else load_profile(gpu)
    return Engine(build_schedule(config), profile, mode=config.mode, aggregate=aggregate, l2_bytes=l2_bytes,
                  codes=codes, triton_version=triton_version, progress=progress).run()
