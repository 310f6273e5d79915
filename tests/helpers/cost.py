"""What the cost tests share: hour-aligned times, readings and prices as the decoder makes
them, exact fractions for prices, and a config file written in one line."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal
from fractions import Fraction
from pathlib import Path

from ravend.protocol.model import KIND_UNITS, Kind, Reading, scale
from ravend.rollup import HOUR
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


def write_conf(path: Path, text: str) -> Path:
    path.write_text(text)
    return path
