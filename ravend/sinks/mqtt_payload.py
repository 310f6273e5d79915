"""Topics and JSON payloads of ravend's MQTT messages: pure builders and their parsers.

This is the documented wire format (doc/mqtt.md) that other programs consume, ravend's own Mongo
ingest among them; change it only together with ``SCHEMA_VERSION`` and the document.

A reading, on ``<prefix>/<meter_mac>/<kind>``::

    {"v": 1, "meter_mac": "0x00135003001234ab", "device_mac": "0xd8d5b9000000054e",
     "kind": "demand", "meter_time": "2023-11-14T22:13:20Z", "key_time": 1700000000,
     "received_at": "2023-11-14T22:13:20.512Z", "value": 1.234, "value_exact": "1.234",
     "unit": "kW", "raw": 1234, "multiplier": 1, "divisor": 1000, "scale": "1",
     "clock_flag": null}

``meter_time`` is null when the meter's clock was not set; ``key_time`` (Unix seconds) is then
the host's receive second. ``(meter_mac, kind, key_time)`` identifies the reading: a message
seen twice (a retry after an outage) carries the same key and the same values. ``value_exact``
is ``raw * multiplier / divisor * scale`` (0 counts as 1) as a plain decimal string without
trailing zeros; ``value`` is the same as a JSON number, for consumers that want a float.
``scale`` is the meter's ``[meter <MAC>] scale`` (a CT meter's ratio; "1" when none), as a
decimal string; raw, multiplier and divisor are as the meter sent them. A message without
``scale`` (ravend before 17) means 1.
``clock_flag`` is the SQL stores' column of that name: null, or why ``meter_time`` is not to be
trusted (``unset``, ``epoch``, ``ahead``, ``behind``); derived, so the parser ignores it.
"""

from __future__ import annotations

import calendar
import json
import time
from decimal import ROUND_FLOOR, Decimal, InvalidOperation
from typing import Any

from ravend.protocol.model import Kind, Reading
from ravend.sinks.base import StateItem

SCHEMA_VERSION = 1
ONLINE = b"online"
OFFLINE = b"offline"
#: Topic level standing for the device of a state fragment that names none (e.g. Warning).
NO_DEVICE = "unknown"

_MILLI = Decimal("0.001")


class PayloadError(ValueError):
    """A message that does not follow the documented schema; says which field and why."""


# --- topics ------------------------------------------------------------------------------------


def reading_topic(prefix: str, reading: Reading) -> str:
    return f"{prefix}/{reading.meter_mac}/{reading.kind.value}"


def parse_reading_topic(prefix: str, topic: str) -> tuple[str, Kind] | None:
    """(meter_mac, kind) of a reading topic under prefix, or None for any other topic."""
    head = prefix + "/"
    if not topic.startswith(head):
        return None
    parts = topic[len(head):].split("/")
    if len(parts) != 2 or not parts[0].startswith("0x"):
        return None
    try:
        return parts[0], Kind(parts[1])
    except ValueError:
        return None


def cost_topic(prefix: str, meter_mac: str) -> str:
    """A meter's running cost (``ravend.running_cost``): three levels, so ``<prefix>/+/+``
    still means readings and nothing else."""
    return f"{prefix}/{meter_mac}/cost/running"


def cost_payload(state: dict[str, Any]) -> bytes:
    return json.dumps(state, separators=(",", ":")).encode()


def state_topic(prefix: str, item: StateItem) -> str:
    return f"{prefix}/{item.device_mac or NO_DEVICE}/info/{item.tag}"


def status_topic(prefix: str, client_id: str) -> str:
    """Availability of one ravend process (its last will says offline)."""
    return f"{prefix}/ravend/{client_id}/status"


# --- times -------------------------------------------------------------------------------------


def iso_seconds(unix: int) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(unix))


def iso_millis(unix: float) -> str:
    """UTC with milliseconds, truncated (never rounded up into the next second)."""
    exact = Decimal(repr(unix)).quantize(_MILLI, rounding=ROUND_FLOOR)
    seconds = int(exact.to_integral_value(rounding=ROUND_FLOOR))
    millis = int((exact - seconds) * 1000)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds)) + f".{millis:03d}Z"


def _parse_iso(text: Any, field: str, *, millis: bool) -> float:
    if not isinstance(text, str) or not text.endswith("Z"):
        raise PayloadError(f"{field}: expected a UTC time ending in Z, got {text!r}")
    body = text[:-1]
    fraction = ""
    if millis:
        body, dot, fraction = body.partition(".")
        if not dot or len(fraction) != 3 or not fraction.isdigit():
            raise PayloadError(f"{field}: expected milliseconds (.sss), got {text!r}")
    try:
        seconds = calendar.timegm(time.strptime(body, "%Y-%m-%dT%H:%M:%S"))
    except ValueError:
        raise PayloadError(f"{field}: not an ISO 8601 time: {text!r}") from None
    return float(f"{seconds}.{fraction}") if millis else float(seconds)


# --- readings ----------------------------------------------------------------------------------


def exact_text(value: Decimal) -> str:
    """Plain decimal notation without trailing zeros: 1.5, 1234, -0.042 (never 1E+3)."""
    text = format(value, "f")  # never rounds (normalize() would, past 28 digits)
    if "." in text:
        text = text.rstrip("0").rstrip(".")
    return "0" if text in ("-0", "") else text


