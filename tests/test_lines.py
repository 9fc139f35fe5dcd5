"""Lines: how a tensor is cut for the L2 model, and the pieces a rectangle touches, held to a brute force."""
from __future__ import annotations

import itertools
import random

import pytest

from iosim.engine.lines import LineGeometry
from iosim.schedule.ir import Tensor


def brute_pieces(g: LineGeometry, r0: int, r1: int, c0: int, c1: int) -> list:
    """Every line intersected with the rectangle, element by element: (a, b, bytes, line bytes, lo, hi)."""
    t, out = g.tensor, []
    for a, b in itertools.product(range(-(-t.rows // g.line_rows)), range(-(-t.cols // g.line_cols))):
        rows = range(a * g.line_rows, min((a + 1) * g.line_rows, t.rows))
        cols = range(b * g.line_cols, min((b + 1) * g.line_cols, t.cols))
        hit_rows = [r for r in rows if r0 <= r < r1]
        hit_cols = [c for c in cols if c0 <= c < c1]
        if not hit_rows or not hit_cols:
            continue
        eb = t.elem_bytes
        span = (None, None)
        if g.line_cols == t.cols and len(rows) == 1:  # a line of one row: its bytes in a row, any run of columns
            span = (hit_cols[0] * eb, (hit_cols[-1] + 1) * eb)
        elif g.line_cols == t.cols and len(hit_cols) == len(cols):  # full-width line: the span is along rows
            span = ((hit_rows[0] - rows[0]) * len(cols) * eb, (hit_rows[-1] + 1 - rows[0]) * len(cols) * eb)
        elif g.line_cols != t.cols and len(hit_rows) == len(rows):  # column-split line: along columns
            span = ((hit_cols[0] - cols[0]) * len(rows) * eb, (hit_cols[-1] + 1 - cols[0]) * len(rows) * eb)
        out.append((a, b, len(hit_rows) * len(hit_cols) * eb, len(rows) * len(cols) * eb) + span)
    return out


FULL = LineGeometry(Tensor("K", 1, 100, 24, 2), line_rows=16, line_cols=24)  # whole rows; a ragged last line
SPLIT = LineGeometry(Tensor("S", 1, 10, 100, 2), line_rows=2, line_cols=32)  # rows cut into 32-column lines
ROW = LineGeometry(Tensor("local", 1, 6, 4000, 1), line_rows=1, line_cols=4000)  # a row a line (spill frames)


CASES = [(FULL, r) for r in [(0, 100, 0, 24), (5, 37, 0, 24), (16, 32, 0, 24), (3, 9, 4, 20), (90, 200, 0, 24)]] + [
    (SPLIT, r) for r in [(0, 10, 0, 100), (3, 9, 4, 70), (2, 4, 0, 100), (0, 1, 31, 33), (8, 20, 64, 200)]] + [
    (ROW, r) for r in [(0, 6, 0, 4000), (1, 4, 0, 1500), (2, 3, 700, 2100), (5, 9, 3999, 5000)]]


@pytest.mark.parametrize("geometry,rect", CASES, ids=[f"{g.tensor.name}-{r}" for g, r in CASES])
def test_pieces_are_the_lines_a_rectangle_covers(geometry, rect):
    """The pieces of a rectangle (clipped to the tensor), whole-row tiles included, are exactly the
    lines it meets with the bytes it touches in each; their bytes add up to the rectangle's."""
    got = list(geometry.pieces(*rect))
    assert got == brute_pieces(geometry, *rect)
    t = geometry.tensor
    r0, r1, c0, c1 = rect
    assert sum(p[2] for p in got) == (min(r1, t.rows) - r0) * (min(c1, t.cols) - c0) * t.elem_bytes


def test_lines_hold_at_most_the_target_and_align_with_the_row_unit():
    g = LineGeometry.for_tensor(Tensor("Q", 2, 1000, 64, 2, row_unit=32), target=10_000)
    assert (g.line_rows, g.line_cols) == (64, 64)  # 78 rows fit; the largest multiple of 32 is 64
    wide = LineGeometry.for_tensor(Tensor("S", 2, 64, 4096, 2, row_unit=32), target=10_000)
    assert (wide.line_rows, wide.line_cols) == (32, 128)  # a 32-row unit of 4096 columns is too big: split


@pytest.mark.parametrize("seed", range(4))
def test_the_lines_where_merged_tiles_meet_are_those_several_tiles_cut_into(seed):
    """A rectangle of several CTAs' tiles merged (rows in tiles of ``rb``, columns of ``cb``, from the first tile's
    corner): the lines the engine marks as met by more than one tile are those that cutting each tile apart into
    lines gives more than once."""
    from iosim.engine.simulator import _several

    rng = random.Random(seed)
    for _ in range(200):
        rows, cols = rng.choice([100, 256, 1000, 4096]), rng.choice([1, 64, 128, 1000])
        g = LineGeometry.for_tensor(Tensor("x", 1, rows, cols, 2, row_unit=rng.choice([1, 16, 64])),
                                    rng.choice([512, 4096, 100_000]))
        rb, cb = rng.choice([None, 16, 64, 128]), rng.choice([None, 16, 64])
        r0 = rng.randrange(0, rows, rb or 1)  # a merged rectangle starts where its first CTA's tile does
        r1 = rng.randrange(r0 + 1, rows + 1)
        c0 = rng.randrange(0, cols, cb or 1)
        c1 = rng.randrange(c0 + 1, cols + 1)
        seen, twice = set(), set()
        for a0, a1 in _tiles(r0, r1, rb):
            for b0, b1 in _tiles(c0, c1, cb):
                lines = {(p[0], p[1]) for p in g.pieces(a0, a1, b0, b1)}
                twice |= lines & seen
                seen |= lines
        assert (_several(g, r0, r1, c0, c1, (rb, cb)) or set()) == twice


def _tiles(x0: int, x1: int, size: int | None) -> list:
    """``x0..x1`` cut at the multiples of ``size`` (whole where None)."""
    cuts = [x0] + [x for x in range(-(-x0 // size) * size, x1, size) if x > x0] if size else [x0]
    return list(zip(cuts, cuts[1:] + [x1]))
