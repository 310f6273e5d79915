"""The simulated meters: personalities, quirks, per-meter state, and how values and clocks move.

This is the simulator's single source of values. Everything random is drawn from the one
``random.Random(seed)`` the simulator owns, in the order the writer thread asks, so the same seed
and the same calls give the same numbers. The fragment builders (fragments.py) only format what
this layer decides.
"""

from __future__ import annotations

import random
import time
from dataclasses import dataclass, field

from ravend.protocol.model import METER_EPOCH_OFFSET

#: Every quirk the simulator can put on the wire, with what it does (also the CLI's --help text).
QUIRKS: dict[str, str] = {
    "negative_demand": "exporting solar: some demands are negative (8-digit two's complement)",
    "multiplier3": "Multiplier 0x00000003 (raw values a third of the true value)",
    "zero_divisor": "Multiplier and Divisor 0x00000000 (zero means 1: raw values in kW / kWh)",
    "wide_summation": "summation values above 2^32",
    "unset_timestamp": "some TimeStamps are 0xffffffff (not set)",
    "partial_start": "the very first bytes on the wire are the tail of a demand fragment",
    "nul_noise": "NUL bytes, stray CR, blank lines and bytes >= 0x80 between fragments",
    "cp1252_text": "cp1252 bytes and 0xff filler in labels and messages; HTML-escaped message text",
    "duplicates": "now and then a reading fragment is sent twice, byte-identical",
    "clock_backwards": "now and then a TimeStamp earlier than the previous (never a used key)",
    "no_indent": "child elements at column 0 (seen on EMU-2)",
    "unknown_fragment": "fragments with an unknown root tag; unknown child fields in known ones",
}

# How often the random quirks strike (per fragment). High enough that a test sending a few dozen
# readings sees every quirk, low enough that most of the stream stays ordinary.
P_NOISE = 0.25
P_UNKNOWN_ROOT = 0.08
P_EXTRA_CHILD = 0.15
P_DUPLICATE = 0.1
P_BACKWARDS = 0.12
P_UNSET = 0.1
P_SOLAR_FLIP = 0.2

#: Default push intervals in simulated seconds (RAVEn XML API defaults), in push order.
DEFAULT_SCHEDULE: dict[str, int] = {
    "demand": 8,
    "summation": 240,
    "price": 90,
    "message": 120,
    "time": 900,
}
PUSH_ORDER = tuple(DEFAULT_SCHEDULE)


@dataclass(frozen=True, slots=True)
class Personality:
    """What differs between a RAVEn and an EMU-2: identity, line ends, indent, firmware quirks."""

    name: str
    model_id: str
    newline: bytes
    indent: int
    device_prefix: str
    fw_version: str
    hw_version: str
    image_type: str
    date_code: str
    digits_left: str
    answers_initialize: bool  # False: the firmware answers `initialize` with "Unknown command"


PERSONALITIES: dict[str, Personality] = {
    "raven": Personality(
        "raven",
        "Z106-RAVEn",
        b"\r\n",
        2,
        "00158d00",
        "2.0.0 (7400)",
        "1.2.3",
        "0x1301",
        "2013022101000040",
        "0x0f",
        True,
    ),
    "emu2": Personality(
        "emu2",
        "Z105-2-EMU2-LEDD_JM",
        b"\n",
        4,
        "d8d5b900",
        "1.1.9 (9315)",
        "2.7.3",
        "0x0000",
        "2017100612000086",
        "0x05",
        False,
    ),
}


@dataclass(frozen=True, slots=True)
class SentReading:
    """One reading as the simulator put it on the wire: what ravend should end up storing.

    Fragments without Multiplier/Divisor or TimeStamp are recorded the way a reader would scale
    and time them: a price has multiplier 1 and divisor 10**TrailingDigits; LastPeriodUsage,
    which has no TimeStamp, is timed by its EndDate.
    """

    meter_mac: str  # '0x' + 16 lower-case hex digits
    kind: str  # a Kind value
    meter_time: int | None  # Unix seconds UTC of the fragment's TimeStamp; None when 0xffffffff
    raw: int  # signed integer value as meant (-1482 for 0xfffffa36)
    multiplier: int  # as sent
    divisor: int  # as sent

    @property
    def key(self) -> tuple[str, str, int | None]:
        return (self.meter_mac, self.kind, self.meter_time)


Out = tuple[bytes, list[SentReading]]


@dataclass(slots=True)
class Stamps:
    """Timestamps used so far for one (meter, fragment kind): keeps keys unique."""

    last: int | None = None  # the previous timestamp sent
    hi: int | None = None  # the highest one sent
    used: set[int] = field(default_factory=set)  # only kept with the clock_backwards quirk


@dataclass(slots=True)
class Meter:
    """The state of one simulated meter: the simulator's single source of values."""

    mac: str
    demand_w: float
    delivered_wh: float
    received_wh: float
    period_start: int
    period_base_wh: float
    last_usage_wh: float
    last_start: int
    last_end: int
    price: int
    trailing_digits: int
    tier: int
    rate_label: bytes
    message_id: int
    message_text: bytes
    ext_pan_id: str
    short_addr: int
    solar: bool = False
    energy_t: float | None = None  # simulated Unix time up to which energy is integrated
    message_confirmed: bool = False
    nick_name: str = "Home"
    account: str = ""
    auth: str = ""
    host: str = ""
    enabled: bool = True
    fast_freq: int = 0
    fast_until: float = 0.0  # simulated Unix time
    schedule: dict[str, list[int | bool]] = field(default_factory=dict)  # event -> [freq, on]
    due: dict[str, float] = field(default_factory=dict)  # event -> monotonic time

    def net_w(self) -> float:
        return -0.6 * self.demand_w if self.solar else self.demand_w

    def net_wh(self) -> float:
        return self.delivered_wh - self.received_wh


