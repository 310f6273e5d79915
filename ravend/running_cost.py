"""A running cost per meter, for MQTT and Home Assistant: pure, fed readings in order.

Each rise of the delivered counter is costed as the roll-ups cost it (``ravend.tariff``: the
price in effect, split where a price changes between two counter readings), and each rise of
the received counter is credited at ``export_rate``. The totals start at zero when this
process first hears the meter; ``since`` says when, and Home Assistant takes it as the
sensor's ``last_reset``, so a restart of ravend starts a new cycle instead of looking like a
refund. Exact (Fraction) throughout; rounded once, to 9 places, when published.

Readings the sink sees again (a batch retried after a broker outage) change nothing: a
counter reading no later than the last one is skipped.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Any

from ravend.protocol.model import Kind, Reading
from ravend.rollup import exact, to_decimal
from ravend.sinks.mqtt_payload import exact_text
from ravend.tariff import PricePoint, Tariff, currency_of_unit


@dataclass
class _Meter:
    since: float
    counters: dict[Kind, tuple[int, Fraction]] = field(default_factory=dict)
    prices: list[PricePoint] = field(default_factory=list)
    cost: Fraction = Fraction(0)
    credit: Fraction = Fraction(0)
    unpriced_kwh: Fraction = Fraction(0)
    currency: str | None = None
    key_time: int | None = None


class RunningCost:
    def __init__(self, tariff: Tariff, tz: dt.tzinfo,
                 clock: Callable[[], float] | None = None) -> None:
        import time

        self.tariff = tariff
        self.tz = tz
        self.clock = clock or time.time
        self._meters: dict[str, _Meter] = {}

    def feed(self, r: Reading) -> bool:
        """Take one reading; True when it was a new counter reading (the totals moved on)."""
        if r.kind not in (Kind.PRICE, Kind.SUMMATION_DELIVERED, Kind.SUMMATION_RECEIVED):
            return False
        m = self._meters.get(r.meter_mac)
        if m is None:
            m = self._meters[r.meter_mac] = _Meter(self.clock())
        t, value = r.key_time, exact(r.raw, r.multiplier, r.divisor, r.scale)
        if r.kind is Kind.PRICE:
            point = PricePoint(t, value, currency_of_unit(r.unit))
            last_price = m.prices[-1] if m.prices else None
            # Only changes are kept: a meter repeats its price every 90 s or so.
            if last_price is None or (t > last_price.time and (
                    point.price, point.currency) != (last_price.price, last_price.currency)):
                m.prices.append(point)
            return False
        last = m.counters.get(r.kind)
        if last is not None and t <= last[0]:
            return False
        m.counters[r.kind] = (t, value)
        m.key_time = t if m.key_time is None else max(m.key_time, t)
        if last is not None and value > last[1]:
            self._add(m, r.kind, last[0], t, value - last[1])
        self._trim(m)
        return True

    def _add(self, m: _Meter, kind: Kind, t0: int, t1: int, delta: Fraction) -> None:
        if kind is Kind.SUMMATION_RECEIVED:
            if self.tariff.export_rate is not None:
                m.credit += delta * self.tariff.export_rate
            return
        prices = self.tariff.timeline(t0, t1, m.prices, self.tz)
        for a, b, step in prices.segments(t0, t1):
            share = delta * (b - a) / (t1 - t0)
            if step.price is None:
                m.unpriced_kwh += share
            else:
                m.cost += share * step.price
                m.currency = step.currency or m.currency
        m.currency = m.currency or self.tariff.currency

    @staticmethod
    def _trim(m: _Meter) -> None:
        """Keep the prices still needed: the one in effect at the oldest counter and later."""
        oldest = min(t for t, _ in m.counters.values())
        keep = 0
        for i, p in enumerate(m.prices):
            if p.time <= oldest:
                keep = i
        del m.prices[:keep]

    def priced(self, meter: str) -> bool:
        """Whether a cost can be told at all: a configured tariff, or a price from the meter."""
        m = self._meters.get(meter)
        configured = self.tariff.plan is not None and self.tariff.source != "meter"
        return configured or bool(m and m.prices)

    def currency(self, meter: str) -> str | None:
        m = self._meters.get(meter)
        own = next((p.currency for p in reversed(m.prices) if p.currency), None) if m else None
        return (m.currency if m else None) or self.tariff.currency or own

    def state(self, meter: str) -> dict[str, Any] | None:
        """The message body for a meter (see doc/mqtt.md), or None before anything is known."""
        m = self._meters.get(meter)
        if m is None or m.key_time is None or not self.priced(meter):
            return None
        credit = m.credit if self.tariff.export_rate is not None else None
        return {
            "v": 1,
            "meter_mac": meter,
            "key_time": m.key_time,
            "since": dt.datetime.fromtimestamp(int(m.since), dt.UTC).isoformat(),
            "currency": self.currency(meter),
            "cost": _text(m.cost),
            "export_credit": None if credit is None else _text(credit),
            "net_cost": _text(m.cost - (credit or 0)),
            "unpriced_kwh": _text(m.unpriced_kwh),
        }


def _text(value: Fraction) -> str:
    rounded = to_decimal(value)
    assert rounded is not None
    return exact_text(rounded)
