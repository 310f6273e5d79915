"""A changed configuration takes effect on reload, with the real ravend.

``systemctl reload ravend`` runs the unit's ExecReload lines in order and stops at the first
that fails; the tests run those very lines (ravend's path and the config path swapped for the
test's) against a ravend on the simulator's pty. A good file: the new ``[metrics] listen``
answers, the old port is closed, the PID is the same and every reading the meter sent is stored
once. A bad file: the reload fails with one line, ravend keeps its running configuration."""

from __future__ import annotations

import os
import shlex
import signal
import subprocess
import sys
import urllib.request
from pathlib import Path

from ravend.simulator import MeterSimulator
from tests.helpers import servers
from tests.helpers.accounting import quiet
from tests.helpers.daemon import daemon_pid, start_daemon
from tests.helpers.process import ROOT, RavendProcess, running_ravend, stored_rows, write_config
from tests.helpers.procfs import exited
from tests.helpers.wait import wait_for

UNIT = ROOT / "systemd" / "ravend.service"


def unit_lines(key: str) -> list[list[str]]:
    return [shlex.split(line.split("=", 1)[1]) for line in UNIT.read_text().splitlines()
            if line.startswith(f"{key}=")]


def unit_reload(ravend: RavendProcess) -> subprocess.CompletedProcess[str]:
    """The unit's ExecReload lines as systemd runs them: in order, up to the first failure."""
    (start,) = unit_lines("ExecStart")
    program, config = start[0], start[start.index("--config") + 1]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.CompletedProcess[str]([], 0, "", "")
    for argv in unit_lines("ExecReload"):
        argv = [str(ravend.proc.pid) if a == "$MAINPID" else str(ravend.config)
                if a == config else a for a in argv]
        if argv[0] == program:
            argv = [sys.executable, "-m", "ravend.cli.ravend", *argv[1:]]
        done = subprocess.run(argv, env=env, cwd=ROOT, capture_output=True, text=True,
                              timeout=30)
        if done.returncode != 0:
            break
    return done


