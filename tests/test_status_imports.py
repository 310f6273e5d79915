"""``ravenctl status`` imports only what it needs, so that the whole command stays fast.

Most of a status run is Python's start and ravend's imports, not the store (the store's part is
tests/test_status_fast.py's). No timings here: the modules a real ``ravenctl status`` process
imported are read from its ``-X importtime`` report, and the device session, the protocol
decoder, the roll-ups and every optional package must not be among them. The bench row
``status-command`` (bench/rows.py) times the whole command against its 0.1 s target.

ravenctl also builds the parser of the chosen command alone: each is checked to parse as the
parser of every command does.
"""

from __future__ import annotations

import json
import re
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from ravend.cli import ravenctl
from ravend.sinks.sqlite import SqliteSink
from tests.helpers.process import ROOT
from tests.helpers.readings import demands
from tests.test_completion import subparsers

#: Modules a status must never import: the device and its protocol (control, decoder, framer,
#: commands, and the model's dataclasses: stored values are recomputed by
#: ravend.protocol.scaling), what other commands need (roll-ups, tariff, maintenance, purge,
#: doctor, payloads), the service itself, and every optional package.
HEAVY = (
    "ravend.control", "ravend.device", "ravend.protocol.decoder", "ravend.protocol.framer",
    "ravend.protocol.commands", "ravend.protocol.model", "ravend.protocol.fields",
    "ravend.protocol.table", "ravend.protocol.shortcuts", "ravend.protocol.readings",
    "ravend.report", "ravend.rollup", "ravend.rollup_update", "ravend.purge",
    "ravend.tariff", "ravend.maintenance", "ravend.doctor", "ravend.doctor_sinks", "ravend.backup",
    "ravend.backup_archive", "ravend.backup_verify", "ravend.backup_rotation", "ravend.restore",
    "ravend.sinks.mqtt_payload", "ravend.mongo_store", "ravend.mongo_ingest",
    "ravend.sinks.mysql", "ravend.service", "ravend.runtime.supervisor", "ravend.simulator",
    "serial", "paho", "pymongo", "MySQLdb", "prometheus_client", "sdnotify", "daemon",
)

_IMPORTED = re.compile(r"^import time:\s+\d+\s+\|\s+\d+\s+\|\s*(\S+)\s*$")


def imported(*args: str) -> tuple[subprocess.CompletedProcess[str], set[str]]:
    """Run ``ravenctl ARGS`` as a user does; what it printed, and every module it imported."""
    proc = subprocess.run([sys.executable, "-X", "importtime", "-m", "ravend.cli.ravenctl",
                           *args], capture_output=True, text=True, cwd=ROOT, timeout=60)
    names = {m.group(1) for line in proc.stderr.splitlines() if (m := _IMPORTED.match(line))}
    assert "ravend.cli.ravenctl" in names or "ravend.cli" in names, proc.stderr[-2000:]
    return proc, names


def heavy(names: set[str]) -> list[str]:
    return sorted(n for n in names if any(n == h or n.startswith(h + ".") for h in HEAVY))


@pytest.fixture()
def health_socket(tmp_path: Path) -> Iterator[Path]:
    """A control socket that answers one ``health`` request as ravend does."""
    path = tmp_path / "control"
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(str(path))
    server.listen(1)
    asked: list[str] = []

    def answer() -> None:
        client, _ = server.accept()
        with client:
            asked.append(client.recv(4096).decode())
            client.sendall(json.dumps({"ok": True, "answer": "health", "data": {
                "pid": 4242, "parts": [{"name": "device", "up": True, "restarts": 0}]}}
                ).encode() + b"\n")

    thread = threading.Thread(target=answer, daemon=True)
    thread.start()
    try:
        yield path
    finally:
        thread.join(timeout=30)
        server.close()
    assert asked and json.loads(asked[0])["command"] == "health", asked


