"""A sink worker on a SQLite store, and what it stored or spooled, for the worker's tests and
the outbox and quarantine tests built on them."""

from __future__ import annotations

import logging
import sqlite3
from pathlib import Path

import pytest

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


def aside(path: Path) -> list[Path]:
    """Where damaged copies of the database file ``path`` were moved aside."""
    return sorted(path.parent.glob(path.name + ".corrupt-*"))


def moved_aside(path: Path, old: bytes, caplog: pytest.LogCaptureFixture) -> tuple[Path, str]:
    """``path`` was moved aside once, its old content (starting ``old``) kept, and one ERROR
    line said so naming the copy: (the copy, that line)."""
    moved = aside(path)
    assert len(moved) == 1 and moved[0].read_bytes().startswith(old)
    lines = [r for r in caplog.records if "damaged" in r.getMessage()]
    assert len(lines) == 1 and lines[0].levelno == logging.ERROR
    assert str(moved[0]) in lines[0].getMessage()
    return moved[0], lines[0].getMessage()


def spooled_keys(box: Outbox) -> list[int]:
    """The key times in the outbox, in the order it would replay them."""
    return [r.key_time for b in box.peek(1_000_000) for r in b.readings]


def state(tag: str) -> StateItem:
    return StateItem(DEVICE, "", tag, 1.0, {"tag": tag})
