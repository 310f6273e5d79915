"""Chunked work sized to a time: how many rows or pages the next step of a purge may take.

A purge or a vacuum holds the store's write lock for one step at a time. Steps are sized to
``STEP_TARGET`` as they go: the cost of a row or a page varies a hundredfold with the size of
the database and the machine (moving a page to shrink a 750 MB SQLite file costs ~0.6 ms on a
PC, more on a Pi), and a writer that waits on SQLite's lock polls every 25-100 ms, so it must
find the lock free between two steps.
"""

from __future__ import annotations

#: How long one purge or vacuum step may hold the write lock (see the module docstring).
STEP_TARGET = 0.05


class Pacer:
    """The size of the next step, halved or doubled so that a step takes about STEP_TARGET."""

    def __init__(self, size: int, low: int, high: int, target: float = STEP_TARGET) -> None:
        self.low, self.high, self.target = low, max(low, high), target
        self.size = min(max(size, self.low), self.high)

    def took(self, seconds: float) -> None:
        if seconds > self.target * 1.5:
            self.size = max(self.low, self.size // 2)
        elif seconds < self.target / 3:
            self.size = min(self.high, self.size * 2)
