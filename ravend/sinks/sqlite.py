"""The default store: one SQLite file in WAL mode under the state directory.

WAL lets ``ravenctl`` read while the service writes; ``synchronous=NORMAL`` in WAL mode keeps
every committed transaction safe from a process crash and costs one fsync per checkpoint, not
per commit (an SD card lives longer). ``INSERT OR IGNORE`` on the reading identity makes every
rewrite after a retry harmless and keeps the first value of a key (``ravend.sinks.conflicts``);
only when a batch inserted fewer rows than it holds are the stored rows of its keys looked up
(one indexed query), so that a different value is counted and logged, not silently dropped.

The file is checked before each batch (one ``stat``: its device and inode against the ones
opened): a ``ravend.db`` deleted or replaced by another file (a restore) while ravend runs is
said in one line and opened again (created and migrated if need be), instead of writes going
on into an unlinked file.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sqlite3
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ravend.migrations import migrations
from ravend.sinks.base import ReadingRejected, Sink, SinkUnavailable, StateItem, dumps
from ravend.sinks.conflicts import Key, KeyConflicts, Value, value_of
from ravend.store_status import newest_received, store_bytes, summary

if TYPE_CHECKING:  # not at run time: ravenctl status reads through here, and fast
    from ravend.protocol.model import Reading

log = logging.getLogger("ravend.sinks")

_INSERT = (
    "INSERT OR IGNORE INTO readings (meter_mac, kind, key_time, meter_time, received_at,"
    " device_mac, raw, multiplier, divisor, value, unit, scale)"
    " VALUES (?,?,?,?,?,?,?,?,?,?,?,?)"
)
_UPSERT_STATE = (
    "INSERT INTO device_state (device_mac, meter_mac, tag, received_at, body) VALUES (?,?,?,?,?)"
    " ON CONFLICT (device_mac, meter_mac, tag) DO UPDATE SET"
    " received_at = excluded.received_at, body = excluded.body"
)

READING_COLUMNS = (
    "meter_mac", "kind", "key_time", "meter_time", "received_at", "device_mac", "raw",
    "multiplier", "divisor", "value", "unit", "scale",
)


#: Page cache per connection. ravend appends and reads short index ranges, and the kernel
#: caches the file anyway; SQLite's default (2 MiB) only made each long-lived connection's
#: memory creep up over the first few hundred thousand readings (measured: RSS +3 MiB from
#: 100,000 to 300,000 readings, then flat; with 512 KiB +0.7 MiB, same throughput).
CACHE_KIB = 512


def connect(path: Path | str, *, readonly: bool = False,
            timeout: float = 10.0) -> sqlite3.Connection:
    """A connection with ravend's pragmas; read-only opens never create or migrate the file."""
    if readonly:
        uri = f"file:{Path(path).resolve()}?mode=ro"
        conn = sqlite3.connect(uri, uri=True, timeout=timeout, check_same_thread=False)
    else:
        conn = sqlite3.connect(str(path), timeout=timeout, check_same_thread=False,
                               isolation_level=None)
        # Must precede the first table so that purges can give pages back to the filesystem.
        conn.execute("PRAGMA auto_vacuum = INCREMENTAL")
        conn.execute("PRAGMA journal_mode = WAL")
        conn.execute("PRAGMA synchronous = NORMAL")
    conn.execute(f"PRAGMA busy_timeout = {int(timeout * 1000)}")
    conn.execute(f"PRAGMA cache_size = -{CACHE_KIB}")
    return conn


def schema_version(conn: sqlite3.Connection) -> int:
    row = conn.execute(
        "SELECT name FROM sqlite_master WHERE type='table' AND name='schema_version'"
    ).fetchone()
    if row is None:
        return 0
    return int(conn.execute("SELECT COALESCE(MAX(version), 0) FROM schema_version").fetchone()[0])


def migrate(conn: sqlite3.Connection) -> list[int]:
    """Apply pending migrations; returns the versions applied."""
    conn.execute(
        "CREATE TABLE IF NOT EXISTS schema_version (version INTEGER PRIMARY KEY,"
        " name TEXT NOT NULL, applied_at REAL NOT NULL)"
    )
    current = schema_version(conn)
    applied = []
    for migration in migrations("sqlite"):
        if migration.version <= current:
            continue
        conn.execute("BEGIN IMMEDIATE")
        try:
            for statement in migration.sql.split(";\n"):
                if statement.strip():
                    conn.execute(statement)
            conn.execute(
                "INSERT INTO schema_version VALUES (?, ?, ?)",
                (migration.version, migration.name, time.time()),
            )
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        applied.append(migration.version)
    return applied


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


def file_identity(path: Path) -> tuple[int, int] | None:
    """(st_dev, st_ino) of the file at ``path`` now, None when there is none."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return None
    return st.st_dev, st.st_ino


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
                before = conn.total_changes
                conn.executemany(_INSERT, [reading_row(r) for r in readings])
                if conn.total_changes - before < len(readings):
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
            if isinstance(exc, sqlite3.IntegrityError):  # a constraint, a trigger's RAISE
                raise ReadingRejected(f"{self.path}: {exc}") from exc
            raise SinkUnavailable(f"{self.path}: {exc}") from exc
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


class SqliteReader:
    """Read-side queries for ravenctl and the repeater; never writes."""

    def __init__(self, path: Path | str) -> None:
        self.path = Path(path)
        if not self.path.exists():
            raise FileNotFoundError(f"{self.path}: no database yet (has ravend run?)")
        self.conn = connect(self.path, readonly=True)
        self.conn.row_factory = sqlite3.Row

    def close(self) -> None:
        self.conn.close()

    def summary(self) -> list[dict[str, Any]]:
        """Per meter and kind: count, oldest and newest key time, latest value (from indexes:
        ravend.store_status)."""
        return summary(self.conn)

    def newest_received(self) -> float | None:
        return newest_received(self.conn)

    def states(self) -> list[dict[str, Any]]:
        rows = self.conn.execute(
            "SELECT device_mac, meter_mac, tag, received_at, body FROM device_state"
            " ORDER BY device_mac, meter_mac, tag"
        ).fetchall()
        return [dict(r) for r in rows]

    def readings(self, *, since: float | None = None, until: float | None = None,
                 after_id: int = 0, limit: int | None = None) -> Iterator[sqlite3.Row]:
        # A time range walks readings_by_time and sorts what it found; "+id" keeps SQLite from
        # walking every row by id instead (an export of one day read the whole table).
        ranged = since is not None or until is not None
        sql = ("SELECT id, " + ", ".join(READING_COLUMNS) + " FROM readings WHERE "
               + ("+id > ?" if ranged else "id > ?"))
        params: list[Any] = [after_id]
        if since is not None:
            sql += " AND key_time >= ?"
            params.append(since)
        if until is not None:
            sql += " AND key_time < ?"
            params.append(until)
        sql += " ORDER BY id"
        if limit is not None:
            sql += " LIMIT ?"
            params.append(limit)
        yield from self.conn.execute(sql, params)

    def size_bytes(self) -> int:
        return store_bytes(self.path)
