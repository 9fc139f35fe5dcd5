"""A sweep: many (run configuration, GPU) simulations in a fixed order.

:func:`run` simulates each job in turn, or spreads them over worker processes (``jobs=N``); either
way the results come back in the order of the jobs, and a simulation is deterministic, so the two
give the same numbers. The file that keeps them is :mod:`iosim.results.store` (``save_results`` and
``load_results`` are re-exported here).
"""
from __future__ import annotations

from collections.abc import Callable, Iterable
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path

from iosim.hardware.profile import Profile, ProfileError
from iosim.results.result import RunResult, Skipped
from iosim.results.store import SCHEMA, SCHEMA_VERSION, ResultsError, load_results, save_results
from iosim.schedule.problem import ConfigError, RunConfig
from iosim.simulate import simulate_or_skip

# A sweep that cannot run or a results file that cannot be read: one error, so that a caller of
# ``run`` then ``save_results`` catches both (one line naming the file or argument and the field).
SweepError = ResultsError


# --------------------------------------------------------------------------- running


def run(work: Iterable[tuple[RunConfig, str | Path | Profile]], *, jobs: int = 1,
        progress: Callable[[RunResult | Skipped], None] | None = None) -> list[RunResult | Skipped]:
    """Simulate each ``(config, gpu)`` of ``work``; results in the order of ``work``.

    ``jobs`` > 1 runs that many worker processes. ``progress`` is called once per finished
    simulation with its result, in the order they finish. A point that cannot run (out of the GPU's
    memory, tiles that do not fit) is a :class:`Skipped` row with its reason; a problem the model
    refuses outright raises the library's own error (:class:`ConfigError`, :class:`ProfileError`).
    """
    work = list(work)
    if isinstance(jobs, bool) or not isinstance(jobs, int) or jobs < 1:
        raise SweepError(f"jobs: must be a positive integer, got {jobs!r}")
    if jobs == 1 or len(work) < 2:
        out = []
        for config, gpu in work:
            out.append(simulate_or_skip(config, gpu))
            if progress:
                progress(out[-1])
        return out
    tasks = [(config, _portable(gpu)) for config, gpu in work]
    out: list[RunResult | None] = [None] * len(tasks)
    with ProcessPoolExecutor(max_workers=min(jobs, len(tasks))) as pool:
        futures = {pool.submit(_simulate_one, config, gpu): i for i, (config, gpu) in enumerate(tasks)}
        for future in as_completed(futures):
            out[futures[future]] = _unwrap(future.result())
            if progress:
                progress(out[futures[future]])
    return out


def _portable(gpu):
    """What a worker process can receive: a profile's name or file (a loaded Profile does not pickle)."""
    if isinstance(gpu, Profile):
        if gpu.path is None:
            raise SweepError(f"gpu: profile {gpu.id!r} has no file, so worker processes cannot load it; use jobs=1")
        return str(gpu.path)
    return str(gpu)


def _simulate_one(config: RunConfig, gpu: str):
    """Worker side. The library's errors do not survive pickling, so they travel as plain data."""
    try:
        return simulate_or_skip(config, gpu)
    except ConfigError as e:
        return ("ConfigError", e.field, str(e).split(": ", 1)[-1])
    except ProfileError as e:
        return ("ProfileError", None, str(e))


def _unwrap(value):
    if isinstance(value, (RunResult, Skipped)):
        return value
    kind, field_name, message = value
    raise ConfigError(field_name, message) if kind == "ConfigError" else ProfileError(message)


__all__ = ["SweepError", "Skipped", "run", "save_results", "load_results", "SCHEMA", "SCHEMA_VERSION"]
