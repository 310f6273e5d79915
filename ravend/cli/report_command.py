"""``ravenctl report``: per local day, kWh, kW, cost and gaps, from the roll-ups of a store.

Thin: the range of days, the queries and the printing; the figures are ``ravend.report``'s.
It only reads (SQLite opened read-only), so it never disturbs the running service; the
roll-ups it reads are as fresh as the maintenance thread's last run ([retention]
rollup_interval). ravend.report and ravend.rollup are imported where they are used: ravenctl
imports this module for its parser whatever the command, and other commands must not pay for them.
"""

from __future__ import annotations

import argparse
import csv
import datetime as dt
import json
import sys
import time
from collections.abc import Callable
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from ravend.export_rows import plain
from ravend.plural import plural

if TYPE_CHECKING:
    from ravend import report as rp
    from ravend import rollup as ru
    from ravend.config import Config

NAME = "report"
EX_FAILED = 1
EX_NODATA = 2

CSV_COLUMNS = (
    "meter_mac", "day", "time_zone", "delivered_kwh", "received_kwh", "demand_avg_kw",
    "demand_max_kw", "cost", "export_credit", "net_cost", "currency", "gap_hours", "hours",
)


def add_parser(sub: Any, config_args: Callable[[argparse.ArgumentParser], None]) -> None:
    r = sub.add_parser(
        NAME, help="per day: kWh, average and peak kW, cost, gaps",
        description="Per meter and local day ([retention] time_zone): energy delivered and"
        " received, the mean and peak of the measured demand, the cost at the prices in effect"
        " ([tariff]), the export credit, and the gaps: hours without any reading. Read from the"
        " hourly and daily roll-ups that ravend's maintenance keeps (every rollup_interval), so"
        " it also covers days whose raw readings were purged. Energy a counter gained across a"
        " gap is spread over the gap's hours, so an outage shows as gaps, never as a spike.")
    config_args(r)
    when = r.add_mutually_exclusive_group()
    when.add_argument("--days", type=int, metavar="N",
                      help="the last N days, today included (default 7)")
    when.add_argument("--since", metavar="DATE",
                      help="first day (YYYY-MM-DD, or an ISO time or Unix seconds: its day)")
    r.add_argument("--until", metavar="DATE",
                   help="the day after the last (exclusive); default: through today")
    r.add_argument("--format", choices=["table", "csv", "json"], default="table")
    r.add_argument("--meter", metavar="MAC", help="only this meter (default: every meter)")
    r.add_argument("--store", choices=["sqlite", "mysql"], default="sqlite",
                   help="the store to read (default sqlite)")


def _date(text: str, tz: dt.tzinfo) -> dt.date:
    t = text.strip()
    try:
        return dt.date.fromisoformat(t)
    except ValueError:
        pass
    try:
        return dt.datetime.fromtimestamp(float(t), tz).date()
    except ValueError:
        pass
    try:
        when = dt.datetime.fromisoformat(t.replace("Z", "+00:00"))
    except ValueError:
        raise SystemExit(f"ravenctl: cannot read date {text!r} (YYYY-MM-DD, ISO 8601 time or"
                         " Unix seconds)") from None
    return (when.astimezone(tz) if when.tzinfo else when).date()


def day_range(args: argparse.Namespace, tz: dt.tzinfo, now: float) -> list[ru.Period]:
    """The local day periods the options name."""
    from ravend import rollup as ru

    today = dt.datetime.fromtimestamp(now, tz).date()
    end = _date(args.until, tz) if args.until else today + dt.timedelta(days=1)
    if args.since:
        start = _date(args.since, tz)
    else:
        count = 7 if args.days is None else args.days
        if count < 1:
            raise SystemExit("ravenctl: --days must be 1 or more")
        start = end - dt.timedelta(days=count)
    periods = []
    day = start
    while day < end:
        midnight = dt.datetime.combine(day, dt.time(), tz).timestamp()
        periods.append(ru.day_period(int(midnight), tz))
        day += dt.timedelta(days=1)
    return periods


def _open(args: argparse.Namespace, config: Config) -> Any:
    from ravend.store import MysqlStore, SqliteStore

    if args.store == "mysql":
        return MysqlStore(config.mysql)
    return SqliteStore(args.db or config.sqlite_path, readonly=True)


