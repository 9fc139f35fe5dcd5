"""The L2 cache shared by all SMs: LRU lines, write-allocate, write-back, fills that others wait on.

Policy, chosen to match what Nsight Compute's ``dram__bytes`` counters see on NVIDIA GPUs:
- reads that miss fill the missing bytes from the line's backing memory (HBM, or host memory over
  the host link); a read that finds a fill still in flight waits for it (an MSHR merge), so CTAs that
  stream the same K/V tile together cost one DRAM read;
- writes allocate without fetching (whole tiles are written), in every L2 partition (the writer's and
  the line's home: a store-only kernel leaves 43 % of the L2 dirty on the H100 and the H200, just under
  the half that two copies allow); a line its own user read in and then stores to keeps the copies its
  read took (``iosim.kernels.rewrite_probe``: 32 MiB of private lines loaded and stored 16 times over
  stay in the H200's 60 MiB, none fetched again). The same probe holds lines only stored as it holds
  loaded ones (``storesweep``): the two copies stand in for a replacement policy this LRU lacks, under
  which forward kernels write their O back while they run (with one copy the DRAM medians went 1.0 ->
  2.0 %, see the probe data's README); writes leave the bytes dirty (writes to host memory go through to it
  over the host link instead: the L2 holds no dirty host lines); dirty bytes
  reach DRAM only when their line is evicted, when more than ``dirty_limit`` bytes are dirty (a dirty
  line drawn at random is cleaned, as the rewrite probe's lines stored again every pass are written back
  gradually past the limit: the oldest would be the next one stored again, all of them every pass), or at
  an explicit ``flush`` — so output still in L2 when a kernel
  ends is not counted in that kernel's DRAM writes, as on the hardware;
- the write-backs of accesses served together (one engine step: :meth:`L2Cache.hold_writes`) go on the
  memory link after their loads (:meth:`L2Cache.post`), as a memory controller serves reads first and
  drains posted writes behind them, and in the engine after every load issued at the same instant;
- atomics are read-modify-write at L2: a missing line is filled first, then dirtied;
- a line larger than the whole cache bypasses it: every access goes to memory (with a zero-sized
  L2 this reproduces the FlashAttention paper's HBM access counts);
- while a kernel that spills runs, lines of local memory (where its spilled registers live) are pinned
  (:meth:`L2Cache.pin`): victims only once no other line is left. A CTA reloads and stores its frame every
  pass, and the GPU keeps such lines where LRU over the model's coarse lines let the tiles streaming past
  age them out (sglang's spilling prefill: DRAM +216 % and +465 % with LRU frames, -13 % and +49 % pinned).
Lines and their geometry are described in :mod:`iosim.engine.lines`.
"""
from __future__ import annotations

import bisect
import math
import random
from collections import OrderedDict
from dataclasses import dataclass, field

from iosim.schedule.ir import HOST, READ, WRITE, AccessKind


@dataclass
class L2Stats:
    """Byte counts at the L2 and below it, by the level that served them."""

    read_bytes: int = 0  # loaded by SMs, summed over every CTA that asked
    write_bytes: int = 0  # stored or atomically added by SMs
    lookup_bytes: int = 0  # bytes the L2 slices look up: loads after the request coalescer merged identical ones
    hit_bytes: int = 0  # of loads and atomics (both look the line up)
    miss_bytes: int = 0
    fill_bytes: dict = field(default_factory=lambda: {"hbm": 0, "host": 0})
    writeback_bytes: dict = field(default_factory=lambda: {"hbm": 0, "host": 0})


