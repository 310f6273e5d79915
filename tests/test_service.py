"""Service plumbing with the real process: sd_notify, watchdog, SIGHUP, SIGTERM, --daemon."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

from ravend.simulator import MeterSimulator
from tests.helpers.accounting import quiet
from tests.helpers.daemon import daemon_pid, start_daemon
from tests.helpers.notify import notify_socket, received
from tests.helpers.process import ROOT, RavendProcess, running_ravend, stored_rows, write_config
from tests.helpers.procfs import exited
from tests.helpers.wait import wait_for


def test_ready_status_and_watchdog_are_sent(tmp_path: Path, monkeypatch) -> None:
    sock = notify_socket(tmp_path)
    link = str(tmp_path / "stick")
    sim = MeterSimulator("raven", link=link, seed=2, speed=100).start()
    monkeypatch.setenv("NOTIFY_SOCKET", str(tmp_path / "notify"))
    monkeypatch.setenv("WATCHDOG_USEC", "400000")
    config = write_config(tmp_path / "ravend.conf", tmp_path / "state", link)
    ravend = RavendProcess(config, tmp_path / "ravend.log")
    try:
        messages = received(sock, 7.0)
    finally:
        code, _ = ravend.stop()
        sim.stop()
        messages += received(sock, 0.5)
    assert code == 0, ravend.log()
    assert messages[0] == "READY=1"
    assert messages.count("WATCHDOG=1") >= 10  # every 0.2 s for several seconds
    statuses = [m for m in messages if m.startswith("STATUS=")]
    assert any("last demand" in s and "kW" in s for s in statuses), statuses
    assert "STOPPING=1" in messages


def test_no_ready_before_config_is_valid(tmp_path: Path, monkeypatch) -> None:
    sock = notify_socket(tmp_path)
    monkeypatch.setenv("NOTIFY_SOCKET", str(tmp_path / "notify"))
    bad = tmp_path / "bad.conf"
    bad.write_text("[device]\nport = /dev/null\nbaudrate = many\n")
    proc = subprocess.run([sys.executable, "-m", "ravend.cli.ravend", "--config", str(bad)],
                          capture_output=True, text=True, cwd=ROOT, timeout=30)
    assert proc.returncode == 78
    assert "baudrate" in proc.stderr
    assert received(sock, 0.5) == []


def test_sighup_reopens_the_port_without_losing_readings(tmp_path: Path) -> None:
    link = str(tmp_path / "stick")
    db = tmp_path / "state" / "ravend.db"
    sim = MeterSimulator("raven", link=link, seed=4, speed=200).start()
    config = write_config(tmp_path / "ravend.conf", tmp_path / "state", link)
    with running_ravend(config, tmp_path / "ravend.log",
                        stop_within=5, then_stop=(sim.stop,)) as ravend:
        assert wait_for(lambda: len(stored_rows(db)) >= 10, 20), ravend.log()
        ravend.proc.send_signal(signal.SIGHUP)
        assert wait_for(lambda: "SIGHUP" in ravend.log(), 5)
        before = len(stored_rows(db))
        assert wait_for(lambda: len(stored_rows(db)) >= before + 10, 20), ravend.log()
        want = quiet(sim)
        assert wait_for(lambda: len(stored_rows(db)) >= len(want), 10)
    got = {(m, k, t) for m, k, t, *_ in stored_rows(db)}
    assert got == want
    assert ravend.proc.returncode == 0


def test_daemon_mode_detaches_writes_pidfile_and_logs(tmp_path: Path) -> None:
    link = str(tmp_path / "stick")
    db = tmp_path / "state" / "ravend.db"
    pidfile = tmp_path / "run" / "ravend.pid"
    sim = MeterSimulator("raven", link=link, seed=5, speed=200).start()
    config = write_config(tmp_path / "ravend.conf", tmp_path / "state", link)
    try:
        start_daemon(config, pidfile, tmp_path / "daemon.log")
        assert wait_for(lambda: daemon_pid(pidfile) is not None, 10)
        pid = daemon_pid(pidfile)
        assert pid is not None
        assert wait_for(lambda: len(stored_rows(db)) >= 5, 20)
        os.kill(pid, signal.SIGTERM)
        assert wait_for(lambda: exited(pid), 10)
    finally:
        sim.stop()
    assert not pidfile.exists()
    assert "ravend started" in (tmp_path / "daemon.log").read_text()
