"""Every long-lived thread supervised: a part that fails is logged once with its traceback,
counted and restarted; one that cannot stay up stops the watchdog; `ravenctl status`, `doctor`
and the metrics show a part that is down as down. Parts are broken for real where they can be
(a metrics port taken, a control socket directory that cannot be written); elsewhere through
the test-only hook RAVEND_TEST_FAULT (ravend.runtime.supervisor.fault_point), which raises
inside the part's thread: at its (re)start, in the device thread per fragment (``fragment``), in
a sink worker after a durable write (``stored-<sink>``).
"""

from __future__ import annotations

import json
import logging
import os
import socket
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from ravend.runtime.backoff import Backoff
from ravend.runtime.supervisor import DOWN_FAILURES, Supervisor
from ravend.simulator import MeterSimulator
from tests.helpers import servers
from tests.helpers.metrics import scrape, value
from tests.helpers.notify import notify_socket, received
from tests.helpers.process import (
    ROOT,
    RavendProcess,
    run_program,
    running_ravend,
    stored_rows,
    write_config,
)
from tests.helpers.wait import wait_for

# --- the supervisor alone (real threads) ------------------------------------------------------


def test_backoff_doubles_to_its_cap_and_resets() -> None:
    b = Backoff(0.5, 3.0)
    assert [b.next() for _ in range(5)] == [0.5, 1.0, 2.0, 3.0, 3.0]
    b.reset()
    assert b.next() == 0.5
    with pytest.raises(ValueError):
        Backoff(0, 1)


def test_backoff_longer_grows_first_and_delay_repeats_the_pause() -> None:
    """The sink workers', the repeater's and the ingest's way: a new failure waits ``delay``
    again, the same failure once more waits ``longer()``."""
    b = Backoff(0.5, 3.0)
    assert b.delay == 0.5
    assert [b.longer() for _ in range(4)] == [1.0, 2.0, 3.0, 3.0]
    assert b.delay == 3.0
    b.reset()
    assert b.delay == 0.5


def test_a_crash_is_logged_once_with_traceback_counted_and_restarted(caplog) -> None:
    runs: list[int] = []
    release = threading.Event()

    def part() -> None:
        runs.append(1)
        if len(runs) == 1:
            raise ZeroDivisionError("boom")
        release.wait()

    sup = Supervisor(backoff_min=0.01, backoff_max=0.02)
    sup.add("thing", part)
    with caplog.at_level(logging.INFO, logger="ravend.supervisor"):
        sup.start()
        assert wait_for(lambda: len(runs) == 2 and sup.health()[0].up, 10)
        (health,) = sup.health()
        assert health.restarts == 1 and health.last_error == "ZeroDivisionError: boom"
        assert sup.healthy() and not health.failing
        sup.stop()
        release.set()
        sup.join("thing", 5)
    errors = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert len(errors) == 1 and errors[0].exc_info is not None, caplog.text
    assert "thing failed: ZeroDivisionError: boom" in errors[0].getMessage()
    assert not sup.health()[0].up  # ended at stop: never shown as up


def test_a_target_that_returns_is_a_failure_and_one_that_keeps_failing_is_down(caplog) -> None:
    sup = Supervisor(backoff_min=0.01, backoff_max=0.01)
    sup.add("quiet", lambda: None)
    with caplog.at_level(logging.ERROR, logger="ravend.supervisor"):
        sup.start()
        assert wait_for(lambda: sup.health()[0].restarts >= DOWN_FAILURES, 10)
        health = sup.health()[0]
        assert health.failing and not sup.healthy() and sup.down() == ["quiet"]
        assert health.last_error == "its thread ended while ravend was running"
        sup.stop()
        sup.join("quiet", 5)
    assert sum("quiet cannot stay up" in r.getMessage() for r in caplog.records) == 1
    # One traceback-less line per failure: the first one says it all.
    assert sum(r.getMessage().startswith("quiet failed:") for r in caplog.records) == 1


# --- the real process -------------------------------------------------------------------------


