"""Bounds at the door: every numeric child of every fragment in the decode table is
read at the width the XML API gives it (ravend/protocol/widths.py), by the general path and by
the fast paths alike. Hex of any length and any value either decodes to a value inside its
field's width or is a decode error for that fragment; decoding never raises; nothing computed
from a decoded fragment (a reading's raw, multiplier, divisor, scaled value, meter time) is
wider than a store can bind, and a price's power of ten never exceeds MAX_TRAILING_DIGITS.
"""

from __future__ import annotations

import math
import os
import re
import sqlite3
import time
from dataclasses import fields as dataclass_fields
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ravend.protocol.decoder import StreamDecoder
from ravend.protocol.model import METER_EPOCH_OFFSET, DecodeError
from ravend.protocol.readings import readings_from
from ravend.protocol.shortcuts import SHORTCUTS
from ravend.protocol.table import TABLE
from ravend.protocol.widths import FIELD_WIDTHS, MAX_TRAILING_DIGITS, Width
from tests.helpers.process import ROOT

EXAMPLES = int(os.environ.get("RAVEND_FUZZ_EXAMPLES", "400"))
BOUNDS = settings(max_examples=EXAMPLES, deadline=None,
                  suppress_health_check=[HealthCheck.too_slow])

TIMES = frozenset({"TimeStamp", "UTCTime", "LocalTime", "StartDate", "EndDate", "StartTime",
                   "EndTime", "CurrentStart"})
YES_NO = frozenset({"SuppressLeadingZero", "Enabled", "ConfirmationRequired", "Confirmed"})
INT64 = (-(1 << 63), (1 << 63) - 1)
#: Every (root tag, numeric child) of the decode table: the whole table, not a sample of it.
NUMERIC = sorted((tag, wire) for tag, spec in TABLE.items() for wire in spec.widths)


def baseline_text(tag: str, wire: str) -> str:
    """A valid value for any child of the table."""
    if wire.endswith("MacId") or wire == "ExtPanId":
        return "0x00078100011a4c66"
    if wire in YES_NO:
        return "Y"
    width = TABLE[tag].widths.get(wire)
    if width is not None:
        return "11" if width.decimal else "0x01"
    return "label"


def render(tag: str, override: tuple[str, str] | None = None) -> bytes:
    """The fragment with every child of the table in the table's order, one child's text
    replaced. The order is the usual device layout, so fragments with a fast path take it."""
    lines = [f"<{tag}>"]
    for wire in TABLE[tag].fields:
        text = override[1] if override and override[0] == wire else baseline_text(tag, wire)
        lines.append(f"  <{wire}>{text}</{wire}>")
    lines.append(f"</{tag}>")
    return ("\r\n".join(lines) + "\r\n").encode("latin-1")


def both_paths(wire_bytes: bytes) -> list[Any]:
    """Decode through the fast paths and the general one; they must give the same."""
    fast = StreamDecoder(fast=True).feed(wire_bytes)
    general = StreamDecoder(fast=False).feed(wire_bytes)
    assert fast == general
    return fast


def field_value(fragment: Any, tag: str, wire: str) -> Any:
    name = TABLE[tag].fields[wire][0]
    value = getattr(fragment, name)
    return value[0] if wire in TABLE[tag].repeated else value


def check_within(value: int | None, wire: str, width: Width, wire_value: int) -> None:
    """A decoded value is what the wire said, read at its width, and inside that width."""
    if value is None:  # a "not set" marker: all bits of the field (or of 16/24/32 bits) set
        assert wire_value in (0xFFFF, 0xFFFFFF, 0xFFFFFFFF)
        return
    assert isinstance(value, int) and not isinstance(value, bool)
    if wire in TIMES:
        assert value == wire_value + METER_EPOCH_OFFSET
        time.gmtime(value)  # any meter time is a time the host can format
    elif width.signed:
        half = 1 << (width.bits - 1)
        assert -half <= value < half
        assert value in (wire_value, wire_value - (1 << width.bits), wire_value - (1 << 24))
    else:
        assert value == wire_value <= width.wire_max


def check_readings(fragment: Any) -> None:
    """What a store is handed: bindable integers, finite values, a bounded power of ten."""
    conn = sqlite3.connect(":memory:")
    try:
        for r in readings_from(fragment, 1_700_000_000.0):
            conn.execute("SELECT ?, ?, ?, ?, ?", (r.raw, r.multiplier, r.divisor,
                                                  r.meter_time, r.key_time))  # no OverflowError
            assert isinstance(r.value, Decimal) and r.value.is_finite()
            assert math.isfinite(float(r.value))
            assert 0 <= r.divisor <= max(1 << 32, 10**MAX_TRAILING_DIGITS)
            if r.meter_time is not None:
                time.gmtime(r.meter_time)
    finally:
        conn.close()


# --- the table itself -----------------------------------------------------------------------


def test_every_integer_field_of_the_table_has_a_width() -> None:
    """A numeric child without a width would be read unbounded: the table covers them all, and
    only them (an int-typed dataclass field is numeric on the wire)."""
    for tag, spec in TABLE.items():
        types = {f.name: str(f.type) for f in dataclass_fields(spec.cls)}
        for wire, (name, _) in spec.fields.items():
            assert ("int" in types[name]) == (wire in spec.widths), (tag, wire, types[name])
            if wire in spec.widths:
                assert spec.widths[wire] is FIELD_WIDTHS[wire]


@pytest.mark.parametrize("tag", sorted(TABLE))
def test_the_baseline_fragment_decodes_and_takes_its_fast_path(tag: str) -> None:
    wire_bytes = render(tag)
    (fragment,) = both_paths(wire_bytes)
    assert not isinstance(fragment, DecodeError), fragment
    if tag in SHORTCUTS:  # the property test below goes through the fast path too
        assert SHORTCUTS[tag](bytearray(wire_bytes), 0) is not None


