"""The L2 model, access by access: hits, misses, fills in flight, write-allocate and write-back.

Every test drives an :class:`L2Cache` with a handful of accesses on links of 1024 bytes/s (so a
byte count is also a time in 1/1024 s) and asserts each count and each link's whole log exactly.
"""
from __future__ import annotations

import random

import pytest

from iosim.engine.l2 import L2Cache, _cover
from iosim.engine.links import Link
from iosim.schedule.ir import ATOMIC, READ, WRITE

LINE = 2048  # bytes of every line here
A, B = (0, 0, 0, 0), (0, 0, 1, 0)  # lines (tensor index, slice, line row, line column)


def cache(capacity: int = 4 * LINE, **kw) -> L2Cache:
    memory = {"hbm": Link("hbm", 1024.0, log=True), "host": Link("host", 1024.0, log=True)}
    return L2Cache(capacity, memory, ["hbm"], **kw)


def counts(l2: L2Cache) -> tuple:
    st = l2.stats
    return st.read_bytes, st.write_bytes, st.hit_bytes, st.miss_bytes, st.fill_bytes["hbm"], st.writeback_bytes["hbm"]


def test_a_read_that_finds_a_fill_in_flight_waits_for_it_and_hits():
    """1024 B missed at t = 0 arrive at t = 1; two CTAs reading them at t = 0.5 hit and wait until t = 1."""
    l2 = cache()
    assert l2.access(A, "hbm", READ, 1024, LINE, 1, 0.0, 0, 1024) == 1.0
    assert l2.access(A, "hbm", READ, 1024, LINE, 2, 0.5, 0, 1024) == 1.0
    # read, write, hit, miss, filled, written back
    assert counts(l2) == (3072, 0, 2048, 1024, 1024, 0)
    assert l2.memory["hbm"].log == [(1.0, 1024)]
    assert (l2.used, l2.dirty) == (1024, 0)


def test_a_read_overlapping_present_bytes_fills_only_the_rest():
    """[0, 1024) then [512, 1536) of one line: the second read hits 512 bytes and misses 512."""
    l2 = cache()
    l2.access(A, "hbm", READ, 1024, LINE, 1, 0.0, 0, 1024)
    assert l2.access(A, "hbm", READ, 1024, LINE, 1, 2.0, 512, 1536) == 2.5
    assert counts(l2) == (2048, 0, 512, 1536, 1536, 0)
    assert l2.memory["hbm"].log == [(1.0, 1024), (2.5, 512)]


def test_a_write_allocates_without_a_fill_and_is_written_back_when_evicted():
    """One line of capacity: a whole-line write stays dirty (no DRAM traffic, ready at once); a read
    of another line then fills 2048 bytes (done at t = 2) and evicts the dirty line, whose 2048
    bytes queue behind the fill (done at t = 4)."""
    l2 = cache(capacity=LINE)
    assert l2.access(A, "hbm", WRITE, LINE, LINE, 1, 0.0, 0, LINE) == 0.0
    assert (counts(l2), l2.dirty, l2.memory["hbm"].log) == ((0, LINE, 0, 0, 0, 0), LINE, [])
    assert l2.access(B, "hbm", READ, LINE, LINE, 1, 0.0, 0, LINE) == 2.0
    assert counts(l2) == (LINE, LINE, 0, LINE, LINE, LINE)
    assert l2.memory["hbm"].log == [(2.0, LINE), (4.0, LINE)]
    assert (list(l2.lines), l2.used, l2.dirty) == ([B], LINE, 0)


def test_write_backs_of_accesses_served_together_queue_after_their_loads():
    """One line of capacity, A dirty: B's fill evicts A, then C's fill evicts B. Served one by one, C's
    fill queues behind A's write-back (C at t = 6); held together (one engine step), the reads go first
    (B at 2, C at 4) and A's 2048 bytes are posted behind them at :meth:`post` (done at 6): the same
    bytes and the same end, the loads no longer waiting for the write-back."""
    C = (0, 0, 2, 0)
    for held in (False, True):
        l2 = cache(capacity=LINE)
        l2.access(A, "hbm", WRITE, LINE, LINE, 1, 0.0, 0, LINE)
        if held:
            l2.hold_writes()
        got = [l2.access(key, "hbm", READ, LINE, LINE, 1, 0.0, 0, LINE) for key in (B, C)]
        if held:
            assert l2.memory["hbm"].log == [(2.0, LINE), (4.0, LINE)]  # nothing written back yet
            l2.post(0.0)
        assert got == ([2.0, 4.0] if held else [2.0, 6.0])
        assert l2.memory["hbm"].log == [(2.0, LINE), (4.0, LINE), (6.0, LINE)]  # the link ends when it did
        assert counts(l2) == (2 * LINE, LINE, 0, 2 * LINE, 2 * LINE, LINE)
        assert l2.posted is None


