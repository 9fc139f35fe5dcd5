"""kernels/flash2.py's attention at the tiles, warps and stages of the held-out foreign kernels at long causal N.

The foreign kernels F1, F4, F5 and F8 (experiments/foreign_kernels/) read -42 %, +136 %, +112 % and -79 % of the
DRAM bytes iosim predicts at causal N = 96K-256K, where kernels/flash2.py at its own tiles (128 x 64, 8 warps,
2 stages) reads within 25 %. These launchers run kernels/flash2.py's code at each foreign kernel's configuration,
to tell the configuration's part (how many CTAs an SM, how deep the pipeline) from the code's (manifest_long_tiles.yaml;
``python -m iosim.kernels.causal_trace --tiling ...`` traces the same configurations).
"""
from iosim.kernels import flash2


def f1_tiles(q, k, v, causal=False, sm_scale=None):
    """F1's configuration: 128 x 64 tiles, 4 warps, 2 stages (two CTAs an SM at d = 128)."""
    return flash2.attention(q, k, v, causal, sm_scale, block_m=128, block_n=64, warps=4, stages=2)


def f4_tiles(q, k, v, causal=False, sm_scale=None):
    """F4's configuration: 64 x 128 tiles, 4 warps, 3 stages."""
    return flash2.attention(q, k, v, causal, sm_scale, block_m=64, block_n=128, warps=4, stages=3)


def f5_tiles(q, k, v, causal=False, sm_scale=None):
    """F5's configuration: 128 x 32 tiles, 4 warps, 4 stages."""
    return flash2.attention(q, k, v, causal, sm_scale, block_m=128, block_n=32, warps=4, stages=4)


def f8_tiles(q, k, v, causal=False, sm_scale=None):
    """F8's configuration: 128 x 64 tiles, 8 warps, 2 stages (kernels/flash2.py's own at d = 64)."""
    return flash2.attention(q, k, v, causal, sm_scale, block_m=128, block_n=64, warps=8, stages=2)
