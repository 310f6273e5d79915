"""Cost (issue #12): prices from the meter or [tariff], costs in the roll-ups split at every
price change, the export credit, late prices, `ravenctl report`, and the MQTT cost sensor.

The acceptance test writes a known week of readings, rolls it up through `ravenctl purge` and
checks `ravenctl report` to the cent against figures this file computes on its own, minute by
minute, with Decimal."""

from __future__ import annotations

import csv
import datetime as dt
import io
import itertools
import json
import sqlite3
from decimal import ROUND_HALF_UP, Context, Decimal, localcontext
from fractions import Fraction
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from ravend.cli import ravenctl
from ravend.config import ConfigError, MqttConfig, TariffConfig, load
from ravend.protocol.model import KIND_UNITS, Kind, Reading, scale
from ravend.retention import SqliteStore, Store, tariff_of, update_rollups
from ravend.rollup import HOUR, DemandStats, hour_period, spread, summarize_stats
from ravend.running_cost import RunningCost
from ravend.sinks.mqtt import MqttSink
from ravend.sinks.mysql import MysqlSink
from ravend.sinks.sqlite import SqliteSink
from ravend.tariff import Plan, PricePoint, Tariff, parse_periods
from tests.helpers.mqtt import validate_ha_sensor
from tests.helpers.mysql import mysql_config, query
from tests.helpers.readings import DEVICE, METER

UTC = dt.UTC
H0 = 1_700_000_000 - 1_700_000_000 % HOUR  # an hour boundary
DAY0 = H0 - H0 % 86400  # a UTC midnight
D = Decimal


def F(text: str) -> Fraction:
    return Fraction(Decimal(text))


def reading(kind: Kind, t: int, raw: int, divisor: int = 1000, unit: str | None = None
            ) -> Reading:
    return Reading(METER, kind, t, t + 0.25, raw, 1, divisor, scale(raw, 1, divisor),
                   unit or KIND_UNITS[kind], DEVICE)


def price(t: int, amount: str, currency: str = "USD") -> Reading:
    """A PriceCluster reading as the decoder makes it: Price ÷ 10^TrailingDigits."""
    value = Decimal(amount)
    digits = max(0, -value.as_tuple().exponent)  # type: ignore[operator]
    raw = int(value.scaleb(digits))
    return reading(Kind.PRICE, t, raw, 10**digits, f"{currency}/kWh")


# --- the arithmetic ---------------------------------------------------------------------------


def test_an_interval_that_spans_a_price_change_is_split_at_the_change() -> None:
    # 1.2 kWh between 10:50 and 11:10; the price goes from 0.20 to 0.30 at 11:05.
    t = H0 + 10 * HOUR
    prices = Tariff().timeline(t - HOUR, t + 3 * HOUR, [
        PricePoint(t - HOUR, F("0.20"), "USD"), PricePoint(t + HOUR + 300, F("0.30"), "USD")],
        UTC)
    got = spread([(t + 3000, F("100")), (t + 4200, F("101.2"))],
                 [hour_period(t), hour_period(t + HOUR)], prices)
    assert [e.energy for e in got] == [F("0.6"), F("0.6")]
    assert got[0].cost() == F("0.12")  # 0.6 kWh at 0.20
    # 11:00-11:05 at 0.20, 11:05-11:10 at 0.30: 0.3 kWh each.
    assert got[1].cost() == F("0.3") * F("0.20") + F("0.3") * F("0.30")
    assert got[1].currency == "USD"


def test_cost_is_unknown_where_no_price_is_in_effect_and_zero_energy_costs_nothing() -> None:
    t = H0
    prices = Tariff(source="meter").timeline(t, t + 2 * HOUR,
                                             [PricePoint(t + HOUR, F("0.25"), "EUR")], UTC)
    periods = [hour_period(t), hour_period(t + HOUR)]
    rows = summarize_stats(METER, periods, [DemandStats(), DemandStats()],
                           [(t, F(1)), (t + HOUR, F(2)), (t + 2 * HOUR, F(2))], [], prices)
    assert rows[0].delivered_kwh == 1 and rows[0].cost is None  # before the first price
    assert rows[1].delivered_kwh == 0 and rows[1].cost == 0 and rows[1].currency == "EUR"


