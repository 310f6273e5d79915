"""What the API answers, read from a ``ravend.store.Store``: meters, the live figures, the
roll-ups with their gaps, the per-day report and the stored device state.

Every figure comes from the store as ravend and its maintenance wrote it: demand from the
newest reading, energy and cost from the roll-ups (``ravend.rollup``), days as ``ravenctl
report`` counts them (``ravend.report``). Nothing here writes.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import json
from collections.abc import Iterator
from decimal import Decimal
from fractions import Fraction
from typing import Any

from ravend import report as rp
from ravend import rollup as ru
from ravend.db import READING_COLUMNS
from ravend.export_rows import json_line, reading_values, rollup_columns, rollup_values
from ravend.protocol.model import Kind
from ravend.report_query import fetch
from ravend.store import Store
from ravend.web.jsontext import dec

ROLLUP_VALUES = ("demand_avg_kw", "demand_min_kw", "demand_max_kw", "delivered_kwh",
                 "received_kwh", "cost", "export_credit")
_ROLLUP_SELECT = ("period_start, demand_samples, " + ", ".join(ROLLUP_VALUES)
                  + ", energy_seconds, counter_resets, currency")
RESOLUTIONS = ("hourly", "daily", "monthly")


def meters(store: Store) -> list[str]:
    """Every meter with readings, one search of the (meter, kind, time) index each."""
    out: list[str] = []
    mac = store.scalar("SELECT MIN(meter_mac) FROM readings")
    while mac is not None:
        out.append(mac)
        mac = store.scalar("SELECT MIN(meter_mac) FROM readings WHERE meter_mac > ?", (mac,))
    return out


def newest_id(store: Store) -> int:
    return int(store.scalar("SELECT COALESCE(MAX(id), 0) FROM readings"))


def _latest(store: Store, meter: str, kind: str) -> tuple[Any, ...] | None:
    rows = store.rows("SELECT key_time, received_at, raw, multiplier, divisor, scale, unit"
                      " FROM readings WHERE meter_mac = ? AND kind = ?"
                      " ORDER BY key_time DESC LIMIT 1", (meter, kind))
    return rows[0] if rows else None


def _daily(store: Store, meter: str, lo: int, hi: int) -> list[tuple[Any, ...]]:
    return store.rows(f"SELECT {_ROLLUP_SELECT} FROM rollup_daily WHERE meter_mac = ?"
                      " AND period_start >= ? AND period_start < ? ORDER BY period_start",
                      (meter, lo, hi))


def _energy(rows: list[tuple[Any, ...]]) -> dict[str, Any]:
    """kWh in and out, cost, credit of some daily roll-up rows, summed as ravenctl report does."""
    days = [rp.DailyRollup(int(r[1]), dec(r[2]), dec(r[4]), dec(r[5]), dec(r[6]), dec(r[7]),
                           dec(r[8]), r[11]) for r in rows]
    t = rp.totals([rp.Day("", ru.Period(0, 0), "", d, 0, 0) for d in days])
    currency = next((d.currency for d in days if d.currency), None)
    return {"delivered_kwh": t.delivered_kwh, "received_kwh": t.received_kwh, "cost": t.cost,
            "export_credit": t.export_credit, "net_cost": t.net_cost, "currency": currency}


def month_start(t: float, tz: dt.tzinfo) -> int:
    day = dt.datetime.fromtimestamp(t, tz).date().replace(day=1)
    return int(dt.datetime.combine(day, dt.time(), tz).timestamp())


def now(store: Store, meter: str, tz: dt.tzinfo, at: float) -> dict[str, Any]:
    """The live figures of one meter: the newest demand (negative: exporting), today's and
    this month's energy and cost so far (daily roll-ups), the age of the newest reading."""
    demand = _latest(store, meter, Kind.DEMAND.value)
    kw = None
    if demand is not None:
        kw = ru.to_decimal(ru.exact(int(demand[2]), int(demand[3]), int(demand[4]), demand[5]))
    today = ru.day_period(int(at), tz)
    received = store.rows("SELECT received_at, id FROM readings ORDER BY id DESC LIMIT 1")
    last = float(received[0][0]) if received else None
    return {
        "meter_mac": meter,
        "demand_kw": kw,
        "direction": None if kw is None else ("export" if kw < 0 else "import"),
        "demand_time": None if demand is None else int(demand[0]),
        "today": {"day": today.day, **_energy(_daily(store, meter, today.start, today.end))},
        "month": {"start": month_start(at, tz),
                  **_energy(_daily(store, meter, month_start(at, tz), today.end))},
        "last_reading_at": last,
        "last_reading_age_s": None if last is None else round(max(0.0, at - last), 1),
        "newest_id": int(received[0][1]) if received else 0,
        "link": link(store),
    }


