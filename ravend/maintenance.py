"""Maintenance of the SQL stores: roll-ups, then purges, in a thread of their own.

Each cycle works on its own connections (never the sinks'), brings the hourly and daily
roll-ups up to date (``ravend.rollup_update``), and, when a purge is due, deletes what the
[retention] settings say may go (``ravend.purge``). What a pass did is one ``Report`` per store
(``ravend.maintenance_report``); the queries are ``ravend.store``'s, the engines' ways
``ravend.db``'s.

The thread sleeps between cycles (``Event.wait``); it never spins. Errors of one store are
logged in one line and retried next cycle; they never stop the service.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable

from ravend.config import Config, RetentionConfig
from ravend.db import store_errors
from ravend.db.sqlite import no_database
from ravend.maintenance_report import Report
from ravend.memory import release_freed_memory
from ravend.purge import purge
from ravend.rollup_update import ROLLUP_BATCH, update_rollups
from ravend.store import MysqlStore, SqliteStore, Store
from ravend.tariff import Tariff, tariff_of

# The name it has always logged under (journal filters and the tests use it).
log = logging.getLogger("ravend.retention")

#: The first cycle waits this long after the start (the service settles first).
FIRST_DELAY = 30.0


def stores(config: Config, *, create: bool = False) -> list[Callable[[], Store]]:
    """Openers of the stores that [sqlite] and [mysql] enable."""
    openers: list[Callable[[], Store]] = []
    if config.sqlite.enabled:
        path = config.sqlite_path

        def open_sqlite() -> Store:
            if not create and not path.exists():
                raise no_database(path)
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
