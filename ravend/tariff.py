"""The price per kWh in effect at any moment: the meter's own prices or a configured tariff.

Pure: no database, no clock. A ``Timeline`` is a sorted list of steps (start, price, currency);
each price holds from its start until the next step, so an interval that spans a change is
split exactly there (``Timeline.segments``) and every second is costed at the price in effect.

Where a price comes from (``[tariff] source``):

- ``meter``: the PriceCluster readings, stored with their time. A price holds from its reading
  until the next price reading (a meter repeats its price every ~90 s, so the history is as
  fine as the meter's). Before the first one there is no price: cost unknown.
- ``config``: the ``[tariff]`` section: a flat ``rate`` or time-of-use ``periods``.
- ``auto`` (default): the meter's price wherever it has sent one, the configured tariff before
  it (and for a meter that never sends prices). A meter price of 0 counts as none: meters whose
  utility publishes no price send 0 rather than nothing, and a 0 would silently make every
  kWh free.

Time-of-use ``periods`` (see ``parse_periods``) are whole local hours by weekday, in the
tariff's time zone, so that "16-21" means what the utility's leaflet means across DST changes.
"""

from __future__ import annotations

import bisect
import datetime as dt
import hashlib
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from fractions import Fraction
from typing import Protocol

SOURCES = ("auto", "meter", "config")
DAY_NAMES = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
#: Local hour boundaries are found by looking at every quarter hour: every zone in use today is
#: a whole number of quarter hours off UTC, so each local HH:00 falls on one of them.
_QUARTER = 900

PERIODS_EXAMPLE = "Mon-Fri 16-21: 0.45; *: 0.28"


# --- prices -----------------------------------------------------------------------------------


def parse_price(text: str) -> Fraction:
    """A decimal price such as 0.2834 → exact Fraction; ValueError says what was expected."""
    try:
        value = Decimal(text.strip())
    except InvalidOperation:
        raise ValueError("a decimal price such as 0.28") from None
    if not value.is_finite():
        raise ValueError("a decimal price such as 0.28")
    return Fraction(value)


def currency_of_unit(unit: str) -> str | None:
    """A price reading's unit is ``<currency>/kWh``; ``?`` is the meter's "no currency"."""
    name = unit.split("/", 1)[0].strip()
    return name if name and name != "?" else None


@dataclass(frozen=True, slots=True)
class PricePoint:
    """One price the meter sent: in effect from ``time`` until the next one."""

    time: int
    price: Fraction
    currency: str | None


@dataclass(frozen=True, slots=True)
class Step:
    start: int  # Unix s
    price: Fraction | None  # None: no price known from here
    currency: str | None


class Timeline:
    """Prices over time: steps sorted by start, each in effect until the next."""

    def __init__(self, steps: Sequence[Step]) -> None:
        merged: list[Step] = []
        for s in sorted(steps, key=lambda s: s.start):
            if merged and merged[-1].start == s.start:
                merged[-1] = s
            elif not merged or (merged[-1].price, merged[-1].currency) != (s.price, s.currency):
                merged.append(s)
        self.steps = merged
        self._starts = [s.start for s in merged]

    @property
    def priced(self) -> bool:
        """Whether any price is known at all (else there is no cost to compute)."""
        return any(s.price is not None for s in self.steps)

    def at(self, t: int) -> Step:
        i = bisect.bisect_right(self._starts, t) - 1
        return self.steps[i] if i >= 0 else Step(t, None, None)

    def segments(self, a: int, b: int) -> Iterator[tuple[int, int, Step]]:
        """[a, b) cut at every price change: (start, end, step in effect)."""
        i = bisect.bisect_right(self._starts, a) - 1
        while a < b:
            step = self.steps[i] if i >= 0 else Step(a, None, None)
            nxt = self._starts[i + 1] if i + 1 < len(self._starts) else b
            end = min(b, nxt)
            if end > a:
                yield a, end, step
            a = max(a, end)
            i += 1


# --- time-of-use periods ----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Rule:
    days: frozenset[int]  # 0 = Monday
    hours: frozenset[int]  # local hours 0-23
    price: Fraction


