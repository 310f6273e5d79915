"""The default store: one SQLite file in WAL mode under the state directory, opened, tuned and
migrated by ``ravend.db.sqlite``.

``INSERT OR IGNORE`` on the reading identity makes every rewrite after a retry harmless and
keeps the first value of a key (``ravend.sinks.conflicts``); only when a batch inserted fewer
rows than it holds are the stored rows of its keys looked up (one indexed query), so that a
different value is counted and logged, not silently dropped.

The file is checked before each batch (one ``stat``: its device and inode against the ones
opened): a ``ravend.db`` deleted or replaced by another file (a restore) while ravend runs is
said in one line and opened again (created and migrated if need be), instead of writes going
on into an unlinked file.
"""

from __future__ import annotations

import contextlib
import logging
import sqlite3
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ravend.db import READING_COLUMNS
from ravend.db.sqlite import DIALECT, connect, file_identity, migrate
from ravend.serialize import dumps
from ravend.sinks.base import Sink, SinkUnavailable, StateItem
from ravend.sinks.conflicts import Key, KeyConflicts, Value, value_of

if TYPE_CHECKING:  # not at run time: ravenctl status reads through here, and fast
    from ravend.protocol.model import Reading

log = logging.getLogger("ravend.sinks")

_INSERT = DIALECT.insert_ignore("readings", READING_COLUMNS)
_UPSERT_STATE = DIALECT.upsert(
    "device_state", ("device_mac", "meter_mac", "tag", "received_at", "body"),
    ("device_mac", "meter_mac", "tag"))


#: Keys per look-up of stored values (3 parameters each; SQLite before 3.32 allows 999).
_LOOKUP_CHUNK = 300


def stored_values(conn: sqlite3.Connection, keys: Sequence[Key]) -> dict[Key, Value]:
    """The stored (raw, multiplier, divisor) of those keys that are in ``readings``."""
    out: dict[Key, Value] = {}
    unique = list(dict.fromkeys(keys))
    for i in range(0, len(unique), _LOOKUP_CHUNK):
        chunk = unique[i:i + _LOOKUP_CHUNK]
        # The keys drive the loop (CROSS JOIN keeps them outside), each a search of the
        # unique index; a row-value IN (VALUES ...) made SQLite 3.40 scan the table.
        sql = ("SELECT r.meter_mac, r.kind, r.key_time, r.raw, r.multiplier, r.divisor FROM"
               " (VALUES " + ",".join(["(?,?,?)"] * len(chunk)) + ") AS k CROSS JOIN"
               " readings AS r ON r.meter_mac = k.column1 AND r.kind = k.column2"
               " AND r.key_time = k.column3")
        params = [p for key in chunk for p in key]
        for meter, kind, when, raw, mult, div in conn.execute(sql, params):
            out[(meter, kind, int(when))] = (int(raw), int(mult), int(div))
    return out


def reading_row(r: Reading) -> tuple[Any, ...]:
    return (r.meter_mac, r.kind.value, r.key_time, r.meter_time, r.received_at, r.device_mac,
            r.raw, r.multiplier, r.divisor, float(r.value), r.unit, float(r.scale))


class SqliteSink(Sink):
    name = "sqlite"

    def __init__(self, path: Path, *, busy_timeout: float = 10.0) -> None:
        self.path = path
        self.busy_timeout = busy_timeout
        self._conn: sqlite3.Connection | None = None
        self._identity: tuple[int, int] | None = None  # of the file opened
        self.conflicts = KeyConflicts(self.name, log)

    def open(self) -> None:
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            conn = connect(self.path, timeout=self.busy_timeout)
            migrate(conn)
        except (sqlite3.Error, OSError) as exc:
            raise SinkUnavailable(f"cannot open {self.path}: {exc}") from exc
        self._conn = conn
        self._identity = file_identity(self.path)

    def _same_file(self) -> None:
        """Reopen when the path no longer names the file opened (deleted, or replaced)."""
        now = file_identity(self.path)
        if now == self._identity and now is not None:
            return
        what = "deleted" if now is None else "replaced"
        self.close()
        aside = self._set_aside_orphans()
        log.warning("sqlite: store file %s was %s while ravend ran; reopening it (readings"
                    " written before are in the old file only%s)", self.path, what,
                    f"; its leftover {', '.join(aside)} moved aside as *.orphaned"
                    if aside else "")
        self.open()

    def _set_aside_orphans(self) -> list[str]:
        """A -wal or -shm left at the path belongs to the file that was deleted or replaced
        (another connection, maintenance's, still holds it): the new file must not adopt its
        frames, so they move aside under a ``.orphaned`` name (SQLite's open handles follow the
        rename). A restore must bring its file alone, checkpointed (``sqlite3 .backup`` does).
        Returns the suffixes moved."""
        moved = []
        for suffix in ("-wal", "-shm"):
            leftover = Path(f"{self.path}{suffix}")
            with contextlib.suppress(FileNotFoundError):
                leftover.rename(f"{leftover}.orphaned")
                moved.append(suffix)
        return moved

    def write(self, readings: Sequence[Reading], states: Sequence[StateItem]) -> None:
        if self._conn is None:
            raise SinkUnavailable("not open")
        self._same_file()
        conn = self._conn
        assert conn is not None
        conflicts: list[tuple[Key, Value, Value]] = []
        try:
            conn.execute("BEGIN")
            if readings:
                inserted = DIALECT.executemany(conn, _INSERT, [reading_row(r) for r in readings])
                if inserted < len(readings):
                    conflicts = self._conflicts(conn, readings)
            if states:
                conn.executemany(_UPSERT_STATE, [
                    (s.device_mac, s.meter_mac, s.tag, s.received_at, dumps(s.body))
                    for s in states
                ])
            conn.execute("COMMIT")
        except sqlite3.Error as exc:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise DIALECT.failure(exc, f"{self.path}: {exc}") from exc
        for key, kept, refused in conflicts:  # counted once committed: a retry counts once
            self.conflicts.refuse(key, kept, refused)
        self.conflicts.batch_done(len(conflicts))

    @staticmethod
    def _conflicts(conn: sqlite3.Connection,
                   readings: Sequence[Reading]) -> list[tuple[Key, Value, Value]]:
        """Some rows were there already: those whose stored value differs."""
        stored = stored_values(conn, [r.key for r in readings])
        return [(r.key, stored[r.key], value_of(r)) for r in readings
                if r.key in stored and stored[r.key] != value_of(r)]

    def close(self) -> None:
        if self._conn is not None:
            with contextlib.suppress(sqlite3.Error):
                self._conn.close()
            self._conn = None
