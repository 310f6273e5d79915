"""The queries of maintenance (roll-ups, purges) and ``ravenctl report`` over a SQL store.

One ``Store`` per open connection, SQLite or MySQL/MariaDB: the queries are written once, with
``?`` placeholders, and run through the engine's dialect (``ravend.db``), which also opens the
connection, upserts, deletes in chunks and, for SQLite, checkpoints and vacuums.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

from ravend import rollup as ru
from ravend.config import MysqlConfig
from ravend.db import mysql, sqlite
from ravend.db.dialect import Dialect
from ravend.db.pacer import Pacer
from ravend.protocol.model import Kind
from ravend.tariff import PricePoint, currency_of_unit

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
#: Counter readings fetched per query while a roll-up walks them.
SAMPLE_PAGE = 5_000
#: Pages of the first incremental_vacuum step (then sized to STEP_TARGET), and the bounds.
VACUUM_PAGES = (128, 8, 4096)
#: Readings whose key time roll-ups can use (see ravend.rollup_update; the clock_flag column:
#: sql/sqlite/003_clock_flag.sql).
PLAUSIBLE = "(clock_flag IS NULL OR clock_flag IN ('unset', 'behind'))"


class Store:
    """The queries maintenance and ``ravenctl report`` need, written once with ``?``
    placeholders; the engine's dialect (``ravend.db``) runs them."""

    name = "store"
    now: Callable[[], float] = staticmethod(time.time)

    def __init__(self, conn: Any, dialect: Dialect) -> None:
        self.conn = conn
        self.dialect = dialect

    # engine specifics
    def execute(self, sql: str, params: Sequence[Any] = ()) -> Any:
        cur = self.conn.cursor()
        cur.execute(self.dialect.sql(sql), tuple(params))
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
        order, index = TIME_INDEX[table]
        return self.dialect.delete_chunk(self.conn, table, where, params, limit, order=order,
                                         index=index, by_id=table not in ROLLUP_TABLES)

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.conn.close()

    def release_memory(self) -> None:
        """Drop caches between cycles: the service keeps this connection open for hours."""

    def schema_ready(self) -> bool:
        raise NotImplementedError

    def upsert_sql(self, table: str, columns: Sequence[str], key: Sequence[str]) -> str:
        return self.dialect.upsert(table, columns, key)

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
        found: int | None = self.scalar(
            "SELECT key_time FROM readings WHERE meter_mac = ? AND kind = ? AND key_time < ?"
            f" AND {PLAUSIBLE} ORDER BY key_time DESC LIMIT 1", (meter, kind, t))
        return found

    def after(self, meter: str, kind: str, t: int) -> int | None:
        found: int | None = self.scalar(
            "SELECT key_time FROM readings WHERE meter_mac = ? AND kind = ? AND key_time >= ?"
            f" AND {PLAUSIBLE} ORDER BY key_time LIMIT 1", (meter, kind, t))
        return found

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
        hour: int | None = self.scalar(
            "SELECT MAX(period_start) FROM rollup_hourly WHERE meter_mac = ?", (meter,))
        return hour

    def missing_rollups(self, table: str, meter: str, starts: Sequence[int]) -> set[int]:
        """Those of the period starts that have no row of the meter in the roll-up table."""
        found: set[int] = set()
        for i in range(0, len(starts), 500):
            part = list(starts[i:i + 500])
            found.update(int(r[0]) for r in self.rows(
                f"SELECT period_start FROM {table} WHERE meter_mac = ? AND period_start IN"
                f" ({', '.join('?' * len(part))})", (meter, *part)))
        return set(starts) - found

    def count(self, table: str, where: str, params: Sequence[Any]) -> int:
        return int(self.scalar(f"SELECT COUNT(*) FROM {table} WHERE {where}", params))

    def oldest_time(self) -> int | None:
        oldest: int | None = self.scalar("SELECT MIN(key_time) FROM readings")
        return oldest


class SqliteStore(Store):
    name = "sqlite"

    def __init__(self, path: Path | str, *, busy_timeout: float = 10.0,
                 readonly: bool = False) -> None:
        """``readonly``: for readers (``ravenctl report``), FileNotFoundError when there is no
        database yet; else opened for maintenance (the service creates the file)."""
        self.path = Path(path)
        if readonly:
            conn = sqlite.connect_existing(self.path, readonly=True, timeout=busy_timeout)
        else:
            conn = sqlite.connect(self.path, timeout=busy_timeout)
        super().__init__(conn, sqlite.DIALECT)

    def schema_ready(self) -> bool:
        return sqlite.schema_version(self.conn) >= 5  # 005: monotonic ids, plausible roll-ups

    def many(self, sql: str, params: list[tuple[Any, ...]]) -> None:
        sqlite.in_transaction(self.conn, self.dialect.sql(sql), params)

    def decimal(self, value: Any) -> Any:
        return None if value is None else format(value, "f")  # exact text, never 1E-9

    def live_bytes(self) -> int:
        return sqlite.live_bytes(self.conn)

    def file_bytes(self) -> int:
        return sum(p.stat().st_size for p in (self.path, Path(f"{self.path}-wal"))
                   if p.exists())

    def release_memory(self) -> None:
        # Its page cache (up to 2 MiB) would otherwise stay filled between cycles.
        sqlite.shrink_memory(self.conn)

    def checkpoint(self, mode: str = "PASSIVE") -> None:
        sqlite.checkpoint(self.conn, mode)

    def vacuum(self, stop: threading.Event, pause: float) -> int:
        """Give free pages back to the file system in small steps; returns pages freed."""
        freed = 0
        pacer = Pacer(*VACUUM_PAGES)
        while not stop.is_set():
            free = sqlite.free_pages(self.conn)
            if not free:
                break
            started = time.monotonic()
            sqlite.vacuum_step(self.conn, pacer.size)
            pacer.took(time.monotonic() - started)
            left = sqlite.free_pages(self.conn)
            if left >= free:
                break  # nothing more can be given back now
            freed += free - left
            self.checkpoint()
            stop.wait(pause)
        return freed


class MysqlStore(Store):
    name = "mysql"

    def __init__(self, cfg: MysqlConfig) -> None:
        conn = mysql.connect_reader(cfg)
        # Purges lock only the rows they delete, not the gaps around them.
        conn.cursor().execute("SET SESSION TRANSACTION ISOLATION LEVEL READ COMMITTED")
        super().__init__(conn, mysql.DIALECT)
        self.cfg = cfg

    def schema_ready(self) -> bool:
        return mysql.schema_version(self.conn) >= 6  # 006: plausible roll-ups

    def many(self, sql: str, params: list[tuple[Any, ...]]) -> None:
        self.dialect.executemany(self.conn, self.dialect.sql(sql), params)
