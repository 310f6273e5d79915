"""`ravenctl report` (ravend.cli): a known week of readings, rolled up through `ravenctl purge`,
reported to the cent against figures this file computes on its own, minute by minute, with
Decimal; and what it says when there is nothing."""

from __future__ import annotations

import csv
import datetime as dt
import io
import itertools
import json
from decimal import ROUND_HALF_UP, Context, Decimal, localcontext
from pathlib import Path
from zoneinfo import ZoneInfo

from ravend.cli import ravenctl
from ravend.protocol.model import Kind, Reading
from ravend.rollup import HOUR
from ravend.sinks.sqlite import SqliteSink
from tests.helpers.cost import D, price, reading, write_conf
from tests.helpers.readings import store_readings

PHOENIX = ZoneInfo("America/Phoenix")  # UTC-7, no DST: local days are not UTC days
WEEK = dt.date(2025, 3, 3)  # a Monday
T0 = int(dt.datetime.combine(WEEK, dt.time(), PHOENIX).timestamp())
DAYS = 7
PERIODS = "Mon-Fri 16-21: 0.45; Sat,Sun 8-20: 0.30; *: 0.28"
EXPORT_RATE = "0.08"


def local(day: int, hour: int, minute: int = 0) -> int:
    return T0 + day * 86400 + hour * HOUR + minute * 60


GAP = (local(3, 20), local(4, 2))  # Thursday 20:00 to Friday 02:00: no reading at all
METER_PRICES = [  # (from, price): the meter's prices (sent every 15 minutes)
    (local(2, 10, 30), "0.1875"),  # Wednesday 10:30: the utility starts sending a price
    (local(3, 9, 42), "0.2650"),  # Thursday 09:42: a change mid-hour, mid-interval
    (local(3, 18), "0"),  # Thursday 18:00: 0, the meter's "no price": the TOU tariff again
]


def exporting(t: int) -> bool:
    when = dt.datetime.fromtimestamp(t, PHOENIX)
    return when.weekday() >= 5 and 11 <= when.hour < 14  # weekend middays: solar export


def week_readings() -> list[Reading]:
    """A demand a minute, summations every 5 minutes, the meter's prices every 15 minutes."""
    out = []
    delivered, received = 7_000_000, 300_000  # Wh
    for t in range(T0, T0 + DAYS * 86400 + 1, 60):
        block = (t - T0) // 300
        use = 0 if exporting(t) else 20 + block % 7 * 3 + (t - T0) // 86400 * 2  # Wh / 5 min
        export = 45 + block % 3 * 5 if exporting(t) else 0
        if not GAP[0] <= t < GAP[1]:
            out.append(reading(Kind.DEMAND, t, (use - export) * 12))  # W: Wh per 5 min x 12
            if t % 300 == 0:
                out.append(reading(Kind.SUMMATION_DELIVERED, t, delivered))
                out.append(reading(Kind.SUMMATION_RECEIVED, t, received))
            sent = [p for start, p in METER_PRICES if start <= t]
            if sent and (t % 900 == 0 or t in {start for start, _ in METER_PRICES}):
                out.append(price(t, sent[-1]))
        if t % 300 == 240:  # the counters move at the end of each 5 minutes
            delivered += use
            received += export
    return out


