"""The reading accounting the fault tests end with: what the meter sent against what a sink
stored, by key (meter, kind, meter time), each stored key counted."""

from __future__ import annotations

from collections import Counter

from ravend.simulator import MeterSimulator


def keys(rows: list[tuple]) -> Counter:
    return Counter((m, k, t) for m, k, t, *_ in rows)


def sent_keys(sim: MeterSimulator) -> set[tuple]:
    return {(s.meter_mac, s.kind, s.meter_time) for s in sim.sent_readings()}


def quiet(sim: MeterSimulator) -> set[tuple]:
    """Stop the meter's pushes and let it finish what it was writing; the keys of all it sent."""
    sim.set_pushes(False)
    assert sim.drain(5)
    return sent_keys(sim)
