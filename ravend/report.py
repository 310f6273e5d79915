"""Per-day energy and cost from the roll-ups (``ravenctl report``): pure, no database.

A day's figures are its daily roll-up, as the maintenance thread stored it: energy delivered
and received (from the counters, spread over the time between two counter readings), the mean
and peak of the measured demand, and the cost at the prices in effect. None of these can show
an outage as a spike: the energy a counter gained over a gap is spread evenly over the gap's
hours, and the peak is the highest demand the meter actually reported.

Gaps are the day's hours (the hourly roll-ups' hours, which are UTC hours) that have ended and
hold no demand reading: ravend asks for the demand when the stick stops pushing it, so an hour
without one is an hour in which nothing was heard from the meter.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from decimal import ROUND_HALF_UP, Decimal
from typing import Any

from ravend.rollup import HOUR, Period, hour_of

CENT = Decimal("0.01")
MILLI = Decimal("0.001")


@dataclass(frozen=True, slots=True)
class DailyRollup:
    """The columns of a rollup_daily row that a report uses."""

    demand_samples: int
    demand_avg_kw: Decimal | None
    demand_max_kw: Decimal | None
    delivered_kwh: Decimal | None
    received_kwh: Decimal | None
    cost: Decimal | None
    export_credit: Decimal | None
    currency: str | None


@dataclass(frozen=True, slots=True)
class Day:
    meter_mac: str
    period: Period
    time_zone: str
    rollup: DailyRollup | None  # None: nothing was rolled up for this day
    hours: int  # hours of the day that have ended
    gap_hours: int  # of those, hours without any demand reading

    @property
    def net_cost(self) -> Decimal | None:
        """What the day cost after the export credit (the cost when there is no credit)."""
        r = self.rollup
        if r is None or r.cost is None:
            return None
        return r.cost - (r.export_credit or 0)


def days(meter_mac: str, periods: Sequence[Period], time_zone: str,
         daily: Mapping[int, DailyRollup], heard: Iterable[int], now: float) -> list[Day]:
    """One Day per local day period.

    ``daily``: the meter's daily roll-ups by period start; ``heard``: the starts of its hours
    with at least one demand reading; ``now``: hours that have not ended are no gaps yet.
    """
    heard_hours = set(heard)
    out = []
    for p in periods:
        ended = [h for h in range(hour_of(p.start), p.end, HOUR) if h + HOUR <= now]
        gaps = sum(1 for h in ended if h not in heard_hours)
        out.append(Day(meter_mac, p, time_zone, daily.get(p.start), len(ended), gaps))
    return out


def row(day: Day) -> dict[str, Any]:
    """A day as the report's columns (``ravenctl report --format csv/json``, the web's report):
    one mapping, so both write the same names and values."""
    r = day.rollup
    values: dict[str, Any] = {"meter_mac": day.meter_mac, "day": day.period.day,
                              "time_zone": day.time_zone}
    for name in ("delivered_kwh", "received_kwh", "demand_avg_kw", "demand_max_kw", "cost",
                 "export_credit"):
        values[name] = getattr(r, name) if r is not None else None
    values["net_cost"] = day.net_cost
    values["currency"] = r.currency if r is not None else None
    values["gap_hours"] = day.gap_hours
    values["hours"] = day.hours
    return values


@dataclass(frozen=True, slots=True)
class Totals:
    delivered_kwh: Decimal | None
    received_kwh: Decimal | None
    demand_avg_kw: Decimal | None  # weighted by the days' samples
    demand_max_kw: Decimal | None
    cost: Decimal | None
    export_credit: Decimal | None
    net_cost: Decimal | None
    gap_hours: int
    unknown_cost_days: int  # days with energy but no cost: no price in effect for some of it


def _sum(values: Iterable[Decimal | None]) -> Decimal | None:
    known = [v for v in values if v is not None]
    return sum(known, Decimal(0)) if known else None


def totals(rows: Sequence[Day]) -> Totals:
    rolled = [d.rollup for d in rows if d.rollup is not None]
    samples = sum(r.demand_samples for r in rolled if r.demand_avg_kw is not None)
    weighted = _sum(r.demand_avg_kw * r.demand_samples for r in rolled
                    if r.demand_avg_kw is not None)
    peaks = [r.demand_max_kw for r in rolled if r.demand_max_kw is not None]
    return Totals(
        delivered_kwh=_sum(r.delivered_kwh for r in rolled),
        received_kwh=_sum(r.received_kwh for r in rolled),
        demand_avg_kw=weighted / samples if weighted is not None and samples else None,
        demand_max_kw=max(peaks) if peaks else None,
        cost=_sum(r.cost for r in rolled),
        export_credit=_sum(r.export_credit for r in rolled),
        net_cost=_sum(d.net_cost for d in rows),
        gap_hours=sum(d.gap_hours for d in rows),
        unknown_cost_days=sum(1 for r in rolled if r.cost is None and r.delivered_kwh),
    )


def rounded(value: Decimal | None, places: Decimal) -> str:
    """For people: money to the cent, half up as on a bill; '-' for unknown."""
    if value is None:
        return "-"
    return str(value.quantize(places, rounding=ROUND_HALF_UP))
