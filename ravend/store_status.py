"""What ``ravenctl`` reads from a SQLite store: status from its indexes, device state, readings.

A year of one home's readings is about 4 million rows; counting them, or looking for the
newest ``received_at`` (no index), reads the whole table: seconds on a laptop, tens of seconds
on an SD card. Every query here is a search of an index instead, so status costs the same at
any size:

* which meters and kinds: a skip-scan of the unique index (meter_mac, kind, key_time), one
  search per meter and kind;
* oldest and newest key time and the latest value: the first and last entry of that index for
  the meter and kind;
* when the newest reading was received: the last rows by id (ids only grow: the most recently
  stored rows are the most recently received ones, also after a meter's clock jumped back);
* how many readings: counted exactly up to ``EXACT_LIMIT`` per meter and kind; above that,
  estimated from the rate of the newest ``EXACT_LIMIT`` over the whole time span, and printed
  as "about" (``n_exact`` false in --json): a meter reports at a steady rate, so this is close
  unless the store has long gaps (outages, purged stretches), which make it high;
* the size: the database file and its WAL, which holds the recent commits until a checkpoint
  (``ravend.db.sqlite.store_bytes``, which doctor uses too, so both say the same).

``SqliteReader`` opens the store read-only through ``ravend.db.sqlite`` and holds the queries of
``ravenctl status``, ``info``, ``tail`` and ``export``.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from ravend.db import READING_COLUMNS
from ravend.db import sqlite as sqlite_db

#: Up to this many readings per meter and kind are counted exactly (an index range of this
#: many entries costs about a millisecond); beyond, the count is an estimate.
EXACT_LIMIT = 10_000
#: How many of the newest rows (by id) the received time is read from.
TAIL_ROWS = 500


def _pairs(conn: sqlite3.Connection) -> list[tuple[str, str]]:
    """Every (meter, kind) stored, one index search each, in order."""
    out: list[tuple[str, str]] = []
    meter = conn.execute("SELECT MIN(meter_mac) FROM readings").fetchone()
    while meter is not None and meter[0] is not None:
        kind = conn.execute("SELECT kind FROM readings WHERE meter_mac = ?"
                            " ORDER BY meter_mac, kind, key_time LIMIT 1", (meter[0],)).fetchone()
        while kind is not None:
            out.append((meter[0], kind[0]))
            kind = conn.execute("SELECT kind FROM readings WHERE meter_mac = ? AND kind > ?"
                                " ORDER BY meter_mac, kind, key_time LIMIT 1",
                                (meter[0], kind[0])).fetchone()
        meter = conn.execute("SELECT meter_mac FROM readings WHERE meter_mac > ?"
                             " ORDER BY meter_mac, kind, key_time LIMIT 1",
                             (meter[0],)).fetchone()
    return out


_EDGE = ("SELECT id, key_time, received_at, value, unit, raw, multiplier, divisor, {scale}"
         " FROM readings WHERE meter_mac = ? AND kind = ? ORDER BY key_time {order} LIMIT 1")


def _scale_column(conn: sqlite3.Connection) -> str:
    """``scale`` (migration 006), or 1 for a store ravend has not migrated yet: status reads
    any store read-only, also one a newer ravend has not opened."""
    names = {row[1] for row in conn.execute("PRAGMA table_info(readings)")}
    return "scale" if "scale" in names else "1"


def _count(conn: sqlite3.Connection, meter: str, kind: str, oldest: int, newest: int,
           id_span: int) -> tuple[int, bool]:
    """(readings of this meter and kind, whether exact). Past ``EXACT_LIMIT``: the rate of the
    newest ``EXACT_LIMIT`` readings over the whole span from the oldest, never more than the
    ids that span holds (a gap in the past makes it high, by the gap's share)."""
    kth = conn.execute("SELECT key_time FROM readings WHERE meter_mac = ? AND kind = ?"
                       " ORDER BY key_time DESC LIMIT 1 OFFSET ?",
                       (meter, kind, EXACT_LIMIT)).fetchone()
    if kth is None:
        n = conn.execute("SELECT COUNT(*) FROM readings WHERE meter_mac = ? AND kind = ?",
                         (meter, kind)).fetchone()[0]
        return int(n), True
    recent = newest - kth[0]
    estimate = (newest - oldest) * EXACT_LIMIT / recent + 1 if recent > 0 else id_span
    return max(EXACT_LIMIT + 1, min(round(estimate), id_span)), False


def _tail(conn: sqlite3.Connection) -> list[tuple[str, str, float]]:
    """(meter, kind, received_at) of the newest ``TAIL_ROWS`` rows by id."""
    return conn.execute("SELECT meter_mac, kind, received_at FROM readings WHERE id >"
                        " (SELECT MAX(id) FROM readings) - ? ORDER BY id DESC LIMIT ?",
                        (TAIL_ROWS, TAIL_ROWS)).fetchall()


def newest_received(conn: sqlite3.Connection) -> float | None:
    """When the newest reading was received (None: no reading)."""
    return max((r[2] for r in _tail(conn)), default=None)


def summary(conn: sqlite3.Connection) -> list[dict[str, Any]]:
    """Per meter and kind: count (``n``, ``n_exact``), oldest and newest key time, when it was
    last received, the latest value; ``conn`` may be read-only."""
    received: dict[tuple[str, str], float] = {}
    for meter, kind, at in _tail(conn):
        received[(meter, kind)] = max(at, received.get((meter, kind), at))
    rows = []
    column = _scale_column(conn)
    for meter, kind in _pairs(conn):
        first = conn.execute(_EDGE.format(order="ASC", scale=column), (meter, kind)).fetchone()
        last = conn.execute(_EDGE.format(order="DESC", scale=column), (meter, kind)).fetchone()
        n, exact = _count(conn, meter, kind, first[1], last[1], abs(last[0] - first[0]) + 1)
        rows.append({
            "meter_mac": meter, "kind": kind, "n": n, "n_exact": exact,
            "oldest": first[1], "newest": last[1],
            "last_received": max(last[2], received.get((meter, kind), last[2])),
            "value": last[3], "unit": last[4], "raw": last[5], "multiplier": last[6],
            "divisor": last[7], "scale": last[8],
        })
    return rows


class SqliteReader:
    """Read-side queries for ravenctl (status, info, tail, export); never writes."""

    def __init__(self, path: Path | str) -> None:
        self.path = Path(path)
        if not self.path.exists():
            raise sqlite_db.no_database(self.path)
        self.conn = sqlite_db.connect(self.path, readonly=True)
        self.conn.row_factory = sqlite3.Row

    def close(self) -> None:
        self.conn.close()

    def summary(self) -> list[dict[str, Any]]:
        """Per meter and kind: count, oldest and newest key time, latest value (from indexes:
        ravend.store_status)."""
        return summary(self.conn)

    def newest_received(self) -> float | None:
        return newest_received(self.conn)

    def newest_id(self) -> int:
        """The id of the newest reading stored (0: none)."""
        return int(self.conn.execute("SELECT COALESCE(MAX(id), 0) FROM readings").fetchone()[0])

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
        return sqlite_db.store_bytes(self.path)
