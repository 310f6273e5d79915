"""Roll-ups and purges on real stores (SQLite and the private MariaDB): exact roll-ups that
survive the purge of their raw data, incremental updates, chunked purges of rolled-up readings
only, a SQLite file that shrinks, the size cap, and the ravenctl commands."""

from __future__ import annotations

import csv
import io
import json
import sqlite3
import threading
import time
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from ravend.cli import ravenctl
from ravend.config import RetentionConfig
from ravend.maintenance import Maintenance
from ravend.protocol.model import KIND_UNITS, METER_EPOCH_OFFSET, Kind, Reading, scale
from ravend.purge import purge
from ravend.rollup_update import update_rollups
from ravend.sinks.mysql import MysqlSink
from ravend.sinks.sqlite import SqliteSink
from ravend.store import Store
from tests.helpers.mysql import mysql_config, query
from tests.helpers.readings import DEVICE, METER
from tests.helpers.stores import StoreEnv, each_store

DAY = 86400
HOUR = 3600
D0 = 1_699_920_000  # 2023-11-14 00:00:00 UTC


def reading(kind: Kind, t: int, raw: int) -> Reading:
    return Reading(METER, kind, t, t + 0.25, raw, 1, 1000, scale(raw, 1, 1000),
                   KIND_UNITS[kind], DEVICE)


