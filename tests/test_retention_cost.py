"""Costs on the stores (ravend.rollup_update): a late price or a changed tariff recomputes the
roll-ups it touches, an old database is upgraded and recomputed, and MariaDB's costs equal
SQLite's."""

from __future__ import annotations

import csv
import datetime as dt
import io
import sqlite3
from pathlib import Path
from typing import Any

import pytest

from ravend.cli import ravenctl
from ravend.protocol.model import Kind, Reading
from ravend.rollup import HOUR
from ravend.rollup_update import update_rollups
from ravend.store import SqliteStore
from ravend.tariff import Plan, Tariff, parse_periods
from tests.helpers.cost import DAY0, H0, UTC, D, F, price, reading, write_conf
from tests.helpers.stores import StoreEnv, each_store


def hours_of_use(start: int, hours: int, kwh_per_hour: int = 2) -> list[Reading]:
    """A demand a minute and summations every 5 minutes (delivered rises kwh_per_hour)."""
    out = []
    for t in range(start, start + hours * HOUR + 1, 60):
        out.append(reading(Kind.DEMAND, t, kwh_per_hour * 1000))
        if t % 300 == 0:
            out.append(reading(Kind.SUMMATION_DELIVERED, t,
                               1_000_000 + (t - start) * kwh_per_hour * 1000 // HOUR))
    return out


class Env(StoreEnv):
    """One store of each kind, rolled up with a tariff."""

    def rollup(self, tariff: Tariff, tz: str = "UTC") -> Any:
        store = self.store()
        try:
            return update_rollups(store, tz, tariff=tariff)
        finally:
            store.close()

    def costs(self, table: str = "rollup_hourly") -> list[tuple]:
        return [(start, None if cost is None else D(str(cost)),
                 None if credit is None else D(str(credit)), currency)
                for start, cost, credit, currency in self.rows(
                    f"SELECT period_start, cost, export_credit, currency FROM {table}"
                    f" ORDER BY period_start")]


@pytest.fixture(params=["sqlite", "mysql"])
def env(request, tmp_path: Path):
    yield from each_store(request, tmp_path, Env)


def test_a_late_price_recomputes_the_hours_it_applies_to(env: Env) -> None:
    flat = Tariff(plan=Plan.flat(F("0.20")), currency="USD", time_zone="UTC")
    env.write(hours_of_use(DAY0, 6))
    env.rollup(flat)
    # 2 kWh an hour at 0.20; the hour of the last reading has no energy known, so no cost.
    assert [c[1] for c in env.costs()] == [D("0.4")] * 6 + [None]

    # The meter's price of 02:30 arrives late: 0.50 from then on (auto: the meter's wins).
    env.write([price(DAY0 + 2 * HOUR + 1800, "0.50")])
    report = env.rollup(flat)
    assert report.rolled_up == 1 and report.hours == 5  # 02:00 to 06:00, the last rolled up
    assert [c[1] for c in env.costs()] == [D("0.4"), D("0.4"), D("0.7"), D(1), D(1), D(1),
                                           None]
    # A later one, also late: only its own hours change.
    env.write([price(DAY0 + 4 * HOUR, "0.10")])
    report = env.rollup(flat)
    assert report.hours == 3
    assert [c[1] for c in env.costs()] == [D("0.4"), D("0.4"), D("0.7"), D(1), D("0.2"),
                                           D("0.2"), None]
    assert env.costs("rollup_daily") == [(DAY0, D("2.9"), None, "USD")]


def test_a_changed_tariff_recomputes_the_rollups(tmp_path: Path) -> None:
    env = Env("sqlite", tmp_path, None, "changed")
    env.write(hours_of_use(H0, 3))
    env.rollup(Tariff(plan=Plan.flat(F("0.20"))))
    assert env.costs()[0][1:] == (D("0.4"), None, None)
    report = env.rollup(Tariff(plan=Plan.flat(F("0.30")), currency="CHF"))
    assert any("[tariff] changed" in n for n in report.notes)
    assert report.rolled_up == len(hours_of_use(H0, 3))
    assert env.costs()[0][1:] == (D("0.6"), None, "CHF")
    assert env.rollup(Tariff(plan=Plan.flat(F("0.30")), currency="CHF")).rolled_up == 0
    env.sink.close()


def test_an_existing_database_is_upgraded_and_its_rollups_recomputed(tmp_path: Path) -> None:
    from ravend.db.migrations import migrations
    from ravend.db.sqlite import connect, migrate
    from ravend.sinks.sqlite import reading_row

    path = tmp_path / "old.db"
    conn = connect(path)
    conn.execute("CREATE TABLE schema_version (version INTEGER PRIMARY KEY, name TEXT NOT NULL,"
                 " applied_at REAL NOT NULL)")
    older = [m for m in migrations("sqlite") if m.name != "rollup_cost"]
    cost_version = next(m.version for m in migrations("sqlite") if m.name == "rollup_cost")
    for m in older[:cost_version - 1]:
        for statement in m.sql.split(";\n"):
            conn.execute(statement)
        conn.execute("INSERT INTO schema_version VALUES (?, ?, 0)", (m.version, m.name))
    readings = hours_of_use(H0, 2)
    conn.executemany("INSERT INTO readings (meter_mac, kind, key_time, meter_time, received_at,"
                     " device_mac, raw, multiplier, divisor, value, unit)"
                     " VALUES (?,?,?,?,?,?,?,?,?,?,?)", [reading_row(r)[:11] for r in readings])
    conn.execute("INSERT INTO maintenance_state VALUES ('rollup_watermark', ?)", (len(readings),))
    assert cost_version in migrate(conn)
    assert conn.execute("SELECT COUNT(*) FROM maintenance_state WHERE name ="
                        " 'rollup_watermark'").fetchone()[0] == 0
    conn.close()
    store = SqliteStore(path)
    try:
        report = update_rollups(store, "UTC", tariff=Tariff(plan=Plan.flat(F("0.25"))))
    finally:
        store.close()
    assert report.rolled_up == len(readings)
    with sqlite3.connect(path) as c:
        assert c.execute("SELECT cost FROM rollup_hourly ORDER BY period_start").fetchall() == [
            ("0.500000000",), ("0.500000000",), (None,)]


def mixed_day(start: int) -> list[Reading]:
    """Use, export 11:00-14:00, meter prices from 09:42 (a change at 15:07), one gap."""
    out = []
    delivered, received = 2_000_000, 50_000
    for t in range(start, start + 24 * HOUR + 1, 60):
        hour = (t - start) // HOUR
        if 19 <= hour < 21:
            continue  # a gap
        exporting = 11 <= hour < 14
        if t % 300 == 0:
            out.append(reading(Kind.SUMMATION_DELIVERED, t, delivered))
            out.append(reading(Kind.SUMMATION_RECEIVED, t, received))
        out.append(reading(Kind.DEMAND, t, -660 if exporting else 300 + 17 * hour))
        if t % 300 == 240:
            delivered += 0 if exporting else 25 + hour
            received += 55 if exporting else 0
        if t - start == 9 * HOUR + 42 * 60:
            out.append(price(t, "0.1875"))
        if t - start == 15 * HOUR + 7 * 60:
            out.append(price(t, "0.2650"))
    return out


def test_mysql_rollup_costs_equal_sqlite_and_report_reads_both(tmp_path: Path, mariadb_server,
                                                               capsys) -> None:
    day0 = H0 - H0 % 86400
    readings = mixed_day(day0)
    tariff = Tariff(plan=Plan(parse_periods("16-21: 0.45; *: 0.28")), currency="USD",
                    export_rate=F("0.08"), time_zone="UTC")
    lite = Env("sqlite", tmp_path, None, "lite")
    my = Env("mysql", tmp_path, mariadb_server, "costs")
    for e in (lite, my):
        e.write(readings)
        e.rollup(tariff)
    for table in ("rollup_hourly", "rollup_daily"):
        assert lite.costs(table) == my.costs(table)
    assert any(c[1] is not None and c[2] for c in lite.costs())  # cost and credit both seen

    conf = write_conf(tmp_path / "ravend.conf",
                      f"[service]\nstate_dir = {tmp_path}\n[retention]\ntime_zone = UTC\n"
                      f"[mysql]\nhost = {mariadb_server.host}\nport = {mariadb_server.port}\n"
                      f"user = {mariadb_server.user}\npassword = {mariadb_server.password}\n"
                      f"database = {my.db}\n")
    day = dt.datetime.fromtimestamp(day0, UTC).date()
    outputs = []
    for store in ("sqlite", "mysql"):
        assert ravenctl.main(["report", "--config", str(conf), "--store", store, "--since",
                              day.isoformat(), "--until", str(day + dt.timedelta(days=1)),
                              "--format", "csv"]) == 0
        outputs.append(capsys.readouterr().out)
    assert outputs[0] == outputs[1]
    (row,) = csv.DictReader(io.StringIO(outputs[0]))
    assert row["gap_hours"] == "2" and row["currency"] == "USD"
    for e in (lite, my):
        e.sink.close()
