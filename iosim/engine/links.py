"""Bandwidth-limited servers: HBM, the L2's SM-facing bandwidth, and the host link.

A link serves requests first-come first-served at a fixed rate, which is how a saturated memory
system behaves in aggregate: everything in flight shares the bandwidth, and a request waits for
the bytes queued before it. It is the behaviour of a ``simpy.Resource(capacity=1)`` held for
``bytes / bandwidth`` seconds per request, computed in closed form (one ``busy_until`` clock instead
of three SimPy events a request), because the engine issues hundreds of thousands of requests.
"""
from __future__ import annotations


class Link:
    """A FIFO server of ``bandwidth`` bytes/s that records what it moved and when."""

    def __init__(self, name: str, bandwidth: float):
        if bandwidth <= 0:
            raise ValueError(f"{name}: bandwidth(={bandwidth}) must be > 0")
        self.name = name
        self.bandwidth = bandwidth
        self.busy_until = 0.0
        self.busy_time = 0.0
        self.moved = 0
        self.log: list[tuple[float, int]] = []  # (finish time, bytes) of every request

    def reserve(self, now: float, nbytes: int) -> float:
        """Queue ``nbytes`` at time ``now``; return when the last byte is through."""
        if nbytes <= 0:
            return now
        service = nbytes / self.bandwidth
        finish = max(now, self.busy_until) + service
        self.busy_until = finish
        self.busy_time += service
        self.moved += nbytes
        self.log.append((finish, nbytes))
        return finish
