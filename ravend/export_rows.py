"""The rows of ``ravenctl export`` as text: its roll-up columns and how each value is written.

Shared by the command (``ravend.cli``) and ravend-web's download (``ravend.web``), so that one
range gives the same lines either way. Light on purpose (no roll-up or report code): ravenctl
imports it for every command.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from decimal import Decimal
from typing import Any

from ravend.timetext import iso_utc

#: The columns of ``export --rollup``; daily rows add DAILY_OUT.
ROLLUP_OUT = (
    "meter_mac", "period_start", "period_end", "demand_samples", "demand_avg_kw",
    "demand_min_kw", "demand_max_kw", "delivered_kwh", "received_kwh", "energy_seconds",
    "counter_resets", "cost", "export_credit", "currency",
)
DAILY_OUT = ("day", "time_zone")


def rollup_columns(rollup: str) -> tuple[str, ...]:
    """The columns of an ``hourly`` or ``daily`` roll-up export."""
    return ROLLUP_OUT + (DAILY_OUT if rollup == "daily" else ())


def plain(value: Any) -> Any:
    """A Decimal as its exact text (never 1E-9); anything else as it is."""
    if isinstance(value, Decimal):
        return format(value, "f")
    return value


def iso_z(ts: int) -> str:
    """A period bound as an ISO 8601 UTC time."""
    return iso_utc(ts, "%Y-%m-%dT%H:%M:%SZ")


def rollup_values(row: Sequence[Any], daily: bool) -> list[Any]:
    """A roll-up row (``rollup_columns`` order) as written: exact decimals, ISO period bounds
    and, for a daily row, its local date as text (MySQL gives a date object)."""
    values = [plain(v) for v in row]
    values[1], values[2] = iso_z(values[1]), iso_z(values[2])
    day = len(ROLLUP_OUT)
    if daily and not isinstance(values[day], str):
        values[day] = values[day].isoformat()
    return values


def reading_values(row: Sequence[Any]) -> list[Any]:
    """A raw reading as written: DECIMAL columns (MySQL's value, scale) as the floats SQLite
    holds, so that either store gives one export."""
    return [float(v) if isinstance(v, Decimal) else v for v in row]


def json_line(columns: Sequence[str], values: Sequence[Any]) -> str:
    """Decimal values as JSON numbers written exactly as stored (no float rounding)."""
    parts = []
    for name, value in zip(columns, values, strict=True):
        if name.endswith(("_kw", "_kwh", "cost", "_credit")) and value is not None:
            encoded = str(value)
        else:
            encoded = json.dumps(value)
        parts.append(f"{json.dumps(name)}: {encoded}")
    return "{" + ", ".join(parts) + "}"
