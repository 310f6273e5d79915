"""The value parsers of ravend.conf: text in, a typed value out, or ValueError saying what was
expected (ravend.config adds the file, line, section and key around it).

Each section field of ravend.config names its parser; they are pure and know no section, so a
new key often needs no new parser. A few import what they need when first called (the tariff
syntax, zoneinfo, ipaddress, the currency table), so that loading the config, which every
ravenctl command does, stays quick.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from decimal import Decimal
from fractions import Fraction
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ravend.tariff import Rule

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|min|h|d)?\s*$")
_UNIT_SECONDS = {None: 1.0, "s": 1.0, "ms": 0.001, "m": 60.0, "min": 60.0, "h": 3600.0,
                 "d": 86400.0}


def duration(text: str) -> float:
    match = _DURATION.match(text)
    if not match:
        raise ValueError("a duration such as 30, 30s, 5m, 2h or 7d")
    return float(match.group(1)) * _UNIT_SECONDS[match.group(2)]


def boolean(text: str) -> bool:
    t = text.strip().lower()
    if t in ("1", "yes", "true", "on"):
        return True
    if t in ("0", "no", "false", "off"):
        return False
    raise ValueError("yes or no")


def integer(text: str) -> int:
    try:
        return int(text.strip(), 10)
    except ValueError:
        raise ValueError("a whole number") from None


def number(text: str) -> float:
    try:
        return float(text.strip())
    except ValueError:
        raise ValueError("a number") from None


def text(value: str) -> str:
    return value.strip()


def one_of(*choices: str) -> Callable[[str], str]:
    def parse(value: str) -> str:
        v = value.strip().lower()
        if v not in choices:
            raise ValueError("one of " + ", ".join(choices))
        return v

    return parse


def mqtt_topic(value: str) -> str:
    """A topic prefix: one or more levels, no wildcards, no empty level at either end."""
    v = value.strip()
    if not v or v.startswith("/") or v.endswith("/") or "+" in v or "#" in v or "\0" in v:
        raise ValueError("a topic such as ravend or home/meter (no + or #, no leading or"
                         " trailing /)")
    return v


def mqtt_client_id(value: str) -> str:
    """An MQTT client id; %h stands for the host name. It also names a topic level."""
    v = value.strip()
    if not v or any(c in v for c in "+#/ \0"):
        raise ValueError("a client id such as ravend-%h (no spaces, +, # or /)")
    return v


def time_zone(value: str) -> str:
    """``local`` (the host's zone) or an IANA zone name that this system's tzdata knows."""
    v = value.strip()
    if v.lower() in ("local", "utc"):
        return v.lower() if v.lower() == "local" else "UTC"  # neither needs tzdata
    import zoneinfo

    try:
        zoneinfo.ZoneInfo(v)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        raise ValueError("local, UTC or a time zone name such as Europe/Berlin (names need"
                         " the tzdata package)") from None
    return v


def mongo_uri(value: str) -> str:
    """A MongoDB connection string; checked in full (options, hosts) by the ingest's driver."""
    v = value.strip()
    if not v.startswith(("mongodb://", "mongodb+srv://")) or len(v) <= len("mongodb://"):
        raise ValueError("a MongoDB URI such as mongodb://localhost:27017/ or"
                         " mongodb+srv://cluster.example.net/")
    rest = v.split("://", 1)[1]
    hosts_end = min((i for i in (rest.find(c) for c in "/?#") if i >= 0), default=len(rest))
    if "@" in rest[hosts_end:]:
        # The driver would read the hosts from inside the password (it takes such a URI):
        # RFC 3986 wants these characters of a user name or password percent-escaped.
        raise ValueError("a URI whose user name and password have any '/', '?', '#' or '@'"
                         " percent-escaped (%2F, %3F, %23, %40)")
    return v


def mongo_name(what: str, forbidden: str) -> Callable[[str], str]:
    """A database or collection name: not empty, at most 64 characters, none of forbidden."""

    def parse(value: str) -> str:
        v = value.strip()
        if not v or len(v) > 64 or any(c in v for c in forbidden) or v.startswith("system."):
            shown = " ".join(repr(c) for c in forbidden)
            raise ValueError(f"a {what} name of 1 to 64 characters, without {shown}")
        return v

    return parse


def mqtt_filter(value: str) -> str:
    """A subscription topic filter (empty: the default); + and # only as whole levels."""
    v = value.strip()
    if not v:
        return v
    levels = v.split("/")
    bad = ("\0" in v or v.startswith("$share/")
           or any(("+" in lv or "#" in lv) and lv not in ("+", "#") for lv in levels)
           or "#" in levels[:-1])
    if bad:
        raise ValueError("a topic filter such as ravend/+/+ or ravend/+/demand (+ and # only as"
                         " whole levels, # only last; a shared subscription goes in share_group)")
    return v


def mqtt_share_group(value: str) -> str:
    v = value.strip()
    if any(c in v for c in "+#/ \0"):
        raise ValueError("a share group name such as ravend-mongo (no spaces, +, # or /)")
    return v


_LISTEN = re.compile(
    r"^(?:\[(?P<v6>[^\[\]]+)\]|(?P<host>[A-Za-z0-9][A-Za-z0-9.-]*)):(?P<port>\d{1,5})$")


def split_listen(value: str) -> tuple[str, int]:
    """host:port → (host, port); an IPv6 address must be in brackets, or its last group would
    read as the port."""
    match = _LISTEN.match(value.strip())
    expected = ("host:port to listen on, such as 127.0.0.1:9105 or [::1]:9105 (an IPv6"
                " address in brackets; empty: off)")
    if not match or not 1 <= int(match["port"]) <= 65535:
        raise ValueError(expected)
    host = match["v6"] or match["host"]
    import ipaddress

    try:
        if match["v6"]:
            ipaddress.IPv6Address(host)
        elif re.fullmatch(r"[\d.]+", host):
            ipaddress.IPv4Address(host)  # 300.1.1.1 is no host name either
    except ValueError:
        raise ValueError(expected) from None
    return host, int(match["port"])


def listen_address(value: str) -> str:
    v = value.strip()
    if v:
        split_listen(v)
    return v


def optional_price(value: str) -> Fraction | None:
    """A price per kWh (exact), or empty for none."""
    from ravend.tariff import parse_price

    return parse_price(value) if value.strip() else None


def tou_periods(value: str) -> tuple[Rule, ...]:
    from ravend.tariff import parse_periods

    return parse_periods(value)


def currency_code(value: str) -> str:
    """USD, EUR ... or an ISO 4217 number (840 → USD); empty: the meter's."""
    v = value.strip().upper()
    if v.isdigit() and 0 < int(v) < 1000:
        from ravend.protocol.readings import currency_name

        return currency_name(int(v))
    if v and not re.fullmatch(r"[A-Z]{3}", v):
        raise ValueError("an ISO 4217 currency such as USD, EUR or 840 (empty: the meter's)")
    return v


def optional_time_zone(value: str) -> str:
    return time_zone(value) if value.strip() else ""


#: Scales are stored exactly in MySQL's DECIMAL(13,6) and round-trip through SQLite's REAL.
MAX_SCALE = 1_000_000


def meter_scale(value: str) -> Decimal:
    """A CT meter's ratio (60 for 60:1): a positive decimal, at most 6 places, ≤ MAX_SCALE."""
    try:
        v = Decimal(value.strip())
    except ArithmeticError:
        v = Decimal("NaN")
    if not v.is_finite() or v <= 0 or v > MAX_SCALE or v != round(v, 6):
        raise ValueError(f"a positive decimal such as 60 or 0.5 (at most {MAX_SCALE}, 6"
                         " decimal places)")
    return v


def absolute_path(value: str) -> Path:
    path = Path(value.strip())
    if not path.is_absolute():
        raise ValueError("an absolute path")
    return path


def web_listen(value: str) -> str:
    """Where ravend-web listens: host:port (never empty: the dashboard is its only job)."""
    v = value.strip()
    split_listen(v)
    return v