@dataclass(frozen=True, slots=True)
class Plan:
    """A configured tariff: the price of every local (weekday, hour), first matching rule."""

    rules: tuple[Rule, ...]

    @classmethod
    def flat(cls, price: Fraction) -> Plan:
        return cls((Rule(frozenset(range(7)), frozenset(range(24)), price),))

    @property
    def is_flat(self) -> bool:
        return len({r.price for r in self.rules}) == 1

    def price(self, weekday: int, hour: int) -> Fraction | None:
        for rule in self.rules:
            if weekday in rule.days and hour in rule.hours:
                return rule.price
        return None

    def price_at(self, t: int, tz: dt.tzinfo) -> Fraction | None:
        local = dt.datetime.fromtimestamp(t, tz)
        return self.price(local.weekday(), local.hour)

    def steps(self, lo: int, hi: int, tz: dt.tzinfo) -> list[tuple[int, Fraction | None]]:
        """(start, price) from lo, one more at each local hour in [lo, hi) where it changes."""
        out = [(lo, self.price_at(lo, tz))]
        if self.is_flat:
            return out
        for t in range(lo - lo % _QUARTER + _QUARTER, hi, _QUARTER):
            local = dt.datetime.fromtimestamp(t, tz)
            if local.minute:
                continue
            price = self.price(local.weekday(), local.hour)
            if price != out[-1][1]:
                out.append((t, price))
        return out


_FULL_DAYS = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")


def _day(name: str) -> int:
    n = name.lower()
    for i, names in enumerate(zip(DAY_NAMES, _FULL_DAYS, strict=True)):
        if n in names:
            return i
    raise ValueError(f"{name!r} is not a day (Mon Tue Wed Thu Fri Sat Sun)")


def _days(token: str) -> frozenset[int]:
    if token == "*":
        return frozenset(range(7))
    days: set[int] = set()
    for part in token.split(","):
        first, _, last = part.partition("-")
        a = _day(first)
        b = _day(last) if last else a
        days.update((a + i) % 7 for i in range((b - a) % 7 + 1))  # Fri-Mon wraps the weekend
    return frozenset(days)


def _hour(text: str) -> int:
    if not text.isdigit() or not 0 <= int(text) <= 24:
        raise ValueError(f"{text!r} is not an hour from 0 to 24")
    return int(text)


def _hours(token: str) -> frozenset[int]:
    hours: set[int] = set()
    for part in token.split(","):
        first, dash, last = part.partition("-")
        a = _hour(first)
        b = _hour(last) if dash else a + 1
        if a == 24 or a == b or (dash and b == 0 and a == 0):
            raise ValueError(f"{part!r} is an empty range of hours")
        hours.update(h % 24 for h in range(a, b if b > a else b + 24))  # 22-6 wraps midnight
    return frozenset(hours)


def parse_periods(text: str) -> tuple[Rule, ...]:
    """Time-of-use periods, e.g. ``Mon-Fri 16-21: 0.45; Sat,Sun 8-20: 0.30; *: 0.28``.

    Periods are separated by ``;`` or new lines; each is ``[DAYS] [HOURS]: PRICE``. DAYS: ``*``
    or day names and ranges (``Mon``, ``Mon-Fri``, ``Sat,Sun``, ``Fri-Mon``); HOURS: local
    hours, start included, end excluded (``16-21`` is 16:00 to 20:59; ``22-6`` runs past
    midnight, within each of the period's own days: ``Sat,Sun 22-6`` is 00:00-06:00 and
    22:00-24:00 of Saturdays and Sundays, not Monday morning; ``7`` is 7:00-7:59; several
    with commas). A period without DAYS is every day,
    without HOURS all day. The first period that matches an hour gives its price, and every
    hour of the week must have one (end with ``*: PRICE``). Empty text: no periods.
    """
    rules = []
    for raw in re.split(r"[;\n]", text):
        entry = raw.strip()
        if not entry:
            continue
        head, colon, price_text = entry.rpartition(":")
        where = f"in {entry!r}: "
        if not colon:
            raise ValueError(f"periods such as {PERIODS_EXAMPLE!r} ({where}no ': PRICE')")
        try:
            price = parse_price(price_text)
            days: frozenset[int] | None = None
            hours: frozenset[int] | None = None
            for token in re.sub(r"\s*([,-])\s*", r"\1", head.strip()).split():
                if token == "*" or token[0].isalpha():
                    if days is not None:
                        raise ValueError("days given twice")
                    days = _days(token)
                elif token[0].isdigit():
                    if hours is not None:
                        raise ValueError("hours given twice")
                    hours = _hours(token)
                else:
                    raise ValueError(f"{token!r} is neither days nor hours")
        except ValueError as exc:
            raise ValueError(f"periods such as {PERIODS_EXAMPLE!r} ({where}{exc})") from None
        rules.append(Rule(frozenset(range(7)) if days is None else days,
                          frozenset(range(24)) if hours is None else hours, price))
    if rules:
        plan = Plan(tuple(rules))
        for d in range(7):
            missing = [h for h in range(24) if plan.price(d, h) is None]
            if missing:
                raise ValueError(
                    f"a price for every hour of the week ({DAY_NAMES[d].title()} {missing[0]}:00"
                    f" has none: end with '*: PRICE')")
    return tuple(rules)


