"""Maintenance of the SQL stores: roll-ups, then purges, in a thread of their own.

Each cycle opens its own connections (never the sinks'), brings the hourly and daily roll-ups
up to date, and, when a purge is due, deletes what the [retention] settings say may go:

- **Roll-ups first, incrementally.** ``rollup_watermark`` (in ``maintenance_state``) is the
  highest ``readings.id`` already rolled up (ids are a monotonic sequence: a purge never frees
  one for reuse, sql/sqlite/005_monotonic_ids.sql). Rows after it name the periods they touch:
  the hour (and local day) of each demand, and for a summation every hour from the summation
  before it to the one after it, since the energy between two summations is spread over that
  time (see ``ravend.rollup``). A price reading touches every hour from it to the next price
  (its cost changes), so a price that arrives late recomputes the hours it applies to. Only
  those periods are recomputed, from the raw readings. Periods that start before
  ``purged_before`` are never recomputed: their raw data may be gone.
- **Only readings on a real calendar are rolled up**: ``clock_flag`` NULL, ``unset`` (keyed on
  the host's receive second) or ``behind`` (a meter clock that is late lies between 2001 and
  now: its days are its own, consistently). A reading timed by a meter clock reset to 2000 or
  running ahead (``epoch``, ``ahead``: up to 2136) stays stored raw but touches no period and
  is no neighbour of any other reading: one meter time in 2136 would otherwise stretch the
  hours touched by every new summation or price over a century, so that the watermark never
  got past them, and a meter sending 2000-based times would stretch them over the 26 years to
  its readings of today at every step. The watermark moves past such rows like any other;
  they are counted (``rollup_skipped`` in ``maintenance_state``).
- **A changed [tariff] starts the roll-ups over**: its fingerprint is kept next to the
  watermark, and when it differs the watermark goes back to 0, so every period whose raw
  readings are still kept is costed with the new tariff.
- **Purges only what is rolled up**, oldest first, driven by the time index (readings keyed
  more than a day in the future go once *received* more than ``raw_days`` ago): on MySQL
  ``DELETE ... WHERE key_time < ? AND id <= watermark ORDER BY key_time LIMIT n``, on SQLite the
  same through a rowid subquery on that index. One chunk per transaction and a pause between
  chunks, so the writer waits for at most one chunk; never a full-table scan. SQLite then runs
  ``PRAGMA incremental_vacuum`` in steps so that the file actually shrinks, and checkpoints
  the WAL as it goes so that the writer never inherits a large checkpoint.
- **SQLite size cap** (``max_db_mb``): past it, the oldest rolled-up raw readings go too, until
  the live pages fit.

The thread sleeps between cycles (``Event.wait``); it never spins. Errors of one store are
logged in one line and retried next cycle; they never stop the service.
"""

from __future__ import annotations

import bisect
import contextlib
import datetime as dt
import logging
import sqlite3
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ravend import rollup as ru
from ravend.config import Config, ConfigError, RetentionConfig
from ravend.memory import release_freed_memory
from ravend.plural import plural
from ravend.protocol.model import Kind
from ravend.sinks.base import SinkUnavailable
from ravend.tariff import PricePoint, Tariff, currency_of_unit
from ravend.timetext import iso_utc

log = logging.getLogger("ravend.retention")

DAY = 86400
SUMMATIONS = (Kind.SUMMATION_DELIVERED.value, Kind.SUMMATION_RECEIVED.value)
ROLLUP_TABLES = ("rollup_hourly", "rollup_daily")
#: The column and index that purges walk, per table.
TIME_INDEX = {
    "readings": ("key_time", "readings_by_time"),
    "instantaneous_demand": ("key_time", "instantaneous_demand_by_key_time"),
    "rollup_hourly": ("period_start", "rollup_hourly_by_start"),
    "rollup_daily": ("period_start", "rollup_daily_by_start"),
}
ROLLUP_COLUMNS = (
    "meter_mac", "period_start", "period_end", "demand_samples", "demand_avg_kw",
    "demand_min_kw", "demand_max_kw", "delivered_kwh", "received_kwh", "energy_seconds",
    "counter_resets", "updated_at", "cost", "export_credit", "currency",
)
DAILY_EXTRA = ("day", "time_zone")

#: New readings taken per roll-up step; their periods are recomputed before the next step.
ROLLUP_BATCH = 4_000
#: Counter readings fetched per query while a roll-up walks them.
SAMPLE_PAGE = 5_000
#: At most this many consecutive hours are recomputed from one fetch of raw readings.
HOURS_PER_FETCH = 168
#: How long one purge or vacuum step may hold the write lock. Steps are sized to it as they
#: go: the cost of a row or a page varies a hundredfold with the size of the database and the
#: machine (moving a page to shrink a 750 MB SQLite file costs ~0.6 ms on a PC, more on a Pi),
#: and a writer that waits on SQLite's lock polls every 25-100 ms, so it must find the lock
#: free between two steps.
STEP_TARGET = 0.05
#: Pages of the first incremental_vacuum step (then sized to STEP_TARGET), and the bounds.
VACUUM_PAGES = (128, 8, 4096)
#: The first cycle waits this long after the start (the service settles first).
FIRST_DELAY = 30.0
#: Readings whose key time roll-ups can use (see the module docstring; the clock_flag column:
#: sql/sqlite/003_clock_flag.sql).
PLAUSIBLE = "(clock_flag IS NULL OR clock_flag IN ('unset', 'behind'))"


