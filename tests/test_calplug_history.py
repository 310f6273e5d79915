"""The CalPlug python-raven history brought into readings (issue 20, ravend.calplug_history).

A CalPlug-layout database with synthetic rows of its own (sentinels, several runs with different
meters, a hash missing from run_info, duplicates, negative demands stored unsigned, a day
without rows) is upgraded; ``ravenctl report`` and ``ravenctl export`` over the old dates then
give what this file computes from the same rows by its own arithmetic (fractions, rounded once
half-even), never by ravend's roll-up code. Upgrading again adds nothing; an import interrupted
between chunks, or killed, and resumed, ends where an uninterrupted one does, even on a store
whose purge horizon already lies past the old dates.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import json
import subprocess
import sys
from collections import defaultdict
from decimal import Decimal
from fractions import Fraction

import MySQLdb
import pytest

from ravend import calplug_history
from ravend.calplug_history import HISTORY_DEVICE, UNKNOWN_METER, upgrade_database
from ravend.cli import ravenctl
from ravend.sinks.base import SinkUnavailable
from tests.helpers.mysql import execute, mysql_config, query
from tests.helpers.process import program_env
from tests.helpers.wait import wait_for

SEED_TABLES = (
    "CREATE TABLE instantaneous_demand (time TIMESTAMP NOT NULL DEFAULT CURRENT_TIMESTAMP"
    " ON UPDATE CURRENT_TIMESTAMP, demand INT UNSIGNED, multiplier INT, divisor INT, run TEXT,"
    " hash VARCHAR(100))",
    "CREATE TABLE run_info (name VARCHAR(100), hash VARCHAR(100), meter_id VARCHAR(100),"
    " time TIMESTAMP NOT NULL DEFAULT CURRENT_TIMESTAMP ON UPDATE CURRENT_TIMESTAMP)",
)
# (run name, hash, meter_id in run_info; None: the hash has no run_info row)
RUNS = [
    ("kitchen", "a1a1a1a1-0000-4000-8000-000000000001", "0x00135003001234AB"),
    ("garage", "b2b2b2b2-0000-4000-8000-000000000002", "0x0013500300abcdef"),
    ("lost", "c3c3c3c3-0000-4000-8000-000000000003", None),
]
METERS = {h: (m.lower() if m else UNKNOWN_METER) for _, h, m in RUNS}
DAYS = [dt.date(2016, 3, 1), dt.date(2016, 3, 2), dt.date(2016, 3, 4)]  # 3 March: no rows
SINCE, UNTIL = "2016-03-01", "2016-03-06"


def synthetic_rows() -> list[tuple[int, int, int, int, str, str]]:
    """(unix time, demand as stored, multiplier, divisor, run, hash), in insert order."""
    rows = []
    for d, day in enumerate(DAYS):
        midnight = int(dt.datetime.combine(day, dt.time(), dt.UTC).timestamp())
        for r, (name, hash_, _) in enumerate(RUNS):
            for i in range(9 + 2 * r):
                t = midnight + (3 + 5 * r + 2 * i) * 1800 + 8 * r
                if i % 4 == 3:  # a failed read: the -1 marker
                    rows.append((t, -1, -1, -1, name, hash_))
                    continue
                demand = (d + 1) * 137 + 53 * i * (r + 1)
                mult, div = [(1, 1000), (3, 7000), (0, 0), (2, 999)][(i + r) % 4]
                if i == 5:  # exporting: a negative demand, stored as unsigned 32-bit
                    demand = 2**32 - demand
                rows.append((t, demand, mult, div, name, hash_))
                if i == 2:  # the scripts sometimes wrote a row twice
                    rows.append((t, demand, mult, div, name, hash_))
    return rows


def seed(server, db: str) -> list[tuple]:
    rows = synthetic_rows()
    execute(server, db, *SEED_TABLES)
    values = ", ".join(
        f"(FROM_UNIXTIME({t}), {demand}, {m}, {v}, '{name}', '{h}')"
        for t, demand, m, v, name, h in rows)
    runs = ", ".join(f"('{name}', '{h}', '{m}', '2016-02-29 12:00:00')"
                     for name, h, m in RUNS if m is not None)
    # sql_mode '' as on the old servers: -1 into the unsigned demand column is stored as 0.
    execute(server, db,
            "INSERT INTO instantaneous_demand (time, demand, multiplier, divisor, run, hash)"
            f" VALUES {values}",
            f"INSERT INTO run_info (name, hash, meter_id, time) VALUES {runs}", sql_mode="")
    return rows


def expected_readings(rows: list[tuple]) -> dict[tuple[str, int], tuple]:
    """(meter, time) -> (raw, multiplier, divisor, exact kW) of each reading the rows hold."""
    out = {}
    for t, demand, mult, div, _, hash_ in rows:
        if (mult, div) == (-1, -1):
            continue
        raw = demand - 2**32 if demand >= 2**31 else demand
        kw = Fraction(raw * (mult or 1), div or 1)
        out.setdefault((METERS[hash_], t), (raw, mult, div, kw))
    return out


def rounded(x: Fraction) -> Decimal:
    """Rounded once, half-even, to 9 places (round() of a Fraction is exact, ties to even)."""
    return Decimal(round(x * 10**9)).scaleb(-9)


def day_of(t: int) -> str:
    return dt.datetime.fromtimestamp(t, dt.UTC).date().isoformat()


def expected_days(readings: dict[tuple[str, int], tuple]) -> dict[tuple[str, str], tuple]:
    """(meter, ISO day) -> (samples, mean, min, max) of the demand, from the readings."""
    per_day: dict[tuple[str, str], list[Fraction]] = defaultdict(list)
    for (meter, t), (_, _, _, kw) in readings.items():
        per_day[(meter, day_of(t))].append(kw)
    return {k: (len(v), rounded(sum(v, Fraction(0)) / len(v)), rounded(min(v)), rounded(max(v)))
            for k, v in per_day.items()}


def expected_gaps(readings: dict[tuple[str, int], tuple]) -> dict[tuple[str, str], int]:
    """(meter, ISO day) -> hours of the day without a demand reading."""
    heard: dict[tuple[str, str], set[int]] = defaultdict(set)
    for meter, t in readings:
        heard[(meter, day_of(t))].add(t // 3600)
    return {k: 24 - len(v) for k, v in heard.items()}


def write_conf(tmp_path, server, db: str) -> str:
    conf = tmp_path / f"{db}.conf"
    conf.write_text(f"[service]\nstate_dir = {tmp_path / 'state'}\n"
                    "[sqlite]\nenabled = no\n"
                    "[retention]\nraw_days = 0\ntime_zone = UTC\n"
                    f"[mysql]\nenabled = yes\nhost = {server.host}\nport = {server.port}\n"
                    f"user = {server.user}\npassword = {server.password}\ndatabase = {db}\n")
    return str(conf)


def ravenctl_out(capsys, *argv: str) -> str:
    capsys.readouterr()
    assert ravenctl.main(list(argv)) == 0
    return capsys.readouterr().out


def readings_table(server, db: str) -> list[tuple]:
    return query(server, db, "SELECT meter_mac, kind, key_time, meter_time, received_at,"
                 " device_mac, raw, multiplier, divisor, value, unit, scale, clock_flag"
                 " FROM readings ORDER BY meter_mac, key_time")


def check_report_and_export(capsys, conf: str, rows: list[tuple]) -> None:
    """report and export over the old dates equal this file's own figures."""
    readings = expected_readings(rows)
    days = expected_days(readings)
    assert ravenctl_out(capsys, "purge", "--store", "mysql", "--config", conf)  # roll-ups
    report = json.loads(ravenctl_out(capsys, "report", "--store", "mysql", "--config", conf,
                                     "--since", SINCE, "--until", UNTIL, "--format", "json"),
                        parse_float=Decimal)
    got = {(r["meter_mac"], r["day"]): (r["demand_avg_kw"], r["demand_max_kw"],
                                        r["gap_hours"])
           for r in report if r["demand_avg_kw"] is not None}
    gaps = expected_gaps(readings)
    assert got == {k: (v[1], v[3], gaps[k]) for k, v in days.items()}
    assert {r["meter_mac"] for r in report} == set(METERS.values())
    gap = [r for r in report if r["day"] == "2016-03-03"]
    assert len(gap) == 3 and all(r["demand_avg_kw"] is None and r["gap_hours"] == 24
                                 for r in gap)

    daily = [json.loads(line, parse_float=Decimal) for line in ravenctl_out(
        capsys, "export", "--store", "mysql", "--rollup", "daily", "--format", "jsonl",
        "--since", SINCE, "--until", UNTIL, "--config", conf).splitlines()]
    assert {(d["meter_mac"], d["day"]): (d["demand_samples"], d["demand_avg_kw"],
                                         d["demand_min_kw"], d["demand_max_kw"])
            for d in daily} == days

    raw = list(csv.DictReader(io.StringIO(ravenctl_out(
        capsys, "export", "--store", "mysql", "--since", SINCE, "--until", UNTIL,
        "--config", conf))))
    assert len(raw) == len(readings)
    for row in raw:
        t = int(row["key_time"])
        want_raw, mult, div, kw = readings[(row["meter_mac"], t)]
        assert (row["kind"], row["meter_time"], float(row["received_at"]), row["device_mac"],
                int(row["raw"]), int(row["multiplier"]), int(row["divisor"]), row["unit"]) == (
            "demand", "", float(t), HISTORY_DEVICE, want_raw, mult, div, "kW")
        assert float(row["value"]) == float(rounded(kw))


