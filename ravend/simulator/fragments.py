"""The XML text of every fragment the simulated stick writes, byte for byte as the devices print it.

RAVEn prints a two-space indent and CRLF, EMU-2 four spaces and LF (``no_indent``: column 0). The
builders never import ravend's framer or decoder, so a test comparing what ravend stored with what
was sent compares two independent readings of the protocol. A reading fragment returns its bytes
with the ``SentReading``s it carries, which the writer records once the last byte is written.
"""

from __future__ import annotations

from collections.abc import Sequence

from ravend.protocol.model import METER_EPOCH_OFFSET, Kind
from ravend.simulator.meter import (
    P_EXTRA_CHILD,
    Meter,
    MeterState,
    Out,
    Personality,
    SentReading,
)

UNSET = "0xffffffff"  # a TimeStamp or StartTime that is not set


def fixed_hex(value: int, digits: int) -> str:
    return f"0x{value:0{digits}x}"


def demand_hex(raw: int) -> str:
    """6 digits when >= 0, else 8 digits of 32-bit two's complement: what the devices print."""
    return f"0x{raw:06x}" if raw >= 0 else f"0x{raw & 0xFFFFFFFF:08x}"


def u64_hex(raw: int) -> str:
    return f"0x{raw & 0xFFFFFFFFFFFFFFFF:016x}"


def stamp_hex(unix: int | None) -> str:
    if unix is None:
        return UNSET
    return f"0x{(unix - METER_EPOCH_OFFSET) & 0xFFFFFFFF:08x}"


def parse_hex(text: str) -> int:
    return int(text.strip(), 16)


