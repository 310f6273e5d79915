"""A durable, bounded, ordered spool for what a sink could not take yet.

One small SQLite file per sink under the state directory. Rows go in at the tail and leave from
the head only after the sink confirmed them, so a crash between the two replays rather than
loses. The head is the lowest *ordinal*, the number the sink's worker gave a batch when the
reader handed it over, not the order of arrival here: a batch that was on its way to the sink
when newer ones spilled past it (a full queue, a write that then failed) is still replayed
first. When the file would outgrow its cap, the oldest rows are dropped — counted and logged by
the caller, never silently — because on a full disk the newest readings are the ones users want.

A file that is not an SQLite database, or one whose pages are damaged (a truncated copy, a bad
sector), is moved aside (``outbox-<sink>.db.corrupt-<time>``, kept for the operator) with one
error line naming both paths, and a fresh outbox takes its place: at open, and whenever a read
or write finds it damaged later. What can still be read of it (rows in order up to the damage,
and from the other end back to it) goes into the fresh one; the rest is counted as dropped when
its number is known, and the line gives both numbers. One sink's outbox never stops the service
nor another sink: one that cannot be opened at all (a directory in its place, a file root owns
after a manual ``sudo ravend``) is said in one line, tried again every REOPEN_EVERY_S, and the
sink goes on without it meanwhile (what it cannot take at once waits in memory, bounded).
An entry that cannot be decoded is not fatal either: ``peek`` hands it over as ``Spooled.poison``
for the worker to quarantine, and replay goes on.
"""

from __future__ import annotations

import contextlib
import json
import logging
import sqlite3
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from ravend.db.sqlite import readonly_uri
from ravend.protocol.model import Reading
from ravend.serialize import dumps, reading_from_dict, reading_to_dict
from ravend.sinks.base import StateItem

#: Rows dropped at once when the cap is reached: dropping in chunks keeps the cap check cheap.
DROP_CHUNK = 1000
#: Rough bytes one spooled reading takes in the file (JSON + row + index overhead).
BYTES_PER_ROW = 400
#: How often an outbox that could not be opened (wrong owner, a directory in its place) is tried.
REOPEN_EVERY_S = 5.0


log = logging.getLogger("ravend.sinks")

#: SQLite's result codes for a damaged file: SQLITE_CORRUPT, SQLITE_NOTADB.
_CORRUPT_CODES = (11, 26)


@dataclass(frozen=True, slots=True)
class Spooled:
    seq: int
    readings: list[Reading]
    states: list[StateItem]
    ordinal: int = 0
    #: Parts of the entry that could not be decoded: (raw text, reason) each.
    poison: tuple[tuple[str, str], ...] = ()


#: One batch to spool: its ordinal (None: after everything spooled so far), readings, states.
Batch = tuple[int | None, Sequence[Reading], Sequence[StateItem]]


#: The outbox connection's page cache.
CACHE_KIB = 256


class OutboxError(Exception):
    """The outbox itself failed (disk full, unwritable directory)."""


def is_corrupt(exc: sqlite3.Error) -> bool:
    """The file is damaged, as opposed to full, locked or unreadable for now."""
    code = getattr(exc, "sqlite_errorcode", None)
    if code is not None:
        return code & 0xFF in _CORRUPT_CODES
    text = str(exc)
    return "malformed" in text or "not a database" in text


