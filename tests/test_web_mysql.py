"""ravend-web reading MariaDB ([web] store = mysql, a read-only session): the known week of
tests/test_report.py written by the MySQL sink and rolled up by `ravenctl purge --store mysql`
answers the same roll-ups, report and gaps as from SQLite, and the session refuses writes."""

from __future__ import annotations

import json

import MySQLdb
import pytest

from ravend.cli import ravenctl
from ravend.db import mysql as mysql_db
from ravend.sinks.mysql import MysqlSink
from tests.helpers.cost import D
from tests.helpers.mysql import conf_keys, mysql_config
from tests.helpers.web import request, running_web
from tests.test_report import DAYS, GAP, cents, expected_week, week_readings
from tests.test_web_api import week_conf


@pytest.fixture(scope="module")
def mysql_week(tmp_path_factory, mariadb_server):
    tmp = tmp_path_factory.mktemp("web-mysql")
    database = mariadb_server.new_database("web_week")
    readings = week_readings()
    sink = MysqlSink(mysql_config(mariadb_server, database))
    sink.open()
    for i in range(0, len(readings), 5000):
        sink.write(readings[i:i + 5000], [])
    sink.close()
    keys = conf_keys(mariadb_server, database)
    mysql = "".join(f"{k} = {v}\n" for k, v in keys.items())
    conf = week_conf(tmp / "ravend.conf", tmp, f"[sqlite]\nenabled = no\n[mysql]\n{mysql}"
                     "[web]\nstore = mysql\n")
    assert ravenctl.main(["purge", "--config", str(conf), "--store", "mysql"]) == 0
    with running_web(conf, tmp / "web.log") as url:
        yield url, readings, mariadb_server, database


def test_mysql_rollups_report_and_gaps(mysql_week) -> None:
    url, readings, _server, _database = mysql_week
    expected = expected_week(readings)
    daily = request(f"{url}/api/v1/rollups?resolution=daily&start=2025-03-03&end=2025-03-10")
    assert daily.status == 200, daily
    for p in daily.json()["points"]:
        want = expected[p["day"]]
        assert D(str(p["delivered_kwh"])) == want["in"].quantize(D("1e-9")), p
        assert cents(str(p["cost"])) == cents(want["cost"]), p
    assert len(daily.json()["points"]) == DAYS
    hourly = request(f"{url}/api/v1/rollups?start=2025-03-06&end=2025-03-08").json()["points"]
    assert [p["start"] for p in hourly if p["gap"]] == list(range(GAP[0], GAP[1], 3600))
    report = request(f"{url}/api/v1/report?start=2025-03-03&end=2025-03-10").json()
    assert [d["gap_hours"] for d in report["meters"][0]["days"]] == [0, 0, 0, 4, 2, 0, 0]
    now = request(f"{url}/api/v1/now").json()
    assert now["meter_mac"] == readings[0].meter_mac and now["demand_kw"] is not None
    export = request(f"{url}/api/v1/readings?rollup=daily&start=2025-03-03&end=2025-03-05")
    assert export.status == 200 and len(export.body.decode().splitlines()) == 3


def test_mysql_raw_download_of_one_meter_is_whole_and_in_order(mysql_week) -> None:
    """Read in chunks of CHUNK rows keyed on (key_time, id): every reading once, in time
    order, across the many chunk edges of a week."""
    from ravend.web.queries import CHUNK

    url, readings, _server, _database = mysql_week
    mac = readings[0].meter_mac
    times = [r.key_time for r in readings]
    lo, hi = min(times), max(times) + 1
    raw = request(f"{url}/api/v1/readings?format=jsonl&meter={mac}&start={lo}&end={hi}")
    assert raw.status == 200, raw
    got = [json.loads(line) for line in raw.body.splitlines()]
    assert len(got) > 3 * CHUNK
    assert [r["key_time"] for r in got] == sorted(r["key_time"] for r in got)
    assert sorted((r["key_time"], r["kind"]) for r in got) == sorted(
        (r.key_time, r.kind.value) for r in readings if r.meter_mac == mac)


def test_the_read_only_session_refuses_writes(mysql_week) -> None:
    _url, _readings, server, database = mysql_week
    conn = mysql_db.connect_readonly(mysql_config(server, database))
    try:
        with pytest.raises(MySQLdb.OperationalError, match="READ ONLY"):
            conn.cursor().execute("DELETE FROM readings")
    finally:
        conn.close()