# --- a tariff ---------------------------------------------------------------------------------


class TariffSettings(Protocol):
    """What ``[tariff]`` says (``ravend.config.TariffConfig``). A protocol, not an import:
    ``ravend.config_values`` parses prices and periods with this module, so this one never
    imports the config (no import circle; config_values imports it only where it parses, to
    start quickly)."""

    @property
    def source(self) -> str: ...
    @property
    def rate(self) -> Fraction | None: ...
    @property
    def periods(self) -> tuple[Rule, ...]: ...
    @property
    def currency(self) -> str: ...
    @property
    def export_rate(self) -> Fraction | None: ...
    @property
    def time_zone(self) -> str: ...


class _Zoned(Protocol):
    @property
    def time_zone(self) -> str: ...


class Settings(Protocol):
    """The parts of ``ravend.config.Config`` that ``tariff_of`` reads."""

    @property
    def tariff(self) -> TariffSettings: ...
    @property
    def retention(self) -> _Zoned: ...


@dataclass(frozen=True)
class Tariff:
    """What ``[tariff]`` says, ready to price any time range."""

    source: str = "auto"
    plan: Plan | None = None
    currency: str | None = None  # None: the meter's
    export_rate: Fraction | None = None
    time_zone: str = "local"  # of the periods' hours

    @classmethod
    def from_config(cls, cfg: TariffSettings, fallback_zone: str) -> Tariff:
        plan = None
        if cfg.periods:
            plan = Plan(cfg.periods)
        elif cfg.rate is not None:
            plan = Plan.flat(cfg.rate)
        return cls(cfg.source, plan, cfg.currency or None, cfg.export_rate,
                   cfg.time_zone or fallback_zone)

    def fingerprint(self) -> int:
        """A number that changes when the tariff does, so that roll-ups can be recomputed.

        63 bits at most: it is kept in a signed BIGINT (maintenance_state).
        """
        rules = [] if self.plan is None else [
            (sorted(r.days), sorted(r.hours), str(r.price)) for r in self.plan.rules]
        text = repr((self.source, rules, self.currency, str(self.export_rate), self.time_zone))
        return int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "big") >> 2

    def timeline(self, lo: int, hi: int, meter: Sequence[PricePoint],
                 tz: dt.tzinfo) -> Timeline:
        """The prices in effect over [lo, hi).

        ``meter``: the meter's price readings in [lo, hi) and the last one before lo, by time.
        """
        times = [p.time for p in meter]
        config = self.plan.steps(lo, hi, tz) if self.plan and self.source != "meter" else []
        config_starts = [t for t, _ in config]
        bounds = sorted({lo, *(t for t in times if lo < t < hi),
                         *(t for t in config_starts if lo < t < hi)})
        fallback_currency = self.currency or next(
            (p.currency for p in reversed(meter) if p.currency), None)
        steps = []
        for b in bounds:
            i = bisect.bisect_right(times, b) - 1
            point = meter[i] if i >= 0 and self.source != "config" else None
            meter_price = point.price if point is not None else None
            if self.source == "auto" and meter_price == 0:
                meter_price = None  # "no price" in the dialect of many meters (see above)
            if meter_price is not None and point is not None:
                steps.append(Step(b, meter_price, self.currency or point.currency))
                continue
            j = bisect.bisect_right(config_starts, b) - 1
            price = config[j][1] if j >= 0 else None
            steps.append(Step(b, price, fallback_currency if price is not None else None))
        return Timeline(steps)


def tariff_of(config: Settings) -> Tariff:
    """[tariff], its hours in [retention] time_zone unless it names its own zone."""
    return Tariff.from_config(config.tariff, config.retention.time_zone)
