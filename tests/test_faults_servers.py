"""The fault matrix, the rows with a server or ravend itself dying: MariaDB killed in
the middle of ravend's transaction, ravend killed while MariaDB is down, wrong credentials for
MariaDB and for Mosquitto.

Real processes only: the simulator on a pty, the real ravend subprocess, the private MariaDB and
Mosquitto of tests/helpers/servers.py. Each test ends with the reading accounting: every reading the
simulator wrote complete is in every store once (SQLite, MariaDB), or reached the subscriber
once (MQTT).
"""

from __future__ import annotations

import json
import sqlite3
import time
from collections import Counter
from pathlib import Path

import MySQLdb

from ravend.simulator import MeterSimulator
from ravend.sinks.mqtt_payload import parse_reading
from tests.helpers.mqtt import Subscriber, reading_messages
from tests.helpers.mysql import conf_keys, query
from tests.helpers.process import RavendProcess, running_ravend, stored_rows, write_config
from tests.helpers.wait import wait_for


def mysql_keys(server, db: str) -> Counter:
    try:
        rows = query(server, db, "SELECT meter_mac, kind, meter_time FROM readings")
    except MySQLdb.Error:
        return Counter()  # not created yet, or the server is down
    return Counter((m, k, t) for m, k, t in rows)


def sqlite_keys(db: Path) -> Counter:
    return Counter((m, k, t) for m, k, t, *_ in stored_rows(db))


def sent_keys(sim: MeterSimulator) -> set[tuple]:
    return {s.key for s in sim.sent_readings()}


def accounted(want: set[tuple], *stores: tuple[str, Counter]) -> None:
    """Each store holds every key in WANT once, and nothing else."""
    for name, stored in stores:
        assert stored and max(stored.values()) == 1, f"{name}: a reading was stored twice"
        assert set(stored) == want, (name, want - set(stored), set(stored) - want)


def spooled_keys(outbox: Path) -> Counter:
    """The readings waiting in a sink's outbox file (read-only, as another process)."""
    if not outbox.exists():
        return Counter()
    conn = sqlite3.connect(f"file:{outbox}?mode=ro", uri=True, timeout=5)
    try:
        bodies = [json.loads(b) for (b,) in conn.execute("SELECT body FROM outbox")]
    except sqlite3.OperationalError:
        return Counter()
    finally:
        conn.close()
    return Counter((d["meter_mac"], d["kind"], d["meter_time"]) for b in bodies for d in b["r"])


def meter_and_mariadb(tmp_path: Path, mariadb_server, name: str, model: str, seed: int,
                      **mysql: str) -> tuple[MeterSimulator, str, Path]:
    """A simulated meter that speaks only when the test makes it send, and a configuration for
    ravend storing into SQLite and into a new MariaDB database ``name``: (meter, database,
    configuration file)."""
    link = str(tmp_path / "stick")
    db = mariadb_server.new_database(name)
    sim = MeterSimulator(model, link=link, seed=seed, pushes=False, reply_delay=0.01).start()
    config = write_config(tmp_path / "ravend.conf", tmp_path / "state", link,
                          mysql=conf_keys(mariadb_server, db, **mysql))
    return sim, db, config


def in_both(want: set[tuple], mariadb_server, db: str, sqlite_db: Path) -> bool:
    """Every key in WANT has reached the MariaDB database and the SQLite store."""
    return set(mysql_keys(mariadb_server, db)) >= want and set(sqlite_keys(sqlite_db)) >= want


def accounted_in_both(want: set[tuple], mariadb_server, db: str, sqlite_db: Path) -> None:
    """Every key in WANT once in the MariaDB database and in the SQLite store, nothing else."""
    accounted(want, ("mysql", mysql_keys(mariadb_server, db)),
              ("sqlite", sqlite_keys(sqlite_db)))


def startup_asked(sim: MeterSimulator, since: int) -> bool:
    """A ravend started after the meter had received SINCE commands has sent the last of its
    start-up questions (the price, then the summation delivered)."""
    names = [name for name, _ in sim.received_commands()[since:]]
    return "get_current_price" in names and "get_current_summation_delivered" in names


