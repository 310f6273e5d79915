"""Sink worker and outbox: spool while the store is unavailable, replay in order, lose nothing.

The unavailable store is real: another connection holds SQLite's exclusive lock, as a long
`ravenctl` purge or a backup tool would, and the worker must spool to its outbox on disk.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
import time
from pathlib import Path

import pytest

from ravend.sinks.base import ReadingRejected, Sink, SinkUnavailable
from ravend.sinks.outbox import Outbox, OutboxError
from ravend.sinks.sqlite import SqliteSink
from ravend.sinks.worker import SinkWorker
from tests.helpers.readings import demand, demands
from tests.helpers.wait import wait_for
from tests.helpers.worker import StoreLock, make_worker, spooled_keys, state, stored_keys


def spill_past_a_waiting_write(tmp_path: Path, busy_timeout: float
                               ) -> tuple[SinkWorker, Path, StoreLock]:
    """Reading 0 stored; reading 1 taken by the worker, its write waiting for a lock another
    connection holds (returned: roll it back to let the write go on); readings 2-61 submitted
    meanwhile, 20 queued behind it and the rest spilled to the outbox (queue_size 20)."""
    db = tmp_path / "ravend.db"
    worker = SinkWorker(SqliteSink(db, busy_timeout=busy_timeout), tmp_path / "outbox.db",
                        queue_size=20, retry_min=0.05, retry_max=0.2)
    worker.start()
    worker.submit([demand(0)])
    assert wait_for(lambda: worker.stats.stored == 1)
    locker = StoreLock(db)
    worker.submit([demand(1)])  # taken at once: its write waits for the lock
    time.sleep(0.2)
    for r in demands(60, 2):
        worker.submit([r])
    assert worker.stats.spooled >= 40
    return worker, db, locker


def worker_behind_a_lock(tmp_path: Path, stored: int) -> tuple[SinkWorker, Path, StoreLock]:
    """A started worker that has stored readings 0 to ``stored`` - 1, its store then locked."""
    worker, db = make_worker(tmp_path)
    worker.start()
    worker.submit(demands(stored))
    assert wait_for(lambda: worker.stats.stored == stored)
    return worker, db, StoreLock(db)


def test_readings_are_committed_promptly_in_order(tmp_path: Path) -> None:
    worker, db = make_worker(tmp_path)
    worker.start()
    for r in demands(300):
        worker.submit([r])
    assert wait_for(lambda: worker.stats.stored == 300)
    worker.stop()
    assert stored_keys(db) == [r.key_time for r in demands(300)]
    assert worker.stats.stored_by_kind == {"demand": 300}


def test_locked_store_spools_then_replays_everything_once_in_order(tmp_path: Path) -> None:
    worker, db, locker = worker_behind_a_lock(tmp_path, 10)
    for r in demands(200, start=10):
        worker.submit([r])
    assert wait_for(lambda: worker.stats.spooled >= 1 and not worker.stats.up)
    assert wait_for(lambda: len(worker.outbox) + worker.stats.stored >= 200)
    locker.release()
    assert wait_for(lambda: worker.stats.stored == 210 and worker.stats.up)
    assert len(worker.outbox) == 0
    worker.stop()
    assert stored_keys(db) == [r.key_time for r in demands(210)]


def test_stop_while_unavailable_keeps_readings_in_the_outbox(tmp_path: Path) -> None:
    worker, db, locker = worker_behind_a_lock(tmp_path, 1)
    worker.submit(demands(50, start=1))
    worker.stop()
    locker.release()
    assert len(stored_keys(db)) == 1
    # A new service start replays what the last one spooled.
    again, _ = make_worker(tmp_path)
    assert len(again.outbox) == 50
    again.start()
    assert wait_for(lambda: again.stats.stored == 50)
    again.stop()
    assert stored_keys(db) == [r.key_time for r in demands(51)]


def test_full_queue_spills_to_disk_instead_of_blocking(tmp_path: Path) -> None:
    worker, db = make_worker(tmp_path, queue_size=100)
    # Not started: nothing drains the queue, so submit must spill rather than block or drop.
    started = time.monotonic()
    for r in demands(250):
        worker.submit([r])
    assert time.monotonic() - started < 5
    assert len(worker.outbox) == 150
    worker.start()
    assert wait_for(lambda: worker.stats.stored == 250)
    worker.stop()
    # In order: the 100 queued ones were older than the 150 that spilled past them.
    assert stored_keys(db) == [r.key_time for r in demands(250)]


def test_a_briefly_full_queue_slows_the_reader_instead_of_spilling(tmp_path: Path,
                                                                    monkeypatch) -> None:
    """A sink only a moment behind (a burst): submit waits for room, nothing goes to disk."""

    from ravend.sinks import worker as worker_module

    monkeypatch.setattr(worker_module, "SUBMIT_WAIT_S", 30.0)  # room comes long before this
    worker, db = make_worker(tmp_path, queue_size=100)
    for r in demands(100):
        worker.submit([r])
    threading.Timer(0.05, worker.start).start()  # the worker drains from now on
    worker.submit([demand(100)])
    assert len(worker.outbox) == 0 and worker.stats.spooled == 0
    assert wait_for(lambda: worker.stats.stored == 101)
    worker.stop()
    assert stored_keys(db) == [r.key_time for r in demands(101)]


def test_a_stuck_sink_costs_the_reader_one_wait_then_it_spills(tmp_path: Path,
                                                               monkeypatch) -> None:
    from ravend.sinks import worker as worker_module

    monkeypatch.setattr(worker_module, "SUBMIT_WAIT_S", 0.5)
    worker, db = make_worker(tmp_path, queue_size=100)  # not started: nothing drains
    for r in demands(100):
        worker.submit([r])
    started = time.monotonic()
    for r in demands(40, 100):
        worker.submit([r])
    assert time.monotonic() - started < 10  # one wait of 0.5 s, not forty (20 s)
    assert len(worker.outbox) == 40
    worker.start()
    assert wait_for(lambda: worker.stats.stored == 140)
    worker.stop()
    assert stored_keys(db) == [r.key_time for r in demands(140)]


def test_a_write_that_fails_after_newer_readings_spilled_past_it_keeps_its_place(
        tmp_path: Path) -> None:
    """The stuck write's batch is the oldest of all: it goes back ahead of the queue and of
    what spilled meanwhile (stored in arrival order it came last: the MQTT retained state
    would then have been an old reading)."""
    worker, db, locker = spill_past_a_waiting_write(tmp_path, busy_timeout=1.0)
    assert worker.stats.up  # spilled while the write waited, which then fails
    assert wait_for(lambda: not worker.stats.up)
    locker.release()
    assert wait_for(lambda: worker.stats.stored == 62 and not len(worker.outbox))
    worker.stop()
    assert stored_keys(db) == [r.key_time for r in demands(62)]


def test_outbox_replays_by_ordinal_not_by_arrival(tmp_path: Path) -> None:
    box = Outbox(tmp_path / "o.db")
    box.append_many([(5, demands(2, 5), []), (9, demands(1, 9), [])])
    box.append(demands(3, 2), [], ordinal=2)  # arrived last, older than both
    box.append(demands(1, 10), [])  # no ordinal: after everything spooled
    assert spooled_keys(box) == [
        r.key_time for r in [*demands(3, 2), *demands(2, 5), *demands(1, 9), *demands(1, 10)]]
    box.close()
    assert Outbox(tmp_path / "o.db").next_ordinal == 11  # a new process numbers on from here


def test_an_outbox_spooled_by_an_older_version_replays_in_arrival_order(tmp_path: Path) -> None:
    """Upgrade: an outbox file without ordinals (ravend before they existed) keeps its rows."""
    old = Outbox(tmp_path / "o.db")
    old.append(demands(4), [])
    old.append(demands(3, 4), [])
    old.close()
    with sqlite3.connect(tmp_path / "o.db") as conn:  # back to the old layout, rows kept
        conn.execute("DROP INDEX outbox_ord")
        conn.execute("ALTER TABLE outbox DROP COLUMN ord")
    box = Outbox(tmp_path / "o.db")
    assert len(box) == 7
    box.append(demands(2, 7), [])
    assert spooled_keys(box) == [
        r.key_time for r in demands(9)]


def test_a_slow_write_that_succeeds_does_not_let_spilled_readings_overtake_queued_ones(
        tmp_path: Path) -> None:
    """Readings spilled past the queue while one write waited: the queued ones, older, are
    replayed first (they join the outbox before each replayed batch)."""
    worker, db, locker = spill_past_a_waiting_write(tmp_path, busy_timeout=10.0)
    locker.release()  # the waiting write goes on, and succeeds
    assert wait_for(lambda: worker.stats.stored == 62 and not len(worker.outbox))
    worker.stop()
    assert worker.stats.up
    assert stored_keys(db) == [r.key_time for r in demands(62)]


def test_a_spill_larger_than_a_batch_is_stored_in_order_with_the_default_sizes(
        tmp_path: Path) -> None:
    worker, db = make_worker(tmp_path)  # queue 2,000 entries, batches of 500
    for r in demands(2300):  # not started: 2,000 queue, 300 spill
        worker.submit([r])
    assert len(worker.outbox) == 300
    worker.start()
    assert wait_for(lambda: worker.stats.stored == 2300)
    worker.stop()
    assert stored_keys(db) == [r.key_time for r in demands(2300)]


class ScriptedSink(Sink):
    """A sink that does what the test says: rejects some keys, goes down on a given write."""

    name = "scripted"

    def __init__(self, reject: set[int] = frozenset(), down_at_write: int = -1) -> None:
        self.reject = reject
        self.down_at_write = down_at_write
        self.down = False
        self.writes = 0
        self.readings: list[int] = []
        self.states: list[str] = []

    def open(self) -> None:
        if self.down:
            raise SinkUnavailable("scripted: down")

    def write(self, readings, states) -> None:
        self.writes += 1
        if self.writes == self.down_at_write:
            self.down = True
        if self.down:
            raise SinkUnavailable("scripted: down")
        if any(r.key_time in self.reject for r in readings):
            raise ReadingRejected("scripted: no")
        self.readings += [r.key_time for r in readings]
        self.states += [s.tag for s in states]

    def close(self) -> None:
        pass


def test_a_sink_that_goes_down_while_bad_readings_are_sorted_out_loses_nothing(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """Write 1 (the batch) is rejected; write 2 (its first reading alone) is refused for good;
    write 3 (the second) finds the sink down. The rest, the device states with it, go back to
    the outbox untried; the sink is not taken for recovered; all arrives when it is back."""
    sink = ScriptedSink(reject={demand(0).key_time}, down_at_write=3)
    worker = SinkWorker(sink, tmp_path / "outbox.db", retry_min=0.05, retry_max=0.1)
    worker.submit(demands(3), [state("DeviceInfo")])
    worker.submit([demand(3)], [state("ConnectionStatus")])
    caplog.set_level(logging.INFO, logger="ravend.sinks")
    worker.start()
    # (stats.up turns False when write 3 fails, a moment before the rest is spooled)
    assert wait_for(lambda: sink.writes >= 3 and len(worker.outbox) == 5)  # 1-3, 2 states
    assert not worker.stats.up
    assert "available again" not in caplog.text
    writes = sink.writes
    time.sleep(0.3)  # retries keep failing, at the backoff's pace: a handful, not a spin
    assert sink.writes - writes < 20
    sink.down = False
    assert wait_for(lambda: not len(worker.outbox) and worker.stats.up)
    worker.stop()
    assert sink.readings == [r.key_time for r in demands(3, 1)]
    assert sink.states == ["DeviceInfo", "ConnectionStatus"]
    assert worker.stats.rejected == 1


def test_an_unwritable_outbox_and_a_sink_down_wait_in_memory_without_spinning(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """Readings wait in memory; the worker retries the sink at its backoff (it used to take
    them back at once, 62,000 spool attempts a second, and never retried the sink)."""
    caplog.set_level(logging.INFO, logger="ravend.sinks")
    sink = ScriptedSink()
    worker = SinkWorker(sink, tmp_path / "outbox.db", retry_min=0.05, retry_max=0.2)
    worker.start()
    worker.submit([demand(0)])
    assert wait_for(lambda: sink.readings == [demand(0).key_time])
    worker.outbox._conn.close()  # every spool now fails, as on a full disk
    sink.down = True
    attempts = []
    append_many = worker.outbox.append_many

    def counted(batches):
        attempts.append(1)
        return append_many(batches)

    worker.outbox.append_many = counted
    for r in demands(5, 1):
        worker.submit([r])
    assert wait_for(lambda: not worker.stats.up)
    time.sleep(1.0)
    assert len(attempts) < 50, len(attempts)  # at the backoff's pace (0.2 s), not a spin
    assert "outbox" in caplog.text and "kept in memory" in caplog.text
    sink.down = False
    assert wait_for(lambda: len(sink.readings) == 6), sink.readings
    worker.stop()
    assert sorted(sink.readings) == [r.key_time for r in demands(6)]
    assert worker.stats.dropped == 0


def test_held_in_memory_the_oldest_is_dropped_even_if_it_comes_back_last(tmp_path: Path) -> None:
    worker, _ = make_worker(tmp_path, queue_size=3)  # not started
    for r in demands(3, 1):
        worker.submit([r])  # ordinals 1, 2, 3
    worker._hold_in_memory([(0, [demand(0)], [])])  # a failed write, older than all
    assert [item[0] for item in worker._take_queued()] == [1, 2, 3]
    assert worker.stats.dropped == 1
    for r in demands(3, 1):
        worker.submit([r])  # ordinals 4, 5, 6
    worker._hold_in_memory([(7, [demand(7)], [])])
    assert [item[0] for item in worker._take_queued()] == [5, 6, 7]
    assert worker.stats.dropped == 2


def test_outbox_cap_drops_the_lowest_ordinals_even_when_they_arrive_last(
        tmp_path: Path) -> None:
    box = Outbox(tmp_path / "o.db", max_mb=0.0)  # DROP_CHUNK (1,000) rows
    for i in range(100):
        box.append(demands(10, 100 + 10 * i), [], ordinal=100 + i)
    assert len(box) == 1000 and box.dropped == 0
    # Rows go in chunks of ten: the late batch, the oldest, is the first of them.
    assert box.append(demands(10, 0), [], ordinal=1) == 100
    kept = spooled_keys(box)
    assert kept == [r.key_time for r in demands(910, 190)]


def test_outbox_that_cannot_insert_drops_nothing(tmp_path: Path) -> None:
    """The drops that would make room and the insert are one transaction."""
    box = Outbox(tmp_path / "o.db", max_mb=0.0)
    for i in range(100):
        box.append(demands(10, 10 * i), [], ordinal=i + 1)
    box._conn.execute("CREATE TRIGGER no_room BEFORE INSERT ON outbox WHEN NEW.ord = 999"
                      " BEGIN SELECT RAISE(ABORT, 'database or disk is full'); END")
    with pytest.raises(OutboxError, match="disk is full"):
        box.append(demands(10, 5000), [], ordinal=999)
    assert len(box) == 1000 and box.dropped == 0
    assert spooled_keys(box) == [
        r.key_time for r in demands(1000)]
    box.close()
    assert len(Outbox(tmp_path / "o.db", max_mb=0.0)) == 1000


def test_an_outbox_upgrade_cut_short_is_finished_at_the_next_open(tmp_path: Path) -> None:
    old = Outbox(tmp_path / "o.db")
    old.append(demands(4), [])
    old.append(demands(3, 4), [])
    old.close()
    with sqlite3.connect(tmp_path / "o.db") as conn:  # the column added, not yet filled
        conn.execute("DROP INDEX outbox_ord")
        conn.execute("ALTER TABLE outbox DROP COLUMN ord")
        conn.execute("ALTER TABLE outbox ADD COLUMN ord INTEGER")
    box = Outbox(tmp_path / "o.db")
    assert box.next_ordinal == 3
    assert spooled_keys(box) == [
        r.key_time for r in demands(7)]


def test_stop_with_a_full_queue_and_no_worker_taking_spools_instead_of_hanging(
        tmp_path: Path) -> None:
    worker, db = make_worker(tmp_path, queue_size=100)  # its thread never runs
    for r in demands(100):
        worker.submit([r])
    started = time.monotonic()
    worker.stop(timeout=1.0)
    assert time.monotonic() - started < 5  # was: blocked for ever on the full queue
    assert len(worker.outbox) == 100
    again, _ = make_worker(tmp_path)  # the next start replays them
    again.start()
    assert wait_for(lambda: again.stats.stored == 100)
    again.stop()
    assert stored_keys(db) == [r.key_time for r in demands(100)]


def test_outbox_cap_drops_oldest_and_counts(tmp_path: Path) -> None:
    box = Outbox(tmp_path / "o.db", max_mb=0.0)  # the floor: DROP_CHUNK rows
    for i in range(0, 1500, 10):
        box.append([demand(j) for j in range(i, i + 10)], [])
    assert len(box) <= box.max_rows
    assert box.dropped == 1500 - len(box)
    kept = spooled_keys(box)
    assert kept == sorted(kept)
    assert kept[-1] == demand(1499).key_time  # the newest are kept


def test_outbox_survives_reopen(tmp_path: Path) -> None:
    box = Outbox(tmp_path / "o.db")
    box.append(demands(5), [])
    box.close()
    again = Outbox(tmp_path / "o.db")
    assert len(again) == 5
    batches = again.peek(100)
    assert [r for b in batches for r in b.readings] == demands(5)
    again.ack(batches)
    assert len(again) == 0


def test_outbox_ack_forgets_exactly_the_batches_acknowledged(tmp_path: Path) -> None:
    """Batches of every size, some dropped by the cap between peek and ack: the count stays
    exact and only the acknowledged batches go (the rest replay next, in order)."""
    box = Outbox(tmp_path / "outbox.db")
    start = 0
    for size in range(1, 31):
        box.append(demands(size, start), [])
        start += size
    assert len(box) == start == 465
    first = box.peek(100)
    assert [len(b.readings) for b in first] == list(range(1, 14))  # 91 readings, 13 batches
    # The cap's step drops the ten oldest batches, ten of those peeked: counted once, by it.
    assert box._drop_oldest_locked() == sum(range(1, 11))
    box.ack(first)
    assert len(box) == 465 - 91
    rest = box.peek(1000)
    assert [len(b.readings) for b in rest] == list(range(14, 31))
    assert rest[0].readings[0].key_time == demands(1, 91)[0].key_time
    box.ack(rest)
    assert len(box) == 0 and box.peek(10) == []
    box.close()


def test_stop_with_the_sink_down_and_the_outbox_unwritable_counts_what_memory_held(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """The readings held in memory die with the process: the stop line must say so (dropped),
    never report a clean stop with them gone uncounted."""
    from ravend.service import stop_account

    caplog.set_level(logging.INFO, logger="ravend.sinks")
    sink = ScriptedSink()
    sink.down = True
    worker = SinkWorker(sink, tmp_path / "outbox-scripted.db", retry_min=0.05, retry_max=0.2)
    worker.outbox._conn.close()  # every spool now fails, as on a full disk
    worker.start()
    for r in demands(5):
        worker.submit([r])
    assert wait_for(lambda: "kept in memory" in caplog.text)
    worker.stop()
    assert not worker.alive()
    assert worker.stats.stored == 0 and worker.stats.dropped == 5
    assert stop_account(worker) == "scripted=0 (5 dropped)"
    lines = [r for r in caplog.records if "held in memory" in r.getMessage()]
    assert len(lines) == 1 and lines[0].levelno == logging.ERROR
    assert "5 readings" in lines[0].getMessage()
