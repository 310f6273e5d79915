"""SQLite, ravend's default store: one file in WAL mode under the state directory.

WAL lets readers (``ravenctl``, the repeater, maintenance) work while the service writes;
``synchronous=NORMAL`` in WAL mode keeps every committed transaction safe from a process crash
and costs one fsync per checkpoint, not per commit (an SD card lives longer). A read-only open
never creates, migrates or writes the file, so it never disturbs the running service.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ravend.db.dialect import Dialect
from ravend.db.migrations import migrations

#: Page cache per connection. ravend appends and reads short index ranges, and the kernel
#: caches the file anyway; SQLite's default (2 MiB) only made each long-lived connection's
#: memory creep up over the first few hundred thousand readings (measured: RSS +3 MiB from
#: 100,000 to 300,000 readings, then flat; with 512 KiB +0.7 MiB, same throughput).
CACHE_KIB = 512


class SqliteDialect(Dialect):
    name = "sqlite"
    placeholder = "?"

    def upsert(self, table: str, columns: Sequence[str], key: Sequence[str]) -> str:
        sets = ", ".join(f"{c} = excluded.{c}" for c in columns if c not in key)
        return (self.insert(table, columns)
                + f" ON CONFLICT ({', '.join(key)}) DO UPDATE SET {sets}")

    def insert_ignore(self, table: str, columns: Sequence[str]) -> str:
        return self.insert(table, columns, "INSERT OR IGNORE")

    def executemany(self, conn: Any, sql: str, rows: Sequence[Sequence[Any]]) -> int:
        before = conn.total_changes
        conn.executemany(sql, rows)
        return int(conn.total_changes - before)

    def delete_chunk(self, conn: Any, table: str, where: str, params: Sequence[Any],
                     limit: int, *, order: str, index: str, by_id: bool = True) -> int:
        # The subquery walks the time index (INDEXED BY: never the rowid range that `id <= ?`
        # might tempt the planner with, which would scan and sort) and hands over rowids.
        cur = conn.execute(
            f"DELETE FROM {table} WHERE rowid IN (SELECT rowid FROM {table} INDEXED BY {index}"
            f" WHERE {where} ORDER BY {order} LIMIT ?)", (*params, limit))
        return int(cur.rowcount)

    def rejects(self, exc: BaseException) -> bool:
        return isinstance(exc, sqlite3.IntegrityError)  # a constraint, a trigger's RAISE


DIALECT = SqliteDialect()


def readonly_uri(path: Path | str) -> str:
    """The URI that opens ``path`` read-only. The path is percent-encoded: a '#', '?' or '%'
    in it would otherwise end the path early, and SQLite would open (and create) another file,
    read-write, without ``mode=ro``."""
    return Path(path).resolve().as_uri() + "?mode=ro"


def connect(path: Path | str, *, readonly: bool = False,
            timeout: float = 10.0) -> sqlite3.Connection:
    """A connection with ravend's pragmas; read-only opens never create or migrate the file."""
    if readonly:
        conn = sqlite3.connect(readonly_uri(path), uri=True, timeout=timeout,
                               check_same_thread=False)
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


def no_database(path: Path | str) -> FileNotFoundError:
    """What a reader says of a store that ravend has not created yet."""
    return FileNotFoundError(f"{path}: no database yet (has ravend run?)")


def connect_existing(path: Path | str, *, readonly: bool = False,
                     timeout: float = 10.0) -> sqlite3.Connection:
    """``connect`` for a reader or maintenance: FileNotFoundError (``no_database``) rather
    than a new, empty file when the service has not made the store yet."""
    if not Path(path).exists():
        raise no_database(path)
    return connect(path, readonly=readonly, timeout=timeout)


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


def in_transaction(conn: sqlite3.Connection, sql: str, rows: Sequence[Sequence[Any]]) -> None:
    """``executemany`` as one write transaction (taken at once: no upgrade deadlock)."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        conn.executemany(sql, rows)
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise


def file_identity(path: Path) -> tuple[int, int] | None:
    """(st_dev, st_ino) of the file at ``path`` now, None when there is none."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return None
    return st.st_dev, st.st_ino


def store_bytes(path: Path) -> int:
    """The database file plus its write-ahead log: what the store takes on disk."""
    total = 0
    for suffix in ("", "-wal"):
        with contextlib.suppress(FileNotFoundError):
            total += Path(f"{path}{suffix}").stat().st_size
    return total


def live_bytes(conn: sqlite3.Connection) -> int:
    """Bytes of the pages in use (the file less its free pages)."""
    def pragma(name: str) -> int:
        return int(conn.execute(f"PRAGMA {name}").fetchone()[0])

    return (pragma("page_count") - pragma("freelist_count")) * pragma("page_size")


def checkpoint(conn: sqlite3.Connection, mode: str = "PASSIVE") -> None:
    conn.execute(f"PRAGMA wal_checkpoint({mode})").fetchall()


def free_pages(conn: sqlite3.Connection) -> int:
    return int(conn.execute("PRAGMA freelist_count").fetchone()[0])


def vacuum_step(conn: sqlite3.Connection, pages: int) -> None:
    """Give up to ``pages`` free pages back to the file system."""
    # executescript steps the pragma to the end; execute() would free a single page.
    conn.executescript(f"PRAGMA incremental_vacuum({pages});")


def shrink_memory(conn: sqlite3.Connection) -> None:
    """Empty the connection's page cache (it would otherwise stay filled between uses)."""
    with contextlib.suppress(sqlite3.Error):
        conn.execute("PRAGMA shrink_memory").fetchall()
