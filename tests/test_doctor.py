"""``ravenctl doctor`` against deliberately broken setups: each fault is named on its own line.

Real parts throughout: the simulator on a pty as the stick, a second process holding the port,
the private MariaDB and Mosquitto servers (and ports where nothing listens), real users.
"""

from __future__ import annotations

import grp
import json
import os
import pwd
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace

import pytest

from ravend.doctor import Account, Accounts, Status, check_disk, check_user
from ravend.simulator import MeterSimulator
from ravend.sinks.outbox import Outbox
from tests.helpers import servers
from tests.helpers.mysql import conf_keys
from tests.helpers.process import ROOT, RavendProcess, stored_rows, write_config
from tests.helpers.readings import demands
from tests.helpers.wait import wait_for

ME = pwd.getpwuid(os.getuid()).pw_name
HELD = ("import serial, sys, time; s = serial.Serial(sys.argv[1], exclusive=True);"
        " print('held', flush=True); time.sleep(60)")


def doctor(config: Path, *args: str, user: str = ME) -> tuple[int, dict[str, str], str]:
    """Exit status, each check's line by name, and the whole output."""
    proc = subprocess.run([sys.executable, "-m", "ravend.cli.ravenctl", "doctor", "--config",
                           str(config), "--user", user, *args],
                          capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert "Traceback" not in proc.stderr, proc.stderr
    lines = {line[6:].split(":", 1)[0]: line for line in proc.stdout.splitlines()}
    return proc.returncode, lines, proc.stdout


@pytest.fixture()
def sim(tmp_path: Path) -> Iterator[MeterSimulator]:
    with MeterSimulator("raven", link=str(tmp_path / "stick"), seed=4, speed=20) as s:
        yield s


def conf(tmp_path: Path, port: str, **sections: dict[str, str]) -> Path:
    state = tmp_path / "state"
    state.mkdir(exist_ok=True)
    sections = {"backup": {"dir": str(tmp_path / "backups")}, **sections}
    return write_config(tmp_path / "ravend.conf", state, port, **sections)


def test_healthy_setup_passes_and_names_the_device(tmp_path: Path, sim: MeterSimulator) -> None:
    status, lines, out = doctor(conf(tmp_path, sim.port))
    assert status == 0, out
    assert lines["device"] == (f"OK    device: {sim.port} → {sim.slave_name}: a pseudo-terminal"
                               " (the simulator, or a bridge such as socat)")
    assert lines["port"] == f"OK    port: {sim.slave_name} opens exclusively: nothing else holds it"
    assert lines["user"].startswith(f"OK    user: {ME} may open {sim.slave_name} ("), out
    assert lines["sink sqlite"].startswith("OK    sink sqlite: "), out
    assert lines["spool"].startswith("OK    spool: no outbox in "), out
    assert lines["backup"].startswith("WARN  backup: no verified backup in "), out
    assert "FAIL" not in out
    assert set(lines) == {"config", "device", "port", "user", "sink sqlite", "backup", "spool",
                          "disk"}


def test_bad_config_is_one_line_and_stops_the_checks_that_need_it(tmp_path: Path) -> None:
    path = tmp_path / "ravend.conf"
    path.write_text("[service]\nlog_level = info\n[device]\nbaudrate = fast\n")
    status, lines, out = doctor(path)
    assert status == 1
    assert lines["config"] == (f"FAIL  config: {path}:4: [device] baudrate = 'fast': expected a"
                               " whole number — correct it, then: ravend --check-config")
    assert set(lines) == {"config", "user"}, out


def test_json_output(tmp_path: Path) -> None:
    path = tmp_path / "ravend.conf"
    path.write_text("[nonsense]\n")
    status, _, out = doctor(path, "--json")
    assert status == 1
    checks = json.loads(out)
    assert checks[0]["check"] == "config" and checks[0]["status"] == "fail"
    assert "unknown section" in checks[0]["message"] and checks[0]["fix"]


def test_missing_device(tmp_path: Path) -> None:
    port = tmp_path / "ttyUSB7"
    status, lines, out = doctor(conf(tmp_path, str(port)))
    assert status == 1
    assert lines["device"] == (f"FAIL  device: {port} not found — plug in the stick or set"
                               " [device] port")
    assert "port" not in lines, out  # nothing to open


def test_unplugged_stick_leaves_a_dangling_link(tmp_path: Path, sim: MeterSimulator) -> None:
    link = tmp_path / "raven"
    link.symlink_to(sim.slave_name)
    config = conf(tmp_path, str(link))
    sim.stop()
    status, lines, _ = doctor(config)
    assert status == 1
    assert lines["device"] == (f"FAIL  device: {link} not found (a link to nothing) — plug in the"
                               " stick or set [device] port")


def test_service_user_not_in_dialout(tmp_path: Path, sim: MeterSimulator) -> None:
    node = sim.slave_name
    if os.geteuid() == 0:  # as udev leaves a stick: root:dialout 0660
        os.chown(node, 0, grp.getgrnam("dialout").gr_gid)
        os.chmod(node, 0o660)
    group = grp.getgrgid(os.stat(node).st_gid).gr_name
    assert "nobody" not in grp.getgrgid(os.stat(node).st_gid).gr_mem
    status, lines, out = doctor(conf(tmp_path, sim.port), user="nobody")
    assert status == 1, out
    assert lines["user"] == (f"FAIL  user: nobody is not in group {group}, which owns {node} —"
                             f" adduser nobody {group}, then systemctl restart ravend")
    assert lines["device"].startswith("OK    device: ")


def test_a_member_of_the_group_may_open_the_port(sim: MeterSimulator) -> None:
    """The same node, a user whose memberships include the node's group (injected lookups)."""
    node = sim.slave_name
    st = os.stat(node)
    os.chmod(node, 0o660)
    group = grp.getgrgid(st.st_gid).gr_name
    accounts = Accounts(
        getpwnam=lambda name: SimpleNamespace(pw_uid=st.st_uid + 4321, pw_gid=65534),
        grouplist=lambda name, gid: [gid, st.st_gid])
    check = check_user("meterman", node, accounts)
    assert check.status is Status.OK
    assert check.line() == f"OK    user: meterman may open {node} (a member of its group {group})"
    os.chmod(node, 0o600)
    check = check_user("meterman", node, accounts)
    assert check.line().startswith(f"FAIL  user: {node} is mode 0600: meterman cannot read and"
                                   " write it — the udev rules set GROUP=dialout MODE=0660")


def test_unknown_service_user(tmp_path: Path, sim: MeterSimulator) -> None:
    status, lines, _ = doctor(conf(tmp_path, sim.port), user="no-such-ravend-user")
    assert status == 1
    assert lines["user"] == ("FAIL  user: no user 'no-such-ravend-user' on this system —"
                             " reinstall ravend (it creates the user), or name it with --user")


def test_port_held_by_another_process_is_named(tmp_path: Path, sim: MeterSimulator) -> None:
    holder = subprocess.Popen([sys.executable, "-c", HELD, sim.port], stdout=subprocess.PIPE,
                              text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline() == "held\n"
        status, lines, out = doctor(conf(tmp_path, sim.port))
    finally:
        holder.kill()
        holder.wait()
    assert status == 1, out
    line = lines["port"]
    assert line.startswith(f"FAIL  port: {sim.slave_name} is held by "), line
    assert f"(pid {holder.pid}: " in line and "import serial" in line, line
    assert line.endswith(" — stop it: only one program may read the stick (ravend shares it"
                         " over MQTT)"), line


def test_port_held_by_ravend_itself_is_fine(tmp_path: Path, sim: MeterSimulator) -> None:
    config = conf(tmp_path, sim.port)
    ravend = RavendProcess(config, tmp_path / "ravend.log")
    try:
        assert wait_for(lambda: stored_rows(tmp_path / "state" / "ravend.db"), 30), ravend.log()
        status, lines, out = doctor(config)
    finally:
        ravend.stop()
    assert lines["port"] == (f"OK    port: {sim.slave_name} is held by ravend (pid"
                             f" {ravend.proc.pid}) and no one else"), out
    assert status == 0, out


def test_mysql_down_is_named(tmp_path: Path, sim: MeterSimulator) -> None:
    port = servers.free_port()
    keys = {"enabled": "yes", "host": "127.0.0.1", "port": str(port), "user": "ravend",
            "database": "ravend", "connect_timeout": "10"}
    started = time.monotonic()
    status, lines, out = doctor(conf(tmp_path, sim.port, mysql=keys))
    assert time.monotonic() - started < 15  # the probe's own timeout, not the configured one
    assert status == 1, out
    line = lines["sink mysql"]
    assert line.startswith(f"FAIL  sink mysql: mysql://ravend@127.0.0.1:{port}/ravend: "), line
    assert line.endswith(" — start the server, or fix [mysql] host/port/unix_socket; ravend"
                         " spools readings until it is reachable"), line
    assert lines["sink sqlite"].startswith("OK    ")


def test_mysql_reachable(tmp_path: Path, sim: MeterSimulator, mariadb_server) -> None:
    database = mariadb_server.new_database("doctor_reachable")
    config = conf(tmp_path, sim.port, mysql=conf_keys(mariadb_server, database))
    where = f"mysql://{mariadb_server.user}@{mariadb_server.host}:{mariadb_server.port}/{database}"
    status, lines, out = doctor(config)
    assert status == 0, out
    assert lines["sink mysql"] == (f"WARN  sink mysql: {where} reachable, no tables yet —"
                                   " ravenctl db migrate (ravend also does it at start)")
    migrate = subprocess.run([sys.executable, "-m", "ravend.cli.ravenctl", "db", "migrate",
                              "--config", str(config), "--store", "mysql"],
                             capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert migrate.returncode == 0, migrate.stderr
    status, lines, out = doctor(config)
    assert lines["sink mysql"].startswith(f"OK    sink mysql: {where} reachable (schema version")
    assert status == 0, out


def test_mqtt_broker_up_and_down(tmp_path: Path, sim: MeterSimulator, mosquitto_server) -> None:
    keys = {"enabled": "yes", "host": mosquitto_server.host, "port": str(mosquitto_server.port)}
    status, lines, out = doctor(conf(tmp_path, sim.port, mqtt=keys))
    assert status == 0, out
    assert lines["sink mqtt"] == (f"OK    sink mqtt: mqtt://{mosquitto_server.host}:"
                                  f"{mosquitto_server.port} accepted a connection")
    mosquitto_server.stop()
    status, lines, out = doctor(conf(tmp_path, sim.port, mqtt=keys))
    assert status == 1, out
    assert lines["sink mqtt"].startswith(f"FAIL  sink mqtt: mqtt://{mosquitto_server.host}:"
                                         f"{mosquitto_server.port}: "), out
    assert lines["sink mqtt"].endswith(" — start the broker, or fix [mqtt] host/port/tls/username;"
                                       " ravend spools readings until it is reachable")


def test_spool_depth(tmp_path: Path, sim: MeterSimulator) -> None:
    config = conf(tmp_path, sim.port)
    outbox = Outbox(tmp_path / "state" / "outbox-mysql.db")
    outbox.append(demands(7), [])
    outbox.close()
    status, lines, out = doctor(config)
    assert status == 0, out  # a backlog is a warning
    assert lines["spool"] == ("WARN  spool: readings waiting: 7 for mysql (no longer enabled) —"
                              " they are sent in order once the store is reachable (see its sink"
                              " line); a store no longer enabled gets them only if enabled again")


def test_stick_on_the_network(tmp_path: Path) -> None:
    down = f"socket://127.0.0.1:{servers.free_port()}"
    status, lines, _ = doctor(conf(tmp_path, down))
    assert status == 1
    assert lines["device"].startswith(f"FAIL  device: {down}: cannot connect: ")
    with socket.create_server(("127.0.0.1", 0)) as listener:
        up = f"socket://127.0.0.1:{listener.getsockname()[1]}"
        status, lines, out = doctor(conf(tmp_path, up))
    assert lines["device"] == f"OK    device: {up} accepts connections (a stick on the network)"
    assert lines["user"] == f"OK    user: {ME} exists; a network port needs no tty group"
    assert status == 0, out


def test_disk_space_thresholds(tmp_path: Path) -> None:
    def usage(free: int, total: int = 10**11):
        return lambda path: SimpleNamespace(total=total, used=total - free, free=free)

    assert check_disk(tmp_path, usage(50 * 10**9)).status is Status.OK
    low = check_disk(tmp_path, usage(3 * 10**9))  # 3 %
    assert low.line().startswith(f"WARN  disk: 3.0 GB free of 100.0 GB (3%) on the file system"
                                 f" of {tmp_path} — free space")
    assert check_disk(tmp_path, usage(5 * 10**6)).status is Status.FAIL
    assert check_disk(tmp_path / "not" / "yet", usage(50 * 10**9)).status is Status.OK


def test_account_follows_the_kernel_rules() -> None:
    """Owner bits for the owner even when the group's would allow more, as the kernel does."""
    st = SimpleNamespace(st_uid=1000, st_gid=20, st_mode=0o100060)
    owner = Account("owner", 1000, frozenset({20}))
    member = Account("member", 1001, frozenset({20}))
    assert not owner.may(st, 0o6)  # type: ignore[arg-type]
    assert member.may(st, 0o6)  # type: ignore[arg-type]
