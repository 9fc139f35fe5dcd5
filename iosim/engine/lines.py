"""Tensors in device memory and how the L2 model cuts them into lines.

Granularity. The L2 is modelled in *lines* that are rectangles of one (batch, head) slice of a
tensor, not in 128-byte hardware lines: a real L2 line is far below the scale at which attention's
reuse happens (whole tiles of K and V), and simulating 10⁸ hardware lines would make a forward
pass at N = 64K take minutes. A line holds at most ``target`` bytes (1/256 of the L2 by default),
so the cache still has hundreds of lines and its LRU order resolves reuse at the tile-stream scale.
Lines are laid out so that every tile a kernel touches covers whole lines or contiguous parts of
them (rows are cut at multiples of the tensor's row tile); the cache keeps, per line, which byte
ranges are present and which are dirty, so a tile smaller than a line moves only its own bytes
(the analogue of a hardware line with per-sector valid and dirty bits).
"""
from __future__ import annotations

from dataclasses import dataclass

from iosim.schedule.ir import Tensor


@dataclass(frozen=True)
class LineGeometry:
    """How one tensor is cut into L2 lines: ``line_rows × line_cols`` rectangles per slice."""

    tensor: Tensor
    line_rows: int
    line_cols: int

    @classmethod
    def for_tensor(cls, tensor: Tensor, target: int) -> LineGeometry:
        """Largest lines of at most ``target`` bytes, full-width when a row unit of the tensor fits."""
        unit = max(1, tensor.row_unit)
        row_bytes = tensor.cols * tensor.elem_bytes
        if row_bytes * unit <= target:
            rows = max(unit, (target // row_bytes) // unit * unit)
            return cls(tensor, min(rows, _round_up(tensor.rows, unit)), tensor.cols)
        cols = max(1, target // (unit * tensor.elem_bytes))
        cols = 1 << (cols.bit_length() - 1)  # a power of two, so power-of-two tiles align with lines
        return cls(tensor, unit, min(cols, tensor.cols))

    def pieces(self, r0: int, r1: int, c0: int, c1: int):
        """Yield ``(line_row, line_col, bytes, line_bytes, lo, hi)`` for a rectangle of one slice.

        ``[lo, hi)`` is the touched span along the line's long axis (rows of a full-width line,
        columns of a column-split one) when the rectangle covers the line's other axis whole, so
        the cache can track exactly which parts of a line are present; otherwise ``lo`` is None.
        """
        t = self.tensor
        r1, c1 = min(r1, t.rows), min(c1, t.cols)
        lr, lc, eb = self.line_rows, self.line_cols, t.elem_bytes
        full_width = lc == t.cols
        if full_width and c0 == 0 and c1 == lc:  # whole rows (most tiles): one line per band of rows
            row = lc * eb
            yield from [(a, 0, (rb - ra) * row, (a1 - a0) * row, (ra - a0) * row, (rb - a0) * row)
                        for a, ra, rb, a0, a1 in _bands(r0, r1, lr, t.rows)]
            return
        bands = _bands(c0, c1, lc, t.cols)
        for a in range(r0 // lr, (r1 - 1) // lr + 1):
            a0, a1 = a * lr, min((a + 1) * lr, t.rows)
            ra, rb = max(r0, a0), min(r1, a1)
            h, n = a1 - a0, rb - ra
            if full_width and h == 1:  # a line of one row: any run of its columns is one span
                yield from [(a, b, n * (cb - ca) * eb, (b1 - b0) * eb, ca * eb, cb * eb) for b, ca, cb, b0, b1 in bands]
            elif full_width:
                yield from [(a, b, n * (cb - ca) * eb, h * (b1 - b0) * eb)
                            + (((ra - a0) * (b1 - b0) * eb, (rb - a0) * (b1 - b0) * eb) if cb - ca == b1 - b0 else (None, None))
                            for b, ca, cb, b0, b1 in bands]
            elif n == h:  # a column-split line whose rows the rectangle covers whole: its columns are one span
                yield from [(a, b, n * (cb - ca) * eb, h * (b1 - b0) * eb, (ca - b0) * h * eb, (cb - b0) * h * eb)
                            for b, ca, cb, b0, b1 in bands]
            else:
                yield from [(a, b, n * (cb - ca) * eb, h * (b1 - b0) * eb, None, None) for b, ca, cb, b0, b1 in bands]


def _round_up(x: int, m: int) -> int:
    return -(-x // m) * m


def _bands(x0: int, x1: int, size: int, extent: int) -> list:
    """``(band, first, end, band's first, band's end)`` of the bands of ``size`` that ``x0..x1`` of an axis
    ``extent`` long meets (rows in bands of a line's rows, or columns in bands of its columns): the first and
    last may be cut, those between are whole (a long run of them is most of a streamed slice)."""
    first, last = x0 // size, (x1 - 1) // size
    out = []
    for b in (first, last) if last > first else (first,):
        b0, b1 = b * size, min((b + 1) * size, extent)
        out.append((b, max(x0, b0), min(x1, b1), b0, b1))
    if last > first + 1:  # none between is the axis's last band, so each is whole
        out[1:1] = [(b, b * size, (b + 1) * size, b * size, (b + 1) * size) for b in range(first + 1, last)]
    return out
