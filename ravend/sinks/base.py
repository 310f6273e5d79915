"""The contract every store and publisher implements, and the values that flow into them.

A sink opens, writes batches idempotently (keyed by reading identity), reports problems as
``SinkUnavailable`` (retry later: the outbox keeps the data) or ``ReadingRejected`` (this data
can never be written: quarantine it), and closes. ``service.py`` only ever talks to this.
"""

from __future__ import annotations

import abc
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

# The error kinds live under every layer (ravend.db raises them too); re-exported here, where
# the sink contract names them.
from ravend.errors import ReadingRejected as ReadingRejected
from ravend.errors import SinkUnavailable as SinkUnavailable

if TYPE_CHECKING:  # imported where used: ravenctl status imports this module
    from ravend.protocol.model import Reading


@dataclass(frozen=True, slots=True)
class StateItem:
    """The latest copy of a non-reading fragment (DeviceInfo, ConnectionStatus, ...)."""

    device_mac: str
    meter_mac: str
    tag: str
    received_at: float
    body: dict[str, Any]


class Sink(abc.ABC):
    """One output. Methods are called from that sink's own worker thread only."""

    name: str = "sink"

    @abc.abstractmethod
    def open(self) -> None:
        """Connect and prepare (migrations, subscriptions). Raise SinkUnavailable to retry."""

    @abc.abstractmethod
    def write(self, readings: Sequence[Reading], states: Sequence[StateItem]) -> None:
        """Store a batch durably and idempotently; return only once it is safe."""

    @abc.abstractmethod
    def close(self) -> None:
        """Release connections; must not raise."""

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name}>"
