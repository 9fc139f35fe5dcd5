"""How many CTAs of a kernel fit on one SM at once, from its shared memory, registers and warps."""
from __future__ import annotations

from iosim.schedule.problem import ConfigError


def ctas_per_sm(kernel, profile) -> int:
    """Resident CTAs per SM, or :class:`ConfigError` naming the tile set that does not fit."""
    if kernel.smem_bytes > profile.smem_per_cta:
        raise ConfigError(
            "tiling",
            f"{kernel.name} needs {kernel.smem_bytes} bytes of shared memory per CTA; {profile.name} allows "
            f"{profile.smem_per_cta}: smaller tiles or fewer pipeline stages fit",
        )
    limits = [profile.max_ctas_per_sm, profile.max_warps_per_sm // kernel.warps]
    if kernel.smem_bytes:
        limits.append(profile.smem_per_sm // kernel.smem_bytes)
    # the compiler keeps a CTA launchable (Triton's launch bound is its thread count): beyond what
    # one CTA may hold it spills rather than refuse (ptxas caps registers at regs_per_sm / threads)
    fit = profile.regs_per_sm // (32 * kernel.warps) // 8 * 8
    regs = max(1, min(kernel.regs_per_thread, profile.max_regs_per_thread, fit))
    limits.append(profile.regs_per_sm // (regs * 32 * kernel.warps))
    n = min(limits)
    if n < 1:
        raise ConfigError("warps", f"{kernel.name} with {kernel.warps} warps does not fit on one SM of {profile.name}")
    return n
