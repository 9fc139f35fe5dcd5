"""kernels/flash2.py behind a launcher that gives every query head its own K and V, as much GQA code does before a
kernel without GQA (Hugging Face's ``repeat_kv``: a broadcast view over the group, then a reshape that copies it):
held out to test what iosim makes of a launcher's PyTorch operations (``iosim.kernels.launcher_ops``) — the two
copies in the forward, and in the backward the sums over each group that autograd runs for them."""
from iosim.kernels import flash2


def repeat_kv(x, group: int):
    """(B, Hkv, N, d) -> (B, Hkv·group, N, d): each key/value head repeated for the query heads that share it."""
    if group == 1:
        return x
    b, h, n, d = x.shape
    return x[:, :, None].expand(b, h, group, n, d).reshape(b, h * group, n, d)


def attention(q, k, v, causal=False, sm_scale=None):
    group = q.shape[1] // k.shape[1]
    return flash2.attention(q, repeat_kv(k, group), repeat_kv(v, group), causal=causal, sm_scale=sm_scale)
