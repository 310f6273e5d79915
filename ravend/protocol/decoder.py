"""Turn one raw fragment into its typed dataclass, and typed fragments into stored readings.

Pure: bytes in, values out. Decoding is a table from root tag to dataclass and per-field
converters, used the same way for pushed and requested fragments. The children of every fragment
in the API are flat ``<Tag>text</Tag>`` lines, so a regular expression reads them faster and with
less surprise than a general XML parser; anything that is not that shape (a DTD, an entity
declaration, a processing instruction, nested markup) is refused as a decode error rather than
interpreted: nothing from a serial line gets entity expansion.

Every numeric child is read at the width the XML API gives it (ravend/protocol/widths.py, one
table for the general path and the fast paths, doc/fields.md): a wider or out-of-range value is
a decode error for its fragment, found before the integer is built, so that nothing computed
from a fragment (a power of ten, a Decimal scale, a time) can cost more than microseconds.
"""

from __future__ import annotations

import codecs
import html
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from decimal import Decimal
from enum import Enum
from typing import Any

from ravend.protocol import model as m
from ravend.protocol.framer import FastPath, Framer, RawFragment
from ravend.protocol.model import (
    KIND_UNITS,
    METER_EPOCH_OFFSET,
    DecodeError,
    Discarded,
    Fragment,
    Kind,
    Reading,
)
from ravend.protocol.widths import FIELD_WIDTHS, MAC_DIGITS, Width

_CHILD = re.compile(r"<([A-Za-z][A-Za-z0-9_]*)>([^<]*)</\1>")
_OPEN = re.compile(r"\A\s*<([A-Za-z][A-Za-z0-9_]*)>")
_BLANK = " \t\r\n\x00"
#: A body made only of flat children and blanks (one pass, nothing built).
_FLAT_BODY = re.compile(r"(?:[ \t\r\n\x00]*<([A-Za-z][A-Za-z0-9_]*)>[^<]*</\1>)*[ \t\r\n\x00]*")


class FieldError(ValueError):
    """A child's text did not fit its converter; becomes a DecodeError naming the field."""


# --- converters: each names the bad input -----------------------------------------------------
#
# Numeric converters are made per child tag from its width (ravend/protocol/widths.py): the
# significant digits are counted before the text becomes an integer, and the integer is checked
# against the width before anything is computed from it.


#: What a hex field may hold: int(text, 16) alone would also take a sign and "_" separators.
_HEX_TEXT = re.compile(r"[ \t\r\n]*(?:0[xX])?[0-9A-Fa-f]+[ \t\r\n]*")


#: Text up to this long becomes an integer in well under a microsecond, and the range check
#: then decides; longer text has its significant digits counted first (leading zeros are fine).
_CHEAP_TEXT = 64


def _too_wide(text: str, most: int) -> bool:
    """More than ``most`` significant digits after an optional 0x (leading zeros do not count)?"""
    digits = text[2:] if text[:2] in ("0x", "0X") else text
    return len(digits) > most and len(digits.lstrip("0")) > most


#: "Not set" markers devices send in time and duration fields (all bits of the field set).
_UNSET_TIMES = frozenset({0xFFFFFFFF, 0xFFFFFF})
_UNSET_VALUES = frozenset({0xFFFFFFFF, 0xFFFFFF, 0xFFFF})
_NEVER_UNSET: frozenset[int] = frozenset()


def hex_reader(width: Width, unset: frozenset[int] = _NEVER_UNSET,
               offset: int = 0) -> Callable[[str], Any]:
    """A hex child of ``width``: its value plus ``offset``, None for an ``unset`` marker, or a
    FieldError saying why not. One closure per field kind, so the layout fast paths pay one call
    per child."""
    most, top, name = width.digits, width.wire_max, width.describe()

    def read(text: str) -> int | None:
        # Fast path for what devices send ('0x001540'): ASCII letters and digits only, so no
        # sign, "_" or blank for int() to be lenient about; int() still refuses non-hex letters.
        if text.isascii() and text.isalnum():
            t = text
        elif _HEX_TEXT.fullmatch(text):
            t = text.strip(" \t\r\n")  # the 0x prefix and surrounding blanks are fine
        else:
            raise FieldError(f"expected hex digits, got {text[:40]!r}")
        if len(t) > _CHEAP_TEXT and _too_wide(t, most):
            raise FieldError(f"wider than {name}: {text[:40]!r}")
        try:
            value = int(t, 16)
        except ValueError:
            raise FieldError(f"expected hex digits, got {text[:40]!r}") from None
        if value > top:
            raise FieldError(f"{value:#x} is out of range for {name}")
        if value in unset:
            return None
        return value + offset

    return read