class MeterState:
    """Values and clocks of the simulated meters, as a part of ``MeterSimulator``.

    The attributes below are set by ``MeterSimulator.__init__``; this class only moves them.
    """

    quirks: frozenset[str]
    start_time: int
    speed: float
    _rng: random.Random
    _t0: float
    _stamps: dict[tuple[str, str], Stamps]
    _meters: list[Meter]

    def _new_meter(self, mac: str) -> Meter:
        rng = self._rng
        if "wide_summation" in self.quirks:
            delivered = float((2**32 + rng.getrandbits(30)) * self._energy_unit())
        else:
            delivered = float(rng.randint(5_000_000, 90_000_000))
        received = float(rng.randint(0, 2_000_000)) if "negative_demand" in self.quirks else 0.0
        period_start = self.start_time - rng.randint(3, 25) * 86400
        price, tier = rng.choice(((0x9C, 1), (0xB4, 2), (0x13B, 3)))
        if "cp1252_text" in self.quirks:
            label = b"Tarif \xe9t\xe9" + b"\xff" * rng.randint(1, 6)
            text = b"Heures pleines &amp; creuses: tarif r\xe9duit apr\xe8s 22h\xff\xff"
        else:
            label = f"Tier {tier}".encode()
            text = b"Welcome to the energy program"
        m = Meter(
            mac=mac,
            demand_w=rng.uniform(400.0, 2500.0),
            delivered_wh=delivered,
            received_wh=received,
            period_start=period_start,
            period_base_wh=delivered - received - rng.randint(20_000, 400_000),
            last_usage_wh=float(rng.randint(200_000, 900_000)),
            last_start=period_start - 30 * 86400,
            last_end=period_start,
            price=price,
            trailing_digits=3,
            tier=tier,
            rate_label=label,
            message_id=rng.getrandbits(32),
            message_text=text,
            ext_pan_id=mac,
            short_addr=rng.getrandbits(16),
        )
        m.schedule = {ev: [freq, True] for ev, freq in DEFAULT_SCHEDULE.items()}
        return m

    def _sim_now(self) -> float:
        return self.start_time + (time.monotonic() - self._t0) * self.speed

    def _energy_unit(self) -> int:
        """Wh per raw unit: how the (multiplier, divisor) quirks change the raw numbers."""
        if "zero_divisor" in self.quirks:
            return 1000
        if "multiplier3" in self.quirks:
            return 3
        return 1

    def _scaling(self) -> tuple[int, int]:
        if "zero_divisor" in self.quirks:
            return 0, 0
        if "multiplier3" in self.quirks:
            return 3, 1000
        return 1, 1000

    def _stamp(self, m: Meter, group: str, *, flat: bool, quirky: bool = True) -> int | None:
        """The next TimeStamp (Unix s) for (meter, group): unique unless a quirk says otherwise."""
        rng = self._rng
        st = self._stamps.setdefault((m.mac, group), Stamps())
        if quirky and "unset_timestamp" in self.quirks and rng.random() < P_UNSET:
            return None
        backwards = "clock_backwards" in self.quirks
        if quirky and backwards and st.last is not None and rng.random() < P_BACKWARDS:
            for _ in range(8):
                cand = st.last - rng.randint(1, 60)
                if cand not in st.used and cand > METER_EPOCH_OFFSET:
                    return self._use_stamp(st, cand)
        if st.hi is None:
            ts = self.start_time if flat else int(self._sim_now())
        elif flat:
            ts = st.hi + (rng.randint(1, 3) if backwards else 1)  # gaps for backward stamps
        else:
            ts = max(int(self._sim_now()), st.hi + 1)
        return self._use_stamp(st, ts)

    def _use_stamp(self, st: Stamps, ts: int) -> int:
        st.last = ts
        st.hi = ts if st.hi is None else max(st.hi, ts)
        if "clock_backwards" in self.quirks:
            st.used.add(ts)
            if len(st.used) > 4096:  # backward stamps stay within 120 s of hi: forget the rest
                st.used = {t for t in st.used if t > st.hi - 600}
        return ts

    def _advance(self, m: Meter, ts: int | None, *, flat: bool) -> None:
        """Integrate the current demand up to time t (simulated): summations follow demand."""
        if ts is not None:
            t = float(ts)
        elif flat:
            t = (m.energy_t if m.energy_t is not None else self.start_time) + 1.0
        else:
            t = self._sim_now()
        if m.energy_t is None:
            m.energy_t = t
            return
        dt = t - m.energy_t
        if dt <= 0:
            return
        wh = m.net_w() * min(dt, 3600.0) / 3600.0
        if wh >= 0:
            m.delivered_wh += wh
        else:
            m.received_wh -= wh
        m.energy_t = t

    def _walk(self, m: Meter) -> None:
        rng = self._rng
        w = m.demand_w + rng.gauss(0.0, 150.0)
        if w < 200.0:
            w = 400.0 - w
        if w > 6000.0:
            w = 12000.0 - w
        m.demand_w = min(max(w, 200.0), 6000.0)
        if "negative_demand" in self.quirks and rng.random() < P_SOLAR_FLIP:
            m.solar = not m.solar

    def _raw(self, milli: float, *, floor: bool) -> int:
        unit = self._energy_unit()
        return int(milli // unit) if floor else round(milli / unit)

    def _reset_due(self, at: float) -> None:
        """Make every push of every meter due from ``at`` (monotonic), in push order."""
        for i, m in enumerate(self._meters):
            for j, ev in enumerate(PUSH_ORDER):
                m.due[ev] = at + 0.02 * i + 0.001 * j  # stagger meters; keep push order