class Outbox:
    """Thread-safe: the reader thread may spill into it while the sink's worker drains it."""

    def __init__(self, path: Path, max_mb: float = 100.0) -> None:
        self.path = path
        self.max_rows = max(DROP_CHUNK, int(max_mb * 1024 * 1024 / BYTES_PER_ROW))
        self.dropped = 0
        self._lock = threading.Lock()
        self._next_ordinal = 1
        self._rows = 0
        self._counted = False  # _rows is known (the file was read whole once)
        self.lost = 0  # readings a damaged file lost, not yet taken by the worker
        self._conn: sqlite3.Connection | None = None
        self._open_retry_at = 0.0
        reason = self._try_open()
        if reason:
            log.error("outbox %s cannot be opened: %s; the sink goes on without it (readings it"
                      " cannot take at once are held in memory, the oldest dropped and counted)"
                      " and it is tried again every %ds. Fix: make it a regular file the service's"
                      " user (ravend) owns and can write (remove what is in its place, or"
                      " chown ravend: %s)", path, reason,
                      int(REOPEN_EVERY_S), path)

    def _try_open(self) -> str:
        """Open (or replace, if damaged) the file; the reason it cannot be, else ''."""
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            if self.path.exists() and not self.path.is_file():
                return "it is not a regular file (a directory?)"
            self._open()
        except sqlite3.DatabaseError as exc:
            if not is_corrupt(exc):
                return str(exc)
            try:
                self._replace_corrupt(exc)
            except (sqlite3.Error, OSError) as again:
                self._conn = None
                return str(again)
        except (sqlite3.Error, OSError) as exc:
            self._conn = None
            return str(exc)
        return ""

    def _usable(self, doing: str) -> sqlite3.Connection:
        """The connection (lock held); an outbox that could not be opened is tried again, at
        most every REOPEN_EVERY_S; OutboxError while it still cannot be."""
        if self._conn is not None:
            return self._conn
        if time.monotonic() < self._open_retry_at:
            raise OutboxError(f"cannot {doing} {self.path}: it could not be opened")
        self._open_retry_at = time.monotonic() + REOPEN_EVERY_S
        reason = self._try_open()
        if reason or self._conn is None:
            raise OutboxError(f"cannot {doing} {self.path}: {reason or 'not open'}")
        log.info("outbox %s opened (%d spooled to replay)", self.path, self._rows)
        return self._conn

    def _open(self, salvaged: Sequence[tuple[int, int, str, int]] = ()) -> None:
        self._conn = sqlite3.connect(str(self.path), isolation_level=None,
                                     check_same_thread=False, timeout=30)
        try:
            self._conn.execute("PRAGMA journal_mode = WAL")
            self._conn.execute("PRAGMA synchronous = NORMAL")
            # An outbox is read and written at its two ends: a small page cache does (SQLite's
            # default would let it grow to 2 MiB during a long outage, and keep it).
            self._conn.execute(f"PRAGMA cache_size = -{CACHE_KIB}")
            self._conn.execute(
                "CREATE TABLE IF NOT EXISTS outbox (seq INTEGER PRIMARY KEY AUTOINCREMENT,"
                " n INTEGER NOT NULL, body TEXT NOT NULL, ord INTEGER NOT NULL)"
            )
            columns = {row[1] for row in self._conn.execute("PRAGMA table_info(outbox)")}
            if "ord" not in columns:  # an outbox spooled before ordinals: arrival order it is
                self._conn.execute("ALTER TABLE outbox ADD COLUMN ord INTEGER")
            self._conn.execute("CREATE INDEX IF NOT EXISTS outbox_ord ON outbox (ord, seq)")
            # Every time, not only after the ALTER: an upgrade cut between the two leaves NULLs.
            self._conn.execute("UPDATE outbox SET ord = seq WHERE ord IS NULL")
            if salvaged:  # what a damaged predecessor still held, before anyone counts
                self._conn.executemany(
                    "INSERT INTO outbox (seq, n, body, ord) VALUES (?, ?, ?, ?)", salvaged)
            # Reads every row's page: a damaged table shows here, at open, not mid-replay.
            self._rows, last = self._conn.execute(
                "SELECT COALESCE(SUM(n), 0), COALESCE(MAX(ord), 0) FROM outbox").fetchone()
        except BaseException:
            self._conn.close()
            raise
        self._counted = True
        self._next_ordinal = max(self._next_ordinal, last + 1)

    def _replace_corrupt(self, exc: sqlite3.Error) -> None:
        """Move the damaged file (and its WAL, which must not be applied to a fresh one) aside
        and start afresh, with what could still be read of it: the rows in order up to the first
        read error, and from the other end down to the last. What could not be read is counted
        as lost (``take_lost``: the worker adds it to its dropped readings) when the number is
        known (a file damaged while open); at open it cannot be, and the line says so. Ordinals
        go on from where they were, so that batches numbered before still sort after nothing
        they should not."""
        held = self._rows if self._counted else None
        if self._conn is not None:
            with contextlib.suppress(sqlite3.Error):
                self._conn.close()
        aside = self.path.with_name(
            f"{self.path.name}.corrupt-{time.strftime('%Y%m%dT%H%M%S', time.gmtime())}")
        for suffix in ("", "-wal", "-shm"):
            source = self.path.with_name(self.path.name + suffix)
            if source.exists():
                source.replace(aside.with_name(aside.name + suffix))
        salvaged = _salvage(aside)
        self._open(salvaged)
        kept = sum(row[1] for row in salvaged)
        if held is None:
            lost_text = "the rest could not be read (how many is not known at open)"
        else:
            lost = max(0, held - kept)
            self.lost += lost
            lost_text = f"{lost} could not be read (counted as dropped)"
        log.error("outbox %s is damaged (%s): moved aside to %s; a fresh outbox is started with"
                  " the %d readings still readable; %s", self.path, exc, aside, kept, lost_text)

    def take_lost(self) -> int:
        """Readings a damaged outbox lost since the last call (for the worker's dropped)."""
        n, self.lost = self.lost, 0
        return n

    def __len__(self) -> int:
        """Readings and states waiting (not batches)."""
        return int(self._rows)

    def __repr__(self) -> str:
        return f"<Outbox {self.path.name} rows={self._rows} dropped={self.dropped}>"

    @property
    def next_ordinal(self) -> int:
        """Where a new process's worker starts numbering: after everything spooled before."""
        return self._next_ordinal

    def append(self, readings: Sequence[Reading], states: Sequence[StateItem],
               ordinal: int | None = None) -> int:
        """Spool one batch; returns how many old rows had to be dropped to stay under the cap."""
        return self.append_many([(ordinal, readings, states)])

    def append_many(self, batches: Sequence[Batch]) -> int:
        """Spool batches in one transaction; returns how many old rows were dropped for them."""
        rows = []
        for ordinal, readings, states in batches:
            n = len(readings) + len(states)
            if n:
                body = dumps({"r": [reading_to_dict(r) for r in readings],
                              "s": [[s.device_mac, s.meter_mac, s.tag, s.received_at, s.body]
                                    for s in states]})
                rows.append((ordinal, n, body))
        if not rows:
            return 0
        n = sum(row[1] for row in rows)
        with self._lock:
            conn = self._usable("spool to")
            values = []
            for ordinal, count, body in rows:
                if ordinal is None:
                    ordinal = self._next_ordinal
                self._next_ordinal = max(self._next_ordinal, ordinal + 1)
                values.append((count, body, ordinal))
            rows_before = self._rows
            dropped = 0
            try:
                # One transaction: the new rows and the drops that make room for them happen
                # together or not at all. Insert first, then drop the lowest ordinals: a batch
                # spooled late but older than the rest (a write that failed) is the one to go.
                conn.execute("BEGIN")
                try:
                    conn.executemany(
                        "INSERT INTO outbox (n, body, ord) VALUES (?, ?, ?)", values)
                    self._rows += n
                    while self._rows > self.max_rows:
                        step = self._drop_oldest_locked()
                        if not step:
                            break
                        dropped += step
                    conn.execute("COMMIT")
                except BaseException:
                    self._rows = rows_before
                    with contextlib.suppress(sqlite3.Error):  # the cause is what to report
                        conn.execute("ROLLBACK")
                    raise
            except sqlite3.Error as exc:
                if not (is_corrupt(exc) and self._recovered_from(exc)):
                    raise OutboxError(f"cannot spool to {self.path}: {exc}") from exc
                return self._append_locked(values, n, rows_before=0)
            self.dropped += dropped
            return dropped

    def _append_locked(self, values: list[tuple[int, str, int]], n: int,
                       rows_before: int) -> int:
        """The insert once more, into the fresh outbox that replaced a damaged one."""
        try:
            self._opened().executemany(
                "INSERT INTO outbox (n, body, ord) VALUES (?, ?, ?)", values)
        except sqlite3.Error as exc:
            self._rows = rows_before
            raise OutboxError(f"cannot spool to {self.path}: {exc}") from exc
        self._rows = rows_before + n
        return 0

    def _recovered_from(self, exc: sqlite3.Error) -> bool:
        """Replace a damaged outbox (lock held); False when even that fails."""
        try:
            self._replace_corrupt(exc)
        except (sqlite3.Error, OSError) as again:
            log.error("outbox %s is damaged and cannot be replaced: %s", self.path, again)
            return False
        return True

    def _opened(self) -> sqlite3.Connection:
        """The connection, for the steps (lock held) that run only once ``_usable`` or a
        replacement has opened it; the check is for the type checker's sake."""
        if self._conn is None:
            raise OutboxError(f"{self.path} is not open")
        return self._conn

    def _drop_oldest_locked(self) -> int:
        conn = self._opened()
        rows = conn.execute(
            "SELECT seq, n FROM outbox ORDER BY ord, seq LIMIT ?", (max(1, DROP_CHUNK // 100),)
        ).fetchall()
        if not rows:
            return 0
        count: int = sum(n for _, n in rows)
        conn.execute("DELETE FROM outbox WHERE seq IN (SELECT value FROM json_each(?))",
                           (json.dumps([seq for seq, _ in rows]),))
        self._rows -= count
        return count

    def peek(self, max_rows: int) -> list[Spooled]:
        """Oldest batches, up to about max_rows entries, in order. What cannot be decoded comes
        as ``poison`` (the rest of its entry is decoded still); a damaged file is replaced by a
        fresh one (nothing to peek then); other failures raise OutboxError."""
        out: list[Spooled] = []
        total = 0
        with self._lock:
            conn = self._usable("read")
            try:
                cursor = conn.execute(
                    "SELECT seq, n, body, ord FROM outbox ORDER BY ord, seq")
                for seq, n, body, ordinal in cursor:
                    if out and total + n > max_rows:
                        break
                    out.append(_decoded(seq, body, ordinal))
                    total += n
                cursor.close()
            except sqlite3.Error as exc:
                if is_corrupt(exc) and self._recovered_from(exc):
                    return []
                raise OutboxError(f"cannot read {self.path}: {exc}") from exc
        return out

    def ack(self, batches: Sequence[Spooled]) -> None:
        """Forget batches the sink has safely stored."""
        if not batches:
            return
        with self._lock:
            # One statement text whatever the number of batches: sqlite3 caches a compiled
            # statement per distinct text, and an IN list of every length would fill that cache
            # (measured: 0.75 MiB of statements after a flat-out run that spooled).
            seqs = json.dumps([b.seq for b in batches])
            conn = self._usable("acknowledge in")
            try:
                gone = conn.execute(
                    "DELETE FROM outbox WHERE seq IN (SELECT value FROM json_each(?))"
                    " RETURNING n", (seqs,)).fetchall()
            except sqlite3.Error as exc:  # a full disk: the rows stay, replayed again later
                if is_corrupt(exc) and self._recovered_from(exc):
                    return
                raise OutboxError(f"cannot acknowledge in {self.path}: {exc}") from exc
            self._rows -= sum(n for (n,) in gone)
            if self._rows == 0:
                # Give the space back once empty: an outage's spool should not stay on disk,
                # nor its pages in memory. Housekeeping only: on a full disk it waits.
                with contextlib.suppress(sqlite3.Error):
                    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
                    conn.execute("PRAGMA shrink_memory")

    def close(self) -> None:
        with self._lock:
            if self._conn is not None:
                self._conn.close()


def _salvage(path: Path) -> list[tuple[int, int, str, int]]:
    """The rows of a damaged outbox that can still be read: (seq, n, body, ord), forward from
    the first until a read fails, then backward from the last down to there."""
    rows: list[tuple[int, int, str, int]] = []
    try:
        conn = sqlite3.connect(readonly_uri(path), uri=True, timeout=1)
    except sqlite3.Error:
        return rows
    try:
        for order in ("ASC", "DESC"):
            floor = rows[-1][0] if rows else 0
            with contextlib.suppress(sqlite3.Error):
                for seq, n, body, ordinal in conn.execute(
                        f"SELECT seq, n, body, COALESCE(ord, seq) FROM outbox WHERE seq > ?"
                        f" ORDER BY seq {order}", (floor,)):
                    if not isinstance(n, int) or not isinstance(body, str):
                        continue
                    rows.append((seq, n, body, ordinal))
    finally:
        conn.close()
    # Reading made an index (and maybe an empty log) next to the copy: not part of what is kept.
    for suffix, only_if_empty in (("-shm", False), ("-wal", True)):
        extra = path.with_name(path.name + suffix)
        with contextlib.suppress(OSError):
            if not only_if_empty or extra.stat().st_size == 0:
                extra.unlink()
    return sorted(set(rows))


def _decoded(seq: int, body: str, ordinal: int) -> Spooled:
    """One outbox entry; whatever of it cannot be decoded is returned as poison, not raised."""
    try:
        data = json.loads(body)
        raw_readings, raw_states = data["r"], data["s"]
        if not isinstance(raw_readings, list) or not isinstance(raw_states, list):
            raise TypeError("not a list")
    except (ValueError, TypeError, KeyError) as exc:
        return Spooled(seq, [], [], ordinal, ((body, f"undecodable outbox entry: {exc!r}"),))
    readings: list[Reading] = []
    states: list[StateItem] = []
    poison: list[tuple[str, str]] = []
    for d in raw_readings:
        try:
            readings.append(reading_from_dict(d))
        except Exception as exc:
            poison.append((dumps(d), f"undecodable spooled reading: {exc!r}"))
    for item in raw_states:
        try:
            states.append(StateItem(*item))
        except Exception as exc:
            poison.append((dumps(item), f"undecodable spooled state: {exc!r}"))
    return Spooled(seq, readings, states, ordinal, tuple(poison))
