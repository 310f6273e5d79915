"""ravenctl against a real store: status exit codes, info, export formats, tail, simulate."""

from __future__ import annotations

import csv
import io
import json
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from ravend.protocol.model import Kind, Reading, scale
from ravend.sinks.base import StateItem
from ravend.sinks.sqlite import SqliteSink
from tests.helpers.process import ROOT, ravenctl
from tests.helpers.readings import DEVICE, METER, T0, demand, demands


@pytest.fixture()
def db(tmp_path: Path) -> Path:
    path = tmp_path / "ravend.db"
    sink = SqliteSink(path)
    sink.open()
    raw = 0x95800BE
    summation = Reading(METER, Kind.SUMMATION_DELIVERED, T0 + 5, T0 + 5.2, raw, 1, 1000,
                        scale(raw, 1, 1000), "kWh", DEVICE)
    sink.write([*demands(10), summation], [
        StateItem(DEVICE, "", "DeviceInfo", T0, {"model_id": "Z106-RAVEn", "fw_version": "2.0"})])
    sink.close()
    return path


def fresh(db: Path) -> None:
    sink = SqliteSink(db)
    sink.open()
    r = demand(100)
    sink.write([Reading(r.meter_mac, r.kind, int(time.time()), time.time(), r.raw, 1, 1000,
                        r.value, r.unit, r.device_mac)], [])
    sink.close()


def test_status_stale_exits_3_and_shows_values(db: Path) -> None:
    proc = ravenctl("status", "--db", str(db), "--config", "/nonexistent")
    assert proc.returncode == 3, proc.stderr
    assert METER in proc.stdout
    assert "156762.302" in proc.stdout  # the summation, exact
    assert "STALE" in proc.stdout


def test_status_fresh_exits_0(db: Path) -> None:
    fresh(db)
    proc = ravenctl("status", "--db", str(db), "--config", "/nonexistent", "--json")
    assert proc.returncode == 0, proc.stderr
    data = json.loads(proc.stdout)
    kinds = {m["kind"]: m for m in data["meters"]}
    assert kinds["demand"]["n"] == 11
    assert data["stale"] is False


def test_status_without_database_exits_2(tmp_path: Path) -> None:
    proc = ravenctl("status", "--db", str(tmp_path / "none.db"), "--config", "/nonexistent")
    assert proc.returncode == 2
    assert "no database yet" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_info_shows_device_state(db: Path) -> None:
    proc = ravenctl("info", "--db", str(db), "--config", "/nonexistent")
    assert proc.returncode == 0
    assert "DeviceInfo" in proc.stdout and "Z106-RAVEn" in proc.stdout


def test_export_csv_range(db: Path) -> None:
    proc = ravenctl("export", "--db", str(db), "--config", "/nonexistent", "--since",
                    str(T0 + 2), "--until", str(T0 + 5), "--kind", "demand")
    assert proc.returncode == 0, proc.stderr
    rows = list(csv.DictReader(io.StringIO(proc.stdout)))
    assert [int(r["key_time"]) for r in rows] == [T0 + 2, T0 + 3, T0 + 4]
    assert rows[0]["raw"] == "1002" and rows[0]["unit"] == "kW"


def test_export_jsonl_iso_dates(db: Path) -> None:
    since = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(T0 + 8))
    proc = ravenctl("export", "--db", str(db), "--config", "/nonexistent", "--since", since,
                    "--format", "jsonl")
    assert proc.returncode == 0, proc.stderr
    lines = [json.loads(line) for line in proc.stdout.splitlines()]
    assert {(x["kind"], x["key_time"]) for x in lines} == {
        ("demand", T0 + 8), ("demand", T0 + 9)}


def test_export_bad_time_is_one_line(db: Path) -> None:
    proc = ravenctl("export", "--db", str(db), "--config", "/nonexistent", "--since", "soon")
    assert proc.returncode != 0
    assert "cannot read time 'soon'" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_tail_prints_new_readings(db: Path) -> None:
    proc = subprocess.Popen([sys.executable, "-m", "ravend.cli.ravenctl", "tail", "--db",
                             str(db), "--config", "/nonexistent", "-n", "2", "--count", "1",
                             "--interval", "0.1"], stdout=subprocess.PIPE, text=True, cwd=ROOT)
    time.sleep(1.0)
    fresh(db)
    out, _ = proc.communicate(timeout=20)
    assert proc.returncode == 0
    lines = out.splitlines()
    assert len(lines) == 3  # the last two, then the new one
    assert "demand" in lines[-1]


