"""A sweep spec: the runs of a study as data (a YAML file), as Timeloop describes its mappings.

A spec names each configuration field once, as one value or a list; the runs are every combination,
in a fixed order (GPUs, algorithms, then the fields in the order below), so a spec always means the
same list of runs::

    schema: iosim-sweep
    schema_version: 1
    gpu: [h100, a100]              # built-in names or profile files (relative to the spec)
    algo: [standard, flash2]
    # impl: [ours, sdpa_cudnn]     # whose kernels run flash2 (PyTorch SDPA's on sm_90 GPUs)
    problem:
      seq_q: 1k:16k                # sizes as on the command line: a list, 4k, or a doubling range
      head_dim: [64, 128]
      batch: 4
      heads: 16
      causal: [false, true]
      # seq_lens: [512, 4k, 37]    # a variable-length batch (one list; a list of lists for several);
      #                            # batch and, in a prefill, seq_q follow from it
    tiling: {block_m: 128}
    mode: plain
    host_tensors: []

Every field is optional (``RunConfig``'s defaults apply); an unknown one is refused with the fields
allowed, a bad value with the field's dotted path, as everywhere in iosim.
"""
from __future__ import annotations

import itertools
from pathlib import Path
from typing import Any

import yaml

from iosim.hardware.profile import ProfileError, load_profile
from iosim.schedule.common import check_own_kernels, check_problem
from iosim.schedule.problem import ConfigError, Problem, RunConfig, Tiling
from iosim.schema import unreadable
from iosim.sizes import SizeError, parse_lengths, parse_sizes

SCHEMA = "iosim-sweep"
SCHEMA_VERSION = 1
PROBLEM_FIELDS = ("seq_q", "seq_k", "head_dim", "batch", "heads", "kv_heads", "dtype", "causal", "backward",
                  "page_size", "seq_lens", "window", "causal_align")
TILING_FIELDS = ("block_m", "block_n", "warps", "stages", "grid_order", "splits", "persistent")
TOP_FIELDS = ("schema", "schema_version", "gpu", "algo", "impl", "problem", "tiling", "mode", "host_tensors")
SIZE_FIELDS = ("seq_q", "seq_k")


class SpecError(ValueError):
    """A spec that cannot be read or means nothing; one line naming the file and the field."""


def load_spec(path) -> list[tuple[RunConfig, str]]:
    """The runs a spec file describes: ``(config, gpu)`` in the spec's fixed order."""
    path = Path(path)
    try:
        doc = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as e:
        raise SpecError(f"{path}: malformed YAML: {' '.join(str(e).split())}") from None
    except (OSError, UnicodeDecodeError) as e:
        raise SpecError(f"{path}: {unreadable(e)}") from None
    return runs(doc, path)


