"""Simulator on a real pty → the real ravend process → SQLite: every reading exactly once.

Each run accounts for every reading the simulator wrote complete: the stored set equals the sent
set, key by key and value by value, across noise, a partial start, duplicates, negative demand,
an unplug in the middle of a fragment and a replug.
"""

from __future__ import annotations

import sqlite3
import time
from collections import Counter
from decimal import Decimal
from pathlib import Path

import pytest

from ravend.protocol.model import scale
from ravend.simulator import MeterSimulator
from tests.helpers.process import RavendProcess, running_ravend, stored_rows, write_config
from tests.helpers.wait import wait_for

SCENARIOS = {
    "raven": ("raven", ("nul_noise", "partial_start", "duplicates", "negative_demand",
                        "unknown_fragment", "cp1252_text")),
    "emu2": ("emu2", ("no_indent", "multiplier3", "zero_divisor", "wide_summation",
                      "duplicates", "nul_noise", "clock_backwards")),
}


def expected(sim: MeterSimulator) -> dict[tuple, tuple]:
    """Sent readings by key → (raw, multiplier, divisor); duplicates collapse to one."""
    out: dict[tuple, tuple] = {}
    for s in sim.sent_readings():
        assert s.meter_time is not None  # these scenarios keep the meter clock set
        out[(s.meter_mac, s.kind, s.meter_time)] = (s.raw, s.multiplier, s.divisor)
    return out


@pytest.mark.parametrize("scenario", sorted(SCENARIOS))
def test_every_sent_reading_is_stored_once_across_unplug(tmp_path: Path, scenario: str) -> None:
    personality, quirks = SCENARIOS[scenario]
    link = str(tmp_path / "stick")
    db = tmp_path / "state" / "ravend.db"
    sim = MeterSimulator(personality, link=link, seed=7, speed=200, quirks=quirks,
                         reply_delay=0.02).start()
    config = write_config(tmp_path / "ravend.conf", tmp_path / "state", link)
    with running_ravend(config, tmp_path / "ravend.log",
                        stop_within=5, then_stop=(sim.stop,)) as ravend:
        assert wait_for(lambda: len(stored_rows(db)) >= 40, 30), ravend.log()
        sim.unplug(mid_fragment=True)
        time.sleep(1.0)
        sim.replug()
        assert sim.wait_for(lambda: sim.sent_count("demand") >= 120, 30)
        sim.set_pushes(False)
        assert sim.drain(5)
        want = expected(sim)
        assert wait_for(lambda: len(stored_rows(db)) >= len(want), 20), ravend.log()
    log = ravend.log()
    rows = stored_rows(db)
    keys = Counter((m, k, t) for m, k, t, *_ in rows)
    assert max(keys.values()) == 1, "a reading was stored twice"
    assert set(keys) == set(want), (set(want) - set(keys), set(keys) - set(want))
    for meter, kind, t, raw, mult, div, value in rows:
        assert (raw, mult, div) == want[(meter, kind, t)]
        assert Decimal(str(value)) == pytest.approx(scale(raw, mult, div))
    # One line for the loss and one for the recovery, no traceback.
    assert log.count("device lost") == 1, log
    assert log.count("device back") == 1, log
    assert "Traceback" not in log
    if "negative_demand" in quirks:
        assert any(r[1] == "demand" and r[3] < 0 for r in rows)
    if "wide_summation" in quirks:
        assert any(r[1].startswith("summation") and r[3] > 2**32 for r in rows)


def test_device_info_and_meter_state_are_stored(tmp_path: Path) -> None:
    link = str(tmp_path / "stick")
    db = tmp_path / "state" / "ravend.db"
    sim = MeterSimulator("emu2", link=link, seed=3, speed=50, reply_delay=0.02).start()
    config = write_config(tmp_path / "ravend.conf", tmp_path / "state", link)
    ravend = RavendProcess(config, tmp_path / "ravend.log")

    def tags() -> set[str]:
        if not db.exists():
            return set()
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as conn:
            try:
                return {r[0] for r in conn.execute("SELECT tag FROM device_state")}
            except sqlite3.OperationalError:
                return set()

    try:
        assert wait_for(lambda: {"DeviceInfo", "ConnectionStatus", "MeterList",
                                 "TimeCluster"} <= tags(), 20), ravend.log()
    finally:
        ravend.stop()
        sim.stop()
    names = [name for name, _ in sim.received_commands()]
    assert names[:3] == ["get_device_info", "get_connection_status", "get_meter_list"]
    assert "factory_reset" not in names


def test_absent_stick_is_waited_for(tmp_path: Path) -> None:
    link = str(tmp_path / "stick")
    db = tmp_path / "state" / "ravend.db"
    config = write_config(tmp_path / "ravend.conf", tmp_path / "state", link)
    ravend = RavendProcess(config, tmp_path / "ravend.log")
    sim = MeterSimulator("raven", link=link, seed=1, speed=200)
    try:
        time.sleep(1.5)
        assert ravend.proc.poll() is None, "ravend exited without a stick"
        sim.start()
        assert wait_for(lambda: len(stored_rows(db)) >= 5, 20), ravend.log()
    finally:
        ravend.stop()
        sim.stop()
    log = ravend.log()
    assert log.count("device unavailable") == 1, log
    assert "device back" in log
