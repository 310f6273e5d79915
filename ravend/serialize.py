"""One serialised form of readings and fragments, for outboxes, quarantine, stores and messages.

The outbox and the quarantine keep readings as JSON until a sink takes them, the SQL stores keep a
fragment's body as JSON, and the control socket and the MQTT state messages show fragments: all
of them use these functions, so a reading written by one part reads back the same in another.
The form is durable (outbox rows outlive an upgrade): a field added later needs a default in
``reading_from_dict``.
"""

from __future__ import annotations

import dataclasses
import json
from decimal import Decimal
from enum import Enum
from typing import Any

from ravend.protocol.model import Kind, Reading


def reading_to_dict(r: Reading) -> dict[str, Any]:
    """A reading as JSON-ready data; decimals as text, so that no digit is lost."""
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
    """The reading ``reading_to_dict`` made, also from rows written by older versions."""
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
    """Compact JSON with sorted keys: the same data always gives the same text."""
    return json.dumps(obj, separators=(",", ":"), sort_keys=True)
