"""Framer: cutting the device's byte stream into whole fragments (PROTOCOL.md, "Stream quirks").

Every stream is fed whole, byte by byte, and in random chunks followed by the start of a next
fragment that never completes (trailing bytes must neither produce an event nor disturb the earlier
ones). Fragments must come out identical every way. Discarded events may be split differently by
the chunking (a byte-wise feed reports junk a read at a time), so their counts are checked as a
range there and exactly only for the whole feed.
"""

from __future__ import annotations

import os
import random
from pathlib import Path

import pytest

from ravend.protocol.framer import (
    MAX_FRAGMENT_BYTES,
    MAX_PAD_BYTES,
    MAX_TAG_BYTES,
    PREVIEW_BYTES,
    Event,
    Framer,
    RawFragment,
)
from ravend.protocol.model import Discarded

# --- helpers ----------------------------------------------------------------------------------

#: The shared captures (as in test_fixtures.py): RAVEND_FIXTURES or a tests/fixtures copy wins.
_CANDIDATES = [os.environ.get("RAVEND_FIXTURES", ""), Path(__file__).parent / "fixtures",
               "/work/shared/fixtures"]
FIXTURES = next((Path(c) for c in _CANDIDATES if c and Path(c).is_dir()), Path(_CANDIDATES[-1]))

#: The start of a fragment that never finishes: fed after a stream, it must change nothing.
TRAILER = b"<InstantaneousDemand>\r\n  <DeviceMacId>0xd8d5b90000"


def crlf(text: str) -> bytes:
    """A fragment as a RAVEn prints it: the test's LF lines with CRLF endings."""
    return text.replace("\n", "\r\n").encode("ascii")


DEMAND = crlf(
    """<InstantaneousDemand>
  <DeviceMacId>0xd8d5b9000000054e</DeviceMacId>
  <MeterMacId>0x00078100011a4c66</MeterMacId>
  <TimeStamp>0x25117e9f</TimeStamp>
  <Demand>0x001540</Demand>
  <Multiplier>0x00000001</Multiplier>
  <Divisor>0x000003e8</Divisor>
  <DigitsRight>0x03</DigitsRight>
  <DigitsLeft>0x06</DigitsLeft>
  <SuppressLeadingZero>Y</SuppressLeadingZero>
</InstantaneousDemand>"""
)

SUMMATION = crlf(
    """<CurrentSummationDelivered>
  <DeviceMacId>0xd8d5b9000000054e</DeviceMacId>
  <MeterMacId>0x00078100011a4c66</MeterMacId>
  <TimeStamp>0x25117ea8</TimeStamp>
  <SummationDelivered>0x0000000001f1a2b3</SummationDelivered>
  <SummationReceived>0x0000000000000000</SummationReceived>
  <Multiplier>0x00000001</Multiplier>
  <Divisor>0x000003e8</Divisor>
  <DigitsRight>0x01</DigitsRight>
  <DigitsLeft>0x06</DigitsLeft>
  <SuppressLeadingZero>Y</SuppressLeadingZero>
</CurrentSummationDelivered>"""
)

WARNING = crlf(
    """<Warning>
  <Text>Unknown command</Text>
</Warning>"""
)


def buffered(framer: Framer) -> int:
    """Bytes the framer holds between feeds (what a hostile stream could make it pin)."""
    return framer.buffered


def random_chunks(data: bytes, rng: random.Random) -> list[bytes]:
    chunks = []
    i = 0
    while i < len(data):
        n = rng.randint(1, 40)
        chunks.append(data[i : i + n])
        i += n
    return chunks


def feed_chunks(chunks: list[bytes]) -> tuple[list[Event], Framer]:
    framer = Framer()
    events: list[Event] = []
    for chunk in chunks:
        events += framer.feed(chunk)
    return events, framer


def three_ways(data: bytes, *, trailing: bool = True) -> dict[str, list[Event]]:
    """Events per way of feeding, up to (not including) end of stream.

    With ``trailing`` the random-chunk ways append TRAILER and check that end of stream then
    reports exactly that half fragment.
    """
    ways: dict[str, list[Event]] = {}
    ways["whole"], _ = feed_chunks([data])
    ways["bytewise"], _ = feed_chunks([data[i : i + 1] for i in range(len(data))])
    for seed in (1, 2, 3):
        rng = random.Random(seed)
        tail = TRAILER if trailing else b""
        events, framer = feed_chunks(random_chunks(data + tail, rng))
        if trailing:
            end = framer.feed(b"")
            assert end == [Discarded("stream ended inside a fragment", len(TRAILER), TRAILER)]
        ways[f"chunks{seed}"] = events
    return ways