def _states(store: Store) -> list[tuple[Any, ...]]:
    return store.rows("SELECT device_mac, meter_mac, tag, received_at, body FROM device_state"
                      " ORDER BY device_mac, meter_mac, tag")


def _body(text: Any) -> Any:
    try:
        return json.loads(text)
    except (TypeError, ValueError):
        return text


def link(store: Store) -> dict[str, Any] | None:
    """The stick's link to the meter as it last said (its ConnectionStatus)."""
    for _dev, _meter, tag, at, body in _states(store):
        if tag == "ConnectionStatus":
            b = _body(body)
            if isinstance(b, dict):
                return {"status": b.get("status"), "link_strength": b.get("link_strength"),
                        "received_at": float(at)}
    return None


def device(store: Store, meter: str | None) -> dict[str, Any]:
    """DeviceInfo, MeterInfo and the rest of the stick's latest states, the meters, and the
    price in effect (the meter's newest price reading)."""
    states = [{"device_mac": d, "meter_mac": m or None, "tag": t, "received_at": float(a),
               "body": _body(b)} for d, m, t, a, b in _states(store)]
    info = next((s["body"] for s in states if s["tag"] == "DeviceInfo"), None)
    all_meters = meters(store)
    price = None
    chosen = meter or (all_meters[0] if all_meters else None)
    if chosen:
        row = _latest(store, chosen, Kind.PRICE.value)
        if row is not None:
            price = {"price": ru.to_decimal(ru.exact(int(row[2]), int(row[3]), int(row[4]))),
                     "unit": row[6], "time": int(row[0])}
    firmware = info.get("fw_version") if isinstance(info, dict) else None
    return {"device_info": info, "firmware": firmware, "meters": all_meters,
            "link": link(store), "price": price, "states": states}


# --- roll-ups --------------------------------------------------------------------------------


def periods(resolution: str, lo: int, hi: int, tz: dt.tzinfo) -> list[ru.Period]:
    """The periods of a resolution that overlap [lo, hi): UTC hours, or local days/months."""
    if hi <= lo:
        return []
    if resolution == "hourly":
        return [ru.hour_period(h) for h in range(ru.hour_of(lo), hi, ru.HOUR)]
    days = [d for d in ru.days_overlapping(lo, hi, tz) if d.start < hi]
    if resolution == "daily":
        return days
    months: list[ru.Period] = []
    for d in days:
        start = month_start(d.start, tz)
        if not months or months[-1].start != start:
            months.append(ru.Period(start, d.end, (d.day or "")[:7]))
        else:
            months[-1] = ru.Period(start, d.end, months[-1].day)
    return months


def _point(p: ru.Period, row: tuple[Any, ...] | None, at: float) -> dict[str, Any]:
    values = {name: dec(row[2 + i]) if row else None for i, name in enumerate(ROLLUP_VALUES)}
    samples = int(row[1]) if row else 0
    return {"start": p.start, "end": p.end, "day": p.day, "demand_samples": samples, **values,
            "energy_seconds": int(row[9]) if row else 0,
            "currency": row[11] if row else None,
            # Ended, and not one demand reading: nothing was heard from the meter.
            "gap": p.end <= at and samples == 0}


def _merge(p: ru.Period, points: list[dict[str, Any]], at: float) -> dict[str, Any]:
    """A month from its days: sums, the samples-weighted mean and the peak demand."""
    def summed(name: str) -> Decimal | None:
        known = [x[name] for x in points if x[name] is not None]
        return sum(known, Decimal(0)) if known else None

    samples = sum(x["demand_samples"] for x in points)
    weighted = None
    if samples:
        total = sum((x["demand_avg_kw"] * x["demand_samples"] for x in points
                     if x["demand_avg_kw"] is not None), Decimal(0))
        weighted = ru.to_decimal(Fraction(total) / samples)
    highs = [x["demand_max_kw"] for x in points if x["demand_max_kw"] is not None]
    lows = [x["demand_min_kw"] for x in points if x["demand_min_kw"] is not None]
    return {"start": p.start, "end": p.end, "day": p.day, "demand_samples": samples,
            "demand_avg_kw": weighted, "demand_min_kw": min(lows) if lows else None,
            "demand_max_kw": max(highs) if highs else None,
            **{n: summed(n) for n in ("delivered_kwh", "received_kwh", "cost", "export_credit")},
            "energy_seconds": sum(x["energy_seconds"] for x in points),
            "currency": next((x["currency"] for x in points if x["currency"]), None),
            "gap": p.end <= at and samples == 0}


