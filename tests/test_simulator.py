"""Tests of the meter simulator, read from the wire the way a client of the port would.

These tests parse the bytes with their own small regexes (not ravend's framer or decoder), so they
check the simulator against PROTOCOL.md and the device fixtures, not against itself.
"""

from __future__ import annotations

import contextlib
import errno
import itertools
import os
import re
import select
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from ravend.cli.simulate_command import main
from ravend.protocol.model import METER_EPOCH_OFFSET, Kind
from ravend.simulator import QUIRKS, MeterSimulator, SentReading
from tests.helpers.wait import wait_for

REPO = Path(__file__).resolve().parent.parent
FIXTURES = REPO / "tests" / "fixtures"  # copies of ../shared/fixtures (real device output)

READING_TAGS = (
    "InstantaneousDemand",
    "CurrentSummationDelivered",
    "PriceCluster",
    "CurrentPeriodUsage",
    "LastPeriodUsage",
)
KNOWN_TAGS = {
    tag.encode()
    for tag in (
        *READING_TAGS,
        "ConnectionStatus",
        "DeviceInfo",
        "NetworkInfo",
        "MeterList",
        "MeterInfo",
        "TimeCluster",
        "BlockPriceDetail",
        "MessageCluster",
        "ScheduleInfo",
        "ProfileData",
        "Warning",
    )
}
FRAG_RE = re.compile(rb"<(" + "|".join(READING_TAGS).encode() + rb")>(.*?)</\1>", re.S)
CHILD_RE = re.compile(rb"<(\w+)>([^<]*)</\1>")
ROOT_RE = re.compile(rb"(?:^|\n)<([A-Za-z]\w*)>\r?\n")
ALL_KINDS = tuple(k.value for k in Kind)


class Client:
    """Opens the port like ravend would and reads it in a thread until EOF/EIO."""

    def __init__(self, port: str) -> None:
        self.fd = os.open(port, os.O_RDWR | os.O_NOCTTY | os.O_NONBLOCK)
        self._lock = threading.Lock()
        self._buf = bytearray()
        self.eof: str | None = None  # "EOF" or "EIO" once the device went away
        self._closing = False
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._closing:
            try:
                ready, _, _ = select.select([self.fd], [], [], 0.02)
            except (OSError, ValueError):
                return
            if not ready:
                continue
            try:
                data = os.read(self.fd, 65536)
            except BlockingIOError:
                continue
            except OSError as exc:
                if exc.errno == errno.EIO:
                    self.eof = "EIO"
                return
            if not data:
                self.eof = "EOF"
                return
            with self._lock:
                self._buf += data

    @property
    def data(self) -> bytes:
        with self._lock:
            return bytes(self._buf)

    def send(self, data: bytes) -> None:
        os.write(self.fd, data)

    def command(self, name: str, **fields: str) -> None:
        body = "".join(f"  <{k}>{v}</{k}>\n" for k, v in fields.items())
        self.send(f"<Command>\n  <Name>{name}</Name>\n{body}</Command>\n".encode())

    def wait(self, predicate, timeout: float = 3.0) -> bool:
        return wait_for(lambda: predicate(self.data), timeout, interval=0.005)

    def wait_for_tag(self, tag: str, after: int = 0, timeout: float = 3.0) -> bytes:
        """The first complete <tag> fragment starting at or after byte offset ``after``."""
        pattern = re.compile(b"<" + tag.encode() + b">.*?</" + tag.encode() + b">\r?\n", re.S)
        found: list[bytes] = []

        def seen(data: bytes) -> bool:
            m = pattern.search(data, after)
            if m:
                found.append(m.group(0))
            return m is not None

        assert self.wait(seen, timeout), f"no <{tag}> in {self.data[after:][-600:]!r}"
        return found[0]

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._closing = True
        self._thread.join(1)
        with contextlib.suppress(OSError):
            os.close(self.fd)


def fields_of(fragment: bytes) -> dict[str, str]:
    return {k.decode(): v.decode("latin-1") for k, v in CHILD_RE.findall(fragment)}


def _ts(text: bytes) -> int | None:
    value = int(text, 16)
    return None if value in (0xFFFFFFFF, 0xFFFFFF) else value + METER_EPOCH_OFFSET


