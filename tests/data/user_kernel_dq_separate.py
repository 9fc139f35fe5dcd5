"""A user's launcher whose backward computes dQ in a kernel of its own: iosim's flash2 with ``dq="separate"``
(``flash2_bwd_kv`` over K/V blocks, ``flash2_bwd_q`` over Q blocks), called as a user's kernel file is."""
from iosim.kernels import flash2


def attention(q, k, v, causal=False, sm_scale=None):
    return flash2.attention(q, k, v, causal=causal, sm_scale=sm_scale, dq="separate", block_m=64, block_n=64)
