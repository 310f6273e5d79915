"""ravend-repeater: a SQLite backlog to a real Mosquitto, across kill -9 and broker outages.

The repeater runs as the real ``ravend-repeater`` process. What the subscriber got is compared,
row by row, with what the store holds: every row published, repeats only as exact copies of one
batch at most, the watermark never ahead of what the broker acknowledged.
"""

from __future__ import annotations

import dataclasses
import json
import sqlite3
import threading
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace

import pytest

from ravend import maintenance
from ravend.calplug_history import HISTORY_DEVICE
from ravend.config import RetentionConfig, load
from ravend.protocol.model import METER_EPOCH_OFFSET, Kind, Reading, scale
from ravend.repeater import Watermark
from ravend.repeater_sources import SqliteSource, StoreWatch
from ravend.sinks.base import StateItem
from ravend.sinks.mqtt_payload import parse_reading
from ravend.sinks.sqlite import SqliteSink
from ravend.store import SqliteStore
from tests.helpers.mqtt import Subscriber, reading_messages, save_broker_state, validate_ha_sensor
from tests.helpers.process import RepeaterProcess
from tests.helpers.procfs import cpu_seconds, wakeups
from tests.helpers.readings import DEVICE, METER, T0, store_readings
from tests.helpers.wait import wait_for

BROKER_CONFIG = "max_queued_messages 1000000"


def backlog(n: int, start: int = 0) -> list[Reading]:
    """Demand (one in ten host-timed), summations and prices, as ravend would have stored."""
    out = []
    for i in range(start, start + n):
        kind = (Kind.DEMAND, Kind.DEMAND, Kind.SUMMATION_DELIVERED, Kind.PRICE)[i % 4]
        raw = (i * 7919) % 100_000 - 20_000 if kind is Kind.DEMAND else 10_000 + i
        divisor = 1000 if kind is not Kind.PRICE else 100
        meter_time = None if i % 10 == 9 else T0 + i
        unit = {Kind.DEMAND: "kW", Kind.SUMMATION_DELIVERED: "kWh"}.get(kind, "USD/kWh")
        out.append(Reading(METER, kind, meter_time, T0 + i + 0.25, raw, 1, divisor,
                           scale(raw, 1, divisor), unit, DEVICE))
    return out


def store(db: Path, readings: list[Reading]) -> None:
    store_readings(db, readings, batch=2000)


def write_config(tmp_path: Path, broker, **repeater: str) -> Path:
    state = tmp_path / "state"
    state.mkdir(exist_ok=True)
    settings = {"client_id": "test-repeater", "poll_interval": "0.2", **repeater}
    keys = "".join(f"{k} = {v}\n" for k, v in settings.items())
    path = tmp_path / "ravend.conf"
    path.write_text(f"[service]\nstate_dir = {state}\n"
                    "[device]\nreconnect_min = 0.1\nreconnect_max = 0.5\n"
                    f"[mqtt]\nhost = {broker.host}\n"
                    f"port = {broker.port}\npublish_timeout = 3s\n[repeater]\n{keys}")
    return path


def watermark(tmp_path: Path) -> int:
    try:
        return json.loads((tmp_path / "state" / "repeater.watermark").read_text())["last_id"]
    except (FileNotFoundError, ValueError):
        return -1


def check_received(sub: Subscriber, readings: list[Reading], max_repeats: int = 0, *,
                   live_only: bool = False) -> None:
    """Every reading arrived with its stored values; at most max_repeats exact repeats.
    ``live_only``: leave out the retained messages the broker sent at the subscription."""
    got = [parse_reading(m.payload) for m in reading_messages(sub)
           if not (live_only and m.retain)]
    by_key: dict[tuple, Reading] = {}
    for r in got:
        assert by_key.setdefault(r.key, r) == r, f"{r.key}: a repeat with other values"
    assert set(by_key) == {r.key for r in readings}, "missing or unexpected readings"
    for r in readings:
        assert by_key[r.key] == r
    repeats = sum(n - 1 for n in Counter(r.key for r in got).values())
    assert repeats <= max_repeats, f"{repeats} repeats"