def fragments(events: list[Event]) -> list[RawFragment]:
    return [e for e in events if isinstance(e, RawFragment)]


def discards(events: list[Event]) -> list[Discarded]:
    return [e for e in events if isinstance(e, Discarded)]


def assert_same_fragments(ways: dict[str, list[Event]], expected: list[RawFragment]) -> None:
    for name, events in ways.items():
        assert fragments(events) == expected, name
        assert all(isinstance(e, (RawFragment, Discarded)) for e in events), name


# --- clean streams ----------------------------------------------------------------------------


def test_single_crlf_fragment_is_cut_exactly_at_its_close_tag() -> None:
    ways = three_ways(DEMAND + b"\r\n")
    assert_same_fragments(ways, [RawFragment("InstantaneousDemand", DEMAND)])
    for name, events in ways.items():
        assert discards(events) == [], name


def test_lf_only_fragment_is_cut_like_crlf() -> None:
    lf = DEMAND.replace(b"\r\n", b"\n")
    ways = three_ways(lf + b"\n")
    assert_same_fragments(ways, [RawFragment("InstantaneousDemand", lf)])
    for events in ways.values():
        assert discards(events) == []


def test_emu2_children_at_column_zero_do_not_start_fragments() -> None:
    data = (FIXTURES / "emu2-demand-multiplier-3.xml").read_bytes()
    assert b"\n<Demand>" in data  # the quirk under test: children are not indented
    ways = three_ways(data + data)
    one = RawFragment("InstantaneousDemand", data.rstrip(b"\n"))
    # The trailing LF of the first copy is noise before the second start, not a fragment byte.
    assert_same_fragments(ways, [one, one])
    for events in ways.values():
        assert discards(events) == []


def test_compact_one_line_fragment_is_framed() -> None:
    line = (
        b"<InstantaneousDemand><DeviceMacId>0xd8d5b9000000054e</DeviceMacId>"
        b"<MeterMacId>0x00078100011a4c66</MeterMacId><TimeStamp>0x25117e9f</TimeStamp>"
        b"<Demand>0x001540</Demand><Multiplier>0x00000001</Multiplier>"
        b"<Divisor>0x000003e8</Divisor></InstantaneousDemand>"
    )
    ways = three_ways(line + b"\r\n" + WARNING + b"\r\n")
    assert_same_fragments(
        ways, [RawFragment("InstantaneousDemand", line), RawFragment("Warning", WARNING)]
    )


def test_several_fragments_in_one_read_come_out_in_order() -> None:
    stream = DEMAND + b"\r\n" + SUMMATION + b"\r\n" + WARNING + b"\r\n" + DEMAND + b"\r\n"
    ways = three_ways(stream)
    assert_same_fragments(
        ways,
        [
            RawFragment("InstantaneousDemand", DEMAND),
            RawFragment("CurrentSummationDelivered", SUMMATION),
            RawFragment("Warning", WARNING),
            RawFragment("InstantaneousDemand", DEMAND),
        ],
    )


def test_fragment_without_line_break_after_close_tag_is_not_held_back() -> None:
    framer = Framer()
    assert framer.feed(DEMAND) == [RawFragment("InstantaneousDemand", DEMAND)]
    assert buffered(framer) == 0


def test_unknown_root_tag_alone_on_its_line_is_framed_as_a_container() -> None:
    unknown = crlf(
        """<FirmwareNotice>
  <DeviceMacId>0xd8d5b9000000054e</DeviceMacId>
  <Version>2.0.4</Version>
</FirmwareNotice>"""
    )
    ways = three_ways(unknown + b"\r\n" + DEMAND + b"\r\n")
    assert_same_fragments(
        ways,
        [RawFragment("FirmwareNotice", unknown), RawFragment("InstantaneousDemand", DEMAND)],
    )


@pytest.mark.parametrize(
    "start",
    [
        pytest.param(b"<FutureThing> \t \t \t \t ", id="blanks-before-line-break"),
        pytest.param(b"<" + b"F" * MAX_TAG_BYTES + b">", id="longest-name"),
        pytest.param(b"<" + b"F" * MAX_TAG_BYTES + b">" + b" " * MAX_PAD_BYTES, id="both"),
    ],
)
def test_unknown_container_start_split_anywhere_is_still_found(start: bytes) -> None:
    # A read ending inside the longest possible start tag must keep all of it.
    tag = start[1 : start.index(b">")]
    unknown = start + b"\r\n  <A>1</A>\r\n</" + tag + b">"
    ways = three_ways(b"\r\n" + unknown + b"\r\n" + DEMAND + b"\r\n")
    assert_same_fragments(
        ways, [RawFragment(tag.decode(), unknown), RawFragment("InstantaneousDemand", DEMAND)]
    )


