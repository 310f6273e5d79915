"""Hypothesis strategies for whole device fragments, derived from the decoder's own table.

Every root tag of ``ravend.protocol.table.TABLE`` and every child it knows is covered, so a tag
or field added to the table is generated without touching this module. A child's converter says
what kind of text it takes (MAC id, Y/N flag, free text, one of an enum's values); everything
else is a number, written as hex of any width: 0 to 40 digits, with or without 0x, upper or
lower case. Most fragments are written the way a device writes them (realistic widths and
values from the XML API, so that the decoder accepts most of them and the test is not vacuous);
the rest have wild numbers, a missing child, or are noise (cut-off fragments, nested markup,
DTDs, unknown roots, binary junk).

Meter MAC ids come from a small pool of our own (never the simulator's prefixes), so that keys
collide often enough to exercise the same-key rule and never collide with the simulator's own
readings.
"""

from __future__ import annotations

from collections.abc import Callable
from enum import Enum
from typing import Any

from hypothesis import strategies as st

from ravend.protocol import fields
from ravend.protocol.model import METER_EPOCH_OFFSET
from ravend.protocol.table import TABLE

DEVICE_MACS = ("0xd8d5b90000aa0001", "0xd8d5b90000aa0002")
METER_MACS = ("0x00aabb0000000001", "0x00aabb0000000002", "0x00aabb0000000003")
EOL = "\r\n"

#: Meter seconds (since 2000) for 2001-01-01 .. 2030-01-01: times a meter plausibly sends.
_YEAR = 31_536_000
VALID_TIME = (978_307_200 - METER_EPOCH_OFFSET, 30 * _YEAR)
UNSET_TIME = 0xFFFFFFFF


def _kind_of(convert: Callable[[str], Any]) -> str | type[Enum]:
    """What text a child takes, read from its converter: 'mac', 'flag', 'text', an Enum class,
    or 'number' for everything else (new numeric converters are covered by default)."""
    if convert is fields.mac:
        return "mac"
    if convert is fields.yes_no:
        return "flag"
    if convert is fields.text_field:
        return "text"
    for cell in getattr(convert, "__closure__", None) or ():
        contents = cell.cell_contents
        if isinstance(contents, dict) and contents and all(
                isinstance(v, Enum) for v in contents.values()):
            return type(next(iter(contents.values())))
    return "number"


#: Realistic (digits, low, high) per numeric child, from the XML API's field widths; a child not
#: listed gets two digits of a small value, which fits any width the API could give it.
_TIME = (8, *VALID_TIME)
REALISTIC: dict[str, tuple[int, int, int]] = {
    "TimeStamp": _TIME, "UTCTime": _TIME, "LocalTime": _TIME, "StartTime": _TIME,
    "StartDate": _TIME, "EndDate": _TIME, "CurrentStart": _TIME, "EndTime": _TIME,
    "Demand": (8, 0, 0xFFFFFFFF),
    "SummationDelivered": (16, 0, 1 << 40), "SummationReceived": (16, 0, 1 << 40),
    "CurrentUsage": (16, 0, 1 << 40), "LastUsage": (16, 0, 1 << 40),
    "BlockPeriodConsumption": (16, 0, 1 << 40),
    "Multiplier": (8, 0, 0xFFFF), "Divisor": (8, 0, 0xFFFF),
    "BlockPeriodConsumptionMultiplier": (8, 0, 0xFFFF),
    "BlockPeriodConsumptionDivisor": (8, 0, 0xFFFF),
    "Price": (8, 0, 0xFFFFFFFF), "Currency": (4, 0, 999), "TrailingDigits": (2, 0, 9),
    "Tier": (2, 0, 5), "Duration": (4, 0, 0xFFFF), "CurrentDuration": (4, 0, 0xFFFF),
    "Frequency": (8, 0, 0xFFFF), "IntervalData": (6, 0, 0xFFFF),
}
#: Children that are decimal on the wire (fields.decimal_int): (low, high).
DECIMAL = {"Channel": (11, 26), "ProfileIntervalPeriod": (0, 7)}
_TIME_TAGS = frozenset(t for t, spec in REALISTIC.items() if spec == _TIME)


def _hex(value: int, digits: int, upper: bool) -> str:
    text = f"{value:0{digits}x}"
    return text.upper() if upper else text


@st.composite
def wild_number(draw: st.DrawFn) -> str:
    """Hex of any width (0..40 digits), any prefix and case, now and then with blanks around."""
    digits = draw(st.integers(0, 40))
    value = draw(st.integers(0, 16**digits - 1)) if digits else 0
    body = _hex(value, digits, draw(st.booleans())) if digits else ""
    text = draw(st.sampled_from(("0x", "0X", ""))) + body
    if draw(st.integers(0, 9)) == 0:
        text = draw(st.sampled_from((" ", "\t", "-", "+", "_"))) + text
    return text


