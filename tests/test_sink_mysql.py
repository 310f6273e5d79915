"""MySQL sink against a real private MariaDB: idempotent batched writes, the CalPlug tables,
errors sorted into spool-and-retry or reject, credentials, TLS, and a missing driver."""

from __future__ import annotations

import datetime as dt
import os
import subprocess
import sys
import time
from decimal import Decimal
from pathlib import Path

import pytest

from ravend.config import ConfigError, load
from ravend.db.mysql import connect, migrate, schema_version
from ravend.protocol.model import Kind, Reading, scale
from ravend.sinks.base import ReadingRejected, SinkUnavailable, StateItem
from ravend.sinks.mysql import MysqlSink
from ravend.sinks.worker import SinkWorker
from tests.helpers.mysql import conf_keys, mysql_config, query
from tests.helpers.process import write_config
from tests.helpers.readings import DEVICE, METER, T0, demand, demands, odd_clocks

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture()
def database(mariadb_server, request) -> str:
    return mariadb_server.new_database(request.node.name)


@pytest.fixture()
def sink(mariadb_server, database):
    s = MysqlSink(mysql_config(mariadb_server, database), start_id="start-1")
    s.open()
    yield s
    s.close()


def count(server, db: str, table: str = "readings") -> int:
    return query(server, db, f"SELECT COUNT(*) FROM {table}")[0][0]


def summation(i: int, raw: int, *, meter: str = METER) -> Reading:
    return Reading(meter, Kind.SUMMATION_DELIVERED, T0 + i, T0 + i + 0.5, raw, 1, 1000,
                   scale(raw, 1, 1000), "kWh", DEVICE)


def test_clock_flag_column_follows_the_rule_mqtt_and_mongo_carry(mariadb_server, database,
                                                                  sink) -> None:
    cases = odd_clocks()
    sink.write([r for r, _ in cases], [])
    stored = {(k, t): f for k, t, f in query(
        mariadb_server, database, "SELECT kind, key_time, clock_flag FROM readings")}
    assert {(r.kind.value, r.key_time): r.clock_flag for r, _ in cases} == stored
    assert [r.clock_flag for r, _ in cases] == [flag for _, flag in cases]


def test_open_applies_every_migration_once(mariadb_server, database, sink) -> None:
    conn = connect(mysql_config(mariadb_server, database))
    try:
        assert schema_version(conn) == 8
        assert migrate(conn) == []
    finally:
        conn.close()
    tables = {r[0] for r in query(mariadb_server, database, "SHOW TABLES")}
    assert {"readings", "device_state", "instantaneous_demand", "run_info", "rollup_hourly",
            "rollup_daily", "maintenance_state", "schema_version"} <= tables


def test_rewrite_of_same_readings_is_idempotent(mariadb_server, database, sink) -> None:
    batch = demands(50)
    sink.write(batch, [])
    sink.write(batch[10:30], [])
    sink.write(batch, [])
    assert count(mariadb_server, database) == 50
    assert count(mariadb_server, database, "instantaneous_demand") == 50


def test_values_are_stored_with_raw_integers_and_exact_scaled_value(
        mariadb_server, database, sink) -> None:
    raw = 0x0000_1234_5678_9ABC  # wider than 32 bits
    sink.write([demand(0, raw=-1482), summation(1, raw), demand(2, meter_time=None)], [])
    rows = query(mariadb_server, database,
                 "SELECT kind, key_time, meter_time, raw, multiplier, divisor, value, unit,"
                 " device_mac FROM readings ORDER BY id")
    assert rows[0] == ("demand", T0, T0, -1482, 1, 1000, Decimal("-1.482"), "kW", DEVICE)
    assert rows[1][3] == raw and rows[1][6] == Decimal(raw) / 1000
    # An unset meter clock: keyed on the host's receive time, meter_time NULL.
    assert rows[2][1] == int(demand(2).received_at) and rows[2][2] is None


