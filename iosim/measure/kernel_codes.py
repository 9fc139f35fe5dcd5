"""A measured user kernel's own compiled code: its committed per-case mixes, found beside the kernel file.

``python -m iosim.kernels.user_codes --manifest M --out DIR`` compiles every case of a foreign-kernel
manifest and writes ``DIR/sm_<arch>-triton-<version>.json.gz`` (gzip-compressed JSON): ``{"schema": "iosim-kernel-mixes",
"arch", "triton", "cases": {case name: {"kernel", "schedule": [schedule kernel names], "mixes":
[KernelMix dict or null per schedule kernel], "tiling", "backward_tiling", "dq": "separate" where the
backward computes dQ in a kernel of its own, and "launcher_ops" where the launcher runs PyTorch operations of its
own (:mod:`iosim.kernels.launcher_ops`)}}}``. This module reads
those files without torch or triton; :func:`case_codes` is what validation calls for an ``impl``
``kernel`` case: the mixes file beside the kernel file (``<folder>/mixes/``) for the measurement's
Triton version (the nearest committed one if absent), else a compile on this machine when Triton
is installed, else nothing (the simulator falls back to its estimates) with a note saying so.
"""
from __future__ import annotations

import functools
from pathlib import Path

from iosim.costs.code import kernel_code
from iosim.costs.sass import KernelMix, mixes_by_version, mixes_version
from iosim.files import read_json

SCHEMA = "iosim-kernel-mixes"
REPO = Path(__file__).resolve().parents[2]  # the checkout's root: kernel paths in measurement files are relative to it


def load_case_codes(path: Path | str, case_name: str, tiling: dict | None = None) -> list | None:
    """One :class:`~iosim.costs.issue.KernelCode` or None per schedule kernel of ``case_name`` in the mixes
    file ``path``; None when the file has no such case. An autotuned kernel's entry holds every config
    (``variants``): the one whose forward tiles, warps and stages are ``tiling``'s (what the GPU ran)."""
    doc = _read(Path(path))
    if doc.get("schema") != SCHEMA:
        raise ValueError(f"{path}: schema must be {SCHEMA!r}, got {doc.get('schema')!r}")
    entry = doc["cases"].get(case_name)
    if entry is None:
        return None
    entry = _variant(entry, tiling)
    file = Path(str(entry["kernel"]).rpartition(":")[0]).name
    source = f"sass: {file} {{}}, {doc['arch']}, triton {doc['triton']}"
    return [None if m is None else kernel_code(mix := KernelMix.from_dict(m), source.format(mix.meta.get("kernel", "?")))
            for m in entry["mixes"]]


def case_dq(case, arch: str, triton_version: str | None) -> str | None:
    """How the measured user kernel ``case``'s backward computes dQ as its committed mixes say (``separate``: a
    kernel of its own, whose code the entry holds in the schedule's ``flash2_bwd_q`` place); None when no
    committed entry says (the run config's own then holds)."""
    path = mixes_file(case.kernel, arch, triton_version)
    if path is None:
        return None
    entry = _read(Path(path)).get("cases", {}).get(case.name)
    return None if entry is None else entry.get("dq", "atomic")


def case_launcher_ops(case, arch: str, triton_version: str | None, tiling: dict | None = None) -> list:
    """What the measured user kernel ``case``'s launcher runs in PyTorch besides its Triton kernels, as its committed
    mixes entry recorded it (``launcher_ops``, :class:`~iosim.schedule.problem.LauncherOp` dicts; an autotuned
    kernel's at the config whose tiles are ``tiling``'s); empty where the entry says nothing."""
    path = mixes_file(case.kernel, arch, triton_version)
    if path is None:
        return []
    entry = _read(Path(path)).get("cases", {}).get(case.name)
    if entry is None:
        return []
    return list(_variant(entry, tiling).get("launcher_ops", []))


def _variant(entry: dict, tiling: dict | None) -> dict:
    """A case's entry, for an autotuned kernel (``variants``) at the config whose forward tiles, warps and stages
    are ``tiling``'s (what the GPU ran)."""
    if tiling and entry.get("variants"):
        fields = ("block_m", "block_n", "warps", "stages")
        return {**entry, **next((v for v in entry["variants"]
                                 if all(v.get("tiling", {}).get(f) == tiling.get(f) for f in fields)), {})}
    return entry


def _read(path: Path) -> dict:
    """A mixes file, parsed once per version of it: validation looks up every case of a measurement in it."""
    st = path.stat()
    return _parse(str(path), st.st_mtime_ns, st.st_size)


@functools.lru_cache(maxsize=4)
def _parse(path: str, mtime_ns: int, size: int) -> dict:
    return read_json(path)


def _version(text: str) -> tuple[int, ...]:
    return tuple(int(x) for x in text.split("+")[0].split(".") if x.isdigit())


def mixes_file(kernel_ref: str, arch: str, triton_version: str | None) -> Path | None:
    """``<kernel folder>/mixes/sm_<arch>-triton-<version>.json.gz`` (or ``.json``): the measurement's Triton version, else the
    nearest committed one (the newest when the version is unknown); None when the folder has none."""
    folder = _kernel_path(kernel_ref).parent / "mixes"
    prefix = _prefix(arch)
    found = {v: folder / name for v, name in mixes_by_version((p.name for p in folder.glob(f"{prefix}*")), prefix).items()}
    if not found:
        return None
    if triton_version in found:
        return found[triton_version]
    if triton_version is None:
        return found[max(found, key=_version)]
    want = _version(triton_version)
    return found[min(found, key=lambda v: (_distance(_version(v), want), [-x for x in _version(v)]))]


def _prefix(arch: str) -> str:
    """The name of a kernel folder's mixes files for ``arch`` up to their Triton version."""
    return f"sm_{str(arch).removeprefix('sm_')}-triton-"


def _distance(a: tuple, b: tuple) -> tuple:
    """Version distance, major first: 3.5 is nearer to 3.6 than 4.0 is."""
    n = max(len(a), len(b))
    a, b = a + (0,) * (n - len(a)), b + (0,) * (n - len(b))
    return tuple(abs(x - y) for x, y in zip(a, b))


def _kernel_path(ref: str) -> Path:
    path = Path(ref.rpartition(":")[0])
    return path if path.is_absolute() else REPO / path


def case_codes(case, config, arch: str, triton_version: str | None) -> tuple[list | None, str]:
    """(codes for ``simulate``, a note) for a measured ``impl`` ``kernel`` case: its committed mixes, else
    (None, why): the simulator then estimates. Validation never compiles (it runs without Triton):
    ``python -m iosim.kernels.user_codes --manifest M --out DIR`` writes the mixes beside the kernels."""
    path = mixes_file(case.kernel, arch, triton_version)
    if path is not None:
        codes = load_case_codes(path, case.name, (getattr(case, "run_config", None) or {}).get("tiling"))
        if codes is not None:
            note = "" if mixes_version(path.name, _prefix(arch)) == triton_version else f"code from {path.name}"
            return codes, note
    return None, "no committed mixes for this case (python -m iosim.kernels.user_codes writes them): estimated code"


__all__ = ["case_codes", "case_dq", "case_launcher_ops", "load_case_codes", "mixes_file"]
