"""Small builders of real Reading values for store and worker tests."""

from __future__ import annotations

from ravend.protocol.model import KIND_UNITS, Kind, Reading, scale

METER = "0x00135003001234ab"
DEVICE = "0xd8d5b9000000054e"
T0 = 1_700_000_000


def demand(i: int, *, raw: int | None = None, meter: str = METER,
           meter_time: int | None = -1) -> Reading:
    value = 1000 + i if raw is None else raw
    when = T0 + i if meter_time == -1 else meter_time
    return Reading(meter, Kind.DEMAND, when, T0 + i + 0.5, value, 1, 1000,
                   scale(value, 1, 1000), KIND_UNITS[Kind.DEMAND], DEVICE)


def demands(n: int, start: int = 0) -> list[Reading]:
    return [demand(i) for i in range(start, start + n)]