def config(tmp_path: Path, control_socket: Path | str) -> Path:
    path = tmp_path / "ravend.conf"
    (tmp_path / "state").mkdir()
    path.write_text(f"[service]\nstate_dir = {tmp_path / 'state'}\ncontrol_socket ="
                    f" {control_socket}\n\n[sqlite]\npath = {tmp_path / 'ravend.db'}\n")
    return path


def test_status_on_an_empty_store_imports_nothing_heavy(tmp_path: Path) -> None:
    sink = SqliteSink(tmp_path / "ravend.db")
    sink.open()
    sink.close()
    proc, names = imported("status", "--config", str(config(tmp_path, "")))
    assert proc.returncode == 2, proc.stderr[-2000:]  # no readings yet
    assert "no readings stored yet" in proc.stdout
    assert heavy(names) == []


def test_status_with_readings_and_a_running_ravend_imports_nothing_heavy(
        tmp_path: Path, health_socket: Path) -> None:
    """Every line status prints (the values, the service's parts through its control socket),
    still without the device, the decoder or the roll-ups."""
    sink = SqliteSink(tmp_path / "ravend.db")
    sink.open()
    sink.write(demands(20), [])
    sink.close()
    proc, names = imported("status", "--config", str(config(tmp_path, health_socket)))
    assert proc.returncode == 3, proc.stderr[-2000:]  # stale: readings of 2023
    assert "demand" in proc.stdout and "all 1 part up" in proc.stdout, proc.stdout
    assert "ravend.control_client" in names
    assert heavy(names) == []


def test_status_json_imports_nothing_heavy(tmp_path: Path) -> None:
    sink = SqliteSink(tmp_path / "ravend.db")
    sink.open()
    sink.write(demands(5), [])
    sink.close()
    proc, names = imported("--config", str(config(tmp_path, tmp_path / "absent")), "status",
                           "--json")
    assert proc.returncode == 3, proc.stderr[-2000:]
    assert json.loads(proc.stdout)["meters"]
    assert heavy(names) == []


def test_a_protocol_model_import_leaves_the_decoder_alone() -> None:
    """ravend.protocol offers its names on first use: importing the model (as every store
    does) must not load the decoder behind them."""
    code = ("import sys, ravend.protocol.model\n"
            "print(sorted(m for m in sys.modules if m.startswith('ravend.protocol')))\n"
            "from ravend.protocol import StreamDecoder, Kind, encode_command\n"
            "print(StreamDecoder.__module__, Kind.__module__, encode_command.__module__)\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          cwd=ROOT, timeout=60, check=True)
    first, second = proc.stdout.splitlines()
    assert first == "['ravend.protocol', 'ravend.protocol.model', 'ravend.protocol.scaling']"
    assert second == "ravend.protocol.decoder ravend.protocol.model ravend.protocol.commands"


def every_command() -> list[str]:
    return sorted(subparsers(ravenctl.parser()))


@pytest.mark.parametrize("name", every_command())
def test_the_parser_of_one_command_is_that_of_every_command(name: str) -> None:
    one = subparsers(ravenctl.parser(name))
    assert list(one) == [name]
    every = subparsers(ravenctl.parser())
    assert one[name].format_help() == every[name].format_help()
    assert one[name].format_usage() == every[name].format_usage()


def test_an_unknown_command_gets_the_parser_of_every_command() -> None:
    assert sorted(subparsers(ravenctl.parser("statsu"))) == every_command()


@pytest.mark.parametrize("argv, chosen", [
    (["status"], "status"),
    (["--config", "x.conf", "status", "--json"], "status"),
    (["--db", "a.db", "--state-dir", "s", "report", "--days", "2"], "report"),
    (["-h", "status"], None),  # ravenctl's own help lists every command
    (["--hel", "status"], None),
    (["--json"], None),
    ([], None),
])
def test_the_command_chosen_on_the_line(argv: list[str], chosen: str | None) -> None:
    assert ravenctl._chosen(argv) == chosen