def stored_backlog(tmp_path: Path, broker, n: int, **repeater: str) -> tuple[list[Reading], Path]:
    """A store of ``n`` readings for a repeater to publish to ``broker``: (readings, config)."""
    readings = backlog(n)
    config = write_config(tmp_path, broker, **repeater)
    store(tmp_path / "state" / "ravend.db", readings)
    return readings, config


def drain(tmp_path: Path, broker, n: int, timeout: float, **repeater: str) -> None:
    readings, config = stored_backlog(tmp_path, broker, n, **repeater)
    sub = Subscriber(broker.host, broker.port, ["ravend/+/+"]).start()
    proc = RepeaterProcess(config, tmp_path / "repeater.log")
    try:
        assert wait_for(lambda: watermark(tmp_path) == n, timeout), proc.log()
        assert sub.wait_for(lambda: len(reading_messages(sub)) >= n, 20)
    finally:
        assert proc.stop().code == 0, proc.log()
        sub.stop()
    check_received(sub, readings)
    assert "Traceback" not in proc.log()


def test_backlog_of_100000_drains_completely(tmp_path: Path, make_mosquitto) -> None:
    """The issue's acceptance size (about 12 s here)."""
    drain(tmp_path, make_mosquitto(extra_config=BROKER_CONFIG), 100_000, 300)


def test_kill_9_mid_drain_then_restart_leaves_no_gap(tmp_path: Path, make_mosquitto) -> None:
    broker = make_mosquitto(extra_config=BROKER_CONFIG)
    n = 20_000
    readings, config = stored_backlog(tmp_path, broker, n, batch_size="500")
    sub = Subscriber(broker.host, broker.port, ["ravend/+/+"]).start()
    first = RepeaterProcess(config, tmp_path / "repeater.log")
    assert wait_for(lambda: watermark(tmp_path) >= 5000, 30), first.log()
    first.kill()
    killed_at = watermark(tmp_path)
    assert 5000 <= killed_at < n, "killed too late to test anything"
    second = RepeaterProcess(config, tmp_path / "repeater.log")
    try:
        assert wait_for(lambda: watermark(tmp_path) == n, 60), second.log()
        assert sub.wait_for(lambda: len({parse_reading(m.payload).key
                                         for m in reading_messages(sub)}) >= n, 20)
    finally:
        assert second.stop().code == 0, second.log()
        sub.stop()
    # At most the batch in flight at the kill (acknowledged or not) is published again.
    check_received(sub, readings, max_repeats=500)
    assert f"watermark {tmp_path / 'state' / 'repeater.watermark'}" in second.log()


def test_broker_outage_mid_drain(tmp_path: Path, make_mosquitto) -> None:
    broker = make_mosquitto(extra_config=BROKER_CONFIG)
    n = 20_000
    readings, config = stored_backlog(tmp_path, broker, n, batch_size="200")
    sub = Subscriber(broker.host, broker.port, ["ravend/+/+"], client_id="durable",
                     clean_session=False).start()
    save_broker_state(broker)
    proc = RepeaterProcess(config, tmp_path / "repeater.log")
    try:
        assert wait_for(lambda: watermark(tmp_path) >= 2000, 30), proc.log()
        before = watermark(tmp_path)
        broker.kill()
        time.sleep(2.0)
        # Only the batch whose acknowledgements were already in may have been committed since.
        at_kill = watermark(tmp_path)
        assert at_kill - before <= 200, "watermark moved without the broker"
        broker.start()
        assert wait_for(lambda: watermark(tmp_path) == n, 60), proc.log()
        # Row ids are 1-based: readings[at_kill:] are the rows after the watermark at the kill.
        after = {r.key for r in readings[at_kill:]}

        def missing() -> list[int]:
            got = {parse_reading(m.payload).key for m in reading_messages(sub)}
            return [i + 1 for i, r in enumerate(readings) if i >= at_kill and r.key not in got]

        assert sub.wait_for(lambda: not missing(), 30), (at_kill, missing()[:10],
                                                         len(missing()), sub.connects)
    finally:
        assert proc.stop().code == 0, proc.log()
        sub.stop()
    # What the broker had acknowledged before it was killed is the broker's to keep: Mosquitto
    # holds it in memory and a SIGKILL loses what the subscriber had not yet taken. Everything
    # after the watermark was published again.
    got = [parse_reading(m.payload) for m in reading_messages(sub)]
    stored = {r.key: r for r in readings}
    assert all(stored[r.key] == r for r in got)
    assert {r.key for r in got} >= after
    lost = set(stored) - {r.key for r in got}
    assert all(k not in after for k in lost)
    log = proc.log()
    assert "broker:" in log and "publishing again" in log
    assert "Traceback" not in log