def test_demand_is_mirrored_into_the_calplug_tables(mariadb_server, database) -> None:
    cfg = mysql_config(mariadb_server, database, run_name="kitchen")
    first = MysqlSink(cfg, start_id="aaaa")
    first.open()
    first.write([*demands(3), summation(5, 1000)], [])
    first.write(demands(2, start=3), [])
    first.close()
    second = MysqlSink(cfg, start_id="bbbb")
    second.open()
    second.write(demands(4, start=2), [])  # three of them are rewrites
    second.close()
    rows = query(mariadb_server, database,
                 "SELECT time, demand, multiplier, divisor, run, hash, meter_mac, key_time, kw,"
                 " flag FROM instantaneous_demand ORDER BY key_time")
    assert [r[7] for r in rows] == [T0 + i for i in range(6)]  # demand only, each once
    t, raw, mult, div, run, start, meter, _key, kw, flag = rows[0]
    assert t == dt.datetime.fromtimestamp(T0, dt.UTC).replace(tzinfo=None)
    assert (raw, mult, div, run, start, meter, kw, flag) == (
        1000, 1, 1000, "kitchen", "aaaa", METER, Decimal("1.000000000"), None)
    assert rows[5][5] == "bbbb"
    runs = query(mariadb_server, database,
                 "SELECT name, hash, meter_id, software FROM run_info ORDER BY id")
    assert [r[:3] for r in runs] == [("kitchen", "aaaa", METER), ("kitchen", "bbbb", METER)]
    assert runs[0][3].startswith("ravend ")


def test_calplug_tables_can_be_left_alone(mariadb_server, database) -> None:
    s = MysqlSink(mysql_config(mariadb_server, database, calplug_tables=False))
    s.open()
    s.write(demands(5), [])
    s.close()
    assert count(mariadb_server, database) == 5
    assert count(mariadb_server, database, "instantaneous_demand") == 0
    assert count(mariadb_server, database, "run_info") == 0


def test_state_is_upserted_latest_wins(mariadb_server, database, sink) -> None:
    sink.write([], [StateItem(DEVICE, "", "DeviceInfo", 1.0, {"fw_version": "1.0"})])
    sink.write([], [StateItem(DEVICE, "", "DeviceInfo", 2.0, {"fw_version": "2.0"})])
    rows = query(mariadb_server, database, "SELECT received_at, body FROM device_state")
    assert rows == [(2.0, '{"fw_version":"2.0"}')]


def test_data_that_cannot_fit_is_rejected_and_the_rest_of_the_batch_stored(
        mariadb_server, database, sink, tmp_path: Path) -> None:
    bad = demand(7, meter="0x" + "f" * 60)  # longer than the meter_mac column
    with pytest.raises(ReadingRejected, match="too long"):
        sink.write([bad], [])
    worker = SinkWorker(sink, tmp_path / "outbox-mysql.db", retry_min=0.05, retry_max=0.2)
    worker.start()
    worker.submit([*demands(5), bad, *demands(5, start=5)])
    deadline = time.monotonic() + 10
    while worker.stats.stored + worker.stats.rejected < 11 and time.monotonic() < deadline:
        time.sleep(0.02)
    worker.stop()
    assert (worker.stats.stored, worker.stats.rejected) == (10, 1)
    assert count(mariadb_server, database) == 10


def test_lost_server_is_unavailable_and_the_next_write_reconnects(
        mariadb_server, database, sink) -> None:
    sink.write(demands(5), [])
    mariadb_server.stop()
    try:
        with pytest.raises(SinkUnavailable, match=r"mysql://.*(Lost connection|gone away|Can't)"):
            sink.write(demands(5, start=5), [])
        with pytest.raises(SinkUnavailable, match="Can't connect"):
            sink.write(demands(5, start=5), [])
    finally:
        mariadb_server.start()
    sink.write(demands(10), [])  # no open(): the write reconnects by itself
    assert count(mariadb_server, database) == 10


def test_wrong_password_says_so_and_a_fixed_password_file_is_picked_up(
        mariadb_server, database, tmp_path: Path) -> None:
    secret = tmp_path / "mysql.password"
    secret.write_text("not the password\n")
    secret.chmod(0o600)
    s = MysqlSink(mysql_config(mariadb_server, database, password="",
                               password_file=str(secret)))
    with pytest.raises(SinkUnavailable) as caught:
        s.open()
    message = str(caught.value)
    assert "the credentials are wrong" in message and "error 1045" in message
    assert str(secret) in message and "\n" not in message
    secret.write_text(mariadb_server.password + "\n")
    s.open()  # the retry reads the file again
    s.write(demands(2), [])
    s.close()
    assert count(mariadb_server, database) == 2


def test_group_readable_password_file_is_a_config_error(tmp_path: Path) -> None:
    secret = tmp_path / "mysql.password"
    secret.write_text("x\n")
    secret.chmod(0o640)
    conf = tmp_path / "ravend.conf"
    conf.write_text(f"[mysql]\nenabled = yes\npassword_file = {secret}\n")
    with pytest.raises(ConfigError, match=r"ravend.conf:3: \[mysql\] password_file: .* is"
                       r" accessible by group or others \(mode 0640\)"):
        load(conf)
    conf.write_text(f"[mysql]\npassword = x\npassword_file = {secret}\n")
    with pytest.raises(ConfigError, match="not both"):
        load(conf)


