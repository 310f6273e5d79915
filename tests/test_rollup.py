"""Roll-up arithmetic: exact values, energy spread over gaps, counter resets, local days."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal
from fractions import Fraction
from zoneinfo import ZoneInfo

from ravend.rollup import (
    HOUR,
    Period,
    day_period,
    days_overlapping,
    exact,
    hour_period,
    spread,
    summarize,
    to_decimal,
)

H0 = 1_700_000_000 - 1_700_000_000 % HOUR  # an hour boundary
METER = "0x00135003001234ab"


def kwh(x: str) -> Fraction:
    return Fraction(Decimal(x))


def hours(n: int, start: int = H0) -> list[Period]:
    return [hour_period(start + i * HOUR) for i in range(n)]


def test_exact_treats_zero_multiplier_and_divisor_as_one() -> None:
    assert exact(1482, 1, 1000) == Fraction(1482, 1000)
    assert exact(7, 0, 0) == 7
    assert exact(-5, 3, 7) == Fraction(-15, 7)


def test_values_are_rounded_once_half_even_to_nine_places() -> None:
    assert to_decimal(Fraction(1, 3)) == Decimal("0.333333333")
    assert to_decimal(Fraction(5, 10**10)) == Decimal("0.000000000")  # half to even: down
    assert to_decimal(Fraction(15, 10**10)) == Decimal("0.000000002")
    assert format(to_decimal(Fraction(1, 10**9)), "f") == "0.000000001"


def test_demand_mean_min_max_and_samples_per_hour() -> None:
    demand = [(H0 + 8 * i, exact(1000 + i, 1, 1000)) for i in range(450)]  # 1 h of pushes
    demand.append((H0 + HOUR + 5, exact(-250, 1, 1000)))
    rows = summarize(METER, hours(2), demand, [], [])
    first, second = rows
    assert first.demand_samples == 450
    assert first.demand_min_kw == Decimal("1.000000000")
    assert first.demand_max_kw == Decimal("1.449000000")
    assert first.demand_avg_kw == Decimal("1.224500000")
    assert (second.demand_samples, second.demand_avg_kw) == (1, Decimal("-0.250000000"))
    assert first.delivered_kwh is None and first.energy_seconds == 0  # no summations: unknown


def test_energy_between_two_summations_is_spread_over_the_time_between_them() -> None:
    # 10:50 → 13:10 (140 minutes), 2.8 kWh: 0.02 kWh a minute.
    t0, t1 = H0 + 50 * 60, H0 + 3 * HOUR + 10 * 60
    delivered = [(t0, kwh("100.000")), (t1, kwh("102.800"))]
    rows = summarize(METER, hours(4), [], delivered, [])
    assert [r.delivered_kwh for r in rows] == [Decimal("0.200000000"), Decimal("1.200000000"),
                                               Decimal("1.200000000"), Decimal("0.200000000")]
    assert [r.energy_seconds for r in rows] == [600, 3600, 3600, 600]
    assert sum(r.delivered_kwh for r in rows) == Decimal("2.8")


def test_spread_shares_are_exact_before_rounding() -> None:
    # 1 kWh over 3 hours and 1 second: the shares are not finite decimals, their sum is 1.
    t0 = H0
    delivered = [(t0, kwh("0")), (t0 + 3 * HOUR + 1, kwh("1"))]
    energy = spread(delivered, hours(4))
    assert sum(e.energy for e in energy) == 1
    assert energy[0].energy == Fraction(3600, 10801)


def test_a_counter_that_goes_down_counts_no_energy_and_is_counted_as_a_reset() -> None:
    delivered = [(H0 + 600, kwh("5000.0")), (H0 + 1200, kwh("5000.5")),
                 (H0 + 1800, kwh("3.0")),  # meter replaced: its counter starts low
                 (H0 + 2400, kwh("3.25"))]
    (row,) = summarize(METER, hours(1), [], delivered, [])
    assert row.delivered_kwh == Decimal("0.750000000")  # 0.5 before, 0.25 after, nothing between
    assert row.counter_resets == 1
    assert row.energy_seconds == 1200  # the reset interval is not covered


def test_delivered_and_received_are_counted_apart() -> None:
    delivered = [(H0, kwh("10")), (H0 + HOUR, kwh("11"))]
    received = [(H0, kwh("2")), (H0 + HOUR, kwh("2.4"))]
    (row,) = summarize(METER, hours(1), [], delivered, received)
    assert (row.delivered_kwh, row.received_kwh) == (Decimal("1.000000000"),
                                                    Decimal("0.400000000"))


def test_readings_outside_the_periods_only_bound_the_intervals() -> None:
    delivered = [(H0 - HOUR, kwh("0")), (H0 + 2 * HOUR, kwh("3"))]
    (row,) = summarize(METER, [hour_period(H0)], [(H0 - 1, kwh("9"))], delivered, [])
    assert row.delivered_kwh == Decimal("1.000000000")
    assert row.demand_samples == 0


def test_local_days_follow_the_time_zone_and_dst() -> None:
    berlin = ZoneInfo("Europe/Berlin")
    spring = dt.datetime(2024, 3, 31, 12, tzinfo=berlin).timestamp()
    day = day_period(int(spring), berlin)
    assert day.day == "2024-03-31"
    assert day.end - day.start == 23 * HOUR
    assert day.start == dt.datetime(2024, 3, 30, 23, tzinfo=dt.UTC).timestamp()
    autumn = day_period(int(dt.datetime(2024, 10, 27, 12, tzinfo=berlin).timestamp()), berlin)
    assert autumn.end - autumn.start == 25 * HOUR
    # An hour of Kolkata (UTC+5:30) straddles two local days.
    kolkata = ZoneInfo("Asia/Kolkata")
    midnight = int(dt.datetime(2024, 5, 2, tzinfo=kolkata).timestamp())
    h = midnight - midnight % HOUR
    assert [d.day for d in days_overlapping(h, h + HOUR, kolkata)] == ["2024-05-01",
                                                                       "2024-05-02"]


def test_a_day_splits_the_energy_at_local_midnight() -> None:
    utc_day = day_period(H0, dt.UTC)
    delivered = [(utc_day.end - HOUR, kwh("0")), (utc_day.end + HOUR, kwh("4"))]
    rows = summarize(METER, [utc_day, day_period(utc_day.end, dt.UTC)], [], delivered, [])
    assert [r.delivered_kwh for r in rows] == [Decimal("2.000000000"), Decimal("2.000000000")]


def test_demand_aggregated_by_scale_groups_equals_the_sample_by_sample_result() -> None:
    """The database hands roll-ups one (count, sum, min, max) row per multiplier/divisor."""
    from ravend.rollup import DemandStats, summarize_stats

    groups = {(1, 1000): [1500, -20, 730], (3, 7): [11, 4], (0, 0): [2]}
    samples = [(H0 + i, exact(raw, m, d)) for i, ((m, d), raws) in enumerate(groups.items())
               for raw in raws]
    by_sample = summarize(METER, hours(1), samples, [], [])
    stats = DemandStats()
    for (m, d), raws in groups.items():
        stats.add_group(len(raws), sum(raws), min(raws), max(raws), m, d)
    stats.add_group(0, 0, 0, 0, 1, 1)  # an empty group changes nothing
    (row,) = summarize_stats(METER, hours(1), [stats], [], [])
    assert row == by_sample[0]
    assert row.demand_samples == 6
    assert row.demand_min_kw == Decimal("-0.020000000")
    assert row.demand_max_kw == to_decimal(Fraction(33, 7))
    assert row.demand_avg_kw == to_decimal((Fraction(2210, 1000) + Fraction(45, 7) + 2) / 6)


def test_counter_readings_may_be_a_single_pass_stream() -> None:
    delivered = [(H0 - 600, kwh("10")), (H0 + 600, kwh("11.2")), (H0 + HOUR + 600, kwh("12"))]
    as_list = summarize(METER, hours(2), [], delivered, [])
    assert summarize(METER, hours(2), [], iter(delivered), []) == as_list