def reading_dict(r: Reading) -> dict[str, Any]:
    """The documented message as a dict, keys in documented order."""
    return {
        "v": SCHEMA_VERSION,
        "meter_mac": r.meter_mac,
        "device_mac": r.device_mac or None,
        "kind": r.kind.value,
        "meter_time": None if r.meter_time is None else iso_seconds(r.meter_time),
        "key_time": r.key_time,
        "received_at": iso_millis(r.received_at),
        "value": float(r.value),
        "value_exact": exact_text(r.value),
        "unit": r.unit,
        "raw": r.raw,
        "multiplier": r.multiplier,
        "divisor": r.divisor,
        "scale": exact_text(r.scale),
        "clock_flag": r.clock_flag,
    }


def reading_payload(r: Reading) -> bytes:
    return json.dumps(reading_dict(r), separators=(",", ":")).encode()


def _field(d: dict[str, Any], name: str, kind: type | tuple[type, ...],
           nullable: bool = False) -> Any:
    if name not in d:
        raise PayloadError(f"{name}: missing")
    value = d[name]
    if value is None and nullable:
        return None
    if isinstance(value, bool) or not isinstance(value, kind):
        raise PayloadError(f"{name}: expected {getattr(kind, '__name__', kind)}, got {value!r}")
    return value


def parse_reading(payload: bytes | str | dict[str, Any]) -> Reading:
    """The Reading a message carries; PayloadError names the bad field. Unknown keys are
    ignored (a newer ravend may add some without changing ``v``)."""
    if isinstance(payload, dict):
        d = payload
    else:
        try:
            d = json.loads(payload)
        except (ValueError, UnicodeDecodeError) as exc:
            raise PayloadError(f"not JSON: {exc}") from None
        if not isinstance(d, dict):
            raise PayloadError("not a JSON object")
    version = _field(d, "v", int)
    if version != SCHEMA_VERSION:
        raise PayloadError(f"v: schema version {version} is not supported (only 1)")
    meter_mac = _field(d, "meter_mac", str)
    device_mac = _field(d, "device_mac", str, nullable=True) or ""
    kind_text = _field(d, "kind", str)
    try:
        kind = Kind(kind_text)
    except ValueError:
        raise PayloadError(f"kind: unknown kind {kind_text!r}") from None
    meter_iso = _field(d, "meter_time", str, nullable=True)
    meter_time = None if meter_iso is None else int(_parse_iso(meter_iso, "meter_time",
                                                               millis=False))
    received_at = _parse_iso(_field(d, "received_at", str), "received_at", millis=True)
    key_time = _field(d, "key_time", int)
    expected = meter_time if meter_time is not None else int(received_at)
    if key_time != expected:
        raise PayloadError(f"key_time: {key_time} does not match the times ({expected})")
    _field(d, "value", (int, float))
    exact = _field(d, "value_exact", str)
    try:
        value = Decimal(exact)
    except InvalidOperation:
        raise PayloadError(f"value_exact: not a decimal number: {exact!r}") from None
    if not value.is_finite():
        raise PayloadError(f"value_exact: not a finite number: {exact!r}")
    scale = _decimal_field(d, "scale") if "scale" in d else Decimal(1)
    return Reading(
        meter_mac=meter_mac,
        kind=kind,
        meter_time=meter_time,
        received_at=received_at,
        raw=_field(d, "raw", int),
        multiplier=_field(d, "multiplier", int),
        divisor=_field(d, "divisor", int),
        value=value,
        unit=_field(d, "unit", str),
        device_mac=device_mac,
        scale=scale,
    )


def _decimal_field(d: dict[str, Any], name: str) -> Decimal:
    """A positive finite decimal sent as a string (a meter's scale)."""
    text = _field(d, name, str)
    try:
        value = Decimal(text)
    except InvalidOperation:
        raise PayloadError(f"{name}: not a decimal number: {text!r}") from None
    if not value.is_finite() or value <= 0:
        raise PayloadError(f"{name}: not a positive finite number: {text!r}")
    return value


# --- device state ------------------------------------------------------------------------------


#: DeviceInfo fields that are keys to the meter's Zigbee network: never broadcast them.
SECRET_FIELDS = frozenset({"link_key", "install_code"})


#: SECRET_FIELDS as compared: letters and digits only, lower case, so that a child spelt
#: otherwise by a faulty stick (``<linkkey>``, ``<Link_Key>``, kept under ``extra``) is one too.
_SECRET_NAMES = frozenset(name.replace("_", "") for name in SECRET_FIELDS)


def _is_secret(name: object) -> bool:
    return "".join(c for c in str(name).lower() if c.isalnum()) in _SECRET_NAMES


def without_secrets(body: dict[str, Any]) -> dict[str, Any]:
    """A state body fit to publish or print: without the SECRET_FIELDS, however spelt, also
    among the children the decoder did not know (``extra``: a list of [name, text] pairs)."""
    return {k: _clean(v) for k, v in body.items() if not _is_secret(k)}


def _clean(value: Any) -> Any:
    if isinstance(value, dict):
        return without_secrets(value)
    if isinstance(value, list | tuple):
        return [_clean(v) for v in value
                if not (isinstance(v, list | tuple) and len(v) == 2 and _is_secret(v[0]))]
    return value


def state_payload(item: StateItem) -> bytes:
    """``{"v": 1, "device_mac", "meter_mac" (or null), "tag", "received_at", "body": {...}}``;
    body holds the fragment's fields in snake_case (``link_strength``, ``fw_version`` ...),
    without the SECRET_FIELDS."""
    body = without_secrets(item.body)
    return json.dumps({
        "v": SCHEMA_VERSION,
        "device_mac": item.device_mac or None,
        "meter_mac": item.meter_mac or None,
        "tag": item.tag,
        "received_at": iso_millis(item.received_at),
        "body": body,
    }, separators=(",", ":"), default=str).encode()