def _s32(text: bytes) -> int:
    value = int(text, 16)
    return value - 2**32 if value >= 2**31 else value


def _s64(text: bytes) -> int:
    value = int(text, 16)
    return value - 2**64 if value >= 2**63 else value


def readings_in(data: bytes) -> list[SentReading]:
    """Every reading in the bytes, decoded by the rules of PROTOCOL.md."""
    out: list[SentReading] = []
    for m in FRAG_RE.finditer(data):
        tag = m.group(1).decode()
        f = dict(CHILD_RE.findall(m.group(2)))
        mac = f[b"MeterMacId"].decode()
        if tag == "PriceCluster":
            div = 10 ** int(f[b"TrailingDigits"], 16)
            ts = _ts(f[b"TimeStamp"])
            out.append(SentReading(mac, "price", ts, int(f[b"Price"], 16), 1, div))
            continue
        mult, div = int(f[b"Multiplier"], 16), int(f[b"Divisor"], 16)
        if tag == "InstantaneousDemand":
            raw = _s32(f[b"Demand"])
            out.append(SentReading(mac, "demand", _ts(f[b"TimeStamp"]), raw, mult, div))
        elif tag == "CurrentSummationDelivered":
            ts = _ts(f[b"TimeStamp"])
            delivered, received = _s64(f[b"SummationDelivered"]), _s64(f[b"SummationReceived"])
            out.append(SentReading(mac, "summation_delivered", ts, delivered, mult, div))
            out.append(SentReading(mac, "summation_received", ts, received, mult, div))
        elif tag == "CurrentPeriodUsage":
            raw = _s64(f[b"CurrentUsage"])
            ts = _ts(f[b"TimeStamp"])
            out.append(SentReading(mac, "current_period_usage", ts, raw, mult, div))
        else:
            raw = _s64(f[b"LastUsage"])
            ts = _ts(f[b"EndDate"])
            out.append(SentReading(mac, "last_period_usage", ts, raw, mult, div))
    return out


def fixture_bytes(name: str) -> bytes:
    path = FIXTURES / name
    if not path.is_file():
        pytest.fail(f"device fixture {path} is missing from the tree")
    return path.read_bytes()


@pytest.fixture
def tmp_link(tmp_path: Path) -> str:
    return str(tmp_path / "raven-sim")


def run_flat(quirks=(), *, seed: int = 0, n: int = 60, kinds=ALL_KINDS, personality="raven"):
    """Send n readings flat out with pushes off; the bytes a client read and the sim's record."""
    with (
        MeterSimulator(personality, seed=seed, quirks=quirks, pushes=False) as sim,
        Client(sim.port) as client,
    ):
        sim.send_readings(n, kinds)
        assert sim.wait_for(sim.idle, 5)
        assert sim.drain(2)
        return client.data, sim.sent_readings(), sim


# ---------------------------------------------------------------------------------- formatting


def test_raven_format_matches_fixture() -> None:
    data, sent, sim = run_flat(n=1, kinds=("demand",))
    fixture = fixture_bytes("raven-instantaneous-demand.xml")
    assert data.startswith(b"<InstantaneousDemand>\r\n  <DeviceMacId>0x")
    assert data.endswith(b"</InstantaneousDemand>\r\n")
    assert b"\n" not in data.replace(b"\r\n", b"")
    # same lines, in the same order, with the same indentation, as the real device
    shape = re.compile(rb"^( *)(</?\w+>)")
    assert [shape.match(x).groups() for x in data.split(b"\r\n")[:-1]] == [
        shape.match(x).groups() for x in fixture.split(b"\r\n")[:-1]
    ]
    f = fields_of(data)
    assert re.fullmatch(r"0x[0-9a-f]{16}", f["MeterMacId"]) and f["MeterMacId"] == sim.meter_macs[0]
    assert re.fullmatch(r"0x[0-9a-f]{6}", f["Demand"])
    assert f["Divisor"] == "0x000003e8"
    assert sent == readings_in(data)
    assert sent[0].meter_time == sim.start_time  # flat-out stamps start at the meter clock
    assert 200 <= sent[0].raw <= 6000