@pytest.mark.parametrize(
    "start",
    [
        pytest.param(b"<FutureThing>" + b" " * (MAX_PAD_BYTES + 1), id="too-many-blanks"),
        pytest.param(b"<" + b"F" * (MAX_TAG_BYTES + 1) + b">", id="name-too-long"),
    ],
)
def test_overlong_start_tag_is_noise_whatever_the_split(start: bytes) -> None:
    tag = start[1 : start.index(b">")]
    unknown = start + b"\r\n  <A>1</A>\r\n</" + tag + b">\r\n"
    ways = three_ways(unknown + DEMAND + b"\r\n")
    assert_same_fragments(ways, [RawFragment("InstantaneousDemand", DEMAND)])
    for name, events in ways.items():
        assert discards(events), name


# --- noise between fragments ------------------------------------------------------------------


@pytest.mark.parametrize(
    "noise",
    [
        pytest.param(b"\x00\x00\x00", id="nul"),
        pytest.param(b"\r", id="stray-cr"),
        pytest.param(b"\r\n\r\n\n\n", id="blank-lines"),
        pytest.param(b" \t \r\x00\n\x00\r\r\n", id="mixed-whitespace"),
    ],
)
def test_whitespace_and_nul_between_fragments_report_nothing(noise: bytes) -> None:
    stream = noise + DEMAND + noise + SUMMATION + noise
    ways = three_ways(stream)
    assert_same_fragments(
        ways,
        [
            RawFragment("InstantaneousDemand", DEMAND),
            RawFragment("CurrentSummationDelivered", SUMMATION),
        ],
    )
    for name, events in ways.items():
        assert discards(events) == [], name


def test_high_bit_bytes_between_fragments_are_discarded_with_their_count() -> None:
    junk = bytes(range(0x80, 0x100)) + b"\xff\xfe\x00\xff"  # what a device reset leaves
    gap = b"\r\n" + junk + b"\r\n"
    ways = three_ways(DEMAND + gap + SUMMATION + b"\r\n")
    assert_same_fragments(
        ways,
        [
            RawFragment("InstantaneousDemand", DEMAND),
            RawFragment("CurrentSummationDelivered", SUMMATION),
        ],
    )
    # Whole: one event for the whole gap, counted exactly, before the second fragment.
    whole = ways["whole"]
    assert [type(e) for e in whole] == [RawFragment, Discarded, RawFragment]
    assert whole[1].count == len(gap)
    assert whole[1].preview == gap[:PREVIEW_BYTES]
    # Any chunking: every junk byte is counted once, blank-only reads may go unreported.
    non_blank = len(junk.replace(b"\x00", b""))
    for name, events in ways.items():
        total = sum(d.count for d in discards(events))
        assert non_blank <= total <= len(gap), name


def test_inline_element_outside_a_fragment_is_noise_not_a_start() -> None:
    stray = b"<Demand>0x001540</Demand>\r\n"
    ways = three_ways(stray + DEMAND)
    assert_same_fragments(ways, [RawFragment("InstantaneousDemand", DEMAND)])
    assert ways["whole"][0] == Discarded("bytes before a fragment start", len(stray), stray)


def test_discarded_preview_is_capped_and_is_the_start_of_the_discarded_bytes() -> None:
    junk = bytes(range(0x80, 0x100)) * 4  # 512 bytes, no '<'
    events = Framer().feed(junk + DEMAND)
    assert isinstance(events[0], Discarded)
    assert events[0].count == len(junk)
    assert events[0].preview == junk[:PREVIEW_BYTES]
    assert str(events[0]) == f"discarded {len(junk)} bytes: {events[0].reason}"
    assert events[1:] == [RawFragment("InstantaneousDemand", DEMAND)]


def test_dtd_between_fragments_is_discarded_not_framed() -> None:
    dtd = b'<!DOCTYPE lolz [\r\n <!ENTITY lol "lol">\r\n]>\r\n'
    ways = three_ways(dtd + DEMAND + b"\r\n")
    assert_same_fragments(ways, [RawFragment("InstantaneousDemand", DEMAND)])
    for name, events in ways.items():
        assert discards(events), name
    assert ways["whole"][0].count == len(dtd)


# --- attaching mid-stream, cut-off and oversize fragments -------------------------------------