def rollups(store: Store, meter: str, resolution: str, lo: int, hi: int, tz: dt.tzinfo,
            at: float) -> list[dict[str, Any]]:
    """One point per period in [lo, hi), also where nothing was rolled up (values null): a
    gap is a run of points with ``gap`` true and no demand, never one spike."""
    wanted = periods(resolution, lo, hi, tz)
    if not wanted:
        return []
    table = "rollup_hourly" if resolution == "hourly" else "rollup_daily"
    found = {int(r[0]): r for r in store.rows(
        f"SELECT {_ROLLUP_SELECT} FROM {table} WHERE meter_mac = ? AND period_start >= ?"
        " AND period_start < ? ORDER BY period_start", (meter, wanted[0].start, wanted[-1].end))}
    if resolution != "monthly":
        return [_point(p, found.get(p.start), at) for p in wanted]
    days = periods("daily", wanted[0].start, wanted[-1].end, tz)
    out = []
    for m in wanted:
        inside = [_point(d, found.get(d.start), at) for d in days if m.start <= d.start < m.end]
        out.append(_merge(m, inside, at))
    return out


# --- report and export ------------------------------------------------------------------------


def report(store: Store, meter: str | None, days: list[ru.Period], tz: dt.tzinfo,
           at: float) -> list[dict[str, Any]]:
    """``ravenctl report``'s days (its own queries and rows), with each meter's totals."""
    if not days:
        return []
    daily, heard = fetch(store, days, meter)
    out = []
    for mac in sorted(set(daily) | set(heard)):
        rows = rp.days(mac, days, ru.zone_name(tz), daily.get(mac, {}), heard.get(mac, ()), at)
        t = rp.totals(rows)
        out.append({"meter_mac": mac, "days": [rp.row(d) for d in rows],
                    "totals": {"delivered_kwh": t.delivered_kwh, "received_kwh": t.received_kwh,
                               "demand_avg_kw": t.demand_avg_kw,
                               "demand_max_kw": t.demand_max_kw, "cost": t.cost,
                               "export_credit": t.export_credit, "net_cost": t.net_cost,
                               "gap_hours": t.gap_hours}})
    return out


#: Rows per query of a download. Each chunk is its own short read, so that a download taking
#: minutes (a slow client, a year of readings) never holds one read snapshot meanwhile: on a
#: SQLite WAL store that would stop ravend's checkpoints and grow the -wal file.
CHUNK = 2000


def chunks(store: Store, table: str, columns: tuple[str, ...], keys: tuple[str, str],
           where: str, params: list[Any]) -> Iterator[list[tuple[Any, ...]]]:
    """The rows of ``table`` matching ``where``, ordered by ``keys`` (a unique pair, the
    first indexed), CHUNK at a time: each query starts just after the last row the one before
    gave (the same first key and a greater second, or a greater first), so rows that share
    the first key (readings of one time) are neither lost nor repeated at a chunk's edge,
    whatever is written or purged meanwhile."""
    first, second = keys
    picked = columns + tuple(k for k in keys if k not in columns)
    at = (picked.index(first), picked.index(second))
    sql = f"SELECT {', '.join(picked)} FROM {table} WHERE {where}"
    order = f" ORDER BY {first}, {second} LIMIT ?"
    rows = store.rows(sql + order, [*params, CHUNK])
    while rows:
        yield [r[:len(columns)] for r in rows]
        if len(rows) < CHUNK:
            return
        last = rows[-1]
        rows = store.rows(sql + f" AND {first} >= ? AND ({first} > ? OR {second} > ?)" + order,
                          [*params, last[at[0]], last[at[0]], last[at[1]], CHUNK])


def export_lines(store: Store, fmt: str, rollup: str | None, meter: str | None, lo: int,
                 hi: int) -> Iterator[str]:
    """``ravenctl export``'s lines for a range: raw readings, or hourly or daily roll-ups;
    CSV (with its header) or JSON lines, the same columns and values."""
    if rollup:
        columns = rollup_columns(rollup)
        table, keys = f"rollup_{rollup}", ("period_start", "meter_mac")
    else:
        columns = READING_COLUMNS
        table, keys = "readings", ("key_time", "id")
    where = f"{keys[0]} >= ? AND {keys[0]} < ?"
    params: list[Any] = [lo, hi]
    if meter:
        # Unary +: walk the time index and skip other meters' rows, never the meter's whole
        # history sorted again for every chunk.
        where += " AND +meter_mac = ?"
        params.append(meter)
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    if fmt == "csv":
        writer.writerow(columns)
    for chunk in chunks(store, table, columns, keys, where, params):
        for row in chunk:
            values = rollup_values(row, rollup == "daily") if rollup else reading_values(row)
            if fmt == "csv":
                writer.writerow(["" if v is None else v for v in values])
            elif rollup:
                buffer.write(json_line(columns, values) + "\n")
            else:
                buffer.write(json.dumps(dict(zip(columns, values, strict=True))) + "\n")
            if buffer.tell() > 16384:
                yield buffer.getvalue()
                buffer.seek(0)
                buffer.truncate()
    yield buffer.getvalue()