def test_emu2_format_lf_and_four_spaces() -> None:
    data, sent, _ = run_flat(n=4, kinds=("demand", "summation_delivered"), personality="emu2")
    fixture = fixture_bytes("emu2-summation.xml")
    assert b"\r" not in data
    assert data.startswith(b"<InstantaneousDemand>\n    <DeviceMacId>0xd8d5b9")
    start = data.index(b"<CurrentSummationDelivered>")
    shape = re.compile(rb"^( *)(</?\w+>)")
    got = data[start:].split(b"\n")[:12]
    assert [shape.match(x).groups() for x in got] == [
        shape.match(x).groups() for x in fixture.split(b"\n")[:12]
    ]
    f = fields_of(data[start:])
    assert re.fullmatch(r"0x[0-9a-f]{16}", f["SummationDelivered"])
    assert sent == readings_in(data)


# ------------------------------------------------------------------------------------ commands


COMMAND_REPLIES = [
    ("get_device_info", {}, "DeviceInfo"),
    ("get_connection_status", {}, "ConnectionStatus"),
    ("get_network_info", {}, "NetworkInfo"),
    ("get_meter_list", {}, "MeterList"),
    ("get_meter_info", {}, "MeterInfo"),
    ("set_meter_info", {"NickName": "Garage"}, "MeterInfo"),
    ("get_time", {}, "TimeCluster"),
    ("get_message", {}, "MessageCluster"),
    ("get_current_price", {}, "PriceCluster"),
    ("get_instantaneous_demand", {"Refresh": "Y"}, "InstantaneousDemand"),
    ("get_current_summation_delivered", {}, "CurrentSummationDelivered"),
    ("get_current_period_usage", {}, "CurrentPeriodUsage"),
    ("get_last_period_usage", {}, "LastPeriodUsage"),
    ("get_schedule", {"Event": "demand"}, "ScheduleInfo"),
    ("set_schedule_default", {}, "ScheduleInfo"),
    ("set_fast_poll", {"Frequency": "0x04", "Duration": "0x01"}, "InstantaneousDemand"),
    ("get_profile_data", {"NumberOfPeriods": "0x05"}, "ProfileData"),
    ("initialize", {}, "ConnectionStatus"),
]


def test_every_command_is_answered_with_its_fragment() -> None:
    with (
        MeterSimulator(meters=2, pushes=False, reply_delay=0.01, seed=3) as sim,
        Client(sim.port) as client,
    ):
        mac = sim.meter_macs[1]
        for name, extra, tag in COMMAND_REPLIES:
            offset = len(client.data)
            client.command(name, MeterMacId=mac, **extra)
            frag = client.wait_for_tag(tag, offset)
            f = fields_of(frag)
            if tag not in ("DeviceInfo", "MeterList"):
                assert f.get("MeterMacId", f.get("CoordMacId")) == mac, (name, frag)
            if name == "get_device_info":
                assert f["Manufacturer"] == "Rainforest Automation, Inc."
                assert f["ModelId"] == "Z106-RAVEn" == sim.model
                assert f["DeviceMacId"] == sim.device_mac
                assert {"FWVersion", "HWVersion", "DateCode"} <= f.keys()
            if name in ("get_connection_status", "get_network_info"):
                assert f["Status"] == "Connected" and f["LinkStrength"] == "0x64"
                assert 11 <= int(f["Channel"]) <= 26  # decimal, not hex
            if name == "get_meter_list":
                assert re.findall(rb"<MeterMacId>(\w+)</MeterMacId>", frag) == [
                    m.encode() for m in sim.meter_macs
                ]
            if name == "set_meter_info":
                assert f["NickName"] == "Garage"
            if name == "get_profile_data":
                assert len(re.findall(rb"<IntervalData>0x[0-9a-f]{6}<", frag)) == 5
                assert f["NumberOfPeriodsDelivered"] == "0x05"
        # the commands and their fields were recorded, in order
        names = [c[0] for c in sim.received_commands()]
        assert names == [c[0] for c in COMMAND_REPLIES]
        assert sim.received_commands()[5] == (
            "set_meter_info",
            {"MeterMacId": mac, "NickName": "Garage"},
        )
        # readings answered on request are recorded exactly as on the wire
        assert sim.sent_readings() == readings_in(client.data)
        kinds = {r.kind for r in sim.sent_readings()}
        assert kinds == set(ALL_KINDS)


