"""The units a profile may write its numbers in, per dimension, and how a base-unit value is shown."""
from __future__ import annotations

import math

# Allowed units per dimension, as factors to the base unit. Sizes take decimal (KB = 1e3) and binary
# (KiB = 2**10) prefixes; rates take the decimal prefixes that datasheets quote them in.
UNITS: dict[str, dict[str, int | float]] = {
    "size": {"B": 1, "KB": 10**3, "KiB": 2**10, "MB": 10**6, "MiB": 2**20, "GB": 10**9, "GiB": 2**30,
             "TB": 10**12, "TiB": 2**40},
    "bandwidth": {"B/s": 1, "KB/s": 1e3, "MB/s": 1e6, "GB/s": 1e9, "TB/s": 1e12},
    "frequency": {"Hz": 1, "kHz": 1e3, "MHz": 1e6, "GHz": 1e9},
    "flop rate": {"FLOP/s": 1, "GFLOP/s": 1e9, "TFLOP/s": 1e12, "PFLOP/s": 1e15},
    "time": {"s": 1, "ms": 1e-3, "us": 1e-6, "ns": 1e-9},
    "count": {"count": 1},
    "fraction": {"fraction": 1},
    "spread": {"fraction": 1, "%": 0.01},  # a relative spread (a coefficient of variation): no floor at 1 %
}


# Base-unit bounds no GPU comes near, so that a typo or a broken measurement (an efficiency of
# 1e-320 that later divides to NaN, a 1 EB L2) is refused where it is written, not met as nan later.
PLAUSIBLE = {
    "fraction": (0.01, 1.0),  # of a datasheet peak; a measured 1 % means the measurement failed
    "bandwidth": (1e6, 1e15),  # 1 MB/s .. 1 PB/s
    "flop rate": (1e9, 1e18),
    "frequency": (1e7, 1e11),  # 10 MHz .. 100 GHz
    "time": (0.0, 1.0),  # latencies and overheads: under a second
    "size": (1, 2 ** 50),  # up to 1 PiB
    "count": (1, 10 ** 7),
    "spread": (1e-6, 0.5),  # a measured spread of half the mean or more is no steady state
}


def to_base(value: int | float, unit: str, dim: str) -> int | float:
    """``value`` in ``unit`` as the dimension's base unit: a whole int for counts and sizes, else a float.

    Raises ValueError (the message names the rule) for a unit of another dimension, a value <= 0,
    a fraction above 1, or a count or size that is not whole.
    """
    allowed = UNITS[dim]
    if unit not in allowed:
        raise ValueError(f"unit {unit!r} is not a {dim}; allowed: {', '.join(allowed)}")
    if value <= 0:
        raise ValueError(f"value must be > 0, got {value!r}")
    if dim == "fraction" and value > 1:
        raise ValueError(f"a fraction must be in (0, 1], got {value!r}")
    base = value * allowed[unit]
    lo, hi = PLAUSIBLE.get(dim, (0, math.inf))
    if not lo <= base <= hi:
        raise ValueError(f"{value!r} {unit} is outside what a GPU has: {dim} must be within "
                         f"{format_quantity(lo, dim)} .. {format_quantity(hi, dim)}")
    if dim in ("count", "size"):
        whole = round(base)
        if abs(base - whole) > 1e-9 * base:
            what = "a count must be a whole number" if dim == "count" else "not a whole number of bytes"
            raise ValueError(f"{what}, got {value!r} {unit}")
        return int(whole)
    return float(base)


def format_quantity(value: float, dim: str) -> str:
    """A base-unit value written with the largest unit of ``dim`` that keeps it >= 1."""
    if dim == "count":
        return str(value)
    if dim in ("fraction", "spread"):
        return f"{value:.4g}"
    units = sorted(UNITS[dim].items(), key=lambda kv: -kv[1])
    if dim == "size":  # the largest unit that divides it exactly, binary first: 50 MiB, 80 GB
        return next((f"{value // f} {u}" for u, f in units if value >= f and value % f == 0), f"{value} B")
    unit, f = next(((u, f) for u, f in units if value >= f), units[-1])
    return f"{value / f:.4g} {unit}"