def runs(doc: Any, path: Path) -> list[tuple[RunConfig, str]]:
    """:func:`load_spec` on an already parsed document (``path`` names it in errors and anchors profile files)."""
    if not isinstance(doc, dict):
        raise SpecError(f"{path}: must be a mapping with {', '.join(TOP_FIELDS)}")
    _known(doc, TOP_FIELDS, path, "")
    if doc.get("schema") != SCHEMA:
        raise SpecError(f"{path}: schema: expected {SCHEMA!r}, got {doc.get('schema')!r}")
    if doc.get("schema_version") != SCHEMA_VERSION:
        raise SpecError(f"{path}: schema_version: expected {SCHEMA_VERSION}, got {doc.get('schema_version')!r}")
    gpus = [_gpu(g, path) for g in _values(doc, "gpu", path, ["a100"])]
    algos = _values(doc, "algo", path, ["flash2"])
    problem, tiling = (_section(doc, name, path) for name in ("problem", "tiling"))
    _known(problem, PROBLEM_FIELDS, path, "problem.")
    _known(tiling, TILING_FIELDS, path, "tiling.")
    axes = [_values(problem, f, path, [None], "problem.") for f in PROBLEM_FIELDS]
    axes += [_values(tiling, f, path, [None], "tiling.") for f in TILING_FIELDS]
    modes = _values(doc, "mode", path, ["plain"])
    impls = _values(doc, "impl", path, ["ours"])
    host = doc.get("host_tensors") or []
    if not isinstance(host, list) or not all(isinstance(t, str) for t in host):
        raise SpecError(f"{path}: host_tensors: must be a list of tensor names (Q, K, V, O), got {host!r}")
    out = []
    for gpu, algo, impl, mode, *values in itertools.product(gpus, algos, impls, modes, *axes):
        p = {k: v for k, v in zip(PROBLEM_FIELDS, values[:len(PROBLEM_FIELDS)]) if v is not None}
        if "seq_lens" in p:  # the requests set the batch, and a prefill's N is the longest
            p.setdefault("batch", len(p["seq_lens"]))
            if algo != "flash_decode":
                p.setdefault("seq_q", max(p["seq_lens"]))
        t = {k: v for k, v in zip(TILING_FIELDS, values[len(PROBLEM_FIELDS):]) if v is not None}
        try:
            config = RunConfig(algo=algo, problem=Problem(**p), tiling=Tiling(**t), mode=mode, host_tensors=host,
                               impl=None if impl == "ours" else impl)
            check_problem(config)  # what the schedule would refuse (head_dim, grid order, ...), refused now
            check_own_kernels(config)  # a spec runs iosim's kernels or SDPA's, never a user's
        except ConfigError as e:
            where = (f"problem.{e.field}" if e.field in PROBLEM_FIELDS
                     else f"tiling.{e.field}" if e.field in TILING_FIELDS else e.field)
            raise SpecError(f"{path}: {where}: {str(e).split(': ', 1)[1]}") from None
        except TypeError as e:
            raise SpecError(f"{path}: {e}") from None
        out.append((config, gpu))
    return out


def _known(section: dict, allowed: tuple, path: Path, prefix: str) -> None:
    unknown = sorted(set(section) - set(allowed))
    if unknown:
        raise SpecError(f"{path}: {prefix}{unknown[0]}: unknown field; allowed: {', '.join(allowed)}")


def _section(doc: dict, name: str, path: Path) -> dict:
    section = doc.get(name) or {}
    if not isinstance(section, dict):
        raise SpecError(f"{path}: {name}: must be a mapping of fields, got {section!r}")
    return section


def _values(section: dict, name: str, path: Path, default: list, prefix: str = "") -> list:
    """A field's values: a list, one value, or (sizes) the command line's ``1k,4k`` / ``1k:16k``."""
    if name not in section or section[name] is None:
        return default
    value = section[name]
    values = value if isinstance(value, list) else [value]
    if not values:
        raise SpecError(f"{path}: {prefix}{name}: an empty list means no run; give at least one value")
    if name in SIZE_FIELDS:
        values = [v for x in values for v in _sizes(x, path, prefix + name)]
    if name == "seq_lens":  # one batch is a list (or "4x512,8k"); several batches, a list of them
        batches = values if all(isinstance(v, (list, str)) for v in values) else [values]
        values = [tuple(_lengths(v, path, prefix + name)) for v in batches]
    return list(dict.fromkeys(values))


def _lengths(value, path: Path, where: str) -> list:
    if isinstance(value, list):
        value = ",".join(str(v) for v in value)
    try:
        return parse_lengths(str(value))
    except SizeError as e:
        raise SpecError(f"{path}: {where}: {e}") from None


def _sizes(value, path: Path, where: str) -> list:
    if isinstance(value, int) and not isinstance(value, bool):
        return [value]
    try:
        return parse_sizes(str(value))
    except SizeError as e:
        raise SpecError(f"{path}: {where}: {e}") from None


def _gpu(name, path: Path) -> str:
    """A built-in name, or a profile file relative to the spec; checked now, not in a worker later."""
    if isinstance(name, int) and not isinstance(name, bool):  # YAML reads 4090 as a number
        name = str(name)
    if not isinstance(name, str) or not name:
        raise SpecError(f"{path}: gpu: must be a profile name or file, got {name!r}")
    ref = name
    if "/" in name or name.endswith((".yaml", ".yml")):
        ref = str((path.parent / name).resolve())
    try:
        load_profile(ref)
    except ProfileError as e:
        raise SpecError(f"{path}: gpu: {e}") from None
    return ref


__all__ = ["SCHEMA", "SCHEMA_VERSION", "SpecError", "load_spec", "runs"]
