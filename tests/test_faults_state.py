"""The real ravend with its state files under faults: a damaged outbox at start, a
poison row in one, and SIGTERM while a write hangs. Each ends with the reading accounting per
sink: stored + rejected = sent, each stored once.
"""

from __future__ import annotations

import json
import re
import sqlite3
import time
from pathlib import Path

from ravend.simulator import MeterSimulator
from ravend.sinks.mqtt_payload import parse_reading
from ravend.sinks.outbox import Outbox
from tests.helpers.accounting import keys, sent_keys
from tests.helpers.mqtt import Subscriber, reading_messages
from tests.helpers.process import RavendProcess, ravenctl, running_ravend, stored_rows, write_config
from tests.helpers.readings import demands
from tests.helpers.wait import wait_for
from tests.helpers.worker import StoreLock


def start_meter(tmp_path: Path, seed: int, **sections: dict[str, str]
                ) -> tuple[MeterSimulator, Path]:
    """A quiet simulated meter and the config of a ravend that reads it."""
    link = str(tmp_path / "stick")
    sim = MeterSimulator("raven", link=link, seed=seed, pushes=False, reply_delay=0.01).start()
    config = write_config(tmp_path / "ravend.conf", tmp_path / "state", link,
                          service={"control_socket": ""}, **sections)
    return sim, config


def start(tmp_path: Path, seed: int, name: str = "ravend",
          **sections: dict[str, str]) -> tuple[MeterSimulator, RavendProcess]:
    sim, config = start_meter(tmp_path, seed, **sections)
    return sim, RavendProcess(config, tmp_path / f"{name}.log")


def test_a_damaged_outbox_at_start_is_moved_aside_and_ravend_stores(
        tmp_path: Path, mosquitto_server) -> None:
    """The SQLite sink's outbox is damaged; the MQTT sink's is not: only the first is moved
    aside, and both sinks get every reading."""
    state = tmp_path / "state"
    state.mkdir()
    outbox = state / "outbox-sqlite.db"
    outbox.write_bytes(b"SQLite format 3\x00" + b"\xff" * 3000)  # a header, then nonsense
    broker = mosquitto_server
    sub = Subscriber(broker.host, broker.port, ["ravend/#"]).start()
    sim, config = start_meter(tmp_path, seed=31, mqtt={
        "enabled": "yes", "host": broker.host, "port": str(broker.port)})

    def published() -> set[tuple]:
        return {parse_reading(m.payload).key for m in reading_messages(sub)}

    with running_ravend(config, tmp_path / "ravend.log",
                        then_stop=(sim.stop, sub.stop)) as ravend:
        assert wait_for(lambda: "device opened" in ravend.log() or ravend.proc.poll() is not None,
                        20), ravend.log()
        assert ravend.proc.poll() is None, ravend.log()
        sim.send_readings(50, ("demand",))
        assert sim.drain(10)
        want = sent_keys(sim)
        assert wait_for(lambda: set(keys(stored_rows(state / "ravend.db"))) == want, 20), \
            ravend.log()
        assert wait_for(lambda: published() >= want, 20), ravend.log()
    log = ravend.log()
    moved = sorted(state.glob("outbox-*.corrupt-*"))
    assert [m.name.split(".db.")[0] for m in moved] == ["outbox-sqlite"]
    lines = [line for line in log.splitlines() if "is damaged" in line]
    assert len(lines) == 1 and "ERROR" in lines[0]
    assert str(outbox) in lines[0] and str(moved[0]) in lines[0]
    assert "Traceback" not in log
    assert max(keys(stored_rows(state / "ravend.db")).values()) == 1


def test_a_poison_outbox_row_at_start_is_rejected_and_replay_goes_on(tmp_path: Path) -> None:
    """Left by a previous run: two good spooled readings and an entry that cannot be decoded.
    ravend replays the good ones, lists the poison as rejected, and stores what comes next."""
    state = tmp_path / "state"
    box = Outbox(state / "outbox-sqlite.db")
    box.append(demands(2), [])
    box.close()
    with sqlite3.connect(state / "outbox-sqlite.db") as conn:
        conn.execute("INSERT INTO outbox (n, body, ord) VALUES (1, '{\"r\": [{\"kind\": 1}]', 0)")
    sim, config = start_meter(tmp_path, seed=32)
    db = state / "ravend.db"
    with running_ravend(config, tmp_path / "ravend.log", then_stop=(sim.stop,)) as ravend:
        assert wait_for(lambda: "device opened" in ravend.log(), 20), ravend.log()
        sim.send_readings(30, ("demand",))
        assert sim.drain(10)
        want = sent_keys(sim) | {r.key for r in demands(2)}
        assert wait_for(lambda: set(keys(stored_rows(db))) == want, 20), ravend.log()
    log = ravend.log()
    assert "Traceback" not in log
    assert max(keys(stored_rows(db)).values()) == 1
    # The stop line owns up to what a sink did not store.
    assert re.search(r"ravend stopped \(.*stored sqlite=\d+ \(1 rejected\)\)", log), log
    listed = ravenctl("rejected", "--config", str(tmp_path / "ravend.conf"), "--json")
    rows = json.loads(listed.stdout)
    assert [(r["sink"], r["kind"], r["reason"].split(":")[0]) for r in rows] == [
        ("sqlite", None, "undecodable outbox entry")]


def test_sigterm_while_a_write_hangs_spools_what_waits_and_a_restart_stores_it(
        tmp_path: Path) -> None:
    """Another connection holds the store's write lock (a backup, a long purge), so the
    worker's write waits (busy timeout 10 s, longer than the stop budget). SIGTERM: ravend
    spools the batch in flight and the queued readings, exits 0 within 5 s; restarted once the
    lock is gone, it stores every reading, once."""
    state = tmp_path / "state"
    db = state / "ravend.db"
    sim, ravend = start(tmp_path, seed=33)
    locker = None
    try:
        assert wait_for(lambda: "device opened" in ravend.log(), 20), ravend.log()
        sim.send_readings(10, ("demand",))
        assert sim.drain(10)
        assert wait_for(lambda: len(stored_rows(db)) == 10, 20), ravend.log()
        locker = StoreLock(db)
        for _ in range(40):
            sim.send_readings(1, ("demand",))
            time.sleep(0.02)  # several batches: one in flight, the rest queued behind it
        assert sim.drain(10)
        time.sleep(1.0)  # ravend reads them off the pty
        code, took = ravend.stop()
        sent = sent_keys(sim)
    finally:
        if ravend.proc.poll() is None:
            ravend.kill()
        sim.stop()
    log = ravend.log()
    assert code == 0, log
    assert took < 5.0, (took, log)
    assert "did not finish" in log
    assert re.search(r"ravend stopped \(.*stored sqlite=10 \(\d+ in the outbox\)\)", log), log
    assert len(stored_rows(db)) == 10  # (read-only: the lock is still held)
    locker.release()

    sim, again = start(tmp_path, seed=34, name="again")
    try:
        assert wait_for(lambda: "device opened" in again.log(), 20), again.log()
        assert wait_for(lambda: set(keys(stored_rows(db))) >= sent, 20), log + again.log()
        sent |= sent_keys(sim)  # what the new stick said at open
        assert wait_for(lambda: set(keys(stored_rows(db))) == sent, 20), again.log()
    finally:
        again.stop()
        sim.stop()
    stored = keys(stored_rows(db))
    assert set(stored) == sent and max(stored.values()) == 1