def test_get_schedule_answers_one_fragment_per_event() -> None:
    with MeterSimulator(pushes=False, reply_delay=0.01) as sim, Client(sim.port) as client:
        client.command("get_schedule")
        assert client.wait(lambda d: d.count(b"</ScheduleInfo>") == 5)
        time.sleep(0.05)
        events = re.findall(rb"<Event>(\w+)</Event>", client.data)
        assert sorted(events) == [b"demand", b"message", b"price", b"summation", b"time"]
        assert b"<Frequency>0x00000008</Frequency>" in client.data


def test_unknown_command_warning_and_factory_reset_ignored() -> None:
    with MeterSimulator(pushes=False, reply_delay=0.01) as sim, Client(sim.port) as client:
        client.command("factory_reset")
        client.command("make_coffee")
        warning = client.wait_for_tag("Warning")
        assert warning == b"<Warning>\r\n  <Text>Unknown command</Text>\r\n</Warning>\r\n"
        time.sleep(0.1)
        assert client.data == warning  # factory_reset: no answer, nothing done
        assert [c[0] for c in sim.received_commands()] == ["factory_reset", "make_coffee"]


def test_emu2_answers_initialize_with_unknown_command() -> None:
    with (
        MeterSimulator("emu2", pushes=False, reply_delay=0.01) as sim,
        Client(sim.port) as client,
    ):
        client.command("initialize")
        assert client.wait_for_tag("Warning") == (
            b"<Warning>\n    <Text>Unknown command</Text>\n</Warning>\n"
        )
        client.command("get_device_info")
        assert fields_of(client.wait_for_tag("DeviceInfo"))["ModelId"] == "Z105-2-EMU2-LEDD_JM"


def test_commands_split_across_writes_and_received_bytes() -> None:
    with MeterSimulator(pushes=False, reply_delay=0.01) as sim, Client(sim.port) as client:
        wire = (
            b"junk\x00<Command>\r\n  <Name>get_time</Name>\r\n"
            b"  <Refresh>N</Refresh>\r\n</Command>"
        )
        for i in range(0, len(wire), 7):
            client.send(wire[i : i + 7])
            time.sleep(0.005)
        client.wait_for_tag("TimeCluster")
        assert sim.received_bytes() == wire
        assert sim.received_commands() == [("get_time", {"Refresh": "N"})]


def test_set_current_price_pushes_that_price() -> None:
    with MeterSimulator(pushes=False, reply_delay=0.01) as sim, Client(sim.port) as client:
        client.command("set_current_price", Price="0x000004d2", TrailingDigits="0x04")
        f = fields_of(client.wait_for_tag("PriceCluster"))
        assert f["Price"] == "0x000004d2" and f["TrailingDigits"] == "0x04"
        assert f["RateLabel"] == "Set by User"
        (reading,) = sim.sent_readings()
        assert (reading.kind, reading.raw, reading.divisor) == ("price", 1234, 10_000)
        assert reading.meter_time == _ts(f["TimeStamp"].encode())


def test_close_current_period_moves_usage_to_last_period() -> None:
    with (
        MeterSimulator(pushes=False, reply_delay=0.01, speed=50) as sim,
        Client(sim.port) as client,
    ):
        client.command("get_current_period_usage")
        before = fields_of(client.wait_for_tag("CurrentPeriodUsage"))
        offset = len(client.data)
        client.command("close_current_period")
        after = fields_of(client.wait_for_tag("CurrentPeriodUsage", offset))
        assert int(after["CurrentUsage"], 16) == 0
        assert int(after["StartDate"], 16) > int(before["StartDate"], 16)
        client.command("get_last_period_usage")
        last = fields_of(client.wait_for_tag("LastPeriodUsage"))
        assert last["EndDate"] == after["StartDate"]
        assert last["StartDate"] == before["StartDate"]
        assert int(last["LastUsage"], 16) >= int(before["CurrentUsage"], 16)


