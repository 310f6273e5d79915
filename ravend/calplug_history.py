"""The CalPlug python-raven history brought into ``readings`` (MySQL/MariaDB, issue 20).

A CalPlug database upgraded in place (sql/mysql/002_calplug_upgrade.sql) keeps its old
``instantaneous_demand`` rows, recognisable by ``key_time IS NULL`` (ravend's own rows there have
one). Those rows would otherwise stay outside ravend's model: no roll-up, no ``report``, no
``export``. This step, run after the SQL migrations under their lock (``upgrade_database``: by
ravend's MySQL sink when it connects and by ``ravenctl db migrate``), copies each old row that
holds a reading into ``readings``:

- ``kind`` demand, ``unit`` kW, ``scale`` 1; ``meter_mac`` the one 002 found in ``run_info``
  for the row's hash, else ``UNKNOWN_METER``; ``device_mac`` ``HISTORY_DEVICE`` (the scripts did
  not record the stick), which also tells the repeater not to publish these old readings;
- ``key_time`` and ``received_at`` from ``time`` (the scripts' insert time), ``meter_time``
  NULL (so ``clock_flag`` is ``unset``, which the roll-ups take: keyed on the host's second);
- ``raw``, ``multiplier``, ``divisor`` as stored; a ``wrapped`` demand (a negative demand the
  scripts stored as an unsigned 32-bit number) sign-extended, as ravend's decoder does;
  ``value`` exactly as the MySQL sink computes it (raw * multiplier / divisor, 0 meaning 1);
- rows flagged ``error`` (the -1 marker of a failed read) or ``clamped`` (value lost), and rows
  without a time or a demand, are left out; they stay in ``instantaneous_demand``, flagged;
- ``calplug_history`` maps each copied row to the readings row that holds it, so its ``run``
  and ``hash`` are one join away.

Why a Python step and not a numbered SQL migration: a migration statement is one transaction,
and millions of rows in one INSERT ... SELECT would hold locks and undo log for minutes and
start over from nothing after an interruption. Here each chunk (``CHUNK`` rows, keyset
pagination on the primary key, never the whole table in memory) is its own transaction,
together with the progress marker ``calplug_history_id`` in ``maintenance_state``: interrupted,
the next run resumes after the last chunk committed. Inserts leave an existing reading alone
(the unique key ``readings_identity``; the scripts wrote duplicate rows), and rows up to the
marker are never read again, so a second run adds nothing, even after retention purged copied
readings. The CalPlug tables are only read.

The copied readings get new ids, above the roll-up watermark, so the maintenance thread rolls
up their hours and days like any late readings (``ravend.rollup_update``, including periods
older than ``purged_before`` that have no roll-up yet).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ravend.config import MysqlConfig
from ravend.db import READING_COLUMNS
from ravend.db.mysql import DIALECT, migrate_database
from ravend.protocol.model import KIND_UNITS, Kind, Reading
from ravend.protocol.scaling import scale

log = logging.getLogger("ravend.calplug_history")

#: The meter of a row whose run_info names none (or several): no real meter has this MAC.
UNKNOWN_METER = "0x0000000000000000"
#: device_mac of every copied reading: the CalPlug scripts did not record the stick.
HISTORY_DEVICE = "calplug"
#: instantaneous_demand rows read per chunk (one transaction each).
CHUNK = 10_000
#: maintenance_state's name of the progress marker: the last instantaneous_demand.id done.
MARKER = "calplug_history_id"

_INSERT = DIALECT.insert_ignore("readings", READING_COLUMNS)
_SELECT = (
    "SELECT id, UNIX_TIMESTAMP(time), demand, multiplier, divisor, meter_mac, flag"
    " FROM instantaneous_demand WHERE id > %s AND id <= %s AND key_time IS NULL"
    " ORDER BY id LIMIT %s"
)
_MAP = (
    "INSERT INTO calplug_history (demand_id, reading_id)"
    " SELECT d.id, r.id FROM instantaneous_demand d"
    " JOIN readings r ON r.meter_mac = COALESCE(d.meter_mac, %s) AND r.kind = %s"
    "  AND r.key_time = UNIX_TIMESTAMP(d.time)"
    " WHERE d.id > %s AND d.id <= %s AND d.key_time IS NULL"
    "  AND (d.flag IS NULL OR d.flag = 'wrapped')"
    "  AND d.demand IS NOT NULL"
    " ON DUPLICATE KEY UPDATE reading_id = calplug_history.reading_id"
)
_UPSERT_MARKER = DIALECT.upsert("maintenance_state", ("name", "value"), ("name",))


@dataclass(slots=True)
class Counts:
    """What one run did: rows read, readings inserted, rows left out, chunks committed."""

    read: int = 0
    inserted: int = 0
    left_out: int = 0
    chunks: int = 0

    @property
    def already_there(self) -> int:
        """Copied rows whose key was in readings already (a duplicate, an earlier run)."""
        return self.read - self.left_out - self.inserted

    def line(self) -> str:
        return (f"CalPlug history: {self.read} old instantaneous_demand rows read,"
                f" {self.inserted} copied into readings ({self.already_there} already there),"
                f" {self.left_out} left out (flagged error or clamped, or no time)")


def upgrade_database(cfg: MysqlConfig) -> tuple[list[int], Counts]:
    """``ravend.db.mysql.migrate_database``, then the copy of the history under the same
    migration lock (the MySQL sink when it connects, ``ravenctl db migrate``): the versions
    applied and what the copy did."""
    counts = Counts()

    def after(conn: Any) -> None:
        nonlocal counts
        counts = import_history(conn)

    return migrate_database(cfg, after=after), counts


def history_reading(row: tuple[Any, ...]) -> Reading | None:
    """The reading an old instantaneous_demand row holds, or None when it holds none."""
    _, when, demand, multiplier, divisor, meter, flag = row
    if flag not in (None, "wrapped") or demand is None or not when or int(when) <= 0:
        return None
    raw = int(demand) - 2**32 if flag == "wrapped" else int(demand)
    mult, div = int(multiplier or 0), int(divisor or 0)
    return Reading(
        meter_mac=meter or UNKNOWN_METER, kind=Kind.DEMAND, meter_time=None,
        received_at=float(int(when)), raw=raw, multiplier=mult, divisor=div,
        value=scale(raw, mult, div), unit=KIND_UNITS[Kind.DEMAND], device_mac=HISTORY_DEVICE,
    )


def _state(cur: Any, name: str) -> int:
    cur.execute("SELECT value FROM maintenance_state WHERE name = %s", (name,))
    row = cur.fetchone()
    return int(row[0]) if row else 0


def import_history(conn: Any, *, chunk: int = CHUNK,
                   after_chunk: Callable[[Counts], None] | None = None) -> Counts:
    """Copy the old rows after the marker into readings, one chunk per transaction.

    ``after_chunk`` is called after each commit (the tests interrupt the run there).
    """
    from ravend.sinks.mysql import reading_row  # the sink's own row: the same value, exactly

    counts = Counts()
    cur = conn.cursor()
    cur.execute("SET SESSION sql_mode = 'TRADITIONAL'")  # refuse, never clamp, a bad value
    # The old rows' highest id, through the key_time index: once done, a run costs two look-ups
    # and never walks ravend's own rows.
    cur.execute("SELECT MAX(id) FROM instantaneous_demand WHERE key_time IS NULL")
    top = cur.fetchone()[0]
    done = _state(cur, MARKER)
    conn.commit()
    if top is None or done >= int(top):
        return counts
    top = int(top)
    while done < top:
        cur.execute(_SELECT, (done, top, chunk))
        rows = cur.fetchall()
        last = int(rows[-1][0]) if rows else top
        readings = [r for r in map(history_reading, rows) if r is not None]
        if readings:
            counts.inserted += DIALECT.executemany(conn, _INSERT,
                                                   [reading_row(r) for r in readings])
            cur.execute(_MAP, (UNKNOWN_METER, Kind.DEMAND.value, done, last))
        cur.execute(_UPSERT_MARKER, (MARKER, last))
        conn.commit()
        counts.read += len(rows)
        counts.left_out += len(rows) - len(readings)
        counts.chunks += 1
        done = last
        if after_chunk is not None:
            after_chunk(counts)
    log.info("%s", counts.line())
    return counts