def decimal_reader(width: Width) -> Callable[[str], int]:
    """Channel and ProfileIntervalPeriod are decimal on the wire; tolerate a 0x prefix."""
    most, top, name = width.digits, width.wire_max, width.describe()
    as_hex = hex_reader(Width(width.bits, limit=width.limit))

    def read(text: str) -> int:
        t = text.strip()
        if t[:2] in ("0x", "0X"):
            return as_hex(t)  # type: ignore[no-any-return]
        if not (t.isascii() and t.isdigit()):  # int() would also take a sign and "_"
            raise FieldError(f"expected a decimal number, got {text[:40]!r}")
        if len(t) > _CHEAP_TEXT and _too_wide(t, most):  # int() is quadratic (and limited)
            raise FieldError(f"wider than {name}: {text[:40]!r}")
        value = int(t, 10)
        if value > top:
            raise FieldError(f"{value} is out of range for {name}")
        return value

    return read


def _digits(text: str) -> int:
    t = text.strip()
    return len(t) - 2 if t[:2] in ("0x", "0X") else len(t)


def signed_demand(width: Width) -> Callable[[str], int]:
    """Positive demand comes as 6 digits, negative as 32-bit two's complement (8 digits).

    A 6-digit value with the top bit set is ZigBee's int24 and is read as such.
    """
    read, half, whole = hex_reader(width), 1 << (width.bits - 1), 1 << width.bits

    def convert(text: str) -> int:
        value: int = read(text)
        if value >= half:
            return value - whole
        if _digits(text) <= 6 and value >= 1 << 23:
            return value - (1 << 24)
        return value

    return convert


def signed_hex(width: Width) -> Callable[[str], int]:
    """Two's complement at the field's width (summations and period usage: 64-bit, never
    truncated to 32 bits)."""
    read, half, whole = hex_reader(width), 1 << (width.bits - 1), 1 << width.bits

    def convert(text: str) -> int:
        value: int = read(text)
        return value - whole if value >= half else value

    return convert


def meter_time(width: Width) -> Callable[[str], int | None]:
    """Seconds since 2000-01-01 UTC → Unix seconds; 0xffffffff (or 0xffffff) means not set."""
    return hex_reader(width, _UNSET_TIMES, METER_EPOCH_OFFSET)


def optional_hex(width: Width) -> Callable[[str], int | None]:
    """A hex field where all-F means "not set" (Duration 0xffff, Currency 0xffff)."""
    return hex_reader(width, _UNSET_VALUES)


def price_value(width: Width) -> Callable[[str], int | None]:
    """Price is 32-bit: only 0xffffffff means "no price"; 0xffff is a real price."""
    return hex_reader(width, frozenset({0xFFFFFFFF}))


def interval_value(width: Width) -> Callable[[str], int | None]:
    """IntervalData is 24-bit: 0xFFFFFF marks an invalid interval."""
    return hex_reader(width, frozenset({0xFFFFFF}))


@dataclass(frozen=True, slots=True)
class Numeric:
    """A numeric child's converter, made for the child's width when the table is built: the
    width comes from FIELD_WIDTHS by wire tag, so a numeric child without one fails at import."""

    make: Callable[[Width], Callable[[str], Any]]


hex_int = Numeric(hex_reader)
decimal_int = Numeric(decimal_reader)
time_field = Numeric(meter_time)
demand_field = Numeric(signed_demand)
signed64 = Numeric(signed_hex)
optional_field = Numeric(optional_hex)
price_field = Numeric(price_value)
interval_field = Numeric(interval_value)


def yes_no(text: str) -> bool:
    t = text.strip().upper()
    if t == "Y":
        return True
    if t == "N":
        return False
    raise FieldError(f"expected Y or N, got {text!r}")