def test_restart_cycles_connection_status() -> None:
    with MeterSimulator(pushes=False, reply_delay=0.01) as sim, Client(sim.port) as client:
        client.command("restart")
        assert client.wait(lambda d: b"<Status>Connected</Status>" in d, 3)
        statuses = re.findall(rb"<Status>([^<]*)</Status>", client.data)
        assert statuses[0] == b"Initializing" and statuses[-1] == b"Connected"
        assert b"Join: Success" in statuses and len(statuses) >= 4


def test_pyserial_client_gets_replies() -> None:
    import serial  # a hard dependency: missing means the setup is broken
    with MeterSimulator(pushes=False, reply_delay=0.01) as sim:
        port = serial.Serial(sim.port, 115200, timeout=0.05)
        try:
            port.write(b"<Command><Name>get_instantaneous_demand</Name></Command>")
            data = b""
            deadline = time.monotonic() + 3
            while b"</InstantaneousDemand>" not in data and time.monotonic() < deadline:
                data += port.read(4096)
            assert b"</InstantaneousDemand>\r\n" in data
            assert readings_in(data) == sim.sent_readings()
        finally:
            port.close()


# --------------------------------------------------------------------------------------- pushes


def test_pushes_follow_the_scaled_schedule() -> None:
    speed = 80.0  # demand every 0.1 s, price 1.125 s, message 1.5 s, summation 3 s, time 11.25 s
    with (
        MeterSimulator(speed=speed, first_push_delay=0.2, meters=2) as sim,
        Client(sim.port) as client,
    ):
        time.sleep(1.9)
        sim.set_pushes(False)
        assert sim.drain(1)
        data = client.data
        sent = sim.sent_readings()
    roots = ROOT_RE.findall(data)
    per_meter = {
        mac: [r for r in readings_in(data) if r.meter_mac == mac] for mac in sim.meter_macs
    }
    for readings in per_meter.values():
        demands = [r for r in readings if r.kind == "demand"]
        assert 12 <= len(demands) <= 20, len(demands)  # (1.9 - 0.2) / 0.1 + 1 = 18, + drain
        steps = [b.meter_time - a.meter_time for a, b in itertools.pairwise(demands)]
        assert all(s >= 1 for s in steps)  # strictly increasing meter time
        assert 6 <= sorted(steps)[len(steps) // 2] <= 12  # ~8 simulated seconds apart
        assert sum(r.kind == "summation_delivered" for r in readings) == 1
        assert sum(r.kind == "price" for r in readings) == 2
    assert roots.count(b"MessageCluster") == 4  # two per meter
    assert roots.count(b"TimeCluster") == 2
    assert set(roots) <= KNOWN_TAGS
    assert sent == readings_in(data)


def test_set_schedule_changes_push_schedule() -> None:
    with (
        MeterSimulator(speed=80, first_push_delay=0.1, reply_delay=0.01) as sim,
        Client(sim.port) as client,
    ):
        assert sim.wait_for(lambda: sim.sent_count("demand") >= 2, 3)
        client.command("set_schedule", Event="demand", Frequency="0x00000008", Enabled="N")
        client.wait_for_tag("ScheduleInfo")
        time.sleep(0.05)
        count = sim.sent_count("demand")
        time.sleep(0.4)
        assert sim.sent_count("demand") == count  # disabled: no more demand pushes
        client.command("set_schedule", Event="demand", Frequency="0x00000020", Enabled="Y")
        assert sim.wait_for(lambda s: s.sent_count("demand") >= count + 3, 3)
        demands = [r for r in sim.sent_readings() if r.kind == "demand"][count:]
        steps = [b.meter_time - a.meter_time for a, b in itertools.pairwise(demands)]
        assert all(28 <= s <= 40 for s in steps), steps  # every 0x20 = 32 simulated s


def test_pushes_off_until_enabled() -> None:
    with MeterSimulator(speed=80, pushes=False, first_push_delay=0.05) as sim:
        time.sleep(0.3)
        assert sim.sent_readings() == []
        sim.set_pushes(True)
        assert sim.wait_for(lambda: sim.sent_count("demand") >= 2, 2)


# --------------------------------------------------------------------------------------- quirks


def _quirk_sample(quirk: str) -> tuple[bytes, list[SentReading]]:
    personality = "emu2" if quirk == "no_indent" else "raven"
    with (
        MeterSimulator(personality, quirks=[quirk], pushes=False, reply_delay=0.01) as sim,
        Client(sim.port) as client,
    ):
        sim.send_readings(80, ALL_KINDS)
        assert sim.wait_for(sim.idle, 5)
        client.command("get_message")
        client.command("get_current_price")
        client.wait_for_tag("MessageCluster", 0)
        assert sim.wait_for(sim.idle, 5)
        assert sim.drain(2)
        return client.data, sim.sent_readings()


def _ordinary(data: bytes) -> None:
    assert b"\x00" not in data and not re.search(rb"[\x80-\xff]", data)


QUIRK_CHECKS = {
    "negative_demand": lambda d, s: (
        re.search(rb"<Demand>0xf{4}[0-9a-f]{4}</Demand>", d)
        and any(r.kind == "demand" and r.raw < 0 for r in s)
    ),
    "multiplier3": lambda d, s: (
        b"<Multiplier>0x00000003</Multiplier>" in d
        and all(r.multiplier == 3 for r in s if r.kind != "price")
    ),
    "zero_divisor": lambda d, s: (
        b"<Multiplier>0x00000000</Multiplier>\r\n  <Divisor>0x00000000</Divisor>" in d
        and all(r.divisor == 0 for r in s if r.kind != "price")
    ),
    "wide_summation": lambda d, s: any(
        int(v, 16) > 2**32 for v in re.findall(rb"<SummationDelivered>(0x[0-9a-f]{16})<", d)
    ),
    "unset_timestamp": lambda d, s: (
        b"<TimeStamp>0xffffffff</TimeStamp>" in d and any(r.meter_time is None for r in s)
    ),
    "partial_start": lambda d, s: not d.startswith(b"<") and re.match(rb"[^<]*</", d) is not None,
    "nul_noise": lambda d, s: (
        b"\x00" in d
        and re.search(rb">\r\n[^<]*[\x80-\xff]", d)
        and b"\r\n\r\n" in d
        and re.search(rb"\r[^\n]", d)
    ),
    "cp1252_text": lambda d, s: (
        re.search(rb"<RateLabel>[^<]*\xe9[^<]*\xff</RateLabel>", d)
        and re.search(rb"<Text>[^<]*&amp;[^<]*</Text>", d)
    ),
    "duplicates": lambda d, s: (
        any(r in s[i + 1 : i + 3] for i, r in enumerate(s))
        and any(m.group(0) + b"\r\n" + m.group(0) in d for m in FRAG_RE.finditer(d))
    ),
    "clock_backwards": lambda d, s: _has_backwards(s),
    "no_indent": lambda d, s: b"\n<DeviceMacId>" in d and b"\n " not in d,
    "unknown_fragment": lambda d, s: (
        set(ROOT_RE.findall(d)) - KNOWN_TAGS and re.search(rb"<(Protocol|Port)>", d)
    ),
}


def _has_backwards(sent: list[SentReading]) -> bool:
    last: dict[tuple[str, str], int] = {}
    backwards = False
    for r in sent:
        k = (r.meter_mac, r.kind)
        if r.meter_time is not None and k in last and r.meter_time < last[k]:
            backwards = True
        if r.meter_time is not None:
            last[k] = r.meter_time
    return backwards


def test_quirk_checks_cover_every_quirk() -> None:
    assert set(QUIRK_CHECKS) == set(QUIRKS)


@pytest.mark.parametrize("quirk", sorted(QUIRKS))
def test_quirk_visible_in_bytes(quirk: str) -> None:
    data, sent = _quirk_sample(quirk)
    assert QUIRK_CHECKS[quirk](data, sent), f"{quirk} not visible"
    assert sent == readings_in(data)
    keys = [r.key for r in sent if r.meter_time is not None and r.kind != "last_period_usage"]
    if quirk == "duplicates":
        assert len(set(keys)) < len(keys)
    else:
        assert len(set(keys)) == len(keys)  # even clock_backwards never reuses a key
    if quirk not in ("nul_noise", "cp1252_text", "partial_start"):
        _ordinary(data)


def test_ordinary_stream_has_no_quirks() -> None:
    data, sent, _ = run_flat(n=80)
    _ordinary(data)
    assert all(not QUIRK_CHECKS[q](data, sent) for q in QUIRKS if q != "no_indent")
    assert sent == readings_in(data)


def test_negative_demand_is_32_bit_twos_complement() -> None:
    data, sent, _ = run_flat(["negative_demand"], n=60, kinds=("demand",))
    texts = re.findall(rb"<Demand>(0x[0-9a-f]+)</Demand>", data)
    demands = [r.raw for r in sent]
    assert len(texts) == len(demands) == 60
    for text, raw in zip(texts, demands, strict=True):
        if raw < 0:
            assert len(text) == 10 and int(text, 16) == raw + 2**32
        else:
            assert len(text) == 8 and int(text, 16) == raw
    assert any(r < 0 for r in demands) and any(r > 0 for r in demands)


def test_summation_increases_with_demand() -> None:
    with MeterSimulator(pushes=False, speed=600, reply_delay=0.01) as sim:
        sim.send_readings(30, ("demand", "summation_delivered"), flat_out=False)
        with Client(sim.port):
            assert sim.wait_for(lambda: sim.sent_count() == 45, 5)  # a summation is 2 readings
    delivered = [r.raw for r in sim.sent_readings() if r.kind == "summation_delivered"]
    assert delivered == sorted(delivered) and delivered[-1] > delivered[0]
    demands = [r for r in sim.sent_readings() if r.kind == "demand"]
    steps = [b.meter_time - a.meter_time for a, b in itertools.pairwise(demands)]
    assert min(steps) >= 6  # paced one per (simulated) demand interval, clock-stamped


def test_all_quirks_together_still_match_record() -> None:
    quirks = [q for q in QUIRKS if q not in ("no_indent", "multiplier3")]
    data, sent, _ = run_flat(quirks, n=300, seed=7)
    assert sent == readings_in(data)


# ----------------------------------------------------------------------------- unplug / replug


def test_unplug_mid_fragment_then_replug(tmp_link: str) -> None:
    with MeterSimulator(link=tmp_link, pushes=False, reply_delay=0.01) as sim:
        assert os.path.realpath(tmp_link) == sim.slave_name
        client = Client(tmp_link)
        sim.send_readings(3)
        assert sim.wait_for(lambda: sim.sent_count() == 3, 3)
        sim.unplug(mid_fragment=True)
        assert not os.path.lexists(tmp_link)
        assert client.wait(lambda d: client.eof is not None, 2), "reader saw no EOF/EIO"
        data = client.data
        client.close()
        assert data.count(b"<InstantaneousDemand>") == 4  # 3 whole + the cut one
        assert data.count(b"</InstantaneousDemand>") == 3
        assert len(sim.sent_readings()) == 3 == len(readings_in(data))

        old = sim.slave_name
        sim.replug()
        assert os.path.islink(tmp_link) and os.readlink(tmp_link) == sim.slave_name
        assert sim.port == tmp_link
        with Client(tmp_link) as client:
            client.command("get_device_info")
            client.wait_for_tag("DeviceInfo")
            sim.send_readings(2)
            assert client.wait(lambda d: d.count(b"</InstantaneousDemand>") == 2)
            assert len(sim.sent_readings()) == 5
            assert old != sim.slave_name or os.path.exists(old)
    assert not os.path.lexists(tmp_link)


def test_replug_to_new_link_and_pushes_continue(tmp_path: Path) -> None:
    first, second = str(tmp_path / "a"), str(tmp_path / "b")
    with MeterSimulator(link=first, speed=80, first_push_delay=0.05) as sim:
        assert sim.wait_for(lambda: sim.sent_count("demand") >= 1, 2)
        sim.unplug(drain_timeout=0)
        count = sim.sent_count("demand")
        time.sleep(0.2)
        assert sim.sent_count("demand") == count  # nothing is written while unplugged
        sim.replug(second)
        assert sim.port == second and not os.path.lexists(first)
        with Client(second) as client:
            assert client.wait(lambda d: d.count(b"</InstantaneousDemand>") >= 2, 2)


def test_flat_out_is_paced_by_the_reader() -> None:
    with MeterSimulator(pushes=False) as sim:
        sim.send_readings(2000)
        time.sleep(0.3)
        stalled = sim.sent_count()
        assert 0 < stalled < 200  # the pty buffer is full; nobody reads
        with Client(sim.port) as client:
            assert sim.wait_for(lambda: sim.sent_count() == 2000, 10)
            assert sim.drain(2)
            sent = sim.sent_readings()
            assert readings_in(client.data) == sent
            times = [r.meter_time for r in sent]
            assert times == sorted(set(times))  # unique, increasing


def test_stop_is_idempotent_and_quick(tmp_link: str) -> None:
    sim = MeterSimulator(link=tmp_link, speed=10).start()
    sim.send_readings(10_000)  # the writer is blocked: nobody reads
    time.sleep(0.1)
    t0 = time.monotonic()
    sim.stop()
    sim.stop()
    assert time.monotonic() - t0 < 2.0
    assert not os.path.lexists(tmp_link)
    assert not any(t.is_alive() for t in threading.enumerate() if t.name.startswith("meter-sim-"))


# ------------------------------------------------------------------------------- determinism, API


def test_same_seed_same_bytes() -> None:
    quirks = ["duplicates", "nul_noise", "clock_backwards", "unset_timestamp", "unknown_fragment"]
    a, sent_a, _ = run_flat(quirks, seed=11, n=80)
    b, sent_b, _ = run_flat(quirks, seed=11, n=80)
    c, _, _ = run_flat(quirks, seed=12, n=80)
    assert a == b and sent_a == sent_b
    assert a != c


def test_bad_arguments() -> None:
    with pytest.raises(ValueError):
        MeterSimulator("zigbee")
    with pytest.raises(ValueError):
        MeterSimulator(quirks=["no_such_quirk"])
    with pytest.raises(ValueError):
        MeterSimulator(speed=0)
    with pytest.raises(ValueError):
        MeterSimulator().send_readings(1, ("voltage",))


def test_sent_reading_key() -> None:
    r = SentReading("0x0013500100d8c028", "demand", 1_700_000_000, -1482, 1, 1000)
    assert r.key == ("0x0013500100d8c028", "demand", 1_700_000_000)


# ------------------------------------------------------------------------------------------ CLI


def test_main_count_exits_zero(tmp_link: str, capsys: pytest.CaptureFixture[str]) -> None:
    got: list[bytes] = []

    def read_when_linked() -> None:
        deadline = time.monotonic() + 5
        while not os.path.lexists(tmp_link) and time.monotonic() < deadline:
            time.sleep(0.005)
        client = Client(tmp_link)
        client.wait(lambda d: client.eof is not None, 5)
        got.append(client.data)
        client.close()

    reader = threading.Thread(target=read_when_linked)
    reader.start()
    assert main(["--count", "3", "--link", tmp_link, "--speed", "100", "--seed", "5"]) == 0
    reader.join(5)
    out = capsys.readouterr().out
    assert tmp_link in out and len(out.strip().splitlines()) == 1
    assert got and got[0].count(b"</InstantaneousDemand>") >= 3
    assert not os.path.lexists(tmp_link)


def test_main_flat_out_count(tmp_link: str) -> None:
    assert main(["--count", "5", "--flat-out", "--emu2", "--link", tmp_link]) == 0


def test_main_help_lists_quirks(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    assert all(q in out for q in QUIRKS) and "--link" in out and "--flat-out" in out


def test_cli_runs_until_sigterm(tmp_link: str) -> None:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen(
        [sys.executable, "-m", "ravend.simulator", "--link", tmp_link, "--speed", "50"],
        stdout=subprocess.PIPE,
        text=True,
        env=env,
        cwd=REPO,
    )
    try:
        line = proc.stdout.readline()
        assert tmp_link in line
        with Client(tmp_link) as client:
            assert client.wait(lambda d: b"</InstantaneousDemand>" in d, 3)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(5) == 0
        assert not os.path.lexists(tmp_link)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
