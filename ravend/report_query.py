"""What a per-day report (``ravenctl report``, ravend-web's /api/v1/report) reads from a store:
the daily roll-ups and the hours with a demand reading, for ``ravend.report`` to count.

Read-only queries with ``?`` placeholders over any ``ravend.store.Store``. Below both the
command and the web, so that neither depends on the other.
"""

from __future__ import annotations

from collections import defaultdict
from decimal import Decimal
from typing import Any

from ravend import report as rp
from ravend import rollup as ru

_DAILY = ("meter_mac, period_start, demand_samples, demand_avg_kw, demand_max_kw, delivered_kwh,"
          " received_kwh, cost, export_credit, currency")


def _dec(value: Any) -> Decimal | None:
    return None if value is None else Decimal(str(value))


def fetch(store: Any, periods: list[ru.Period], meter: str | None
          ) -> tuple[dict[str, dict[int, rp.DailyRollup]], dict[str, set[int]]]:
    """Daily roll-ups by meter and start, and the hours with a demand reading, by meter."""
    lo, hi = periods[0].start, periods[-1].end
    where = "period_start >= ? AND period_start < ?" + (" AND meter_mac = ?" if meter else "")
    params: tuple[Any, ...] = (lo, hi, meter) if meter else (lo, hi)
    daily: dict[str, dict[int, rp.DailyRollup]] = defaultdict(dict)
    for mac, start, n, avg, peak, kwh_in, kwh_out, cost, credit, currency in store.rows(
            f"SELECT {_DAILY} FROM rollup_daily WHERE {where}", params):
        daily[mac][int(start)] = rp.DailyRollup(
            int(n), _dec(avg), _dec(peak), _dec(kwh_in), _dec(kwh_out), _dec(cost),
            _dec(credit), currency)
    heard: dict[str, set[int]] = defaultdict(set)
    for mac, start in store.rows(
            f"SELECT meter_mac, period_start FROM rollup_hourly WHERE {where}"
            " AND demand_samples > 0", (ru.hour_of(lo), *params[1:])):
        heard[mac].add(int(start))
    return daily, heard
