"""Costs in the roll-ups (ravend.rollup): energy spread over hours and split at every price
change, unknown cost where no price is in effect, and the export credit."""

from __future__ import annotations

from ravend.rollup import HOUR, DemandStats, hour_period, spread, summarize_stats
from ravend.tariff import Plan, PricePoint, Tariff
from tests.helpers.cost import H0, UTC, D, F
from tests.helpers.readings import METER


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
