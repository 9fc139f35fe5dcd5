"""A sweep: many (run configuration, GPU) simulations in a fixed order.

:func:`run` simulates each job in turn, or spreads them over local worker processes (``jobs=N``)
or a Dask cluster (``scheduler``); every way the results come back in the order of the jobs, and a
simulation is deterministic, so they give the same numbers. With a results file the sweep keeps
what finished as it goes and resumes from it. The file that keeps them is
:mod:`iosim.results.store` (``save_results`` and ``load_results`` are re-exported here).
"""
from __future__ import annotations

import json
import signal
import time
from collections.abc import Callable, Iterable
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path

from iosim.hardware.profile import (
    Profile,
    ProfileError,
    build_profile,
    load_profile,
    profile_dir,
    read_profile_dict,
    resolve_profile_path,
)
from iosim.results.result import RunResult, Skipped
from iosim.results.store import SCHEMA, SCHEMA_VERSION, ResultsError, load_results, save_results
from iosim.schedule.problem import ConfigError, RunConfig
from iosim.simulate import simulate_or_skip

# A sweep that cannot run or a results file that cannot be read: one error, so that a caller of
# ``run`` then ``save_results`` catches both (one line naming the file or argument and the field).
SweepError = ResultsError


# --------------------------------------------------------------------------- running

CONNECT_TIMEOUT_S = 10  # a scheduler address that does not answer is an error within this
SAVE_EVERY_S = 2.0  # a results file is rewritten at most this often while a sweep runs (and at its end)


def run(work: Iterable[tuple[RunConfig, str | Path | Profile]], *, jobs: int = 1,
        progress: Callable[[RunResult | Skipped], None] | None = None, scheduler=None,
        results_file: str | Path | None = None, resume: bool = True) -> list[RunResult | Skipped]:
    """Simulate each ``(config, gpu)`` of ``work``; results in the order of ``work``.

    ``jobs`` > 1 runs that many local worker processes; ``scheduler`` (``tcp://HOST:PORT``, or a
    ``distributed`` Client or cluster) runs them on a Dask cluster instead, whose workers have iosim
    installed. ``progress`` is called once per finished simulation with its result, in the order they
    finish. With ``results_file``, runs already in that file are not simulated again (a rerun
    resumes; ``resume=False`` simulates them all) and the file is rewritten, in the order of
    ``work``, as runs finish: an interrupted sweep keeps what finished. A point that cannot run (out of the GPU's memory, tiles that do not fit) is a
    :class:`Skipped` row with its reason; a problem the model refuses outright raises the library's
    own error (:class:`ConfigError`, :class:`ProfileError`). Deterministic: any ``jobs`` or
    scheduler gives the same results, and the same file byte for byte.
    """
    work = list(work)
    if isinstance(jobs, bool) or not isinstance(jobs, int) or jobs < 1:
        raise SweepError(f"jobs: must be a positive integer, got {jobs!r}")
    out: list[RunResult | Skipped | None] = [None] * len(work)
    if resume and results_file is not None and Path(results_file).exists():
        _resume(out, work, Path(results_file))
    todo = [i for i, r in enumerate(out) if r is None]
    saver = _Saver(results_file, out)

    def finished(i: int, result) -> None:
        out[i] = result
        saver.maybe()
        if progress:
            progress(result)

    try:
        if scheduler is not None:
            _on_dask(scheduler, work, todo, finished)
        elif jobs == 1 or len(todo) < 2:
            for i in todo:
                config, gpu = work[i]
                finished(i, simulate_or_skip(config, gpu))
        else:
            _on_processes(jobs, work, todo, finished)
    finally:
        saver.now()  # what finished is kept, also when interrupted
    return out


def job_key(config: RunConfig, gpu) -> tuple:
    """What identifies a run in a results file: the GPU's id and the resolved configuration."""
    profile = gpu if isinstance(gpu, Profile) else load_profile(gpu)
    return profile.id, json.dumps(config.resolved().to_dict(), sort_keys=True)