class L2Cache:
    """LRU over lines ``(tensor index, slice, line_row, line_col)``; a line is ``[present, dirty, ready_at,
    present spans, dirty spans, first user, copies, usable_at, usable spans, filled_at, filler]`` (when its last fill
    was asked for, and by whom) (``usable spans``: ``(lo, hi,
    usable_at)`` of each fill whose place in the line is known, see :meth:`usable`).

    ``memory`` maps a placement (``"hbm"``/``"host"``) to the link that fills and drains it; a link has
    ``reserve(now, nbytes) -> finish_time``. Times are seconds of simulated time.
    """

    def __init__(self, capacity: int, memory: dict, placements: list, dirty_limit: int | None = None,
                 replicas: int = 1, coalesce: int = 1, private: float = 1.0, inflight: float = 1.0,
                 lockstep: tuple | None = None):
        if capacity < 0:
            raise ValueError(f"capacity(={capacity}) must be >= 0")
        self.capacity = capacity
        self.memory = memory
        self.placements = placements  # tensor index -> "hbm" | "host"
        self.replicas = replicas  # copies of a line read by CTAs other than its first user (L2 partitions)
        self.private = max(1.0, min(private, replicas))  # copies of a line only its first user touched, on average
        self.coalesce = max(1, coalesce)  # identical loads merged into one lookup (profile's lrc_sms)
        # lookups per CTA whose load finds its line's fill in flight and merges in it (lrc_inflight_lookups)
        self.inflight = min(1.0, max(0.0, inflight))
        # lookups a load of CTAs in lockstep reading a present line, (first-wave pair, first-wave group, later pair,
        # later group, the group's CTAs): the profile's lrc_*_lookups and lrc_group_ctas; None: merged in coalesce's
        self.lockstep = lockstep
        self._groups: dict = {}
        self._shares: dict = {}  # (CTAs, together, lockstep) -> (lookups a byte, lookups a byte merged in a fill)
        self.dirty_limit = capacity if dirty_limit is None else min(dirty_limit, capacity)
        self.lines: OrderedDict = OrderedDict()
        self.pinned: int | None = None  # tensor index whose lines are evicted last (spill frames), see pin
        self.held: OrderedDict = OrderedDict()  # the pinned tensor's lines, in their own LRU order
        self.dirty_keys: list = []  # lines with dirty bytes (in no order: a victim is drawn among them)
        self._dirty_at: dict = {}  # line -> its index in dirty_keys
        self._draw = random.Random(0)  # the victims' draws: the same every run
        # write-backs of the accesses being served together (one engine step), queued on the memory link after
        # their loads (see :meth:`post`); None: each goes on the link when it happens
        self.posted: list | None = None
        # ``defer(now)``: where set, the engine's hook that calls :meth:`drain` once every access of the instant
        # ``now`` is served; ``instant``: the write-backs :meth:`post` deferred to it
        self.defer = None
        self.instant: list = []
        self.used = 0
        self.dirty = 0
        self.stats = L2Stats()

    def access(self, key, placement: str, kind: AccessKind, nbytes: int, line_bytes: int, mult: int, now: float,
               lo: int | None = None, hi: int | None = None, who=None, lockstep: bool = True) -> float:
        """Serve ``mult`` CTAs touching ``nbytes`` of one line at once; return when the data is there.

        ``[lo, hi)`` is the touched byte span of the line when known: presence and dirtiness are then
        tracked exactly; otherwise by byte count (exact for the disjoint, in-order pieces it gets).
        ``who`` names the requesting CTAs: a line touched by others than its first user, or by several
        at once, or stored to, is *shared* and occupies ``replicas`` copies of its bytes (one per L2
        partition); a line only its first user read occupies ``private`` copies on average.
        ``lockstep``: the ``mult`` CTAs issue their loads together, so the request coalescer merges them.
        """
        head = key[:2]
        ready, _, _ = self.access_pieces(head, ((key[2], key[3], nbytes, line_bytes, lo, hi),), placement, kind, mult,
                                      now, who, lockstep)
        return ready

    def access_pieces(self, head: tuple, pieces, placement: str, kind: AccessKind, mult: int, now: float,
                      who=None, lockstep: bool = True, lone: float = 0.0, filled: list | None = None,
                      several: frozenset | None = None, together: bool = False) -> tuple:
        """:meth:`access` for each ``(line_row, line_col, nbytes, line_bytes, lo, hi)`` of ``pieces``, in
        order, on the lines ``head + (line_row, line_col)`` (``head``: tensor index and slice); return when the
        last data is there, ``lone`` plus the bytes loads filled per CTA (misses over ``mult``), and the present bytes another
        CTA's passes are still bringing in: ``(when they are there, bytes of pieces up to and including
        theirs)`` for each piece that has some (see :meth:`usable`; None if none), so the caller can
        tell whether that CTA asked for them first. One call per tile rather than per line: the engine's
        cost is the Python around each line, and a line already whole and present costs a hit only.
        ``filled`` collects ``(line, bytes of pieces before it, up to and including it, lo, hi)`` for every line a
        load filled (``lo``, ``hi``: the piece's span, where known), so the caller can say when its data
        is there (:meth:`usable`). ``several``: lines of ``pieces`` that more than one of the CTAs behind a
        single access touch (their tiles merged into one rectangle), shared as if touched by several at once.
        ``together``: the CTAs ``who`` names were launched at the kernel's start, at once with every CTA of its first
        wave: their loads of a line another of them is filling at the same instant merge in its fill (see below)."""
        st, replicas, capacity = self.stats, self.replicas, self.capacity
        lines = self.held if self.pinned is not None and head[0] == self.pinned else self.lines
        ready = now
        pending = None  # (when, bytes up to it) of pieces whose present bytes a CTA's pass is still bringing in
        read, write = kind == READ, kind == WRITE
        moved = hits = missed = 0
        # Lookups (what reaches the L2 slices): the loads of CTAs in lockstep cost ``group`` lookups a byte
        # (:meth:`lockstep_lookups`: the pair probe's shares, less in phase after the first wave), and a load that
        # finds its line's fill still on its way merges in it, ``inflight`` lookups a CTA (the LRC probe: k >= 8 CTAs
        # reading one cold buffer together make about k/4 lookups; 2 or 4 make one). On its way: asked for before
        # now, or by other CTAs (a convoy's followers, stepping with the CTA they wait for), or at once by CTAs of the
        # first wave
        shares = self._shares.get((mult, together, lockstep))
        if shares is None:  # a byte's lookups: merged in a fill on its way, or not (the same few keys every step)
            group = self.lockstep_lookups(mult, together) if lockstep else mult
            shares = self._shares[(mult, together, lockstep)] = (group, min(mult * self.inflight, group))
        group, merged = shares
        look = 0.0
        tensor, part = head  # a line's key, (tensor, slice, line_row, line_col), built in one tuple
        fill = None  # the placement's link's reserve, looked up at the first miss
        for a, b, nbytes, line_bytes, lo, hi in pieces:
            total = nbytes * mult
            moved += nbytes
            if line_bytes > capacity:
                r = self._bypass(placement, kind, nbytes, mult, now)
                if read:
                    lone += total / mult
                    look += nbytes * group
                if r > ready:
                    ready = r
                continue
            key = (tensor, part, a, b)
            many = mult > 1 or (several is not None and (a, b) in several)
            line = lines.get(key)
            if line is None:  # a new line: its first piece present, in the copies the rule below gives a line with no bytes
                known = lo is not None
                line = lines[key] = [nbytes, 0, now, [(lo, hi)] if known else None, [] if known else None, who,
                                     replicas if many or write else self.private, 0.0, [] if known else None, now, who]
                grow, flight = nbytes, False
            else:
                lines.move_to_end(key)
                if line[0] == line_bytes and not write and (
                        (read and (line[6] >= replicas or (not many and line[5] == who)))
                        or (line[1] == line_bytes and line[6] >= replicas and placement != HOST)):
                    # a hit on a whole line that keeps its copies (an atomic's line already all dirty):
                    # nothing grows, nothing is evicted
                    hits += total
                    if read:
                        if line[2] > now and (together or now > line[9] or who != line[10]):
                            look += nbytes * merged  # they merge in the fill on its way
                        else:
                            look += nbytes * group
                    if line[2] > ready:
                        ready = line[2]
                    if line[7] > now:
                        at = _usable_at(line, lo, hi, now)
                        if at > now:
                            if pending is None:
                                pending = []
                            pending.append((at, moved))
                    continue
                if (write and line[1] == line_bytes and line[0] == line_bytes and placement != HOST
                        and (line[6] >= replicas or (not many and line[5] == who))
                        and (lo is not None or (line[3] is None and line[4] is None))):
                    # a store to a whole line already dirty that keeps its copies (a spill frame stored again
                    # every pass): nothing grows, nothing is evicted, no place becomes unknown
                    continue
                # a line read by others than its first user, or allocated by a store, is held in every partition:
                # the writer's and the home's (the l2 probe's dirty plateau, 43 % of the L2 on the H100 and the
                # H200); a line its first user read in keeps its copies when that user stores to it (rewrite probe)
                if line[6] < replicas and (many or line[5] != who or (write and not line[0])):
                    self.used += line[0] * (replicas - line[6])
                    line[6] = replicas
                # a fill of it on its way (before this access asks for one)
                flight = line[2] > now and (together or now > line[9] or who != line[10])
                grow = _cover(line, 0, 3, lo, hi, nbytes, line_bytes)
            if not write:
                hits += total - grow
                if read:
                    lone += grow / mult
                if grow:
                    missed += grow
                    if fill is None:
                        fill = self.memory[placement].reserve
                    r = fill(now, grow)
                    if r > line[2]:
                        line[2] = r
                    line[9], line[10] = now, who
                    if filled is not None:
                        filled.append((line, moved - nbytes, moved, lo, hi))
                if line[2] > ready:
                    ready = line[2]
                if grow < nbytes and line[7] > now:  # bytes another CTA's pass is still bringing in
                    at = _usable_at(line, lo, hi, now)
                    if at > now:
                        if pending is None:
                            pending = []
                        pending.append((at, moved))
                if read:  # the bytes it fills, then the rest: present, or in a fill on its way
                    look += grow * group + (nbytes - grow) * (merged if flight else group)
            self.used += grow * line[6]
            if not read and placement == HOST:  # host memory is written through: posted over the host link
                self._write(placement, now, total)
                st.writeback_bytes[placement] += total
            elif not read:
                added = _cover(line, 1, 4, lo, hi, nbytes, line_bytes)
                if added:
                    self.dirty += added
                    if key not in self._dirty_at:
                        self._dirty_at[key] = len(self.dirty_keys)
                        self.dirty_keys.append(key)
            if self.used > capacity or self.dirty > self.dirty_limit:
                self._evict(now, keep=key)
        if missed:
            st.miss_bytes += missed
            st.fill_bytes[placement] += missed
        if read:
            st.read_bytes += moved * mult
        else:
            st.write_bytes += moved * mult
        st.lookup_bytes += look if read else moved * mult
        st.hit_bytes += hits
        return ready, lone, pending

    def lockstep_lookups(self, mult: int, together: bool) -> float:
        """Lookups a byte that ``mult`` CTAs in lockstep load together costs: the pair probe's share a CTA for a pair
        and for a group of its largest size, between them by log2 of the group's size (beyond: the group's), of the
        first wave or of CTAs launched together later (which the hardware has not kept in phase); without those
        shares, one lookup per ``coalesce`` CTAs."""
        if mult <= 1:
            return float(mult)
        if self.lockstep is None:
            return float(-(-mult // self.coalesce))
        got = self._groups.get((mult, together))
        if got is None:
            pair, group, later_pair, later_group, size = self.lockstep
            lo, hi = (pair, group) if together else (later_pair, later_group)
            share = lo + (hi - lo) * min(1.0, math.log2(mult / 2) / math.log2(size / 2))
            got = self._groups[(mult, together)] = mult * share
        return got

    @staticmethod
    def usable(filled: list, start: float, end: float, reverse: bool = False) -> None:
        """Lines a CTA filled over ``[start, end]``, as ``(line, share of the way at the piece's start,
        share at its end, lo, hi)``, hold the bytes it filled from when its passes reached them: a CTA
        reading them earlier waits as long, since its load merges with the fill in flight and gets the
        same bytes at the same time (a convoy behind a CTA that misses moves at its pace). Where the
        fill's place in the line is known only readers of those bytes wait, each byte until the filler
        reached it (its passes taken at an even pace over the piece, from its last byte down where the
        loop runs in ``reverse``): bytes filled earlier are there."""
        span = end - start
        for line, share0, share1, lo, hi in filled:
            if reverse:  # the pass meets the access's pieces, and each piece's bytes, last first
                share0, share1 = 1.0 - share1, 1.0 - share0
            first, last = start + span * share0, start + span * share1
            if last > line[7]:
                line[7] = last
            if lo is not None and line[8] is not None:
                line[8].append((lo, hi, last, first) if reverse else (lo, hi, first, last))

    def spill(self, reloads: float, spills: float) -> None:
        """Count registers a kernel spilled to local memory and reloaded: L2 traffic that hits (the
        spill space of the resident CTAs is small and rewritten before it could be evicted)."""
        self.count_spill(*spill_counts(reloads, spills))

    def count_spill(self, reloads: int, spills: int, both: int) -> None:
        """:meth:`spill` of bytes already counted out by :func:`spill_counts` (a step served again and again)."""
        st = self.stats
        st.read_bytes += reloads
        st.write_bytes += spills
        st.lookup_bytes += both
        st.hit_bytes += reloads

    def flush(self, now: float, invalidate: bool, timed: bool = True) -> int:
        """Write every dirty byte back (and drop all lines if ``invalidate``); return bytes written.

        ``timed=False`` writes back outside simulated time (between profiled kernels).
        """
        written = 0
        for key in list(self.dirty_keys):
            written += self._clean(key, self._line(key), now, timed)
        if invalidate:
            self.lines.clear()
            self.held.clear()
            self.used = 0
        return written

    def hold_writes(self) -> None:
        """Hold the write-backs of the accesses that follow until :meth:`post`: they are served together."""
        self.posted = []

    def post(self, now: float) -> None:
        """Queue the held write-backs on their memory links, after the loads served with them: a memory
        controller serves reads first and drains its posted writes behind them, so bytes written back to make
        room for a fill never delay the loads issued together with it (on a FIFO link, a step's loads issued
        after an eviction waited for its write-back). Where the engine defers them (:attr:`defer`), they wait
        for every load issued at this instant, whoever issued it (:meth:`drain`): CTAs launched together and
        run one by one then queue their loads ahead of each other's write-backs, as one cohort of them does."""
        posted, self.posted = self.posted, None
        if not posted:
            return
        if self.defer is not None:
            if not self.instant:  # the first write-back of this instant: drained once its loads are all issued
                self.defer(now)
            self.instant += posted
            return
        self._post_now(now, posted)

    def drain(self, now: float) -> None:
        """Queue the write-backs deferred at ``now`` (:meth:`post`) on their memory links."""
        posted, self.instant = self.instant, []
        self._post_now(now, posted)

    def _post_now(self, now: float, posted: list) -> None:
        for placement in sorted({p for p, _ in posted}):  # each link's in the order they were held
            self.memory[placement].reserve_each(now, [n for p, n in posted if p == placement], write=True)

    def _write(self, placement: str, now: float, nbytes: int) -> None:
        if self.posted is None:
            self.memory[placement].reserve(now, nbytes, write=True)
        else:
            self.posted.append((placement, nbytes))

    def _bypass(self, placement, kind, nbytes, mult, now) -> float:
        st = self.stats
        total = nbytes * mult
        if kind == WRITE:
            self._write(placement, now, total)
            st.writeback_bytes[placement] += total
            return now
        finish = self.memory[placement].reserve(now, total)
        st.miss_bytes += total
        st.fill_bytes[placement] += total
        if kind != READ:
            st.writeback_bytes[placement] += total
        return finish

    def _clean(self, key, line, now, timed: bool = True) -> int:
        nbytes = line[1]
        if nbytes:
            placement = self.placements[key[0]]
            if timed:
                self._write(placement, now, nbytes)
                self.stats.writeback_bytes[placement] += nbytes
            self.dirty -= nbytes
            line[1] = 0
            if line[4] is not None:
                line[4] = []
        at = self._dirty_at.pop(key, None)
        if at is not None:  # out of the list: the last key takes its place
            last = self.dirty_keys.pop()
            if at < len(self.dirty_keys):
                self.dirty_keys[at] = last
                self._dirty_at[last] = at
        return nbytes

    def pin(self, tensor: int) -> None:
        """Make ``tensor``'s lines (local memory) the last victims until :meth:`unpin` (those already cached too)."""
        self.unpin()
        self.pinned = tensor
        for key in [key for key in self.lines if key[0] == tensor]:
            self.held[key] = self.lines.pop(key)

    def unpin(self) -> None:
        """Pinned lines become ordinary ones again, the most recently used, in their own order."""
        self.lines.update(self.held)
        self.held.clear()
        self.pinned = None

    def _line(self, key) -> list:
        line = self.held.get(key)
        return self.lines[key] if line is None else line

    def _evict(self, now: float, keep) -> None:
        ordinary, held, capacity = self.lines, self.held, self.capacity
        used = self.used  # kept here while lines go (cleaning a line does not read it)
        while used > capacity:
            # the least recently used line other than the one being served, pinned lines only once none else is left
            lines = ordinary if len(ordinary) > 1 or (ordinary and keep not in ordinary) else held
            key, line = lines.popitem(last=False)
            if key == keep:  # never evict the line being served
                lines[key] = line
                if len(lines) == 1:  # nothing else to evict
                    break
                key, line = lines.popitem(last=False)
            if line[1]:
                self._clean(key, line, now)
            used -= line[0] * line[6]
        self.used = used
        if self.dirty > self.dirty_limit:
            keys, bits = self.dirty_keys, self._draw.getrandbits
            while self.dirty > self.dirty_limit:
                # a dirty line drawn at random: ``randrange(len(keys))``'s draw, inlined (the same sequence)
                n = len(keys)
                k = n.bit_length()
                r = bits(k)
                while r >= n:
                    r = bits(k)
                key = keys[r]
                self._clean(key, self._line(key), now)


def spill_counts(reloads: float, spills: float) -> tuple:
    """Bytes :meth:`L2Cache.spill` counts for ``reloads`` and ``spills``: reloaded, spilled, and both looked up."""
    return int(reloads), int(spills), int(reloads + spills)


def _usable_at(line: list, lo, hi, now: float) -> float:
    """When the bytes ``[lo, hi)`` of ``line`` are there for a reader merging with the fills in flight:
    in each fill that covers any of them, when the filler reached the last of them (a fill's span is
    ``(a, b, time at a, time at b)``, its pace even in between); the line's latest where places are
    not known. Fills whose bytes were all there by ``now`` hold no reader from now on: they are dropped."""
    spans = line[8]
    if lo is None or spans is None:
        return line[7]
    at, live = 0.0, []
    for span in spans:
        a, b, ta, tb = span
        if ta <= now and tb <= now:
            continue
        live.append(span)
        if a < hi and b > lo:  # even pace: the later of the overlap's two ends
            pace = (tb - ta) / (b - a)
            t = ta + pace * ((min(hi, b) if pace >= 0 else max(lo, a)) - a)
            if t > at:
                at = t
    if len(live) < len(spans):
        line[8] = live
    return at


def _cover(line: list, count: int, spans: int, lo, hi, nbytes: int, line_bytes: int) -> int:
    """Mark ``[lo, hi)`` (or ``nbytes`` of unknown place) as covered in ``line``; return the bytes newly covered."""
    ivs = line[spans]
    if lo is None or ivs is None:
        line[spans] = None  # place no longer known: count bytes from here on
        added = min(nbytes, line_bytes - line[count])
    elif not ivs or lo >= ivs[-1][0]:  # at or after the last span (a line streamed in order): only it can meet
        a, b = ivs[-1] if ivs else (0, -1)
        if lo > b:
            ivs.append((lo, hi))
            added = nbytes
        else:
            added = nbytes - max(0, min(b, hi) - lo)
            ivs[-1] = (a, max(b, hi))
    else:
        k = bisect.bisect_right(ivs, (lo, math.inf)) - 1
        if k >= 0 and ivs[k][1] >= hi:  # inside one span (spans never touch, so no other meets it): nothing merges
            added = nbytes - (hi - lo)
            line[count] += added
            return added
        covered, merged = 0, []
        for a, b in ivs:
            if b < lo or a > hi:
                merged.append((a, b))
            else:
                covered += max(0, min(b, hi) - max(a, lo))
                lo, hi = min(a, lo), max(b, hi)
        merged.append((lo, hi))
        merged.sort()
        line[spans] = merged
        added = nbytes - covered
    line[count] += added
    return added