def test_export_is_credited_only_when_export_rate_is_set() -> None:
    t = H0
    periods = [hour_period(t)]
    received = [(t, F("5")), (t + HOUR, F("7.5"))]
    prices = Tariff(plan=Plan.flat(F("0.30"))).timeline(t, t + HOUR, [], UTC)
    plain = summarize_stats(METER, periods, [DemandStats()], [(t, F(0)), (t + HOUR, F(0))],
                            received, prices)
    assert plain[0].received_kwh == D("2.5") and plain[0].export_credit is None
    credited = summarize_stats(METER, periods, [DemandStats()], [(t, F(0)), (t + HOUR, F(0))],
                               received, prices, F("0.08"), "USD")
    assert credited[0].export_credit == D("0.2") and credited[0].cost == 0
    assert credited[0].currency == "USD"


def test_time_of_use_hours_are_local_hours_across_a_dst_change() -> None:
    berlin = ZoneInfo("Europe/Berlin")
    plan = Plan(parse_periods("Mon-Fri 16-21: 0.45; Sat,Sun 22-6: 0.10; *: 0.28"))
    # Sunday 2024-03-31: clocks go from 02:00 to 03:00 (UTC+1 → UTC+2).
    lo = int(dt.datetime(2024, 3, 30, 12, tzinfo=berlin).timestamp())
    hi = int(dt.datetime(2024, 4, 1, 23, tzinfo=berlin).timestamp())
    steps = Tariff(plan=plan).timeline(lo, hi, [], berlin).steps
    local = [(dt.datetime.fromtimestamp(s.start, berlin).strftime("%a %H:%M %z"), s.price)
             for s in steps]
    assert local == [
        ("Sat 12:00 +0100", F("0.28")), ("Sat 22:00 +0100", F("0.10")),
        ("Sun 06:00 +0200", F("0.28")), ("Sun 22:00 +0200", F("0.10")),
        # Each day's own hours: 22-6 on Sat,Sun does not reach into Monday morning.
        ("Mon 00:00 +0200", F("0.28")), ("Mon 16:00 +0200", F("0.45")),
        ("Mon 21:00 +0200", F("0.28"))]


def test_auto_uses_the_meter_price_where_there_is_one_and_takes_zero_for_none() -> None:
    plan = Plan.flat(F("0.28"))
    meter = [PricePoint(H0 + HOUR, F("0.20"), "USD"), PricePoint(H0 + 2 * HOUR, F(0), "USD")]
    steps = Tariff(plan=plan, currency="EUR").timeline(H0, H0 + 3 * HOUR, meter, UTC).steps
    assert [(s.start - H0, s.price, s.currency) for s in steps] == [
        (0, F("0.28"), "EUR"), (HOUR, F("0.20"), "EUR"), (2 * HOUR, F("0.28"), "EUR")]
    literal = Tariff(source="meter", plan=plan).timeline(H0, H0 + 3 * HOUR, meter, UTC).steps
    assert [(s.start - H0, s.price) for s in literal] == [
        (0, None), (HOUR, F("0.20")), (2 * HOUR, F(0))]
    configured = Tariff(source="config", plan=plan).timeline(H0, H0 + 3 * HOUR, meter, UTC)
    assert [(s.start - H0, s.price, s.currency) for s in configured.steps] == [
        (0, F("0.28"), "USD")]  # the meter's currency when [tariff] names none


# --- [tariff] ---------------------------------------------------------------------------------


