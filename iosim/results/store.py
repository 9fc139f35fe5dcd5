"""The results file: simulated runs written as JSON and read back, validated against one declared schema.

A file is::

    {"schema": "iosim-results", "schema_version": 1, "results": [RunResult.to_dict(), ...]}

A run that could not happen is kept as ``Skipped.to_dict()``: its configuration, GPU and reason
(``"skipped": "OOM: needs 1.1 TB of 80 GB"``).

Each result's ``config`` is checked by :meth:`RunConfig.from_dict`, every byte count, time and
FLOP count must be a finite number >= 0, and the derived values ``to_dict`` adds (``levels``,
``bound``, ``achieved``, ...) are checked when present and ignored on reading. A bad file raises a
one-line :class:`ResultsError` naming the file and the field
(``runs.json: results[0].kernels[2].levels.hbm.read_bytes: must be >= 0, got -1``).
"""
from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import Field, ValidationError, field_validator

from iosim.files import atomic_write_text
from iosim.results.caveats import CAUSAL_EVICTING, PERSISTENT_DRIFT, SPILL_FRAMES, TILE_BEYOND, UNMODELLED_TRAFFIC
from iosim.results.result import RunResult, Skipped, result_from_dict
from iosim.schedule.problem import MODES, ConfigError, RunConfig
from iosim.schema import (
    FieldProblem,
    FileModel,
    Line,
    NonNegative,
    NonNegativeInt,
    error_line,
    explain,
    read_json,
    schema_version,
)

SCHEMA = "iosim-results"
SCHEMA_VERSION = 1


class ResultsError(ValueError):
    """A results file that cannot be written or read; one line naming the file and the field."""


def save_results(results: Iterable[RunResult | Skipped], path) -> Path:
    """Write ``results`` as an ``iosim-results`` JSON file, atomically (all or nothing), validated first."""
    path = Path(path)
    if not path.parent.is_dir():
        raise ResultsError(f"{path}: folder {path.parent} does not exist")
    doc = {"schema": SCHEMA, "schema_version": SCHEMA_VERSION, "results": [r.to_dict() for r in results]}
    try:
        text = json.dumps(doc, indent=1, allow_nan=False) + "\n"
    except ValueError as e:  # NaN or infinity in a result
        raise ResultsError(f"{path}: results: {e}") from None
    _validate(json.loads(text), path)
    atomic_write_text(path, text)
    return path


def load_results(path) -> list[RunResult | Skipped]:
    """Read an ``iosim-results`` file (or the list ``iosim simulate --json`` prints); a bad one raises
    :class:`ResultsError` naming the file and field."""
    path = Path(path)
    doc = read_json(path, ResultsError)
    if isinstance(doc, list):  # what `iosim simulate --json` prints: the same results, without the envelope
        doc = {"schema": SCHEMA, "schema_version": SCHEMA_VERSION, "results": doc}
    _validate(doc, path)
    return [result_from_dict(d) for d in doc["results"]]  # the file's own values: ints stay ints


def _validate(doc: Any, path: Path) -> None:
    try:
        _ResultsFile.model_validate(doc)
    except ValidationError as e:
        raise ResultsError(error_line(str(path), e, _ResultsFile)) from None
    for i, result in enumerate(doc["results"]):
        model = _Skipped if "skipped" in result else _Result
        try:
            model.model_validate(result)
        except ValidationError as e:
            raise ResultsError(_within(path, i, explain(e, model))) from None


def _within(path: Path, i: int, problem: tuple) -> str:
    where, message = problem
    return f"{path}: results[{i}]{'.' + where if where else ''}: {message}"


# --------------------------------------------------------------------------- the schema

_Counts = dict[str, NonNegative]


class _Traffic(FileModel):
    read_bytes: NonNegative
    write_bytes: NonNegative


class _Levels(FileModel):
    """Bytes per memory level (see :mod:`iosim.results.result`)."""

    sram: _Traffic
    l2: _Traffic
    hbm: _Traffic
    host: _Traffic


class _Kernel(FileModel):
    """One kernel launch, as ``KernelResult`` writes it."""

    name: Line
    ctas: NonNegativeInt
    ctas_per_sm: NonNegativeInt
    waves: NonNegative
    levels: _Levels
    l2_hit_bytes: NonNegative
    l2_miss_bytes: NonNegative
    flops: _Counts  # "tensor" / "simt" / "sfu" -> operations
    dirty_left_bytes: NonNegative
    start_s: NonNegative
    time_s: NonNegative
    roofline: _Counts  # resource -> seconds
    mma: Line = "fwd"
    instructions: _Counts = {}  # warp instructions, "total" and per pipe
    code: Line = "estimate"
    l2_lookup_bytes: NonNegative = 0
    regs_per_thread: NonNegativeInt = 0
    smem_bytes: NonNegativeInt = 0
    launch_s: NonNegative = 0.0  # of time_s: launch overhead and first-wave start
    regimes: list[Literal[CAUSAL_EVICTING, SPILL_FRAMES, PERSISTENT_DRIFT, TILE_BEYOND, UNMODELLED_TRAFFIC]] = []  # caveats
    launched: bool = True  # False: a later loop of the launch before it
    unmodelled_bytes: NonNegativeInt = 0  # moved beyond the schedule, in no byte count
    bound: Line | None = None  # derived
    time_split: dict[str, Any] | None = None  # derived, where a user's kernel was priced (simulate --kernel)


class _Result(FileModel):
    """One simulated call, as ``RunResult.to_dict`` writes it; the derived values are optional."""

    config: dict[str, Any]
    gpu: Line
    mode: Literal[MODES]
    levels: _Levels | None = None  # derived
    time_s: NonNegative
    bound: Line | None = None  # derived
    peak_hbm_bytes: NonNegative
    hbm_capacity_bytes: NonNegative
    out_of_memory: bool | None = None  # derived
    l2_hit_rate: Annotated[NonNegative, Field(le=1)] | None = None  # derived
    flops: _Counts | None = None  # derived
    achieved: _Counts | None = None  # derived
    roofline_time_s: NonNegative | None = None  # derived
    kernels: list[_Kernel]
    caveats: list[Line] | None = None  # derived: the kernels' regimes in words
    final_writeback_bytes: NonNegative = 0
    timeline: dict[str, list[NonNegative]] = {}  # {"t_s": [...], level: [bytes per bin]}
    events: NonNegativeInt = 0

    @field_validator("config")
    @classmethod
    def _run_config(cls, config: dict) -> dict:
        try:
            RunConfig.from_dict(config)
        except ConfigError as e:
            raise FieldProblem(e.field, str(e).removeprefix(f"{e.field}: ")) from None
        except TypeError as e:
            raise ValueError(str(e)) from None
        return config


class _Skipped(FileModel):
    """A run that could not happen, as ``Skipped.to_dict`` writes it."""

    config: dict[str, Any]
    gpu: Line
    mode: Literal[MODES]
    skipped: Line
    field: Line | None = None
    peak_hbm_bytes: NonNegative
    hbm_capacity_bytes: NonNegative
    out_of_memory: bool | None = None  # derived

    _run_config = field_validator("config")(_Result._run_config.__func__)


_Version = schema_version(SCHEMA_VERSION)


class _ResultsFile(FileModel):
    schema_: Literal[SCHEMA] = Field(alias="schema")
    schema_version: _Version
    results: list[dict[str, Any]]  # each a _Result, or a _Skipped where it has "skipped"