def test_calplug_history_reaches_report_and_export(mariadb_server, tmp_path, capsys) -> None:
    db = mariadb_server.new_database("calplug_history")
    rows = seed(mariadb_server, db)
    old_columns = ("SELECT time, demand, multiplier, divisor, run, hash FROM"
                   " instantaneous_demand ORDER BY time, hash, demand")
    before = query(mariadb_server, db, old_columns)
    conf = write_conf(tmp_path, mariadb_server, db)
    out = ravenctl_out(capsys, "db", "migrate", "--store", "mysql", "--config", conf)
    readings = expected_readings(rows)
    sentinels = sum(1 for r in rows if r[2:4] == (-1, -1))
    assert (f"CalPlug history: {len(rows)} old instantaneous_demand rows read,"
            f" {len(readings)} copied into readings"
            f" ({len(rows) - sentinels - len(readings)} already there), {sentinels} left out"
            in out)
    stored = readings_table(mariadb_server, db)
    assert len(stored) == len(readings)
    for meter, kind, key_time, meter_time, received_at, device, raw, mult, div, value, unit, \
            factor, flag in stored:
        want_raw, want_mult, want_div, kw = readings[(meter, key_time)]
        assert (kind, meter_time, received_at, device, raw, mult, div, value, unit, factor,
                flag) == ("demand", None, float(key_time), HISTORY_DEVICE, want_raw, want_mult,
                          want_div, rounded(kw), "kW", Decimal(1), "unset")
    # The CalPlug rows are kept (the import only reads them); sentinels stay, flagged.
    assert query(mariadb_server, db, old_columns) == before
    tables = [query(mariadb_server, db, f"SELECT * FROM {t} ORDER BY id")
              for t in ("instantaneous_demand", "run_info")]
    assert query(mariadb_server, db, "SELECT COUNT(*) FROM instantaneous_demand"
                 " WHERE flag = 'error'") == [(sentinels,)]
    # Every copied row (duplicates too) maps to its reading; its run is one join away.
    mapped = query(mariadb_server, db,
                   "SELECT d.run, r.meter_mac, COUNT(*) FROM calplug_history h"
                   " JOIN instantaneous_demand d ON d.id = h.demand_id"
                   " JOIN readings r ON r.id = h.reading_id GROUP BY d.run, r.meter_mac")
    copied = defaultdict(int)
    for _, _, m, v, name, hash_ in rows:
        if (m, v) != (-1, -1):
            copied[(name, METERS[hash_])] += 1
    assert {(run, meter): n for run, meter, n in mapped} == copied

    check_report_and_export(capsys, conf, rows)

    # Upgrading again adds nothing, marker or not (the unique key).
    count = query(mariadb_server, db, "SELECT COUNT(*) FROM readings")
    assert "CalPlug" not in ravenctl_out(capsys, "db", "migrate", "--store", "mysql",
                                         "--config", conf)
    execute(mariadb_server, db, "DELETE FROM maintenance_state WHERE name = 'calplug_history_id'")
    upgrade_database(mysql_config(mariadb_server, db))
    assert query(mariadb_server, db, "SELECT COUNT(*) FROM readings") == count
    assert readings_table(mariadb_server, db) == stored
    assert [query(mariadb_server, db, f"SELECT * FROM {t} ORDER BY id")
            for t in ("instantaneous_demand", "run_info")] == tables