def write_conf(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


@pytest.mark.parametrize(("periods", "expected"), [
    ("Mon-Fry 16-21: 0.45; *: 0.28", r"'Fry' is not a day"),
    ("Mon-Fri 16-21: 0.45", r"a price for every hour of the week \(Mon 0:00 has none"),
    ("Mon-Fri 16-21 0.45; *: 0.28", r"no ': PRICE'"),
    ("Mon 16-25: 0.45; *: 0.28", r"'25' is not an hour from 0 to 24"),
    ("Mon 5-5: 0.45; *: 0.28", r"'5-5' is an empty range of hours"),
    ("Mon Tue: 0.45; *: 0.28", r"days given twice"),
    ("Mon: cheap; *: 0.28", r"a decimal price such as 0.28"),
])
def test_time_of_use_syntax_errors_are_one_line(tmp_path: Path, periods: str,
                                                expected: str) -> None:
    conf = write_conf(tmp_path / "ravend.conf", f"[tariff]\nperiods = {periods}\n")
    with pytest.raises(ConfigError, match=expected) as info:
        load(conf)
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith(f"{conf}:2: [tariff] periods = ")


@pytest.mark.parametrize(("body", "expected"), [
    ("rate = 0.28\nperiods = *: 0.28\n", r"periods: set rate or periods, not both"),
    ("source = config\n", r"source: config needs a rate or periods"),
    ("currency = dollars\n", r"expected an ISO 4217 currency"),
    ("export_rate = lots\n", r"expected a decimal price"),
    ("source = utility\n", r"expected one of auto, meter, config"),
])
def test_tariff_keys_are_checked(tmp_path: Path, body: str, expected: str) -> None:
    with pytest.raises(ConfigError, match=expected):
        load(write_conf(tmp_path / "ravend.conf", f"[tariff]\n{body}"))


def test_tariff_section_parses(tmp_path: Path) -> None:
    conf = write_conf(tmp_path / "ravend.conf",
                      "[retention]\ntime_zone = UTC\n[tariff]\nsource = config\n"
                      "periods = Mon-Fri 7-23: 0.3120\n  Sat,Sun: 0.2200\n  *: 0.1500\n"
                      "currency = 978\nexport_rate = 0.0825\n")
    config = load(conf)
    assert config.tariff.currency == "EUR" and config.tariff.export_rate == F("0.0825")
    tariff = tariff_of(config)
    assert tariff.time_zone == "UTC" and tariff.plan is not None
    monday = int(dt.datetime(2024, 1, 1, tzinfo=UTC).timestamp())
    assert [tariff.plan.price_at(monday + h * HOUR, UTC) for h in (6, 7, 22, 23)] == [
        F("0.15"), F("0.312"), F("0.312"), F("0.15")]
    assert TariffConfig().source == "auto" and tariff_of(load(tmp_path / "none")).plan is None


# --- on the stores ----------------------------------------------------------------------------


def hours_of_use(start: int, hours: int, kwh_per_hour: int = 2) -> list[Reading]:
    """A demand a minute and summations every 5 minutes (delivered rises kwh_per_hour)."""
    out = []
    for t in range(start, start + hours * HOUR + 1, 60):
        out.append(reading(Kind.DEMAND, t, kwh_per_hour * 1000))
        if t % 300 == 0:
            out.append(reading(Kind.SUMMATION_DELIVERED, t,
                               1_000_000 + (t - start) * kwh_per_hour * 1000 // HOUR))
    return out


class Env:
    def __init__(self, kind: str, tmp_path: Path, server: Any, name: str) -> None:
        self.kind = kind
        if kind == "sqlite":
            self.path = tmp_path / "ravend.db"
            self.sink: Any = SqliteSink(self.path)
        else:
            self.server = server
            self.db = server.new_database(name)
            self.cfg = mysql_config(server, self.db)
            self.sink = MysqlSink(self.cfg)
        self.sink.open()

    def write(self, readings: list[Reading]) -> None:
        for i in range(0, len(readings), 2000):
            self.sink.write(readings[i:i + 2000], [])

    def store(self) -> Store:
        from ravend.retention import MysqlStore

        return SqliteStore(self.path) if self.kind == "sqlite" else MysqlStore(self.cfg)

    def rollup(self, tariff: Tariff, tz: str = "UTC") -> Any:
        store = self.store()
        try:
            return update_rollups(store, tz, tariff=tariff)
        finally:
            store.close()

    def rows(self, sql: str) -> list[tuple]:
        if self.kind == "sqlite":
            with sqlite3.connect(self.path) as conn:
                return conn.execute(sql).fetchall()
        return query(self.server, self.db, sql)

    def costs(self, table: str = "rollup_hourly") -> list[tuple]:
        return [(start, None if cost is None else D(str(cost)),
                 None if credit is None else D(str(credit)), currency)
                for start, cost, credit, currency in self.rows(
                    f"SELECT period_start, cost, export_credit, currency FROM {table}"
                    f" ORDER BY period_start")]


@pytest.fixture(params=["sqlite", "mysql"])
def env(request, tmp_path: Path):
    server = request.getfixturevalue("mariadb_server") if request.param == "mysql" else None
    e = Env(request.param, tmp_path, server, request.node.name)
    yield e
    e.sink.close()


def test_a_late_price_recomputes_the_hours_it_applies_to(env: Env) -> None:
    flat = Tariff(plan=Plan.flat(F("0.20")), currency="USD", time_zone="UTC")
    env.write(hours_of_use(DAY0, 6))
    env.rollup(flat)
    # 2 kWh an hour at 0.20; the hour of the last reading has no energy known, so no cost.
    assert [c[1] for c in env.costs()] == [D("0.4")] * 6 + [None]

    # The meter's price of 02:30 arrives late: 0.50 from then on (auto: the meter's wins).
    env.write([price(DAY0 + 2 * HOUR + 1800, "0.50")])
    report = env.rollup(flat)
    assert report.rolled_up == 1 and report.hours == 5  # 02:00 to 06:00, the last rolled up
    assert [c[1] for c in env.costs()] == [D("0.4"), D("0.4"), D("0.7"), D(1), D(1), D(1),
                                           None]
    # A later one, also late: only its own hours change.
    env.write([price(DAY0 + 4 * HOUR, "0.10")])
    report = env.rollup(flat)
    assert report.hours == 3
    assert [c[1] for c in env.costs()] == [D("0.4"), D("0.4"), D("0.7"), D(1), D("0.2"),
                                           D("0.2"), None]
    assert env.costs("rollup_daily") == [(DAY0, D("2.9"), None, "USD")]


def test_a_changed_tariff_recomputes_the_rollups(tmp_path: Path) -> None:
    env = Env("sqlite", tmp_path, None, "changed")
    env.write(hours_of_use(H0, 3))
    env.rollup(Tariff(plan=Plan.flat(F("0.20"))))
    assert env.costs()[0][1:] == (D("0.4"), None, None)
    report = env.rollup(Tariff(plan=Plan.flat(F("0.30")), currency="CHF"))
    assert any("[tariff] changed" in n for n in report.notes)
    assert report.rolled_up == len(hours_of_use(H0, 3))
    assert env.costs()[0][1:] == (D("0.6"), None, "CHF")
    assert env.rollup(Tariff(plan=Plan.flat(F("0.30")), currency="CHF")).rolled_up == 0
    env.sink.close()


def test_an_existing_database_is_upgraded_and_its_rollups_recomputed(tmp_path: Path) -> None:
    from ravend.migrations import migrations
    from ravend.sinks.sqlite import connect, migrate, reading_row

    path = tmp_path / "old.db"
    conn = connect(path)
    conn.execute("CREATE TABLE schema_version (version INTEGER PRIMARY KEY, name TEXT NOT NULL,"
                 " applied_at REAL NOT NULL)")
    older = [m for m in migrations("sqlite") if m.name != "rollup_cost"]
    cost_version = next(m.version for m in migrations("sqlite") if m.name == "rollup_cost")
    for m in older[:cost_version - 1]:
        for statement in m.sql.split(";\n"):
            conn.execute(statement)
        conn.execute("INSERT INTO schema_version VALUES (?, ?, 0)", (m.version, m.name))
    readings = hours_of_use(H0, 2)
    conn.executemany("INSERT INTO readings (meter_mac, kind, key_time, meter_time, received_at,"
                     " device_mac, raw, multiplier, divisor, value, unit)"
                     " VALUES (?,?,?,?,?,?,?,?,?,?,?)", [reading_row(r)[:11] for r in readings])
    conn.execute("INSERT INTO maintenance_state VALUES ('rollup_watermark', ?)", (len(readings),))
    assert cost_version in migrate(conn)
    assert conn.execute("SELECT COUNT(*) FROM maintenance_state WHERE name ="
                        " 'rollup_watermark'").fetchone()[0] == 0
    conn.close()
    store = SqliteStore(path)
    try:
        report = update_rollups(store, "UTC", tariff=Tariff(plan=Plan.flat(F("0.25"))))
    finally:
        store.close()
    assert report.rolled_up == len(readings)
    with sqlite3.connect(path) as c:
        assert c.execute("SELECT cost FROM rollup_hourly ORDER BY period_start").fetchall() == [
            ("0.500000000",), ("0.500000000",), (None,)]


def mixed_day(start: int) -> list[Reading]:
    """Use, export 11:00-14:00, meter prices from 09:42 (a change at 15:07), one gap."""
    out = []
    delivered, received = 2_000_000, 50_000
    for t in range(start, start + 24 * HOUR + 1, 60):
        hour = (t - start) // HOUR
        if 19 <= hour < 21:
            continue  # a gap
        exporting = 11 <= hour < 14
        if t % 300 == 0:
            out.append(reading(Kind.SUMMATION_DELIVERED, t, delivered))
            out.append(reading(Kind.SUMMATION_RECEIVED, t, received))
        out.append(reading(Kind.DEMAND, t, -660 if exporting else 300 + 17 * hour))
        if t % 300 == 240:
            delivered += 0 if exporting else 25 + hour
            received += 55 if exporting else 0
        if t - start == 9 * HOUR + 42 * 60:
            out.append(price(t, "0.1875"))
        if t - start == 15 * HOUR + 7 * 60:
            out.append(price(t, "0.2650"))
    return out


def test_mysql_rollup_costs_equal_sqlite_and_report_reads_both(tmp_path: Path, mariadb_server,
                                                               capsys) -> None:
    day0 = H0 - H0 % 86400
    readings = mixed_day(day0)
    tariff = Tariff(plan=Plan(parse_periods("16-21: 0.45; *: 0.28")), currency="USD",
                    export_rate=F("0.08"), time_zone="UTC")
    lite = Env("sqlite", tmp_path, None, "lite")
    my = Env("mysql", tmp_path, mariadb_server, "costs")
    for e in (lite, my):
        e.write(readings)
        e.rollup(tariff)
    for table in ("rollup_hourly", "rollup_daily"):
        assert lite.costs(table) == my.costs(table)
    assert any(c[1] is not None and c[2] for c in lite.costs())  # cost and credit both seen

    conf = write_conf(tmp_path / "ravend.conf",
                      f"[service]\nstate_dir = {tmp_path}\n[retention]\ntime_zone = UTC\n"
                      f"[mysql]\nhost = {mariadb_server.host}\nport = {mariadb_server.port}\n"
                      f"user = {mariadb_server.user}\npassword = {mariadb_server.password}\n"
                      f"database = {my.db}\n")
    day = dt.datetime.fromtimestamp(day0, UTC).date()
    outputs = []
    for store in ("sqlite", "mysql"):
        assert ravenctl.main(["report", "--config", str(conf), "--store", store, "--since",
                              day.isoformat(), "--until", str(day + dt.timedelta(days=1)),
                              "--format", "csv"]) == 0
        outputs.append(capsys.readouterr().out)
    assert outputs[0] == outputs[1]
    (row,) = csv.DictReader(io.StringIO(outputs[0]))
    assert row["gap_hours"] == "2" and row["currency"] == "USD"
    for e in (lite, my):
        e.sink.close()


# --- the acceptance week ----------------------------------------------------------------------

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
    sink = SqliteSink(state / "ravend.db")
    sink.open()
    for i in range(0, len(readings), 5000):
        sink.write(readings[i:i + 5000], [])
    sink.close()
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


# --- MQTT and Home Assistant ------------------------------------------------------------------


def test_running_cost_counts_each_counter_rise_once_at_the_price_in_effect() -> None:
    running = RunningCost(Tariff(export_rate=F("0.05"), time_zone="UTC"), UTC, clock=lambda: H0)
    feed = [price(H0, "0.20"), reading(Kind.SUMMATION_DELIVERED, H0, 10_000),
            reading(Kind.SUMMATION_RECEIVED, H0, 0),
            price(H0 + 1800, "0.40"),
            reading(Kind.SUMMATION_DELIVERED, H0 + HOUR, 12_000),  # 2 kWh: half at each price
            reading(Kind.SUMMATION_RECEIVED, H0 + HOUR, 1_000)]
    assert [running.feed(r) for r in feed] == [False, True, True, False, True, True]
    assert [running.feed(r) for r in feed] == [False] * 6  # a retried batch
    state = running.state(METER)
    assert state is not None
    assert (state["cost"], state["export_credit"], state["net_cost"], state["currency"]) == (
        "0.6", "0.05", "0.55", "USD")
    assert state["since"] == dt.datetime.fromtimestamp(H0, UTC).isoformat()
    assert state["key_time"] == H0 + HOUR
    assert RunningCost(Tariff(), UTC).state(METER) is None


def test_mqtt_publishes_the_running_cost_and_announces_a_monetary_total() -> None:
    sink = MqttSink(MqttConfig(enabled=True), tariff=Tariff(
        plan=Plan.flat(F("0.30")), currency="EUR", export_rate=F("0.1"), time_zone="UTC"))
    batch = [reading(Kind.SUMMATION_DELIVERED, H0, 1000),
             reading(Kind.SUMMATION_RECEIVED, H0, 0),
             reading(Kind.SUMMATION_DELIVERED, H0 + HOUR, 3000),
             reading(Kind.SUMMATION_RECEIVED, H0 + HOUR, 500)]
    sink._learn(batch, [])
    messages = sink._discovery() + sink._messages(batch, [])
    (cost,) = [m for m in messages if m.topic == f"ravend/{METER}/cost/running"]
    body = json.loads(cost.payload)
    assert (body["cost"], body["export_credit"], body["net_cost"]) == ("0.6", "0.05", "0.55")
    configs = {m.topic: json.loads(m.payload) for m in messages
               if m.topic.endswith(("/cost/config", "/export_credit/config"))}
    assert len(configs) == 2
    for topic, config in configs.items():
        validate_ha_sensor(topic, config)
        assert (config["device_class"], config["state_class"], config["unit_of_measurement"]) \
            == ("monetary", "total", "EUR")
        assert config["state_topic"] == cost.topic
        assert config["last_reset_value_template"] == "{{ value_json.since }}"
    # No price known at all: no cost message, no cost sensor.
    bare = MqttSink(MqttConfig(enabled=True), tariff=Tariff())
    bare._learn(batch, [])
    assert not [m for m in bare._discovery() + bare._messages(batch, []) if "cost" in m.topic]
