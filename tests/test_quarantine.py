"""A reading a store cannot take is rejected into rejected.db, never fatal to its sink.

The store is real SQLite: a raw value wider than its INTEGER (OverflowError at bind, an
exception SqliteSink does not expect), and outbox rows that cannot be decoded. Accounting per
sink: stored + rejected = sent, and ``ravenctl rejected`` lists exactly the rejected ones.
"""

from __future__ import annotations

import json
import logging
import sqlite3
from pathlib import Path

import pytest

from ravend.sinks.base import Sink
from ravend.sinks.outbox import Outbox, OutboxError
from ravend.sinks.quarantine import Quarantine
from ravend.sinks.worker import SYSTEMATIC_AFTER, SinkWorker
from tests.helpers.process import ravenctl
from tests.helpers.readings import demand, demands
from tests.helpers.wait import wait_for
from tests.helpers.worker import make_worker, moved_aside, state, stored_keys

TOO_WIDE = 1 << 70  # no SQLite INTEGER holds it


def test_a_value_the_store_cannot_bind_is_rejected_and_the_worker_goes_on(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    worker, db = make_worker(tmp_path)
    caplog.set_level(logging.INFO, logger="ravend.sinks")
    bad = demand(3, raw=TOO_WIDE)
    worker.submit([*demands(3), bad, *demands(3, 4)])  # one batch: the bad one in the middle
    worker.start()
    assert wait_for(lambda: worker.stats.stored == 6), caplog.text
    worker.submit(demands(2, 7))  # and later ones still go in
    assert wait_for(lambda: worker.stats.stored == 8), caplog.text
    assert worker.alive() and worker.stats.up
    worker.stop()
    assert stored_keys(db) == [r.key_time for r in [*demands(3), *demands(5, 4)]]
    assert worker.stats.rejected == 1
    lines = [r for r in caplog.records if "rejected and left out" in r.getMessage()]
    assert len(lines) == 1 and lines[0].levelno == logging.ERROR
    assert str(bad.key) in lines[0].getMessage() and "OverflowError" in lines[0].getMessage()
    rows = Quarantine(tmp_path / "rejected.db", readonly=True).rows()
    assert [(r["sink"], r["meter_mac"], r["kind"], r["key_time"]) for r in rows] == [
        ("sqlite", *bad.key)]
    assert rows[0]["reading"]["raw"] == TOO_WIDE and "OverflowError" in rows[0]["reason"]

    listed = ravenctl("rejected", "--config", "/nonexistent", "--state-dir", str(tmp_path))
    assert listed.returncode == 0, listed.stderr
    assert f"sqlite  {bad.meter_mac} demand {bad.key_time}  OverflowError" in listed.stdout
    as_json = ravenctl("rejected", "--config", "/nonexistent", "--state-dir", str(tmp_path),
                       "--sink", "sqlite", "--json")
    assert [r["key_time"] for r in json.loads(as_json.stdout)] == [bad.key_time]
    other = ravenctl("rejected", "--config", "/nonexistent", "--state-dir", str(tmp_path),
                     "--sink", "mqtt")
    assert other.returncode == 0 and other.stdout.strip() == "no rejected readings for sink mqtt"


def test_ravenctl_rejected_says_so_when_there_is_none(tmp_path: Path) -> None:
    listed = ravenctl("rejected", "--config", "/nonexistent", "--state-dir", str(tmp_path))
    assert listed.returncode == 0, listed.stderr
    assert listed.stdout.strip() == "no rejected readings"
    assert not (tmp_path / "rejected.db").exists()  # read-only: nothing created


def test_poison_outbox_rows_are_rejected_and_the_replay_goes_on(tmp_path: Path) -> None:
    """Spooled before: good readings, an entry that is not JSON, a reading with a kind that
    does not exist, and one the store cannot take. The replay stores the good ones, rejects the
    three others (each listed once, with its reason) and empties the outbox."""
    box = Outbox(tmp_path / "outbox-sqlite.db")
    box.append(demands(2), [])
    box.append([demand(2, raw=TOO_WIDE)], [])
    box.append(demands(2, 3), [])
    box.close()
    with sqlite3.connect(tmp_path / "outbox-sqlite.db") as conn:
        conn.execute("INSERT INTO outbox (n, body, ord) VALUES (1, 'not json {', 2)")
        body = json.loads(conn.execute("SELECT body FROM outbox WHERE ord = 1").fetchone()[0])
        body["r"][1]["kind"] = "no_such_kind"
        conn.execute("UPDATE outbox SET body = ? WHERE ord = 1", (json.dumps(body),))
    worker, db = make_worker(tmp_path)
    worker.start()
    assert wait_for(lambda: worker.stats.stored == 3 and not len(worker.outbox))
    assert worker.alive()
    worker.submit(demands(1, 5))
    assert wait_for(lambda: worker.stats.stored == 4)
    worker.stop()
    assert stored_keys(db) == [r.key_time for r in [demand(0), *demands(3, 3)]]
    reasons = sorted(r["reason"].split(":")[0] for r in
                     Quarantine(tmp_path / "rejected.db", readonly=True).rows())
    assert reasons == ["OverflowError", "undecodable outbox entry", "undecodable spooled reading"]
    assert worker.stats.rejected == 3


class BrokenSink(Sink):
    """A sink with a bug: every write raises the same unexpected error until ``fixed``."""

    name = "broken"

    def __init__(self) -> None:
        self.fixed = False
        self.keys: list[int] = []

    def open(self) -> None:
        pass

    def write(self, readings, states) -> None:
        if not self.fixed:
            raise TypeError("unsupported operand")
        self.keys += [r.key_time for r in readings]

    def close(self) -> None:
        pass


def test_a_sink_failing_every_write_the_same_way_is_taken_for_down(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """Not per reading: after SYSTEMATIC_AFTER single writes fail alike, the sink is marked
    unavailable and the rest spooled (not all quarantined); fixed, it gets every one of them."""
    sink = BrokenSink()
    worker = SinkWorker(sink, tmp_path / "outbox.db", retry_min=2, retry_max=2)
    caplog.set_level(logging.INFO, logger="ravend.sinks")
    sent = demands(3 * SYSTEMATIC_AFTER)
    worker.submit(sent)
    worker.start()
    assert wait_for(lambda: not worker.stats.up
                      and len(worker.outbox) == len(sent) - SYSTEMATIC_AFTER)
    assert worker.stats.rejected == SYSTEMATIC_AFTER
    assert worker.alive()
    assert "taken for a fault of the sink" in caplog.text
    sink.fixed = True  # before the retry, 2 s after it went down
    worker.submit(demands(1, len(sent)))
    assert wait_for(lambda: worker.stats.stored == len(sent) - SYSTEMATIC_AFTER + 1)
    worker.stop()
    assert sink.keys == [r.key_time for r in [*sent[SYSTEMATIC_AFTER:], demand(len(sent))]]


def test_a_reading_a_trigger_refuses_is_rejected_not_retried_for_ever(tmp_path: Path) -> None:
    """An operator's trigger on the store refuses one value (RAISE): that reading is rejected,
    the others of its batch and the later ones are stored; the sink never counts as down."""
    worker, db = make_worker(tmp_path)
    worker.sink.open()
    worker.sink._conn.execute(
        "CREATE TRIGGER refuse_1003 BEFORE INSERT ON readings WHEN NEW.raw = 1003"
        " BEGIN SELECT RAISE(ABORT, 'not this one'); END")
    worker.sink.close()
    worker.submit(demands(6))
    worker.start()
    assert wait_for(lambda: worker.stats.stored == 5)
    assert worker.stats.up and not len(worker.outbox)
    worker.stop()
    assert stored_keys(db) == [r.key_time for r in demands(6) if r.raw != 1003]
    rows = Quarantine(tmp_path / "rejected.db", readonly=True).rows()
    assert [r["key_time"] for r in rows] == [demand(3).key_time]
    assert "not this one" in rows[0]["reason"]


class StateChokingSink(BrokenSink):
    """Takes readings; chokes (an unexpected error) on one kind of device state."""

    def __init__(self) -> None:
        super().__init__()
        self.fixed = True
        self.tags: list[str] = []

    def write(self, readings, states) -> None:
        if any(s.tag == "MeterInfo" for s in states):
            raise KeyError("body")
        super().write(readings, states)
        self.tags += [s.tag for s in states]


def test_a_device_state_the_sink_chokes_on_is_logged_not_fatal(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    sink = StateChokingSink()
    worker = SinkWorker(sink, tmp_path / "outbox.db", retry_min=0.05, retry_max=0.1)
    caplog.set_level(logging.INFO, logger="ravend.sinks")
    worker.submit(demands(2), [state("MeterInfo")])
    worker.submit(demands(2, 2), [state("DeviceInfo")])
    worker.start()
    assert wait_for(lambda: worker.stats.stored == 4 and sink.tags == ["DeviceInfo"])
    assert worker.alive() and worker.stats.up
    worker.stop()
    assert sink.keys == [r.key_time for r in demands(4)]
    assert worker.stats.rejected == 0  # a state is the latest copy, not a reading
    assert "device state not stored: KeyError" in caplog.text


def test_a_failed_ack_during_replay_neither_counts_nor_lists_a_rejection_twice(
        tmp_path: Path) -> None:
    """A spooled batch with one bad reading replays while acknowledging fails (a full disk,
    twice): each replay sorts the batch out again, but only the one whose ack succeeded counts,
    so stored + rejected = sent and rejected.db holds one row for the bad reading."""
    bad = demand(1, raw=TOO_WIDE)
    sent = [demand(0), bad, demand(2)]
    box = Outbox(tmp_path / "outbox-sqlite.db")
    box.append(sent, [])
    box.close()
    worker, db = make_worker(tmp_path)
    failures = [2]
    ack = worker.outbox.ack

    def full_disk_twice(batches):
        if failures[0]:
            failures[0] -= 1
            raise OutboxError("cannot acknowledge: database or disk is full")
        return ack(batches)

    worker.outbox.ack = full_disk_twice
    worker.start()
    assert wait_for(lambda: not failures[0] and not len(worker.outbox) and worker.stats.up)
    worker.stop()
    assert stored_keys(db) == [demand(0).key_time, demand(2).key_time]
    assert (worker.stats.stored, worker.stats.rejected) == (2, 1)
    assert Quarantine(tmp_path / "rejected.db", readonly=True).count() == 1


@pytest.mark.parametrize("content", [b"", b"garbage\n"], ids=["empty", "not-sqlite"])
def test_ravenctl_rejected_on_an_empty_or_damaged_file_says_one_line(
        tmp_path: Path, content: bytes) -> None:
    (tmp_path / "rejected.db").write_bytes(content)
    listed = ravenctl("rejected", "--config", "/nonexistent", "--state-dir", str(tmp_path))
    assert "Traceback" not in listed.stderr, listed.stderr
    if not content:  # created, the table never made: nothing rejected
        assert listed.returncode == 0 and listed.stdout.strip() == "no rejected readings"
    else:
        assert listed.returncode != 0
        assert len(listed.stderr.strip().splitlines()) == 1
        assert "rejected.db" in listed.stderr and "not a database" in listed.stderr


def test_a_damaged_rejected_db_is_moved_aside_and_rejections_are_listed_again(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "rejected.db"
    path.write_bytes(b"garbage\n" * 100)
    caplog.set_level(logging.INFO, logger="ravend.sinks")
    box = Quarantine(path)
    box.add("sqlite", demand(1), "bad")
    box.add("sqlite", demand(2), "bad")
    box.close()
    assert [r["key_time"] for r in Quarantine(path, readonly=True).rows()] == [
        demand(1).key_time, demand(2).key_time]
    moved_aside(path, b"garbage", caplog)


def test_rejected_db_keeps_the_newest_rows_and_counts_what_it_deleted(tmp_path: Path) -> None:
    box = Quarantine(tmp_path / "rejected.db")
    box.max_rows = 5
    for r in demands(8):
        box.add("sqlite", r, "bad")
    assert [row["key_time"] for row in box.rows()] == [r.key_time for r in demands(5, 3)]
    assert box.dropped == 3
    box.close()