# --- any hex of any length, in every numeric field ------------------------------------------

HEX_DIGITS = "0123456789abcdefABCDEF"
digit_runs = st.one_of(
    st.text(HEX_DIGITS, max_size=40),
    # values at and around every power of two up to 2^80, padded with zeros past the length
    # (64) beyond which significant digits are counted before the text becomes a number
    st.builds(lambda k, d, pad: f"{(1 << k) + d:x}".zfill(pad),
              st.integers(0, 80), st.integers(-1, 1), st.integers(0, 100)),
)
decimal_runs = st.one_of(
    st.text("0123456789", max_size=40),
    st.builds(lambda k, d, pad: str((1 << k) + d).zfill(pad),
              st.integers(0, 80), st.integers(-1, 1), st.integers(0, 100)),
)


@st.composite
def numeric_child(draw: st.DrawFn) -> tuple[str, str, str, int | None]:
    """(root tag, child tag, text, the value the text means, or None when it means nothing)."""
    tag, wire = draw(st.sampled_from(NUMERIC))
    width = FIELD_WIDTHS[wire]
    if width.decimal and draw(st.booleans()):
        digits = draw(decimal_runs)
        return tag, wire, digits, int(digits) if digits else None
    digits = draw(digit_runs)
    prefix = draw(st.sampled_from(["0x", "0X"] if width.decimal else ["0x", "0X", ""]))
    return tag, wire, prefix + digits, int(digits, 16) if digits else None


@BOUNDS
@given(numeric_child())
def test_any_hex_in_any_numeric_field_is_in_bounds_or_a_decode_error(
        case: tuple[str, str, str, int | None]) -> None:
    tag, wire, text, wire_value = case
    width = FIELD_WIDTHS[wire]
    (out,) = both_paths(render(tag, (wire, text)))
    if wire_value is None or wire_value > width.wire_max:
        assert isinstance(out, DecodeError), (tag, wire, text, out)
        assert out.field == wire
        return
    assert not isinstance(out, DecodeError), (tag, wire, text, out)
    check_within(field_value(out, tag, wire), wire, width, wire_value)
    check_readings(out)


# --- the cases that were seen ---------------------------------------------------------------


@pytest.mark.parametrize(("tag", "wire", "text"), [
    ("InstantaneousDemand", "TimeStamp", "0x0000000100000000"),
    ("InstantaneousDemand", "TimeStamp", "0x" + "f" * 10000),  # counted, never made a number
    ("InstantaneousDemand", "Demand", "0x7fffffffffffffff"),
    ("InstantaneousDemand", "Multiplier", "0xffffffffffffffff"),
    ("InstantaneousDemand", "Divisor", "0x100000000"),
    ("CurrentSummationDelivered", "SummationDelivered", "0x10000000000000000"),
    ("PriceCluster", "TrailingDigits", "0x1000000"),  # 10**16777216: seconds of CPU on main
    ("PriceCluster", "TrailingDigits", "0x10"),  # one past what a price can use
    ("PriceCluster", "Currency", "0x10000"),
    ("ConnectionStatus", "Channel", "9" * 5000),  # int() would refuse it with a ValueError
    ("ProfileData", "IntervalData", "0x1000000"),
])
def test_seen_wide_values_are_decode_errors(tag: str, wire: str, text: str) -> None:
    (out,) = both_paths(render(tag, (wire, text)))
    assert isinstance(out, DecodeError), out
    assert out.field == wire


def test_a_mac_id_longer_than_eight_bytes_is_a_decode_error() -> None:
    (out,) = both_paths(render("InstantaneousDemand", ("MeterMacId", "0x" + "1" * 17)))
    assert isinstance(out, DecodeError) and out.field == "MeterMacId"


@pytest.mark.parametrize(("tag", "wire", "text", "expected"), [
    ("InstantaneousDemand", "TimeStamp", "0x0000000000000001", 1 + METER_EPOCH_OFFSET),
    ("InstantaneousDemand", "TimeStamp", "0x" + "0" * 200 + "2", 2 + METER_EPOCH_OFFSET),
    ("InstantaneousDemand", "Demand", "0xfffffa36", -1482),
    ("InstantaneousDemand", "Multiplier", "0xffffffff", 0xFFFFFFFF),
    ("CurrentSummationDelivered", "SummationDelivered", "0xffffffffffffffff", -1),
    ("PriceCluster", "TrailingDigits", "0x0f", MAX_TRAILING_DIGITS),
    ("ConnectionStatus", "Channel", "00000000026", 26),
])
def test_values_within_their_width_are_kept(tag: str, wire: str, text: str,
                                            expected: int) -> None:
    (out,) = both_paths(render(tag, (wire, text)))
    assert field_value(out, tag, wire) == expected
    check_readings(out)


def test_doc_fields_md_gives_the_widths_of_the_table() -> None:
    """doc/fields.md is what operators read: it must say what FIELD_WIDTHS says, for all of it."""
    documented: dict[str, str] = {}
    for line in (ROOT / "doc" / "fields.md").read_text().splitlines():
        cells = [c.strip() for c in line.strip("|").split("|")]
        if not line.startswith("|") or len(cells) != 2 or cells[0] in ("Width", "---"):
            continue
        for name in re.findall(r"\b[A-Z][A-Za-z]+\b", cells[1]):
            if name in FIELD_WIDTHS:
                documented[name] = cells[0]
    assert set(documented) == set(FIELD_WIDTHS)
    for name, said in documented.items():
        width = FIELD_WIDTHS[name]
        assert said == width.describe() + (", decimal" if width.decimal else ""), name
