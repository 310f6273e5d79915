"""The one rule that turns the integers a meter sends into an exact value.

Apart from ravend.protocol.model (which uses it for every value it computes, and offers it as
``model.scale``) so that a reader of stored rows, as ``ravenctl status`` is, can recompute a value
without building the model's twenty dataclasses: that import alone is a tenth of a status run.
"""

from __future__ import annotations

from decimal import Decimal


def scale(raw: int, multiplier: int, divisor: int, factor: Decimal | int = 1) -> Decimal:
    """Exact ``raw * multiplier / divisor * factor``; 0 as multiplier or divisor means 1 (API
    manual); factor is a meter's configured scale (1: none)."""
    value = Decimal(raw * (multiplier or 1))
    div = divisor or 1
    if div != 1:
        value = value / Decimal(div)
    return value if factor == 1 else value * factor