def test_interrupted_import_resumes_past_the_purge_horizon(
        mariadb_server, tmp_path, capsys, monkeypatch) -> None:
    """An import that fails between chunks (the connection lost) and is run again ends with
    the same readings; on a store that ravend had already purged (purged_before past the old
    dates), the old hours and days are still rolled up."""
    reference = mariadb_server.new_database("calplug_ref")
    rows = seed(mariadb_server, reference)
    upgrade_database(mysql_config(mariadb_server, reference))
    db = mariadb_server.new_database("calplug_cut")
    seed(mariadb_server, db)
    cfg = mysql_config(mariadb_server, db)
    real = calplug_history.import_history
    # An earlier ravend upgraded the database and purged: its horizon lies past 2016.
    monkeypatch.setattr(calplug_history, "import_history", lambda conn: None)
    upgrade_database(cfg)
    execute(mariadb_server, db,
            "INSERT INTO maintenance_state (name, value) VALUES ('purged_before', 1600000000)")

    def cut(counts: calplug_history.Counts) -> None:
        if counts.chunks == 3:
            raise MySQLdb.OperationalError(2013, "Lost connection to server during query")

    monkeypatch.setattr(calplug_history, "import_history",
                        lambda conn: real(conn, chunk=7, after_chunk=cut))
    with pytest.raises(SinkUnavailable, match="Lost connection"):
        upgrade_database(cfg)
    (done,) = query(mariadb_server, db, "SELECT value FROM maintenance_state"
                    " WHERE name = 'calplug_history_id'")[0]
    (first_ids,) = query(mariadb_server, db, "SELECT id FROM instantaneous_demand"
                         " ORDER BY id LIMIT 21")[-1]
    assert done == first_ids  # three chunks of 7 rows committed, the marker after them
    partial = query(mariadb_server, db, "SELECT COUNT(*) FROM readings")[0][0]
    assert 0 < partial < len(expected_readings(rows))

    monkeypatch.setattr(calplug_history, "import_history",
                        lambda conn: real(conn, chunk=7))
    upgrade_database(cfg)
    assert readings_table(mariadb_server, db) == readings_table(mariadb_server, reference)
    assert query(mariadb_server, db, "SELECT COUNT(*) FROM calplug_history") == query(
        mariadb_server, reference, "SELECT COUNT(*) FROM calplug_history")
    check_report_and_export(capsys, write_conf(tmp_path, mariadb_server, db), rows)