def idle_then_new_rows(tmp_path: Path, config: Path, settle: float,
                       count: Callable[[int], float]) -> tuple[float, float]:
    """Run the repeater on a store of 10 readings; once they are out and ``settle`` seconds have
    passed, measure ``count(pid)`` over 3 s idle, then store 5 more readings. What the 3 s
    counted, and how many seconds the new rows took to be published."""
    db = tmp_path / "state" / "ravend.db"
    store(db, backlog(10))
    proc = RepeaterProcess(config, tmp_path / "repeater.log")
    try:
        assert wait_for(lambda: watermark(tmp_path) == 10, 20), proc.log()
        time.sleep(settle)
        before = count(proc.proc.pid)
        time.sleep(3.0)
        idle = count(proc.proc.pid) - before
        store(db, backlog(5, start=10))
        started = time.monotonic()
        assert wait_for(lambda: watermark(tmp_path) == 15, 5), proc.log()
        latency = time.monotonic() - started
    finally:
        assert proc.stop().code == 0
    return idle, latency


def test_follows_new_rows_without_busy_waiting(tmp_path: Path, mosquitto_server) -> None:
    config = write_config(tmp_path, mosquitto_server, poll_interval="1s")
    sub = Subscriber(mosquitto_server.host, mosquitto_server.port, ["ravend/+/+"]).start()
    try:
        # idle: after 1.5 s the pause has grown to poll_interval
        idle_cpu, latency = idle_then_new_rows(tmp_path, config, 1.5, cpu_seconds)
    finally:
        sub.stop()
    assert idle_cpu < 0.3, f"{idle_cpu:.2f} s CPU in 3 s idle"
    assert latency < 1.6, f"new rows took {latency:.2f} s"
    check_received(sub, backlog(15))


def test_new_rows_wake_it_without_polling(tmp_path: Path, mosquitto_server) -> None:
    # poll_interval 1h: only the store's inotify watch can make it publish the new rows soon.
    config = write_config(tmp_path, mosquitto_server, poll_interval="1h")
    idle_wakeups, latency = idle_then_new_rows(tmp_path, config, 0.5, wakeups)
    assert idle_wakeups <= 3, f"{idle_wakeups} wake-ups in 3 s idle"
    assert latency < 1.0, f"new rows took {latency:.2f} s"


def test_store_watch_wakes_on_database_writes_only(tmp_path: Path) -> None:
    db = tmp_path / "ravend.db"
    store(db, backlog(1))
    watch = StoreWatch(db)
    try:
        assert watch.wait(0.2) is False
        (tmp_path / "repeater.watermark").write_text("{}")  # another file: not a change
        assert watch.wait(0.2) is False
        writer = threading.Timer(0.3, store, (db, backlog(1, start=1)))
        writer.start()
        started = time.monotonic()
        assert watch.wait(10) is True
        assert time.monotonic() - started < 5
        writer.join()
        while watch.wait(0.3):  # the rest of that write's events
            pass
        threading.Timer(0.3, watch.wake).start()
        started = time.monotonic()
        assert watch.wait(10) is False
        assert time.monotonic() - started < 5
    finally:
        watch.close()


