"""Realistic device output for the benchmarks, made here rather than captured.

The parser rows need megabytes of input that look like what a stick sends over a day: mostly
demand, with summation, price, messages, time, connection status and the replies to a host's
start-up queries mixed in at RAVEn's default push intervals (PROTOCOL.md), pretty-printed the way
each device prints (RAVEn: CRLF and two spaces; EMU-2: LF and four spaces), with the value quirks
a reader must handle (negative demand in 8 hex digits, 16-digit summations, "not set" stamps,
cp1252 and HTML escapes in text). Everything is valid XML so that a general XML parser (the peer)
and ravend see the same fragments and their counts can be compared.

The stream is deterministic for a seed; nothing here imports ravend, so the bytes are not shaped
by the code they measure.
"""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

#: Meter timestamps count seconds from 2000-01-01 UTC (PROTOCOL.md).
METER_EPOCH = 946_684_800
#: Unix time the simulated day starts at (2023-11-14 22:13:20 UTC).
START = 1_700_000_000
UNSET = "0xffffffff"


@dataclass(frozen=True, slots=True)
class Style:
    """How one device model pretty-prints a fragment."""

    name: str
    newline: bytes
    indent: bytes
    device_prefix: str


RAVEN = Style("raven", b"\r\n", b"  ", "00158d00")
EMU2 = Style("emu2", b"\n", b"    ", "d8d5b900")

#: Simulated seconds between pushes of each fragment (RAVEn defaults; status and period usage
#: stand for a host that polls them now and then).
SCHEDULE: dict[str, int] = {
    "demand": 8,
    "price": 90,
    "message": 120,
    "summation": 240,
    "connection": 600,
    "time": 900,
    "period_usage": 3600,
}


def fragment(style: Style, tag: str, fields: Sequence[tuple[str, str | bytes]]) -> bytes:
    """One fragment: root tag alone on its line, one ``<Child>text</Child>`` per line."""
    nl, ind = style.newline, style.indent
    out = [b"<" + tag.encode() + b">" + nl]
    for name, text in fields:
        t = text if isinstance(text, bytes) else text.encode("ascii")
        n = name.encode()
        out.append(ind + b"<" + n + b">" + t + b"</" + n + b">" + nl)
    out.append(b"</" + tag.encode() + b">" + nl)
    return b"".join(out)


def stamp(unix: int) -> str:
    return f"0x{unix - METER_EPOCH:08x}"


def demand_hex(raw: int) -> str:
    """Six digits when positive, 32-bit two's complement in eight when negative (as devices do)."""
    return f"0x{raw:06x}" if raw >= 0 else f"0x{raw & 0xFFFFFFFF:08x}"