def _resume(out: list, work: list, path: Path) -> None:
    done = {(r.gpu, json.dumps(r.config, sort_keys=True)): r for r in load_results(path)}
    for i, (config, gpu) in enumerate(work):
        out[i] = done.get(job_key(config, gpu))


class _Saver:
    """Rewrites the results file (atomically, in the order of the work) at most every SAVE_EVERY_S."""

    def __init__(self, path, out: list):
        self.path, self.out, self.last = (None if path is None else Path(path)), out, time.monotonic()

    def maybe(self) -> None:
        if self.path is not None and time.monotonic() - self.last >= SAVE_EVERY_S:
            self.now()

    def now(self) -> None:
        if self.path is not None and any(r is not None for r in self.out):  # no file for a sweep that ran nothing
            save_results([r for r in self.out if r is not None], self.path)
            self.last = time.monotonic()


def _on_processes(jobs: int, work: list, todo: list, finished) -> None:
    """Local worker processes; Ctrl-C stops them at once (they ignore it themselves: no tracebacks)."""
    pool = ProcessPoolExecutor(max_workers=min(jobs, len(todo)), initializer=_ignore_interrupts)
    try:
        futures = {pool.submit(_simulate_one, *_portable_job(work[i])): i for i in todo}
        for future in as_completed(futures):
            finished(futures[future], _unwrap(future.result()))
    except BaseException:
        for process in list(getattr(pool, "_processes", {}).values()):
            process.terminate()
        pool.shutdown(wait=False, cancel_futures=True)
        raise
    pool.shutdown()


def _on_dask(scheduler, work: list, todo: list, finished) -> None:
    try:
        from distributed import Client
        from distributed import as_completed as dask_completed
    except ImportError:
        raise SweepError("scheduler: a Dask cluster needs dask.distributed: pip install 'iosim[sweep]'") from None
    own = isinstance(scheduler, str) or hasattr(scheduler, "scheduler_address")
    try:
        client = Client(scheduler, timeout=CONNECT_TIMEOUT_S) if own else scheduler
    except (OSError, TimeoutError) as e:
        raise SweepError(f"scheduler: cannot reach {scheduler}: {e}") from None
    try:
        futures = {client.submit(_simulate_one, *_portable_job(work[i]), pure=False): i for i in todo}
        for future in dask_completed(list(futures)):
            finished(futures[future], _unwrap(future.result()))
    except BaseException:
        if "futures" in locals():
            client.cancel(list(futures))
        raise
    finally:
        if own:
            client.close()


def _ignore_interrupts() -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def _portable_job(job: tuple) -> tuple:
    config, gpu = job
    return config, _portable(gpu)


def _portable(gpu):
    """What a worker, here or on another machine, can receive: a built-in profile's name, or a
    profile file's contents and path (a loaded Profile does not pickle; a path may not exist there)."""
    if isinstance(gpu, Profile):
        if gpu.path is None:
            raise SweepError(f"gpu: profile {gpu.id!r} has no file, so worker processes cannot load it; use jobs=1")
        gpu = gpu.path
    path = resolve_profile_path(gpu)
    if path.parent == profile_dir():
        return path.stem
    return ("profile", read_profile_dict(path), str(path))


def _worker_profile(gpu):
    if isinstance(gpu, tuple):
        _, raw, path = gpu
        return build_profile(raw, Path(path))
    return gpu


def _simulate_one(config: RunConfig, gpu):
    """Worker side. The library's errors do not survive pickling, so they travel as plain data."""
    try:
        return simulate_or_skip(config, _worker_profile(gpu))
    except ConfigError as e:
        return ("ConfigError", e.field, str(e).split(": ", 1)[-1])
    except ProfileError as e:
        return ("ProfileError", None, str(e))


def _unwrap(value):
    if isinstance(value, (RunResult, Skipped)):
        return value
    kind, field_name, message = value
    raise ConfigError(field_name, message) if kind == "ConfigError" else ProfileError(message)


__all__ = ["SweepError", "Skipped", "run", "job_key", "save_results", "load_results", "SCHEMA", "SCHEMA_VERSION"]
