"""Writing files all or nothing: a temporary file beside the target, renamed over it when complete; and JSON
files that may be stored gzip-compressed (``.json.gz``: the large committed instruction mixes)."""
from __future__ import annotations

import gzip
import json
import os
import tempfile
from contextlib import contextmanager, suppress
from pathlib import Path


@contextmanager
def atomic_open(path, mode: str = "w"):
    """Open a temporary file beside ``path``; on a clean exit it replaces ``path`` (mode 0666 & ~umask)."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    text = {} if "b" in mode else {"encoding": "utf-8", "newline": ""}
    try:
        with os.fdopen(fd, mode, **text) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes it 0600
        os.replace(tmp, path)
    except BaseException:
        with suppress(OSError):
            os.unlink(tmp)
        raise


def unwritable(path, folder: bool = False) -> str | None:
    """Why ``path`` (a file to write, or with ``folder`` a folder to write into, made if missing) cannot be
    written, in a few words; None if it can. Asked before long work, so it never fails at the end."""
    path = Path(path)
    target = path if folder and path.is_dir() else path.parent
    if path.exists() and (path.is_dir() != folder):
        return "is a folder" if path.is_dir() else "is a file, not a folder"
    if folder and not path.exists():
        target = next((p for p in path.parents if p.exists()), Path("."))
        if not target.is_dir():
            return f"{target} is not a folder"
    elif target.exists() and not target.is_dir():
        return f"{target} is not a folder"
    elif not target.is_dir():
        return f"folder {target} does not exist"
    if not os.access(target, os.W_OK | os.X_OK):
        return f"folder {target} is not writable"
    if path.is_file() and not os.access(path, os.W_OK):
        return "is not writable"
    return None


def atomic_write_text(path, text: str) -> None:
    with atomic_open(path) as f:
        f.write(text)


def json_document(raw: bytes, name: str):
    """The JSON document of a file's bytes; ``name`` ending in ``.gz`` says they are gzip-compressed."""
    return json.loads(gzip.decompress(raw) if str(name).endswith(".gz") else raw)


def read_json(path):
    """The JSON document of ``path``, a plain ``.json`` file or a gzip-compressed ``.json.gz`` one."""
    path = Path(path)
    return json_document(path.read_bytes(), path.name)


def write_json(path, doc, indent: int | None = 1) -> None:
    """Write ``doc`` to ``path`` all or nothing, gzip-compressed where the name ends in ``.gz``: the same
    document gives the same bytes (no timestamp in the gzip header), so a rewrite of unchanged data is no change."""
    data = (json.dumps(doc, indent=indent) + "\n").encode()
    if str(path).endswith(".gz"):
        data = gzip.compress(data, compresslevel=9, mtime=0)
    with atomic_open(path, "wb") as f:
        f.write(data)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask
