"""Property tests for framer + decoder: invariants that must hold for any input and any chunking.

1. A valid stream of generated fragments, with noise only between fragments, decodes to the
   generated values, and to exactly the same sequence however it is split into reads.
2. Arbitrary bytes in arbitrary reads: only the documented values come out, no exception escapes,
   and the framer never holds more than MAX_FRAGMENT_BYTES plus the last read.
3. Round trips: what a device prints for a value decodes back to that value.

The default run is short. The benchmark's long fuzz run raises it: RAVEND_FUZZ_EXAMPLES=20000.
"""

from __future__ import annotations

import html
import os
from dataclasses import dataclass
from decimal import Decimal
from itertools import pairwise
from typing import Any, get_args

from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from ravend.protocol import model as m
from ravend.protocol.commands import encode_command
from ravend.protocol.decoder import StreamDecoder
from ravend.protocol.framer import (
    MAX_FRAGMENT_BYTES,
    MAX_PAD_BYTES,
    MAX_TAG_BYTES,
    PREVIEW_BYTES,
    Framer,
    RawFragment,
)
from ravend.protocol.model import METER_EPOCH_OFFSET, DecodeError, Discarded, Kind
from ravend.protocol.readings import readings_from

EXAMPLES = int(os.environ.get("RAVEND_FUZZ_EXAMPLES", "250"))
FUZZ = settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
BLANK = b" \t\r\n\x00"  # what the framer treats as line noise not worth reporting
RECEIVED = 1_700_000_000.0


# --- generating device output -----------------------------------------------------------------


@dataclass(frozen=True)
class Layout:
    eol: str  # "\r\n" (RAVEn) or "\n"
    indent: str  # "" for EMU-2's column-0 children
    compact: bool  # the whole fragment on one line
    upper: bool  # upper-case hex digits
    pad: str  # blanks after the root start tag, before its line break


@dataclass(frozen=True)
class Generated:
    wire: bytes
    expected: Any  # the dataclass the decoder must give


layouts = st.builds(
    Layout,
    eol=st.sampled_from(["\r\n", "\n"]),
    indent=st.sampled_from(["", "  ", "    ", "\t"]),
    compact=st.booleans(),
    upper=st.booleans(),
    pad=st.sampled_from(["", " ", "\t", " " * MAX_PAD_BYTES]),
)


def hx(value: int, width: int, upper: bool) -> str:
    digits = f"{value:0{width}x}"
    return "0x" + (digits.upper() if upper else digits)


def render(tag: str, children: list[tuple[str, str]], layout: Layout) -> bytes:
    if layout.compact:
        text = f"<{tag}>" + "".join(f"<{t}>{x}</{t}>" for t, x in children) + f"</{tag}>"
    else:
        lines = [f"<{tag}>{layout.pad}"]
        lines += [f"{layout.indent}<{t}>{x}</{t}>" for t, x in children]
        text = layout.eol.join([*lines, f"</{tag}>"])
    return text.encode("cp1252")


macs = st.integers(0, 2**64 - 1)
#: Meter clock values; None is sent as 0xffffffff ("not set"). 0xffffff also means not set.
clocks = st.one_of(st.none(), st.integers(0, 0xFFFFFFFE).filter(lambda v: v != 0xFFFFFF))
#: Multiplier 3 exists in the wild; divisors are powers of ten (so kW/kWh are exact decimals).
multipliers = st.sampled_from([0, 1, 3, 10])
divisors = st.sampled_from([0, 1, 10, 1000, 10000])
labels = st.text(
    alphabet="abcXYZ019 -:.,&<>'\"\u00e9\u00e8\u20ac", min_size=1, max_size=24
).map(str.strip).filter(bool)


def clock_text(value: int | None, upper: bool) -> str:
    return hx(0xFFFFFFFF if value is None else value, 8, upper)


def clock_value(value: int | None) -> int | None:
    return None if value is None else value + METER_EPOCH_OFFSET


def mac_text(value: int, upper: bool) -> str:
    return hx(value, 16, upper)


def mac_value(value: int) -> str:
    return f"0x{value:016x}"


def device_demand(value: int, short_negative: bool, upper: bool) -> str:
    """Demand as a device prints it: 6 digits when it fits int24, else 32-bit two's complement."""
    if 0 <= value < 0x800000:
        return hx(value, 6, upper)
    if value >= 0:
        return hx(value, 8, upper)
    if short_negative and value >= -0x800000:
        return hx(value + (1 << 24), 6, upper)
    return hx(value + (1 << 32), 8, upper)


@st.composite
def demands(draw: st.DrawFn) -> Generated:
    lay, dev, meter = draw(layouts), draw(macs), draw(macs)
    value = draw(st.integers(-(2**31), 2**31 - 1))
    stamp, mul, div = draw(clocks), draw(multipliers), draw(divisors)
    u = lay.upper
    children = [
        ("DeviceMacId", mac_text(dev, u)), ("MeterMacId", mac_text(meter, u)),
        ("TimeStamp", clock_text(stamp, u)),
        ("Demand", device_demand(value, draw(st.booleans()), u)),
        ("Multiplier", hx(mul, 8, u)), ("Divisor", hx(div, 8, u)),
        ("DigitsRight", "0x03"), ("DigitsLeft", "0x06"), ("SuppressLeadingZero", "Y"),
    ]
    expected = m.InstantaneousDemand(
        mac_value(dev), mac_value(meter), clock_value(stamp), value, mul, div, 3, 6, True
    )
    return Generated(render("InstantaneousDemand", children, lay), expected)


@st.composite
def summations(draw: st.DrawFn) -> Generated:
    lay, dev, meter, stamp = draw(layouts), draw(macs), draw(macs), draw(clocks)
    delivered = draw(st.integers(0, 2**48 - 1))  # wide: well past 32 bits
    received = draw(st.one_of(st.none(), st.integers(0, 2**48 - 1)))
    mul, div, u = draw(multipliers), draw(divisors), lay.upper
    children = [
        ("DeviceMacId", mac_text(dev, u)), ("MeterMacId", mac_text(meter, u)),
        ("TimeStamp", clock_text(stamp, u)), ("SummationDelivered", hx(delivered, 16, u)),
    ]
    if received is not None:
        children.append(("SummationReceived", hx(received, 16, u)))
    children += [("Multiplier", hx(mul, 8, u)), ("Divisor", hx(div, 8, u))]
    expected = m.CurrentSummationDelivered(
        mac_value(dev), mac_value(meter), clock_value(stamp), delivered, received, mul, div
    )
    return Generated(render("CurrentSummationDelivered", children, lay), expected)


@st.composite
def period_usages(draw: st.DrawFn) -> Generated:
    lay, dev, meter, stamp = draw(layouts), draw(macs), draw(macs), draw(clocks)
    usage = draw(st.integers(-(2**63), 2**63 - 1))  # net metering: signed 64-bit
    start = draw(clocks)
    u = lay.upper
    children = [
        ("DeviceMacId", mac_text(dev, u)), ("MeterMacId", mac_text(meter, u)),
        ("TimeStamp", clock_text(stamp, u)), ("CurrentUsage", hx(usage % 2**64, 16, u)),
        ("Multiplier", "0x00000001"), ("Divisor", "0x000003e8"),
        ("StartDate", clock_text(start, u)),
    ]
    expected = m.CurrentPeriodUsage(
        mac_value(dev), mac_value(meter), clock_value(stamp), usage, 1, 1000,
        start_date=clock_value(start),
    )
    return Generated(render("CurrentPeriodUsage", children, lay), expected)


@st.composite
def prices(draw: st.DrawFn) -> Generated:
    lay, dev, meter, stamp = draw(layouts), draw(macs), draw(macs), draw(clocks)
    price = draw(st.one_of(st.none(), st.integers(0, 0xFFFFFFFE)))
    currency = draw(st.sampled_from([840, 978, 998, 36, 0]))
    digits, tier = draw(st.integers(0, 9)), draw(st.integers(0, 8))
    label = draw(st.one_of(st.none(), labels))
    duration = draw(st.one_of(st.none(), st.integers(0, 0xFFFE)))
    u = lay.upper
    children = [
        ("DeviceMacId", mac_text(dev, u)), ("MeterMacId", mac_text(meter, u)),
        ("TimeStamp", clock_text(stamp, u)),
        ("Price", hx(0xFFFFFFFF if price is None else price, 8, u)),
        ("Currency", hx(currency, 4, u)), ("TrailingDigits", hx(digits, 2, u)),
        ("Tier", hx(tier, 2, u)),
    ]
    if label is not None:
        children.append(("RateLabel", html.escape(label, quote=False)))
    children.append(("Duration", hx(0xFFFF if duration is None else duration, 4, u)))
    expected = m.PriceCluster(
        mac_value(dev), mac_value(meter), clock_value(stamp), price, currency, digits, tier,
        rate_label=label, duration=duration,
    )
    return Generated(render("PriceCluster", children, lay), expected)


@st.composite
def statuses(draw: st.DrawFn) -> Generated:
    lay, dev, meter = draw(layouts), draw(macs), draw(macs)
    state = draw(st.sampled_from(list(m.ConnectionState)))
    text = state.value + draw(st.sampled_from(["", "..."]))
    channel, link = draw(st.integers(11, 26)), draw(st.integers(0, 100))
    u = lay.upper
    children = [
        ("DeviceMacId", mac_text(dev, u)), ("MeterMacId", mac_text(meter, u)),
        ("Status", text), ("Description", " "), ("Channel", str(channel)),
        ("LinkStrength", hx(link, 2, u)),
    ]
    expected = m.ConnectionStatus(
        mac_value(dev), mac_value(meter), state, description="", channel=channel,
        link_strength=link,
    )
    return Generated(render("ConnectionStatus", children, lay), expected)


@st.composite
def meter_lists(draw: st.DrawFn) -> Generated:
    lay, dev = draw(layouts), draw(macs)
    meters = draw(st.lists(macs, max_size=5))
    children = [("DeviceMacId", mac_text(dev, lay.upper))]
    children += [("MeterMacId", mac_text(x, lay.upper)) for x in meters]
    expected = m.MeterList(mac_value(dev), tuple(mac_value(x) for x in meters))
    return Generated(render("MeterList", children, lay), expected)


@st.composite
def profiles(draw: st.DrawFn) -> Generated:
    lay, dev, meter, end = draw(layouts), draw(macs), draw(macs), draw(clocks)
    intervals = draw(st.lists(st.one_of(st.none(), st.integers(0, 0xFFFFFE)), max_size=12))
    u = lay.upper
    children = [
        ("DeviceMacId", mac_text(dev, u)), ("MeterMacId", mac_text(meter, u)),
        ("EndTime", clock_text(end, u)), ("Status", "0x00"), ("ProfileIntervalPeriod", "2"),
        ("NumberOfPeriodsDelivered", hx(len(intervals), 2, u)),
    ]
    children += [("IntervalData", hx(0xFFFFFF if v is None else v, 6, u)) for v in intervals]
    expected = m.ProfileData(
        mac_value(dev), mac_value(meter), clock_value(end), 0, 2, len(intervals),
        tuple(intervals),
    )
    return Generated(render("ProfileData", children, lay), expected)


@st.composite
def messages(draw: st.DrawFn) -> Generated:
    lay, dev, meter, stamp = draw(layouts), draw(macs), draw(macs), draw(clocks)
    text, filler = draw(labels), draw(st.integers(0, 4))
    u = lay.upper
    children = [
        ("DeviceMacId", mac_text(dev, u)), ("MeterMacId", mac_text(meter, u)),
        ("TimeStamp", clock_text(stamp, u)), ("Id", "0x00000007"),
        ("Text", html.escape(text, quote=False) + "\u00ff" * filler),  # 0xff filler bytes
        ("ConfirmationRequired", "N"),
    ]
    expected = m.MessageCluster(
        mac_value(dev), mac_value(meter), clock_value(stamp), id="0x00000007", text=text,
        confirmation_required=False,
    )
    return Generated(render("MessageCluster", children, lay), expected)


@st.composite
def warnings(draw: st.DrawFn) -> Generated:
    text = draw(st.sampled_from(["Unknown command", "Invalid Argument", "Meter not found"]))
    return Generated(render("Warning", [("Text", text)], draw(layouts)), m.Warning(text))


@st.composite
def unknowns(draw: st.DrawFn) -> Generated:
    """A root tag this version does not know: only recognisable as a container on its own line."""
    lay = draw(layouts.map(lambda x: Layout(x.eol, x.indent, False, x.upper, x.pad)))
    size = draw(st.one_of(st.integers(0, 10), st.just(MAX_TAG_BYTES - 2)))  # up to the longest
    tag = "Zz" + draw(st.text(alphabet="abXY09_", min_size=size, max_size=size))
    fields = draw(st.lists(st.tuples(
        st.from_regex(r"[A-Z][A-Za-z]{0,10}", fullmatch=True),
        st.text(alphabet="abc 0x19.", max_size=10),
    ), max_size=4))
    raw = render(tag, fields, lay)
    return Generated(raw, m.UnknownFragment(tag, tuple(fields), raw))


fragments = st.one_of(
    demands(), summations(), period_usages(), prices(), statuses(), meter_lists(), profiles(),
    messages(), warnings(), unknowns(),
)

#: Line noise that must never be reported.
blank_gaps = st.lists(
    st.sampled_from([b" ", b"\t", b"\r", b"\n", b"\r\n", b"\x00", b"\x00\x00\x00"]), max_size=6
).map(b"".join)
#: Junk bytes (no '<', so they cannot start anything): reset garbage, high-bit bytes, text.
junk_gaps = st.binary(max_size=40).map(lambda b: b.replace(b"<", b""))


# --- feeding ----------------------------------------------------------------------------------


def split(data: bytes, cuts: list[int]) -> list[bytes]:
    """``data`` cut at the given offsets; never an empty read (that would mean end of stream)."""
    points = sorted({c % (len(data) + 1) for c in cuts} | {0, len(data)})
    return [data[a:b] for a, b in pairwise(points) if b > a]


def run_decoder(chunks: list[bytes], *, fast: bool = True) -> list[Any]:
    decoder = StreamDecoder(fast=fast)
    out: list[Any] = []
    for chunk in chunks:
        out += decoder.feed(chunk)
        assert decoder.framer.buffered <= MAX_FRAGMENT_BYTES + len(chunk)
    out += decoder.feed(b"")
    assert decoder.framer.buffered == 0
    return out


def values(out: list[Any]) -> list[Any]:
    return [o for o in out if not isinstance(o, Discarded)]


#: What the stream tests are given: the fragments, Hypothesis's data to draw the gaps from, and
#: where the reads cut the stream.
STREAM = {
    "frags": st.lists(fragments, min_size=1, max_size=6),
    "data": st.data(),
    "cuts": st.lists(st.integers(min_value=0), max_size=25),
}


def draw_stream(frags: list[Generated], data: st.DataObject,
                gap: st.SearchStrategy[bytes]) -> tuple[list[bytes], bytes]:
    """A gap drawn from ``gap`` before, between and after the fragments; the gaps and the stream."""
    gaps = data.draw(st.lists(gap, min_size=len(frags) + 1, max_size=len(frags) + 1))
    stream = gaps[0]
    for frag, after in zip(frags, gaps[1:], strict=True):
        stream += frag.wire + after
    return gaps, stream


# --- 1. any chunking gives the same fragments -------------------------------------------------


@FUZZ
@given(**STREAM)
def test_valid_stream_with_blank_noise_decodes_the_same_for_any_split(
    frags: list[Generated], data: st.DataObject, cuts: list[int]
) -> None:
    _, stream = draw_stream(frags, data, blank_gaps)
    whole = run_decoder([stream])
    assert whole == [f.expected for f in frags]  # no Discarded at all for blank noise
    assert run_decoder(split(stream, cuts)) == whole
    assert run_decoder([stream[i : i + 1] for i in range(len(stream))]) == whole


@FUZZ
@given(**STREAM)
def test_valid_stream_with_junk_between_fragments_decodes_the_same_for_any_split(
    frags: list[Generated], data: st.DataObject, cuts: list[int]
) -> None:
    gaps, stream = draw_stream(frags, data, junk_gaps)
    whole = run_decoder([stream])
    assert values(whole) == [f.expected for f in frags]
    # Whole: one report per gap holding more than blanks, counting the gap exactly.
    dirty = [g for g in gaps if g.strip(BLANK)]
    assert [d.count for d in whole if isinstance(d, Discarded)] == [len(g) for g in dirty]
    chunked = run_decoder(split(stream, cuts))
    assert values(chunked) == values(whole)
    # Split: reports may be cut up, but cover every junk byte and nothing beyond the gaps.
    reported = sum(d.count for d in chunked if isinstance(d, Discarded))
    assert sum(len(g.translate(None, BLANK)) for g in gaps) <= reported <= sum(map(len, gaps))


# --- 2. arbitrary bytes -----------------------------------------------------------------------

PIECES = [
    b"<InstantaneousDemand>", b"</InstantaneousDemand>", b"<Demand>0x001540</Demand>",
    b"<Demand>0xzz</Demand>", b"<DeviceMacId>0xd8d5b9000000054e</DeviceMacId>",
    b"<Warning>\r\n", b"<Text>Unknown command</Text>", b"</Warning>", b"<Zz>\n", b"</Zz>",
    b"<!DOCTYPE a [<!ENTITY b \"c\">]>", b"&b;", b"<?xml?>", b"\r\n", b"\n", b"\x00", b"\xff",
    b"<", b">", b"</", b"<Warning>", b"  ", b"<MeterList>\r\n", b"</MeterList>",
    b"<Warning>\r\n  <Text>Unknown command</Text>\r\n</Warning>\r\n",
    b"<InstantaneousDemand><DeviceMacId>0x00158d00001ab777</DeviceMacId><MeterMacId>"
    b"0x0013500100d8c028</MeterMacId><TimeStamp>0x1cc0c525</TimeStamp><Demand>0xfffa36</Demand>"
    b"<Multiplier>0x00000001</Multiplier><Divisor>0x000003e8</Divisor></InstantaneousDemand>",
]
#: Every value StreamDecoder may yield.
DOCUMENTED = (*get_args(m.Fragment), DecodeError, Discarded)
noisy_bytes = st.lists(
    st.one_of(
        st.binary(max_size=64),
        st.sampled_from(PIECES),
        st.tuples(st.sampled_from(PIECES), st.integers(1, 2500)).map(lambda t: t[0] * t[1]),
        # A fragment that never closes, around and past the cap.
        st.integers(500, 2000).map(
            lambda n: b"<InstantaneousDemand>\r\n" + b"  <Demand>0x000001</Demand>\r\n" * n
        ),
    ),
    max_size=40,
).map(b"".join)


@FUZZ
@given(blob=noisy_bytes, cuts=st.lists(st.integers(min_value=0), max_size=40))
def test_arbitrary_bytes_give_only_documented_values_with_bounded_memory(
    blob: bytes, cuts: list[int]
) -> None:
    decoder = StreamDecoder()
    out: list[Any] = []
    for chunk in split(blob, cuts):
        out += decoder.feed(chunk)  # any exception here fails the test
        assert decoder.framer.buffered <= MAX_FRAGMENT_BYTES + len(chunk)
    out += decoder.feed(b"")
    assert decoder.framer.buffered == 0
    for value in out:
        assert isinstance(value, DOCUMENTED), value
        if isinstance(value, Discarded):
            assert value.count > 0 and 0 < len(value.preview) <= PREVIEW_BYTES
            event(value.reason)
        elif isinstance(value, DecodeError):
            assert value.raw and value.tag
            event("DecodeError")
        else:
            event(type(value).__name__)
            for reading in readings_from(value, RECEIVED):
                assert isinstance(reading.value, Decimal)


@FUZZ
@given(blob=noisy_bytes, cuts=st.lists(st.integers(min_value=0), max_size=40))
def test_framer_only_cuts_whole_elements_out_of_the_input(blob: bytes, cuts: list[int]) -> None:
    framer = Framer()
    events = []
    for chunk in split(blob, cuts):
        events += framer.feed(chunk)
    events += framer.feed(b"")
    reported = 0
    for ev in events:
        assert isinstance(ev, (RawFragment, Discarded))
        if isinstance(ev, RawFragment):
            assert ev.raw.startswith(b"<" + ev.tag.encode() + b">")
            assert ev.raw.endswith(b"</" + ev.tag.encode() + b">")
            assert ev.raw in blob
            reported += len(ev.raw)
        else:
            reported += ev.count
    assert reported <= len(blob)


# --- 3. round trips ---------------------------------------------------------------------------


@FUZZ
@given(gen=demands())
def test_instantaneous_demand_round_trips_from_device_text(gen: Generated) -> None:
    [d] = run_decoder([gen.wire])
    want = gen.expected
    assert d == want
    [r] = readings_from(d, RECEIVED)
    assert (r.raw, r.multiplier, r.divisor) == (want.demand, want.multiplier, want.divisor)
    expect = Decimal(want.demand * (want.multiplier or 1)) / Decimal(want.divisor or 1)
    assert r.value == expect
    assert r.meter_time == want.time_stamp
    assert r.kind is Kind.DEMAND and r.unit == "kW"


@FUZZ
@given(gen=st.one_of(summations(), period_usages()))
def test_energy_totals_round_trip_exactly(gen: Generated) -> None:
    [f] = run_decoder([gen.wire])
    assert f == gen.expected
    for r in readings_from(f, RECEIVED):
        assert r.value * Decimal(r.divisor or 1) == Decimal(r.raw * (r.multiplier or 1))


@FUZZ
@given(price=st.integers(0, 0xFFFFFFFE), digits=st.integers(0, 9))
def test_set_current_price_round_trips_through_our_own_reader(price: int, digits: int) -> None:
    [cmd] = run_decoder([encode_command("set_current_price",
                                        {"Price": price, "TrailingDigits": digits})])
    assert isinstance(cmd, m.UnknownFragment) and cmd.tag == "Command"
    fields = dict(cmd.fields)
    assert int(fields["Price"], 16) == price
    assert int(fields["TrailingDigits"], 16) == digits


# --- 4. the fast paths change nothing but the speed -------------------------------------------


@FUZZ
@given(**STREAM)
def test_fast_paths_give_exactly_what_the_general_path_gives(
    frags: list[Generated], data: st.DataObject, cuts: list[int]
) -> None:
    _, stream = draw_stream(frags, data, st.one_of(blank_gaps, junk_gaps))
    general = run_decoder([stream], fast=False)
    assert run_decoder([stream]) == general
    assert run_decoder(split(stream, cuts)) == run_decoder(split(stream, cuts), fast=False)


@FUZZ
@given(blob=noisy_bytes, cuts=st.lists(st.integers(min_value=0), max_size=40))
def test_fast_paths_agree_on_arbitrary_bytes(blob: bytes, cuts: list[int]) -> None:
    assert run_decoder(split(blob, cuts)) == run_decoder(split(blob, cuts), fast=False)