def test_unknown_database_says_how_to_create_it(mariadb_server) -> None:
    s = MysqlSink(mysql_config(mariadb_server, "no_such_db"))
    with pytest.raises(SinkUnavailable, match=r"'no_such_db' does not exist.*CREATE DATABASE"):
        s.open()


def test_tls_verifies_the_server_certificate(make_mariadb, mariadb_server, tmp_path: Path
                                             ) -> None:
    from tests.helpers.servers import make_test_certificates

    # The server's certificate names only db.example, not 127.0.0.1 that we connect to.
    certs = make_test_certificates(tmp_path / "tls", hostnames=("db.example",), ips=())
    server = make_mariadb(extra_args=[f"--ssl-ca={certs.ca_cert}",
                                      f"--ssl-cert={certs.server_cert}",
                                      f"--ssl-key={certs.server_key}"])
    db = server.new_database("tls")
    strict = MysqlSink(mysql_config(server, db, ssl_ca=str(certs.ca_cert)))
    with pytest.raises(SinkUnavailable, match="TLS/SSL error"):
        strict.open()
    lenient = MysqlSink(mysql_config(server, db, ssl_ca=str(certs.ca_cert),
                                     ssl_verify_server_cert=False))
    lenient.open()
    lenient.write(demands(3), [])
    cipher = lenient._conn.cursor()
    cipher.execute("SHOW SESSION STATUS LIKE 'Ssl_cipher'")
    assert cipher.fetchone()[1]
    lenient.close()
    # A CA of someone else: the chain check fails whatever ssl_verify_server_cert says.
    other = make_test_certificates(tmp_path / "other")
    with pytest.raises(SinkUnavailable, match="TLS/SSL error"):
        MysqlSink(mysql_config(server, db, ssl_ca=str(other.ca_cert),
                               ssl_verify_server_cert=False)).open()
    # TLS configured, server without TLS: refused rather than sent in clear.
    plain = MysqlSink(mysql_config(mariadb_server, mariadb_server.new_database("plain"),
                                   ssl_ca=str(certs.ca_cert), ssl_verify_server_cert=False))
    with pytest.raises(SinkUnavailable, match="does not offer it"):
        plain.open()


def test_missing_driver_is_a_config_error_naming_the_package(
        mariadb_server, tmp_path: Path) -> None:
    blocker = tmp_path / "block"
    (blocker / "MySQLdb").mkdir(parents=True)
    (blocker / "MySQLdb" / "__init__.py").write_text("raise ImportError('blocked by the test')\n")
    conf = write_config(tmp_path / "ravend.conf", tmp_path / "state", str(tmp_path / "stick"),
                        mysql=conf_keys(mariadb_server, "whatever"))
    env = {**os.environ, "PYTHONPATH": f"{blocker}{os.pathsep}{ROOT}"}
    code = ("import sys; from ravend.config import load, ConfigError\n"
            "from ravend.service import build_sinks\n"
            "try:\n    build_sinks(load(sys.argv[1]))\n"
            "except ConfigError as e:\n    print(e); sys.exit(e.exit_status)\n")
    direct = subprocess.run([sys.executable, "-c", code, str(conf)], env=env,
                            capture_output=True, text=True, timeout=30)
    assert direct.returncode == 78, direct.stderr
    assert "python3-mysqldb" in direct.stdout
    proc = subprocess.run([sys.executable, "-m", "ravend.cli.ravend", "--config", str(conf)],
                          env=env, capture_output=True, text=True, timeout=30)
    assert proc.returncode == 78, proc.stderr
    assert "apt install python3-mysqldb" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_a_sqlite_only_ravend_loads_no_mariadb_code() -> None:
    """The MariaDB sink (and the CalPlug history it brings) is imported when [mysql] enables
    it, not by every ravend: the default, SQLite-only daemon carries none of it in memory."""
    from tests.helpers.process import ROOT

    proc = subprocess.run(
        [sys.executable, "-c", "import sys, ravend.cli.ravend, ravend.service;"
         " print(*sorted(sys.modules))"],
        env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT)},
        capture_output=True, text=True, timeout=30, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr
    names = set(proc.stdout.split())
    assert "ravend.service" in names and "ravend.sinks.sqlite" in names
    assert not names & {"ravend.sinks.mysql", "ravend.calplug_history"}
