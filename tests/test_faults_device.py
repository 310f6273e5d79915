"""The fault matrix, the stick's rows: unplugged for long, and back under another name.

Real processes only: the simulator on a pty behind a symlink, the real ravend subprocess, its
SQLite store. Each test ends with the reading accounting: every reading the simulator wrote
complete is stored once (a fragment cut by the unplug was never complete, so it is not owed).
"""

from __future__ import annotations

import re
import time
from collections import Counter
from pathlib import Path

import pytest

from ravend.device import DEV_DIR_ENV
from ravend.simulator import MeterSimulator
from tests.helpers.accounting import quiet
from tests.helpers.process import running_ravend, stored_rows, write_config
from tests.helpers.wait import wait_for

#: ravend's own reconnect backoff, as shipped ([device] reconnect_min, reconnect_max).
RECONNECT_MIN, RECONNECT_MAX = 1.0, 60.0
#: How late ravend may notice a replug beyond the capped backoff (process and poll latency).
SLACK = 1.5


def accounted(sim: MeterSimulator, db: Path) -> None:
    """Every reading the simulator sent complete is stored, once; nothing else is."""
    want = {s.key for s in sim.sent_readings()}
    stored = Counter((m, k, t) for m, k, t, *_ in stored_rows(db))
    assert stored and max(stored.values()) == 1, "a reading was stored twice"
    assert set(stored) == want, (want - set(stored), set(stored) - want)


@pytest.mark.parametrize(("outage", "scale"), [
    pytest.param(30, 60, id="30s-at-1:60"),
    pytest.param(300, 60, id="5min-at-1:60"),
    pytest.param(300, 1, id="5min-real", marks=pytest.mark.slow),
])
def test_long_unplug_backs_off_to_the_cap_and_loses_nothing(tmp_path: Path, outage: int,
                                                            scale: int) -> None:
    """The stick is pulled mid-fragment for OUTAGE seconds, on a clock running SCALE times fast.

    What "5 minutes" means here: everything that depends on time runs SCALE times faster, so
    the run is a 5-minute unplug compressed. ravend's backoff starts at reconnect_min/SCALE and
    is capped at reconnect_max/SCALE (the shipped 1 s and 60 s: at 1:60, 1/60 s and 1 s); the
    simulated meter pushes and keeps its clock at SCALE times real time, so its clock is
    OUTAGE seconds further on when the stick is back, and it goes on pushing. ravend makes the
    same attempts at the same points of the outage as in real time (at 1:60 and 300 s: the
    doubling reaches the cap after about a fifth of it, and the rest of the attempts are at the
    cap). The `5min-real` variant (marked slow) is the same test in real time with the
    shipped backoff.

    Checked: ravend never exits; one line for the loss, one for the unavailable port however
    many attempts, one for the recovery (naming the outage's length); the replug is noticed
    within one capped backoff; the meter's clock moved on by the outage; every reading
    written complete before and after is stored once.
    """
    reconnect_min, reconnect_max = RECONNECT_MIN / scale, RECONNECT_MAX / scale
    link = str(tmp_path / "stick")
    db = tmp_path / "state" / "ravend.db"
    sim = MeterSimulator("raven", link=link, seed=31, speed=scale, reply_delay=0.02).start()
    config = write_config(tmp_path / "ravend.conf", tmp_path / "state", link, device={
        "reconnect_min": f"{reconnect_min:.4f}", "reconnect_max": f"{reconnect_max:.4f}"})
    pushes_before = 20 if scale > 1 else 3  # a demand every 8 s of meter time
    with running_ravend(config, tmp_path / "ravend.log",
                        stop_within=5, then_stop=(sim.stop,)) as ravend:
        assert wait_for(lambda: len(stored_rows(db)) >= pushes_before, 60), ravend.log()
        sim.unplug(mid_fragment=True)
        before = sim.sent_readings()
        time.sleep(outage / scale)
        assert ravend.proc.poll() is None, "ravend exited while the stick was away"
        assert "device back" not in ravend.log()
        sim.replug()
        replugged = time.monotonic()
        assert wait_for(lambda: "device back" in ravend.log(), reconnect_max + 30), ravend.log()
        noticed = time.monotonic() - replugged
        assert sim.wait_for(lambda: len(sim.sent_readings()) >= len(before) + pushes_before,
                            60)
        want = quiet(sim)
        assert wait_for(lambda: {(m, k, t) for m, k, t, *_ in stored_rows(db)} >= want, 30), (
            ravend.log())
    log = ravend.log()
    assert "Traceback" not in log
    assert log.count("device lost") == 1, log
    assert log.count("device unavailable") == 1, log  # not one line per attempt
    assert log.count("device back") == 1, log
    away = int(re.search(r"device back on \S+ after (\d+)s", log).group(1))
    assert outage / scale - 1 <= away <= outage / scale + reconnect_max + SLACK, log
    # Capped: however long the stick was away, the next attempt is at most reconnect_max off.
    assert noticed <= reconnect_max + SLACK, f"replug noticed after {noticed:.2f}s"
    demand = [s.meter_time for s in sim.sent_readings() if s.kind == "demand"]
    last_before = max(s.meter_time for s in before if s.kind == "demand")
    first_after = min(t for t in demand if t > last_before)
    assert first_after - last_before >= outage, "the meter's clock did not move on"
    accounted(sim, db)


def test_port_auto_follows_the_stick_to_a_new_name(tmp_path: Path, monkeypatch) -> None:
    """`port = auto`: the stick leaves as one serial/by-id name and comes back as another (the
    kernel gave the replugged stick another node, and udev another name); ravend looks again at
    every reopen and follows it. The device tree is a temporary directory of symlinks, which
    RAVEND_DEV_DIR points discovery at."""
    dev = tmp_path / "dev"
    by_id = dev / "serial" / "by-id"
    by_id.mkdir(parents=True)
    first = by_id / "usb-Rainforest_RFA-Z106-RA-PC_RAVEn_v2.3.21-if00-port0"
    second = by_id / "usb-Rainforest_RFA-Z106-RA-PC_RAVEn_v2.3.21-if01-port0"
    db = tmp_path / "state" / "ravend.db"
    sim = MeterSimulator("raven", link=str(first), seed=32, speed=200, reply_delay=0.02).start()
    monkeypatch.setenv(DEV_DIR_ENV, str(dev))
    config = write_config(tmp_path / "ravend.conf", tmp_path / "state", "auto")
    with running_ravend(config, tmp_path / "ravend.log", then_stop=(sim.stop,)) as ravend:
        assert wait_for(lambda: len(stored_rows(db)) >= 20, 30), ravend.log()
        sim.unplug(mid_fragment=True)
        assert not first.exists()
        sent_before = len(sim.sent_readings())
        time.sleep(1.0)
        sim.replug(link=str(second))
        assert wait_for(lambda: "device back" in ravend.log(), 10), ravend.log()
        assert sim.wait_for(lambda: len(sim.sent_readings()) >= sent_before + 40, 30)
        want = quiet(sim)
        assert wait_for(lambda: {(m, k, t) for m, k, t, *_ in stored_rows(db)} >= want, 20), (
            ravend.log())
    log = ravend.log()
    assert "Traceback" not in log
    assert f"device opened on {first}" in log, log
    assert f"device lost on {first}" in log, log
    assert f"device back on {second}" in log, log
    assert log.count("device unavailable") == 1, log
    accounted(sim, db)
