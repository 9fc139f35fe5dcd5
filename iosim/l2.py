"""The L2 cache shared by all SMs: LRU lines, write-allocate, write-back, fills that others wait on.

Policy, chosen to match what Nsight Compute's ``dram__bytes`` counters see on NVIDIA GPUs:
- reads that miss fill the missing bytes from the line's backing memory (HBM, or host memory over
  the host link); a read that finds a fill still in flight waits for it (an MSHR merge), so CTAs that
  stream the same K/V tile together cost one DRAM read;
- writes allocate without fetching (whole tiles are written) and leave the bytes dirty; dirty bytes
  reach DRAM only when their line is evicted, when more than ``dirty_limit`` bytes are dirty (the
  oldest dirty line is cleaned), or at an explicit ``flush`` — so output still in L2 when a kernel
  ends is not counted in that kernel's DRAM writes, as on the hardware;
- atomics are read-modify-write at L2: a missing line is filled first, then dirtied;
- a line larger than the whole cache bypasses it: every access goes to memory (with a zero-sized
  L2 this reproduces the FlashAttention paper's HBM access counts).
Lines and their geometry are described in :mod:`iosim.layout`.
"""
from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass, field

READ, WRITE, ATOMIC = 0, 1, 2


@dataclass
class L2Stats:
    """Byte counts at the L2 and below it, by the level that served them."""

    read_bytes: int = 0  # requested by SMs (loads + atomics), summed over every CTA that asked
    write_bytes: int = 0  # stored by SMs (stores + atomics)
    hit_bytes: int = 0
    miss_bytes: int = 0
    fill_bytes: dict = field(default_factory=lambda: {"hbm": 0, "host": 0})
    writeback_bytes: dict = field(default_factory=lambda: {"hbm": 0, "host": 0})


class L2Cache:
    """LRU over lines ``(tensor index, slice, line_row, line_col)``; a line is ``[present, dirty, ready_at]``.

    ``memory`` maps a placement (``"hbm"``/``"host"``) to the link that fills and drains it; a link has
    ``reserve(now, nbytes) -> finish_time``. Times are seconds of simulated time.
    """

    def __init__(self, capacity: int, memory: dict, placements: list, dirty_limit: int | None = None):
        if capacity < 0:
            raise ValueError(f"capacity(={capacity}) must be >= 0")
        self.capacity = capacity
        self.memory = memory
        self.placements = placements  # tensor index -> "hbm" | "host"
        self.dirty_limit = capacity if dirty_limit is None else min(dirty_limit, capacity)
        self.lines: OrderedDict = OrderedDict()
        self.dirty_order: OrderedDict = OrderedDict()  # lines with dirty bytes, oldest first
        self.used = 0
        self.dirty = 0
        self.stats = L2Stats()

    def access(self, key, placement: str, kind: int, nbytes: int, line_bytes: int, mult: int, now: float) -> float:
        """Serve ``mult`` CTAs touching ``nbytes`` of one line at once; return when the data is there."""
        st = self.stats
        if kind != WRITE:
            st.read_bytes += nbytes * mult
        if kind != READ:
            st.write_bytes += nbytes * mult
        if line_bytes > self.capacity:
            return self._bypass(placement, kind, nbytes, mult, now)
        line = self.lines.get(key)
        if line is None:
            line = self.lines[key] = [0, 0, now]
        else:
            self.lines.move_to_end(key)
        ready = now
        if kind == WRITE:
            grow = min(nbytes, line_bytes - line[0])
        else:
            missing = min(nbytes, line_bytes - line[0])
            hit = nbytes * mult - missing
            st.hit_bytes += hit
            st.miss_bytes += missing
            if missing:
                line[2] = max(line[2], self.memory[placement].reserve(now, missing))
                st.fill_bytes[placement] += missing
            grow = missing
            ready = max(now, line[2])
        line[0] += grow
        self.used += grow
        if kind != READ:
            self._dirty(key, line, min(nbytes, line_bytes - line[1]))
        self._evict(now, keep=key)
        return ready

    def flush(self, now: float, invalidate: bool, timed: bool = True) -> int:
        """Write every dirty byte back (and drop all lines if ``invalidate``); return bytes written.

        ``timed=False`` writes back outside simulated time (between profiled kernels).
        """
        written = 0
        for key in list(self.dirty_order):
            written += self._clean(key, self.lines[key], now, timed)
        if invalidate:
            self.lines.clear()
            self.used = 0
        return written

    def _bypass(self, placement, kind, nbytes, mult, now) -> float:
        st = self.stats
        total = nbytes * mult
        link = self.memory[placement]
        finish = link.reserve(now, total)
        if kind != WRITE:
            st.miss_bytes += total
            st.fill_bytes[placement] += total
        if kind != READ:
            st.writeback_bytes[placement] += total
        return finish if kind != WRITE else now

    def _dirty(self, key, line, nbytes: int) -> None:
        if nbytes <= 0:
            return
        line[1] += nbytes
        self.dirty += nbytes
        if key not in self.dirty_order:
            self.dirty_order[key] = True

    def _clean(self, key, line, now, timed: bool = True) -> int:
        nbytes = line[1]
        if nbytes:
            placement = self.placements[key[0]]
            if timed:
                self.memory[placement].reserve(now, nbytes)
                self.stats.writeback_bytes[placement] += nbytes
            self.dirty -= nbytes
            line[1] = 0
        self.dirty_order.pop(key, None)
        return nbytes

    def _evict(self, now: float, keep) -> None:
        while self.used > self.capacity:
            key, line = next(iter(self.lines.items()))
            if key == keep:  # never evict the line being served
                self.lines.move_to_end(key)
                key, line = next(iter(self.lines.items()))
            self._clean(key, line, now)
            del self.lines[key]
            self.used -= line[0]
        while self.dirty > self.dirty_limit:
            key = next(iter(self.dirty_order))
            self._clean(key, self.lines[key], now)