def run(args: argparse.Namespace, config: Config, now: float | None = None) -> int:
    from ravend import report as rp
    from ravend import rollup as ru
    from ravend.db import store_errors
    from ravend.report_query import fetch

    now = time.time() if now is None else now
    tz = ru.zone(config.retention.time_zone)
    periods = day_range(args, tz, now)
    if not periods:
        print("ravenctl: no days in that range", file=sys.stderr)
        return EX_NODATA
    try:
        store = _open(args, config)
    except FileNotFoundError as exc:
        print(f"ravenctl: {exc}", file=sys.stderr)
        return EX_NODATA
    except store_errors() as exc:
        print(f"ravenctl: {args.store}: {exc}", file=sys.stderr)
        return EX_FAILED
    try:
        daily, heard = fetch(store, periods, args.meter)
    except store_errors() as exc:
        print(f"ravenctl: {args.store}: {exc} (is the schema migrated? ravenctl db migrate)",
              file=sys.stderr)
        return EX_FAILED
    finally:
        store.close()
    meters = sorted(set(daily) | set(heard))
    if not meters:
        print(f"ravenctl: no roll-ups from {periods[0].day} to {periods[-1].day} (ravend"
              " makes them every [retention] rollup_interval)", file=sys.stderr)
        return EX_NODATA
    label = ru.zone_name(tz)
    reports = {m: rp.days(m, periods, label, daily.get(m, {}), heard.get(m, ()), now)
               for m in meters}
    {"table": print_table, "csv": print_csv, "json": print_json}[args.format](reports)
    return 0


def print_csv(reports: dict[str, list[rp.Day]]) -> None:
    from ravend import report as rp

    writer = csv.writer(sys.stdout)
    writer.writerow(CSV_COLUMNS)
    for days in reports.values():
        for day in days:
            row = rp.row(day)
            writer.writerow(["" if row[c] is None else plain(row[c]) for c in CSV_COLUMNS])


def print_json(reports: dict[str, list[rp.Day]]) -> None:
    """A JSON array, one day per line; decimals as JSON numbers written exactly as stored."""
    from ravend import report as rp

    lines = []
    for days in reports.values():
        for day in days:
            row = rp.row(day)
            parts = [f"{json.dumps(k)}: "
                     + (format(v, "f") if isinstance(v, Decimal) else json.dumps(v))
                     for k, v in row.items()]
            lines.append("{" + ", ".join(parts) + "}")
    print("[" + ",\n ".join(lines) + "]")


_HEAD = ("day", "kWh in", "kWh out", "avg kW", "peak kW", "cost", "credit", "net", "gaps")
_WIDTHS = (11, 10, 9, 8, 8, 9, 8, 9, 5)


def _line(cells: tuple[str, ...]) -> str:
    first, *rest = cells
    return f"{first:<{_WIDTHS[0]}}" + "".join(
        f" {c:>{w}}" for c, w in zip(rest, _WIDTHS[1:], strict=True))


def print_table(reports: dict[str, list[rp.Day]]) -> None:
    from ravend import report as rp

    k, c = rp.MILLI, rp.CENT
    for n, (meter, days) in enumerate(reports.items()):
        currencies = sorted({d.rollup.currency for d in days
                             if d.rollup is not None and d.rollup.currency})
        money = "/".join(currencies) or "no currency known"
        if n:
            print()
        print(f"meter {meter}  (days in {days[0].time_zone}; cost in {money})")
        print(_line(_HEAD))
        for d in days:
            r = d.rollup
            values = ((r.delivered_kwh, k), (r.received_kwh, k), (r.demand_avg_kw, k),
                      (r.demand_max_kw, k), (r.cost, c), (r.export_credit, c),
                      (d.net_cost, c)) if r is not None else ((None, k),) * 7
            print(_line((d.period.day or "", *(rp.rounded(v, q) for v, q in values),
                         str(d.gap_hours))))
        t = rp.totals(days)
        print(_line((plural(len(days), "day"), rp.rounded(t.delivered_kwh, k),
                     rp.rounded(t.received_kwh, k), rp.rounded(t.demand_avg_kw, k),
                     rp.rounded(t.demand_max_kw, k), rp.rounded(t.cost, c),
                     rp.rounded(t.export_credit, c), rp.rounded(t.net_cost, c),
                     str(t.gap_hours))))
        if t.gap_hours:
            print(f"gaps: {plural(t.gap_hours, 'hour')} without any reading; the energy counted"
                  " across them is spread evenly over them")
        if t.unknown_cost_days:
            print(f"cost unknown on {plural(t.unknown_cost_days, 'day')}: no price in effect for"
                  " some of their energy (see [tariff] in ravend.conf(5)); the totals leave them"
                  " out")