def text_field(text: str) -> str:
    """Labels and messages: cp1252 already decoded, filler removed, HTML escapes resolved."""
    return html.unescape(text.rstrip("\xff \t\r\n\x00").lstrip(" \t\r\n\x00"))


def mac(text: str) -> str:
    cached = _MAC_STR.get(text)
    if cached is not None:
        return cached
    t = text.strip().lower()
    digits = t[2:] if t[:2] == "0x" else t
    if not digits or digits.strip("0123456789abcdef"):
        raise FieldError(f"expected a hex MAC id, got {text[:40]!r}")
    if len(digits) > MAC_DIGITS:
        raise FieldError(f"a MAC id has at most {MAC_DIGITS} hex digits, got {text[:40]!r}")
    if len(_MAC_STR) < 64:  # MAC ids repeat in every fragment; the cache stays small
        _MAC_STR[text] = "0x" + digits
    return "0x" + digits


_MAC_STR: dict[str, str] = {}


def _enum(cls: type[Enum]) -> Callable[[str], Any]:
    by_value = {e.value.lower(): e for e in cls}

    def convert(text: str) -> Any:
        t = text_field(text)
        return by_value.get(t.rstrip(".").lower(), t)  # an unseen value is kept as its text

    return convert


def _cp1252_or_latin1(err: UnicodeError) -> tuple[str, int]:
    """cp1252 leaves five bytes undefined; keep them as their Latin-1 characters."""
    assert isinstance(err, UnicodeDecodeError)
    return err.object[err.start : err.end].decode("latin-1"), err.end


codecs.register_error("ravend-cp1252", _cp1252_or_latin1)

#: Latin-1 → cp1252 for the 0x80-0x9F range (the five bytes cp1252 leaves undefined stay as
#: their Latin-1 characters): decoding as Latin-1 runs in C, the table fixes the difference.
_CP1252_FIX = {
    b: ch for b in range(0x80, 0xA0)
    if (ch := bytes([b]).decode("cp1252", "ravend-cp1252")) != chr(b)
}


def cp1252(raw: bytes | bytearray) -> str:
    """cp1252 text as the devices send it, undefined bytes kept; the same as the codec, faster."""
    text = raw.decode("latin-1")
    return text if text.isascii() else text.translate(_CP1252_FIX)


# --- the table --------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Spec:
    cls: type
    fields: dict[str, tuple[str, Callable[[str], Any]]]
    required: tuple[str, ...]
    repeated: dict[str, str]  # wire tag -> field name collecting a tuple
    widths: dict[str, Width]  # wire tag -> width, for every numeric child


Converter = Callable[[str], Any] | Numeric


Fields = dict[str, tuple[str, Converter]]

_COMMON: Fields = {"DeviceMacId": ("device_mac_id", mac), "MeterMacId": ("meter_mac_id", mac)}
_DISPLAY: Fields = {
    "DigitsRight": ("digits_right", hex_int),
    "DigitsLeft": ("digits_left", hex_int),
    "SuppressLeadingZero": ("suppress_leading_zero", yes_no),
}
_SCALE: Fields = {"Multiplier": ("multiplier", hex_int), "Divisor": ("divisor", hex_int)}
_LINK: Fields = {
    "Status": ("status", _enum(m.ConnectionState)),
    "Description": ("description", text_field),
    "StatusCode": ("status_code", hex_int),
    "ExtPanId": ("ext_pan_id", mac),
    "Channel": ("channel", decimal_int),
    "ShortAddr": ("short_addr", hex_int),
    "LinkStrength": ("link_strength", hex_int),
}


def _spec(cls: type, fields: Fields,
          required: tuple[str, ...], repeated: dict[str, str] | None = None) -> Spec:
    """A table entry, its numeric converters made for their widths (FIELD_WIDTHS)."""
    widths = {wire: FIELD_WIDTHS[wire] for wire, (_, conv) in fields.items()
              if isinstance(conv, Numeric)}
    made = {wire: (name, conv.make(widths[wire]) if isinstance(conv, Numeric) else conv)
            for wire, (name, conv) in fields.items()}
    return Spec(cls, made, required, repeated or {}, widths)