def test_partial_first_fragment_is_discarded_then_next_fragment_framed() -> None:
    tail = DEMAND[DEMAND.index(b"0x001540") :] + b"\r\n"  # attached in the middle of <Demand>
    ways = three_ways(tail + SUMMATION + b"\r\n")
    assert_same_fragments(ways, [RawFragment("CurrentSummationDelivered", SUMMATION)])
    assert ways["whole"][0] == Discarded(
        "bytes before a fragment start", len(tail), tail[:PREVIEW_BYTES]
    )
    for name, events in ways.items():
        first = events.index(fragments(events)[0])
        assert events[:first], name
        assert all(isinstance(e, Discarded) for e in events[:first]), name


def test_fragment_cut_off_by_a_new_start_is_discarded_and_the_next_ones_framed() -> None:
    half = DEMAND[: DEMAND.index(b"  <Multiplier>")]  # device reset while sending
    ways = three_ways(half + SUMMATION + b"\r\n" + DEMAND + b"\r\n")
    assert_same_fragments(
        ways,
        [
            RawFragment("CurrentSummationDelivered", SUMMATION),
            RawFragment("InstantaneousDemand", DEMAND),
        ],
    )
    for name, events in ways.items():
        assert isinstance(events[0], Discarded), name
        assert events[0].reason == "<InstantaneousDemand> cut off by a new fragment", name
        assert events[0].count == len(half), name


def test_fragment_cut_off_by_an_unknown_container_is_discarded() -> None:
    half = DEMAND[: DEMAND.index(b"  <Divisor>")]
    unknown = b"<FutureThing>\r\n  <A>1</A>\r\n</FutureThing>"
    events = Framer().feed(half + unknown + b"\r\n")
    assert events == [
        Discarded("<InstantaneousDemand> cut off by a new fragment", len(half), half[:80]),
        RawFragment("FutureThing", unknown),
    ]


