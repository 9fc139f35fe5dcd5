"""iosim: bytes moved per GPU memory level by attention kernels, their predicted time, and validation on hardware.

Data flows one way::

    hardware (profile) ─┐
    schedule.problem ───┴─> schedule (kernels of CTAs) ─> engine (SimPy: SMs, L2, HBM, host link)
        ─> results (counts, priced by costs) ─> report / figures
    kernels (Triton, on a GPU) ─> measure (measurement files) ─┐
                                             results ──────────┴─> measure.validate

Importing ``iosim`` loads nothing heavy: the simulator never imports torch, triton or matplotlib.
Start with :func:`iosim.simulate.simulate` or the ``iosim`` command.
"""
from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("iosim")
except PackageNotFoundError:  # imported from a checkout that was never installed
    __version__ = "0+unknown"