def history(start: int, seconds: int) -> list[Reading]:
    """A demand a minute (1.0 .. 1.9 kW, mean 1.45 per hour) and summations every 5 minutes
    rising 1.5 kWh an hour (received stays 0)."""
    out = []
    for t in range(start, start + seconds, 60):
        out.append(reading(Kind.DEMAND, t, 1000 + (t // 60 % 10) * 100))
        if t % 300 == 0:
            out.append(reading(Kind.SUMMATION_DELIVERED, t, 5_000_000 + (t - D0) // 300 * 125))
            out.append(reading(Kind.SUMMATION_RECEIVED, t, 0))
    return out


class Env(StoreEnv):
    """One store of each kind, its clock (``now``) set by the test."""

    def __init__(self, kind: str, tmp_path: Path, mariadb_server: Any, name: str) -> None:
        super().__init__(kind, tmp_path, mariadb_server, name)
        self.now = float(D0)

    def store(self) -> Store:
        store = super().store()
        store.now = lambda: self.now  # type: ignore[method-assign]
        return store

    def rollups(self, table: str = "rollup_hourly") -> list[tuple]:
        """Roll-up rows with the decimals as Decimal whatever the store keeps them as."""
        out = []
        for row in self.rows(f"SELECT period_start, demand_samples, demand_avg_kw, demand_min_kw,"
                             f" demand_max_kw, delivered_kwh, received_kwh, energy_seconds,"
                             f" counter_resets FROM {table} ORDER BY period_start"):
            out.append(tuple(Decimal(str(v)) if isinstance(v, str | Decimal) else v
                             for v in row))
        return out

    def count(self) -> int:
        return self.rows("SELECT COUNT(*) FROM readings")[0][0]


@pytest.fixture(params=["sqlite", "mysql"])
def env(request, tmp_path: Path):
    yield from each_store(request, tmp_path, Env)


def run_rollups(env: Env) -> Any:
    store = env.store()
    try:
        return update_rollups(store, "UTC")
    finally:
        store.close()


def run_purge(env: Env, **settings: Any) -> Any:
    store = env.store()
    try:
        return purge(store, RetentionConfig(**settings))
    finally:
        store.close()


def test_rollups_are_exact_and_survive_the_purge_of_their_raw_data(env: Env) -> None:
    readings = history(D0, 3 * DAY)
    env.write(readings)
    report = run_rollups(env)
    assert report.rolled_up == len(readings)
    hourly = env.rollups()
    assert len(hourly) == 72
    d = Decimal
    full = (60, d("1.45"), d("1.0"), d("1.9"), d("1.5"), d("0"), 3600, 0)
    assert all(row[1:] == full for row in hourly[:-1])
    # The last hour: its last summation is at 23:55, so 55 minutes of energy are known.
    assert hourly[-1][1:] == (60, d("1.45"), d("1.0"), d("1.9"), d("1.375"), d("0"), 3300, 0)
    daily = env.rollups("rollup_daily")
    assert [r[0] for r in daily] == [D0, D0 + DAY, D0 + 2 * DAY]
    assert daily[0][1:] == (1440, d("1.45"), d("1.0"), d("1.9"), d("36"), d("0"), DAY, 0)
    days = env.rows("SELECT day, time_zone FROM rollup_daily ORDER BY period_start")
    assert [str(r[0]) for r in days] == ["2023-11-14", "2023-11-15", "2023-11-16"]
    assert {r[1] for r in days} == {"UTC"}

    env.now = D0 + 4 * DAY
    report = run_purge(env, raw_days=2, purge_chunk=500, purge_pause=0)
    assert report.purged == len([r for r in readings if r.key_time < D0 + 2 * DAY])
    assert report.chunks >= report.purged // 500
    assert env.count() == len(readings) - report.purged
    assert env.rows("SELECT MIN(key_time) FROM readings")[0][0] == D0 + 2 * DAY
    assert env.rollups() == hourly and env.rollups("rollup_daily") == daily
    assert env.rows("SELECT value FROM maintenance_state WHERE name = 'purged_before'") == [
        (D0 + 2 * DAY,)]


def test_rollups_are_incremental_and_late_readings_redo_their_hours(env: Env) -> None:
    env.write(history(D0, 2 * HOUR))
    first = run_rollups(env)
    assert first.hours >= 2
    env.write(history(D0 + 2 * HOUR, HOUR))
    second = run_rollups(env)
    # The new hour, and the hour before it (its energy reaches to the first new summation).
    assert (second.rolled_up, second.hours) == (len(history(D0, HOUR)), 2)
    assert run_rollups(env).rolled_up == 0
    assert len(env.rollups()) == 3

    # A gap: no summation from 03:00 until 06:00, 3 kWh in between → 1 kWh an hour.
    sums = [reading(Kind.SUMMATION_DELIVERED, D0 + 3 * HOUR, 5_004_500),
            reading(Kind.SUMMATION_DELIVERED, D0 + 6 * HOUR, 5_007_500)]
    env.write(sums)
    run_rollups(env)
    spread = {r[0]: r[5] for r in env.rollups()}
    assert [spread[D0 + h * HOUR] for h in (3, 4, 5)] == [Decimal(1)] * 3
    # A summation of 04:00 arrives late: 2.5 of the 3 kWh were used in the first hour.
    env.write([reading(Kind.SUMMATION_DELIVERED, D0 + 4 * HOUR, 5_007_000)])
    late = run_rollups(env)
    assert late.rolled_up == 1 and late.hours == 3  # 03:00, 04:00 and 05:00 only
    spread = {r[0]: r[5] for r in env.rollups()}
    assert [spread[D0 + h * HOUR] for h in (3, 4, 5)] == [Decimal("2.5"), Decimal("0.25"),
                                                          Decimal("0.25")]


def test_only_rolled_up_readings_are_purged(env: Env) -> None:
    env.write(history(D0, 2 * HOUR))
    env.now = D0 + 10 * DAY
    dry = env.store()
    try:
        report = purge(dry, RetentionConfig(raw_days=1), dry_run=True)
    finally:
        dry.close()
    total = env.count()
    assert (report.purged, report.not_rolled_up) == (total, total)
    assert run_purge(env, raw_days=1).purged == 0  # nothing is rolled up yet
    assert env.count() == total
    run_rollups(env)
    assert run_purge(env, raw_days=1).purged == total
    # A straggler older than the purge horizon: stored, purged later, never rolled up, and the
    # roll-up of its hour (computed from the full data) stays as it was.
    before = env.rollups()
    env.write([reading(Kind.DEMAND, D0 + 30, 9_999_000)])
    run_rollups(env)
    assert env.rollups() == before


def test_old_rollups_go_after_rollup_days(env: Env) -> None:
    env.write(history(D0, 2 * DAY))
    run_rollups(env)
    env.now = D0 + 2 * DAY + HOUR
    report = run_purge(env, raw_days=0, rollup_days=1, purge_chunk=10, purge_pause=0)
    assert report.purged == 0 and env.count() > 0
    # Periods that start before the cutoff (D0 + 1 day + 1 hour): 25 hours and 2 days.
    assert report.purged_rollups == 25 + 2
    assert env.rollups()[0][0] == D0 + DAY + HOUR


def sqlite_file_size(path: Path) -> int:
    return sum(p.stat().st_size for p in (path, Path(f"{path}-wal")) if p.exists())


def test_sqlite_purge_gives_the_space_back_to_the_file_system(tmp_path: Path) -> None:
    env = Env("sqlite", tmp_path, None, "shrink")
    try:
        env.write(history(D0, 30 * DAY))  # ~60,000 readings
        run_rollups(env)
        env.now = D0 + 31 * DAY
        before = sqlite_file_size(env.path)
        report = run_purge(env, raw_days=3, purge_chunk=5000, purge_pause=0)
        after = sqlite_file_size(env.path)
    finally:
        env.close()
    assert report.size_before == before and report.size_after == after
    assert after < before * 0.25, (before, after)
    with sqlite3.connect(env.path) as conn:
        assert conn.execute("PRAGMA freelist_count").fetchone()[0] == 0
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"


def test_sqlite_size_cap_purges_the_oldest_rolled_up_readings(tmp_path: Path) -> None:
    env = Env("sqlite", tmp_path, None, "cap")
    try:
        env.write(history(D0, 20 * DAY))
        run_rollups(env)
        env.write(history(D0 + 20 * DAY, DAY))  # not rolled up: must stay
        newest = env.count() - 20 * 1440 - 20 * 288 * 2
        report = run_purge(env, raw_days=0, max_db_mb=1, purge_chunk=2000, purge_pause=0)
        store = env.store()
        try:
            live = store.live_bytes()
        finally:
            store.close()
        assert live <= 1_000_000
        assert report.purged > 0
        oldest = env.rows("SELECT MIN(key_time) FROM readings")[0][0]
        assert oldest > D0 + DAY
        assert env.rows(f"SELECT COUNT(*) FROM readings WHERE key_time >= {D0 + 20 * DAY}"
                        )[0][0] == newest
        # Everything rolled up went and it is still too big: said, not looped on.
        again = run_purge(env, raw_days=0, max_db_mb=0.01, purge_chunk=2000, purge_pause=0)
        assert any("max_db_mb" in n and "too small" in n for n in again.notes)
    finally:
        env.close()


def write_conf(tmp_path: Path, state: Path, **retention: str) -> Path:
    conf = tmp_path / "ravend.conf"
    keys = "".join(f"{k} = {v}\n" for k, v in retention.items())
    conf.write_text(f"[service]\nstate_dir = {state}\n[retention]\n{keys}")
    return conf


def test_ravenctl_purge_dry_run_purge_and_rollup_export(tmp_path: Path, capsys) -> None:
    state = tmp_path / "state"
    state.mkdir()
    sink = SqliteSink(state / "ravend.db")
    sink.open()
    now = int(time.time())
    start = now - now % DAY - 10 * DAY
    readings = history(start, 6 * HOUR)
    sink.write(readings, [])
    sink.close()
    conf = write_conf(tmp_path, state, raw_days="5", time_zone="UTC")

    assert ravenctl.main(["purge", "--dry-run", "--config", str(conf)]) == 0
    out = capsys.readouterr().out
    assert f"sqlite: would delete {len(readings)} raw readings older than" in out
    assert f"{len(readings)} of them are not rolled up yet" in out
    with sqlite3.connect(state / "ravend.db") as conn:
        assert conn.execute("SELECT COUNT(*) FROM readings").fetchone()[0] == len(readings)

    assert ravenctl.main(["purge", "--config", str(conf)]) == 0
    out = capsys.readouterr().out
    assert f"rolled up {len(readings)} new readings" in out
    assert f"deleted {len(readings)} raw readings" in out

    assert ravenctl.main(["export", "--rollup", "hourly", "--config", str(conf)]) == 0
    rows = list(csv.DictReader(io.StringIO(capsys.readouterr().out)))
    assert len(rows) == 6
    assert rows[0]["demand_avg_kw"] == "1.450000000"
    assert rows[0]["delivered_kwh"] == "1.500000000"
    assert rows[0]["period_start"].endswith("T00:00:00Z")
    assert ravenctl.main(["export", "--rollup", "daily", "--format", "jsonl",
                          "--config", str(conf)]) == 0
    (day,) = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert day["demand_samples"] == 360 and day["time_zone"] == "UTC"
    assert day["delivered_kwh"] == pytest.approx(8.875)  # 5 h 55 min at 1.5 kWh/h


def test_maintenance_thread_rolls_up_then_purges_each_store(tmp_path: Path, mariadb_server,
                                                            caplog, capsys) -> None:
    import logging

    from ravend.config import load

    state = tmp_path / "state"
    state.mkdir()
    db = mariadb_server.new_database("maint")
    now = int(time.time())
    old = history(now - now % DAY - 3 * DAY, 2 * HOUR)  # three days old
    lite = SqliteSink(state / "ravend.db")
    my = MysqlSink(mysql_config(mariadb_server, db))
    for sink in (lite, my):
        sink.open()
        sink.write(old, [])
        sink.close()
    conf = tmp_path / "ravend.conf"
    conf.write_text(f"[service]\nstate_dir = {state}\n[retention]\nraw_days = 1\n"
                    f"rollup_interval = 1s\npurge_interval = 1s\ntime_zone = UTC\n"
                    f"[mysql]\nenabled = yes\nhost = {mariadb_server.host}\n"
                    f"port = {mariadb_server.port}\nuser = {mariadb_server.user}\n"
                    f"password = {mariadb_server.password}\ndatabase = {db}\n")
    maintenance = Maintenance(load(conf))
    caplog.set_level(logging.INFO, logger="ravend.retention")
    maintenance.start()
    try:
        deadline = time.monotonic() + 20
        while maintenance.runs < 1 and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        started = time.monotonic()
        maintenance.stop()
        assert time.monotonic() - started < 1 and not maintenance.alive()
    assert maintenance.runs >= 1
    with sqlite3.connect(state / "ravend.db") as conn:
        assert conn.execute("SELECT COUNT(*) FROM readings").fetchone()[0] == 0
        assert conn.execute("SELECT COUNT(*) FROM rollup_hourly").fetchone()[0] == 2
    assert query(mariadb_server, db, "SELECT COUNT(*) FROM readings") == [(0,)]
    assert query(mariadb_server, db, "SELECT COUNT(*) FROM rollup_hourly") == [(2,)]
    lines = [r.getMessage() for r in caplog.records]
    assert any(f"sqlite: deleted {len(old)} raw readings" in m for m in lines), lines
    assert any(f"mysql: deleted {len(old)} raw readings" in m for m in lines), lines
    # The same roll-ups come out of either store.
    outputs = []
    for store in ("sqlite", "mysql"):
        assert ravenctl.main(["export", "--rollup", "daily", "--store", store,
                              "--config", str(conf)]) == 0
        outputs.append(capsys.readouterr().out)
    assert outputs[0] == outputs[1] and outputs[0].count("\n") == 2  # header and one day


def test_maintenance_keeps_one_connection_open_between_cycles(tmp_path: Path) -> None:
    """The descriptors of a running service do not change from one cycle to the next: the
    maintenance thread opens its connection at the first cycle and keeps it, instead of one
    per cycle (SQLite then keeps a closed connection's file open while the sink's connection
    holds its lock), and closes it when it stops."""
    import os

    from ravend.config import load

    def fds() -> int:
        return len(os.listdir("/proc/self/fd"))

    state = tmp_path / "state"
    state.mkdir()
    sink = SqliteSink(state / "ravend.db")
    none_open = fds()
    sink.open()  # as in the service: the sink's connection stays open all along
    try:
        now = int(time.time())
        sink.write(history(now - now % HOUR - 3 * HOUR, 2 * HOUR), [])
        conf = tmp_path / "ravend.conf"
        conf.write_text(f"[service]\nstate_dir = {state}\n[retention]\n"
                        f"rollup_interval = 1s\ntime_zone = UTC\n")
        maintenance = Maintenance(load(conf), first_delay=0.1)
        maintenance.start()
        try:
            deadline = time.monotonic() + 20
            while maintenance.runs < 1 and time.monotonic() < deadline:
                time.sleep(0.02)
            first = maintenance._open.get(0)
            after_one = fds()
            while maintenance.runs < 3 and time.monotonic() < deadline:
                time.sleep(0.05)
            assert maintenance.runs >= 3
            assert first is not None and maintenance._open.get(0) is first  # the same one
            assert fds() == after_one
        finally:
            maintenance.stop()
        assert not maintenance.alive() and not maintenance._open  # closed when it ends
        assert sink._conn is not None
        assert sink._conn.execute("SELECT COUNT(*) FROM rollup_hourly").fetchone()[0] >= 2
    finally:
        sink.close()
    # SQLite releases the maintenance connection's file once the sink's lock is gone.
    assert fds() == none_open


def test_glibc_heap_calls_take_effect_here() -> None:
    from ravend.memory import limit_malloc_arenas, release_freed_memory

    assert limit_malloc_arenas() is True  # Debian's glibc: mallopt accepted the cap
    release_freed_memory()  # and malloc_trim is found and runs


def test_the_monotonic_id_migration_is_all_or_nothing(tmp_path: Path) -> None:
    """sql/sqlite/005 rebuilds readings in one transaction: failing at any statement (here the
    DROP of the old table, refused) leaves the store at schema 4 with every row as it was; the
    next start migrates it whole."""
    from ravend.db.migrations import migrations
    from ravend.db.sqlite import migrate, schema_version
    from tests.test_repeater import version_4_store

    conn = version_4_store(tmp_path / "old.db", history(D0, 2 * HOUR))
    rows = conn.execute("SELECT *, clock_flag FROM readings ORDER BY id").fetchall()

    def refuse_drop(action: int, *_: Any) -> int:
        return sqlite3.SQLITE_DENY if action == sqlite3.SQLITE_DROP_TABLE else sqlite3.SQLITE_OK

    conn.set_authorizer(refuse_drop)
    with pytest.raises(sqlite3.DatabaseError):
        migrate(conn)
    conn.set_authorizer(None)
    assert schema_version(conn) == 4
    assert conn.execute("SELECT *, clock_flag FROM readings ORDER BY id").fetchall() == rows
    assert migrate(conn) == [m.version for m in migrations("sqlite")[4:]]
    # 006 adds scale (1 for every row stored before) after the columns 005 kept.
    assert conn.execute("SELECT *, clock_flag FROM readings ORDER BY id").fetchall() == [
        (*row[:-1], 1.0, row[-1]) for row in rows]
    assert "AUTOINCREMENT" in conn.execute(
        "SELECT sql FROM sqlite_master WHERE name = 'readings'").fetchone()[0]
    conn.close()


def test_meaningless_meter_times_neither_hold_the_rollups_nor_escape_the_purge(env: Env) -> None:
    """A summation, demand and price timed 2136 (a meter clock far ahead) and a summation of a
    clock reset to 2000, received with the day's readings: the roll-ups take every row past the
    watermark at once, the day's hours are exact, and raw_days deletes all of them, the 2136
    ones by the time they were received."""
    far = METER_EPOCH_OFFSET + 0xFFFFFFFE

    def odd(kind: Kind, t: int, raw: int) -> Reading:
        return Reading(METER, kind, t, D0 + 3 * HOUR + 0.5, raw, 1, 1000, scale(raw, 1, 1000),
                       KIND_UNITS.get(kind, "USD/kWh"), DEVICE)

    day = history(D0, 3 * HOUR)
    env.write(day[:200])
    env.write([odd(Kind.SUMMATION_DELIVERED, far, 9_000_000), odd(Kind.DEMAND, far, 1),
               odd(Kind.PRICE, far, 12), odd(Kind.SUMMATION_DELIVERED, METER_EPOCH_OFFSET, 0)])
    env.write(day[200:])
    store = env.store()
    stop = threading.Event()
    guard = threading.Timer(60, stop.set)  # only so that a stalled roll-up ends the test
    guard.start()
    try:
        report = update_rollups(store, "UTC", stop)
    finally:
        guard.cancel()
        store.close()
    assert report.rolled_up == len(day) + 4 and report.skipped == 4
    assert env.rows("SELECT value FROM maintenance_state WHERE name = 'rollup_watermark'") == \
        env.rows("SELECT MAX(id) FROM readings")
    hours = env.rollups()
    assert [h[0] for h in hours] == [D0, D0 + HOUR, D0 + 2 * HOUR]
    assert [h[1:3] for h in hours] == [(60, Decimal("1.45"))] * 3
    assert [h[5] for h in hours[:2]] == [Decimal("1.5")] * 2  # the 2136 counter counts nothing
    env.now = D0 + 3 * DAY
    assert run_purge(env, raw_days=1).purged == len(day) + 4
    assert env.count() == 0