def test_start_newest_skips_the_existing_store(tmp_path: Path, mosquitto_server) -> None:
    config = write_config(tmp_path, mosquitto_server, start="newest")
    db = tmp_path / "state" / "ravend.db"
    store(db, backlog(50))
    sub = Subscriber(mosquitto_server.host, mosquitto_server.port, ["ravend/+/+"]).start()
    proc = RepeaterProcess(config, tmp_path / "repeater.log")
    try:
        assert wait_for(lambda: watermark(tmp_path) == 50, 20), proc.log()
        store(db, backlog(5, start=50))
        assert wait_for(lambda: watermark(tmp_path) == 55, 10), proc.log()
    finally:
        assert proc.stop().code == 0
        sub.stop()
    check_received(sub, backlog(5, start=50))


def test_calplug_history_is_not_published(tmp_path: Path, mosquitto_server) -> None:
    """Readings copied from a CalPlug database's history (device_mac ``calplug``,
    ravend.calplug_history) are old news, not state: the repeater moves its watermark past
    them, batches made of nothing else included, and publishes only the others."""
    config = write_config(tmp_path, mosquitto_server, batch_size="8")
    live = backlog(30)
    history = [dataclasses.replace(r, meter_time=None, received_at=T0 - 400 * 86400 + 60 * i,
                                   device_mac=HISTORY_DEVICE)
               for i, r in enumerate(backlog(40, start=100)) if r.kind is Kind.DEMAND]
    db = tmp_path / "state" / "ravend.db"
    store(db, live[:15] + history[:10] + live[15:] + history[10:])
    total = len(live) + len(history)
    sub = Subscriber(mosquitto_server.host, mosquitto_server.port, ["ravend/+/+"]).start()
    proc = RepeaterProcess(config, tmp_path / "repeater.log")
    try:
        assert wait_for(lambda: watermark(tmp_path) == total, 20), proc.log()
    finally:
        assert proc.stop().code == 0
        sub.stop()
    check_received(sub, live)


def test_device_state_and_discovery_come_from_the_store(tmp_path: Path,
                                                      mosquitto_server) -> None:
    config = write_config(tmp_path, mosquitto_server)
    db = tmp_path / "state" / "ravend.db"
    store(db, backlog(4))
    sink = SqliteSink(db)
    sink.open()
    sink.write([], [StateItem(DEVICE, "", "DeviceInfo", 1.0, {
        "model_id": "Z105-2-EMU2-LEDD_JM", "fw_version": "1.1.9 (9315)", "link_key": "0xk"}),
        StateItem(DEVICE, METER, "ConnectionStatus", 2.0, {"status": "Connected",
                                                           "link_strength": 90})])
    sink.close()
    sub = Subscriber(mosquitto_server.host, mosquitto_server.port).start()
    proc = RepeaterProcess(config, tmp_path / "repeater.log")
    try:
        assert wait_for(lambda: watermark(tmp_path) == 4, 20), proc.log()
        assert sub.wait_for(lambda: len(sub.on("homeassistant/.*")) >= 5, 5)
    finally:
        assert proc.stop().code == 0
        time.sleep(0.2)
        sub.stop()
    configs = {m.topic: m.json() for m in sub.on("homeassistant/.*")}
    for topic, cfg in configs.items():
        validate_ha_sensor(topic, cfg)
        assert cfg["availability_topic"] == "ravend/ravend/test-repeater/status"
        assert cfg["device"]["model"] == "Z105-2-EMU2-LEDD_JM"
    assert {t.split("/")[3] for t in configs} == {"demand", "summation_delivered", "price",
                                                  "link_strength", "connection_status"}
    (info,) = sub.on(f"ravend/{DEVICE}/info/DeviceInfo")
    assert b"link_key" not in info.payload
    assert [m.payload for m in sub.on("ravend/ravend/test-repeater/status")] == [
        b"online", b"offline"]


