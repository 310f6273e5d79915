"""The contract every store and publisher implements, and the values that flow into them.

A sink opens, writes batches idempotently (keyed by reading identity), reports problems as
``SinkUnavailable`` (retry later: the outbox keeps the data) or ``ReadingRejected`` (this data
can never be written: quarantine it), and closes. ``service.py`` only ever talks to this.
"""

from __future__ import annotations

import abc
import dataclasses
import json
from collections.abc import Sequence
from dataclasses import dataclass
from decimal import Decimal
from enum import Enum
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # imported where used: ravenctl status imports this module
    from ravend.protocol.model import Reading


class SinkUnavailable(Exception):
    """The sink cannot take writes right now (server down, disk full); retry with backoff."""


class ReadingRejected(Exception):
    """The sink refuses this data for good (a constraint, a value out of range)."""


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


# --- one serialised form for outboxes and messages --------------------------------------------


def reading_to_dict(r: Reading) -> dict[str, Any]:
    return {
        "meter_mac": r.meter_mac,
        "kind": r.kind.value,
        "meter_time": r.meter_time,
        "received_at": r.received_at,
        "raw": r.raw,
        "multiplier": r.multiplier,
        "divisor": r.divisor,
        "value": str(r.value),
        "unit": r.unit,
        "device_mac": r.device_mac,
        "scale": str(r.scale),
    }


def reading_from_dict(d: dict[str, Any]) -> Reading:
    from ravend.protocol.model import Kind, Reading

    return Reading(
        meter_mac=d["meter_mac"],
        kind=Kind(d["kind"]),
        meter_time=d["meter_time"],
        received_at=d["received_at"],
        raw=d["raw"],
        multiplier=d["multiplier"],
        divisor=d["divisor"],
        value=Decimal(d["value"]),
        unit=d["unit"],
        device_mac=d.get("device_mac", ""),
        scale=Decimal(d.get("scale", 1)),  # outbox rows written before scales: 1
    )


def _plain(value: Any) -> Any:
    if isinstance(value, Enum):
        return value.value
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, bytes):
        return value.decode("cp1252", "replace")
    if isinstance(value, tuple | list):
        return [_plain(v) for v in value]
    return value


def fragment_body(fragment: Any) -> dict[str, Any]:
    """A fragment dataclass as JSON-ready data (unknown fields included, raw bytes as text)."""
    return {f.name: _plain(getattr(fragment, f.name)) for f in dataclasses.fields(fragment)}


def dumps(obj: Any) -> str:
    return json.dumps(obj, separators=(",", ":"), sort_keys=True)
