"""Purging one SQL store: what the [retention] settings say may go, without holding the writer.

The maintenance thread (``ravend.maintenance``) runs it every purge_interval, after a roll-up
update (``ravend.rollup_update``); ``ravenctl purge`` runs it on demand (or, dry, counts).

- **Purges only what is rolled up**, oldest first, driven by the time index (readings keyed
  more than a day in the future go once *received* more than ``raw_days`` ago): on MySQL
  ``DELETE ... WHERE key_time < ? AND id <= watermark ORDER BY key_time LIMIT n``, on SQLite the
  same through a rowid subquery on that index. One chunk per transaction and a pause between
  chunks, so the writer waits for at most one chunk; never a full-table scan. SQLite then runs
  ``PRAGMA incremental_vacuum`` in steps so that the file actually shrinks, and checkpoints
  the WAL as it goes so that the writer never inherits a large checkpoint.
- **SQLite size cap** (``max_db_mb``): past it, the oldest rolled-up raw readings go too, until
  the live pages fit.
"""

from __future__ import annotations

import contextlib
import sqlite3
import threading
import time
from collections.abc import Sequence
from typing import Any

from ravend.config import RetentionConfig
from ravend.db.pacer import Pacer
from ravend.maintenance_report import Report, mb
from ravend.store import ROLLUP_TABLES, MysqlStore, SqliteStore, Store

DAY = 86400


def purge(store: Store, settings: RetentionConfig, stop: threading.Event | None = None, *,
          dry_run: bool = False, report: Report | None = None) -> Report:
    """Delete what the settings say may go; with dry_run, only count it."""
    stop = stop or threading.Event()
    report = report or Report(store.name)
    now = store.now()
    # Only what is rolled up may go (all of it when roll-ups are off).
    limit_id = (store.state("rollup_watermark") or 0) if settings.rollups else store.max_id()
    if isinstance(store, SqliteStore):
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
    if isinstance(store, SqliteStore):
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