TABLE: dict[str, Spec] = {
    "InstantaneousDemand": _spec(
        m.InstantaneousDemand,
        {**_COMMON, "TimeStamp": ("time_stamp", time_field), "Demand": ("demand", demand_field),
         **_SCALE, **_DISPLAY},
        ("device_mac_id", "meter_mac_id", "time_stamp", "demand", "multiplier", "divisor"),
    ),
    "CurrentSummationDelivered": _spec(
        m.CurrentSummationDelivered,
        {**_COMMON, "TimeStamp": ("time_stamp", time_field),
         "SummationDelivered": ("summation_delivered", signed64),
         "SummationReceived": ("summation_received", signed64), **_SCALE, **_DISPLAY},
        ("device_mac_id", "meter_mac_id", "time_stamp", "summation_delivered", "multiplier",
         "divisor"),
    ),
    "ConnectionStatus": _spec(m.ConnectionStatus, {**_COMMON, **_LINK}, ("device_mac_id",)),
    "NetworkInfo": _spec(
        m.NetworkInfo, {**_COMMON, "CoordMacId": ("coord_mac_id", mac), **_LINK},
        ("device_mac_id",),
    ),
    "DeviceInfo": _spec(
        m.DeviceInfo,
        {"DeviceMacId": ("device_mac_id", mac), "InstallCode": ("install_code", text_field),
         "LinkKey": ("link_key", text_field), "FWVersion": ("fw_version", text_field),
         "HWVersion": ("hw_version", text_field), "ImageType": ("image_type", text_field),
         "Manufacturer": ("manufacturer", text_field), "ModelId": ("model_id", text_field),
         "DateCode": ("date_code", text_field)},
        ("device_mac_id",),
    ),
    "MeterList": _spec(
        m.MeterList, {"DeviceMacId": ("device_mac_id", mac), "MeterMacId": ("meter_mac_ids", mac)},
        ("device_mac_id",), {"MeterMacId": "meter_mac_ids"},
    ),
    "MeterInfo": _spec(
        m.MeterInfo,
        {**_COMMON, "MeterType": ("meter_type", _enum(m.MeterType)),
         "NickName": ("nick_name", text_field), "Account": ("account", text_field),
         "Auth": ("auth", text_field), "Host": ("host", text_field),
         "Enabled": ("enabled", yes_no)},
        ("device_mac_id", "meter_mac_id"),
    ),
    "TimeCluster": _spec(
        m.TimeCluster,
        {**_COMMON, "UTCTime": ("utc_time", time_field), "LocalTime": ("local_time", time_field)},
        ("device_mac_id", "meter_mac_id", "utc_time", "local_time"),
    ),
    "PriceCluster": _spec(
        m.PriceCluster,
        {**_COMMON, "TimeStamp": ("time_stamp", time_field), "Price": ("price", price_field),
         "Currency": ("currency", optional_field), "TrailingDigits": ("trailing_digits", hex_int),
         "Tier": ("tier", hex_int), "TierLabel": ("tier_label", text_field),
         "StartTime": ("start_time", time_field), "Duration": ("duration", optional_field),
         "RateLabel": ("rate_label", text_field)},
        ("device_mac_id", "meter_mac_id", "time_stamp", "price", "trailing_digits"),
    ),
    "BlockPriceDetail": _spec(
        m.BlockPriceDetail,
        {**_COMMON, "TimeStamp": ("time_stamp", time_field),
         "CurrentStart": ("current_start", time_field),
         "CurrentDuration": ("current_duration", optional_field),
         "BlockPeriodConsumption": ("block_period_consumption", signed64),
         "BlockPeriodConsumptionMultiplier": ("block_period_consumption_multiplier", hex_int),
         "BlockPeriodConsumptionDivisor": ("block_period_consumption_divisor", hex_int),
         "NumberOfBlocks": ("number_of_blocks", hex_int), **_SCALE,
         "Currency": ("currency", optional_field), "TrailingDigits": ("trailing_digits", hex_int)},
        ("device_mac_id", "meter_mac_id", "time_stamp"),
    ),
    "MessageCluster": _spec(
        m.MessageCluster,
        {**_COMMON, "TimeStamp": ("time_stamp", time_field), "Id": ("id", text_field),
         "Text": ("text", text_field), "Priority": ("priority", text_field),
         "StartTime": ("start_time", time_field), "Duration": ("duration", optional_field),
         "ConfirmationRequired": ("confirmation_required", yes_no),
         "Confirmed": ("confirmed", yes_no), "Queue": ("queue", text_field)},
        ("device_mac_id", "meter_mac_id", "time_stamp"),
    ),
    "ScheduleInfo": _spec(
        m.ScheduleInfo,
        {**_COMMON, "Event": ("event", _enum(m.ScheduleEvent)),
         "Frequency": ("frequency", hex_int), "Enabled": ("enabled", yes_no)},
        ("device_mac_id", "event", "frequency", "enabled"),
    ),
    "CurrentPeriodUsage": _spec(
        m.CurrentPeriodUsage,
        {**_COMMON, "TimeStamp": ("time_stamp", time_field),
         "CurrentUsage": ("current_usage", signed64), **_SCALE, **_DISPLAY,
         "StartDate": ("start_date", time_field)},
        ("device_mac_id", "meter_mac_id", "time_stamp", "current_usage", "multiplier", "divisor"),
    ),
    "LastPeriodUsage": _spec(
        m.LastPeriodUsage,
        {**_COMMON, "LastUsage": ("last_usage", signed64), **_SCALE, **_DISPLAY,
         "StartDate": ("start_date", time_field), "EndDate": ("end_date", time_field)},
        ("device_mac_id", "meter_mac_id", "last_usage", "multiplier", "divisor"),
    ),
    "ProfileData": _spec(
        m.ProfileData,
        {**_COMMON, "EndTime": ("end_time", time_field), "Status": ("status", hex_int),
         "ProfileIntervalPeriod": ("profile_interval_period", decimal_int),
         "NumberOfPeriodsDelivered": ("number_of_periods_delivered", hex_int),
         "IntervalData": ("interval_data", interval_field)},
        ("device_mac_id", "meter_mac_id", "end_time", "status", "profile_interval_period",
         "number_of_periods_delivered"),
        {"IntervalData": "interval_data"},
    ),
    "Warning": _spec(m.Warning, {"Text": ("text", text_field)}, ("text",)),
}