def expected_week(readings: list[Reading]) -> dict[str, dict[str, Decimal]]:
    """Per local day, minute by minute: what the counters say was used (spread evenly between
    two counter readings: over the gap too) times the price of that minute."""
    def tou(t: int) -> Decimal:
        when = dt.datetime.fromtimestamp(t, PHOENIX)
        if when.weekday() < 5 and 16 <= when.hour < 21:
            return D("0.45")
        if when.weekday() >= 5 and 8 <= when.hour < 20:
            return D("0.30")
        return D("0.28")

    def price_at(t: int) -> Decimal:
        sent = [D(p) for start, p in METER_PRICES if start <= t]
        return sent[-1] if sent and sent[-1] else tou(t)

    out: dict[str, dict[str, Decimal]] = {}
    with localcontext(Context(prec=60)):
        for kind, key in ((Kind.SUMMATION_DELIVERED, "in"), (Kind.SUMMATION_RECEIVED, "out")):
            counter = [(r.key_time, D(r.raw)) for r in readings if r.kind is kind]
            for (t0, v0), (t1, v1) in itertools.pairwise(counter):
                per_minute = (v1 - v0) / 1000 / ((t1 - t0) // 60)  # kWh
                for t in range(t0, t1, 60):
                    day = out.setdefault(dt.datetime.fromtimestamp(t, PHOENIX).date().isoformat(),
                                         {"in": D(0), "out": D(0), "cost": D(0)})
                    day[key] += per_minute
                    if key == "in":
                        day["cost"] += per_minute * price_at(t)
        for day in out.values():
            day["credit"] = day["out"] * D(EXPORT_RATE)
            day["net"] = day["cost"] - day["credit"]
    return out


def cents(value: Decimal | str) -> Decimal:
    return D(value).quantize(D("0.01"), rounding=ROUND_HALF_UP)


def test_report_of_a_known_week_matches_an_independent_computation(tmp_path: Path,
                                                                     capsys) -> None:
    state = tmp_path / "state"
    state.mkdir()
    readings = week_readings()
    store_readings(state / "ravend.db", readings)
    conf = write_conf(tmp_path / "ravend.conf",
                      f"[service]\nstate_dir = {state}\n"
                      f"[retention]\nraw_days = 0\ntime_zone = America/Phoenix\n"
                      f"[tariff]\nperiods = {PERIODS}\ncurrency = USD\n"
                      f"export_rate = {EXPORT_RATE}\n")
    assert ravenctl.main(["purge", "--config", str(conf)]) == 0
    assert f"rolled up {len(readings)} new readings" in capsys.readouterr().out

    span = ["--since", WEEK.isoformat(), "--until", str(WEEK + dt.timedelta(days=DAYS))]
    assert ravenctl.main(["report", "--config", str(conf), *span, "--format", "csv"]) == 0
    rows = list(csv.DictReader(io.StringIO(capsys.readouterr().out)))
    expected = expected_week(readings)
    assert [r["day"] for r in rows] == [str(WEEK + dt.timedelta(days=i)) for i in range(DAYS)]
    for row in rows:
        want = expected[row["day"]]
        got = (D(row["delivered_kwh"]), D(row["received_kwh"]))
        assert got == (want["in"].quantize(D("1e-9")), want["out"].quantize(D("1e-9"))), row
        assert (cents(row["cost"]), cents(row["export_credit"]), cents(row["net_cost"])) == (
            cents(want["cost"]), cents(want["credit"]), cents(want["net"])), row["day"]
        assert row["currency"] == "USD" and row["time_zone"] == "America/Phoenix"
    # The outage: Thursday 20:00-24:00 and Friday 00:00-02:00, shown as gaps ...
    assert [int(r["gap_hours"]) for r in rows] == [0, 0, 0, 4, 2, 0, 0]
    assert all(int(r["hours"]) == 24 for r in rows)
    # ... never as a spike: the peak is the highest demand the meter reported that day.
    friday = [r for r in readings if r.kind is Kind.DEMAND
              and local(4, 0) <= r.key_time < local(5, 0)]
    assert D(rows[4]["demand_max_kw"]) == max(r.value for r in friday)
    assert D(rows[5]["received_kwh"]) > 0 and D(rows[0]["received_kwh"]) == 0

    assert ravenctl.main(["report", "--config", str(conf), *span]) == 0
    table = capsys.readouterr().out
    assert "cost in USD" in table and "gaps: 6 hours without any reading" in table
    total = next(line for line in table.splitlines() if line.startswith("7 days")).split()
    week = [expected[str(WEEK + dt.timedelta(days=i))] for i in range(DAYS)]
    week_cost = sum(d["cost"] for d in week)
    week_in = sum(d["in"] for d in week)
    assert D(total[2]) == week_in.quantize(D("0.001"), rounding=ROUND_HALF_UP)
    assert D(total[6]) == cents(week_cost)
    assert total[-1] == "6"

    assert ravenctl.main(["report", "--config", str(conf), *span, "--format", "json"]) == 0
    days = json.loads(capsys.readouterr().out)
    assert [d["gap_hours"] for d in days] == [0, 0, 0, 4, 2, 0, 0]
    assert cents(str(days[3]["cost"])) == cents(expected["2025-03-06"]["cost"])


def test_report_says_when_there_is_nothing(tmp_path: Path, capsys) -> None:
    sink = SqliteSink(tmp_path / "ravend.db")
    sink.open()
    sink.close()
    conf = write_conf(tmp_path / "ravend.conf", f"[service]\nstate_dir = {tmp_path}\n")
    assert ravenctl.main(["report", "--config", str(conf), "--days", "3"]) == 2
    assert "no roll-ups from" in capsys.readouterr().err
