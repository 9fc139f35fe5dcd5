"""kernels/flash2.py's forward launched in "heads" grid order: the same Q block of every head together.

A held-out shape for long causal sequences: in this order the CTAs of one head run ``heads`` times
further apart than in "rows" order, so at N = 64K-128K (d = 128) their K/V reuse spans far more than
the L2 holds (experiments/causal_trace_replay.py on the committed traces). Measured with

    iosim measure --kernel experiments/heldout_kernels/flash2_heads.py:attention --algo flash2 \
        --batch 1 --heads 8 --seq-len 131072 --head-dim 128 --causal --out DIR
"""
from iosim.kernels import flash2


def attention(q, k, v, causal=False, sm_scale=None):
    """flash2's attention with grid_order="heads" (everything else its defaults)."""
    return flash2.attention(q, k, v, causal, sm_scale, grid_order="heads")
