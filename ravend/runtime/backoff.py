"""The one capped exponential backoff of every retry loop.

The device's reopen, each sink worker's replay, the repeater's and the MongoDB ingest's store
and broker, the MQTT commands' broker and the supervisor's restarts all wait the same way: a
minimum pause, twice as long after each failure up to a maximum, the minimum again after a
success. One class, so that the pace is the same everywhere and tested once.
"""

from __future__ import annotations


class Backoff:
    """``delay`` is the pause now due: ``minimum`` at first and after ``reset()`` (a success).

    Two ways on, for the two kinds of loop:

    - ``next()`` gives the pause now due and makes the next one twice as long: loops that wait
      the same after any failure (the device, MQTT commands, the supervisor);
    - ``longer()`` makes the pause twice as long, then gives it: loops that log a failure that
      differs from the last one and wait ``delay`` again, and grow the pause only while the same
      failure repeats (sink workers, the repeater, the MongoDB ingest).
    """

    def __init__(self, minimum: float, maximum: float, factor: float = 2.0) -> None:
        if minimum <= 0 or maximum < minimum or factor < 1:
            raise ValueError(f"bad backoff {minimum}..{maximum} x{factor}")
        self.minimum, self.maximum, self.factor = minimum, maximum, factor
        self._delay = minimum

    def __repr__(self) -> str:
        return f"Backoff({self.minimum:g}..{self.maximum:g}s, now {self._delay:g}s)"

    @property
    def delay(self) -> float:
        """The pause now due."""
        return self._delay

    def next(self) -> float:
        """The pause now due; the next one is ``factor`` times as long, up to ``maximum``."""
        delay = self._delay
        self._delay = min(self.maximum, self._delay * self.factor)
        return delay

    def longer(self) -> float:
        """The pause made ``factor`` times as long (up to ``maximum``), and given."""
        self._delay = min(self.maximum, self._delay * self.factor)
        return self._delay

    def reset(self) -> None:
        """A success: the next failure waits ``minimum`` again."""
        self._delay = self.minimum
