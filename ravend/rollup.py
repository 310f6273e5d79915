"""Hourly and daily roll-ups from raw readings: pure arithmetic, no database, no clock.

Given the demand samples in a period and the summation readings around it, ``summarize`` gives
one ``Rollup`` per period, computed exactly with ``Fraction`` on the raw integers and rounded
once (half-even, 9 places) when stored.

Demand: the number of samples and their mean, minimum and maximum in kW (a plain mean: devices
push demand at a steady rate).

Energy: from the deltas of consecutive summation readings (delivered and received counted
apart). The energy between two summations is spread evenly over the time between them, and each
period gets the share that overlaps it: a delta of 1.2 kWh between 10:50 and 11:10 gives 0.6 kWh
to 10:00-11:00 and 0.6 kWh to 11:00-12:00, and a delta across a gap of three days is spread over
the 72 hours instead of landing in the hour of the later reading. That is the most honest
statement of what is known (the counter advanced by so much over that time), it does not
depend on when roll-ups run, and the periods always add up to the counter's advance.
A summation lower than the one before is a counter reset or a replaced meter: that interval
counts no energy (a negative delta is not consumption) and is counted in ``counter_resets`` of
the period where the lower reading falls; the next interval counts normally from the new value.
``energy_seconds`` says how much of the period is covered by delivered intervals, so a partly
known hour (the current one, or one in a gap at the edge of the data) is recognisable.

Cost: each share of delivered energy is cut again where the price changes (``ravend.tariff``)
and each piece is costed at the price in effect, so an interval of 10:50-11:10 with a new price
at 11:05 costs 15 minutes' worth at the old price and 5 at the new one. A period with delivered
energy at a time of no known price has no cost (NULL: unknown, not zero). Received energy is
credited at the flat ``export_rate`` when one is configured, else not at all (NULL).
"""

from __future__ import annotations

import bisect
import datetime as dt
import itertools
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from decimal import ROUND_HALF_EVEN, Context, Decimal
from fractions import Fraction
from typing import Any
from zoneinfo import ZoneInfo

from ravend.tariff import Timeline

HOUR = 3600

#: Stored values are rounded to this many decimal places (DECIMAL(30,9) in MySQL).
PLACES = 9
_QUANTUM = Decimal(1).scaleb(-PLACES)
_CTX = Context(prec=80)


def exact(raw: int, multiplier: int, divisor: int, scale: Any = 1) -> Fraction:
    """raw * multiplier / divisor * scale exactly; 0 as multiplier or divisor means 1. scale is
    the meter's [meter <MAC>] scale as stored (a Decimal, or SQLite's REAL: its shortest repr
    is the decimal the config gave, at most 13 digits)."""
    value = Fraction(raw * (multiplier or 1), divisor or 1)
    return value if scale == 1 else value * Fraction(str(scale))


def to_decimal(value: Fraction | None) -> Decimal | None:
    """Round an exact value once, half-even, to PLACES decimals."""
    if value is None:
        return None
    q = _CTX.divide(Decimal(value.numerator), Decimal(value.denominator))
    return q.quantize(_QUANTUM, rounding=ROUND_HALF_EVEN, context=_CTX)


@dataclass(frozen=True, slots=True)
class Period:
    start: int  # Unix s, inclusive
    end: int  # Unix s, exclusive
    day: str | None = None  # local date (daily periods only)


@dataclass(frozen=True, slots=True)
class Rollup:
    meter_mac: str
    period: Period
    demand_samples: int
    demand_avg_kw: Decimal | None
    demand_min_kw: Decimal | None
    demand_max_kw: Decimal | None
    delivered_kwh: Decimal | None
    received_kwh: Decimal | None
    energy_seconds: int
    counter_resets: int
    cost: Decimal | None = None  # delivered energy at the prices in effect
    export_credit: Decimal | None = None  # received energy at export_rate
    currency: str | None = None


# --- periods ----------------------------------------------------------------------------------


def hour_of(t: int) -> int:
    return t - t % HOUR


def hour_period(start: int) -> Period:
    return Period(start, start + HOUR)


