"""Where readings a store cannot take are kept, so that an operator can list them.

A reading whose write raises anything but "retry later" (a constraint, a value SQLite cannot
bind, a payload that cannot be built), or an outbox row that cannot even be decoded, is left out
of its sink, never allowed to stop it: it goes here, one row each, with the reason. One SQLite
file for the whole service (``<state_dir>/rejected.db``); each worker opens its own connection
and writes are tiny transactions, so the workers share it without waiting on each other for
long. ``ravenctl rejected`` reads it read-only. A reading counts as "listed as rejected" iff it
has a row here: stored + rejected = sent, per sink.

It is bounded: past MAX_ROWS the oldest rows are deleted (counted in ``dropped``, one warning
line per trim), so a sink that rejects everything cannot fill the disk with it. A file that is
damaged (not SQLite, bad pages) is moved aside (``rejected.db.corrupt-<time>``, kept) with one
error line, and a fresh one started; read-only, a file without the table is an empty list and
any other failure one QuarantineError (``ravenctl rejected`` prints it in one line).
"""

from __future__ import annotations

import contextlib
import json
import logging
import sqlite3
import threading
import time
from pathlib import Path
from typing import Any

from ravend.db.sqlite import readonly_uri
from ravend.protocol.model import Reading
from ravend.serialize import dumps, reading_to_dict
from ravend.sinks.outbox import is_corrupt

FILE_NAME = "rejected.db"

#: The newest rows kept; older ones are deleted (and counted) as new ones come.
MAX_ROWS = 100_000

log = logging.getLogger("ravend.sinks")

_SCHEMA = ("CREATE TABLE IF NOT EXISTS rejected (id INTEGER PRIMARY KEY AUTOINCREMENT,"
           " sink TEXT, meter_mac TEXT, kind TEXT, key_time INTEGER, reading TEXT, reason TEXT,"
           " rejected_at REAL)")


class QuarantineError(Exception):
    """The quarantine file itself cannot be written (disk full, unwritable directory)."""


class Quarantine:
    """Thread-safe; the connection is opened on first use (most runs never reject anything)."""

    def __init__(self, path: Path, *, readonly: bool = False) -> None:
        self.path = path
        self.readonly = readonly
        self._lock = threading.Lock()
        self._conn: sqlite3.Connection | None = None
        self.max_rows = MAX_ROWS
        self.dropped = 0  # old rows deleted to stay under max_rows

    def __repr__(self) -> str:
        return f"<Quarantine {self.path}>"

    def _connect(self) -> sqlite3.Connection:
        if self._conn is None:
            if self.readonly:
                conn = sqlite3.connect(readonly_uri(self.path), uri=True, timeout=5,
                                       check_same_thread=False)
            else:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                conn = sqlite3.connect(str(self.path), isolation_level=None, timeout=10,
                                       check_same_thread=False)
                conn.execute(_SCHEMA)
            self._conn = conn
        return self._conn

    def add(self, sink: str, reading: Reading | str, reason: str) -> None:
        """Keep one rejected reading. ``reading`` may be the raw text of an outbox entry that
        could not be decoded into one (its key columns are then NULL)."""
        row: tuple[str, str | None, str | None, int | None, str, str, float]
        if isinstance(reading, Reading):
            row = (sink, reading.meter_mac, reading.kind.value, reading.key_time,
                   dumps(reading_to_dict(reading)), reason, time.time())
        else:
            row = (sink, None, None, None, reading, reason, time.time())
        with self._lock:
            try:
                self._insert(row)
            except sqlite3.DatabaseError as exc:
                if not is_corrupt(exc):
                    raise QuarantineError(f"cannot write {self.path}: {exc}") from exc
                try:
                    self._replace_corrupt(exc)
                    self._insert(row)
                except (sqlite3.Error, OSError) as again:
                    raise QuarantineError(f"cannot write {self.path}: {again}") from again
            except (sqlite3.Error, OSError) as exc:
                raise QuarantineError(f"cannot write {self.path}: {exc}") from exc

    def _insert(self, row: tuple[Any, ...]) -> None:
        """One row, and the oldest beyond max_rows deleted (ids only grow: AUTOINCREMENT)."""
        conn = self._connect()
        new_id = conn.execute(
            "INSERT INTO rejected (sink, meter_mac, kind, key_time, reading, reason,"
            " rejected_at) VALUES (?, ?, ?, ?, ?, ?, ?)", row).lastrowid
        if new_id is not None and new_id > self.max_rows:
            gone = conn.execute("DELETE FROM rejected WHERE id <= ?",
                                (new_id - self.max_rows,)).rowcount
            if gone > 0:
                self.dropped += gone
                log.warning("%s holds the newest %d rejected readings: deleted the %d oldest"
                            " (%d in all)", self.path, self.max_rows, gone, self.dropped)

    def _replace_corrupt(self, exc: sqlite3.Error) -> None:
        """Move the damaged file (and its journals) aside and start a fresh one."""
        if self._conn is not None:
            with contextlib.suppress(sqlite3.Error):
                self._conn.close()
            self._conn = None
        aside = self.path.with_name(
            f"{self.path.name}.corrupt-{time.strftime('%Y%m%dT%H%M%S', time.gmtime())}")
        for suffix in ("", "-wal", "-shm", "-journal"):
            source = self.path.with_name(self.path.name + suffix)
            if source.exists():
                source.replace(aside.with_name(aside.name + suffix))
        log.error("%s is damaged (%s): moved aside to %s; a fresh one is started (what the old"
                  " one listed stays there)", self.path, exc, aside)

    def rows(self, sink: str | None = None, limit: int = 1000) -> list[dict[str, Any]]:
        """The newest ``limit`` rejected readings, oldest first."""
        if self.readonly and not self.path.exists():
            return []
        where, args = ("WHERE sink = ?", (sink,)) if sink else ("", ())
        with self._lock:
            try:
                cursor = self._connect().execute(
                    "SELECT * FROM (SELECT id, sink, meter_mac, kind, key_time, reading, reason,"
                    f" rejected_at FROM rejected {where} ORDER BY id DESC LIMIT ?) ORDER BY id",
                    (*args, limit))
                names = [d[0] for d in cursor.description]
                out = [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]
            except sqlite3.Error as exc:
                if _no_table(exc):
                    return []
                raise QuarantineError(f"cannot read {self.path}: {exc}") from exc
        for row in out:
            with contextlib.suppress(TypeError, ValueError):  # else the raw outbox text
                row["reading"] = json.loads(row["reading"])
        return out

    def count(self, sink: str | None = None) -> int:
        if self.readonly and not self.path.exists():
            return 0
        where, args = ("WHERE sink = ?", (sink,)) if sink else ("", ())
        with self._lock:
            try:
                return int(self._connect().execute(
                    f"SELECT COUNT(*) FROM rejected {where}", args).fetchone()[0])
            except sqlite3.Error as exc:
                if _no_table(exc):
                    return 0
                raise QuarantineError(f"cannot read {self.path}: {exc}") from exc

    def close(self) -> None:
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None


def _no_table(exc: sqlite3.Error) -> bool:
    """An empty file (created, then the disk full before the table): nothing rejected yet."""
    return isinstance(exc, sqlite3.OperationalError) and "no such table" in str(exc)