def test_import_killed_mid_way_is_resumed_by_the_next_upgrade(mariadb_server, tmp_path) -> None:
    """``ravenctl db migrate`` killed (SIGKILL) while it copies some 100,000 old rows in chunks
    of 10,000: the next upgrade goes on from the last chunk committed and ends with each
    reading once, their raw values all there."""
    db = mariadb_server.new_database("calplug_kill")
    base = seed(mariadb_server, db)
    copies = 8  # the rows again 2, 4, ... 128 weeks later: 256 times the readings
    for k in range(copies):
        execute(mariadb_server, db,
                "INSERT INTO instantaneous_demand (time, demand, multiplier, divisor, run, hash)"
                f" SELECT time + INTERVAL {2 ** k} WEEK, demand, multiplier, divisor, run, hash"
                " FROM instantaneous_demand", sql_mode="")
    readings = expected_readings(base)
    want = len(readings) * 2**copies
    old_rows = len(base) * 2**copies
    conf = write_conf(tmp_path, mariadb_server, db)
    proc = subprocess.Popen([sys.executable, "-m", "ravend.cli.ravenctl", "db", "migrate",
                             "--store", "mysql", "--config", conf], env=program_env(),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    marker = ("SELECT COALESCE(MAX(value), 0) FROM maintenance_state"
              " WHERE name = 'calplug_history_id'")

    def started() -> bool:
        try:
            return query(mariadb_server, db, marker)[0][0] > 0
        except MySQLdb.Error:  # the table is not there yet
            return False

    try:
        assert wait_for(started, 60, interval=0.01)
    finally:
        proc.kill()
        proc.wait()
    done = query(mariadb_server, db, marker)[0][0]
    assert 0 < done < old_rows, "the copy was not cut mid-way"
    assert query(mariadb_server, db, "SELECT COUNT(*) FROM readings")[0][0] < want
    upgrade_database(mysql_config(mariadb_server, db))
    assert query(mariadb_server, db, "SELECT COUNT(*), SUM(raw) FROM readings") == [
        (want, sum(r[0] for r in readings.values()) * 2**copies)]
    copied = sum(1 for r in base if r[2:4] != (-1, -1)) * 2**copies
    assert query(mariadb_server, db, "SELECT COUNT(*) FROM calplug_history") == [(copied,)]