def zone(name: str) -> dt.tzinfo:
    """``local`` → this host's zone (TZ, else /etc/localtime, else UTC); else an IANA name."""
    if name == "UTC":
        return dt.UTC
    if name != "local":
        return ZoneInfo(name)
    import os

    tz = os.environ.get("TZ", "").lstrip(":")
    if tz:
        try:
            return ZoneInfo(tz)
        except (KeyError, ValueError, OSError):  # ZoneInfoNotFoundError is a KeyError
            pass
    try:
        # Debian links /etc/localtime to /usr/share/zoneinfo/<name>: keep the name.
        target = os.path.realpath("/etc/localtime")
        if "/zoneinfo/" in target:
            return ZoneInfo(target.split("/zoneinfo/", 1)[1])
    except (KeyError, ValueError, OSError):
        pass
    try:
        with open("/etc/localtime", "rb") as handle:
            return ZoneInfo.from_file(handle, key="localtime")
    except (OSError, ValueError):
        return dt.UTC


def zone_name(tz: dt.tzinfo) -> str:
    """The name stored with daily roll-ups: the IANA key, or the zone's own name."""
    return str(getattr(tz, "key", None) or tz)


def day_period(t: int, tz: dt.tzinfo) -> Period:
    """The local day that contains Unix time t: [local midnight, next local midnight)."""
    date = dt.datetime.fromtimestamp(t, tz).date()
    return _day(date, tz)


def _day(date: dt.date, tz: dt.tzinfo) -> Period:
    start = dt.datetime.combine(date, dt.time(), tz).timestamp()
    end = dt.datetime.combine(date + dt.timedelta(days=1), dt.time(), tz).timestamp()
    return Period(int(start), int(end), date.isoformat())


def days_overlapping(start: int, end: int, tz: dt.tzinfo) -> list[Period]:
    """The local days that overlap [start, end)."""
    out = [day_period(start, tz)]
    while out[-1].end < end:
        out.append(day_period(out[-1].end, tz))
    return out


# --- arithmetic -------------------------------------------------------------------------------

Sample = tuple[int, Fraction]  # (key_time, exact value)


@dataclass(slots=True)
class _Energy:
    energy: Fraction
    seconds: int
    resets: int
    known: bool  # some interval overlaps the period
    # Energy per price: multiplied out once at the end, not once per counter interval.
    by_price: dict[Fraction, Fraction] = field(default_factory=dict)
    unpriced: bool = False  # some energy fell where no price is known
    currency: str | None = None

    def _price(self, share: Fraction, a: int, b: int, prices: Timeline) -> None:
        whole = b - a
        for s, e, step in prices.segments(a, b):
            if step.price is None:
                self.unpriced = True
                continue
            part = share if e - s == whole else share * (e - s) / whole
            self.by_price[step.price] = self.by_price.get(step.price, Fraction(0)) + part
            self.currency = step.currency or self.currency

    def cost(self) -> Fraction | None:
        if not self.known or self.unpriced:
            return None
        return sum((p * e for p, e in self.by_price.items()), Fraction(0))


def spread(samples: Iterable[Sample], periods: Sequence[Period],
           prices: Timeline | None = None) -> list[_Energy]:
    """Energy of each period from consecutive counter readings (sorted by time, see above);
    with ``prices``, its cost as well."""
    out = [_Energy(Fraction(0), 0, 0, False) for _ in periods]
    starts = [p.start for p in periods]
    for (t0, v0), (t1, v1) in itertools.pairwise(samples):
        if t1 <= t0:
            continue
        delta = v1 - v0
        if delta < 0:
            i = bisect.bisect_right(starts, t1) - 1
            if i >= 0 and t1 < periods[i].end:
                out[i].resets += 1
            continue
        i = max(0, bisect.bisect_right(starts, t0) - 1)
        while i < len(periods) and periods[i].start < t1:
            p = periods[i]
            a, b = max(t0, p.start), min(t1, p.end)
            if b > a:
                e = out[i]
                share = delta * (b - a) / (t1 - t0)
                e.energy += share
                e.seconds += b - a
                e.known = True
                if prices is not None and delta:
                    e._price(share, a, b, prices)
            i += 1
    return out


