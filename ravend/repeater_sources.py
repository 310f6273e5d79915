"""Where ravend-repeater reads the rows it publishes: ravend's SQL store, SQLite or MySQL.

A ``Source`` gives the rows after an id, the newest id, whether the store may have changed and
the device state rows that changed; ``SourceUnavailable`` means "retry later" (no database yet,
server down), never "give up". Each row's value is recomputed exactly from its raw fields, so
the repeater publishes what ravend itself would have. ``StoreWatch`` lets the repeater sleep
until ravend writes an SQLite store (inotify) instead of polling it. The loop that publishes
and keeps the watermark is ravend.repeater; what is logged here goes to its logger.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import os
import select
import sqlite3
import struct
import time
from collections.abc import Sequence
from decimal import Decimal
from pathlib import Path
from typing import Any, Protocol

from ravend.config import Config, ConfigError
from ravend.db import mysql as mysql_db
from ravend.db import sqlite as sqlite_db
from ravend.protocol.model import Kind, Reading, scale
from ravend.sinks.base import SinkUnavailable, StateItem

# The repeater's logger: these lines are the repeater's, wherever the code lives.
log = logging.getLogger("ravend.repeater")

_COLUMNS = ("id, meter_mac, kind, key_time, meter_time, received_at, device_mac, raw,"
            " multiplier, divisor, scale, unit")
#: The same for a store that ravend has not migrated to sql/*/..._meter_scale.sql yet.
_COLUMNS_UNSCALED = _COLUMNS.replace(" scale,", " 1 AS scale,")


class SourceUnavailable(Exception):
    """The store cannot be read now (no database yet, server down); retry later."""


class Source(Protocol):
    description: str

    def fetch(self, after_id: int, limit: int) -> list[tuple[int, Reading]]: ...

    def newest_id(self) -> int: ...

    def maybe_changed(self) -> bool: ...

    def states(self) -> list[StateItem]: ...

    def close(self) -> None: ...


def row_reading(row: Sequence[Any]) -> tuple[int, Reading]:
    """(id, Reading) of a row in _COLUMNS order; the value is recomputed exactly from raw."""
    (id_, meter, kind, key_time, meter_time, received_at, device, raw, multiplier, divisor,
     factor, unit) = row
    factor = Decimal(str(factor))  # SQLite's REAL: its repr is the decimal the config gave
    reading = Reading(
        meter_mac=meter, kind=Kind(kind),
        meter_time=None if meter_time is None else int(meter_time),
        received_at=float(received_at), raw=int(raw), multiplier=int(multiplier),
        divisor=int(divisor), value=scale(int(raw), int(multiplier), int(divisor), factor),
        unit=unit, device_mac=device or "", scale=factor,
    )
    if reading.key_time != int(key_time):  # host-timed rows: received_at and key_time agree
        reading = dataclasses.replace(reading, received_at=float(key_time))
    return int(id_), reading


class _SqlSource:
    """What the SQLite and the MySQL source share: ravend's tables, read with the same queries
    (written with ``?``). A subclass opens the connection and runs a query (``_query``, which
    raises SourceUnavailable), and tells whether the store has the scale column yet."""

    #: What closing a connection may raise, ignored: it is being dropped.
    _CLOSE_ERRORS: tuple[type[Exception], ...] = (Exception,)

    def __init__(self, description: str) -> None:
        self.description = description
        self._conn: Any = None
        self._state_seen: dict[tuple[str, str, str], float] = {}
        self._columns = _COLUMNS_UNSCALED  # until the store is seen to have readings.scale

    def _query(self, sql: str, params: Sequence[Any] = ()) -> list[Any]:
        raise NotImplementedError

    def _scaled(self) -> bool:
        """Whether ``readings`` has the scale column (sql/*/..._meter_scale.sql)."""
        raise NotImplementedError

    def fetch(self, after_id: int, limit: int) -> list[tuple[int, Reading]]:
        if self._columns is not _COLUMNS:  # looked at again until ravend has migrated the store
            self._columns = _COLUMNS if self._scaled() else _COLUMNS_UNSCALED
        rows = self._query(f"SELECT {self._columns} FROM readings WHERE id > ? ORDER BY id"
                           " LIMIT ?", (after_id, limit))
        return [row_reading(r) for r in rows]

    def newest_id(self) -> int:
        return int(self._query("SELECT COALESCE(MAX(id), 0) FROM readings")[0][0])

    def states(self) -> list[StateItem]:
        """Device state rows that changed since the last call (DeviceInfo for discovery ...)."""
        rows = self._query("SELECT device_mac, meter_mac, tag, received_at, body"
                           " FROM device_state")
        return _changed_states(rows, self._state_seen)

    def close(self) -> None:
        if self._conn is not None:
            with contextlib.suppress(*self._CLOSE_ERRORS):
                self._conn.close()
            self._conn = None


class SqliteSource(_SqlSource):
    """ravend's SQLite store, read-only (WAL: never in ravend's way), opened by ravend.db."""

    _CLOSE_ERRORS = (sqlite3.Error,)
    _conn: sqlite3.Connection | None

    def __init__(self, path: Path) -> None:
        super().__init__(f"sqlite:{path}")
        self.path = path
        self._data_version: int | None = None

    def _connection(self) -> sqlite3.Connection:
        if self._conn is None:
            if not self.path.exists():
                raise SourceUnavailable(str(sqlite_db.no_database(self.path)))
            try:
                self._conn = sqlite_db.connect(self.path, readonly=True, timeout=10)
                self._conn.execute("SELECT 1 FROM readings LIMIT 1")
            except sqlite3.Error as exc:
                self.close()
                raise SourceUnavailable(f"{self.path}: {exc}") from exc
        return self._conn

    def _query(self, sql: str, params: Sequence[Any] = ()) -> list[Any]:
        conn = self._connection()
        try:
            return conn.execute(sql, params).fetchall()
        except sqlite3.Error as exc:
            self.close()
            raise SourceUnavailable(f"{self.path}: {exc}") from exc

    def _scaled(self) -> bool:
        return "scale" in {row[1] for row in self._query("PRAGMA table_info(readings)")}

    def newest_id(self) -> int:
        """The highest id ever given (sqlite_sequence: the newest rows may have been purged),
        so a watermark past the rows still stored is not taken for a replaced store."""
        newest = super().newest_id()
        try:
            given = self._connection().execute(
                "SELECT seq FROM sqlite_sequence WHERE name = 'readings'").fetchone()
        except sqlite3.Error:  # a store from before sql/sqlite/005_monotonic_ids.sql
            given = None
        return max(newest, int(given[0])) if given else newest

    def maybe_changed(self) -> bool:
        """False only when no other connection committed since the last call."""
        version = self._query("PRAGMA data_version")[0][0]
        changed: bool = version != self._data_version
        self._data_version = version
        return changed

    def close(self) -> None:
        super().close()
        self._data_version = None

    def watch(self) -> StoreWatch | None:
        """A StoreWatch on the database, or None where inotify is not available."""
        try:
            return StoreWatch(self.path)
        except (OSError, AttributeError) as exc:  # no inotify (not Linux), watch limit reached
            log.info("cannot watch %s for changes (%s): looking every poll_interval instead",
                     self.path, exc)
            return None


class StoreWatch:
    """Blocks until another process writes an SQLite database, or ``wake`` is called: an
    inotify watch on the database's directory (the files may be created, replaced or removed)
    for writes to the database, its WAL or its rollback journal. Linux only (OSError else)."""

    _IN_MODIFY, _IN_MOVED_TO, _IN_CREATE, _IN_DELETE, _IN_Q_OVERFLOW = (
        0x2, 0x80, 0x100, 0x200, 0x4000)
    _EVENT = struct.Struct("iIII")  # wd, mask, cookie, len; then len bytes of name

    def __init__(self, path: Path) -> None:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        fd = libc.inotify_init1(os.O_NONBLOCK | os.O_CLOEXEC)  # IN_NONBLOCK | IN_CLOEXEC
        if fd < 0:
            raise OSError(ctypes.get_errno(), f"inotify_init1: {os.strerror(ctypes.get_errno())}")
        # Not IN_CLOSE_WRITE: a reader closing the WAL (opened read-write) has written nothing.
        mask = self._IN_MODIFY | self._IN_MOVED_TO | self._IN_CREATE | self._IN_DELETE
        if libc.inotify_add_watch(fd, os.fsencode(path.parent), mask) < 0:
            errno = ctypes.get_errno()
            os.close(fd)
            raise OSError(errno, f"inotify_add_watch {path.parent}: {os.strerror(errno)}")
        self._fd = fd
        self._names = {os.fsencode(path.name + suffix) for suffix in ("", "-wal", "-journal")}
        self._wake_r, self._wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)

    def wait(self, timeout: float) -> bool:
        """Block until the database was written (True), ``wake`` or ``timeout`` (False).
        Writes to other files of the directory (the repeater's own watermark) do not count."""
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            ready, _, _ = select.select([self._fd, self._wake_r], [], [], left)
            if self._wake_r in ready:
                with contextlib.suppress(OSError):
                    os.read(self._wake_r, 512)
                return False
            if self._fd in ready and self._changed():
                return True

    def _changed(self) -> bool:
        changed = False
        while True:
            try:
                data = os.read(self._fd, 65536)
            except BlockingIOError:
                return changed
            offset = 0
            while offset + self._EVENT.size <= len(data):
                _, mask, _, length = self._EVENT.unpack_from(data, offset)
                start = offset + self._EVENT.size
                name = data[start:start + length].rstrip(b"\0")
                offset = start + length
                if mask & self._IN_Q_OVERFLOW or name in self._names:
                    changed = True

    def wake(self) -> None:
        """End a ``wait`` now; safe from a signal handler and from any thread."""
        with contextlib.suppress(OSError):
            os.write(self._wake_w, b"\0")

    def close(self) -> None:
        for fd in (self._fd, self._wake_r, self._wake_w):
            with contextlib.suppress(OSError):
                os.close(fd)


class MysqlSource(_SqlSource):
    """The MySQL/MariaDB store of [mysql], read through ravend.db.mysql (as the sink writes it).
    Queries are written with ``?``, as for SQLite; the dialect gives the driver's style."""

    def __init__(self, cfg: Any) -> None:
        super().__init__(mysql_db.where(cfg))
        self.cfg = cfg

    def _query(self, sql: str, params: Sequence[Any] = ()) -> list[Any]:
        db = mysql_db.driver()
        try:
            if self._conn is None:
                # Each query must see rows committed since the last one: no open snapshot.
                self._conn = mysql_db.connect_reader(self.cfg)
            cursor = self._conn.cursor()
            cursor.execute(mysql_db.DIALECT.sql(sql), tuple(params))
            rows = list(cursor.fetchall())
            cursor.close()
            return rows
        except (SinkUnavailable, ConfigError) as exc:  # server down; password file unusable
            self.close()
            raise SourceUnavailable(str(exc)) from exc
        except db.Error as exc:
            self.close()
            raise SourceUnavailable(mysql_db.explain(exc, self.cfg)) from exc

    def _scaled(self) -> bool:
        return bool(self._query("SELECT COUNT(*) FROM information_schema.columns WHERE"
                                " table_schema = DATABASE() AND table_name = 'readings'"
                                " AND column_name = 'scale'")[0][0])

    def maybe_changed(self) -> bool:
        return True  # no cheap change counter: the primary-key look-up is the check


def _changed_states(rows: Sequence[Sequence[Any]],
                    seen: dict[tuple[str, str, str], float]) -> list[StateItem]:
    """Device state rows whose received_at changed since the last call."""
    out = []
    for device, meter, tag, received_at, body in rows:
        key = (device, meter, tag)
        if seen.get(key) == received_at:
            continue
        try:
            parsed = json.loads(body)
        except ValueError:
            continue
        seen[key] = received_at
        out.append(StateItem(device, meter, tag, float(received_at), parsed))
    return out


def make_source(config: Config) -> Source:
    if config.repeater.source == "sqlite":
        return SqliteSource(config.sqlite_path)
    mysql_db.driver()  # ConfigError naming the package when mysqlclient is missing
    return MysqlSource(config.mysql)
