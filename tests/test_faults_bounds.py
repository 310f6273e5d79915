"""Fault matrix, the rows "unbounded fields" and "costly fields", with real parts: the meter
simulator on a pty, the real ravend, SQLite. Fragments whose numbers are wider than the XML API
gives them (a 16-digit TimeStamp, Demand or Multiplier, a 20-digit summation) and a PriceCluster
with TrailingDigits 0x1000000 (a power of ten of 16 million digits) are refused at the door as
decode errors: counted, logged once per burst, never a reading, never device state. Everything
around them is stored once: stored = sent minus the refused fragments.
"""

from __future__ import annotations

import time
from collections import Counter
from pathlib import Path

from ravend.simulator import MeterSimulator
from tests.helpers import servers
from tests.helpers.metrics import try_scrape, value
from tests.helpers.process import ravenctl, running_ravend, stored_rows, write_config
from tests.helpers.wait import wait_for

METER, DEVICE = "0x0013500300aabbcc", "0xd8d5b90000001234"


def keys(rows: list[tuple]) -> Counter:
    return Counter((m, k, t) for m, k, t, *_ in rows)


def demand(stamp: str, value_: str = "0x0003e8", multiplier: str = "0x00000001") -> bytes:
    return (f"<InstantaneousDemand>\r\n  <DeviceMacId>{DEVICE}</DeviceMacId>\r\n"
            f"  <MeterMacId>{METER}</MeterMacId>\r\n  <TimeStamp>{stamp}</TimeStamp>\r\n"
            f"  <Demand>{value_}</Demand>\r\n  <Multiplier>{multiplier}</Multiplier>\r\n"
            "  <Divisor>0x000003e8</Divisor>\r\n</InstantaneousDemand>\r\n").encode()


def summation(stamp: str, delivered: str) -> bytes:
    return (f"<CurrentSummationDelivered>\r\n  <DeviceMacId>{DEVICE}</DeviceMacId>\r\n"
            f"  <MeterMacId>{METER}</MeterMacId>\r\n  <TimeStamp>{stamp}</TimeStamp>\r\n"
            f"  <SummationDelivered>{delivered}</SummationDelivered>\r\n"
            "  <SummationReceived>0x0000000000000000</SummationReceived>\r\n"
            "  <Multiplier>0x00000001</Multiplier>\r\n  <Divisor>0x000003e8</Divisor>\r\n"
            "</CurrentSummationDelivered>\r\n").encode()


def price(stamp: str, digits: str) -> bytes:
    return (f"<PriceCluster>\r\n  <DeviceMacId>{DEVICE}</DeviceMacId>\r\n"
            f"  <MeterMacId>{METER}</MeterMacId>\r\n  <TimeStamp>{stamp}</TimeStamp>\r\n"
            "  <Price>0x0000013b</Price>\r\n  <Currency>0x0348</Currency>\r\n"
            f"  <TrailingDigits>{digits}</TrailingDigits>\r\n  <Tier>0x01</Tier>\r\n"
            "</PriceCluster>\r\n").encode()


GOOD_STAMP = 0x2C000000  # 2023-05
#: Each refused for one field; one burst of them, then a second one after good readings.
REFUSED = [
    demand("0x0000000100000000"),  # TimeStamp of 16 digits, wider than uint32
    demand(f"0x{GOOD_STAMP + 1:08x}", value_="0x7fffffffffffffff"),  # Demand of 16 digits
    demand(f"0x{GOOD_STAMP + 2:08x}", multiplier="0xffffffffffffffff"),  # Multiplier, 16 digits
    summation(f"0x{GOOD_STAMP + 3:08x}", "0x" + "f" * 20),  # a summation wider than 64 bits
    price(f"0x{GOOD_STAMP + 4:08x}", "0x1000000"),  # 10**16777216 if it were computed
]
#: Good fragments of the same meter in the same bursts: they must be stored.
KEPT = {
    demand(f"0x{GOOD_STAMP + 10:08x}"): (METER, "demand", GOOD_STAMP + 10),
    demand(f"0x0000000000{GOOD_STAMP + 11:08x}"): (METER, "demand", GOOD_STAMP + 11),  # padded
    price(f"0x{GOOD_STAMP + 12:08x}", "0x0f"): (METER, "price", GOOD_STAMP + 12),  # the most
}


def test_wide_and_costly_fields_are_refused_and_everything_around_them_is_stored(
        tmp_path: Path) -> None:
    from ravend.protocol.model import METER_EPOCH_OFFSET

    link = str(tmp_path / "stick")
    db = tmp_path / "state" / "ravend.db"
    port = servers.free_port()
    url = f"http://127.0.0.1:{port}/metrics"
    sim = MeterSimulator("raven", link=link, seed=31, pushes=False, reply_delay=0.01).start()
    config = write_config(tmp_path / "ravend.conf", tmp_path / "state", link,
                          metrics={"listen": f"127.0.0.1:{port}"})
    kept = {(m, k, t + METER_EPOCH_OFFSET) for m, k, t in KEPT.values()}
    with running_ravend(config, tmp_path / "ravend.log", then_stop=(sim.stop,)) as ravend:
        assert wait_for(lambda: "device opened" in ravend.log(), 20), ravend.log()
        for burst in (REFUSED[:3], REFUSED[3:]):
            sim.send_readings(20, ("demand", "summation_delivered", "price"))
            sim.write_raw(b"".join(burst) + b"".join(KEPT))
            sim.send_readings(20, ("demand", "summation_delivered", "price"))
        assert sim.drain(30)
        # The device thread still answers a command after the bursts (no frozen GIL, no death).
        refresh = ravenctl("refresh", "--config", str(config), timeout=60)
        assert refresh.returncode == 0, refresh.stderr + ravend.log()
        assert sim.drain(10)
        want = {(s.meter_mac, s.kind, s.meter_time) for s in sim.sent_readings()} | kept
        assert wait_for(lambda: set(keys(stored_rows(db))) >= want, 30), ravend.log()
        time.sleep(0.3)  # anything stored beyond `want` would show now
        assert ravend.proc.poll() is None, ravend.log()
        samples = try_scrape(url)
        assert samples is not None, ravend.log()
        assert value(samples, "ravend_decode_errors_total") == len(REFUSED)
        assert value(samples, "ravend_device_connected") == 1
        assert value(samples, "ravend_sink_up", sink="sqlite") == 1
    log = ravend.log()
    assert "Traceback" not in log, log
    stored = keys(stored_rows(db))
    assert max(stored.values()) == 1
    assert set(stored) == want  # stored = sent minus the refused fragments, once each
    refused_lines = [line for line in log.splitlines() if "could not be decoded" in line]
    assert 1 <= len(refused_lines) <= 2, log  # once per burst, never once per fragment
    assert "TrailingDigits" in log and "TimeStamp" in log, log
