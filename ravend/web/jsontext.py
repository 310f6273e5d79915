"""JSON with exact decimals: the store's roll-ups are DECIMAL(30,9) values, and a float would
round them (an API answer must equal what ``ravenctl report`` prints, digit for digit)."""

from __future__ import annotations

import json
from decimal import Decimal
from typing import Any


def dumps(value: Any) -> str:
    """``value`` as JSON text; a Decimal is written as a JSON number exactly as it is."""
    if isinstance(value, Decimal):
        return format(value, "f") if value.is_finite() else "null"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{json.dumps(str(k))}: {dumps(v)}"
                               for k, v in value.items()) + "}"
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(dumps(v) for v in value) + "]"
    return json.dumps(value)


def dec(value: Any) -> Decimal | None:
    """A stored decimal (SQLite: text; MySQL: Decimal) as a Decimal; None stays None."""
    return None if value is None else Decimal(str(value))
