"""Test-wide switches: Triton kernels run in the interpreter on CPU when no CUDA GPU is present, and
tests marked ``gpu`` are skipped there; tests marked ``sass`` are skipped where Triton lacks the CUDA
tools it ships (``ptxas``, ``cuobjdump``)."""
from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import pytest


def _cuda_available() -> bool:
    # The simulator's tests must run without torch installed, so torch is only imported if present.
    if importlib.util.find_spec("torch") is None:
        return False
    import torch

    return torch.cuda.is_available()


def _triton_ships_cuda_tools() -> bool:
    spec = importlib.util.find_spec("triton")  # found without importing triton
    if spec is None or not spec.submodule_search_locations:
        return False
    bin_dir = Path(spec.submodule_search_locations[0]) / "backends" / "nvidia" / "bin"
    return all((bin_dir / tool).exists() for tool in ("ptxas", "cuobjdump"))


CUDA = _cuda_available()
if not CUDA:
    # Must be set before triton is first imported: @triton.jit reads it when a kernel is defined.
    os.environ.setdefault("TRITON_INTERPRET", "1")


def pytest_collection_modifyitems(config, items):
    no_gpu = pytest.mark.skip(reason="needs a CUDA GPU")
    no_tools = pytest.mark.skip(reason="needs Triton with its bundled ptxas and cuobjdump")
    tools = _triton_ships_cuda_tools()
    for item in items:
        if "gpu" in item.keywords and not CUDA:
            item.add_marker(no_gpu)
        if "sass" in item.keywords and not tools:
            item.add_marker(no_tools)


def load_experiment(name: str):
    """An ``experiments/`` script as a module (the folder is not a package), for its tests."""
    path = Path(__file__).resolve().parents[1] / "experiments" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
