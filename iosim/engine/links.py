"""Bandwidth-limited servers: HBM, the L2's SM-facing bandwidth, and the host link.

A link serves requests first-come first-served at a fixed rate, which is how a saturated memory
system behaves in aggregate: everything in flight shares the bandwidth, and a request waits for
the bytes queued before it. It is the behaviour of a ``simpy.Resource(capacity=1)`` held for
``bytes / bandwidth`` seconds per request, computed in closed form (one ``busy_until`` clock instead
of three SimPy events a request), because the engine issues hundreds of thousands of requests.
The L2 queues the write-backs of a step's evictions behind the step's loads (``L2Cache.post``).
"""
from __future__ import annotations

from array import array

import numpy as np


class Link:
    """A FIFO server of ``bandwidth`` bytes/s that records what it moved and when.

    Where reads alone stream faster (``read_bandwidth``), a read byte takes 1/read_bandwidth seconds
    and a written byte 2/bandwidth − 1/read_bandwidth, so that equal reads and writes (a copy, how
    ``bandwidth`` is measured) still go at ``bandwidth``: the writes carry the bus turnarounds.
    """

    def __init__(self, name: str, bandwidth: float, write_bandwidth: float | None = None,
                 read_bandwidth: float | None = None):
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
        # finish time and bytes of every request, as two flat arrays (16 bytes a request, not a tuple's ~120)
        self._finish = array("d")
        self._bytes = array("q")

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
        self._finish.append(finish)
        self._bytes.append(int(nbytes))
        return finish

    @property
    def log(self) -> list[tuple[float, int]]:
        """``(finish time, bytes)`` of every request, in the order they were queued."""
        return list(zip(self._finish, self._bytes))

    def histogram(self, edges: np.ndarray) -> np.ndarray:
        """Bytes whose request finished in each bin of ``edges`` (later ones count in the last bin)."""
        if not self._finish:
            return np.zeros(len(edges) - 1)
        t = np.minimum(np.frombuffer(self._finish, dtype=float), edges[-1])
        hist, _ = np.histogram(t, bins=edges, weights=np.frombuffer(self._bytes, dtype=np.int64))
        return hist

    @property
    def drained_at(self) -> float:
        """When every byte queued so far is through, writes included."""
        return max(self.busy_until, self.write_busy_until)