#: Optional fields whose dataclass has no default and must be passed explicitly.
_NONE_DEFAULTS: dict[str, tuple[str, ...]] = {
    "ConnectionStatus": ("meter_mac_id", "status"),
    "NetworkInfo": ("coord_mac_id", "status"),
    "CurrentSummationDelivered": ("summation_received",),
    "PriceCluster": ("currency",),
    "ScheduleInfo": ("meter_mac_id",),
}


def _children(tag: str, raw: bytes) -> list[tuple[str, str]] | DecodeError:
    """The (tag, text) pairs of a flat fragment, or why it is not one."""
    if b"<!" in raw or b"<?" in raw:
        return DecodeError(tag, None, "markup declarations (DTD/entity) are refused", raw)
    # One decode of the whole fragment: labels are cp1252, everything else is ASCII.
    text = cp1252(raw)
    opened = _OPEN.match(text)
    body_start = opened.end() if opened else 0
    body_end = text.rfind("</")
    children: list[tuple[str, str]] = _CHILD.findall(text, body_start, body_end)
    # Whatever the children do not cover must be blank, or the fragment is not what we think.
    if _FLAT_BODY.fullmatch(text, body_start, body_end) is None:
        rest = _CHILD.sub("", text[body_start:body_end]).strip(_BLANK)
        return DecodeError(tag, None, f"unexpected content {rest[:40]!r}", raw)
    return children


def decode(fragment: RawFragment) -> Fragment | DecodeError:
    """Decode one framed fragment. Never raises for anything a device can send."""
    tag, raw = fragment.tag, fragment.raw
    children = _children(tag, raw)
    if isinstance(children, DecodeError):
        return children
    spec = TABLE.get(tag)
    if spec is None:
        return m.UnknownFragment(tag, tuple(children), raw)
    values: dict[str, Any] = {name: None for name in _NONE_DEFAULTS.get(tag, ())}
    for name in spec.repeated.values():
        values[name] = []
    extra: list[tuple[str, str]] = []
    fields = spec.fields
    for child_tag, text in children:
        entry = fields.get(child_tag)
        if entry is None:
            extra.append((child_tag, text))
            continue
        name, convert = entry
        try:
            value = convert(text)
        except FieldError as exc:
            return DecodeError(tag, child_tag, str(exc), raw)
        if child_tag in spec.repeated:
            values[name].append(value)
        else:
            values[name] = value
    for name in spec.required:
        if name not in values:
            wire = next((t for t, (n, _) in fields.items() if n == name), name)
            return DecodeError(tag, wire, "missing", raw)
    for name in spec.repeated.values():
        values[name] = tuple(values[name])
    if extra:
        values["extra"] = tuple(extra)
    return spec.cls(**values)  # type: ignore[no-any-return]


