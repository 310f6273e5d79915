"""ravend's two kinds of failure of an output, named for what the caller does next.

Every layer that talks to a store or a broker (the sinks, the per-engine layer ``ravend.db``,
maintenance, the repeater, ``ravenctl``) sorts what went wrong into one of these, so that the
outbox knows whether to keep the data and retry, or to set it aside for good. They live here,
under every layer, so that ``ravend.db`` can raise them without importing the sinks.
"""

from __future__ import annotations


class SinkUnavailable(Exception):
    """The sink cannot take writes right now (server down, disk full); retry with backoff."""


class ReadingRejected(Exception):
    """The sink refuses this data for good (a constraint, a value out of range)."""
