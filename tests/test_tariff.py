"""The tariff (ravend.tariff): time-of-use hours are local hours, and source = auto takes the
meter's price where there is one."""

from __future__ import annotations

import datetime as dt
from zoneinfo import ZoneInfo

from ravend.rollup import HOUR
from ravend.tariff import Plan, PricePoint, Tariff, parse_periods
from tests.helpers.cost import H0, UTC, F


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
