"""Bringing the hourly and daily roll-ups of one SQL store up to date, incrementally.

The arithmetic is ``ravend.rollup``'s (pure: no database, no clock); this module decides which
periods to recompute and fetches their raw readings through ``ravend.store``. The maintenance
thread (``ravend.maintenance``) runs it before every purge and every rollup_interval.

- **Incrementally.** ``rollup_watermark`` (in ``maintenance_state``) is the
  highest ``readings.id`` already rolled up (ids are a monotonic sequence: a purge never frees
  one for reuse, sql/sqlite/005_monotonic_ids.sql). Rows after it name the periods they touch:
  the hour (and local day) of each demand, and for a summation every hour from the summation
  before it to the one after it, since the energy between two summations is spread over that
  time (see ``ravend.rollup``). A price reading touches every hour from it to the next price
  (its cost changes), so a price that arrives late recomputes the hours it applies to. Only
  those periods are recomputed, from the raw readings. Periods that start before
  ``purged_before`` are never recomputed: their raw data may be gone. Only those of them
  that a new demand reading falls in and that have no roll-up at all are computed (history
  copied in later, ``ravend.calplug_history``: no roll-up of fuller data is overwritten).
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
"""

from __future__ import annotations

import bisect
import datetime as dt
import threading
from collections import defaultdict
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from ravend import rollup as ru
from ravend.maintenance_report import Report
from ravend.protocol.model import Kind
from ravend.store import Store
from ravend.tariff import Tariff

SUMMATIONS = (Kind.SUMMATION_DELIVERED.value, Kind.SUMMATION_RECEIVED.value)

#: New readings taken per roll-up step; their periods are recomputed before the next step.
ROLLUP_BATCH = 4_000
#: At most this many consecutive hours are recomputed from one fetch of raw readings.
HOURS_PER_FETCH = 168


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
            fresh = _unrolled_before(store, "rollup_hourly", meter, horizon,
                                     step.demand_hours.get(meter, ()))
            wanted = sorted(set(wanted) | fresh)
            report.hours += recompute_hours(store, meter, wanted, stop, pricing)
            days = {d.start: d for h in wanted for d in ru.days_overlapping(h, h + ru.HOUR, tz)}
            fresh_days = _unrolled_before(store, "rollup_daily", meter, horizon, days)
            for day in sorted(days.values(), key=lambda d: d.start):
                if stop.is_set():
                    break
                if day.start >= horizon or day.start in fresh_days:
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


def _unrolled_before(store: Store, table: str, meter: str, horizon: int,
                     starts: Iterable[int]) -> set[int]:
    """Periods before the purge horizon that have no roll-up yet (of ``starts``, the demand
    hours or their days). They are computed from the readings there are: no roll-up made from
    fuller data is overwritten. History copied in after a purge (a CalPlug database's,
    ``ravend.calplug_history``) is rolled up so; a period that has a roll-up keeps it (its raw
    readings may be gone)."""
    early = sorted(s for s in starts if s < horizon)
    return store.missing_rollups(table, meter, early) if early else set()


@dataclass(slots=True)
class Step:
    """What one roll-up step read: how many new rows, the last one's id, the hours they touch."""

    rows: int = 0
    last_id: int = 0
    skipped: int = 0  # rows whose meter time is meaningless: they touch no hour
    hours: dict[str, set[int]] = field(default_factory=lambda: defaultdict(set))
    demand_hours: dict[str, set[int]] = field(default_factory=lambda: defaultdict(set))


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
            step.demand_hours[meter].add(ru.hour_of(t))
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
