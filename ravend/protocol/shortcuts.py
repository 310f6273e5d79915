"""Shortcuts: frame and decode a common fragment in one pass over the buffer.

A demand fragment arrives every 8 s and makes up most of the stream; summation, price, message,
time and link status most of the rest. For these, one regular expression over the buffer checks
the usual layout, finds the end of the fragment and captures every value in a single pass, where
the general path would search for the start tag, search for the close tag, copy the fragment,
decode it to text and parse its children. Anything else about them (unknown children, another
order, odd spacing, lower-case y/n, a missing 0x) fails the match, and the general path frames
and decodes the fragment; for what a shortcut accepts the two give the same value
(tests/test_protocol_fuzz.py checks that on arbitrary input).

Everything comes from the decode table (ravend/protocol/table.py): the children and their order,
which of them may be left out, and the converters. Demand and summation, the bulk of the
traffic, read their integers straight from the captured bytes, with the same rules
(ravend/protocol/fields.py: sign extension, meter time) that the converters apply to text.

A shortcut takes the buffer and the position where a fragment may start (after blanks or NULs,
which are line noise) and returns the end of that fragment and its value when the whole fragment
is there in its usual shape, else None. ravend/protocol/decoder.py's StreamDecoder uses them.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from ravend.protocol import model as m
from ravend.protocol.fields import (
    MAC_CACHE_SIZE,
    FieldError,
    cp1252,
    demand_sign,
    mac,
    twos_complement,
    unix_time,
    yes_no,
)
from ravend.protocol.model import Fragment
from ravend.protocol.table import NONE_DEFAULTS, TABLE, Spec
from ravend.protocol.widths import FIELD_WIDTHS, MAC_DIGITS

#: See the module docstring: (buffer, position) → (end of the fragment, its value) or None.
Shortcut = Callable[[bytes | bytearray, int], "tuple[int, Fragment] | None"]

_WS = rb"[ \t\r\n]*"
_LEAD = rb"[ \t\r\n\x00]*"


def _pattern(spec: Spec, tag: str, capture: Callable[[Spec, str], bytes]) -> re.Pattern[bytes]:
    """The usual layout of ``tag``, from the table: its children in order, each optional one
    marked so; ``capture`` gives the group that takes a child's text. Each child's group is
    named after its wire tag."""
    root = tag.encode()
    parts = [_LEAD + rb"<" + root + rb">" + _WS]
    for wire, optional in spec.layout():
        name = wire.encode()
        child = (rb"<" + name + rb">(?P<" + name + rb">" + capture(spec, wire) + rb")</" + name
                 + rb">" + _WS)
        parts.append(rb"(?:" + child + rb")?" if optional else child)
    parts.append(rb"</" + root + rb">")
    return re.compile(b"".join(parts))


# --- demand and summation: integers read straight from bytes ------------------------------------


def _strict(spec: Spec, wire: str) -> bytes:
    """The capture for one child of a strict layout, as wide as its width lets it be, and no
    wider: what it captures is converted without a range check, so only widths whose every
    value of that many digits is in range may be captured this way (checked here, at import);
    a longer text, leading zeros included, fails the match and takes the general path, which
    accepts or refuses it by value."""
    convert = spec.fields[wire][1]
    if convert is mac:
        return rb"0x[0-9a-fA-F]{1,%d}" % MAC_DIGITS
    if convert is yes_no:
        return rb"[YN]"
    width = spec.widths.get(wire)
    if width is None:
        raise ValueError(f"{wire} has no strict form (a MAC id, Y/N or a number)")
    if width.decimal or width.limit is not None or width.bits != 4 * width.digits:
        raise ValueError(f"{wire} ({width.describe()}) cannot be range-checked by a pattern")
    return rb"0x[0-9a-fA-F]{1,%d}" % width.digits


def _groups(pattern: re.Pattern[bytes], wires: str) -> tuple[int, ...]:
    """The group numbers of the children a shortcut reads, by wire tag (KeyError at import
    when the table no longer has one)."""
    return tuple(pattern.groupindex[wire] for wire in wires.split())


#: MAC ids repeat in every fragment: remember the text of the last few (bounded).
_MAC_TEXT: dict[bytes, str] = {}


def _mac_b(raw: bytes) -> str:
    text = _MAC_TEXT.get(raw)
    if text is None:
        text = mac(raw.decode("ascii"))
        if len(_MAC_TEXT) < MAC_CACHE_SIZE:
            _MAC_TEXT[raw] = text
    return text


_DEMAND_SPEC = TABLE["InstantaneousDemand"]
_DEMAND = _pattern(_DEMAND_SPEC, "InstantaneousDemand", _strict)
_DEMAND_GROUPS = _groups(_DEMAND, "DeviceMacId MeterMacId TimeStamp Demand Multiplier Divisor"
                                  " DigitsRight DigitsLeft SuppressLeadingZero")
_demand_sign = demand_sign(FIELD_WIDTHS["Demand"])


def _demand(buf: bytes | bytearray, pos: int) -> tuple[int, Fragment] | None:
    match = _DEMAND.match(buf, pos)
    if match is None:
        return None
    dev, meter, ts, demand, mult, div, right, left, slz = match.group(*_DEMAND_GROUPS)
    return match.end(), m.InstantaneousDemand(
        _MAC_TEXT.get(dev) or _mac_b(dev), _MAC_TEXT.get(meter) or _mac_b(meter),
        unix_time(int(ts, 16)), _demand_sign(int(demand, 16), len(demand) - 2),
        int(mult, 16), int(div, 16),
        None if right is None else int(right, 16), None if left is None else int(left, 16),
        None if slz is None else slz == b"Y",
    )


_SUMMATION_SPEC = TABLE["CurrentSummationDelivered"]
_SUMMATION = _pattern(_SUMMATION_SPEC, "CurrentSummationDelivered", _strict)
_SUMMATION_GROUPS = _groups(
    _SUMMATION, "DeviceMacId MeterMacId TimeStamp SummationDelivered SummationReceived"
                " Multiplier Divisor DigitsRight DigitsLeft SuppressLeadingZero")
_delivered_sign = twos_complement(FIELD_WIDTHS["SummationDelivered"])
_received_sign = twos_complement(FIELD_WIDTHS["SummationReceived"])


def _summation(buf: bytes | bytearray, pos: int) -> tuple[int, Fragment] | None:
    match = _SUMMATION.match(buf, pos)
    if match is None:
        return None
    dev, meter, ts, delivered, received, mult, div, right, left, slz = match.group(
        *_SUMMATION_GROUPS)
    return match.end(), m.CurrentSummationDelivered(
        _mac_b(dev), _mac_b(meter), unix_time(int(ts, 16)),
        _delivered_sign(int(delivered, 16)),
        None if received is None else _received_sign(int(received, 16)),
        int(mult, 16), int(div, 16), None if right is None else int(right, 16),
        None if left is None else int(left, 16), None if slz is None else slz == b"Y",
    )


# --- the others: each value through its converter -----------------------------------------------


def _any_text(spec: Spec, wire: str) -> bytes:
    return rb"[^<]*"


def _layout(tag: str) -> Shortcut:
    """A shortcut for a fragment in its usual child order, converted by the table's converters.

    Less quick than the two above (each value goes through its converter), but it still frames
    and splits the fragment in one match; any converter's complaint sends the fragment down the
    general path, which reports it. A child's text is decoded as the general path decodes the
    whole fragment (cp1252; ASCII, its common case, first), so each converter sees the same text.
    """
    spec = TABLE[tag]
    pattern = _pattern(spec, tag, _any_text)
    converters = [spec.fields[wire] for wire, _ in spec.layout()]
    defaults = dict.fromkeys(NONE_DEFAULTS.get(tag, ()))
    cls = spec.cls

    def shortcut(buf: bytes | bytearray, pos: int) -> tuple[int, Fragment] | None:
        match = pattern.match(buf, pos)
        if match is None:
            return None
        values: dict[str, Any] = dict(defaults)
        try:
            for (field, convert), raw in zip(converters, match.groups(), strict=True):
                if raw is not None:
                    try:
                        text = raw.decode("ascii")
                    except UnicodeDecodeError:
                        text = cp1252(raw)
                    values[field] = convert(text)
        except FieldError:
            return None
        return match.end(), cls(**values)

    return shortcut


#: The shortcut for each root tag that has one.
SHORTCUTS: dict[str, Shortcut] = {
    "InstantaneousDemand": _demand,
    "CurrentSummationDelivered": _summation,
    **{tag: _layout(tag) for tag in ("PriceCluster", "MessageCluster", "TimeCluster",
                                     "ConnectionStatus")},
}
