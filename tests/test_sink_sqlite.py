"""SQLite sink: migrations, idempotent writes, state upserts, and the read side ravenctl uses."""

from __future__ import annotations

import json
import sqlite3
from decimal import Decimal
from pathlib import Path

import pytest

from ravend.db.migrations import migrations
from ravend.db.sqlite import connect, migrate, schema_version
from ravend.sinks.base import SinkUnavailable, StateItem
from ravend.sinks.sqlite import SqliteSink
from ravend.store_status import SqliteReader
from tests.helpers.readings import DEVICE, METER, T0, demand, demands, odd_clocks


@pytest.fixture()
def sink(tmp_path: Path):
    s = SqliteSink(tmp_path / "ravend.db")
    s.open()
    yield s
    s.close()


def count(path: Path) -> int:
    with sqlite3.connect(path) as conn:
        return conn.execute("SELECT COUNT(*) FROM readings").fetchone()[0]


def test_open_applies_every_migration_once(tmp_path: Path) -> None:
    path = tmp_path / "ravend.db"
    conn = connect(path)
    assert migrate(conn) == [m.version for m in migrations("sqlite")]
    assert migrate(conn) == []
    assert schema_version(conn) == len(migrations("sqlite"))
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert conn.execute("PRAGMA auto_vacuum").fetchone()[0] == 2  # incremental


def test_rewrite_of_same_readings_is_idempotent(sink: SqliteSink) -> None:
    batch = demands(50)
    sink.write(batch, [])
    sink.write(batch[10:30], [])
    sink.write(batch, [])
    assert count(sink.path) == 50


def test_values_are_stored_with_raw_integers_and_scaled_value(sink: SqliteSink) -> None:
    sink.write([demand(0, raw=-1482)], [])
    with sqlite3.connect(sink.path) as conn:
        row = conn.execute("SELECT meter_mac, kind, key_time, meter_time, raw, multiplier,"
                           " divisor, value, unit, device_mac FROM readings").fetchone()
    assert row == (METER, "demand", T0, T0, -1482, 1, 1000, -1.482, "kW", DEVICE)


def test_unset_meter_time_keys_on_host_time(sink: SqliteSink) -> None:
    r = demand(3, meter_time=None)
    sink.write([r], [])
    with sqlite3.connect(sink.path) as conn:
        key_time, meter_time = conn.execute("SELECT key_time, meter_time FROM readings").fetchone()
    assert meter_time is None
    assert key_time == int(r.received_at)


def test_wide_summation_survives(sink: SqliteSink) -> None:
    from ravend.protocol.model import Kind, Reading, scale

    raw = 0x0000_1234_5678_9ABC
    r = Reading(METER, Kind.SUMMATION_DELIVERED, T0, T0 + 0.1, raw, 1, 1000,
                scale(raw, 1, 1000), "kWh", DEVICE)
    sink.write([r], [])
    with sqlite3.connect(sink.path) as conn:
        assert conn.execute("SELECT raw FROM readings").fetchone()[0] == raw
    assert Decimal(raw) / 1000 == r.value


def test_state_is_upserted_latest_wins(sink: SqliteSink) -> None:
    sink.write([], [StateItem(DEVICE, "", "DeviceInfo", 1.0, {"fw_version": "1.0"})])
    sink.write([], [StateItem(DEVICE, "", "DeviceInfo", 2.0, {"fw_version": "2.0"})])
    reader = SqliteReader(sink.path)
    states = reader.states()
    assert len(states) == 1
    assert json.loads(states[0]["body"]) == {"fw_version": "2.0"}
    assert states[0]["received_at"] == 2.0


def test_reader_summary_and_range(sink: SqliteSink) -> None:
    sink.write(demands(10), [])
    reader = SqliteReader(sink.path)
    (row,) = reader.summary()
    assert (row["meter_mac"], row["kind"], row["n"]) == (METER, "demand", 10)
    assert (row["oldest"], row["newest"]) == (T0, T0 + 9)
    assert row["value"] == pytest.approx(1.009)
    assert [r["key_time"] for r in reader.readings(since=T0 + 2, until=T0 + 5)] == [
        T0 + 2, T0 + 3, T0 + 4]
    assert reader.newest_received() == T0 + 9.5


def test_clock_flag_column_follows_the_rule_mqtt_and_mongo_carry(sink: SqliteSink,
                                                                  tmp_path: Path) -> None:
    cases = odd_clocks()
    sink.write([r for r, _ in cases], [])
    with sqlite3.connect(tmp_path / "ravend.db") as conn:
        stored = {(k, t): f for k, t, f in conn.execute(
            "SELECT kind, key_time, clock_flag FROM readings")}
    assert {(r.kind.value, r.key_time): r.clock_flag for r, _ in cases} == stored
    assert [r.clock_flag for r, _ in cases] == [flag for _, flag in cases]


def test_reader_refuses_missing_database(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="no database yet"):
        SqliteReader(tmp_path / "none.db")
    assert not (tmp_path / "none.db").exists()


def test_locked_database_is_unavailable_not_a_crash(tmp_path: Path) -> None:
    path = tmp_path / "ravend.db"
    sink = SqliteSink(path, busy_timeout=0.05)
    sink.open()
    locker = sqlite3.connect(path, isolation_level=None)
    locker.execute("BEGIN EXCLUSIVE")
    with pytest.raises(SinkUnavailable, match="locked"):
        sink.write(demands(1), [])
    locker.execute("ROLLBACK")
    sink.write(demands(1), [])
    assert count(path) == 1


def test_unopenable_path_is_unavailable(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("x")
    sink = SqliteSink(tmp_path / "file" / "ravend.db")
    with pytest.raises(SinkUnavailable, match="cannot open"):
        sink.open()


ODD_DIR = "My Backups #1 ?%20"


def test_a_readonly_open_of_a_path_with_uri_characters_refuses_writes(tmp_path: Path) -> None:
    """'#', '?' and '%' in the path are percent-encoded in the URI: the open reaches this very
    file, read-only, and creates no stray one beside it."""
    folder = tmp_path / ODD_DIR
    folder.mkdir()
    path = folder / "ravend.db"
    sink = SqliteSink(path)
    sink.open()
    sink.write(demands(3), [])
    sink.close()
    conn = connect(path, readonly=True)
    try:
        assert conn.execute("SELECT COUNT(*) FROM readings").fetchone()[0] == 3
        with pytest.raises(sqlite3.OperationalError, match="readonly"):
            conn.execute("CREATE TABLE intruder (x)")
    finally:
        conn.close()
    assert [p.name for p in tmp_path.iterdir()] == [ODD_DIR]
