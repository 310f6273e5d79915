"""MySQL migrations: a CalPlug python-raven database is upgraded in place with its rows intact,
a fresh database ends up with the same layout, and a migration that failed half-way resumes."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

import pytest

from ravend.cli import ravenctl
from ravend.config import RetentionConfig
from ravend.db.mysql import connect, migrate, migrate_database, schema_version
from ravend.purge import purge
from ravend.sinks.base import SinkUnavailable
from ravend.sinks.mysql import MysqlSink
from ravend.store import MysqlStore
from tests.helpers.mysql import execute, mysql_config, query
from tests.helpers.readings import T0, demands

# The tables as the CalPlug scripts had them on an old MySQL server, where the first TIMESTAMP
# column silently got DEFAULT CURRENT_TIMESTAMP ON UPDATE CURRENT_TIMESTAMP.
SEED_TABLES = """
CREATE TABLE instantaneous_demand (
    time TIMESTAMP NOT NULL DEFAULT CURRENT_TIMESTAMP ON UPDATE CURRENT_TIMESTAMP,
    demand {demand_type}, multiplier INT, divisor INT, run TEXT, hash VARCHAR(100)
);
CREATE TABLE run_info (
    name VARCHAR(100), hash VARCHAR(100), meter_id VARCHAR(100),
    time TIMESTAMP NOT NULL DEFAULT CURRENT_TIMESTAMP ON UPDATE CURRENT_TIMESTAMP
)
"""

RUN_A = "3f1c2a9e-1d0b-4c55-9d8e-0a1b2c3d4e5f"  # a run whose run_info names the meter
RUN_B = "9a8b7c6d-0000-4000-8000-123456789abc"  # a run of the old scripts: meter_id ''


def seed(server, db: str, demand_type: str) -> list[tuple]:
    """A seed database with ordinary rows, -1 error rows and a negative demand as stored."""
    execute(server, db, *[s for s in SEED_TABLES.format(demand_type=demand_type).split(";")])
    negative = 4294965814  # -1482 as the scripts stored it: unsigned 32-bit
    rows = [
        ("2016-03-01 10:00:00", 1482, 1, 1000, "run1", RUN_A),
        ("2016-03-01 10:00:08", -1, -1, -1, "run1", RUN_A),
        ("2016-03-01 10:00:16", negative, 1, 1000, "run1", RUN_A),
        ("2016-03-01 10:00:24", 250, 1, 1000, "run2", RUN_B),
        ("2016-03-01 10:00:24", 250, 1, 1000, "run2", RUN_B),  # the scripts made duplicates
        ("2016-03-01 10:00:32", 0, 0, 0, "run2", RUN_B),
    ]
    values = ", ".join(f"('{t}', {d}, {m}, {v}, '{r}', '{h}')" for t, d, m, v, r, h in rows)
    # sql_mode '' as on the old servers: a signed INT clamps the unsigned value to 2^31-1.
    execute(server, db,
            f"INSERT INTO instantaneous_demand (time, demand, multiplier, divisor, run, hash)"
            f" VALUES {values}",
            "INSERT INTO run_info (name, hash, meter_id, time) VALUES"
            f" ('run1', '{RUN_A}', '0x00135003001234AB', '2016-03-01 09:59:59'),"
            f" ('run2', '{RUN_B}', '', '2016-03-01 10:00:20')", sql_mode="")
    return rows


def columns(server, db: str, table: str) -> list[tuple]:
    return query(server, db,
                 "SELECT column_name, column_type, is_nullable, column_default, extra"
                 " FROM information_schema.columns WHERE table_schema = %s AND table_name = %s"
                 " ORDER BY ordinal_position", (db, table))


@pytest.mark.parametrize("demand_type", ["INT", "INT UNSIGNED"])
def test_calplug_database_is_upgraded_in_place_with_its_rows_kept(
        mariadb_server, demand_type: str) -> None:
    db = mariadb_server.new_database("seed")
    seed(mariadb_server, db, demand_type)
    before = query(mariadb_server, db, "SELECT time, demand, multiplier, divisor, run, hash"
                   " FROM instantaneous_demand ORDER BY time, demand")
    cfg = mysql_config(mariadb_server, db)
    assert migrate_database(cfg) == [1, 2, 3, 4, 5, 6, 7, 8]
    after = query(mariadb_server, db, "SELECT time, demand, multiplier, divisor, run, hash,"
                  " flag, kw, meter_mac, key_time, received_at FROM instantaneous_demand"
                  " ORDER BY time, demand")
    # Every row and column kept, times included (the ON UPDATE trap did not fire).
    assert [r[:6] for r in after] == before
    by_demand = {(r[0].second, r[1]): r for r in after}
    ok = by_demand[(0, 1482)]
    assert (ok[6], ok[7], ok[8], ok[9]) == (None, Decimal("1.482"), "0x00135003001234ab", None)
    assert ok[10] == dt.datetime(2016, 3, 1, 10, 0, tzinfo=dt.UTC).timestamp()
    # An unsigned column stored the marker's demand -1 as 0.
    error = by_demand[(8, -1 if demand_type == "INT" else 0)]
    assert (error[6], error[7]) == ("error", None)
    if demand_type == "INT":
        clamped = by_demand[(16, 2147483647)]
        assert (clamped[6], clamped[7]) == ("clamped", None)
    else:
        wrapped = by_demand[(16, 4294965814)]
        assert (wrapped[6], wrapped[7]) == ("wrapped", Decimal("-1.482"))
    # run2's run_info names no meter; divisor 0 means 1.
    assert [r[8] for r in after if r[4] == "run2"] == [None, None, None]
    assert by_demand[(32, 0)][7] == Decimal(0)
    runs = query(mariadb_server, db, "SELECT id, name, hash, meter_id, time FROM run_info")
    assert [r[1:4] for r in runs] == [("run1", RUN_A, "0x00135003001234AB"), ("run2", RUN_B, "")]

    # ravend writes next to the old rows; a purge leaves the old rows alone.
    sink = MysqlSink(cfg, start_id="new-start")
    sink.open()
    sink.write(demands(4), [])
    sink.write(demands(4), [])
    sink.close()
    assert query(mariadb_server, db, "SELECT COUNT(*) FROM instantaneous_demand")[0][0] == 10
    store = MysqlStore(cfg)
    store.now = lambda: T0 + 10 * 86400  # type: ignore[method-assign]
    try:
        report = purge(store, RetentionConfig(raw_days=1, rollups=False))
    finally:
        store.close()
    # The old rows' copies in readings (ravend.calplug_history: 1482, 250 once, 0, and the
    # wrapped negative) are raw readings like any others; the old rows themselves stay.
    copied = 3 if demand_type == "INT" else 4
    assert report.purged == 4 + copied and report.purged_calplug == 4
    left = query(mariadb_server, db, "SELECT time, demand, run, hash FROM instantaneous_demand"
                 " ORDER BY time, demand")
    assert left == [r[:2] + r[4:6] for r in before]


def test_fresh_and_upgraded_databases_have_the_same_layout(mariadb_server) -> None:
    fresh = mariadb_server.new_database("fresh")
    old = mariadb_server.new_database("old")
    seed(mariadb_server, old, "INT UNSIGNED")
    for db in (fresh, old):
        migrate_database(mysql_config(mariadb_server, db))
    for table in ("instantaneous_demand", "run_info", "readings", "rollup_hourly"):
        assert columns(mariadb_server, fresh, table) == columns(mariadb_server, old, table)
    names = [c[0] for c in columns(mariadb_server, fresh, "instantaneous_demand")]
    assert names[:7] == ["id", "time", "demand", "multiplier", "divisor", "run", "hash"]


def test_failed_migration_resumes_at_the_statement_that_failed(mariadb_server) -> None:
    db = mariadb_server.new_database("resume")
    seed(mariadb_server, db, "INT")
    # A run_info that already has an id column: 002's first ALTER (instantaneous_demand) works,
    # its second (run_info) fails.
    execute(mariadb_server, db, "ALTER TABLE run_info ADD COLUMN id INT")
    cfg = mysql_config(mariadb_server, db)
    with pytest.raises(SinkUnavailable, match="Duplicate column name 'id'"):
        migrate_database(cfg)
    assert query(mariadb_server, db,
                 "SELECT version, step, applied_at IS NULL FROM schema_version"
                 " ORDER BY version") == [(1, 4, 0), (2, 1, 1)]
    execute(mariadb_server, db, "ALTER TABLE run_info CHANGE id old_id INT")
    # It would fail if it ran the first ALTER again.
    assert migrate_database(cfg) == [2, 3, 4, 5, 6, 7, 8]
    conn = connect(cfg)
    try:
        assert schema_version(conn) == 8
        assert migrate(conn) == []
    finally:
        conn.close()
    assert query(mariadb_server, db, "SELECT COUNT(*) FROM instantaneous_demand")[0][0] == 6


def test_ravenctl_db_migrate(mariadb_server, tmp_path, capsys) -> None:
    db = mariadb_server.new_database("ctl")
    seed(mariadb_server, db, "INT")
    conf = tmp_path / "ravend.conf"
    conf.write_text(f"[service]\nstate_dir = {tmp_path / 'state'}\n"
                    f"[mysql]\nenabled = yes\nhost = {mariadb_server.host}\n"
                    f"port = {mariadb_server.port}\nuser = {mariadb_server.user}\n"
                    f"password = {mariadb_server.password}\ndatabase = {db}\n")
    assert ravenctl.main(["db", "migrate", "--config", str(conf)]) == 0
    out = capsys.readouterr().out
    assert "mysql" in out and "applied 1, 2, 3, 4, 5" in out
    assert "sqlite" in out and (tmp_path / "state" / "ravend.db").exists()
    assert ravenctl.main(["db", "migrate", "--config", str(conf)]) == 0
    assert "up to date" in capsys.readouterr().out
    assert query(mariadb_server, db,
                 "SELECT COUNT(*) FROM instantaneous_demand WHERE flag = 'error'") == [(1,)]


def test_ids_freed_by_a_purge_are_not_given_again_after_a_server_restart(make_mariadb) -> None:
    """readings.id is InnoDB's AUTO_INCREMENT: deleting the highest ids (a purge of readings
    timed by a clock reset to 2000) and restarting the server does not rewind it (MariaDB
    >= 10.2.4 persists the counter; older servers restarted it at MAX(id) + 1), so rows stored
    afterwards stay above the repeater's and the roll-ups' watermarks."""
    server = make_mariadb()
    db = server.new_database("ids")
    cfg = mysql_config(server, db)
    sink = MysqlSink(cfg)
    sink.open()
    sink.write(demands(30), [])
    sink.close()
    (highest,) = query(server, db, "SELECT MAX(id) FROM readings")[0]
    execute(server, db, f"DELETE FROM readings WHERE id > {highest - 10}")
    server.restart()
    sink = MysqlSink(cfg)
    sink.open()
    sink.write(demands(5, start=30), [])
    sink.close()
    new_ids = [r[0] for r in query(server, db, "SELECT id FROM readings WHERE key_time >= %s",
                                   (T0 + 30,))]
    assert len(new_ids) == 5 and min(new_ids) > highest
