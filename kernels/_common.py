"""What every attention kernel module shares: input checks, tiles from the single source, launch records and GQA indexing.

Layout convention for all modules: q is (B, H, Nq, d), k and v are (B, Hkv, Nk, d), contiguous,
so the (batch, head) pair ``bh`` starts at element ``bh · N · d``. Query head h reads key/value
head ``h // (H // Hkv)`` (grouped-query attention) through ``kv_row``, never through a copy.
"""
from __future__ import annotations

import math
import os
from dataclasses import fields

import torch
import triton
import triton.language as tl

from iosim.schedule.problem import DQ_MODES, HEAD_DIMS, ConfigError, Problem, RunConfig, Tiling
from iosim.schedule.tiling import resolve_tiling

DTYPE_NAMES = {torch.float16: "fp16", torch.bfloat16: "bf16", torch.float32: "fp32"}
TORCH_DTYPES = {"fp16": torch.float16, "bf16": torch.bfloat16, "fp32": torch.float32, "fp8": torch.float8_e4m3fn}
TILING_KEYS = tuple(f.name for f in fields(Tiling))
LOG2E = 1.4426950408889634  # exp(x) = exp2(x · log2 e)
LOG2E_C = tl.constexpr(LOG2E)  # the same, usable inside kernels

# Under TRITON_INTERPRET=1 a bf16 ``tl.dot`` multiplies the raw uint16 bit patterns (the interpreter
# "does not support bf16 dot", triton-lang/triton#11584), so there ``mma`` feeds the dot fp32
# operands. Compiled kernels never see this branch: it is a compile-time constant False.
INTERPRETING = tl.constexpr(os.environ.get("TRITON_INTERPRET", "0") == "1")


def check_inputs(q, k, v, causal: bool, backward: bool = False) -> Problem:
    """Validate q (B, H, Nq, d), k and v (B, Hkv, Nk, d); return the call as the shared :class:`Problem`."""
    if q.dim() != 4 or k.dim() != 4 or v.dim() != 4:
        raise ValueError(f"q, k, v must be 4-D (batch, heads, seq, head_dim), got {q.dim()}, {k.dim()}, {v.dim()} dims")
    batch, heads, seq_q, head_dim = q.shape
    kb, kv_heads, seq_k, kd = k.shape
    if tuple(v.shape) != tuple(k.shape):
        raise ValueError(f"v shape {tuple(v.shape)} must equal k shape {tuple(k.shape)}")
    if kb != batch or kd != head_dim:
        raise ValueError(f"k shape {tuple(k.shape)} does not match q shape {tuple(q.shape)} in batch or head_dim")
    check_head_dim(head_dim)
    if heads % kv_heads:
        raise ValueError(f"kv_heads(={kv_heads}) must divide heads(={heads})")
    if q.dtype not in DTYPE_NAMES or k.dtype != q.dtype or v.dtype != q.dtype:
        raise ValueError(f"dtype must be one of fp16, bf16, fp32 and equal for q, k, v; got {q.dtype}, {k.dtype}, {v.dtype}")
    if not (q.is_contiguous() and k.is_contiguous() and v.is_contiguous()):
        raise ValueError("q, k, v must be contiguous (a hidden copy would add memory traffic)")
    return Problem(batch=batch, heads=heads, kv_heads=kv_heads, seq_q=seq_q, seq_k=seq_k, head_dim=head_dim,
                   dtype=DTYPE_NAMES[q.dtype], causal=bool(causal), backward=bool(backward))


