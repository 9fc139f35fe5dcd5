"""Sequence lengths as people write them: ``4096``, ``4k``, lists ``1k,4k`` and doubling ranges ``1k:16k``.

One parser for the command line and sweep specs; a bad size raises :class:`SizeError` with one line
naming the size and saying what is allowed.
"""
from __future__ import annotations

import math


class SizeError(ValueError):
    """A size that is not a whole number > 0, or a range that does not go up."""


def parse_sizes(text) -> list[int]:
    """The sizes ``text`` names, each once, in the order given; a range doubles from LOW up to HIGH."""
    out = []
    for part in str(text).replace(" ", "").split(","):
        if ":" in part:
            ends = part.split(":")
            if len(ends) != 2:
                raise SizeError(f"{part!r}: a range is LOW:HIGH, e.g. 1k:16k")
            lo, hi = (_size(x, text) for x in ends)
            if lo > hi:
                raise SizeError(f"{part!r}: a range goes up, LOW:HIGH with LOW <= HIGH")
            while lo <= hi:
                out.append(lo)
                lo *= 2
        else:
            out.append(_size(part, text))
    return list(dict.fromkeys(out))


def parse_lengths(text) -> list[int]:
    """A variable-length batch: each request's length in order, repeats kept; ``COUNTxSIZE`` repeats a
    length (``3x512,8k`` is 512, 512, 512, 8192)."""
    out = []
    for part in str(text).replace(" ", "").split(","):
        count, sep, size = part.lower().partition("x")
        if not sep:
            count, size = "1", part
        if not count.isdigit() or int(count) <= 0:
            raise SizeError(f"{str(text)!r}: {part!r}: a repeat is COUNTxSIZE with COUNT a whole number > 0, e.g. 4x512")
        out += [_size(size, text)] * int(count)
    return out


def lengths_text(lengths) -> str:
    """:func:`parse_lengths`' spelling of a batch of lengths, runs of a length as ``COUNTxSIZE``."""
    parts: list = []
    for n in lengths:
        if parts and parts[-1][1] == n:
            parts[-1][0] += 1
        else:
            parts.append([1, n])
    return ",".join(f"{c}x{n}" if c > 1 else str(n) for c, n in parts)


def _size(text: str, whole) -> int:
    """One size: a whole number > 0, optionally with ``k`` (×1024): ``4096``, ``4k``, ``1.5k``."""
    scale = 1024 if text.lower().endswith("k") else 1
    digits = text[:-1] if scale > 1 else text
    try:
        number = int(digits) * scale if digits.isdigit() else float(digits) * scale
    except ValueError:
        number = None
    if number is None or not math.isfinite(number) or number != int(number) or number <= 0:
        what = repr(text) if text else "an empty size"
        raise SizeError(f"{str(whole)!r}: {what} is not a whole number > 0; give sizes like 4096, 4k or a "
                        "doubling range 1k:16k")
    return int(number)


__all__ = ["SizeError", "parse_sizes", "parse_lengths", "lengths_text"]