def answers_metrics(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://{servers.LOOPBACK}:{port}/metrics", timeout=2) as r:
            return b"ravend_readings_received_total" in r.read()
    except OSError:
        return False


def start_meter(tmp_path: Path, metrics_port: int) -> tuple[MeterSimulator, Path]:
    """A simulated meter and the config of a ravend that reads it, metrics on metrics_port."""
    link = str(tmp_path / "stick")
    sim = MeterSimulator("raven", link=link, seed=17, speed=200).start()
    config = write_config(tmp_path / "ravend.conf", tmp_path / "state", link,
                          metrics={"listen": f"{servers.LOOPBACK}:{metrics_port}"})
    return sim, config


def with_metrics_listen(config: Path, listen: str) -> None:
    text = config.read_text()
    head, _, rest = text.partition("[metrics]\n")
    old, _, tail = rest.partition("\n")
    assert old.startswith("listen = "), text
    config.write_text(f"{head}[metrics]\nlisten = {listen}\n{tail}")


def test_reload_applies_a_new_metrics_listen_without_losing_a_reading(tmp_path: Path) -> None:
    old_port = servers.free_port()
    new_port = servers.free_port()
    while new_port == old_port:
        new_port = servers.free_port()
    db = tmp_path / "state" / "ravend.db"
    sim, config = start_meter(tmp_path, old_port)
    with running_ravend(config, tmp_path / "ravend.log", then_stop=(sim.stop,)) as ravend:
        assert wait_for(lambda: len(stored_rows(db)) >= 10 and answers_metrics(old_port), 20), \
            ravend.log()
        with_metrics_listen(config, f"{servers.LOOPBACK}:{new_port}")
        reload = unit_reload(ravend)
        assert reload.returncode == 0, reload.stderr
        assert wait_for(lambda: answers_metrics(new_port), 20), ravend.log()
        assert not servers.port_accepts(servers.LOOPBACK, old_port)
        assert ravend.proc.poll() is None  # the same process (systemd's MAINPID) runs on
        assert wait_for(lambda: ravend.log().count("ravend started") == 2, 10), ravend.log()
        before = len(stored_rows(db))
        assert wait_for(lambda: len(stored_rows(db)) >= before + 10, 20), ravend.log()
        want = quiet(sim)
        assert wait_for(lambda: len(stored_rows(db)) >= len(want), 10)
    rows = stored_rows(db)
    assert {(m, k, t) for m, k, t, *_ in rows} == want  # stored = sent, across the reload
    assert len(rows) == len(want)
    assert "Traceback" not in ravend.log()


def test_bad_file_on_reload_keeps_the_running_configuration(tmp_path: Path) -> None:
    port = servers.free_port()
    db = tmp_path / "state" / "ravend.db"
    sim, config = start_meter(tmp_path, port)
    # The exit status is not the bad file's: running_ravend asserts a clean stop.
    with running_ravend(config, tmp_path / "ravend.log", then_stop=(sim.stop,)) as ravend:
        assert wait_for(lambda: len(stored_rows(db)) >= 5 and answers_metrics(port), 20), \
            ravend.log()
        with_metrics_listen(config, "nowhere")
        # The unit validates first: the reload fails, naming the key, and ravend is untouched.
        reload = unit_reload(ravend)
        assert reload.returncode == 78
        assert "[metrics] listen" in reload.stderr
        # A plain SIGHUP (no systemd): ravend checks the file itself, logs one line, runs on.
        ravend.proc.send_signal(signal.SIGHUP)
        assert wait_for(lambda: "SIGHUP: configuration error" in ravend.log(), 10), ravend.log()
        before = len(stored_rows(db))
        assert wait_for(lambda: len(stored_rows(db)) >= before + 5, 20), ravend.log()
        assert answers_metrics(port)
    log = ravend.log()
    errors = [line for line in log.splitlines() if "configuration error" in line]
    assert len(errors) == 1, log
    assert f"{config}:" in errors[0] and "[metrics] listen = 'nowhere'" in errors[0]
    assert "keeping the running configuration" in errors[0]
    assert log.count("ravend started") == 1
    assert "Traceback" not in log


def test_daemon_mode_reload_applies_a_changed_file_and_keeps_the_pidfile(tmp_path: Path) -> None:
    """SIGHUP under --daemon: the restart in place detaches again (if it must) and writes the
    PID file again, so that the PID file always names the running ravend."""
    link = str(tmp_path / "stick")
    db = tmp_path / "state" / "ravend.db"
    pidfile = tmp_path / "run" / "ravend.pid"
    sim = MeterSimulator("raven", link=link, seed=6, speed=200).start()
    config = write_config(tmp_path / "ravend.conf", tmp_path / "state", link)
    daemon_log = tmp_path / "daemon.log"
    try:
        start_daemon(config, pidfile, daemon_log)
        assert wait_for(lambda: daemon_pid(pidfile) is not None, 10)
        assert wait_for(lambda: len(stored_rows(db)) >= 5, 20)
        port = servers.free_port()
        write_config(config, tmp_path / "state", link,
                     metrics={"listen": f"{servers.LOOPBACK}:{port}"})
        os.kill(daemon_pid(pidfile), signal.SIGHUP)  # type: ignore[arg-type]
        assert wait_for(lambda: answers_metrics(port), 20), daemon_log.read_text()
        assert wait_for(lambda: daemon_log.read_text().count("ravend started") == 2, 20), \
            daemon_log.read_text()
        assert wait_for(lambda: daemon_pid(pidfile) is not None, 10)
        pid = daemon_pid(pidfile)
        assert pid is not None and Path(f"/proc/{pid}").exists()
        before = len(stored_rows(db))
        assert wait_for(lambda: len(stored_rows(db)) >= before + 5, 20)
        os.kill(pid, signal.SIGTERM)
        assert wait_for(lambda: exited(pid), 10)
    finally:
        sim.stop()
    assert not pidfile.exists()
    text = daemon_log.read_text()
    assert "changed ([metrics]); restarting in place" in text
    assert "Traceback" not in text