def test_waits_for_the_store_to_appear(tmp_path: Path, mosquitto_server) -> None:
    config = write_config(tmp_path, mosquitto_server)
    proc = RepeaterProcess(config, tmp_path / "repeater.log")
    try:
        time.sleep(1.0)
        assert proc.proc.poll() is None, proc.log()
        store(tmp_path / "state" / "ravend.db", backlog(3))
        assert wait_for(lambda: watermark(tmp_path) == 3, 15), proc.log()
    finally:
        assert proc.stop().code == 0
    assert proc.log().count("no database yet") == 1


def test_watermark_of_another_store_is_refused(tmp_path: Path, mosquitto_server) -> None:
    config = write_config(tmp_path, mosquitto_server)
    Watermark(tmp_path / "state" / "repeater.watermark", "mysql:db:3306/ravend").save(42)
    proc = RepeaterProcess(config, tmp_path / "repeater.log")
    assert proc.proc.wait(10) == 78
    assert "watermark of mysql:db:3306/ravend" in proc.log()
    assert "Traceback" not in proc.log()


def test_watermark_is_replaced_atomically(tmp_path: Path) -> None:
    path = tmp_path / "wm" / "repeater.watermark"
    mark = Watermark(path, "sqlite:/x.db")
    assert mark.load() is None
    for i in (1, 500, 1000):
        mark.save(i)
        assert mark.load() == i
    assert sorted(p.name for p in path.parent.iterdir()) == ["repeater.watermark"]
    path.write_text("{torn")
    with pytest.raises(Exception, match="unreadable watermark"):
        mark.load()


def test_sqlite_source_reads_rows_and_states(tmp_path: Path) -> None:
    db = tmp_path / "ravend.db"
    source = SqliteSource(db)
    with pytest.raises(Exception, match="no database yet"):
        source.fetch(0, 10)
    readings = backlog(30)
    store(db, readings)
    rows = source.fetch(0, 10)
    assert [i for i, _ in rows] == list(range(1, 11))
    assert [r for _, r in rows] == readings[:10]
    assert [r for _, r in source.fetch(25, 100)] == readings[25:]
    assert source.newest_id() == 30
    assert source.maybe_changed() is True
    assert source.maybe_changed() is False
    store(db, backlog(1, start=30))
    assert source.maybe_changed() is True
    sink = SqliteSink(db)
    sink.open()
    sink.write([], [StateItem(DEVICE, "", "DeviceInfo", 5.0, {"model_id": "Z106-RAVEn"})])
    assert [s.tag for s in source.states()] == ["DeviceInfo"]
    assert source.states() == []  # unchanged since
    sink.write([], [StateItem(DEVICE, "", "DeviceInfo", 6.0, {"model_id": "Z106-RAVEn"})])
    assert [s.received_at for s in source.states()] == [6.0]
    sink.close()
    source.close()


def test_mysql_source_reads_what_the_mysql_sink_stored(mariadb_server) -> None:
    """The MySQL path: rows written by ravend's MySQL sink, read back through its connect()."""
    from ravend.db.mysql import migrate_database
    from ravend.repeater_sources import MysqlSource
    from ravend.sinks.mysql import MysqlSink
    from tests.helpers.mysql import mysql_config

    cfg = mysql_config(mariadb_server, mariadb_server.new_database("repeater_src"))
    migrate_database(cfg)
    sink = MysqlSink(cfg)
    sink.open()
    readings = backlog(20)
    sink.write(readings[:10], [StateItem(DEVICE, "", "DeviceInfo", 5.0, {"model_id": "Z"})])
    source = MysqlSource(cfg)
    assert source.description == f"mysql://{cfg.user}@{cfg.host}:{cfg.port}/{cfg.database}"
    assert [r for _, r in source.fetch(0, 100)] == readings[:10]
    assert [s.tag for s in source.states()] == ["DeviceInfo"]
    assert source.states() == []
    sink.write(readings[10:], [])  # committed by another connection: visible at once
    rows = source.fetch(10, 100)
    assert [r for _, r in rows] == readings[10:]
    assert source.newest_id() == rows[-1][0]
    sink.close()
    source.close()