class Pacer:
    """The size of the next step, halved or doubled so that a step takes about STEP_TARGET."""

    def __init__(self, size: int, low: int, high: int, target: float = STEP_TARGET) -> None:
        self.low, self.high, self.target = low, max(low, high), target
        self.size = min(max(size, self.low), self.high)

    def took(self, seconds: float) -> None:
        if seconds > self.target * 1.5:
            self.size = max(self.low, self.size // 2)
        elif seconds < self.target / 3:
            self.size = min(self.high, self.size * 2)


@dataclass
class Report:
    """What one maintenance run did (or, dry, would do) on one store."""

    store: str
    rolled_up: int = 0  # new readings taken into the roll-ups
    skipped: int = 0  # of them, left out: their meter time is meaningless (clock_flag)
    hours: int = 0
    days: int = 0
    purged: int = 0  # raw readings deleted (or that would be)
    not_rolled_up: int = 0  # dry run: older than the cutoff but not yet rolled up
    purged_calplug: int = 0
    purged_rollups: int = 0
    chunks: int = 0
    cutoff: int | None = None
    size_before: int | None = None  # SQLite: bytes of the file (live pages in dry runs)
    size_after: int | None = None
    notes: list[str] = field(default_factory=list)

    def lines(self, dry_run: bool = False) -> list[str]:
        verb = "would delete" if dry_run else "deleted"
        out = []
        if self.rolled_up or self.hours:
            out.append(f"{self.store}: rolled up {plural(self.rolled_up, 'new reading')}"
                       f" ({plural(self.hours, 'hour')}, {plural(self.days, 'day')} recomputed)")
        if self.skipped:
            out.append(f"{self.store}: {self.skipped} of them left out of the roll-ups (kept"
                       " raw): their meter time is meaningless (clock_flag epoch/ahead)")
        if self.cutoff is not None and (self.purged or dry_run):
            out.append(f"{self.store}: {verb} {plural(self.purged, 'raw reading')} older than"
                       f" {iso(self.cutoff)}"
                       + (f" in {plural(self.chunks, 'chunk')}" if self.chunks else ""))
        if self.not_rolled_up:
            out.append(f"{self.store}: {self.not_rolled_up} of them are not rolled up yet"
                       " (a purge rolls them up first)")
        if self.purged_calplug:
            calplug = plural(self.purged_calplug, "instantaneous_demand row")
            out.append(f"{self.store}: {verb} {calplug}")
        if self.purged_rollups:
            out.append(f"{self.store}: {verb} {plural(self.purged_rollups, 'roll-up row')}")
        if self.size_before is not None and self.size_after is not None:
            out.append(f"{self.store}: database {mb(self.size_before)} -> {mb(self.size_after)}")
        out.extend(f"{self.store}: {n}" for n in self.notes)
        return out


def iso(t: float) -> str:
    return iso_utc(t)


def mb(n: int) -> str:
    return f"{n / 1e6:.1f} MB"


# --- stores -----------------------------------------------------------------------------------


class Store:
    """The queries maintenance needs, written once with ``?`` placeholders."""

    name = "store"
    now: Callable[[], float] = staticmethod(time.time)

    def __init__(self, conn: Any) -> None:
        self.conn = conn

    # engine specifics
    def _sql(self, sql: str) -> str:
        return sql

    def execute(self, sql: str, params: Sequence[Any] = ()) -> Any:
        cur = self.conn.cursor()
        cur.execute(self._sql(sql), tuple(params))
        return cur

    def rows(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        return list(self.execute(sql, params).fetchall())

    def scalar(self, sql: str, params: Sequence[Any] = ()) -> Any:
        row = self.execute(sql, params).fetchone()
        return row[0] if row else None

    def many(self, sql: str, params: list[tuple[Any, ...]]) -> None:
        raise NotImplementedError

    def delete_chunk(self, table: str, where: str, params: Sequence[Any], limit: int) -> int:
        """Delete up to ``limit`` rows matching ``where``, oldest first along the time index."""
        raise NotImplementedError

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.conn.close()

    def release_memory(self) -> None:
        """Drop caches between cycles: the service keeps this connection open for hours."""

    def schema_ready(self) -> bool:
        raise NotImplementedError

    def upsert_sql(self, table: str, columns: Sequence[str], key: Sequence[str]) -> str:
        raise NotImplementedError

    def decimal(self, value: Any) -> Any:
        return value

    # shared queries
    def state(self, name: str) -> int | None:
        value = self.scalar("SELECT value FROM maintenance_state WHERE name = ?", (name,))
        return None if value is None else int(value)

    def set_state(self, name: str, value: int) -> None:
        self.many(self.upsert_sql("maintenance_state", ("name", "value"), ("name",)),
                  [(name, int(value))])

    def max_id(self) -> int:
        return int(self.scalar("SELECT COALESCE(MAX(id), 0) FROM readings"))

    def new_rows(self, after_id: int, limit: int) -> Iterator[tuple[int, str, str, int, bool]]:
        """(id, meter, kind, key time, plausible) of the rows after after_id.

        From a cursor, not a list: a step's thousands of rows are only counted into hours.
        Closed however the caller stops, so no read snapshot stays open (and pins the WAL)."""
        cur = self.execute(f"SELECT id, meter_mac, kind, key_time, {PLAUSIBLE} FROM readings"
                           " WHERE id > ? ORDER BY id LIMIT ?", (after_id, limit))
        try:
            yield from cur
        finally:
            cur.close()

    def times(self, meter: str, kind: str, lo: int, hi: int) -> list[int]:
        return [r[0] for r in self.rows(
            "SELECT key_time FROM readings WHERE meter_mac = ? AND kind = ? AND key_time >= ?"
            f" AND key_time <= ? AND {PLAUSIBLE} ORDER BY key_time", (meter, kind, lo, hi))]

    def before(self, meter: str, kind: str, t: int) -> int | None:
        return self.scalar(
            "SELECT key_time FROM readings WHERE meter_mac = ? AND kind = ? AND key_time < ?"
            f" AND {PLAUSIBLE} ORDER BY key_time DESC LIMIT 1", (meter, kind, t))

    def after(self, meter: str, kind: str, t: int) -> int | None:
        return self.scalar(
            "SELECT key_time FROM readings WHERE meter_mac = ? AND kind = ? AND key_time >= ?"
            f" AND {PLAUSIBLE} ORDER BY key_time LIMIT 1", (meter, kind, t))

    def samples(self, meter: str, kind: str, lo: int, hi: int) -> Iterator[ru.Sample]:
        """Exact values with lo <= key_time <= hi, by time, fetched a page at a time.

        A stream, not a list: a week of one-second counter readings would otherwise be held
        whole (and the memory kept by the allocator afterwards).
        """
        after = lo - 1
        while True:
            page = self.rows(
                "SELECT key_time, raw, multiplier, divisor, scale FROM readings WHERE meter_mac = ?"
                f" AND kind = ? AND key_time > ? AND key_time <= ? AND {PLAUSIBLE}"
                " ORDER BY key_time LIMIT ?",
                (meter, kind, after, hi, SAMPLE_PAGE))
            for t, raw, mult, div, factor in page:
                yield t, ru.exact(raw, mult, div, factor)
            if len(page) < SAMPLE_PAGE:
                return
            after = page[-1][0]

    def demand_stats(self, meter: str, period: ru.Period) -> ru.DemandStats:
        """The period's demand aggregated by the database (one row per scale in use)."""
        stats = ru.DemandStats()
        for mult, div, factor, n, total, low, high in self.rows(
            "SELECT multiplier, divisor, scale, COUNT(*), SUM(raw), MIN(raw), MAX(raw) FROM"
            " readings WHERE meter_mac = ? AND kind = ? AND key_time >= ? AND key_time < ?"
            f" AND {PLAUSIBLE} GROUP BY multiplier, divisor, scale",
            (meter, Kind.DEMAND.value, period.start, period.end)):
            stats.add_group(int(n), int(total), int(low), int(high), int(mult), int(div),
                            factor)
        return stats

    def upsert_rollups(self, table: str, rows: Sequence[ru.Rollup], tz: str) -> None:
        daily = table == "rollup_daily"
        columns = ROLLUP_COLUMNS + (DAILY_EXTRA if daily else ())
        now = self.now()
        params = []
        for r in rows:
            values: tuple[Any, ...] = (
                r.meter_mac, r.period.start, r.period.end, r.demand_samples,
                *(self.decimal(v) for v in (r.demand_avg_kw, r.demand_min_kw, r.demand_max_kw,
                                            r.delivered_kwh, r.received_kwh)),
                r.energy_seconds, r.counter_resets, now,
                *(self.decimal(v) for v in (r.cost, r.export_credit)), r.currency,
            )
            if daily:
                values += (r.period.day, tz)
            params.append(values)
        if params:
            self.many(self.upsert_sql(table, columns, ("meter_mac", "period_start")), params)

    def prices(self, meter: str, lo: int, hi: int) -> list[PricePoint]:
        """The meter's prices in [lo, hi) and the last one before lo (still in effect at lo)."""
        sql = ("SELECT key_time, raw, multiplier, divisor, unit FROM readings WHERE meter_mac = ?"
               f" AND kind = ? AND {PLAUSIBLE} AND key_time {{}} ORDER BY key_time {{}}")
        kind = Kind.PRICE.value
        rows = self.rows(sql.format("< ?", "DESC LIMIT 1"), (meter, kind, lo))
        rows += self.rows(sql.format(">= ? AND key_time < ?", ""), (meter, kind, lo, hi))
        return [PricePoint(t, ru.exact(raw, mult, div), currency_of_unit(unit))
                for t, raw, mult, div, unit in rows]

    def last_rollup_hour(self, meter: str) -> int | None:
        return self.scalar("SELECT MAX(period_start) FROM rollup_hourly WHERE meter_mac = ?",
                           (meter,))

    def count(self, table: str, where: str, params: Sequence[Any]) -> int:
        return int(self.scalar(f"SELECT COUNT(*) FROM {table} WHERE {where}", params))

    def oldest_time(self) -> int | None:
        return self.scalar("SELECT MIN(key_time) FROM readings")


class SqliteStore(Store):
    name = "sqlite"

    def __init__(self, path: Path, *, busy_timeout: float = 10.0) -> None:
        from ravend.sinks.sqlite import connect

        self.path = Path(path)
        super().__init__(connect(self.path, timeout=busy_timeout))

    def schema_ready(self) -> bool:
        from ravend.sinks.sqlite import schema_version

        return schema_version(self.conn) >= 5  # 005: monotonic ids, plausible roll-ups

    def many(self, sql: str, params: list[tuple[Any, ...]]) -> None:
        self.conn.execute("BEGIN IMMEDIATE")
        try:
            self.conn.executemany(sql, params)
            self.conn.execute("COMMIT")
        except BaseException:
            if self.conn.in_transaction:
                self.conn.execute("ROLLBACK")
            raise

    def upsert_sql(self, table: str, columns: Sequence[str], key: Sequence[str]) -> str:
        sets = ", ".join(f"{c} = excluded.{c}" for c in columns if c not in key)
        return (f"INSERT INTO {table} ({', '.join(columns)})"
                f" VALUES ({', '.join('?' * len(columns))})"
                f" ON CONFLICT ({', '.join(key)}) DO UPDATE SET {sets}")

    def decimal(self, value: Any) -> Any:
        return None if value is None else format(value, "f")  # exact text, never 1E-9

    def delete_chunk(self, table: str, where: str, params: Sequence[Any], limit: int) -> int:
        # The subquery walks the time index (INDEXED BY: never the rowid range that `id <= ?`
        # might tempt the planner with, which would scan and sort) and hands over rowids.
        order, index = TIME_INDEX[table]
        cur = self.conn.execute(
            f"DELETE FROM {table} WHERE rowid IN (SELECT rowid FROM {table} INDEXED BY {index}"
            f" WHERE {where} ORDER BY {order} LIMIT ?)", (*params, limit))
        return cur.rowcount

    def live_bytes(self) -> int:
        pages = self.scalar("PRAGMA page_count") - self.scalar("PRAGMA freelist_count")
        return int(pages * self.scalar("PRAGMA page_size"))

    def file_bytes(self) -> int:
        return sum(p.stat().st_size for p in (self.path, Path(f"{self.path}-wal"))
                   if p.exists())

    def release_memory(self) -> None:
        # Its page cache (up to 2 MiB) would otherwise stay filled between cycles.
        with contextlib.suppress(sqlite3.Error):
            self.conn.execute("PRAGMA shrink_memory").fetchall()

    def checkpoint(self, mode: str = "PASSIVE") -> None:
        self.conn.execute(f"PRAGMA wal_checkpoint({mode})").fetchall()

    def vacuum(self, stop: threading.Event, pause: float) -> int:
        """Give free pages back to the file system in small steps; returns pages freed."""
        freed = 0
        pacer = Pacer(*VACUUM_PAGES)
        while not stop.is_set():
            free = self.scalar("PRAGMA freelist_count")
            if not free:
                break
            started = time.monotonic()
            # executescript steps the pragma to the end; execute() would free a single page.
            self.conn.executescript(f"PRAGMA incremental_vacuum({pacer.size});")
            pacer.took(time.monotonic() - started)
            left = self.scalar("PRAGMA freelist_count")
            if left >= free:
                break  # nothing more can be given back now
            freed += free - left
            self.checkpoint()
            stop.wait(pause)
        return freed


class MysqlStore(Store):
    name = "mysql"

    def __init__(self, cfg: Any) -> None:
        from ravend.sinks import mysql

        conn = mysql.connect(cfg)
        conn.autocommit(True)
        # Purges lock only the rows they delete, not the gaps around them.
        conn.cursor().execute("SET SESSION TRANSACTION ISOLATION LEVEL READ COMMITTED")
        super().__init__(conn)
        self.cfg = cfg

    def _sql(self, sql: str) -> str:
        return sql.replace("?", "%s")

    def schema_ready(self) -> bool:
        from ravend.sinks.mysql import schema_version

        return schema_version(self.conn) >= 6  # 006: plausible roll-ups

    def many(self, sql: str, params: list[tuple[Any, ...]]) -> None:
        self.conn.cursor().executemany(self._sql(sql), params)

    def upsert_sql(self, table: str, columns: Sequence[str], key: Sequence[str]) -> str:
        sets = ", ".join(f"{c} = VALUES({c})" for c in columns if c not in key)
        return (f"INSERT INTO {table} ({', '.join(columns)})"
                f" VALUES ({', '.join('?' * len(columns))}) ON DUPLICATE KEY UPDATE {sets}")

    def delete_chunk(self, table: str, where: str, params: Sequence[Any], limit: int) -> int:
        order, index = TIME_INDEX[table]
        if table in ROLLUP_TABLES:  # small tables keyed by period: delete directly
            cur = self.execute(f"DELETE FROM {table} WHERE {where} ORDER BY {order} LIMIT ?",
                               (*params, limit))
            return int(cur.rowcount)
        # Pick the ids along the time index with a plain (non-locking) read, then delete them
        # by primary key: the delete locks exactly the rows it removes, whatever plan the
        # optimizer would have chosen for a DELETE ... ORDER BY ... LIMIT.
        ids = [r[0] for r in self.rows(
            f"SELECT id FROM {table} FORCE INDEX ({index}) WHERE {where} ORDER BY {order}"
            f" LIMIT ?", (*params, limit))]
        if not ids:
            return 0
        cur = self.execute(f"DELETE FROM {table} WHERE id IN ({', '.join('?' * len(ids))})",
                           ids)
        return int(cur.rowcount)


# --- roll-ups ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Pricing:
    """The tariff and the zone of its hours, as compute() needs them."""

    tariff: Tariff
    tz: dt.tzinfo

    @classmethod
    def of(cls, tariff: Tariff | None, tz_name: str) -> Pricing:
        tariff = tariff or Tariff(time_zone=tz_name)
        return cls(tariff, ru.zone(tariff.time_zone))


def tariff_of(config: Config) -> Tariff:
    """[tariff], its hours in [retention] time_zone unless it names its own zone."""
    return Tariff.from_config(config.tariff, config.retention.time_zone)


def update_rollups(store: Store, tz_name: str, stop: threading.Event | None = None,
                   report: Report | None = None, batch: int = ROLLUP_BATCH,
                   tariff: Tariff | None = None) -> Report:
    """Roll up every reading after the watermark (see the module docstring).

    ``tariff``: None is the default [tariff] (the meter's prices), with hours in tz_name.
    """
    stop = stop or threading.Event()
    report = report or Report(store.name)
    tz = ru.zone(tz_name)
    tz_label = ru.zone_name(tz)
    pricing = Pricing.of(tariff, tz_name)
    watermark = store.state("rollup_watermark") or 0
    horizon = store.state("purged_before") or 0
    fingerprint = pricing.tariff.fingerprint()
    if store.state("tariff_fingerprint") != fingerprint:
        if watermark:
            report.notes.append("[tariff] changed: roll-ups are recomputed from the raw"
                                " readings kept")
        watermark = 0
        store.set_state("rollup_watermark", 0)
        store.set_state("tariff_fingerprint", fingerprint)
    while not stop.is_set():
        step = touched_hours(store, store.new_rows(watermark, batch))
        if not step.rows:
            break
        hours = step.hours
        for meter, starts in sorted(hours.items()):
            wanted = sorted(h for h in starts if h >= horizon)
            report.hours += recompute_hours(store, meter, wanted, stop, pricing)
            days = {d.start: d for h in wanted for d in ru.days_overlapping(h, h + ru.HOUR, tz)}
            for day in sorted(days.values(), key=lambda d: d.start):
                if stop.is_set():
                    break
                if day.start >= horizon:
                    store.upsert_rollups("rollup_daily", compute(store, meter, [day], pricing),
                                         tz_label)
                    report.days += 1
        if stop.is_set():
            break  # the watermark stays: this batch is recomputed next time
        watermark = step.last_id
        store.set_state("rollup_watermark", watermark)
        if step.skipped:
            store.set_state("rollup_skipped", (store.state("rollup_skipped") or 0) + step.skipped)
        report.rolled_up += step.rows
        report.skipped += step.skipped
    return report


@dataclass(slots=True)
class Step:
    """What one roll-up step read: how many new rows, the last one's id, the hours they touch."""

    rows: int = 0
    last_id: int = 0
    skipped: int = 0  # rows whose meter time is meaningless: they touch no hour
    hours: dict[str, set[int]] = field(default_factory=lambda: defaultdict(set))


def touched_hours(store: Store, rows: Iterable[tuple[int, str, str, int, Any]]) -> Step:
    """Hours whose roll-up the new rows change, per meter (none for implausible times)."""
    step = Step()
    hours = step.hours
    counters: dict[tuple[str, str], list[int]] = defaultdict(list)
    prices: dict[str, list[int]] = defaultdict(list)
    for row_id, meter, kind, t, plausible in rows:
        step.rows += 1
        step.last_id = row_id
        if not plausible:
            step.skipped += 1
        elif kind == Kind.DEMAND.value:
            hours[meter].add(ru.hour_of(t))
        elif kind in SUMMATIONS:
            counters[(meter, kind)].append(t)
        elif kind == Kind.PRICE.value:
            prices[meter].append(t)
    for meter, new in prices.items():
        _price_hours(store, meter, sorted(new), hours[meter])
    for (meter, kind), new in counters.items():
        new.sort()
        known = store.times(meter, kind, new[0], new[-1])
        prev = store.before(meter, kind, new[0])
        nxt = store.after(meter, kind, new[-1] + 1)
        line = ([prev] if prev is not None else []) + known + ([nxt] if nxt is not None else [])
        for t in new:
            i = bisect.bisect_left(line, t)
            lo = line[i - 1] if i > 0 else t
            hi = line[i + 1] if i + 1 < len(line) else t
            # [lo, hi) changes; the hour of t too (a reset is counted where it happens).
            top = max(ru.hour_of(t), ru.hour_of(hi - 1)) if hi > t else ru.hour_of(t)
            hours[meter].update(range(ru.hour_of(lo), top + 1, ru.HOUR))
    return step


def _price_hours(store: Store, meter: str, new: list[int], hours: set[int]) -> None:
    """A price holds until the next one: the hours from each new price to the next (or, for
    the newest, to the last hour rolled up so far) change their cost."""
    kind = Kind.PRICE.value
    line = store.times(meter, kind, new[0], new[-1])
    nxt = store.after(meter, kind, new[-1] + 1)
    if nxt is not None:
        line.append(nxt)
    last = store.last_rollup_hour(meter)
    for t in new:
        i = bisect.bisect_right(line, t)
        if i < len(line):
            top = ru.hour_of(max(t, line[i] - 1))
        else:
            top = max(ru.hour_of(t), last if last is not None else 0)
        hours.update(range(ru.hour_of(t), top + 1, ru.HOUR))


def _runs(hours: Sequence[int]) -> Iterator[list[int]]:
    """Consecutive hours in runs of at most HOURS_PER_FETCH."""
    run: list[int] = []
    for h in hours:
        if run and (h != run[-1] + ru.HOUR or len(run) >= HOURS_PER_FETCH):
            yield run
            run = []
        run.append(h)
    if run:
        yield run


def recompute_hours(store: Store, meter: str, hours: Sequence[int],
                    stop: threading.Event, pricing: Pricing | None = None) -> int:
    done = 0
    for run in _runs(hours):
        if stop.is_set():
            break
        periods = [ru.hour_period(h) for h in run]
        store.upsert_rollups("rollup_hourly", compute(store, meter, periods, pricing), "UTC")
        done += len(run)
    return done


def compute(store: Store, meter: str, periods: Sequence[ru.Period],
            pricing: Pricing | None = None) -> list[ru.Rollup]:
    """Roll-ups of consecutive periods from the raw readings (empty periods left out).

    Without ``pricing``, the default [tariff] (the meter's prices, UTC hours).
    """
    pricing = pricing or Pricing.of(None, "UTC")
    lo, hi = periods[0].start, periods[-1].end
    demand = [store.demand_stats(meter, p) for p in periods]
    counters = []
    for kind in SUMMATIONS:
        first = store.before(meter, kind, lo)
        last = store.after(meter, kind, hi)
        counters.append(store.samples(meter, kind, lo if first is None else first,
                                      hi if last is None else last))
    tariff = pricing.tariff
    prices = tariff.timeline(lo, hi, store.prices(meter, lo, hi), pricing.tz)
    rows = ru.summarize_stats(meter, periods, demand, counters[0], counters[1], prices,
                              tariff.export_rate, tariff.currency)
    return [r for r in rows if r.demand_samples or r.delivered_kwh is not None
            or r.received_kwh is not None or r.counter_resets]


# --- purges -----------------------------------------------------------------------------------


def purge(store: Store, settings: RetentionConfig, stop: threading.Event | None = None, *,
          dry_run: bool = False, report: Report | None = None) -> Report:
    """Delete what the settings say may go; with dry_run, only count it."""
    stop = stop or threading.Event()
    report = report or Report(store.name)
    now = store.now()
    sqlite = isinstance(store, SqliteStore)
    # Only what is rolled up may go (all of it when roll-ups are off).
    limit_id = (store.state("rollup_watermark") or 0) if settings.rollups else store.max_id()
    if sqlite:
        report.size_before = store.live_bytes() if dry_run else store.file_bytes()
    if settings.raw_days:
        cutoff = int(now - settings.raw_days * DAY)
        report.cutoff = cutoff
        if dry_run:
            report.purged = store.count("readings", "key_time < ?", (cutoff,))
            report.purged += store.count("readings", "key_time > ? AND received_at < ?",
                                         (int(now) + DAY, cutoff))
            report.not_rolled_up = store.count("readings", "key_time < ? AND id > ?",
                                               (cutoff, limit_id))
        else:
            report.purged += _chunks(store, "readings", "key_time < ? AND id <= ?",
                                     (cutoff, limit_id), settings, stop, report)
            # Keyed in the future (a meter clock far ahead): by when it was received. Only
            # such rows lie past now + a day on the time index, so this walks just them.
            report.purged += _chunks(store, "readings",
                                     "key_time > ? AND received_at < ? AND id <= ?",
                                     (int(now) + DAY, cutoff, limit_id), settings, stop, report)
            if not stop.is_set():
                store.set_state("purged_before", max(cutoff, store.state("purged_before") or 0))
        if isinstance(store, MysqlStore):
            where = "key_time IS NOT NULL AND key_time < ?"
            if dry_run:
                report.purged_calplug = store.count("instantaneous_demand", where, (cutoff,))
            else:
                report.purged_calplug = _chunks(store, "instantaneous_demand", where,
                                                (cutoff,), settings, stop, report)
    if settings.rollup_days:
        cutoff = int(now - settings.rollup_days * DAY)
        for table in ROLLUP_TABLES:
            if dry_run:
                report.purged_rollups += store.count(table, "period_start < ?", (cutoff,))
            else:
                report.purged_rollups += _chunks(store, table, "period_start < ?", (cutoff,),
                                                 settings, stop, report)
    if sqlite:
        _size_cap(store, settings, stop, report, limit_id, dry_run)
        if not dry_run:
            store.vacuum(stop, settings.purge_pause)
            with contextlib.suppress(sqlite3.Error):
                store.checkpoint("TRUNCATE")
            report.size_after = store.file_bytes()
    return report


def _chunks(store: Store, table: str, where: str, params: Sequence[Any],
            settings: RetentionConfig, stop: threading.Event, report: Report) -> int:
    total = 0
    pacer = Pacer(min(settings.purge_chunk, 500), min(settings.purge_chunk, 10),
                  settings.purge_chunk)
    while not stop.is_set():
        started, asked = time.monotonic(), pacer.size
        n = store.delete_chunk(table, where, params, asked)
        pacer.took(time.monotonic() - started)
        total += n
        report.chunks += 1
        if isinstance(store, SqliteStore):
            store.checkpoint()
        if n < asked:
            break
        stop.wait(settings.purge_pause)
    return total


def _size_cap(store: SqliteStore, settings: RetentionConfig, stop: threading.Event,
              report: Report, limit_id: int, dry_run: bool) -> None:
    if not settings.max_db_mb:
        return
    cap = int(settings.max_db_mb * 1e6)
    live = store.live_bytes()
    if live <= cap:
        return
    if dry_run:
        report.notes.append(f"{mb(live)} of live pages exceed max_db_mb ({mb(cap)}): the"
                            " oldest rolled-up raw readings would go until it fits")
        return
    deleted = 0
    pacer = Pacer(min(settings.purge_chunk, 500), min(settings.purge_chunk, 10),
                  settings.purge_chunk)
    while not stop.is_set() and store.live_bytes() > cap:
        started = time.monotonic()
        n = store.delete_chunk("readings", "id <= ?", (limit_id,), pacer.size)
        pacer.took(time.monotonic() - started)
        store.checkpoint()
        report.chunks += 1
        deleted += n
        if n == 0:
            report.notes.append(f"still {mb(store.live_bytes())} after purging every rolled-up"
                                f" raw reading: max_db_mb ({mb(cap)}) is too small")
            break
        stop.wait(settings.purge_pause)
    report.purged += deleted
    if deleted:
        oldest = store.oldest_time()
        if oldest is not None:
            store.set_state("purged_before", max(oldest, store.state("purged_before") or 0))


# --- running it -------------------------------------------------------------------------------


def stores(config: Config, *, create: bool = False) -> list[Callable[[], Store]]:
    """Openers of the stores that [sqlite] and [mysql] enable."""
    openers: list[Callable[[], Store]] = []
    if config.sqlite.enabled:
        path = config.sqlite_path

        def open_sqlite() -> Store:
            if not create and not path.exists():
                raise FileNotFoundError(f"{path}: no database yet (has ravend run?)")
            return SqliteStore(path)

        openers.append(open_sqlite)
    if config.mysql.enabled:
        openers.append(lambda: MysqlStore(config.mysql))
    return openers


def run_once(opener: Callable[[], Store], settings: RetentionConfig, *, rollups: bool = True,
             purges: bool = True, dry_run: bool = False,
             stop: threading.Event | None = None, tariff: Tariff | None = None) -> Report:
    """One maintenance pass over one store: roll-ups, then (if asked) the purge."""
    store = opener()
    try:
        return run_on(store, settings, rollups=rollups, purges=purges, dry_run=dry_run,
                      stop=stop, tariff=tariff)
    finally:
        store.close()


def run_on(store: Store, settings: RetentionConfig, *, rollups: bool = True,
           purges: bool = True, dry_run: bool = False,
           stop: threading.Event | None = None, tariff: Tariff | None = None) -> Report:
    """One maintenance pass over an open store (the service keeps its connections open)."""
    report = Report(store.name)
    if not store.schema_ready():
        report.notes.append("schema not migrated yet (ravend migrates at start;"
                            " or run: ravenctl db migrate)")
        return report
    if rollups and settings.rollups and not dry_run:
        update_rollups(store, settings.time_zone, stop, report, tariff=tariff)
    if purges:
        purge(store, settings, stop, dry_run=dry_run, report=report)
    return report


def store_errors() -> tuple[type[BaseException], ...]:
    """Exceptions that mean 'this store, this time' rather than a bug."""
    errors: list[type[BaseException]] = [sqlite3.Error, SinkUnavailable, ConfigError, OSError]
    try:
        import MySQLdb

        errors.append(MySQLdb.Error)
    except ImportError:
        pass
    return tuple(errors)


class Maintenance:
    """The service's maintenance thread: roll-ups every rollup_interval, purges every
    purge_interval (each purge preceded by a roll-up), on every enabled SQL store."""

    def __init__(self, config: Config, *, first_delay: float = FIRST_DELAY) -> None:
        self.settings = config.retention
        self.openers = stores(config)
        self.tariff = tariff_of(config)
        self.first_delay = first_delay
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="maintenance", daemon=True)
        self._failing: dict[int, str] = {}
        self._skips_said: set[int] = set()  # stores whose implausible meter times were logged
        # One connection per store, opened at the first cycle (not at start: a fresh database
        # is being created and migrated by the sink then) and kept between cycles (closed
        # after an error, opened again at the next cycle). Opening one per cycle made the
        # process's descriptors and memory depend on when one looked: SQLite defers closing a
        # file that another connection of the process has locked, and reloads its schema.
        self._open: dict[int, Store] = {}
        self.runs = 0

    @staticmethod
    def wanted(config: Config) -> bool:
        r = config.retention
        has_store = config.sqlite.enabled or config.mysql.enabled
        return has_store and bool(r.rollups or r.raw_days or r.rollup_days or r.max_db_mb)

    def start(self) -> None:
        self._thread.start()

    def run(self) -> None:
        """The maintenance loop in the caller's thread (the service's supervisor owns it)."""
        self._thread = threading.current_thread()
        self._run()

    def stop(self, timeout: float = 2.0) -> None:
        self._stop.set()
        if self._thread.ident is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout)

    def alive(self) -> bool:
        return self._thread.is_alive()

    def _run(self) -> None:
        try:
            self._loop()
        finally:
            self._close_all()

    def _store(self, i: int) -> Store:
        store = self._open.get(i)
        if store is None:
            store = self._open[i] = self.openers[i]()
        return store

    def _close(self, i: int) -> None:
        store = self._open.pop(i, None)
        if store is not None:
            with contextlib.suppress(Exception):
                store.close()

    def _close_all(self) -> None:
        for i in list(self._open):
            self._close(i)

    def _loop(self) -> None:
        s = self.settings
        # Roll-ups soon after the start; the first purge one purge_interval after it.
        next_rollup = time.monotonic() + min(self.first_delay, s.rollup_interval)
        next_purge = time.monotonic() + s.purge_interval
        while not self._stop.wait(max(0.0, min(next_rollup, next_purge) - time.monotonic())):
            now = time.monotonic()
            purge_due = now >= next_purge
            self.cycle(purges=purge_due)
            for store in self._open.values():
                store.release_memory()
            release_freed_memory()
            now = time.monotonic()
            next_rollup = now + s.rollup_interval
            if purge_due:
                next_purge = now + s.purge_interval

    def cycle(self, *, purges: bool) -> None:
        errors = store_errors()
        for i in range(len(self.openers)):
            if self._stop.is_set():
                return
            started = time.monotonic()
            try:
                report = run_on(self._store(i), self.settings, purges=purges,
                                stop=self._stop, tariff=self.tariff)
            except FileNotFoundError:
                continue  # no SQLite file yet: the sink creates it
            except errors as exc:
                self._close(i)
                message = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
                if self._failing.get(i) != message:
                    log.warning("maintenance: %s", message)
                self._failing[i] = message
                continue
            except Exception:
                self._close(i)
                log.exception("maintenance: unexpected error (retrying next cycle)")
                continue
            if i in self._failing:
                del self._failing[i]
                log.info("maintenance: %s reachable again", report.store)
            took = time.monotonic() - started
            if report.skipped and i not in self._skips_said:
                self._skips_said.add(i)
                log.warning("maintenance: %s: readings with meaningless meter times (clock_flag"
                            " epoch/ahead) are kept raw but left out of the roll-ups"
                            " (%d so far; said once)", report.store, report.skipped)
                report.skipped = 0  # this warning is its line this time
            # Routine roll-ups every few minutes go to debug; deletions and catching up to info.
            deleted = report.purged or report.purged_rollups or report.purged_calplug
            level = (logging.INFO if deleted or report.notes or report.rolled_up >= ROLLUP_BATCH
                     else logging.DEBUG)
            for line in report.lines():
                log.log(level, "maintenance: %s (%.1fs)", line, took)
        self.runs += 1