@dataclass(slots=True)
class DemandStats:
    """Count, exact sum, minimum and maximum of a period's demand: all a roll-up keeps of it.

    Built from groups that a database aggregated (``add_group``), so a day of one-second
    samples never has to be held in memory, or from single samples (``add``).
    """

    count: int = 0
    total: Fraction = Fraction(0)
    low: Fraction | None = None
    high: Fraction | None = None

    def add(self, value: Fraction) -> None:
        self.count += 1
        self.total += value
        self.low = value if self.low is None else min(self.low, value)
        self.high = value if self.high is None else max(self.high, value)

    def add_group(self, count: int, raw_sum: int, raw_min: int, raw_max: int,
                  multiplier: int, divisor: int, scale: Any = 1) -> None:
        """Samples sharing one multiplier, divisor and scale (never negative, so min raw is
        min kW)."""
        if not count:
            return
        self.count += count
        self.total += exact(raw_sum, multiplier, divisor, scale)
        for value in (exact(raw_min, multiplier, divisor, scale),
                      exact(raw_max, multiplier, divisor, scale)):
            self.low = value if self.low is None else min(self.low, value)
            self.high = value if self.high is None else max(self.high, value)


def summarize(meter_mac: str, periods: Sequence[Period], demand: Iterable[Sample],
              delivered: Iterable[Sample], received: Iterable[Sample]) -> list[Rollup]:
    """One Rollup per period (sorted, not overlapping), from demand samples.

    ``demand``: samples anywhere (those outside every period are ignored); ``delivered`` and
    ``received``: see ``summarize_stats``.
    """
    starts = [p.start for p in periods]
    stats = [DemandStats() for _ in periods]
    for t, v in demand:
        i = bisect.bisect_right(starts, t) - 1
        if i >= 0 and t < periods[i].end:
            stats[i].add(v)
    return summarize_stats(meter_mac, periods, stats, delivered, received)


def summarize_stats(meter_mac: str, periods: Sequence[Period], demand: Sequence[DemandStats],
                    delivered: Iterable[Sample], received: Iterable[Sample],
                    prices: Timeline | None = None,
                    export_rate: Fraction | None = None,
                    currency: str | None = None) -> list[Rollup]:
    """One Rollup per period from its demand statistics and the counter readings.

    ``delivered`` and ``received``: the counter readings in the periods plus the last one before
    the first period and the first one after the last, sorted by time. Each is walked once, so
    it may be a stream from the database. ``prices``: in effect over the periods (no cost
    without); ``export_rate``: per kWh received (no credit without); ``currency``: of the
    credit when no price says which.
    """
    if prices is not None and not prices.priced:
        prices = None  # no price anywhere: unknown cost, even of hours that used nothing
    got_in = spread(delivered, periods, prices)
    got_out = spread(received, periods)
    rows = []
    for p, d, e_in, e_out in zip(periods, demand, got_in, got_out, strict=True):
        cost = e_in.cost() if prices is not None else None
        credit = e_out.energy * export_rate if export_rate is not None and e_out.known else None
        unit = None
        if cost is not None or credit is not None:
            unit = (e_in.currency or (prices.at(p.start).currency if prices else None)
                    or currency)
        rows.append(Rollup(
            meter_mac=meter_mac,
            period=p,
            demand_samples=d.count,
            demand_avg_kw=to_decimal(d.total / d.count) if d.count else None,
            demand_min_kw=to_decimal(d.low),
            demand_max_kw=to_decimal(d.high),
            delivered_kwh=to_decimal(e_in.energy) if e_in.known else None,
            received_kwh=to_decimal(e_out.energy) if e_out.known else None,
            energy_seconds=e_in.seconds,
            counter_resets=e_in.resets + e_out.resets,
            cost=to_decimal(cost),
            export_credit=to_decimal(credit),
            currency=unit,
        ))
    return rows