def test_unreachable_mysql_is_unavailable_not_fatal(tmp_path: Path) -> None:
    from ravend.config import MysqlConfig
    from ravend.repeater_sources import MysqlSource, SourceUnavailable
    from tests.helpers import servers

    source = MysqlSource(MysqlConfig(host=servers.LOOPBACK, port=servers.free_port(),
                                     connect_timeout=2))
    with pytest.raises(SourceUnavailable, match="mysql://"):
        source.fetch(0, 10)


def test_config_source_mysql_uses_the_mysql_section(tmp_path: Path) -> None:
    from ravend.repeater_sources import make_source

    config = load(write_config(tmp_path, SimpleNamespace(host="h", port=1), source="mysql"))
    assert make_source(config).description == "mysql://ravend@localhost:3306/ravend"


def reset_clock(n: int, start: int = 0) -> list[Reading]:
    """Demand from a meter whose clock was reset to its 2000 epoch (clock_flag epoch), received
    after the backlog: the newest rows, with the highest ids, and the first a purge deletes."""
    return [Reading(METER, Kind.DEMAND, METER_EPOCH_OFFSET + i, T0 + 10_000 + i + 0.5, 1500, 1,
                    1000, scale(1500, 1, 1000), "kW", DEVICE) for i in range(start, start + n)]


def demand_samples(db: Path) -> int:
    with sqlite3.connect(db) as conn:
        return conn.execute("SELECT COALESCE(SUM(demand_samples), 0) FROM rollup_hourly"
                            " WHERE period_start >= ?", (T0 - 3600,)).fetchone()[0]


def test_rows_after_a_purge_of_the_highest_ids_are_published_and_rolled_up(
        tmp_path: Path, mosquitto_server) -> None:
    """A purge by time deletes the highest ids (readings of a meter reset to 2000): the rows
    stored after it get new ids, above both watermarks, so the running repeater publishes them
    and the roll-ups take them in (ids used to be handed out again, below both)."""
    config = write_config(tmp_path, mosquitto_server)
    db = tmp_path / "state" / "ravend.db"
    old, reset, new = backlog(200), reset_clock(50), backlog(30, start=200)
    store(db, old + reset)
    sub = Subscriber(mosquitto_server.host, mosquitto_server.port, ["ravend/+/+"]).start()
    proc = RepeaterProcess(config, tmp_path / "repeater.log")
    try:
        assert wait_for(lambda: watermark(tmp_path) == 250, 20), proc.log()
        settings = RetentionConfig(raw_days=5 * 365, time_zone="UTC")  # 2000 goes, 2023 stays
        report = maintenance.run_once(lambda: SqliteStore(db), settings)
        assert report.purged == 50
        store(db, new)
        with sqlite3.connect(db) as conn:
            assert conn.execute("SELECT MIN(id) FROM readings WHERE key_time >= ?",
                                (T0 + 200,)).fetchone()[0] > 250
        assert wait_for(lambda: watermark(tmp_path) == 280, 20), proc.log()
        assert sub.wait_for(lambda: len(reading_messages(sub)) >= 280, 20)
    finally:
        assert proc.stop().code == 0, proc.log()
        sub.stop()
    check_received(sub, old + reset + new)
    maintenance.run_once(lambda: SqliteStore(db), RetentionConfig(time_zone="UTC"),
                       purges=False)
    assert demand_samples(db) == sum(r.kind is Kind.DEMAND for r in old + new)