# --- fragments → readings ---------------------------------------------------------------------

CURRENCY_CODES: dict[int, str] = {
    36: "AUD", 124: "CAD", 554: "NZD", 826: "GBP", 840: "USD", 978: "EUR", 756: "CHF",
}


def currency_name(code: int | None) -> str:
    if code is None:
        return "?"
    return CURRENCY_CODES.get(code, str(code))


def readings_from(fragment: Fragment, received_at: float,
                  scales: Mapping[str, Decimal] | None = None) -> list[Reading]:
    """The stored readings a fragment carries (most fragments carry none: they are state).

    ``scales`` maps a meter MAC to the factor its energy and demand values are multiplied by
    (a CT meter that reports 1/60 of the usage: 60); a price is never scaled.
    """
    factor = scales.get(getattr(fragment, "meter_mac_id", None) or "", _ONE) if scales else _ONE
    if isinstance(fragment, m.InstantaneousDemand):
        f = fragment
        return [_reading(f.meter_mac_id, Kind.DEMAND, f.time_stamp, received_at, f.demand,
                         f.multiplier, f.divisor, f.device_mac_id, factor)]
    if isinstance(fragment, m.CurrentSummationDelivered):
        s = fragment
        out = [_reading(s.meter_mac_id, Kind.SUMMATION_DELIVERED, s.time_stamp, received_at,
                        s.summation_delivered, s.multiplier, s.divisor, s.device_mac_id, factor)]
        if s.summation_received is not None:
            out.append(_reading(s.meter_mac_id, Kind.SUMMATION_RECEIVED, s.time_stamp,
                                received_at, s.summation_received, s.multiplier, s.divisor,
                                s.device_mac_id, factor))
        return out
    if isinstance(fragment, m.PriceCluster):
        p = fragment
        if p.price is None:
            return []
        divisor = 10**p.trailing_digits
        return [Reading(p.meter_mac_id, Kind.PRICE, p.time_stamp, received_at, p.price, 1,
                        divisor, Decimal(p.price).scaleb(-p.trailing_digits),
                        f"{currency_name(p.currency)}/kWh", p.device_mac_id)]
    if isinstance(fragment, m.CurrentPeriodUsage):
        u = fragment
        return [_reading(u.meter_mac_id, Kind.CURRENT_PERIOD_USAGE, u.time_stamp, received_at,
                         u.current_usage, u.multiplier, u.divisor, u.device_mac_id, factor)]
    if isinstance(fragment, m.LastPeriodUsage):
        u2 = fragment
        return [_reading(u2.meter_mac_id, Kind.LAST_PERIOD_USAGE, u2.end_date, received_at,
                         u2.last_usage, u2.multiplier, u2.divisor, u2.device_mac_id, factor)]
    return []


_ONE = Decimal(1)


def _reading(meter: str, kind: Kind, meter_time_: int | None, received_at: float, raw: int,
             multiplier: int, divisor: int, device: str, factor: Decimal = _ONE) -> Reading:
    return Reading(meter, kind, meter_time_, received_at, raw, multiplier, divisor,
                   m.scale(raw, multiplier, divisor, factor), KIND_UNITS[kind], device, factor)


# --- the fast path for the fragments that make up almost all traffic ----------------------------
#
# A demand fragment arrives every 8 s and makes up most of the stream; summation most of the
# rest. For these two, one regular expression over the buffer checks the usual layout, frames
# the fragment and captures every value in a single pass, and the values are converted straight
# from bytes. Anything else about them (unknown children, odd spacing, lower-case y/n, a missing
# 0x) fails the match and takes the general path, which gives the same result for what the fast
# path accepts — tests/test_decoder.py checks both paths agree.