def test_deferred_write_backs_wait_for_every_load_of_their_instant():
    """Two steps at t = 0 (two CTAs run one by one), A dirty, one line of capacity: the first step's fill of B
    evicts A. Posted at once, A's write-back queues before the second step's fill of C (C at 6); deferred to
    the end of the instant (the engine's hook, :meth:`L2Cache.drain`), C comes at 4 as when both steps are one
    (held together), and A's bytes leave behind it: the same bytes on the link, in the other order."""
    C = (0, 0, 2, 0)
    for defer in (False, True):
        l2 = cache(capacity=LINE)
        asked = []
        if defer:
            l2.defer = asked.append
        l2.access(A, "hbm", WRITE, LINE, LINE, 1, 0.0, 0, LINE)
        got = []
        for key in (B, C):
            l2.hold_writes()
            got.append(l2.access(key, "hbm", READ, LINE, LINE, 1, 0.0, 0, LINE))
            l2.post(0.0)
        if defer:
            assert asked == [0.0] and l2.memory["hbm"].log == [(2.0, LINE), (4.0, LINE)]  # asked once, not yet out
            l2.drain(0.0)
            assert l2.instant == []
        assert got == ([2.0, 4.0] if defer else [2.0, 6.0])
        assert sorted(l2.memory["hbm"].log) == [(2.0, LINE), (4.0, LINE), (6.0, LINE)]
        assert counts(l2) == (2 * LINE, LINE, 0, 2 * LINE, 2 * LINE, LINE)


def test_an_atomic_fills_the_line_first_then_dirties_it():
    """Read-modify-write at the L2: a missing line is fetched (a lookup that misses), then dirtied;
    flushing writes the bytes back once."""
    l2 = cache()
    assert l2.access(A, "hbm", ATOMIC, 1024, LINE, 1, 0.0, 0, 1024) == 1.0
    assert counts(l2) == (0, 1024, 0, 1024, 1024, 0)
    assert l2.flush(1.0, invalidate=False) == 1024
    assert counts(l2) == (0, 1024, 0, 1024, 1024, 1024)
    assert l2.memory["hbm"].log == [(1.0, 1024), (2.0, 1024)]


def test_a_dirty_line_is_cleaned_past_the_dirty_limit_and_stays():
    """Past the dirty limit one dirty line is written back (drawn among them) and kept, clean."""
    l2 = cache(dirty_limit=LINE)
    l2.access(A, "hbm", WRITE, LINE, LINE, 1, 0.0, 0, LINE)
    l2.access(B, "hbm", WRITE, LINE, LINE, 1, 0.0, 0, LINE)
    assert (l2.dirty, len(l2.dirty_keys), list(l2.lines)) == (LINE, 1, [A, B])
    assert l2.dirty_keys[0] in (A, B) and l2.lines[l2.dirty_keys[0]][1] == LINE
    assert counts(l2) == (0, 2 * LINE, 0, 0, 0, LINE)


def test_the_dirty_victims_are_the_same_every_run():
    """Victims are drawn, but from a fixed seed: two caches fed the same stores clean the same lines."""
    def run():
        l2 = cache(capacity=64 * LINE, dirty_limit=5 * LINE)
        for t in range(3):
            for n in range(8):
                l2.access((0, 0, n, 0), "hbm", WRITE, LINE, LINE, 1, float(t), 0, LINE)
        return list(l2.dirty_keys), l2.stats.writeback_bytes["hbm"]
    first = run()
    assert first == run() and len(first[0]) == 5 and first[1] > 0


def test_the_dirty_victims_are_drawn_as_randrange_draws_them():
    """The victims are ``random.Random(0).randrange(dirty lines)``'s draws (inlined in the cache for speed):
    a replay of the same stores that draws with randrange over the same list picks the same lines."""
    l2 = cache(capacity=64 * LINE, dirty_limit=5 * LINE)
    draw, keys, cleaned = random.Random(0), [], []
    for t in range(4):
        for n in range(8):
            key = (0, 0, n, 0)
            l2.access(key, "hbm", WRITE, LINE, LINE, 1, float(t), 0, LINE)
            if key not in keys:
                keys.append(key)
            while len(keys) > 5:  # the reference: one victim a store past the limit, last key into its place
                at = draw.randrange(len(keys))
                cleaned.append(keys[at])
                last = keys.pop()
                if at < len(keys):
                    keys[at] = last
    assert l2.dirty_keys == keys
    assert l2.stats.writeback_bytes["hbm"] == len(cleaned) * LINE


