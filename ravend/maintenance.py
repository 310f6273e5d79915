"""Maintenance of the SQL stores: roll-ups, then purges, in a thread of their own.

The queries are ``ravend.store``'s, the engines' ways ``ravend.db``'s.

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
from typing import Any

from ravend import rollup as ru
from ravend.config import Config, RetentionConfig
from ravend.db import store_errors
from ravend.db.pacer import Pacer
from ravend.db.sqlite import no_database
from ravend.memory import release_freed_memory
from ravend.plural import plural
from ravend.protocol.model import Kind
from ravend.store import ROLLUP_TABLES, MysqlStore, SqliteStore, Store
from ravend.tariff import Tariff, tariff_of
from ravend.timetext import iso_utc

# The name it has always logged under (journal filters and the tests use it).
log = logging.getLogger("ravend.retention")

DAY = 86400
SUMMATIONS = (Kind.SUMMATION_DELIVERED.value, Kind.SUMMATION_RECEIVED.value)

#: New readings taken per roll-up step; their periods are recomputed before the next step.
ROLLUP_BATCH = 4_000
#: At most this many consecutive hours are recomputed from one fetch of raw readings.
HOURS_PER_FETCH = 168
#: The first cycle waits this long after the start (the service settles first).
FIRST_DELAY = 30.0


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
