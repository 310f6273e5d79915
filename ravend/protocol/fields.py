"""Field converters: the text of one child element in, its typed value out.

Each converter names the bad input: a child whose text does not fit raises FieldError, which the
decoder turns into a DecodeError naming the fragment and the field. Every numeric converter is
made for the width the XML API gives its child (ravend/protocol/widths.py, doc/fields.md): the
significant digits are counted before the text becomes an integer, and the integer is checked
against the width before anything is computed from it, so that nothing computed from a fragment
(a power of ten, a Decimal scale, a time) can cost more than microseconds.

The rules that turn a wire integer into a value (two's complement at a width, meter time to Unix
time) are small functions of their own, so that the shortcuts for common fragments
(ravend/protocol/shortcuts.py), which read integers straight from bytes, apply the very same ones.
"""

from __future__ import annotations

import codecs
import html
import re
from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum
from typing import Any

from ravend.protocol.model import METER_EPOCH_OFFSET
from ravend.protocol.widths import MAC_DIGITS, Width

#: A converter: a child's text (already decoded from cp1252) to its value.
Reader = Callable[[str], Any]


class FieldError(ValueError):
    """A child's text did not fit its converter; becomes a DecodeError naming the field."""


# --- integers: width checks, then the rules that give them meaning ----------------------------

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


def unix_time(seconds: int) -> int | None:
    """Meter seconds (since 2000-01-01 UTC) → Unix seconds; an all-F marker means not set."""
    return None if seconds in _UNSET_TIMES else seconds + METER_EPOCH_OFFSET


def twos_complement(width: Width) -> Callable[[int], int]:
    """Two's complement at the field's width (summations and period usage: 64-bit, never
    truncated to 32 bits)."""
    half, whole = 1 << (width.bits - 1), 1 << width.bits

    def sign(value: int) -> int:
        return value - whole if value >= half else value

    return sign


#: Demand of at most this many hex digits with bit 23 set is ZigBee's int24 (PROTOCOL.md).
_INT24_DIGITS = 6
_INT24_HALF = 1 << 23
_INT24_WHOLE = 1 << 24


def demand_sign(width: Width) -> Callable[[int, int], int]:
    """Positive demand comes as 6 digits, negative as 32-bit two's complement (8 digits); a
    value of at most 6 digits with the top bit of 24 set is ZigBee's int24 and is read as such.
    The second argument is the number of hex digits sent (after any 0x)."""
    half, whole = 1 << (width.bits - 1), 1 << width.bits

    def sign(value: int, digits: int) -> int:
        if value >= half:
            return value - whole
        if digits <= _INT24_DIGITS and value >= _INT24_HALF:
            return value - _INT24_WHOLE
        return value

    return sign


def _hex_value(width: Width) -> Callable[[str], int]:
    """A hex child of ``width``: its value, or a FieldError saying why not."""
    most, top, name = width.digits, width.wire_max, width.describe()

    def read(text: str) -> int:
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
        return value

    return read


def hex_reader(width: Width, unset: frozenset[int]) -> Callable[[str], int | None]:
    """A hex child of ``width`` where the values in ``unset`` mean "not set" (None)."""
    read = _hex_value(width)

    def convert(text: str) -> int | None:
        value = read(text)
        return None if value in unset else value

    return convert


def decimal_reader(width: Width) -> Callable[[str], int]:
    """Channel and ProfileIntervalPeriod are decimal on the wire; tolerate a 0x prefix."""
    most, top, name = width.digits, width.wire_max, width.describe()
    as_hex = _hex_value(Width(width.bits, limit=width.limit))

    def read(text: str) -> int:
        t = text.strip()
        if t[:2] in ("0x", "0X"):
            return as_hex(t)
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
    """Demand as devices print it (demand_sign says how)."""
    read, sign = _hex_value(width), demand_sign(width)

    def convert(text: str) -> int:
        return sign(read(text), _digits(text))

    return convert


def signed_hex(width: Width) -> Callable[[str], int]:
    """A signed hex child, two's complement at its width."""
    read, sign = _hex_value(width), twos_complement(width)

    def convert(text: str) -> int:
        return sign(read(text))

    return convert


def meter_time(width: Width) -> Callable[[str], int | None]:
    """A time child: Unix seconds, or None when the device says "not set"."""
    read = _hex_value(width)

    def convert(text: str) -> int | None:
        return unix_time(read(text))

    return convert


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

    make: Callable[[Width], Reader]


hex_int = Numeric(_hex_value)
decimal_int = Numeric(decimal_reader)
time_field = Numeric(meter_time)
demand_field = Numeric(signed_demand)
signed64 = Numeric(signed_hex)
optional_field = Numeric(optional_hex)
price_field = Numeric(price_value)
interval_field = Numeric(interval_value)


# --- flags, identifiers and text --------------------------------------------------------------


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


#: MAC ids repeat in every fragment: remember the text of the last few (bounded).
_MAC_STR: dict[str, str] = {}
MAC_CACHE_SIZE = 64


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
    if len(_MAC_STR) < MAC_CACHE_SIZE:
        _MAC_STR[text] = "0x" + digits
    return "0x" + digits


def enum_reader(cls: type[Enum]) -> Reader:
    """One of ``cls``'s wire values, case and a final "." aside; an unseen value is kept as its
    text (a new firmware's state is worth storing, not refusing)."""
    by_value = {e.value.lower(): e for e in cls}

    def convert(text: str) -> Any:
        t = text_field(text)
        return by_value.get(t.rstrip(".").lower(), t)

    return convert


# --- bytes to text ------------------------------------------------------------------------------


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
