"""Whether a remote end (a broker, a store, a sink's server) is up, and the pace of the retries
while it is not: one account of every retry loop that logs an outage once.

The sink workers, the repeater and the MongoDB ingest keep the same bookkeeping: a failure is
worth an ERROR line when it is news (the first since the last success, or another error than
the last one), and a failure repeating the last one only makes the next pause longer; the first
success after a failure is worth one INFO line and brings the pause back to its minimum. What
the lines say is each caller's; when to say them, and the backoff, are here, so that the three
cannot drift apart.
"""

from __future__ import annotations

from typing import Protocol

from ravend.runtime.backoff import Backoff


class UpState(Protocol):
    """Where the state is kept: the caller's stats, which status lines, health and metrics
    read. ``last_error`` is "" while up and before any failure."""

    up: bool
    last_error: str


class Outage:
    """Notes failures and successes in ``state`` and paces the retries with ``backoff``.

    ``failed`` and ``recovered`` return whether the event is worth a line, which the caller
    writes in its own words."""

    def __init__(self, state: UpState, backoff: Backoff) -> None:
        self.state = state
        self.backoff = backoff

    def __repr__(self) -> str:
        state = self.state
        return f"Outage(up={state.up}, last_error={state.last_error!r}, {self.backoff!r})"

    @property
    def delay(self) -> float:
        """The pause due before the next try."""
        return self.backoff.delay

    def failed(self, error: str) -> bool:
        """A failure with ``error``; True when it is news (log it at ERROR). A new failure is
        retried at the pace reached so far; the same one again makes the pause longer."""
        state = self.state
        news = state.up or error != state.last_error
        if not news:
            self.backoff.longer()
        state.up = False
        state.last_error = error
        return news

    def recovered(self) -> bool:
        """A success; True when it ends a failure (log it at INFO), False while up already
        and for the first success of all. The next failure waits the minimum again."""
        state = self.state
        if state.up:
            return False
        back = bool(state.last_error)
        state.up = True
        state.last_error = ""
        self.backoff.reset()
        return back
