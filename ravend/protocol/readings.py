"""Fragments to stored readings: the few fragments that carry a measurement, as Reading values.

Most fragments are state (link status, device info, messages) and carry none; demand, summations,
price and period usage each become one reading (two for a summation that also reports energy
received), scaled exactly (model.scale) and labelled with their unit.
"""

from __future__ import annotations

from collections.abc import Mapping
from decimal import Decimal

from ravend.protocol import model as m
from ravend.protocol.model import KIND_UNITS, Fragment, Kind, Reading

CURRENCY_CODES: dict[int, str] = {
    36: "AUD", 124: "CAD", 554: "NZD", 826: "GBP", 840: "USD", 978: "EUR", 756: "CHF",
}


def currency_name(code: int | None) -> str:
    if code is None:
        return "?"
    return CURRENCY_CODES.get(code, str(code))


def readings_from(fragment: Fragment, received_at: float,
                  scales: Mapping[str, Decimal] | None = None) -> list[Reading]:
    """The stored readings a fragment carries (most fragments carry none: they are state).

    ``scales`` maps a meter MAC to the factor its energy and demand values are multiplied by
    (a CT meter that reports 1/60 of the usage: 60); a price is never scaled.
    """
    factor = scales.get(getattr(fragment, "meter_mac_id", None) or "", _ONE) if scales else _ONE
    if isinstance(fragment, m.InstantaneousDemand):
        f = fragment
        return [_reading(f.meter_mac_id, Kind.DEMAND, f.time_stamp, received_at, f.demand,
                         f.multiplier, f.divisor, f.device_mac_id, factor)]
    if isinstance(fragment, m.CurrentSummationDelivered):
        s = fragment
        out = [_reading(s.meter_mac_id, Kind.SUMMATION_DELIVERED, s.time_stamp, received_at,
                        s.summation_delivered, s.multiplier, s.divisor, s.device_mac_id, factor)]
        if s.summation_received is not None:
            out.append(_reading(s.meter_mac_id, Kind.SUMMATION_RECEIVED, s.time_stamp,
                                received_at, s.summation_received, s.multiplier, s.divisor,
                                s.device_mac_id, factor))
        return out
    if isinstance(fragment, m.PriceCluster):
        p = fragment
        if p.price is None:
            return []
        divisor = 10**p.trailing_digits
        return [Reading(p.meter_mac_id, Kind.PRICE, p.time_stamp, received_at, p.price, 1,
                        divisor, Decimal(p.price).scaleb(-p.trailing_digits),
                        f"{currency_name(p.currency)}/kWh", p.device_mac_id)]
    if isinstance(fragment, m.CurrentPeriodUsage):
        u = fragment
        return [_reading(u.meter_mac_id, Kind.CURRENT_PERIOD_USAGE, u.time_stamp, received_at,
                         u.current_usage, u.multiplier, u.divisor, u.device_mac_id, factor)]
    if isinstance(fragment, m.LastPeriodUsage):
        u2 = fragment
        return [_reading(u2.meter_mac_id, Kind.LAST_PERIOD_USAGE, u2.end_date, received_at,
                         u2.last_usage, u2.multiplier, u2.divisor, u2.device_mac_id, factor)]
    return []


_ONE = Decimal(1)


def _reading(meter: str, kind: Kind, meter_time_: int | None, received_at: float, raw: int,
             multiplier: int, divisor: int, device: str, factor: Decimal = _ONE) -> Reading:
    return Reading(meter, kind, meter_time_, received_at, raw, multiplier, divisor,
                   m.scale(raw, multiplier, divisor, factor), KIND_UNITS[kind], device, factor)