def ravenctl(config: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return run_program("ravend.cli.ravenctl", *args, "--config", str(config))


def parts(config: Path) -> dict[str, dict]:
    proc = ravenctl(config, "status", "--json")
    assert "Traceback" not in proc.stderr, proc.stderr
    return {p["name"]: p for p in json.loads(proc.stdout)["service"]["parts"]}


def doctor_line(config: Path) -> str:
    proc = subprocess.run([sys.executable, "-m", "ravend.cli.ravenctl", "doctor", "--config",
                           str(config), "--user", os.environ.get("USER") or "root"],
                          capture_output=True, text=True, cwd=ROOT, timeout=60)
    lines = [line for line in proc.stdout.splitlines() if line[6:].startswith("service:")]
    assert len(lines) == 1, proc.stdout + proc.stderr
    return lines[0]


def tracebacks_of(log: str, part: str) -> int:
    lines = log.splitlines()
    return sum(1 for i, line in enumerate(lines[:-1])
               if f"{part} failed: " in line and lines[i + 1].startswith("Traceback"))


@pytest.fixture()
def stick(tmp_path: Path):
    with MeterSimulator("raven", link=str(tmp_path / "stick"), seed=5, speed=100,
                        reply_delay=0.02) as sim:
        yield sim


def test_device_and_sink_crashes_are_restarted_and_readings_keep_flowing(
        tmp_path: Path, stick: MeterSimulator, monkeypatch) -> None:
    """The device thread raises mid-session (the port is open) and the SQLite worker raises
    after a write: each is logged once with its traceback, restarted (the port reopened, the
    same queue and outbox), counted in status and the metrics; readings go on being stored."""
    monkeypatch.setenv("RAVEND_TEST_FAULT", "fragment:1,stored-sqlite:1")
    port = servers.free_port()
    db = tmp_path / "state" / "ravend.db"
    config = write_config(tmp_path / "ravend.conf", tmp_path / "state", stick.port,
                          metrics={"listen": f"{servers.LOOPBACK}:{port}"})
    with running_ravend(config, tmp_path / "ravend.log") as ravend:
        assert wait_for(lambda: "sink-sqlite: restarted" in ravend.log()
                        and "device: restarted" in ravend.log(), 30), ravend.log()
        assert wait_for(lambda: "device back on" in ravend.log()
                        or ravend.log().count("device opened on") >= 2, 20), ravend.log()
        before = len(stored_rows(db))
        assert wait_for(lambda: len(stored_rows(db)) >= before + 10, 30), ravend.log()
        state = parts(config)
        samples = scrape(f"http://{servers.LOOPBACK}:{port}/metrics")
        status = ravenctl(config, "status")
    log = ravend.log()
    for name in ("device", "sink-sqlite"):
        assert tracebacks_of(log, name) == 1, log
        assert "InjectedFault" in log
        assert state[name]["up"] and state[name]["restarts"] == 1, state
        assert value(samples, "ravend_part_up", part=name) == 1
        assert value(samples, "ravend_part_restarts_total", part=name) == 1
    assert status.returncode == 0, status.stdout + status.stderr
    assert "parts up" in status.stdout


@pytest.mark.parametrize("part", ["maintenance", "mqtt-commands", "mqtt-commands-run",
                                  "metrics", "control"])
def test_a_part_that_cannot_stay_up_is_down_everywhere_and_the_watchdog_stops(
        tmp_path: Path, stick: MeterSimulator, monkeypatch, part: str,
        mosquitto_server) -> None:
    sock = notify_socket(tmp_path)
    monkeypatch.setenv("NOTIFY_SOCKET", str(tmp_path / "notify"))
    monkeypatch.setenv("WATCHDOG_USEC", "400000")
    monkeypatch.setenv("RAVEND_TEST_FAULT", part)  # every time it starts
    port = servers.free_port()
    db = tmp_path / "state" / "ravend.db"
    mqtt = {"enabled": "yes", "host": mosquitto_server.host, "port": str(mosquitto_server.port)}
    config = write_config(tmp_path / "ravend.conf", tmp_path / "state", stick.port, mqtt=mqtt,
                          metrics={"listen": f"{servers.LOOPBACK}:{port}"})
    with running_ravend(config, tmp_path / "ravend.log") as ravend:
        assert wait_for(lambda: f"{part} cannot stay up" in ravend.log(), 30), ravend.log()
        before = len(stored_rows(db))
        received(sock, 0.5)  # what was sent before it was down for good
        messages = received(sock, 6.5)  # a STATUS= comes every 5 s
        status = ravenctl(config, "status", "--json")
        doctor = doctor_line(config)
        samples = None
        if part != "metrics":
            samples = scrape(f"http://{servers.LOOPBACK}:{port}/metrics")
        assert wait_for(lambda: len(stored_rows(db)) >= before + 5, 30), ravend.log()
    log = ravend.log()
    assert tracebacks_of(log, part) == 1, log
    assert "WATCHDOG=1" not in messages, messages
    assert any(m.startswith("STATUS=") and f"part down: {part}" in m for m in messages), messages
    assert status.returncode == 5, status.stdout + status.stderr
    if part == "control":  # nothing answers: the lock says who runs
        service = json.loads(status.stdout)["service"]
        assert service["running"] and service["pid"] == ravend.proc.pid
        assert not service["answered"]
        assert doctor.startswith("FAIL  service: ") and "does not answer" in doctor, doctor
    else:
        state = {p["name"]: p for p in json.loads(status.stdout)["service"]["parts"]}
        assert state[part]["failing"] and state[part]["restarts"] >= DOWN_FAILURES - 1, state
        assert "InjectedFault" in state[part]["last_error"]
        assert doctor.startswith("FAIL  service: ") and f"part down: {part}" in doctor, doctor
        assert all(p["up"] for name, p in state.items() if name != part), state
    if samples is not None:
        assert value(samples, "ravend_part_failing", part=part) == 1
        assert value(samples, "ravend_part_restarts_total", part=part) >= DOWN_FAILURES - 1


def test_a_taken_metrics_port_shows_metrics_down(tmp_path: Path, stick: MeterSimulator) -> None:
    with socket.socket() as squatter:
        squatter.bind((servers.LOOPBACK, 0))
        squatter.listen()
        port = squatter.getsockname()[1]
        db = tmp_path / "state" / "ravend.db"
        config = write_config(tmp_path / "ravend.conf", tmp_path / "state", stick.port,
                              metrics={"listen": f"{servers.LOOPBACK}:{port}"})
        ravend = RavendProcess(config, tmp_path / "ravend.log")
        try:
            assert wait_for(lambda: len(stored_rows(db)) >= 5, 30), ravend.log()
            state = parts(config)
            status = ravenctl(config, "status")
            doctor = doctor_line(config)
        finally:
            code, _ = ravend.stop()
    assert code == 0, ravend.log()
    assert not state["metrics"]["up"] and state["metrics"]["failing"], state
    assert "cannot listen on" in state["metrics"]["last_error"]
    assert status.returncode == 5 and "DOWN metrics down" in status.stdout, status.stdout
    assert doctor.startswith("FAIL  service: ") and "metrics down" in doctor, doctor
    assert state["device"]["up"] and state["sink-sqlite"]["up"], state


def test_an_unusable_control_socket_dir_shows_control_down(tmp_path: Path,
                                                           stick: MeterSimulator) -> None:
    if os.geteuid() == 0:
        blocker = tmp_path / "not-a-dir"  # root may write anywhere: a file in the path
        blocker.write_text("")
        control = blocker / "control"
    else:
        locked = tmp_path / "locked"
        locked.mkdir(mode=0o500)
        control = locked / "sub" / "control"
    db = tmp_path / "state" / "ravend.db"
    config = write_config(tmp_path / "ravend.conf", tmp_path / "state", stick.port,
                          service={"control_socket": str(control)})
    with running_ravend(config, tmp_path / "ravend.log") as ravend:
        assert wait_for(lambda: len(stored_rows(db)) >= 5, 30), ravend.log()
        status = ravenctl(config, "status", "--json")
        doctor = doctor_line(config)
    service = json.loads(status.stdout)["service"]
    assert status.returncode == 5 and service["running"] and not service["answered"], service
    assert service["pid"] == ravend.proc.pid
    assert doctor.startswith("FAIL  service: ") and "does not answer" in doctor, doctor


def test_a_second_ravend_on_the_same_state_dir_is_refused(tmp_path: Path,
                                                          stick: MeterSimulator) -> None:
    db = tmp_path / "state" / "ravend.db"
    config = write_config(tmp_path / "ravend.conf", tmp_path / "state", stick.port)
    first = RavendProcess(config, tmp_path / "first.log")
    try:
        assert wait_for(lambda: len(stored_rows(db)) >= 2, 30), first.log()
        second = RavendProcess(config, tmp_path / "second.log")
        code = second.proc.wait(30)
        second.kill()
        assert first.proc.poll() is None, first.log()
    finally:
        first.stop()
    lines = second.log().splitlines()
    assert code == 75, second.log()
    assert len(lines) == 1, lines
    lock = tmp_path / "state" / "ravend.lock"
    assert "ERROR" in lines[0] and str(lock) in lines[0]
    assert f"pid {first.proc.pid}" in lines[0]
    # The lock goes with the process: a new ravend starts.
    third = RavendProcess(config, tmp_path / "third.log")
    try:
        assert wait_for(lambda: "ravend started" in third.log(), 30), third.log()
    finally:
        code, _ = third.stop()
    assert code == 0, third.log()