@pytest.mark.parametrize("read_size", [1, 7, 512, 4096])
def test_never_closing_fragment_over_the_cap_is_discarded_and_memory_stays_bounded(
    read_size: int,
) -> None:
    line = b"  <Demand>0x001540</Demand>\r\n"
    stream = b"<InstantaneousDemand>\r\n" + line * (3 * MAX_FRAGMENT_BYTES // len(line))
    framer = Framer()
    events: list[Event] = []
    peak = 0
    for i in range(0, len(stream), read_size):
        chunk = stream[i : i + read_size]
        events += framer.feed(chunk)
        peak = max(peak, buffered(framer))
        assert buffered(framer) <= MAX_FRAGMENT_BYTES + len(chunk)
    assert peak <= MAX_FRAGMENT_BYTES + read_size
    assert fragments(events) == []
    oversize = [d for d in discards(events) if "longer than" in d.reason]
    assert oversize, events[:3]
    assert oversize[0].reason == f"<InstantaneousDemand> longer than {MAX_FRAGMENT_BYTES} bytes"
    # All of it goes, except a possible start tag split at the end of the read.
    assert MAX_FRAGMENT_BYTES - MAX_TAG_BYTES < oversize[0].count <= MAX_FRAGMENT_BYTES + read_size
    # The stream goes on: the next good fragment is framed.
    after = framer.feed(b"\r\n" + DEMAND + b"\r\n")
    assert fragments(after) == [RawFragment("InstantaneousDemand", DEMAND)]


def test_never_closing_fragment_fed_in_one_read_leaves_at_most_the_cap_buffered() -> None:
    line = b"  <Demand>0x001540</Demand>\r\n"
    stream = b"<InstantaneousDemand>\r\n" + line * (4 * MAX_FRAGMENT_BYTES // len(line))
    framer = Framer()
    events = framer.feed(stream)
    assert buffered(framer) <= MAX_FRAGMENT_BYTES
    assert [d.reason for d in discards(events)][:1] == [
        f"<InstantaneousDemand> longer than {MAX_FRAGMENT_BYTES} bytes"
    ]


def test_oversize_discard_keeps_a_start_tag_split_at_the_end_of_the_read() -> None:
    line = b"  <Demand>0x001540</Demand>\r\n"
    body = b"<InstantaneousDemand>\r\n" + line * (MAX_FRAGMENT_BYTES // len(line) + 1)
    framer = Framer()
    split = SUMMATION.index(b"Summation")  # "<Current" | "SummationDelivered>..."
    events = framer.feed(body + SUMMATION[:split])
    assert [d.reason for d in discards(events)] == [
        f"<InstantaneousDemand> longer than {MAX_FRAGMENT_BYTES} bytes"
    ]
    events = framer.feed(SUMMATION[split:] + b"\r\n")
    assert events == [RawFragment("CurrentSummationDelivered", SUMMATION)]


@pytest.mark.parametrize("seed", [0, 1])
def test_random_megabyte_keeps_the_buffer_bounded(seed: int) -> None:
    rng = random.Random(seed)
    blob = rng.randbytes(1 << 20)
    framer = Framer()
    events: list[Event] = []
    i = 0
    while i < len(blob):
        chunk = blob[i : i + rng.randint(1, 8192)]
        i += len(chunk)
        events += framer.feed(chunk)
        assert buffered(framer) <= MAX_FRAGMENT_BYTES + len(chunk)
    events += framer.feed(b"")
    assert buffered(framer) == 0
    assert discards(events)
    for frag in fragments(events):  # random bytes can form a tag; if so, it is well cut
        assert frag.raw.endswith(b"</" + frag.tag.encode() + b">")
        assert frag.raw in blob
    # What the framer reports never exceeds what it was given.
    reported = sum(d.count for d in discards(events)) + sum(len(f.raw) for f in fragments(events))
    assert reported <= len(blob)


def test_random_megabyte_in_one_read_keeps_little_buffered() -> None:
    blob = random.Random(7).randbytes(1 << 20)
    framer = Framer()
    events = framer.feed(blob)
    assert buffered(framer) <= MAX_FRAGMENT_BYTES
    assert discards(events)
    # Then a real fragment still gets through.
    assert fragments(framer.feed(b"\r\n" + DEMAND + b"\r\n")) == [
        RawFragment("InstantaneousDemand", DEMAND)
    ]


def test_noise_without_a_start_keeps_only_a_possible_partial_tag() -> None:
    framer = Framer()
    events = framer.feed(b"\xff" * 1000 + b"<Instantaneous")
    assert discards(events) == [
        Discarded("no fragment start (noise or a partial fragment)", 1000, b"\xff" * 80)
    ]
    assert buffered(framer) == len(b"<Instantaneous") <= MAX_TAG_BYTES
    assert framer.feed(DEMAND[len(b"<Instantaneous") :]) == [
        RawFragment("InstantaneousDemand", DEMAND)
    ]


# --- end of stream and reset ------------------------------------------------------------------


def test_end_of_stream_reports_a_half_fragment() -> None:
    half = DEMAND[: DEMAND.index(b"</Demand>")]
    ways = three_ways(DEMAND + b"\r\n" + half, trailing=False)
    for name, events in ways.items():
        assert fragments(events) == [RawFragment("InstantaneousDemand", DEMAND)], name
        assert discards(events) == [], name
    framer = Framer()
    framer.feed(DEMAND + b"\r\n" + half)
    assert framer.feed(b"") == [Discarded("stream ended inside a fragment", len(half), half[:80])]
    assert buffered(framer) == 0
    assert framer.feed(b"") == []


@pytest.mark.parametrize("ending", [b"", b"\r\n", b"\x00\r\n\r\n"])
def test_end_of_stream_after_a_whole_fragment_and_blanks_reports_nothing(ending: bytes) -> None:
    framer = Framer()
    assert framer.feed(DEMAND + ending) == [RawFragment("InstantaneousDemand", DEMAND)]
    assert framer.feed(b"") == []


def test_end_of_stream_in_a_partial_start_tag_reports_it() -> None:
    framer = Framer()
    assert framer.feed(b"<Instantan") == []
    assert framer.feed(b"") == [Discarded("stream ended in noise", 10, b"<Instantan")]


def test_framer_works_again_after_end_of_stream() -> None:
    framer = Framer()
    framer.feed(DEMAND[:50])
    framer.feed(b"")
    assert framer.feed(SUMMATION) == [RawFragment("CurrentSummationDelivered", SUMMATION)]


def test_reset_forgets_a_half_fragment_silently() -> None:
    framer = Framer()
    assert framer.feed(DEMAND[:100]) == []
    assert buffered(framer) == 100
    assert "in='InstantaneousDemand'" in repr(framer)
    framer.reset()
    assert buffered(framer) == 0
    assert repr(framer) == "<Framer buffered=0 in=None>"
    # The rest of the old fragment is now just noise before the next start.
    rest = DEMAND[100:] + b"\r\n"
    events = framer.feed(rest + SUMMATION)
    assert events == [
        Discarded("bytes before a fragment start", len(rest), rest[:80]),
        RawFragment("CurrentSummationDelivered", SUMMATION),
    ]


def test_repeated_identical_fragments_are_each_framed() -> None:
    """Deduplication is the store's job (quirk 5): the framer must not swallow repeats."""
    ways = three_ways(DEMAND + b"\r\n" + DEMAND + b"\r\n")
    assert_same_fragments(ways, [RawFragment("InstantaneousDemand", DEMAND)] * 2)
