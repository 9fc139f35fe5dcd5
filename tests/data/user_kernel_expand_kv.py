"""A user's launcher that gives every query head its own copy of K and V in PyTorch (``repeat_interleave``, as
much GQA code does) and then calls a kernel without GQA: iosim's flash2 forward at 64 × 64 tiles. The two copies
are operations of the launcher that iosim records and prices beside the kernel."""
from iosim.kernels import flash2


def attention(q, k, v, causal=False, sm_scale=None):
    group = q.shape[1] // k.shape[1]
    k = k.repeat_interleave(group, dim=1)
    v = v.repeat_interleave(group, dim=1)
    return flash2.attention(q, k, v, causal=causal, sm_scale=sm_scale, block_m=64, block_n=64)
