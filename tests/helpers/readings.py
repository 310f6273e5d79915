"""Small builders of real Reading values for store and worker tests, and a store to put them in."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from ravend.protocol.model import KIND_UNITS, Kind, Reading, scale
from ravend.sinks.sqlite import SqliteSink

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


def store_readings(db: Path, readings: Sequence[Reading], batch: int = 5000) -> None:
    """Write ``readings`` into the SQLite store at ``db`` (made if new) through the real sink,
    ``batch`` at a time as the worker hands them over."""
    sink = SqliteSink(db)
    sink.open()
    for i in range(0, len(readings), batch):
        sink.write(readings[i:i + batch], [])
    sink.close()


def odd_clocks() -> list[tuple[Reading, str | None]]:
    """Readings whose meter time sits on either side of each clock_flag boundary, with the flag
    each must get: the Python rule (Reading.clock_flag, carried by MQTT and Mongo) and the SQL
    stores' column are checked against this one list."""
    day = 86_400
    cases = [  # (meter_time relative to T0 or absolute, kind, flag)
        (None, Kind.DEMAND, "unset"),
        (946_684_800, Kind.DEMAND, "epoch"),  # the meter's 2000-01-01
        (978_307_199, Kind.DEMAND, "epoch"),
        (978_307_200, Kind.DEMAND, "behind"),  # 2001: not a reset, but years behind
        (T0 + day, Kind.DEMAND, None),  # each received at T0
        (T0 + day + 1, Kind.DEMAND, "ahead"),
        (T0 - day, Kind.DEMAND, None),
        (T0 - day - 1, Kind.DEMAND, "behind"),
        (T0 - 30 * day, Kind.LAST_PERIOD_USAGE, None),  # timed by a past period's end
        (T0 + 2 * day, Kind.LAST_PERIOD_USAGE, "ahead"),
        (T0 - 3600, Kind.SUMMATION_DELIVERED, None),
    ]
    out = []
    for i, (when, kind, flag) in enumerate(cases):
        out.append((Reading(METER, kind, when, float(T0), 1000 + i, 1, 1000,
                            scale(1000 + i, 1, 1000), KIND_UNITS[kind], DEVICE), flag))
    return out


def fragment(meter: str, device: str, stamp: int, demand: int) -> bytes:
    return (f"<InstantaneousDemand>\r\n  <DeviceMacId>{device}</DeviceMacId>\r\n"
            f"  <MeterMacId>{meter}</MeterMacId>\r\n  <TimeStamp>0x{stamp:08x}</TimeStamp>\r\n"
            f"  <Demand>0x{demand:06x}</Demand>\r\n  <Multiplier>0x00000001</Multiplier>\r\n"
            "  <Divisor>0x000003e8</Divisor>\r\n</InstantaneousDemand>\r\n").encode()
