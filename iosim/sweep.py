"""A sweep: many (run configuration, GPU) simulations in a fixed order, and the file that keeps their results.

:func:`run` simulates each job in turn, or spreads them over worker processes (``jobs=N``); either
way the results come back in the order of the jobs, and a simulation is deterministic, so the two
give the same numbers. :func:`save_results` writes them as JSON with a small header::

    {"schema": "iosim-results", "schema_version": 1, "results": [RunResult.to_dict(), ...]}

and :func:`load_results` reads such a file back, refusing a bad one with a one-line
:class:`SweepError` that names the file and the field.
"""
from __future__ import annotations

import json
import math
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import fields
from pathlib import Path
from typing import Callable, Iterable

from iosim.schedule.problem import ConfigError, RunConfig
from iosim.files import atomic_write_text
from iosim.hardware.profile import Profile, ProfileError
from iosim.results.result import KernelResult, LEVELS, RunResult
from iosim.simulate import simulate

SCHEMA = "iosim-results"
SCHEMA_VERSION = 1
_RESULT_KEYS = ("config", "gpu", "mode", "kernels", "time_s", "peak_hbm_bytes", "hbm_capacity_bytes")


class SweepError(ValueError):
    """A sweep that cannot run or a results file that cannot be read; one line naming the file and field."""


# --------------------------------------------------------------------------- running


def run(work: Iterable[tuple[RunConfig, str | Path | Profile]], *, jobs: int = 1,
        progress: Callable[[RunResult], None] | None = None) -> list[RunResult]:
    """Simulate each ``(config, gpu)`` of ``work``; results in the order of ``work``.

    ``jobs`` > 1 runs that many worker processes. ``progress`` is called once per finished
    simulation with its result, in the order they finish. A configuration the model refuses raises
    the library's own error (:class:`ConfigError`, :class:`ProfileError`), as a single run would.
    """
    work = list(work)
    if isinstance(jobs, bool) or not isinstance(jobs, int) or jobs < 1:
        raise SweepError(f"jobs: must be a positive integer, got {jobs!r}")
    if jobs == 1 or len(work) < 2:
        out = []
        for config, gpu in work:
            out.append(simulate(config, gpu))
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
        return simulate(config, gpu)
    except ConfigError as e:
        return ("ConfigError", e.field, str(e).split(": ", 1)[-1])
    except ProfileError as e:
        return ("ProfileError", None, str(e))


def _unwrap(value):
    if isinstance(value, RunResult):
        return value
    kind, field_name, message = value
    raise ConfigError(field_name, message) if kind == "ConfigError" else ProfileError(message)


# --------------------------------------------------------------------------- the results file


def save_results(results: Iterable[RunResult], path) -> Path:
    """Write ``results`` as an ``iosim-results`` JSON file, atomically (all or nothing)."""
    path = Path(path)
    if not path.parent.is_dir():
        raise SweepError(f"{path}: folder {path.parent} does not exist")
    doc = {"schema": SCHEMA, "schema_version": SCHEMA_VERSION, "results": [r.to_dict() for r in results]}
    text = json.dumps(doc, indent=1, allow_nan=False) + "\n"
    atomic_write_text(path, text)
    return path


def load_results(path) -> list[RunResult]:
    """Read an ``iosim-results`` file; a bad one raises :class:`SweepError` naming the file and field."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise SweepError(f"{path}: cannot read: {getattr(e, 'strerror', None) or e}") from None
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as e:
        raise SweepError(f"{path}: document: not valid JSON (truncated?) at line {e.lineno} column {e.colno}: "
                         f"{e.msg}") from None
    if not isinstance(doc, dict):
        raise SweepError(f"{path}: top level: expected an object, got {type(doc).__name__}")
    for key, want in (("schema", SCHEMA), ("schema_version", SCHEMA_VERSION)):
        if doc.get(key) != want:
            raise SweepError(f"{path}: {key}: expected {want!r}, got {doc.get(key, 'nothing')!r}")
    if not isinstance(doc.get("results"), list):
        raise SweepError(f"{path}: results: must be a list, got {type(doc.get('results')).__name__}")
    out = []
    for i, d in enumerate(doc["results"]):
        where = f"results[{i}]"
        problem = _check_result(d, where)
        if problem:
            raise SweepError(f"{path}: {problem}")
        out.append(RunResult.from_dict(d))
    return out


def _check_result(d, where: str) -> str | None:
    """The first thing wrong with one result dict, as ``field: message``; None if it is sound."""
    if not isinstance(d, dict):
        return f"{where}: expected an object, got {type(d).__name__}"
    for key in _RESULT_KEYS:
        if key not in d:
            return f"{where}.{key}: missing field"
    try:
        RunConfig.from_dict(d["config"])
    except (ConfigError, TypeError, AttributeError) as e:
        return f"{where}.config: {e}"
    for key in ("time_s", "peak_hbm_bytes", "hbm_capacity_bytes"):
        if not _nonnegative(d[key]):
            return f"{where}.{key}: must be a number >= 0, got {d[key]!r}"
    if not isinstance(d["gpu"], str) or not isinstance(d["mode"], str):
        return f"{where}.gpu: must be a string, got {d['gpu']!r}"
    if not isinstance(d["kernels"], list):
        return f"{where}.kernels: must be a list"
    for j, k in enumerate(d["kernels"]):
        problem = _check_kernel(k, f"{where}.kernels[{j}]")
        if problem:
            return problem
    return None


def _check_kernel(k, where: str) -> str | None:
    if not isinstance(k, dict):
        return f"{where}: expected an object, got {type(k).__name__}"
    for f in fields(KernelResult):
        if f.name not in k:
            return f"{where}.{f.name}: missing field"
    levels = k["levels"]
    if not isinstance(levels, dict) or set(levels) != set(LEVELS):
        return f"{where}.levels: must map {', '.join(LEVELS)} to read/write bytes"
    for lv, t in levels.items():
        if not isinstance(t, dict) or set(t) != {"read_bytes", "write_bytes"} or not all(map(_nonnegative, t.values())):
            return f"{where}.levels.{lv}: must be {{read_bytes, write_bytes}} >= 0, got {t!r}"
    for key in ("flops", "roofline"):
        if not isinstance(k[key], dict) or not all(map(_nonnegative, k[key].values())):
            return f"{where}.{key}: must map names to numbers >= 0"
    return None


def _nonnegative(x) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x) and x >= 0


__all__ = ["SweepError", "run", "save_results", "load_results", "SCHEMA", "SCHEMA_VERSION"]
