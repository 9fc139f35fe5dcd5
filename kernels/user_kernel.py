"""A user's Triton attention kernel as a case: its file loaded by path, its launches recorded, its tiling read off them.

A user kernel is ``path/to/file.py:fn`` where ``fn(q, k, v, causal=False, sm_scale=None) -> o`` takes
q (B, H, Nq, d) and k, v (B, Hkv, Nk, d) as our kernels do, and for a backward returns an ``o``
that autograd differentiates. We do not know its code, so :func:`recording_launches` watches one
call: every Triton launch it makes (kernel name, grid, warps, stages, constexprs, and after the
launch the compiled kernel's registers, spills and shared memory). :func:`tiling_from_launch`
turns the main launch into the tiling the simulator's modelled schedule (``algo``) runs with.
"""
from __future__ import annotations

import contextlib
import importlib.util
import inspect
import sys
from pathlib import Path

from iosim.kernels.device import HarnessError
from iosim.schedule.tiling import TILE_NAMES, main_launch, tile_sizes, tiling_from_launch  # noqa: F401 (re-exported)

REPO = Path(__file__).resolve().parent.parent  # the repository root in a checkout (kernels/ lives there)
_PLAIN = (bool, int, float, str, type(None))


def split_ref(ref: str) -> tuple[str, str]:
    """``"path/file.py:fn"`` -> ``("path/file.py", "fn")``; a malformed reference is a HarnessError."""
    path, sep, fn = ref.rpartition(":")
    if not sep or not path.endswith(".py") or not fn.isidentifier():
        raise HarnessError(f"kernel {ref!r}: must be 'path/to/file.py:function'")
    return path, fn


def resolve_path(path: str, base: Path | None = None) -> Path:
    """An absolute path as it is; a relative one against ``base``, else the repository root, else the current folder."""
    p = Path(path)
    if p.is_absolute():
        return p
    for root in ([base] if base is not None else []) + [REPO, Path.cwd()]:
        if (root / p).exists():
            return root / p
    return (base or REPO) / p


def load_kernel(ref: str, base: Path | None = None, device: str = ""):
    """The function ``fn`` of the user's kernel file ``ref`` (``file.py:fn``), imported by path. ``device`` names
    the (simulated) GPU it is imported for: a module that asks the device when it is imported is imported once
    per device."""
    path, fn = split_ref(ref)
    file = resolve_path(path, base)
    if not file.is_file():
        raise HarnessError(f"kernel file {file} does not exist")
    name = f"iosim_user_kernel_{abs(hash(str(file.resolve())))}{device}"
    module = sys.modules.get(name)
    if module is None:
        spec = importlib.util.spec_from_file_location(name, file)
        if spec is None or spec.loader is None:
            raise HarnessError(f"kernel file {file} cannot be imported")
        module = importlib.util.module_from_spec(spec)
        try:
            spec.loader.exec_module(module)
        except Exception as e:  # the user's module failed at import
            raise HarnessError(f"kernel file {file} failed to import: {type(e).__name__}: {e}") from None
        sys.modules[name] = module
    func = getattr(module, fn, None)
    if not callable(func):
        raise HarnessError(f"kernel file {file} has no function {fn!r}")
    return func


def _plain(value):
    """A constexpr as plain JSON: numbers, strings and booleans as they are, anything else as its text."""
    value = getattr(value, "value", value)  # tl.constexpr wraps its value
    return value if isinstance(value, _PLAIN) else str(value)


def _constexprs(jit_fn, args, kwargs) -> dict:
    """The launch's constexpr arguments by name (passed, or their defaults), from the kernel's signature."""
    fn = getattr(jit_fn, "fn", None)
    try:
        params = list(inspect.signature(fn).parameters.values())
    except (TypeError, ValueError):
        return {}
    bound = dict(zip((p.name for p in params), args))
    bound.update(kwargs)
    out = {}
    for p in params:
        if "constexpr" not in str(p.annotation):
            continue
        if p.name in bound:
            out[p.name] = _plain(bound[p.name])
        elif p.default is not inspect.Parameter.empty:
            out[p.name] = _plain(p.default)
    return out


def _grid(grid, args, kwargs, jit_fn) -> list[int]:
    if callable(grid):
        names = list(getattr(jit_fn, "arg_names", None) or inspect.signature(jit_fn.fn).parameters)
        grid = grid({**dict(zip(names, args)), **kwargs})
    grid = [int(g) for g in grid]
    return grid + [1] * (3 - len(grid))


def _record(jit_fn, args, grid, kwargs, handle) -> dict:
    """One launch as the records of :func:`iosim.kernels._common.launch_record`, with what the handle says."""
    metadata = getattr(handle, "metadata", None)
    warps = getattr(metadata, "num_warps", None) or kwargs.get("num_warps")
    stages = getattr(metadata, "num_stages", None) or kwargs.get("num_stages")
    return {
        "kernel": getattr(jit_fn, "__name__", None) or getattr(getattr(jit_fn, "fn", None), "__name__", "?"),
        "grid": _grid(grid, args, kwargs, jit_fn), "num_warps": warps, "num_stages": stages,
        "constexprs": _constexprs(jit_fn, args, kwargs),
        "n_regs": getattr(handle, "n_regs", None), "n_spills": getattr(handle, "n_spills", None),
        "shared_bytes": getattr(metadata, "shared", None),
    }


def _run_methods():
    """The ``run`` methods every Triton launch goes through: compiled (JITFunction) and interpreted."""
    import triton.runtime.jit as jit

    classes = [jit.JITFunction]
    with contextlib.suppress(ImportError, AttributeError):
        import triton.runtime.interpreter as interp

        classes.append(interp.InterpretedFunction)
    return classes


@contextlib.contextmanager
def recording_launches():
    """Inside the block every Triton kernel launch is appended to the yielded list (see :func:`_record`).

    Patches ``run`` of ``triton.runtime.jit.JITFunction`` (and the interpreter's InterpretedFunction),
    the method ``kernel[grid](...)`` calls in Triton 3.x; the originals are restored on exit.
    """
    launches: list[dict] = []
    originals = {cls: cls.run for cls in _run_methods()}

    def wrap(original):
        def run(self, *args, grid, warmup, **kwargs):
            handle = original(self, *args, grid=grid, warmup=warmup, **kwargs)
            if not warmup:
                launches.append(_record(self, args, grid, kwargs, handle))
            return handle

        return run

    for cls, original in originals.items():
        cls.run = wrap(original)
    try:
        yield launches
    finally:
        for cls, original in originals.items():
            cls.run = original


