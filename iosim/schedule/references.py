"""PyTorch SDPA's fused backends as schedules iosim models: FlashAttention-2's, on the kernels each backend runs.

Both backends follow FlashAttention-2's memory schedule (a Q-outer forward; a K/V-outer backward that
adds dQ into an fp32 buffer, with ``D = rowsum(dO∘O)`` and a cast around it), so their bytes are
flash2's on their own tiles (``REFERENCE_TILES`` in :mod:`iosim.schedule.tiling`). What differs is
their code (:func:`iosim.costs.code.reference_codes`: what their kernels executed), how a CTA overlaps
its work, and the order of their loops:

- ``sdpa_cudnn`` on sm_90: the kernels cuDNN generates at run time, ``flash_fprop_wgmma_*`` and
  ``flash_bprop_wgmma_*``: persistent (one CTA of 384 threads per SM), a producer warpgroup loading by
  TMA beside two consumer warpgroups (FlashAttention-3's design; their code reallocates registers
  between them, ``USETMAXREG``). The forward's consumers hold 64 Q rows each against 128 K/V rows a
  step (128 Q rows a CTA, which its crossbar bytes confirm); the backward holds 128 K/V rows a CTA
  and steps 64 Q rows at a time, reducing dQ by TMA (``UTMAREDG``).
- ``sdpa_flash``: FlashAttention-2's CUDA kernels in libtorch (``Flash_fwd_kernel_traits<d, bm, bn,
  warps>``, ``Flash_bwd_kernel_traits<d, bm, bn, warps, ...>``), whose loops walk their blocks from
  the last down ("we iterate over the blocks in reverse order", ``flash_fwd_kernel.h``; the backward
  starts at ``m_block_max - 1``): a causal CTA starts at its diagonal.

Only sm_90 and the head dimensions whose kernels' code was read are modelled.
"""
from __future__ import annotations

from dataclasses import replace

from iosim.schedule.problem import SDPA_IMPLS, ConfigError, Problem, RunConfig

REFERENCE_ARCH = "sm_90"  # the kernels these describe are cuDNN's and FlashAttention-2's choices on Hopper
REVERSED = {"sdpa_flash": ("flash2_fwd", "flash2_bwd")}  # kernels whose loop walks its blocks from the last down


def check_reference(config: RunConfig, arch: str) -> None:
    """Refuse, naming the field, a configuration the reference kernels do not run as modelled."""
    impl, p = config.impl, config.problem
    if impl is None:
        return
    if f"sm_{str(arch).removeprefix('sm_')}" != REFERENCE_ARCH:
        raise ConfigError("impl", f"{impl} is modelled on {REFERENCE_ARCH} (Hopper) only, not {arch}")
    if p.seq_lens is not None or p.page_size is not None or p.window is not None:
        raise ConfigError("impl", f"{impl} is modelled for dense batches without a window or pages")
    if p.seq_q != p.seq_k:
        raise ConfigError("impl", f"{impl} is modelled with seq_q == seq_k (its decode kernels split K/V)")


def reference_config(impl: str, problem: Problem, arch: str, mode: str = "plain") -> RunConfig:
    """The configuration that models SDPA backend ``impl`` on ``problem`` on a GPU of ``arch``."""
    config = RunConfig(algo="flash2", problem=problem, mode=mode, impl=impl)
    check_reference(config, arch)
    return config


def reference_kernels(kernels: list, impl: str | None) -> list:
    """``kernels`` of flash2's schedule as backend ``impl`` launches them (loops reversed where it does)."""
    reversed_ = REVERSED.get(impl, ())
    return [replace(k, reverse=True) if k.name in reversed_ else k for k in kernels]


__all__ = ["SDPA_IMPLS", "REFERENCE_ARCH", "check_reference", "reference_config", "reference_kernels"]
