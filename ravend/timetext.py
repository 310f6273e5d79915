"""Unix times as text for people, whatever a store holds.

A meter can send any time (issue 16: a clock reset to 2000, one in 2136, and stores written by
older versions hold times far beyond): ``datetime`` refuses years outside 1..9999 and some
platforms' ``gmtime`` refuse even less. Commands that print stored times must never stop on
one of them, so a time that cannot be shown as a date is shown as its Unix seconds.
"""

from __future__ import annotations

import datetime as dt
import math

#: The range datetime can show (0001-01-02 .. 9999-12-30, a day of margin for any zone).
_LOWEST = -62_135_510_400
_HIGHEST = 253_402_128_000


def iso_utc(t: float | None, fmt: str = "%Y-%m-%d %H:%M:%SZ", none: str = "-") -> str:
    """``t`` in UTC by ``fmt``; ``none`` for None; ``@<seconds>`` when no date can show it."""
    if t is None:
        return none
    try:
        if not math.isfinite(t) or not _LOWEST <= t <= _HIGHEST:
            return f"@{t:.0f}" if math.isfinite(t) else f"@{t}"
        return dt.datetime.fromtimestamp(t, dt.UTC).strftime(fmt)
    except (OverflowError, OSError, ValueError, TypeError):
        return f"@{t}"
