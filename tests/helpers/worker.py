"""A sink worker on a SQLite store, and what it stored or spooled, for the worker's tests and
the outbox and quarantine tests built on them."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from ravend.sinks.base import StateItem
from ravend.sinks.outbox import Outbox
from ravend.sinks.sqlite import SqliteSink
from ravend.sinks.worker import SinkWorker
from tests.helpers.readings import DEVICE


def stored_keys(path: Path) -> list[int]:
    with sqlite3.connect(path) as conn:
        return [r[0] for r in conn.execute("SELECT key_time FROM readings ORDER BY id")]


def make_worker(tmp_path: Path, **kw) -> tuple[SinkWorker, Path]:
    db = tmp_path / "ravend.db"
    worker = SinkWorker(SqliteSink(db, busy_timeout=0.05), tmp_path / "outbox-sqlite.db",
                        retry_min=0.05, retry_max=0.2, **kw)
    return worker, db


class StoreLock:
    """Another connection holding SQLite's exclusive lock on a store, as a long purge or a backup
    tool would: every write to the store waits for it, then fails, until ``release``."""

    def __init__(self, db: Path) -> None:
        self._conn = sqlite3.connect(db, isolation_level=None)
        self._conn.execute("BEGIN EXCLUSIVE")

    def release(self) -> None:
        """Roll back and disconnect: the writes waiting for the lock go on."""
        self._conn.execute("ROLLBACK")
        self._conn.close()


def spooled_keys(box: Outbox) -> list[int]:
    """The key times in the outbox, in the order it would replay them."""
    return [r.key_time for b in box.peek(1_000_000) for r in b.readings]


def state(tag: str) -> StateItem:
    return StateItem(DEVICE, "", tag, 1.0, {"tag": tag})
