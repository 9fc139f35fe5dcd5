"""Figures of a validation: predicted against measured per metric, and error against sequence length.

Built without pyplot (no global figure state), like :mod:`iosim.figures.plots`, and written by its ``save``.
"""
from __future__ import annotations

from matplotlib.figure import Figure

LABELS = {"dram_bytes": "DRAM read + write (bytes)", "dram_read_bytes": "DRAM read (bytes)",
          "dram_write_bytes": "DRAM write (bytes)", "l2_bytes": "L2 tag lookups (bytes)",
          "xbar_bytes": "SM<->L2 crossbar (bytes)", "l2_lookup_bytes": "L2 slice lookups (bytes)", "time_s": "time (s)"}
SHOWN = ("dram_bytes", "xbar_bytes", "l2_lookup_bytes", "time_s")


def _algo(r) -> str:
    return r.config["algo"] + (" fwd+bwd" if r.config["problem"]["backward"] else "")


def scatter(results, gpu: str):
    """Predicted vs measured, log-log, one panel per metric, the y = x line and the ±50 % band."""
    fig = Figure(figsize=(5 * len(SHOWN), 4.6), layout="tight")
    axes = fig.subplots(1, len(SHOWN))
    for ax, metric in zip(axes, SHOWN):
        pts = [(r.measured[metric], r.predicted[metric], _algo(r)) for r in results
               if r.measured.get(metric) and r.predicted.get(metric)]
        for algo in sorted({a for _, _, a in pts}):
            xs, ys = zip(*[(m, p) for m, p, a in pts if a == algo])
            ax.scatter(xs, ys, s=18, label=algo)
        if pts:
            lo = min(min(m, p) for m, p, _ in pts) / 1.5
            hi = max(max(m, p) for m, p, _ in pts) * 1.5
            ax.plot([lo, hi], [lo, hi], "k-", lw=0.8)
            ax.plot([lo, hi], [lo * 1.5, hi * 1.5], "k:", lw=0.6)
            ax.plot([lo, hi], [lo / 1.5, hi / 1.5], "k:", lw=0.6)
        ax.set(xscale="log", yscale="log", xlabel=f"measured {LABELS[metric]}", ylabel=f"predicted {LABELS[metric]}")
        ax.grid(True, which="major", alpha=0.3)
    axes[0].legend(fontsize=7, title=f"iosim on {gpu}")
    fig.suptitle("iosim predictions against Nsight Compute counters (dotted: ±1.5×)")
    return fig


def error_vs_n(results, gpu: str):
    """Relative error against N per metric, one marker series per algorithm."""
    fig = Figure(figsize=(5 * len(SHOWN), 4.2), layout="tight")
    axes = fig.subplots(1, len(SHOWN), sharex=True)
    for ax, metric in zip(axes, SHOWN):
        for algo in sorted({_algo(r) for r in results}):
            pts = [(r.config["problem"]["seq_q"], 100 * r.error(metric)) for r in results
                   if _algo(r) == algo and r.error(metric) is not None]
            if pts:
                xs, ys = zip(*pts)
                ax.scatter(xs, ys, s=18, label=algo)
        ax.axhline(0, color="k", lw=0.8)
        ax.set(xscale="log", xlabel="sequence length N", ylabel=f"error in {LABELS[metric].split(' (')[0]} (%)")
        ax.grid(True, alpha=0.3)
    axes[0].legend(fontsize=7, title=f"iosim on {gpu}")
    return fig