def test_help_explains_every_command() -> None:
    proc = ravenctl("--help")
    assert proc.returncode == 0
    for command in ("status", "info", "tail", "export", "simulate"):
        assert command in proc.stdout
        sub = ravenctl(command, "--help")
        assert sub.returncode == 0 and len(sub.stdout) > 200, command


def test_simulate_count_exits(tmp_path: Path) -> None:
    link = tmp_path / "sim"
    proc = ravenctl("simulate", "--link", str(link), "--count", "3", "--flat-out", timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert str(link) in proc.stdout


ODD_TIMES = (2**62, -(2**62), 0xFFFFFFFE + 946_684_800, 0, 253_402_300_800)  # 9999 + 1 s too


def odd_store(db: Path) -> None:
    """A real store holding times no date can show (written by older versions, or by a meter
    whose wire times were wider than its clock), a NULL meter time and an empty-ish state."""
    fresh(db)
    conn = sqlite3.connect(db)
    with conn:
        for i, t in enumerate(ODD_TIMES):
            for kind in ("demand", "summation_delivered", "price"):
                conn.execute(
                    "INSERT INTO readings (meter_mac, kind, key_time, meter_time, received_at,"
                    " device_mac, raw, multiplier, divisor, value, unit) VALUES"
                    " (?, ?, ?, ?, ?, ?, ?, 1, 1000, ?, 'kW')",
                    (METER, kind, t, t, time.time() - i, DEVICE, 2**62, 2**62 / 1000))
        conn.execute("INSERT INTO readings (meter_mac, kind, key_time, meter_time, received_at,"
                     " device_mac, raw, multiplier, divisor, value, unit) VALUES"
                     " (?, 'demand', ?, NULL, ?, ?, -5, 0, 0, -5, 'kW')",
                     (METER, int(time.time()) - 7, time.time() - 7, DEVICE))  # clock unset
    conn.close()


def test_no_command_tracebacks_on_any_stored_time(db: Path) -> None:
    """status, info, export, purge (dry and real: it rolls up first) and report on a store
    with times in years before 1 and after 9999: a one-line answer and a normal exit code,
    the odd times shown as Unix seconds, never a traceback."""
    odd_store(db)
    common = ("--db", str(db), "--config", "/nonexistent")
    status = ravenctl("status", *common)
    assert status.returncode == 0, status.stderr
    assert f"@-{2**62} .. @{2**62}" in status.stdout
    runs = [status, ravenctl("status", "--json", *common), ravenctl("info", *common),
            ravenctl("export", *common), ravenctl("export", "--format", "jsonl", *common)]
    for args in (("purge", "--dry-run"), ("purge",), ("export", "--rollup", "hourly"),
                 ("report", "--days", "2")):
        runs.append(ravenctl(*args, *common))
    for proc in runs:
        assert "Traceback" not in proc.stderr, proc.args
        assert proc.returncode == 0, (proc.args, proc.stderr)
    assert "left out of the roll-ups" in runs[6].stdout


# --- messages and small inconsistencies -------------------------------------------------------


def test_options_before_the_command_are_accepted_and_the_commands_own_win(db: Path,
                                                                         tmp_path: Path) -> None:
    before = ravenctl("--config", "/nonexistent", "--db", str(db), "status", "--json")
    after = ravenctl("status", "--config", "/nonexistent", "--db", str(db), "--json")
    assert before.returncode == after.returncode == 3, before.stderr
    assert json.loads(before.stdout)["meters"] == json.loads(after.stdout)["meters"]
    bad = tmp_path / "bad.conf"
    bad.write_text("[nosuch]\n")
    # Both given: the command's own value is the one used, whichever is the bad one.
    assert ravenctl("--config", str(bad), "status", "--config", "/nonexistent",
                    "--db", str(db)).returncode == 3
    refused = ravenctl("--config", "/nonexistent", "status", "--config", str(bad))
    assert refused.returncode == 78 and "unknown section" in refused.stderr
    # simulate takes all that follows it as its own, whatever came before.
    sim = ravenctl("--config", "/nonexistent", "simulate", "--help")
    assert sim.returncode == 0 and sim.stdout.startswith("usage: ravenctl simulate"), sim


def test_counts_of_one_are_singular(tmp_path: Path) -> None:
    path = tmp_path / "one.db"
    sink = SqliteSink(path)
    sink.open()
    sink.write([demand(1)], [])
    sink.close()
    proc = ravenctl("status", "--db", str(path), "--config", "/nonexistent")
    assert " 1 reading " in proc.stdout and "1 readings" not in proc.stdout, proc.stdout
    from ravend.plural import plural

    assert [plural(n, "reading") for n in (0, 1, 2)] == ["0 readings", "1 reading",
                                                       "2 readings"]


def test_info_shows_times_as_iso_and_json_keeps_them_raw(tmp_path: Path) -> None:
    path = tmp_path / "info.db"
    sink = SqliteSink(path)
    sink.open()
    sink.write([], [StateItem(DEVICE, METER, "TimeCluster", T0,
                              {"utc_time": 1700000000, "local_time": 1699971200})])
    sink.close()
    text = ravenctl("info", "--db", str(path), "--config", "/nonexistent").stdout
    assert "2023-11-14 22:13:20Z" in text and "1700000000" not in text, text
    assert "2023-11-14 14:13:20 (meter local time)" in text, text
    data = json.loads(ravenctl("info", "--db", str(path), "--config", "/nonexistent",
                               "--json").stdout)
    assert data[0]["body"]["utc_time"] == 1700000000


def test_synopsis_names_db_migrate_and_purge_apart() -> None:
    man = (ROOT / "man/ravenctl.1").read_text(encoding="utf-8")
    synopsis = man.split(".SH SYNOPSIS", 1)[1].split(".SH ", 1)[0]
    assert '"db migrate" " | " purge' not in synopsis
    assert ".B db migrate\n" in synopsis and ".B purge\n" in synopsis


def test_status_as_a_user_outside_the_group_says_what_to_do(db: Path) -> None:
    """As uid nobody (setpriv), a configuration file of mode 0640 it may not read."""
    import os
    import shutil
    import tempfile

    setpriv = shutil.which("setpriv")
    assert setpriv, "setpriv (util-linux) is needed to run as another user"
    where = Path(tempfile.mkdtemp(prefix="ravenctl-nobody-"))
    try:
        where.chmod(0o755)
        conf = where / "ravend.conf"
        conf.write_text(f"[service]\nstate_dir = {where}\n")
        conf.chmod(0o640)
        proc = subprocess.run(
            [setpriv, "--reuid=nobody", "--regid=nogroup", "--clear-groups", sys.executable,
             "-m", "ravend.cli.ravenctl", "status", "--config", str(conf)],
            capture_output=True, text=True, cwd=ROOT, timeout=30,
            env={**os.environ, "PYTHONPATH": str(ROOT)})
        assert proc.returncode == 78, proc
        assert proc.stderr == (f"ravenctl: {conf}: permission denied: run it with sudo, or join"
                               " the group ravend (sudo adduser $USER ravend, then log in"
                               " again)\n"), proc.stderr
    finally:
        shutil.rmtree(where)


def test_export_store_mysql_reads_mariadb(db: Path, tmp_path: Path, mariadb_server) -> None:
    from ravend.sinks.mysql import MysqlSink
    from tests.helpers.mysql import conf_keys, mysql_config

    database = mariadb_server.new_database("export_raw")
    sink = MysqlSink(mysql_config(mariadb_server, database))
    sink.open()
    only_in_mysql = demands(3, start=500)
    sink.write(only_in_mysql, [])
    sink.close()
    keys = conf_keys(mariadb_server, database)
    conf = tmp_path / "ravend.conf"
    conf.write_text("[mysql]\n" + "".join(f"{k} = {v}\n" for k, v in keys.items()))
    out = ravenctl("export", "--config", str(conf), "--db", str(db), "--store", "mysql")
    assert out.returncode == 0, out.stderr
    rows = list(csv.DictReader(io.StringIO(out.stdout)))
    assert [int(r["key_time"]) for r in rows] == [r.key_time for r in only_in_mysql]
    # The same columns and value text as the SQLite export of the same readings.
    other = tmp_path / "same.db"
    sqlite_sink = SqliteSink(other)
    sqlite_sink.open()
    sqlite_sink.write(only_in_mysql, [])
    sqlite_sink.close()
    same = ravenctl("export", "--config", "/nonexistent", "--db", str(other))
    assert out.stdout == same.stdout
    lines = ravenctl("export", "--config", str(conf), "--store", "mysql", "--format", "jsonl",
                     "--kind", "demand").stdout.splitlines()
    assert len(lines) == 3 and json.loads(lines[0])["value"] == only_in_mysql[0].value