def half_fragment(sim: MeterSimulator) -> tuple[bytes, bytes]:
    """A demand fragment of this meter cut in two (never recorded as sent)."""
    data = (f"<InstantaneousDemand>\r\n  <DeviceMacId>{sim.device_mac}</DeviceMacId>\r\n"
            f"  <MeterMacId>{sim.meter_macs[0]}</MeterMacId>\r\n"
            "  <TimeStamp>0x2a000000</TimeStamp>\r\n  <Demand>0x0004d2</Demand>\r\n"
            "  <Multiplier>0x00000001</Multiplier>\r\n  <Divisor>0x000003e8</Divisor>\r\n"
            "</InstantaneousDemand>\r\n").encode()
    return data[: len(data) // 2], data[len(data) // 2:]


def test_mariadb_killed_mid_transaction_then_restarted_loses_nothing(
        tmp_path: Path, mariadb_server) -> None:
    """MariaDB is SIGKILLed while ravend's transaction is open: the transaction has inserted
    readings but waits for a table lock on the CalPlug mirror that another session holds, so the
    kill is certainly mid-transaction (checked, not assumed: a dirty read sees its rows). The
    meter goes on flat out meanwhile. MariaDB restarts on the same data directory, rolls the
    transaction back in its crash recovery, and ravend replays: every reading once in MariaDB
    (and its CalPlug mirror) and in SQLite."""
    sqlite_db = tmp_path / "state" / "ravend.db"
    sim, db, config = meter_and_mariadb(tmp_path, mariadb_server, "killed", "raven", 41,
                                        query_timeout="60")
    ravend = RavendProcess(config, tmp_path / "ravend.log")
    locker = None
    try:
        sim.send_readings(300, ("demand", "summation_delivered"))
        assert wait_for(lambda: len(mysql_keys(mariadb_server, db)) >= 300, 30), ravend.log()
        locker = MySQLdb.connect(**mariadb_server.connect_kwargs(db))
        locker.cursor().execute("LOCK TABLES instantaneous_demand WRITE")
        sim.send_readings(5000, ("demand", "summation_delivered", "price"))

        def open_transaction() -> int:
            """Rows that ravend's transaction inserted into readings and has not committed,
            while it waits for the lock (0: not waiting yet). A dirty read sees them, a
            committed read does not; nothing else writes to this database."""
            conn = MySQLdb.connect(**mariadb_server.connect_kwargs(db))
            try:
                cur = conn.cursor()
                cur.execute("SELECT COUNT(*) FROM information_schema.processlist WHERE db = %s"
                            " AND state LIKE %s AND info LIKE %s",
                            (db, "%metadata lock%", "INSERT INTO instantaneous_demand%"))
                if not cur.fetchone()[0]:
                    return 0
                counts = []
                for level in ("READ UNCOMMITTED", "READ COMMITTED"):
                    cur.execute(f"SET SESSION TRANSACTION ISOLATION LEVEL {level}")
                    cur.execute("SELECT COUNT(*) FROM readings")
                    counts.append(cur.fetchone()[0])
                    conn.commit()
                return counts[0] - counts[1]
            finally:
                conn.close()

        assert wait_for(lambda: open_transaction() > 0, 20), ravend.log()
        in_flight = open_transaction()
        # SQLite keeps going at full speed while MariaDB is stuck.
        stuck_at = len(sqlite_keys(sqlite_db))
        assert wait_for(lambda: len(sqlite_keys(sqlite_db)) >= stuck_at + 500, 20)
        mariadb_server.kill()
        locker = None  # died with the server
        assert wait_for(lambda: "mysql: unavailable" in ravend.log(), 30), ravend.log()
        time.sleep(2.0)  # the meter keeps talking; ravend retries at its capped backoff
        mariadb_server.start()
        sim.send_readings(1000, ("demand", "summation_delivered"))
        assert sim.drain(60)
        want = sent_keys(sim)
        assert wait_for(lambda: in_both(want, mariadb_server, db, sqlite_db), 60), ravend.log()
    finally:
        if locker is not None:
            locker.close()
        code, took = ravend.stop()
        sim.stop()
    log = ravend.log()
    assert code == 0, log
    assert took < 5, f"SIGTERM took {took:.1f}s"
    assert "Traceback" not in log
    assert in_flight > 0
    assert 1 <= log.count("mysql: unavailable") <= 3, log  # not one line per retry
    assert "mysql: available again" in log
    accounted_in_both(want, mariadb_server, db, sqlite_db)
    demand = sum(1 for _, kind, _ in want if kind == "demand")
    assert query(mariadb_server, db, "SELECT COUNT(*), COUNT(DISTINCT meter_mac, key_time)"
                 " FROM instantaneous_demand")[0] == (demand, demand)


def test_sigkill_while_mariadb_is_down_then_restart_replays_the_spool(
        tmp_path: Path, mariadb_server) -> None:
    """ravend is SIGKILLed while MariaDB is down and the readings for it wait in its outbox,
    with half a fragment on the wire. MariaDB comes back, ravend starts again (as systemd's
    Restart= would), finds the outbox and replays it: everything the meter wrote complete
    before and after the kill is in both stores once; only the fragment cut by the kill, whose
    first half went to the dead process, is lost (it was never complete on the wire)."""
    sqlite_db = tmp_path / "state" / "ravend.db"
    outbox = tmp_path / "state" / "outbox-mysql.db"
    sim, db, config = meter_and_mariadb(tmp_path, mariadb_server, "sigkill", "emu2", 42)
    first = RavendProcess(config, tmp_path / "ravend-1.log")
    second = None
    try:
        sim.send_readings(300, ("demand", "summation_delivered"))
        assert wait_for(lambda: len(mysql_keys(mariadb_server, db)) >= 300, 30), first.log()
        before_outage = set(mysql_keys(mariadb_server, db))
        mariadb_server.stop()
        sim.send_readings(2000, ("demand", "summation_delivered", "price"))
        assert sim.drain(30)
        want = sent_keys(sim)
        # Everything reached ravend (SQLite has it), and what MariaDB lacks is in its outbox.
        assert wait_for(lambda: set(sqlite_keys(sqlite_db)) >= want, 30), first.log()
        assert wait_for(lambda: set(spooled_keys(outbox)) >= want - before_outage, 30), (
            first.log())
        owed = want - before_outage  # what the outbox must hand to MariaDB
        head, tail = half_fragment(sim)
        sim.write_raw(head)
        assert sim.drain(5)
        time.sleep(0.3)  # the dead process read the first half
        first.kill()
        assert first.proc.returncode == -9
        spooled = spooled_keys(outbox)
        asked_before = len(sim.received_commands())
        mariadb_server.start()
        second = RavendProcess(config, tmp_path / "ravend-2.log")
        assert wait_for(lambda: "device opened" in second.log(), 20), second.log()
        sim.write_raw(tail)  # the rest of the cut fragment: garbage to the new process
        sim.send_readings(300, ("demand", "summation_delivered"))
        # The new process asks for the price and the summation last of its start-up commands
        # (a second apart); their answers are readings too, so WANT is taken after them.
        assert wait_for(lambda: startup_asked(sim, asked_before), 20), sim.received_commands()
        assert sim.drain(30)
        want = sent_keys(sim)
        assert wait_for(lambda: in_both(want, mariadb_server, db, sqlite_db), 30), second.log()
    finally:
        first.kill()
        code, _ = second.stop() if second is not None else (None, 0)
        sim.stop()
    log = second.log()
    assert code == 0, log
    assert "Traceback" not in first.log() + log
    assert max(spooled.values()) == 1 and set(spooled) >= owed  # the kill kept the outbox
    assert "mysql: spool replayed" in log, log
    accounted_in_both(want, mariadb_server, db, sqlite_db)
    assert len(spooled_keys(outbox)) == 0


def test_wrong_mariadb_password_is_said_once_spooled_and_recovers_when_fixed(
        tmp_path: Path, mariadb_server) -> None:
    """The password file holds a wrong password: one clear line, SQLite stores on, MariaDB's
    readings are spooled; the file is fixed (no restart, no signal: the next retry reads it
    again) and the spool is replayed, every reading once in both stores."""
    link = str(tmp_path / "stick")
    state = tmp_path / "state"
    sqlite_db = state / "ravend.db"
    secret = tmp_path / "mysql.password"
    secret.write_text("not the password\n")
    secret.chmod(0o600)
    db = mariadb_server.new_database("password")
    mysql = conf_keys(mariadb_server, db, password_file=str(secret))
    del mysql["password"]
    sim = MeterSimulator("raven", link=link, seed=43, pushes=False, reply_delay=0.01).start()
    config = write_config(tmp_path / "ravend.conf", state, link, mysql=mysql)
    with running_ravend(config, tmp_path / "ravend.log", then_stop=(sim.stop,)) as ravend:
        assert wait_for(lambda: "the credentials are wrong" in ravend.log(), 20), ravend.log()
        sim.send_readings(500, ("demand", "summation_delivered"))
        assert sim.drain(20)
        want = sent_keys(sim)
        assert wait_for(lambda: set(sqlite_keys(sqlite_db)) >= want, 20), ravend.log()
        assert wait_for(lambda: set(spooled_keys(state / "outbox-mysql.db")) >= want, 20)
        time.sleep(1.0)  # several retries at the capped backoff, all refused
        assert not mysql_keys(mariadb_server, db)
        secret.write_text(mariadb_server.password + "\n")
        assert wait_for(lambda: set(mysql_keys(mariadb_server, db)) >= want, 20), ravend.log()
        sim.send_readings(200, ("demand",))
        assert sim.drain(20)
        want = sent_keys(sim)
        assert wait_for(lambda: in_both(want, mariadb_server, db, sqlite_db), 20), ravend.log()
    log = ravend.log()
    assert "Traceback" not in log
    assert log.count("the credentials are wrong") == 1, log
    assert f"password_file {secret}" in log
    assert "mysql: available again" in log
    accounted_in_both(want, mariadb_server, db, sqlite_db)


def test_mosquitto_refusing_ravend_is_said_once_spooled_and_recovers_when_fixed(
        tmp_path: Path, make_mosquitto) -> None:
    """The broker refuses ravend's credentials: one line with the broker's reason, readings
    spooled; the password file is fixed and the next retry connects: every reading reaches the
    subscriber once, none twice."""
    broker = make_mosquitto(users={"ravend": "right", "reader": "reader"},
                            extra_config="max_queued_messages 100000")
    sub = Subscriber(broker.host, broker.port, ["ravend/#"], client_id="fault-subscriber",
                     username="reader", password="reader").start()
    secret = tmp_path / "mqtt.password"
    secret.write_text("wrong\n")
    secret.chmod(0o600)
    link = str(tmp_path / "stick")
    state = tmp_path / "state"
    sim = MeterSimulator("emu2", link=link, seed=44, pushes=False, reply_delay=0.01).start()
    config = write_config(tmp_path / "ravend.conf", state, link, mqtt={
        "enabled": "yes", "host": broker.host, "port": str(broker.port),
        "client_id": "ravend-fault", "username": "ravend", "password_file": str(secret),
        "publish_timeout": "2s"})

    def published() -> Counter:
        return Counter(parse_reading(m.payload).key for m in reading_messages(sub))

    with running_ravend(config, tmp_path / "ravend.log",
                        then_stop=(sim.stop, lambda: sub.stop(settle=0.3))) as ravend:
        assert wait_for(lambda: "mqtt: unavailable" in ravend.log(), 20), ravend.log()
        sim.send_readings(500, ("demand", "summation_delivered"))
        assert sim.drain(20)
        want = sent_keys(sim)
        assert wait_for(lambda: set(spooled_keys(state / "outbox-mqtt.db")) >= want, 20), (
            ravend.log())
        time.sleep(1.0)  # retries at the capped backoff, all refused
        assert not published()
        secret.write_text("right\n")
        assert wait_for(lambda: set(published()) >= want, 30), ravend.log()
        sim.send_readings(200, ("demand",))
        assert sim.drain(20)
        want = sent_keys(sim)
        assert wait_for(lambda: set(published()) >= want, 30), ravend.log()
    log = ravend.log()
    assert "Traceback" not in log
    assert log.count("mqtt: unavailable") == 1, log
    assert "refused" in log.lower() or "not authori" in log.lower(), log
    assert "mqtt: available again" in log
    accounted(want, ("mqtt", published()),
              ("sqlite", sqlite_keys(state / "ravend.db")))


def test_sigterm_during_a_batch_exits_0_within_5s_and_loses_nothing(
        tmp_path: Path, mariadb_server) -> None:
    """SIGTERM while both stores take batches flat out: ravend reads to the end of the
    fragment it is in (so the stop cuts none), writes or spools what it has read, and exits 0
    within 5 s. The meter never stops talking; ravend is started again and reads what waited in
    the tty meanwhile. Every reading written complete on the wire is in both stores once."""
    sqlite_db = tmp_path / "state" / "ravend.db"
    sim, db, config = meter_and_mariadb(tmp_path, mariadb_server, "sigterm", "raven", 45)
    first = RavendProcess(config, tmp_path / "ravend-1.log")
    second = None
    try:
        assert wait_for(lambda: "device opened" in first.log(), 20), first.log()
        sim.send_readings(30_000, ("demand", "summation_delivered"))
        assert wait_for(lambda: len(sqlite_keys(sqlite_db)) >= 3000
                        and len(mysql_keys(mariadb_server, db)) >= 1000, 30), first.log()
        assert not sim.idle(), "the batch was over before the signal"
        code, took = first.stop()
        assert code == 0, first.log()
        assert took < 5, f"SIGTERM took {took:.1f}s"
        second = RavendProcess(config, tmp_path / "ravend-2.log")
        assert sim.drain(120)
        want = sent_keys(sim)
        assert wait_for(lambda: in_both(want, mariadb_server, db, sqlite_db), 60), (
            first.log() + second.log())
    finally:
        first.kill()
        code2, _ = second.stop() if second is not None else (None, 0)
        sim.stop()
    logs = first.log() + second.log()
    assert code2 == 0
    assert "Traceback" not in logs
    assert "skipped" not in logs, logs  # no fragment was cut by the stop
    accounted_in_both(want, mariadb_server, db, sqlite_db)