_WS = rb"[ \t\r\n]*"


def _hex_group(tag: str) -> bytes:
    """The capture for one hex child, as wide as FIELD_WIDTHS lets it be, and no wider.

    The fast paths convert what they capture without a range check, so only widths whose every
    value of that many digits is in range may be captured this way (checked here, at import);
    a longer text, leading zeros included, fails the match and takes the general path, which
    accepts or refuses it by value.
    """
    if tag.endswith("MacId"):
        return rb"(0x[0-9a-fA-F]{1,%d})" % MAC_DIGITS
    width = FIELD_WIDTHS[tag]
    if width.decimal or width.limit is not None or width.bits != 4 * width.digits:
        raise ValueError(f"{tag} ({width.describe()}) cannot be range-checked by a pattern")
    return rb"(0x[0-9a-fA-F]{1,%d})" % width.digits


def _fast_pattern(root: bytes, children: str) -> re.Pattern[bytes]:
    """The usual layout of ``root``: children in order, a trailing ``?`` marks an optional one."""
    parts = [rb"[ \t\r\n\x00]*<" + root + rb">" + _WS]
    for name in children.split():
        tag = name.rstrip("?")
        value = rb"([YN])" if tag == "SuppressLeadingZero" else _hex_group(tag)
        wire = tag.encode()
        child = rb"<" + wire + rb">" + value + rb"</" + wire + rb">" + _WS
        parts.append(rb"(?:" + child + rb")?" if name.endswith("?") else child)
    parts.append(rb"</" + root + rb">")
    return re.compile(b"".join(parts))


_DISPLAY = "DigitsRight? DigitsLeft? SuppressLeadingZero?"
_FAST_DEMAND = _fast_pattern(
    b"InstantaneousDemand",
    f"DeviceMacId MeterMacId TimeStamp Demand Multiplier Divisor {_DISPLAY}",
)
_FAST_SUMMATION = _fast_pattern(
    b"CurrentSummationDelivered",
    "DeviceMacId MeterMacId TimeStamp SummationDelivered SummationReceived? Multiplier Divisor"
    f" {_DISPLAY}",
)


#: MAC ids repeat in every fragment: remember the text of the last few (bounded).
_MAC_TEXT: dict[bytes, str] = {}
_MAC_CACHE_SIZE = 64


def _mac_b(raw: bytes) -> str:
    text = _MAC_TEXT.get(raw)
    if text is None:
        text = "0x" + raw[2:].decode().lower()
        if len(_MAC_TEXT) < _MAC_CACHE_SIZE:
            _MAC_TEXT[raw] = text
    return text


#: Two's complement at the widths FIELD_WIDTHS gives (the patterns above bound the digits).
_DEMAND_HALF = 1 << (FIELD_WIDTHS["Demand"].bits - 1)
_DEMAND_WHOLE = 1 << FIELD_WIDTHS["Demand"].bits
_SUMMATION_WIDTH = FIELD_WIDTHS["SummationDelivered"]
assert FIELD_WIDTHS["SummationReceived"] == _SUMMATION_WIDTH, "one _s64_b reads both"
_SUMMATION_HALF = 1 << (_SUMMATION_WIDTH.bits - 1)
_SUMMATION_WHOLE = 1 << _SUMMATION_WIDTH.bits


def _fast_demand(buf: bytearray, pos: int) -> tuple[int, object] | None:
    match = _FAST_DEMAND.match(buf, pos)
    if match is None:
        return None
    dev, meter, ts, demand, mult, div, right, left, slz = match.groups()
    stamp = int(ts, 16)
    value = int(demand, 16)
    if value >= _DEMAND_HALF:
        value -= _DEMAND_WHOLE
    elif len(demand) <= 8 and value >= 1 << 23:  # six digits after "0x": int24
        value -= 1 << 24
    return match.end(), m.InstantaneousDemand(
        _MAC_TEXT.get(dev) or _mac_b(dev), _MAC_TEXT.get(meter) or _mac_b(meter),
        None if stamp in _UNSET_TIMES else stamp + METER_EPOCH_OFFSET,
        value, int(mult, 16), int(div, 16),
        None if right is None else int(right, 16), None if left is None else int(left, 16),
        None if slz is None else slz == b"Y",
    )


