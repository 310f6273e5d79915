"""Maintenance never stalls on stored meter times: real ravend fed by the simulator
on a real pty, real SQLite, then the real ``ravenctl`` commands on what it stored.

A meter time in 2136 (the last second the meter's 2000-based uint32 clock can say) used to hold
the roll-up watermark for good: every new summation's hours stretched to 2136. With it, raw_days
and max_db_mb were never applied and ``report`` had no day to show.
"""

from __future__ import annotations

import datetime as dt
import json
import sqlite3
import subprocess
import time
from pathlib import Path

from ravend.protocol.model import METER_EPOCH_OFFSET
from ravend.simulator import MeterSimulator
from tests.helpers.process import RavendProcess, run_program, write_config
from tests.helpers.wait import wait_for

ROOT = Path(__file__).resolve().parent.parent
LAST_METER_SECOND = 0xFFFFFFFE  # 0xFFFFFFFF means "not set": this is 2136-02-07 06:28:14 UTC


def summation(meter: str, device: str, stamp: int, delivered: int) -> bytes:
    return (f"<CurrentSummationDelivered>\r\n  <DeviceMacId>{device}</DeviceMacId>\r\n"
            f"  <MeterMacId>{meter}</MeterMacId>\r\n  <TimeStamp>0x{stamp:08x}</TimeStamp>\r\n"
            f"  <SummationDelivered>0x{delivered:016x}</SummationDelivered>\r\n"
            "  <SummationReceived>0x0000000000000000</SummationReceived>\r\n"
            "  <Multiplier>0x00000001</Multiplier>\r\n  <Divisor>0x000003e8</Divisor>\r\n"
            "</CurrentSummationDelivered>\r\n").encode()


def demand(meter: str, device: str, stamp: int, raw: int) -> bytes:
    return (f"<InstantaneousDemand>\r\n  <DeviceMacId>{device}</DeviceMacId>\r\n"
            f"  <MeterMacId>{meter}</MeterMacId>\r\n  <TimeStamp>0x{stamp:08x}</TimeStamp>\r\n"
            f"  <Demand>0x{raw:06x}</Demand>\r\n  <Multiplier>0x00000001</Multiplier>\r\n"
            "  <Divisor>0x000003e8</Divisor>\r\n</InstantaneousDemand>\r\n").encode()


def one(db: Path, sql: str) -> tuple:
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5)
    try:
        row = conn.execute(sql).fetchone()
        return (None,) * 4 if row is None else row
    except sqlite3.OperationalError:
        return (None,) * 4
    finally:
        conn.close()


def maintained(db: Path) -> bool:
    """Every row rolled up, the 2000-timed ones purged, every plausible demand in the hours."""
    watermark = one(db, "SELECT value FROM maintenance_state WHERE name = 'rollup_watermark'")[0]
    newest, epoch, plausible, _ = one(db, "SELECT MAX(id), SUM(clock_flag = 'epoch'), SUM(kind ="
                                   " 'demand' AND clock_flag IS NULL), 0 FROM readings")
    samples = one(db, "SELECT SUM(demand_samples) FROM rollup_hourly")[0]
    return (watermark is not None and watermark == newest and epoch == 0
            and samples == plausible)


def ravenctl(*args: str) -> subprocess.CompletedProcess[str]:
    return run_program("ravend.cli.ravenctl", *args)


def test_far_future_and_reset_meter_times_never_stall_maintenance(tmp_path: Path) -> None:
    link = str(tmp_path / "stick")
    state = tmp_path / "state"
    db = state / "ravend.db"
    now = int(time.time())
    sim = MeterSimulator("emu2", link=link, seed=16, pushes=False, reply_delay=0.01,
                         start_time=now - 1800).start()
    retention = {"raw_days": "1", "rollup_interval": "1s", "purge_interval": "1s",
                 "time_zone": "UTC"}
    conf = write_config(tmp_path / "ravend.conf", state, link, retention=retention)
    ravend = RavendProcess(conf, tmp_path / "ravend.log")
    try:
        assert wait_for(lambda: "device opened" in ravend.log(), 20)
        sim.send_readings(100, ("demand", "summation_delivered"))
        assert sim.drain(10)
        meter, device = sim.sent_readings()[0].meter_mac, sim.device_mac
        for stamp in (LAST_METER_SECOND, 0x00000010, 0x00000020):  # 2136, then 2000 (reset)
            sim.write_raw(summation(meter, device, stamp, 9_000_000 + stamp % 1000))
            sim.write_raw(demand(meter, device, stamp, 1200))
        sim.send_readings(100, ("demand", "summation_delivered"))
        assert sim.drain(10)
        assert wait_for(lambda: one(db, "SELECT COUNT(*) FROM readings")[0] == 300 + 9, 20)
        assert wait_for(lambda: maintained(db), 30), ravend.log()
        far = one(db, f"SELECT COUNT(*) FROM readings WHERE meter_time ="
                       f" {LAST_METER_SECOND + METER_EPOCH_OFFSET}")[0]
        assert far == 3  # delivered, received, demand: kept raw, left out of the roll-ups
    finally:
        code, _ = ravend.stop()
        sim.stop()
    assert code == 0
    assert "Traceback" not in ravend.log()
    assert ravend.log().count("left out of the roll-ups") == 1  # said once

    status = ravenctl("status", "--config", str(conf))
    assert status.returncode == 0, status.stdout + status.stderr
    assert "2136-02-07 06:28:14Z" in status.stdout and meter in status.stdout

    today = dt.datetime.fromtimestamp(time.time(), dt.UTC).date().isoformat()
    report = ravenctl("report", "--days", "1", "--config", str(conf))
    assert report.returncode == 0, report.stdout + report.stderr
    (line,) = [ln for ln in report.stdout.splitlines() if ln.startswith(today)]
    assert line.split()[1] != "-" and line.split()[3] != "-"  # delivered kWh, mean kW

    export = ravenctl("export", "--format", "jsonl", "--config", str(conf))
    assert export.returncode == 0, export.stderr
    rows = [json.loads(ln) for ln in export.stdout.splitlines()]
    assert len(rows) == 300 + 3  # the 2000-timed six went with raw_days
    hourly = ravenctl("export", "--rollup", "hourly", "--config", str(conf))
    assert hourly.returncode == 0 and "2136" not in hourly.stdout, hourly.stderr

    dry = ravenctl("purge", "--dry-run", "--config", str(conf))
    assert dry.returncode == 0, dry.stdout + dry.stderr
    capped = write_config(tmp_path / "capped.conf", state, link,
                          retention={**retention, "raw_days": "0", "max_db_mb": "0.001"})
    cap = ravenctl("purge", "--config", str(capped))
    assert cap.returncode == 0, cap.stdout + cap.stderr
    assert "max_db_mb" in cap.stdout
    assert one(db, "SELECT COUNT(*) FROM readings")[0] == 0  # 2136 too: it was rolled up
    for result in (status, report, export, hourly, dry, cap):
        assert "Traceback" not in result.stderr
