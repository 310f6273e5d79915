"""A durable, bounded, ordered spool for what a sink could not take yet.

One small SQLite file per sink under the state directory. Rows go in at the tail and leave from
the head only after the sink confirmed them, so a crash between the two replays rather than
loses. The head is the lowest *ordinal*, the number the sink's worker gave a batch when the
reader handed it over, not the order of arrival here: a batch that was on its way to the sink
when newer ones spilled past it (a full queue, a write that then failed) is still replayed
first. When the file would outgrow its cap, the oldest rows are dropped — counted and logged by
the caller, never silently — because on a full disk the newest readings are the ones users want.
"""

from __future__ import annotations

import contextlib
import json
import sqlite3
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from ravend.protocol.model import Reading
from ravend.sinks.base import StateItem, dumps, reading_from_dict, reading_to_dict

#: Rows dropped at once when the cap is reached: dropping in chunks keeps the cap check cheap.
DROP_CHUNK = 1000
#: Rough bytes one spooled reading takes in the file (JSON + row + index overhead).
BYTES_PER_ROW = 400


@dataclass(frozen=True, slots=True)
class Spooled:
    seq: int
    readings: list[Reading]
    states: list[StateItem]
    ordinal: int = 0


#: One batch to spool: its ordinal (None: after everything spooled so far), readings, states.
Batch = tuple[int | None, Sequence[Reading], Sequence[StateItem]]


#: The outbox connection's page cache.
CACHE_KIB = 256


class OutboxError(Exception):
    """The outbox itself failed (disk full, unwritable directory)."""


class Outbox:
    """Thread-safe: the reader thread may spill into it while the sink's worker drains it."""

    def __init__(self, path: Path, max_mb: float = 100.0) -> None:
        self.path = path
        self.max_rows = max(DROP_CHUNK, int(max_mb * 1024 * 1024 / BYTES_PER_ROW))
        self.dropped = 0
        self._lock = threading.Lock()
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            self._conn = sqlite3.connect(str(path), isolation_level=None,
                                         check_same_thread=False, timeout=30)
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
            self._rows, last = self._conn.execute(
                "SELECT COALESCE(SUM(n), 0), COALESCE(MAX(ord), 0) FROM outbox").fetchone()
            self._next_ordinal = last + 1
        except sqlite3.Error as exc:
            raise OutboxError(f"cannot open outbox {path}: {exc}") from exc

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
                self._conn.execute("BEGIN")
                try:
                    self._conn.executemany(
                        "INSERT INTO outbox (n, body, ord) VALUES (?, ?, ?)", values)
                    self._rows += n
                    while self._rows > self.max_rows:
                        step = self._drop_oldest_locked()
                        if not step:
                            break
                        dropped += step
                    self._conn.execute("COMMIT")
                except BaseException:
                    self._rows = rows_before
                    with contextlib.suppress(sqlite3.Error):  # the cause is what to report
                        self._conn.execute("ROLLBACK")
                    raise
            except sqlite3.Error as exc:
                raise OutboxError(f"cannot spool to {self.path}: {exc}") from exc
            self.dropped += dropped
            return dropped

    def _drop_oldest_locked(self) -> int:
        rows = self._conn.execute(
            "SELECT seq, n FROM outbox ORDER BY ord, seq LIMIT ?", (max(1, DROP_CHUNK // 100),)
        ).fetchall()
        if not rows:
            return 0
        count = sum(n for _, n in rows)
        self._conn.execute("DELETE FROM outbox WHERE seq IN (SELECT value FROM json_each(?))",
                           (json.dumps([seq for seq, _ in rows]),))
        self._rows -= count
        return count

    def peek(self, max_rows: int) -> list[Spooled]:
        """Oldest batches, up to about max_rows entries, in order."""
        out: list[Spooled] = []
        total = 0
        with self._lock:
            cursor = self._conn.execute("SELECT seq, n, body, ord FROM outbox ORDER BY ord, seq")
            for seq, n, body, ordinal in cursor:
                if out and total + n > max_rows:
                    break
                data = json.loads(body)
                out.append(Spooled(
                    seq,
                    [reading_from_dict(d) for d in data["r"]],
                    [StateItem(*s) for s in data["s"]],
                    ordinal,
                ))
                total += n
            cursor.close()
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
            gone = self._conn.execute(
                "DELETE FROM outbox WHERE seq IN (SELECT value FROM json_each(?)) RETURNING n",
                (seqs,)).fetchall()
            self._rows -= sum(n for (n,) in gone)
            if self._rows == 0:
                # Give the space back once empty: an outage's spool should not stay on disk,
                # nor its pages in memory.
                self._conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
                self._conn.execute("PRAGMA shrink_memory")

    def close(self) -> None:
        with self._lock:
            self._conn.close()