def version_4_store(db: Path, readings: list[Reading]) -> sqlite3.Connection:
    """A store as ravend wrote it before sql/sqlite/005 (ids without AUTOINCREMENT), and the
    connection that made it (the caller closes it)."""
    from ravend.db.migrations import migrations
    from ravend.db.sqlite import connect
    from ravend.sinks.sqlite import reading_row

    conn = connect(db)
    conn.execute("CREATE TABLE schema_version (version INTEGER PRIMARY KEY, name TEXT NOT NULL,"
                 " applied_at REAL NOT NULL)")
    for m in migrations("sqlite")[:4]:
        for statement in m.sql.split(";\n"):
            conn.execute(statement)
        conn.execute("INSERT INTO schema_version VALUES (?, ?, 0)", (m.version, m.name))
    conn.executemany("INSERT INTO readings (meter_mac, kind, key_time, meter_time, received_at,"
                     " device_mac, raw, multiplier, divisor, value, unit)"
                     " VALUES (?,?,?,?,?,?,?,?,?,?,?)", [reading_row(r)[:11] for r in readings])
    return conn


def test_an_existing_store_is_migrated_whole_and_the_repeater_resumes(
        tmp_path: Path, mosquitto_server) -> None:
    """A store of schema 4 whose highest ids were published, then purged (as the old purge did,
    rolled up first): ravend's start migrates it with every row, id and flag as they were, the
    ids go on above every id given before, and the repeater publishes exactly the new rows."""
    config = write_config(tmp_path, mosquitto_server)
    db = tmp_path / "state" / "ravend.db"
    old, reset, new = backlog(300), reset_clock(20), backlog(20, start=300)
    version_4_store(db, old + reset).close()
    proc = RepeaterProcess(config, tmp_path / "repeater.log")
    try:
        assert wait_for(lambda: watermark(tmp_path) == 320, 20), proc.log()
    finally:
        assert proc.stop().code == 0, proc.log()
    with sqlite3.connect(db) as conn:
        conn.execute("DELETE FROM readings WHERE clock_flag = 'epoch'")
        conn.execute("INSERT INTO maintenance_state VALUES ('rollup_watermark', 320)")
        before = conn.execute("SELECT *, clock_flag FROM readings ORDER BY id").fetchall()
    sink = SqliteSink(db)
    sink.open()  # what ravend does at start: migrates
    sink.write(new, [])
    sink.write(old[:10], [])  # replays: the identity still makes them harmless
    sink.close()
    with sqlite3.connect(db) as conn:
        after = conn.execute("SELECT *, clock_flag FROM readings ORDER BY id").fetchall()
        schema = conn.execute("SELECT sql FROM sqlite_master WHERE name = 'readings'").fetchone()
        indexes = {r[1] for r in conn.execute("PRAGMA index_list(readings)")}
    # 006 adds scale (1 for every row stored before) after the columns 005 kept.
    assert after[:len(before)] == [(*row[:-1], 1.0, row[-1]) for row in before]
    assert len(after) == len(before) + len(new)
    assert min(row[0] for row in after[len(before):]) == 321
    assert "AUTOINCREMENT" in schema[0] and "readings_by_time" in indexes
    sub = Subscriber(mosquitto_server.host, mosquitto_server.port, ["ravend/+/+"]).start()
    proc = RepeaterProcess(config, tmp_path / "repeater2.log")
    try:
        assert wait_for(lambda: watermark(tmp_path) == 340, 20), proc.log()
        assert sub.wait_for(lambda: sum(not m.retain for m in reading_messages(sub))
                            >= len(new), 20)
        time.sleep(0.5)  # a republished row would arrive with the new ones
    finally:
        assert proc.stop().code == 0, proc.log()
        sub.stop()
    check_received(sub, new, live_only=True)
    assert "past the newest row" not in proc.log()
