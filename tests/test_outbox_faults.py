"""The outbox file under faults: damaged at open or while running, a full disk at ack.

A damaged outbox is moved aside (kept) with one error line naming both paths and a fresh one
takes its place; an acknowledgement that fails for lack of space leaves the sink
"unavailable" until space returns, then everything is stored once.
"""

from __future__ import annotations

import logging
import os
import re
from pathlib import Path

import pytest

from ravend.config import MqttConfig
from ravend.sinks import outbox as outbox_module
from ravend.sinks.mqtt import MqttSink
from ravend.sinks.mqtt_payload import parse_reading
from ravend.sinks.outbox import Outbox
from ravend.sinks.sqlite import SqliteSink
from ravend.sinks.worker import SinkWorker
from tests.helpers.disk import fill
from tests.helpers.mqtt import Subscriber, reading_messages
from tests.helpers.readings import demands
from tests.helpers.wait import wait_for
from tests.helpers.worker import StoreLock, aside, moved_aside, spooled_keys, stored_keys


def test_an_outbox_that_is_not_a_database_is_moved_aside_and_replaced(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "outbox-sqlite.db"
    path.write_bytes(b"this is not an SQLite file\n" * 200)
    caplog.set_level(logging.INFO, logger="ravend.sinks")
    box = Outbox(path)
    box.append(demands(3), [])
    assert spooled_keys(box) == [r.key_time for r in demands(3)]
    box.close()
    _, said = moved_aside(path, b"this is not an SQLite file", caplog)
    assert str(path) in said


def truncated_outbox(path: Path, rows: int) -> None:
    box = Outbox(path)
    for i in range(rows):
        box.append(demands(1, i), [])
    box.close()  # checkpointed: everything in the main file
    size = path.stat().st_size
    with open(path, "r+b") as f:
        f.truncate(size // 2)


def test_a_truncated_outbox_is_moved_aside_and_the_worker_stores(tmp_path: Path) -> None:
    path = tmp_path / "outbox-sqlite.db"
    truncated_outbox(path, 3000)
    worker = SinkWorker(SqliteSink(tmp_path / "ravend.db"), path, retry_min=0.05,
                        retry_max=0.2)
    worker.start()
    worker.submit(demands(5, 10_000))
    assert wait_for(lambda: worker.stats.stored == 5)
    worker.stop()
    assert len(aside(path)) == 1
    assert stored_keys(tmp_path / "ravend.db") == [r.key_time for r in demands(5, 10_000)]


def test_an_outbox_damaged_while_open_is_replaced_at_the_next_read(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "outbox-sqlite.db"
    box = Outbox(path)
    for i in range(3000):
        box.append(demands(1, i), [])
    box.close()
    box = Outbox(path)
    assert len(box) == 3000
    with open(path, "r+b") as f:  # a bad sector under the running service
        f.seek(8192)
        f.write(os.urandom(path.stat().st_size - 8192))
    caplog.set_level(logging.INFO, logger="ravend.sinks")
    assert box.peek(1_000_000) == []
    assert len(box) == 0
    box.append(demands(2, 5000), [])
    assert spooled_keys(box) == [r.key_time for r in demands(2, 5000)]
    box.close()
    assert len(aside(path)) == 1
    assert len([r for r in caplog.records if "is damaged" in r.getMessage()]) == 1


def test_a_full_disk_at_acknowledgement_does_not_kill_the_worker(
        tmp_path: Path, small_disk: Path,
        caplog: pytest.LogCaptureFixture) -> None:
    """The store (elsewhere) is locked, so readings spool to the outbox on the small disk;
    the disk fills; the store is back, the replay's write succeeds and its ack cannot be
    written. The worker lives on; once space returns every reading is stored, once."""
    db = tmp_path / "ravend.db"
    worker = SinkWorker(SqliteSink(db, busy_timeout=0.05), small_disk / "outbox-sqlite.db",
                        retry_min=0.05, retry_max=0.2)
    caplog.set_level(logging.INFO, logger="ravend.sinks")
    worker.start()
    worker.submit(demands(1))
    assert wait_for(lambda: worker.stats.stored == 1)
    locker = StoreLock(db)
    sent = demands(300, 1)
    for r in sent:
        worker.submit([r])
    assert wait_for(lambda: len(worker.outbox) == 300)
    filler = fill(small_disk)
    locker.release()
    assert wait_for(lambda: len(stored_keys(db)) == 301), caplog.text  # the replay wrote
    filler.unlink()  # space returns
    assert wait_for(lambda: not len(worker.outbox) and worker.stats.up, 20), caplog.text
    assert worker.alive()
    worker.stop()
    assert "unavailable: outbox: cannot acknowledge" in caplog.text
    assert stored_keys(db) == [r.key_time for r in demands(301)]
    assert worker.stats.stored == 301


def test_the_mqtt_worker_survives_a_full_disk_at_acknowledgement(
        tmp_path: Path, small_disk: Path, make_mosquitto) -> None:
    """The broker (real Mosquitto) is back, the replayed readings are
    published, the outbox cannot forget them (disk full). The worker lives on; once space
    returns the outbox empties and the subscriber has every reading."""
    broker = make_mosquitto()
    sub = Subscriber(broker.host, broker.port, ["ravend/+/+"]).start()
    sink = MqttSink(MqttConfig(enabled=True, host=broker.host, port=broker.port,
                               client_id="full-disk", publish_timeout=2.0))
    worker = SinkWorker(sink, small_disk / "outbox-mqtt.db", retry_min=0.05, retry_max=0.3,
                        max_delay=0.05)
    worker.start()
    try:
        worker.submit(demands(1))
        assert wait_for(lambda: worker.stats.stored == 1)
        broker.kill()
        for r in demands(200, 1):
            worker.submit([r])
        assert wait_for(lambda: len(worker.outbox) == 200)
        filler = fill(small_disk)
        broker.start()
        want = {r.key for r in demands(201)}

        def published() -> set[tuple]:
            return {parse_reading(m.payload).key for m in reading_messages(sub)}

        assert sub.wait_for(lambda: published() >= want, 20)  # replayed, not acknowledged
        filler.unlink()
        assert wait_for(lambda: not len(worker.outbox) and worker.stats.up, 20), worker
        assert worker.alive()
    finally:
        worker.stop()
        sub.stop()
    assert worker.stats.stored == 201


def test_an_outbox_damaged_while_open_gives_back_what_is_readable_and_counts_the_rest(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """A bad sector in the middle of a spool: the rows before and after it are replayed, the
    ones under it are counted as dropped (the stop line says so), and the one line says both
    numbers. stored + dropped = spooled."""
    from ravend.service import stop_account

    path = tmp_path / "outbox-sqlite.db"
    db = tmp_path / "ravend.db"
    worker = SinkWorker(SqliteSink(db), path, retry_min=0.05, retry_max=0.2)
    sent = demands(3000)
    for i in range(0, 3000, 10):
        worker.outbox.append(sent[i:i + 10], [])
    worker.outbox._conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    size = path.stat().st_size
    with open(path, "r+b") as f:  # a bad sector under the running service
        f.seek(size // 2)
        f.write(os.urandom(size // 4))
    caplog.set_level(logging.INFO, logger="ravend.sinks")
    worker.start()
    assert wait_for(lambda: not len(worker.outbox) and worker.stats.up), caplog.text
    worker.stop()
    stored = stored_keys(db)
    assert 0 < len(stored) < 3000
    assert stored[0] == sent[0].key_time  # the head was readable
    assert stored[-1] == sent[-1].key_time  # and the tail, read from the other end
    assert worker.stats.stored == len(stored)
    assert worker.stats.stored + worker.stats.dropped == 3000
    assert f"({worker.stats.dropped} dropped)" in stop_account(worker)
    lines = [r.getMessage() for r in caplog.records if "is damaged" in r.getMessage()]
    assert len(lines) == 1
    kept = int(re.search(r"started with the (\d+) readings still readable", lines[0])[1])
    assert 0 < kept < len(stored)  # the tail too, and what was replayed before it showed
    assert f"{worker.stats.dropped} could not be read" in lines[0]


def test_an_outbox_that_cannot_be_opened_leaves_the_sink_storing_and_is_tried_again(
        tmp_path: Path, caplog: pytest.LogCaptureFixture,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """A directory where the outbox should be (in life also: a file root owns): one line naming
    it, the reason and the fix; the sink stores all the same; once fixed, the outbox is used."""
    monkeypatch.setattr(outbox_module, "REOPEN_EVERY_S", 0.05)
    path = tmp_path / "outbox-sqlite.db"
    path.mkdir()
    db = tmp_path / "ravend.db"
    caplog.set_level(logging.INFO, logger="ravend.sinks")
    worker = SinkWorker(SqliteSink(db, busy_timeout=0.05), path, retry_min=0.05, retry_max=0.2)
    lines = [r for r in caplog.records if "cannot be opened" in r.getMessage()]
    assert len(lines) == 1 and lines[0].levelno == logging.ERROR
    assert str(path) in lines[0].getMessage() and "ravend" in lines[0].getMessage()
    worker.start()
    worker.submit(demands(3))
    assert wait_for(lambda: worker.stats.stored == 3), caplog.text
    path.rmdir()  # the operator fixes it
    locker = StoreLock(db)  # now the store is busy: the outbox takes the readings
    worker.submit(demands(2, 3))
    assert wait_for(lambda: len(worker.outbox) == 2), caplog.text
    locker.release()
    assert wait_for(lambda: worker.stats.stored == 5 and not len(worker.outbox)), caplog.text
    worker.stop()
    assert stored_keys(db) == [r.key_time for r in demands(5)]
    assert worker.stats.dropped == 0