class MeterStream:
    """One stick on one meter: fragments in the order the stick would send them."""

    def __init__(self, style: Style, seed: int, start: int = START) -> None:
        self.style = style
        self.rng = random.Random(seed)
        rng = self.rng
        self.device_mac = f"0x{style.device_prefix}{rng.getrandbits(32):08x}"
        self.meter_mac = f"0x00135003{rng.getrandbits(32):08x}"
        self.now = start
        self.watts = 1500.0
        self.delivered_wh = rng.randint(5_000_000, 90_000_000)
        self.received_wh = rng.randint(0, 500_000)

    def _mac(self) -> list[tuple[str, str | bytes]]:
        return [("DeviceMacId", self.device_mac), ("MeterMacId", self.meter_mac)]

    def demand(self, unix: int, raw: int | None = None) -> bytes:
        """A demand fragment stamped ``unix`` (the latency row sends these one by one)."""
        if raw is None:
            self.watts = min(6000.0, max(-3000.0, self.watts + self.rng.gauss(0.0, 150.0)))
            raw = round(self.watts)
        return fragment(self.style, "InstantaneousDemand", [
            *self._mac(), ("TimeStamp", stamp(unix)), ("Demand", demand_hex(raw)),
            ("Multiplier", "0x00000001"), ("Divisor", "0x000003e8"), ("DigitsRight", "0x03"),
            ("DigitsLeft", "0x0f"), ("SuppressLeadingZero", "Y"),
        ])

    def summation(self) -> bytes:
        if self.watts >= 0:
            self.delivered_wh += int(self.watts * SCHEDULE["summation"] / 3600)
        else:
            self.received_wh -= int(self.watts * SCHEDULE["summation"] / 3600)
        return fragment(self.style, "CurrentSummationDelivered", [
            *self._mac(), ("TimeStamp", stamp(self.now)),
            ("SummationDelivered", f"0x{self.delivered_wh:016x}"),
            ("SummationReceived", f"0x{self.received_wh:016x}"),
            ("Multiplier", "0x00000001"), ("Divisor", "0x000003e8"), ("DigitsRight", "0x01"),
            ("DigitsLeft", "0x06"), ("SuppressLeadingZero", "Y"),
        ])

    def price(self) -> bytes:
        tier = self.rng.choice((1, 2, 3))
        fields: list[tuple[str, str | bytes]] = [
            *self._mac(), ("TimeStamp", stamp(self.now)),
            ("Price", f"0x{(0x9C, 0xB4, 0x13B)[tier - 1]:08x}"), ("Currency", "0x0348"),
            ("TrailingDigits", "0x03"), ("Tier", f"0x{tier:02x}"),
        ]
        if self.style is RAVEN:
            fields.append(("TierLabel", f"Tier {tier}"))
        fields += [("StartTime", UNSET), ("Duration", "0xffff"), ("RateLabel", b"Tarif \xe9t\xe9")]
        return fragment(self.style, "PriceCluster", fields)

    def message(self) -> bytes:
        return fragment(self.style, "MessageCluster", [
            *self._mac(), ("TimeStamp", stamp(self.now)), ("Id", "0x0000a1b2"),
            ("Text", b"Peak hours 4-9 pm &amp; weekends: r\xe9duit"), ("Priority", "Low"),
            ("StartTime", stamp(self.now - 3600)), ("Duration", "0xffff"),
            ("ConfirmationRequired", "N"), ("Confirmed", "N"), ("Queue", "Active"),
        ])

    def time_cluster(self) -> bytes:
        return fragment(self.style, "TimeCluster", [
            *self._mac(), ("UTCTime", stamp(self.now)), ("LocalTime", stamp(self.now - 18000)),
        ])

    def connection(self) -> bytes:
        return fragment(self.style, "ConnectionStatus", [
            *self._mac(), ("Status", "Connected"), ("Description", "Successfully Joined"),
            ("ExtPanId", self.meter_mac), ("Channel", "20"), ("ShortAddr", "0xe1aa"),
            ("LinkStrength", "0x64"),
        ])

    def period_usage(self) -> bytes:
        return fragment(self.style, "CurrentPeriodUsage", [
            *self._mac(), ("TimeStamp", UNSET), ("CurrentUsage", "0x0000000000005a3a"),
            ("Multiplier", "0x00000001"), ("Divisor", "0x000003e8"), ("DigitsRight", "0x01"),
            ("DigitsLeft", "0x00"), ("SuppressLeadingZero", "Y"),
            ("StartDate", stamp(self.now - 86400)),
        ])

    def startup(self) -> list[bytes]:
        """What a host's start-up queries bring back (ravend's device layer asks for these)."""
        s, mac = self.style, self._mac()
        out = [
            fragment(s, "DeviceInfo", [
                ("DeviceMacId", self.device_mac), ("InstallCode", "0x8ba7f1dee6c4f5cc"),
                ("LinkKey", "0x2b26f9124113b1e200b58ffe4b8c5e4a"), ("FWVersion", "2.0.0 (7400)"),
                ("HWVersion", "1.2.3"), ("ImageType", "0x1301"), ("Manufacturer", "Rainforest"),
                ("ModelId", "Z106-RAVEn" if s is RAVEN else "Z105-2-EMU2-LEDD_JM"),
                ("DateCode", "2013022101000040"),
            ]),
            fragment(s, "MeterList", [("DeviceMacId", self.device_mac),
                                      ("MeterMacId", self.meter_mac)]),
            fragment(s, "MeterInfo", [*mac, ("MeterType", "0x0000"), ("NickName", "Home"),
                                      ("Enabled", "Y")]),
            fragment(s, "NetworkInfo", [
                ("DeviceMacId", self.device_mac), ("CoordMacId", self.meter_mac),
                ("Status", "Connected"), ("Description", "Successfully Joined"),
                ("ExtPanId", self.meter_mac), ("Channel", "20"), ("ShortAddr", "0xe1aa"),
                ("LinkStrength", "0x64"),
            ]),
        ]
        for event, freq in (("time", 900), ("price", 90), ("demand", 8), ("summation", 240)):
            out.append(fragment(s, "ScheduleInfo", [
                *mac, ("Event", event), ("Frequency", f"0x{freq:08x}"), ("Enabled", "Y"),
            ]))
        return out

    def day(self) -> Iterator[bytes]:
        """Start-up replies, then pushes for ever at the SCHEDULE intervals."""
        yield from self.startup()
        makers = {
            "demand": lambda: self.demand(self.now), "price": self.price,
            "message": self.message, "summation": self.summation,
            "connection": self.connection, "time": self.time_cluster,
            "period_usage": self.period_usage,
        }
        while True:
            self.now += 1
            for event, every in SCHEDULE.items():
                if self.now % every == 0:
                    yield makers[event]()


def mixed_stream(n_fragments: int, seed: int = 1) -> tuple[bytes, Counter[str]]:
    """``n_fragments`` fragments: the first half from a RAVEn, the rest from an EMU-2.

    Returns the bytes and how many fragments of each root tag they hold.
    """
    out: list[bytes] = []
    counts: Counter[str] = Counter()
    for style, n in ((RAVEN, n_fragments // 2), (EMU2, n_fragments - n_fragments // 2)):
        gen = MeterStream(style, seed + len(out)).day()
        for _ in range(n):
            frag = next(gen)
            counts[frag[1 : frag.index(b">")].decode()] += 1
            out.append(frag)
    return b"".join(out), counts
