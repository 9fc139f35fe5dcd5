"""What every algorithm's schedule shares: the schedule type, tensors, and PyTorch's elementwise kernels."""
from __future__ import annotations

from dataclasses import dataclass, replace
from math import gcd

from iosim.schedule.ir import EPI, HBM, HOST, PRO, READ, WRITE, Flops, Kernel, Pattern, Tensor
from iosim.schedule.problem import HEAD_DIMS, ConfigError, RunConfig, head_dim_error

FP32 = 4
# Elements one CTA of a PyTorch elementwise kernel (fill, copy, cast, scale, sum) covers: 128
# threads × 4-wide vectors × 4 unrolled iterations (ATen's vectorized elementwise launch).
ELEMENTWISE_PER_CTA = 2048


@dataclass(frozen=True)
class Schedule:
    """The kernels one attention call launches, in order, and the tensors they touch."""

    config: RunConfig
    tensors: tuple  # Tensor, in first-use order
    kernels: tuple  # Kernel
    inputs: tuple  # names of tensors that exist before the call
    outputs: tuple  # names of tensors the call returns
    peak_hbm_bytes: int  # bytes allocated at the busiest kernel (:func:`~iosim.schedule.build.peak_footprint`)

    def tensor(self, name: str) -> Tensor:
        return next(t for t in self.tensors if t.name == name)


class TensorSet:
    """Collects the tensors of a schedule; ``row_unit`` of each is the gcd of the row tiles used on it."""

    def __init__(self, config: RunConfig):
        self.config = config
        self.specs: dict[str, list] = {}

    def add(self, name: str, slices: int, rows: int, cols: int, elem_bytes: int, *row_tiles: int) -> str:
        if name not in self.specs:
            self.specs[name] = [slices, rows, cols, elem_bytes, []]
        self.specs[name][4].extend(row_tiles)
        return name

    def build(self) -> tuple:
        out = []
        for name, (slices, rows, cols, eb, tiles) in self.specs.items():
            place = HOST if name in self.config.host_tensors else HBM
            out.append(Tensor(name, slices, rows, cols, eb, place, max(1, gcd(*tiles)) if tiles else 1))
        return tuple(out)


def check_own_kernels(config: RunConfig) -> None:
    """Refuse a head dim iosim's own Triton kernels cannot take (they tile d whole, a power of two), naming the field:
    the built-in algorithms simulate those kernels; a kernel of one's own that pads d is simulated with its code."""
    d = config.problem.head_dim
    if (why := head_dim_error(d)) is not None:
        raise ConfigError("head_dim", why)
    if config.impl is None and d not in HEAD_DIMS:
        raise ConfigError("head_dim", f"iosim's kernels take {', '.join(map(str, HEAD_DIMS))} (a power of two, tiled "
                                      f"whole), got {d}; a kernel of your own that pads d to its tile is modelled at "
                                      f"any multiple of 8 up to 256 (--kernel)")


def check_problem(config: RunConfig) -> None:
    """Refuse problems no modelled kernel can run, naming the field."""
    p = config.problem
    if (why := head_dim_error(p.head_dim)) is not None:
        raise ConfigError("head_dim", why)
    if p.page_size is not None and config.algo != "flash_decode":
        raise ConfigError("page_size", f"a paged KV cache is modelled for flash_decode, not {config.algo}")
    for name, what in (("seq_lens", "a variable-length batch"), ("window", "local (sliding-window) attention")):
        if getattr(p, name) is None:
            continue
        if config.algo not in ("flash2", "flash_decode"):
            raise ConfigError(name, f"{what} is modelled for flash2 and flash_decode, not {config.algo}")
        if p.backward:
            raise ConfigError("backward", f"{what} is modelled forward only (inference kernels)")
    if config.algo == "flash2" and p.window is not None and not p.causal:
        raise ConfigError("window", "local attention in a prefill is causal: set causal")
    if config.algo == "flash2" and p.seq_lens is not None and p.seq_q != p.seq_k:
        raise ConfigError("seq_q", f"a variable-length prefill gives each request its own length as queries and keys: "
                                   f"seq_q must be the longest, {p.seq_k}, got {p.seq_q}")
    if p.causal and p.seq_q != p.seq_k:  # the diagonal where causal_align puts it: modelled for these kernels
        if p.window is not None:
            raise ConfigError("seq_k", f"local attention in a prefill needs seq_k == seq_q ({p.seq_q}), got {p.seq_k}")
        if config.impl is not None:
            raise ConfigError("seq_k", f"{config.impl} is modelled causal with seq_k == seq_q ({p.seq_q}) only, "
                                       f"got {p.seq_k}")
    if p.dtype == "fp8" and (config.algo != "flash2" or p.backward or config.impl is not None
                             or p.seq_lens is not None or p.window is not None):
        raise ConfigError("dtype", "fp8 (e4m3) is modelled for flash2's forward on iosim's kernels only (the Hopper "
                                   f"kernel's fp8 forward), not {config.algo}{' backward' if p.backward else ''}"
                                   f"{' on ' + config.impl if config.impl else ''}")
    unknown = set(config.host_tensors) - {"Q", "K", "V", "O"}
    if unknown:
        raise ConfigError("host_tensors", f"can place Q, K, V, O in host memory, got {sorted(unknown)[0]!r}")


def elementwise(name: str, ts: TensorSet, reads: tuple, writes: tuple, slices: int, rows: int, cols: int,
                simt_per_elem: float = 1.0, aten: str = "") -> Kernel:
    """A PyTorch elementwise kernel over ``slices × rows × cols``: fill, copy/cast, scale, reduction; ``aten``
    names the kind of ATen kernel it runs, whose code :func:`iosim.costs.code.aten_code` prices ("": estimated)."""
    block = max(1, ELEMENTWISE_PER_CTA // cols)
    for t in reads + writes:
        ts.specs[t][4].append(block)
    pats = tuple(Pattern(t, PRO, READ, "i") for t in reads) + tuple(Pattern(t, EPI, WRITE, "i") for t in writes)
    return Kernel(
        name=name, slices=slices, ti=-(-rows // block), tj=1, block_i=block, block_j=1, block_u=1,
        patterns=pats, end_flops=Flops(simt=simt_per_elem * block * cols),
        warps=4, smem_bytes=0, regs_per_thread=32, extents=extents(ts, reads + writes), aten=aten,
    )


def group_sum(name: str, ts: TensorSet, src: str, dst: str, p) -> Kernel:
    """``src.view(B, Hkv, G, N, d).sum(2)``: a CTA per kv row block reads its G query-head blocks."""
    k = elementwise(name, ts, (src,), (dst,), p.bh_kv, p.seq_k, p.head_dim, simt_per_elem=p.group, aten="sum")
    return replace(k, kv_group=p.group, heads=p.heads, kv_heads=p.kv_heads,
                   patterns=(Pattern(src, PRO, READ, "i", fan=True), Pattern(dst, EPI, WRITE, "i")))


def extents(ts: TensorSet, names) -> tuple:
    return tuple((n, ts.specs[n][1], ts.specs[n][2]) for n in dict.fromkeys(names))


def regs_estimate(fp32_accumulators: int, operand_bytes: int, warps: int) -> int:
    """Registers per thread: fp32 accumulators and register-held operands spread over the CTA's threads.

    A rough stand-in for the compiler's allocation (40 registers of addressing and loop state on
    top); measured kernels report their real count, which a run configuration can carry instead.
    """
    threads = 32 * warps
    return min(255, 40 + (fp32_accumulators + operand_bytes // 4) // threads)