@st.composite
def realistic_number(draw: st.DrawFn, tag: str) -> str:
    if tag in DECIMAL:
        return str(draw(st.integers(*DECIMAL[tag])))
    digits, low, high = REALISTIC.get(tag, (2, 0, 0x7F))
    if tag in _TIME_TAGS and draw(st.integers(0, 19)) == 0:
        value = UNSET_TIME  # "not set": the reading is timed by the host
    else:
        value = draw(st.integers(low, high))
    return "0x" + _hex(value, digits, draw(st.booleans()))


_TEXT = st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7E, blacklist_characters="<"),
                max_size=24)


def child_text(tag: str, kind: str | type[Enum], wild: bool) -> st.SearchStrategy[str]:
    if kind == "mac":
        pool = METER_MACS if tag == "MeterMacId" else DEVICE_MACS
        plain = st.sampled_from(pool)
        return st.one_of(plain, wild_number()) if wild else plain
    if kind == "flag":
        return st.sampled_from(("Y", "N", "y", " N ", "maybe", "")) if wild else \
            st.sampled_from(("Y", "N"))
    if kind == "text":
        return _TEXT
    if isinstance(kind, type):
        return st.one_of(st.sampled_from([e.value for e in kind]), _TEXT) if wild else \
            st.sampled_from([e.value for e in kind])
    return wild_number() if wild else realistic_number(tag)


TAGS = tuple(TABLE)
#: Tag -> [(wire child tag, what text it takes, required)], in the table's order.
CHILDREN: dict[str, list[tuple[str, str | type[Enum], bool]]] = {
    tag: [(wire, _kind_of(convert), name in spec.required)
          for wire, (name, convert) in spec.fields.items()]
    for tag, spec in TABLE.items()
}
NUMERIC_CHILDREN = {(tag, wire) for tag, rows in CHILDREN.items()
                    for wire, kind, _ in rows if kind == "number"}


def render(tag: str, children: list[tuple[str, str]]) -> bytes:
    body = "".join(f"  <{wire}>{text}</{wire}>{EOL}" for wire, text in children)
    return f"<{tag}>{EOL}{body}</{tag}>{EOL}".encode("cp1252", "replace")


@st.composite
def fragment(draw: st.DrawFn, tag: str | None = None) -> bytes:
    """One fragment of a table tag: mostly as a device writes it, sometimes with wild numbers
    (one child or all of them), a missing required child, or optional children left out."""
    tag = tag or draw(st.sampled_from(TAGS))
    mode = draw(st.sampled_from(("valid",) * 6 + ("one wild", "all wild", "missing")))
    rows = CHILDREN[tag]
    wild_child = draw(st.integers(0, len(rows) - 1))
    children: list[tuple[str, str]] = []
    for i, (wire, kind, required) in enumerate(rows):
        if not required and draw(st.integers(0, 3)) == 0:
            continue  # optional children come and go
        if mode == "missing" and i == wild_child:
            continue
        wild = mode == "all wild" or (mode == "one wild" and i == wild_child)
        children.append((wire, draw(child_text(wire, kind, wild))))
        repeats = TABLE[tag].repeated
        if wire in repeats:
            for _ in range(draw(st.integers(0, 4))):
                children.append((wire, draw(child_text(wire, kind, wild))))
    return render(tag, children)


@st.composite
def noise(draw: st.DrawFn) -> bytes:
    """Input the decoder must refuse or skip: never a reading."""
    kind = draw(st.sampled_from(("cut", "nested", "unknown root", "dtd", "junk")))
    if kind == "cut":
        whole = draw(fragment())
        return whole[: draw(st.integers(1, len(whole) - 2))] + EOL.encode()
    if kind == "nested":
        tag = draw(st.sampled_from(TAGS))
        return f"<{tag}>{EOL}  <A><B>0x1</B></A>{EOL}</{tag}>{EOL}".encode()
    if kind == "unknown root":
        return f"<FutureThing>{EOL}  <Field>0x1</Field>{EOL}</FutureThing>{EOL}".encode()
    if kind == "dtd":
        return (b'<!DOCTYPE x [<!ENTITY a "b">]>\r\n<InstantaneousDemand>\r\n'
                b"  <Demand>&a;</Demand>\r\n</InstantaneousDemand>\r\n")
    return draw(st.binary(max_size=200)).replace(b"<", b"(") + EOL.encode()


def piece() -> st.SearchStrategy[bytes]:
    """What goes on the wire next: a table fragment (most of the time) or noise."""
    return st.one_of(fragment(), fragment(), fragment(), noise())
