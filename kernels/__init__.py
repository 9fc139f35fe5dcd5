"""Triton attention kernels whose memory schedules the simulator models: standard, FlashAttention-1, FlashAttention-2,
and flash-decoding (split-KV inference, forward only).

Each algorithm is one module with the same interface (``attention``, ``tiling``, ``bwd_tiling``,
``run_config``, ``LAUNCHES``). The modules import torch and triton on first use, so looking up
``ALGOS`` costs nothing until an algorithm is touched. Beside the kernels live the measuring side:
what to measure (``cases``), inputs, timing, Nsight Compute (``ncu``, ``profiler``), the harness and
the calibration microbenchmarks. This package imports only the simulator's shared plain-data modules
(``iosim.schedule.problem``, ``iosim.schedule.tiling``, ``iosim.measure.measurement``,
``iosim.hardware.profile``), never its engine: a kernel takes its tiles from ``iosim.schedule.tiling``
and describes the configuration it ran with as a ``RunConfig`` dict that both sides share.
"""
from __future__ import annotations

import importlib
from collections.abc import Mapping

ALGO_NAMES = ("standard", "flash1", "flash2")  # training kernels: forward and backward
INFERENCE_NAMES = ("flash_decode",)  # forward only


class _LazyModules(Mapping):
    """``{"flash2": <module kernels.flash2>, ...}``, each module imported on first lookup."""

    def __init__(self, names):
        self._names = tuple(names)

    def __getitem__(self, name):
        if name not in self._names:
            raise KeyError(f"algo {name!r} is not one of {', '.join(self._names)}")
        return importlib.import_module(f"{__name__}.{name}")

    def __iter__(self):
        return iter(self._names)

    def __len__(self):
        return len(self._names)

    def __repr__(self):
        return f"ALGOS({', '.join(self._names)})"


ALGOS = _LazyModules(ALGO_NAMES + INFERENCE_NAMES)
