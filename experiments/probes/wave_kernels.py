"""Launchers for the wave probe's predictions (``kernels/wave_probe.py``): kernels/flash2.py's forward and the foreign F2
at 64 x 64 tiles, 4 warps and 2, 3 or 4 pipeline stages, as ``iosim simulate --kernel`` captures them."""
from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

from iosim.kernels import flash2

_F2 = Path(__file__).resolve().parents[1] / "foreign_kernels" / "F2_exp2_masksplit.py"
_spec = importlib.util.spec_from_file_location("wave_kernels_f2", _F2)
f2 = sys.modules[_spec.name] = importlib.util.module_from_spec(_spec)  # compiled by name
_spec.loader.exec_module(f2)


def _ours(stages):
    def attention(q, k, v, causal=False):
        return flash2.attention(q, k, v, causal, block_m=64, block_n=64, warps=4, stages=stages)
    return attention


def _foreign(stages):
    def attention(q, k, v, causal=False):
        f2.BLOCK_M, f2.BLOCK_N, f2.NUM_WARPS, f2.NUM_STAGES = 64, 64, 4, stages
        return f2.attention(q, k, v, causal)
    return attention


ours_s2, ours_s3, ours_s4 = (_ours(s) for s in (2, 3, 4))
f2_s2, f2_s3, f2_s4 = (_foreign(s) for s in (2, 3, 4))
