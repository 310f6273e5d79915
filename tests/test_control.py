"""User commands through the control socket of a running ravend, checked on the simulator's wire.

ravend is the stick's only owner; ravenctl asks it. These tests look at the exact bytes the
simulated stick received, at what ravend then stored, and at every refusal (which must send
nothing).
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from ravend.control import BadRequest, parse_price
from ravend.simulator import MeterSimulator
from tests.helpers.process import ROOT, RavendProcess, run_program, stored_rows, write_config
from tests.helpers.wait import wait_for


def ravenctl(config: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return run_program("ravend.cli.ravenctl", *args, "--config", str(config))


@pytest.fixture()
def running(tmp_path: Path):
    link = str(tmp_path / "stick")
    sim = MeterSimulator("raven", link=link, seed=11, speed=20, reply_delay=0.02).start()
    config = write_config(tmp_path / "ravend.conf", tmp_path / "state", link)
    ravend = RavendProcess(config, tmp_path / "ravend.log")
    control = tmp_path / "state" / "control"
    assert wait_for(control.exists, 20), ravend.log()
    assert wait_for(lambda: len(stored_rows(tmp_path / "state" / "ravend.db")) > 0, 20)
    yield sim, config, ravend, tmp_path
    ravend.stop()
    sim.stop()


def commands_sent(sim: MeterSimulator, name: str) -> list[dict[str, str]]:
    return [fields for n, fields in sim.received_commands() if n == name]


def test_price_set_reaches_the_wire_and_is_stored(running) -> None:
    sim, config, ravend, tmp_path = running
    proc = ravenctl(config, "price", "set", "0.1234", "--currency", "USD")
    assert proc.returncode == 0, proc.stderr + ravend.log()
    assert "price set to 0.1234 USD" in proc.stdout
    assert commands_sent(sim, "set_current_price") == [
        {"Price": "0x000004d2", "TrailingDigits": "0x04"}]
    assert b"<Price>0x000004d2</Price>\r\n  <TrailingDigits>0x04</TrailingDigits>" in \
        sim.received_bytes()
    db = tmp_path / "state" / "ravend.db"
    assert wait_for(lambda: any(k == "price" and raw == 1234 and div == 10_000
                                for _, k, _, raw, _, div, _ in stored_rows(db)), 10)
    status = ravenctl(config, "status", "--json")
    kinds = {m["kind"]: m for m in json.loads(status.stdout)["meters"]}
    assert kinds["price"]["raw"] == 1234 and kinds["price"]["divisor"] == 10_000


def test_period_schedule_fast_poll_exact_commands(running) -> None:
    sim, config, _ravend, _ = running
    assert ravenctl(config, "period", "close").returncode == 0
    assert commands_sent(sim, "close_current_period") == [{}]
    proc = ravenctl(config, "schedule", "set", "demand", "30")
    assert proc.returncode == 0, proc.stderr
    assert commands_sent(sim, "set_schedule") == [
        {"Event": "demand", "Frequency": "0x001e", "Enabled": "Y"}]
    assert ravenctl(config, "schedule", "set", "price", "off").returncode == 0
    assert commands_sent(sim, "set_schedule")[-1]["Enabled"] == "N"
    proc = ravenctl(config, "fast-poll", "5", "2")
    assert proc.returncode == 0, proc.stderr
    assert commands_sent(sim, "set_fast_poll") == [{"Frequency": "0x0005", "Duration": "0x0002"}]
    shown = ravenctl(config, "schedule", "show")
    assert shown.returncode == 0 and "demand" in shown.stdout and "every 30s" in shown.stdout


def test_device_info_and_message(running) -> None:
    sim, config, _ravend, _ = running
    proc = ravenctl(config, "device", "info", "--refresh", "--json")
    assert proc.returncode == 0, proc.stderr
    reply = json.loads(proc.stdout)
    assert reply["data"]["device"]["device_mac_id"] == sim.device_mac
    assert reply["data"]["model"] == "raven"
    assert ravenctl(config, "message", "show").returncode == 0
    assert ravenctl(config, "refresh").returncode == 0
    assert commands_sent(sim, "get_instantaneous_demand")[-1].get("Refresh") == "Y"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("schedule", "set", "demand", "-5"), "seconds must be from 1 to 65535"),
        (("price", "set", "0.12345678901"), "too many decimal places"),
        (("price", "set", "0.125", "--trailing-digits", "2"), "more than 2 decimal places"),
        (("price", "set", "cheap"), "is not a number"),
        (("price", "set", "0.1", "--currency", "XYZ"), "ISO 4217"),
        (("fast-poll", "300", "1"), "seconds must be from 1 to 255"),
        (("device", "restart"), "needs --yes"),
    ],
)
def test_bad_input_is_refused_and_nothing_is_sent(running, args, message) -> None:
    sim, config, _ravend, _ = running
    before = sim.received_bytes()
    proc = ravenctl(config, *args)
    assert proc.returncode != 0
    assert message in proc.stderr
    assert proc.stderr.count("\n") == 1 and "Traceback" not in proc.stderr
    setters = (b"set_current_price", b"set_schedule", b"set_fast_poll", b"restart")
    assert not any(s in sim.received_bytes()[len(before):] for s in setters)


def test_unknown_command_over_the_socket(running) -> None:
    _, _, _, tmp_path = running
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.connect(str(tmp_path / "state" / "control"))
        s.sendall(b'{"command": "factory_reset"}\n')
        reply = json.loads(s.makefile().readline())
    assert reply["ok"] is False and "unknown command 'factory_reset'" in reply["error"]


def test_not_running_and_stale_socket(tmp_path: Path) -> None:
    config = write_config(tmp_path / "ravend.conf", tmp_path / "state", str(tmp_path / "x"))
    (tmp_path / "state").mkdir()
    proc = ravenctl(config, "period", "close")
    assert proc.returncode == 4 and "ravend is not running (no control socket" in proc.stderr
    stale = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    stale.bind(str(tmp_path / "state" / "control"))
    stale.close()  # a socket file nobody listens on, as a killed ravend leaves
    proc = ravenctl(config, "period", "close")
    assert proc.returncode == 4 and "stale socket" in proc.stderr


def test_stale_socket_is_replaced_at_start_and_mode_is_0660(tmp_path: Path) -> None:
    link = str(tmp_path / "stick")
    (tmp_path / "state").mkdir()
    stale = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    stale.bind(str(tmp_path / "state" / "control"))
    stale.close()
    sim = MeterSimulator("raven", link=link, seed=2, speed=20).start()
    config = write_config(tmp_path / "ravend.conf", tmp_path / "state", link)
    ravend = RavendProcess(config, tmp_path / "ravend.log")
    try:
        assert wait_for(lambda: "control socket on" in ravend.log(), 20), ravend.log()
        mode = os.stat(tmp_path / "state" / "control").st_mode & 0o777
        assert mode == 0o660
        assert ravenctl(config, "device", "info").returncode == 0
    finally:
        ravend.stop()
        sim.stop()
    assert not (tmp_path / "state" / "control").exists()


def test_device_absent_is_one_clear_line(tmp_path: Path) -> None:
    config = write_config(tmp_path / "ravend.conf", tmp_path / "state", str(tmp_path / "none"))
    ravend = RavendProcess(config, tmp_path / "ravend.log")
    try:
        assert wait_for((tmp_path / "state" / "control").exists, 20), ravend.log()
        proc = ravenctl(config, "period", "close")
    finally:
        ravend.stop()
    assert proc.returncode == 1
    assert "the meter stick is not connected" in proc.stderr


def test_parse_price() -> None:
    assert parse_price("0.1234") == (1234, 4)
    assert parse_price("0.1", 3) == (100, 3)
    assert parse_price("12") == (12, 0)
    with pytest.raises(BadRequest):
        parse_price("-1")
    with pytest.raises(BadRequest):
        parse_price("nan")


def test_silent_clients_are_capped_and_timed_out(running) -> None:
    """200 clients that connect and say nothing: at most control_clients (8) are served, each
    for at most 5 s; the rest get one line and are closed, with no thread each."""
    _, config, ravend, tmp_path = running
    path = str(tmp_path / "state" / "control")
    silent: list[socket.socket] = []
    try:
        for _ in range(200):
            client = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            silent.append(client)
            client.connect(path)  # blocking: waits for room in the listen backlog
            client.settimeout(20)
        refusal = silent[-1].recv(4096)
        threads = len(os.listdir(f"/proc/{ravend.proc.pid}/task"))
        served = silent[0].recv(4096)  # dropped after the request timeout: end of file
    finally:
        for client in silent:
            client.close()
    assert threads < 30, threads  # ravend's own threads and the 8 clients it serves
    reply = json.loads(refusal)
    assert reply["ok"] is False and "busy" in reply["error"], reply
    assert served == b""
    status = ravenctl(config, "status")
    assert status.returncode == 0, status.stdout + status.stderr
    assert "parts up" in status.stdout, status.stdout
    assert ravenctl(config, "device", "info").returncode == 0
    assert sum("refusing more" in line for line in ravend.log().splitlines()) == 1, ravend.log()


@pytest.mark.parametrize(("value", "why"), [("0", "expected a value from 1 to 256"),
                                            ("257", "expected a value from 1 to 256"),
                                            ("many", "expected a whole number"), ("16", "")])
def test_control_clients_is_validated(tmp_path: Path, value: str, why: str) -> None:
    path = tmp_path / "ravend.conf"
    path.write_text(f"[service]\ncontrol_clients = {value}\n")
    proc = subprocess.run([sys.executable, "-m", "ravend.cli.ravend", "--config", str(path),
                           "--check-config"], capture_output=True, text=True, cwd=ROOT)
    if not why:
        assert proc.returncode == 0, proc.stderr
        return
    assert proc.returncode == 78, proc.stderr
    assert proc.stderr == (f"ravend: configuration error: {path}:2: [service] control_clients"
                           f" = {value!r}: {why}\n")
