"""Sink worker and outbox: spool while the store is unavailable, replay in order, lose nothing.

The unavailable store is real: another connection holds SQLite's exclusive lock, as a long
`ravenctl` purge or a backup tool would, and the worker must spool to its outbox on disk.
"""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path

from ravend.sinks.outbox import Outbox
from ravend.sinks.sqlite import SqliteSink
from ravend.sinks.worker import SinkWorker
from readings import demand, demands


def stored_keys(path: Path) -> list[int]:
    with sqlite3.connect(path) as conn:
        return [r[0] for r in conn.execute("SELECT key_time FROM readings ORDER BY id")]


def wait_until(predicate, timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.02)
    return predicate()


def make_worker(tmp_path: Path, **kw) -> tuple[SinkWorker, Path]:
    db = tmp_path / "ravend.db"
    worker = SinkWorker(SqliteSink(db, busy_timeout=0.05), tmp_path / "outbox-sqlite.db",
                        retry_min=0.05, retry_max=0.2, **kw)
    return worker, db


def test_readings_are_committed_promptly_in_order(tmp_path: Path) -> None:
    worker, db = make_worker(tmp_path)
    worker.start()
    for r in demands(300):
        worker.submit([r])
    assert wait_until(lambda: worker.stats.stored == 300)
    worker.stop()
    assert stored_keys(db) == [r.key_time for r in demands(300)]
    assert worker.stats.stored_by_kind == {"demand": 300}


def test_locked_store_spools_then_replays_everything_once_in_order(tmp_path: Path) -> None:
    worker, db = make_worker(tmp_path)
    worker.start()
    worker.submit(demands(10))
    assert wait_until(lambda: worker.stats.stored == 10)
    locker = sqlite3.connect(db, isolation_level=None)
    locker.execute("BEGIN EXCLUSIVE")
    for r in demands(200, start=10):
        worker.submit([r])
    assert wait_until(lambda: worker.stats.spooled >= 1 and not worker.stats.up)
    assert wait_until(lambda: len(worker.outbox) + worker.stats.stored >= 200)
    locker.execute("ROLLBACK")
    locker.close()
    assert wait_until(lambda: worker.stats.stored == 210 and worker.stats.up)
    assert len(worker.outbox) == 0
    worker.stop()
    assert stored_keys(db) == [r.key_time for r in demands(210)]


def test_stop_while_unavailable_keeps_readings_in_the_outbox(tmp_path: Path) -> None:
    worker, db = make_worker(tmp_path)
    worker.start()
    worker.submit(demands(1))
    assert wait_until(lambda: worker.stats.stored == 1)
    locker = sqlite3.connect(db, isolation_level=None)
    locker.execute("BEGIN EXCLUSIVE")
    worker.submit(demands(50, start=1))
    worker.stop()
    locker.execute("ROLLBACK")
    locker.close()
    assert len(stored_keys(db)) == 1
    # A new service start replays what the last one spooled.
    again, _ = make_worker(tmp_path)
    assert len(again.outbox) == 50
    again.start()
    assert wait_until(lambda: again.stats.stored == 50)
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
    assert wait_until(lambda: worker.stats.stored == 250)
    worker.stop()
    assert sorted(stored_keys(db)) == [r.key_time for r in demands(250)]


def test_outbox_cap_drops_oldest_and_counts(tmp_path: Path) -> None:
    box = Outbox(tmp_path / "o.db", max_mb=0.0)  # the floor: DROP_CHUNK rows
    for i in range(0, 1500, 10):
        box.append([demand(j) for j in range(i, i + 10)], [])
    assert len(box) <= box.max_rows
    assert box.dropped == 1500 - len(box)
    kept = [r.key_time for b in box.peek(10_000) for r in b.readings]
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
