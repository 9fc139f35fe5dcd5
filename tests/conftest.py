"""Test-wide switches: Triton kernels run in the interpreter on CPU when no CUDA GPU is present, and
tests marked ``gpu`` are skipped there."""
from __future__ import annotations

import importlib.util
import os

import pytest


def _cuda_available() -> bool:
    # The simulator's tests must run without torch installed, so torch is only imported if present.
    if importlib.util.find_spec("torch") is None:
        return False
    import torch

    return torch.cuda.is_available()


CUDA = _cuda_available()
if not CUDA:
    # Must be set before triton is first imported: @triton.jit reads it when a kernel is defined.
    os.environ.setdefault("TRITON_INTERPRET", "1")


def pytest_collection_modifyitems(config, items):
    if CUDA:
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)