class Fragments(MeterState):
    """Builds fragments from the meter state, as a part of ``MeterSimulator``."""

    device_mac: str
    _p: Personality
    _indent: bytes
    _install_code: str
    _link_key: str
    _channel: int
    _tz_offset: int

    def _frag(
        self, tag: str, fields: Sequence[tuple[str, str | bytes]], *, extra: bool = True
    ) -> bytes:
        """One fragment, pretty-printed the way this personality prints it."""
        if extra and "unknown_fragment" in self.quirks and self._rng.random() < P_EXTRA_CHILD:
            fields = [*fields, self._rng.choice((("Protocol", "Zigbee"), ("Port", "/dev/ttyS0")))]
        nl, ind = self._p.newline, self._indent
        out = [b"<" + tag.encode() + b">" + nl]
        for name, text in fields:
            t = text if isinstance(text, bytes) else text.encode("latin-1")
            n = name.encode()
            out.append(ind + b"<" + n + b">" + t + b"</" + n + b">" + nl)
        out.append(b"</" + tag.encode() + b">" + nl)
        return b"".join(out)

    def _loose_demand(self) -> bytes:
        """A demand fragment that is never recorded (partial start, mid-fragment unplug).

        Reads meter state without changing it, so it is safe from any thread.
        """
        m = self._meters[0]
        mult, div = self._scaling()
        fields: list[tuple[str, str | bytes]] = [
            ("DeviceMacId", self.device_mac),
            ("MeterMacId", m.mac),
            ("TimeStamp", stamp_hex(self.start_time - 8)),
            ("Demand", demand_hex(self._raw(m.net_w(), floor=False))),
            ("Multiplier", fixed_hex(mult, 8)),
            ("Divisor", fixed_hex(div, 8)),
            ("DigitsRight", "0x03"),
            ("DigitsLeft", self._p.digits_left),
            ("SuppressLeadingZero", "Y"),
        ]
        return self._frag("InstantaneousDemand", fields, extra=False)

    def _push_fragment(self, m: Meter, event: str) -> Out:
        if event == "demand":
            return self._demand(m, flat=False)
        if event == "summation":
            return self._summation(m, flat=False)
        if event == "price":
            return self._price(m, flat=False)
        if event == "message":
            return self._message(m), []
        return self._time_cluster(m), []

    def _reading_fragment(self, m: Meter, kind: str, *, flat: bool) -> Out:
        if kind == Kind.DEMAND.value:
            return self._demand(m, flat=flat)
        if kind in (Kind.SUMMATION_DELIVERED.value, Kind.SUMMATION_RECEIVED.value):
            return self._summation(m, flat=flat)
        if kind == Kind.PRICE.value:
            return self._price(m, flat=flat)
        if kind == Kind.CURRENT_PERIOD_USAGE.value:
            return self._current_usage(m, flat=flat)
        self._close_period(m, flat=flat)
        return self._last_usage(m)

    def _demand(self, m: Meter, *, flat: bool) -> Out:
        ts = self._stamp(m, "demand", flat=flat)
        self._advance(m, ts, flat=flat)
        self._walk(m)
        raw = self._raw(m.net_w(), floor=False)
        mult, div = self._scaling()
        fields: list[tuple[str, str | bytes]] = [
            ("DeviceMacId", self.device_mac),
            ("MeterMacId", m.mac),
            ("TimeStamp", stamp_hex(ts)),
            ("Demand", demand_hex(raw)),
            ("Multiplier", fixed_hex(mult, 8)),
            ("Divisor", fixed_hex(div, 8)),
            ("DigitsRight", "0x03"),
            ("DigitsLeft", self._p.digits_left),
            ("SuppressLeadingZero", "Y"),
        ]
        reading = SentReading(m.mac, Kind.DEMAND.value, ts, raw, mult, div)
        return self._frag("InstantaneousDemand", fields), [reading]

    def _summation(self, m: Meter, *, flat: bool) -> Out:
        ts = self._stamp(m, "summation", flat=flat)
        self._advance(m, ts, flat=flat)
        delivered = self._raw(m.delivered_wh, floor=True)
        received = self._raw(m.received_wh, floor=True)
        mult, div = self._scaling()
        fields: list[tuple[str, str | bytes]] = [
            ("DeviceMacId", self.device_mac),
            ("MeterMacId", m.mac),
            ("TimeStamp", stamp_hex(ts)),
            ("SummationDelivered", u64_hex(delivered)),
            ("SummationReceived", u64_hex(received)),
            ("Multiplier", fixed_hex(mult, 8)),
            ("Divisor", fixed_hex(div, 8)),
            ("DigitsRight", "0x01"),
            ("DigitsLeft", "0x06"),
            ("SuppressLeadingZero", "Y"),
        ]
        readings = [
            SentReading(m.mac, Kind.SUMMATION_DELIVERED.value, ts, delivered, mult, div),
            SentReading(m.mac, Kind.SUMMATION_RECEIVED.value, ts, received, mult, div),
        ]
        return self._frag("CurrentSummationDelivered", fields), readings

    def _current_usage(self, m: Meter, *, flat: bool) -> Out:
        ts = self._stamp(m, "current_period_usage", flat=flat)
        self._advance(m, ts, flat=flat)
        raw = self._raw(m.net_wh() - m.period_base_wh, floor=True)
        mult, div = self._scaling()
        fields: list[tuple[str, str | bytes]] = [
            ("DeviceMacId", self.device_mac),
            ("MeterMacId", m.mac),
            ("TimeStamp", stamp_hex(ts)),
            ("CurrentUsage", u64_hex(raw)),
            ("Multiplier", fixed_hex(mult, 8)),
            ("Divisor", fixed_hex(div, 8)),
            ("DigitsRight", "0x03"),
            ("DigitsLeft", "0x06"),
            ("SuppressLeadingZero", "Y"),
            ("StartDate", stamp_hex(m.period_start)),
        ]
        reading = SentReading(m.mac, Kind.CURRENT_PERIOD_USAGE.value, ts, raw, mult, div)
        return self._frag("CurrentPeriodUsage", fields), [reading]

    def _close_period(self, m: Meter, *, flat: bool) -> None:
        end = self._stamp(m, "last_period_usage", flat=flat, quirky=False)
        assert end is not None  # quirky=False never gives "unset"
        self._advance(m, end, flat=flat)
        net = m.net_wh()
        m.last_usage_wh = net - m.period_base_wh
        m.last_start, m.last_end = m.period_start, end
        m.period_start, m.period_base_wh = end, net

    def _last_usage(self, m: Meter) -> Out:
        """LastPeriodUsage has no TimeStamp: its reading is timed by EndDate."""
        raw = self._raw(m.last_usage_wh, floor=True)
        mult, div = self._scaling()
        fields: list[tuple[str, str | bytes]] = [
            ("DeviceMacId", self.device_mac),
            ("MeterMacId", m.mac),
            ("LastUsage", u64_hex(raw)),
            ("Multiplier", fixed_hex(mult, 8)),
            ("Divisor", fixed_hex(div, 8)),
            ("DigitsRight", "0x03"),
            ("DigitsLeft", "0x06"),
            ("SuppressLeadingZero", "Y"),
            ("StartDate", stamp_hex(m.last_start)),
            ("EndDate", stamp_hex(m.last_end)),
        ]
        reading = SentReading(m.mac, Kind.LAST_PERIOD_USAGE.value, m.last_end, raw, mult, div)
        return self._frag("LastPeriodUsage", fields), [reading]

    def _price(self, m: Meter, *, flat: bool, change: bool = True) -> Out:
        rng = self._rng
        if change and m.rate_label != b"Set by User" and rng.random() < 0.1:
            m.price, m.tier = rng.choice(((0x9C, 1), (0xB4, 2), (0x13B, 3)))
            if "cp1252_text" not in self.quirks:
                m.rate_label = f"Tier {m.tier}".encode()
        ts = self._stamp(m, "price", flat=flat)
        fields: list[tuple[str, str | bytes]] = [
            ("DeviceMacId", self.device_mac),
            ("MeterMacId", m.mac),
            ("TimeStamp", stamp_hex(ts)),
            ("Price", fixed_hex(m.price, 8)),
            ("Currency", "0x0348"),
            ("TrailingDigits", fixed_hex(m.trailing_digits, 2)),
            ("Tier", fixed_hex(m.tier, 2)),
        ]
        if self._p.name == "raven":
            fields.append(("TierLabel", f"Tier {m.tier}"))
        fields += [("StartTime", UNSET), ("Duration", "0xffff"), ("RateLabel", m.rate_label)]
        readings = []
        if m.price != 0xFFFFFFFF:
            div = 10**m.trailing_digits
            readings.append(SentReading(m.mac, Kind.PRICE.value, ts, m.price, 1, div))
        return self._frag("PriceCluster", fields), readings

    def _message(self, m: Meter) -> bytes:
        return self._frag(
            "MessageCluster",
            [
                ("DeviceMacId", self.device_mac),
                ("MeterMacId", m.mac),
                ("TimeStamp", stamp_hex(int(self._sim_now()))),
                ("Id", fixed_hex(m.message_id, 8)),
                ("Text", m.message_text),
                ("Priority", "Low"),
                ("StartTime", stamp_hex(self.start_time - 3600)),
                ("Duration", "0xffff"),
                ("ConfirmationRequired", "N"),
                ("Confirmed", "Y" if m.message_confirmed else "N"),
                ("Queue", "Active"),
            ],
        )

    def _time_cluster(self, m: Meter) -> bytes:
        now = int(self._sim_now())
        return self._frag(
            "TimeCluster",
            [
                ("DeviceMacId", self.device_mac),
                ("MeterMacId", m.mac),
                ("UTCTime", stamp_hex(now)),
                ("LocalTime", stamp_hex(now + self._tz_offset)),
            ],
        )

    def _status_fields(self, m: Meter, status: str) -> list[tuple[str, str | bytes]]:
        connected = status == "Connected"
        return [
            ("Status", status),
            ("Description", "Successfully Joined" if connected else " "),
            ("StatusCode", "0x00"),
            ("ExtPanId", m.ext_pan_id),
            ("Channel", str(self._channel)),
            ("ShortAddr", fixed_hex(m.short_addr, 4)),
            ("LinkStrength", "0x64" if connected else "0x00"),
        ]

    def _connection_status(self, m: Meter, status: str = "Connected") -> bytes:
        head: list[tuple[str, str | bytes]] = [("DeviceMacId", self.device_mac)]
        if status == "Connected":
            head.append(("MeterMacId", m.mac))
        return self._frag("ConnectionStatus", head + self._status_fields(m, status))

    def _network_info(self, m: Meter) -> bytes:
        head: list[tuple[str, str | bytes]] = [
            ("DeviceMacId", self.device_mac),
            ("CoordMacId", m.mac),
        ]
        return self._frag("NetworkInfo", head + self._status_fields(m, "Connected"))

    def _device_info(self) -> bytes:
        p = self._p
        return self._frag(
            "DeviceInfo",
            [
                ("DeviceMacId", self.device_mac),
                ("InstallCode", self._install_code),
                ("LinkKey", self._link_key),
                ("FWVersion", p.fw_version),
                ("HWVersion", p.hw_version),
                ("ImageType", p.image_type),
                ("Manufacturer", "Rainforest Automation, Inc."),
                ("ModelId", p.model_id),
                ("DateCode", p.date_code),
            ],
        )

    def _meter_info(self, m: Meter) -> bytes:
        return self._frag(
            "MeterInfo",
            [
                ("DeviceMacId", self.device_mac),
                ("MeterMacId", m.mac),
                ("MeterType", "electric" if self._p.name == "raven" else "0x0000"),
                ("NickName", m.nick_name),
                ("Account", m.account),
                ("Auth", m.auth),
                ("Host", m.host),
                ("Enabled", "Y" if m.enabled else "N"),
            ],
        )

    def _schedule_info(self, m: Meter, event: str) -> bytes:
        freq, on = m.schedule[event]
        return self._frag(
            "ScheduleInfo",
            [
                ("DeviceMacId", self.device_mac),
                ("MeterMacId", m.mac),
                ("Event", event),
                ("Frequency", fixed_hex(int(freq), 8)),
                ("Enabled", "Y" if on else "N"),
            ],
        )

    def _profile_data(self, m: Meter, f: dict[str, str]) -> bytes:
        rng = self._rng
        periods = min(max(parse_hex(f.get("NumberOfPeriods") or "0x01"), 1), 12)
        end_text = f.get("EndTime") or "0x00000000"
        end_meter = parse_hex(end_text)
        if end_meter in (0, 0xFFFFFFFF):
            end = int(self._sim_now()) // 900 * 900
        else:
            end = end_meter + METER_EPOCH_OFFSET
        received = f.get("IntervalChannel", "Delivered").lower() == "received"
        data: list[tuple[str, str | bytes]] = []
        for _ in range(periods):  # newest first; Wh per 15 minutes
            wh = rng.uniform(0.0, 300.0) if received else m.demand_w / 4 * rng.uniform(0.7, 1.3)
            data.append(("IntervalData", fixed_hex(int(wh) & 0xFFFFFF, 6)))
        head: list[tuple[str, str | bytes]] = [
            ("DeviceMacId", self.device_mac),
            ("MeterMacId", m.mac),
            ("EndTime", stamp_hex(end)),
            ("Status", "0x00"),
            ("ProfileIntervalPeriod", "3"),
            ("NumberOfPeriodsDelivered", fixed_hex(periods, 2)),
        ]
        return self._frag("ProfileData", head + data)

    def _warning(self, text: str) -> bytes:
        return self._frag("Warning", [("Text", text)], extra=False)
