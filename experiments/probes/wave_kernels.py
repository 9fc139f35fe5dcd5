"""Launchers for the wave probe's predictions (``kernels/wave_probe.py``): kernels/flash2.py's forward and the foreign F2
at 64 x 64 tiles, 4 warps and 2, 3 or 4 pipeline stages, as ``iosim simulate --kernel`` captures them."""
from __future__ import annotations

from iosim.kernels import flash2
from iosim.kernels.wave_probe import foreign_f2

f2 = foreign_f2()  # the probe's own copy of the module: its tiles are module constants

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