def fp8_inputs(q, k, v):
    """fp8 (e4m3) inputs as fp8 attention kernels take them (FlashAttention-3's layout, which Hopper's fp8
    wgmma needs: both operands K-major): q and k as given, (B, H|Hkv, N, d), and v transposed to
    (B, Hkv, d, N), its rows padded to 16 bytes (TMA's stride alignment). Values are cast, unscaled:
    random normal inputs lie well inside e4m3's range (±448)."""
    fp8 = torch.float8_e4m3fn
    n = v.shape[-2]
    vt = torch.zeros((*v.shape[:-2], v.shape[-1], -(-n // 16) * 16), dtype=fp8, device=v.device)
    vt[..., :n] = v.transpose(-1, -2).to(fp8)
    return q.to(fp8), k.to(fp8), vt[..., :n]


def check_head_dim(head_dim: int) -> None:
    if head_dim not in HEAD_DIMS:
        raise ValueError(f"head_dim(={head_dim}) must be one of {', '.join(map(str, HEAD_DIMS))}")


def overrides_tiling(overrides: dict) -> Tiling:
    """Keyword overrides as a :class:`Tiling` (``None`` = default; ``dq`` is not a tiling key and is left
    to :func:`dq_mode`); a bad key or value is a ConfigError naming it."""
    overrides = {k: v for k, v in overrides.items() if k != "dq"}
    unknown = sorted(set(overrides) - set(TILING_KEYS))
    if unknown:
        raise ConfigError(unknown[0], f"unknown tiling key; allowed: {', '.join(TILING_KEYS + ('dq',))}")
    return Tiling(**overrides)


KERNEL_DQ_MODES = ("atomic", "separate")  # the RunConfig.dq modes these kernels implement (fused: Triton's tutorial's)


def dq_mode(overrides: dict) -> str:
    """How the backward computes dQ (``RunConfig.dq``): the ``dq`` override, ``atomic`` by default."""
    dq = overrides.get("dq", "atomic")
    if dq not in KERNEL_DQ_MODES:
        raise ConfigError("dq", f"must be one of {', '.join(KERNEL_DQ_MODES)}, got {dq!r}"
                                + (" (fused is modelled for a user's kernel, not run by iosim's)" if dq in DQ_MODES else ""))
    return dq


def pass_tiling(algo: str, pass_: str, head_dim: int, overrides: dict) -> Tiling:
    """The tiling ``algo``'s kernels of one pass (``fwd``/``bwd``) launch with: the defaults of
    :mod:`iosim.schedule.tiling`, the one place they live, with ``overrides`` applied."""
    check_head_dim(head_dim)
    return resolve_tiling(algo, pass_, head_dim, overrides_tiling(overrides))


def run_config(algo: str, q, k, v, causal: bool, backward: bool, overrides: dict) -> dict:
    """The plain-data description of one call: ``RunConfig.to_dict()`` with both passes' tilings resolved,
    so it says exactly what the kernels launch (``backward_tiling`` is None without the backward)."""
    problem = check_inputs(q, k, v, causal, backward)
    return RunConfig(algo=algo, problem=problem, tiling=overrides_tiling(overrides),
                     dq=dq_mode(overrides)).resolved().to_dict()


def default_scale(head_dim: int, sm_scale) -> float:
    return 1.0 / math.sqrt(head_dim) if sm_scale is None else float(sm_scale)


def launch(launches: list, kernel, grid: tuple, *args, num_warps: int, num_stages: int, **constexprs):
    """Run ``kernel[grid](*args)`` and append its launch record to ``launches``."""
    handle = kernel[grid](*args, num_warps=num_warps, num_stages=num_stages, **constexprs)
    launches.append(launch_record(kernel.__name__, grid, num_warps, num_stages, handle, constexprs))
    return handle


def _plain(value):
    value = getattr(value, "value", value)  # a tl.constexpr holds its value
    return value if isinstance(value, (bool, int, float, str, type(None))) else str(value)


def launch_record(name: str, grid, num_warps: int, num_stages: int, handle, constexprs: dict | None = None) -> dict:
    """One launch as plain data: grid, warps, stages, the constexprs (BLOCK sizes...) as JSON values, and
    from the compiled kernel its registers per thread, spilled registers and shared memory (bytes), and
    local memory per thread (bytes) where Triton reports it; those are None under the interpreter."""
    metadata = getattr(handle, "metadata", None)
    grid = list(grid) + [1] * (3 - len(grid))
    local = getattr(metadata, "local_mem", None)  # not reported by every Triton version
    return {
        "kernel": name, "grid": grid, "num_warps": num_warps, "num_stages": num_stages,
        "n_regs": getattr(handle, "n_regs", None), "n_spills": getattr(handle, "n_spills", None),
        "shared_bytes": getattr(metadata, "shared", None), "local_bytes": local if isinstance(local, int) else None,
        "constexprs": {k: _plain(v) for k, v in (constexprs or {}).items()},
    }


def reduce_gqa(per_head, kv_heads: int):
    """Sum per-query-head gradients (B, H, N, d) over each group of query heads into (B, Hkv, N, d)."""
    batch, heads, seq, head_dim = per_head.shape
    if heads == kv_heads:
        return per_head
    return per_head.view(batch, kv_heads, heads // kv_heads, seq, head_dim).sum(2)


@triton.jit
def kv_row(bh, H, HKV):
    """Index of the (batch, kv head) row that (batch, query head) ``bh`` reads."""
    return (bh // H) * HKV + (bh % H) // (H // HKV)


@triton.jit
def mma(a, b, acc):
    """``acc + a @ b`` with fp32 accumulation (see INTERPRETING for the interpreter's bf16 detour)."""
    if INTERPRETING:
        a = a.to(tl.float32)
        b = b.to(tl.float32)
    return tl.dot(a, b, acc)