def test_a_line_larger_than_the_cache_goes_straight_to_memory():
    """A zero-sized L2 keeps nothing: every read is a miss, every write a write-back (the paper's counts)."""
    l2 = cache(capacity=0)
    assert l2.access(A, "hbm", READ, 1024, LINE, 2, 0.0) == 2.0
    assert l2.access(A, "hbm", WRITE, 1024, LINE, 1, 0.0) == 0.0
    assert counts(l2) == (2048, 1024, 0, 2048, 2048, 1024)
    assert (l2.memory["hbm"].log, len(l2.lines)) == ([(2.0, 2048), (3.0, 1024)], 0)


def test_a_shared_line_occupies_a_copy_per_partition():
    """Two partitions: a line first read by one cohort and then by another holds two copies of its bytes."""
    l2 = cache(replicas=2)
    l2.access(A, "hbm", READ, 1024, LINE, 1, 0.0, 0, 1024, who=(0, 0))
    assert l2.used == 1024
    l2.access(A, "hbm", READ, 1024, LINE, 1, 1.0, 0, 1024, who=(0, 8))
    assert (l2.used, l2.stats.hit_bytes) == (2048, 1024)


def test_a_line_several_ctas_tiles_share_in_one_access_is_shared_as_if_touched_one_by_one():
    """Tiles of two CTAs merged into one access meet in line A: held in both partitions, as when each CTA
    reads its own half under its own name; line B, which one CTA's tile fills alone, stays private."""
    merged, apart = cache(capacity=16 * LINE, replicas=2, private=1.5), cache(capacity=16 * LINE, replicas=2, private=1.5)
    pieces = ((0, 0, LINE, LINE, 0, LINE), (1, 0, LINE // 2, LINE, 0, LINE // 2))
    merged.access_pieces((0, 0), pieces, "hbm", READ, 1, 0.0, who=(0, 0), several=frozenset({(0, 0)}))
    apart.access(A, "hbm", READ, LINE // 2, LINE, 1, 0.0, 0, LINE // 2, who=(0, 0))
    apart.access(A, "hbm", READ, LINE // 2, LINE, 1, 0.0, LINE // 2, LINE, who=(0, 1))
    apart.access(B, "hbm", READ, LINE // 2, LINE, 1, 0.0, 0, LINE // 2, who=(0, 1))
    assert merged.used == apart.used == 2 * LINE + 1.5 * LINE // 2
    assert counts(merged) == counts(apart)
    assert [line[6] for line in merged.lines.values()] == [2, 1.5]


def test_a_negative_capacity_is_refused_by_name():
    with pytest.raises(ValueError, match=r"capacity\(=-1\) must be >= 0"):
        cache(capacity=-1)


@pytest.mark.parametrize("replicas", [1, 2])
def test_stored_lines_take_a_copy_in_every_partition(replicas):
    """Sixteen whole lines stored by sixteen CTAs into an L2 of eight lines: a stored line is held in
    every partition, so with two the L2 keeps four lines dirty (the l2 probe's plateau: 43 % of the L2),
    with one all eight; the rest was written back, oldest first."""
    l2 = cache(capacity=8 * LINE, replicas=replicas, private=1.37)
    for n in range(16):
        l2.access((0, 0, n, 0), "hbm", WRITE, LINE, LINE, 1, 0.0, 0, LINE, who=n)
    kept = 8 // replicas
    assert (l2.dirty, l2.used) == (kept * LINE, 8 * LINE)
    assert l2.stats.writeback_bytes["hbm"] == (16 - kept) * LINE


@pytest.mark.parametrize("seed", range(6))
def test_a_line_fills_exactly_the_bytes_not_yet_present(seed):
    """Reads of random byte spans of one line, in order (streamed) or not: each fills exactly the bytes
    of its span that no earlier read brought in (a set of bytes is the oracle)."""
    rng = random.Random(seed)
    l2, present = cache(), set()
    for n in range(40):
        if seed % 2 and n < 20:  # streamed: each span starts at or after the previous one's start
            lo = min(LINE - 1, n * 64 + rng.randrange(0, 96))
        else:
            lo = rng.randrange(0, LINE)
        hi = min(LINE, lo + rng.randrange(1, 300))
        before = l2.stats.miss_bytes
        l2.access(A, "hbm", READ, hi - lo, LINE, 1, float(n), lo, hi)
        assert l2.stats.miss_bytes - before == len(set(range(lo, hi)) - present), (n, lo, hi)
        present |= set(range(lo, hi))


def test_bytes_another_cta_is_bringing_in_come_when_its_pass_gets_them():
    """A convoy: CTA 1 misses a line's first half at t = 0 and its step, over [0, 10], reaches that data
    at an even pace; CTA 2 reading the same bytes at t = 1 hits, and gets each byte when CTA 1's pass
    does (its load merges with the fill in flight): all of them at t = 10, the first half of them at
    t = 5 (each as when, and the bytes of the access up to it, so the engine can tell who asked first). CTA 3
    reading the line's other half, which it misses, waits only for its own fill."""
    l2 = cache()
    filled = []
    ready, lone, behind = l2.access_pieces((0, 0), ((0, 0, 1024, LINE, 0, 1024),), "hbm", READ, 1, 0.0, who=1,
                                           filled=filled)
    assert (ready, lone, behind) == (1.0, 1024.0, None)  # nothing it reads is still being brought in
    assert [(before, upto, lo, hi) for _, before, upto, lo, hi in filled] == [(0, 1024, 0, 1024)]
    L2Cache.usable([(line, before / 1024, upto / 1024, lo, hi) for line, before, upto, lo, hi in filled], 0.0, 10.0)
    assert l2.access_pieces((0, 0), ((0, 0, 1024, LINE, 0, 1024),), "hbm", READ, 1, 1.0, who=2) == (1.0, 0.0, [(10.0, 1024)])
    assert l2.access_pieces((0, 0), ((0, 0, 512, LINE, 0, 512),), "hbm", READ, 1, 1.0, who=2)[2] == [(5.0, 512)]
    filled = []
    ready, lone, behind = l2.access_pieces((0, 0), ((0, 0, 1024, LINE, 1024, 2048),), "hbm", READ, 1, 1.0, who=3,
                                           filled=filled)
    assert (ready, lone, behind) == (2.0, 1024.0, None)
    assert counts(l2) == (3584, 0, 1536, 2048, 2048, 0)
    # CTA 3's pass reaches the second half's end at t = 20 (its middle at 10.5): a reader of the first
    # half (there since t = 10) does not wait for it, a reader of the second half's end does
    L2Cache.usable([(line, 0.0, 1.0, lo, hi) for line, _, _, lo, hi in filled], 1.0, 20.0)
    assert l2.access_pieces((0, 0), ((0, 0, 512, LINE, 0, 512),), "hbm", READ, 1, 12.0, who=4)[2] is None
    assert l2.access_pieces((0, 0), ((0, 0, 512, LINE, 1024, 1536),), "hbm", READ, 1, 12.0, who=4)[2] is None
    assert l2.access_pieces((0, 0), ((0, 0, 512, LINE, 1536, 2048),), "hbm", READ, 1, 12.0, who=4)[2] == [(20.0, 512)]


def test_a_reversed_pass_brings_a_line_in_from_the_top():
    """A loop that walks its blocks from the last down (FlashAttention-2's CUDA kernels) reaches a line's
    last bytes first: over [0, 10] its fill of the whole line has the top half there at t = 5 and the
    bottom half at t = 10, and a follower waits for the bytes it reads accordingly."""
    l2 = cache()
    filled = []
    l2.access_pieces((0, 0), ((0, 0, LINE, LINE, 0, LINE),), "hbm", READ, 1, 0.0, who=1, filled=filled)
    L2Cache.usable([(line, before / LINE, upto / LINE, lo, hi) for line, before, upto, lo, hi in filled], 0.0, 10.0,
                   reverse=True)
    half = LINE // 2
    assert l2.access_pieces((0, 0), ((0, 0, half, LINE, half, LINE),), "hbm", READ, 1, 1.0, who=2)[2] == [(5.0, half)]
    assert l2.access_pieces((0, 0), ((0, 0, half, LINE, 0, half),), "hbm", READ, 1, 1.0, who=2)[2] == [(10.0, half)]


def test_a_run_of_a_one_row_lines_columns_is_tracked_by_place():
    """A spill frame's line is one row of local memory; a pass stores and reloads a run of its columns.
    Stored bytes re-read are hits however the runs are cut, and only bytes never stored fill from memory."""
    from iosim.engine.lines import LineGeometry
    from iosim.schedule.ir import HBM, Tensor
    g = LineGeometry(Tensor("local", 1, 4, 4000, 1), line_rows=1, line_cols=4000)
    l2 = L2Cache(1 << 20, {"hbm": Link("hbm", 1e12), "host": Link("host", 1e10)}, [HBM])
    for kind, c0, c1 in ((WRITE, 1000, 2500), (WRITE, 0, 1000), (READ, 0, 2500), (READ, 500, 3000)):
        l2.access_pieces((0, 0), tuple(g.pieces(0, 2, c0, c1)), HBM, kind, 1, 0.0, "cta", False)
    assert l2.stats.fill_bytes["hbm"] == 2 * 500  # columns 2500..3000 of both rows: the only bytes never stored
    assert l2.stats.hit_bytes == 2 * 2500 + 2 * 2000


def test_pinned_lines_are_the_last_victims_and_age_again_once_unpinned():
    """Three lines of room: a frame line F (tensor 1) read first, pinned, then four tile lines read after it:
    LRU would evict F first; pinned, the oldest tile lines go instead, each miss filled once. Unpinned, F is
    an ordinary line again, the most recently used, and the next misses evict the oldest tile lines first,
    then F."""
    frame = (1, 0, 0, 0)
    tiles = [(0, 0, r, 0) for r in range(6)]
    l2 = L2Cache(3 * LINE, {"hbm": Link("hbm", 1024.0), "host": Link("host", 1024.0)}, ["hbm", "hbm"])
    l2.access(frame, "hbm", READ, LINE, LINE, 1, 0.0, 0, LINE)
    l2.pin(1)
    for t in tiles[:4]:
        l2.access(t, "hbm", READ, LINE, LINE, 1, 0.0, 0, LINE)
    assert (list(l2.held), list(l2.lines)) == ([frame], tiles[2:4])
    assert l2.stats.miss_bytes == 5 * LINE and l2.used == 3 * LINE
    l2.unpin()
    assert (l2.pinned, list(l2.held), list(l2.lines)) == (None, [], tiles[2:4] + [frame])
    l2.access(tiles[4], "hbm", READ, LINE, LINE, 1, 0.0, 0, LINE)
    l2.access(tiles[5], "hbm", READ, LINE, LINE, 1, 0.0, 0, LINE)
    assert list(l2.lines) == [frame, tiles[4], tiles[5]]
    l2.access(tiles[0], "hbm", READ, LINE, LINE, 1, 0.0, 0, LINE)
    assert list(l2.lines) == [tiles[4], tiles[5], tiles[0]]
    assert l2.stats.miss_bytes == 8 * LINE


def test_a_dirty_pinned_line_is_written_back_by_a_flush():
    """A pinned frame line stored to is dirty like any other: a flush writes it back and empties the pinned lines."""
    frame = (1, 0, 0, 0)
    l2 = L2Cache(3 * LINE, {"hbm": Link("hbm", 1024.0), "host": Link("host", 1024.0)}, ["hbm", "hbm"])
    l2.pin(1)
    l2.access(frame, "hbm", WRITE, LINE, LINE, 1, 0.0, 0, LINE)
    assert (l2.dirty, list(l2.held)) == (LINE, [frame])
    assert l2.flush(0.0, invalidate=True) == LINE
    assert (l2.dirty, list(l2.held), l2.used) == (0, [], 0)


def test_a_lines_spans_follow_the_bytes_touched_in_any_order():
    """Spans of a line touched at random places, against a set of its bytes: each touch counts the bytes it newly
    covers, and the spans are the set's runs (touches inside one span, a spill frame read every pass, included)."""
    draw = random.Random(7)
    for _ in range(50):
        line, seen = [0, 0, 0.0, []], set()
        for _ in range(40):
            lo = draw.randrange(0, 200)
            hi = lo + draw.randrange(1, 30)
            assert _cover(line, 0, 3, lo, hi, hi - lo, 256) == len(set(range(lo, hi)) - seen)
            seen |= set(range(lo, hi))
            runs, start = [], None
            for x in range(0, 257):
                if x in seen and start is None:
                    start = x
                elif x not in seen and start is not None:
                    runs.append((start, x))
                    start = None
            assert line[3] == runs and line[0] == len(seen)