def _s64_b(raw: bytes) -> int:
    value = int(raw, 16)
    return value - _SUMMATION_WHOLE if value >= _SUMMATION_HALF else value


def _fast_summation(buf: bytearray, pos: int) -> tuple[int, object] | None:
    match = _FAST_SUMMATION.match(buf, pos)
    if match is None:
        return None
    dev, meter, ts, delivered, received, mult, div, right, left, slz = match.groups()
    stamp = int(ts, 16)
    return match.end(), m.CurrentSummationDelivered(
        _mac_b(dev), _mac_b(meter),
        None if stamp in _UNSET_TIMES else stamp + METER_EPOCH_OFFSET,
        _s64_b(delivered), None if received is None else _s64_b(received), int(mult, 16),
        int(div, 16), None if right is None else int(right, 16),
        None if left is None else int(left, 16), None if slz is None else slz == b"Y",
    )


def _layout_path(tag: str, children: str) -> FastPath:
    """A shortcut for a fragment in its usual child order, converted by TABLE's own converters.

    Less quick than the two above (each value goes through its converter), but it still frames
    and splits the fragment in one match; any converter's complaint sends the fragment down the
    general path, which reports it.
    """
    spec = TABLE[tag]
    names = children.split()
    # Labels and messages are cp1252 text; everything else must be ASCII (strict: anything else
    # is left to the general path to report).
    converters = [
        (*spec.fields[n.rstrip("?")], n.rstrip("?") in _TEXT_FIELDS) for n in names
    ]
    parts = [rb"[ \t\r\n\x00]*<" + tag.encode() + rb">" + _WS]
    for name in names:
        wire = name.rstrip("?").encode()
        child = rb"<" + wire + rb">([^<]*)</" + wire + rb">" + _WS
        parts.append(rb"(?:" + child + rb")?" if name.endswith("?") else child)
    parts.append(rb"</" + tag.encode() + rb">")
    pattern = re.compile(b"".join(parts))
    defaults = dict.fromkeys(_NONE_DEFAULTS.get(tag, ()))

    def shortcut(buf: bytearray, pos: int) -> tuple[int, object] | None:
        match = pattern.match(buf, pos)
        if match is None:
            return None
        values = dict(defaults)
        try:
            for (field, convert, is_text), raw in zip(converters, match.groups(), strict=True):
                if raw is not None:
                    values[field] = convert(cp1252(raw) if is_text else raw.decode("ascii"))
        except (FieldError, UnicodeDecodeError):
            return None
        return match.end(), spec.cls(**values)

    return shortcut


#: Children whose text is free text (cp1252 on the wire) rather than numbers, MACs or flags.
_TEXT_FIELDS = frozenset({"TierLabel", "RateLabel", "Text", "Id", "Priority", "Queue", "Status",
                          "Description"})

FAST_PATHS: dict[str, FastPath] = {
    "InstantaneousDemand": _fast_demand,
    "CurrentSummationDelivered": _fast_summation,
    "PriceCluster": _layout_path(
        "PriceCluster", "DeviceMacId MeterMacId TimeStamp Price Currency TrailingDigits Tier?"
        " TierLabel? StartTime? Duration? RateLabel?"),
    "MessageCluster": _layout_path(
        "MessageCluster", "DeviceMacId MeterMacId TimeStamp Id Text Priority? StartTime?"
        " Duration? ConfirmationRequired? Confirmed? Queue?"),
    "TimeCluster": _layout_path("TimeCluster", "DeviceMacId MeterMacId UTCTime LocalTime"),
    "ConnectionStatus": _layout_path(
        "ConnectionStatus", "DeviceMacId MeterMacId? Status Description? StatusCode? ExtPanId?"
        " Channel? ShortAddr? LinkStrength?"),
}


class StreamDecoder:
    """Framer and decoder together: bytes in, fragments and diagnostics out."""

    __slots__ = ("framer",)

    def __init__(self, *, fast: bool = True) -> None:
        self.framer = Framer(FAST_PATHS if fast else None, decode)

    def reset(self) -> None:
        self.framer.reset()

    def feed(self, data: bytes) -> list[Fragment | DecodeError | Discarded]:
        return self.framer.feed(data)  # type: ignore[return-value]
