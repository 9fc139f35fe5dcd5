"""Bandwidth-limited servers: HBM, the L2's SM-facing bandwidth, and the host link.

A link serves requests first-come first-served at a fixed rate, which is how a saturated memory
system behaves in aggregate: everything in flight shares the bandwidth, and a request waits for
the bytes queued before it. It is the behaviour of a ``simpy.Resource(capacity=1)`` held for
``bytes / bandwidth`` seconds per request, computed in closed form (one ``busy_until`` clock instead
of three SimPy events a request), because the engine issues hundreds of thousands of requests.
The L2 queues the write-backs of a step's evictions behind the step's loads (``L2Cache.post``).
What a link moved over time is kept pre-binned (:data:`FINE_BINS` bins by finish time, twice as wide
whenever a request finishes past the last), so a run's memory does not grow with its requests; the
exact log of every request is kept only when asked for (``log=True``: the tests and debugging).
"""
from __future__ import annotations

from array import array

import numpy as np

FINE_BINS = 4096  # bins of the pre-binned timeline; a bin is FIRST_BIN_S wide, doubled as finish times grow
FIRST_BIN_S = 2.0 ** -40  # a power of two, so bins stay aligned with edges at powers of two and their multiples


class Link:
    """A FIFO server of ``bandwidth`` bytes/s that records what it moved and when.

    Where reads alone stream faster (``read_bandwidth``), a read byte takes 1/read_bandwidth seconds
    and a written byte 2/bandwidth − 1/read_bandwidth, so that equal reads and writes (a copy, how
    ``bandwidth`` is measured) still go at ``bandwidth``: the writes carry the bus turnarounds.
    """

    def __init__(self, name: str, bandwidth: float, write_bandwidth: float | None = None,
                 read_bandwidth: float | None = None, log: bool = False):
        for what, rate in (("bandwidth", bandwidth), ("write_bandwidth", write_bandwidth),
                           ("read_bandwidth", read_bandwidth)):
            if rate is not None and rate <= 0:
                raise ValueError(f"{name}: {what}(={rate}) must be > 0")
        self.name = name
        self.bandwidth = bandwidth
        faster = read_bandwidth is not None and read_bandwidth > bandwidth
        self.read_rate = read_bandwidth if faster else bandwidth  # bytes/s each kind is served at
        self.write_rate = 1.0 / (2.0 / bandwidth - 1.0 / read_bandwidth) if faster else bandwidth
        # Writes alone may go slower than reads and writes together: a second clock for their bytes.
        self.write_bandwidth = write_bandwidth if write_bandwidth and write_bandwidth < bandwidth else None
        self.write_busy_until = 0.0
        self.busy_until = 0.0
        self.busy_time = 0.0
        self.moved = 0
        # bytes by finish time, bin i holding [i, i + 1) × width: the timeline, in memory that does not grow
        self._bins = [0] * FINE_BINS
        self._width = FIRST_BIN_S
        self._per_width = 1.0 / FIRST_BIN_S
        # with ``log``: finish time and bytes of every request, as two flat arrays (16 bytes a request)
        self._finish = array("d") if log else None
        self._bytes = array("q") if log else None

    def reserve(self, now: float, nbytes: int, write: bool = False) -> float:
        """Queue ``nbytes`` at time ``now`` (``write``: bytes towards the memory); return when the last byte is through."""
        if nbytes <= 0:
            return now
        service = nbytes / (self.write_rate if write else self.read_rate)
        busy = self.busy_until
        finish = (now if now > busy else busy) + service
        self.busy_until = finish
        if write and self.write_bandwidth:
            w = self.write_busy_until
            w = (now if now > w else w) + nbytes / self.write_bandwidth
            self.write_busy_until = w
            if w > finish:
                finish = w
        self.busy_time += service
        self.moved += nbytes
        i = int(finish * self._per_width)
        if i >= FINE_BINS:
            i = self._widen(finish)
        self._bins[i] += nbytes
        if self._finish is not None:
            self._finish.append(finish)
            self._bytes.append(int(nbytes))
        return finish

    def reserve_each(self, now: float, sizes, write: bool = False) -> None:
        """:meth:`reserve` each of ``sizes`` in turn at ``now``, as that many calls would (the same arithmetic, in
        the same order, so the same clocks and timeline): a step's write-backs go on the link in one call."""
        rate = self.write_rate if write else self.read_rate
        second = self.write_bandwidth if write else None
        busy, w, bins, per_width, log = self.busy_until, self.write_busy_until, self._bins, self._per_width, self._finish
        for nbytes in sizes:
            if nbytes <= 0:
                continue
            service = nbytes / rate
            finish = (now if now > busy else busy) + service
            busy = finish
            if second:
                w = (now if now > w else w) + nbytes / second
                if w > finish:
                    finish = w
            self.busy_time += service
            self.moved += nbytes
            i = int(finish * per_width)
            if i >= FINE_BINS:
                i = self._widen(finish)
                per_width = self._per_width
            bins[i] += nbytes
            if log is not None:
                log.append(finish)
                self._bytes.append(int(nbytes))
        self.busy_until, self.write_busy_until = busy, w

    def _widen(self, finish: float) -> int:
        """Double the bins' width, merging them in pairs, until ``finish`` falls in one; return its bin."""
        bins = self._bins
        while True:
            self._width *= 2.0
            self._per_width = 1.0 / self._width
            bins[:] = [bins[k] + bins[k + 1] for k in range(0, FINE_BINS, 2)] + [0] * (FINE_BINS // 2)
            i = int(finish * self._per_width)
            if i < FINE_BINS:
                return i

    @property
    def log(self) -> list[tuple[float, int]]:
        """``(finish time, bytes)`` of every request, in the order they were queued (a link made with ``log=True``)."""
        if self._finish is None:
            raise ValueError(f"{self.name}: the link keeps no log of its requests (make it with log=True)")
        return list(zip(self._finish, self._bytes))

    def histogram(self, edges: np.ndarray) -> np.ndarray:
        """Bytes whose request finished in each bin of ``edges`` (later ones count in the last bin), from the
        pre-binned timeline: exact where ``edges`` fall on its bins' edges, else a bin's bytes are shared out
        evenly over its width. Every byte the link moved is in one bin or another."""
        bins = np.asarray(self._bins, dtype=float)
        if not bins.any():
            return np.zeros(len(edges) - 1)
        cumulative = np.concatenate(([0.0], np.cumsum(bins)))
        at = np.interp(np.asarray(edges, dtype=float), np.arange(FINE_BINS + 1) * self._width, cumulative)
        hist = np.diff(at)
        hist[-1] += cumulative[-1] - at[-1]  # finished after the last edge
        return hist

    @property
    def drained_at(self) -> float:
        """When every byte queued so far is through, writes included."""
        return max(self.busy_until, self.write_busy_until)
