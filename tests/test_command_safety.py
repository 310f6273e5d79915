"""Commands from a careless broker user or socket client: retained commands, any argument at
all, and the stick's secrets. A real Mosquitto, the real ravend and the simulator's wire."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

from ravend.control import call
from ravend.mqtt_client import Connection, Endpoint, Message
from ravend.simulator import MeterSimulator
from tests.helpers.mqtt import Subscriber
from tests.helpers.process import ROOT, RavendProcess, stored_rows, write_config
from tests.helpers.wait import wait_for

#: Values no argument of any command may take (as JSON: Python's json writes NaN/Infinity too).
BAD_VALUES: list[Any] = [
    "1e1000000", "-1e1000000", "1e-1000000", "9" * 400, "NaN", "Infinity", "-Infinity",
    float("nan"), float("inf"), -1, 10**40, -(10**40), 1.5, True, [], {"a": 1}, "x" * 2000,
    "\u00b2", "0x" + "f" * 100, "",
]
#: Good arguments of each command; one at a time is replaced by each bad value.
GOOD_ARGS: dict[str, dict[str, Any]] = {
    "device_info": {"refresh": False},
    "price_set": {"amount": "0.5", "currency": "USD", "trailing_digits": 2},
    "price_clear": {},
    "period_close": {},
    "schedule_show": {},
    "schedule_set": {"event": "demand", "seconds": 30},
    "fast_poll": {"seconds": 5, "minutes": 1},
    "message_show": {},
    "message_confirm": {"id": "0x01"},
    "device_restart": {"yes": True},
    "refresh": {},
}
#: Bad values that are in fact fine for that argument (optional, or a valid price).
ACCEPTED: dict[tuple[str, str], list[Any]] = {
    ("price_set", "amount"): [1.5],
    ("price_set", "currency"): [""],
    ("device_info", "refresh"): [True],  # a good value too
    ("message_confirm", "id"): [""],  # the message shown now
}
#: Commands that would reach the wire if a bad argument slipped through.
WIRE_COMMANDS = {"set_current_price", "set_schedule", "set_fast_poll", "confirm_message",
                 "restart"}
#: Payloads that are not a JSON object of arguments.
BAD_PAYLOADS = [b"[1]", b'"amount"', b"1e1000000", b"nul", b"\xff\xfe", b"{", b"null ",
                b"[" * 3000, b'{"amount": ' + b"[" * 3000]  # nested deeper than json recurses


def bad_requests() -> list[tuple[str, dict[str, Any]]]:
    """Every command, every argument, every bad value, plus a stray argument for each."""
    out = []
    for name, good in GOOD_ARGS.items():
        for arg in good:
            for value in BAD_VALUES:
                if any(value is ok or (value == ok and type(value) is type(ok))
                       for ok in [good[arg], *ACCEPTED.get((name, arg), [])]):
                    continue
                out.append((name, {**good, arg: value}))
        out.append((name, {**good, "bogus": 1}))
    return out


def simulator(tmp_path: Path) -> MeterSimulator:
    return MeterSimulator("raven", link=str(tmp_path / "stick"), seed=41, speed=20,
                          reply_delay=0.02).start()


def start(tmp_path: Path, broker, sim: MeterSimulator | None = None):
    sim = sim or simulator(tmp_path)
    link = str(tmp_path / "stick")
    config = write_config(tmp_path / "ravend.conf", tmp_path / "state", link,
                          mqtt={"enabled": "yes", "host": broker.host, "port": str(broker.port),
                                "client_id": "ravend-test", "allow_commands": "yes"})
    ravend = RavendProcess(config, tmp_path / "ravend.log")
    assert wait_for(lambda: len(stored_rows(tmp_path / "state" / "ravend.db")) > 0, 20), \
        ravend.log()
    assert wait_for(lambda: "MQTT commands: listening" in ravend.log(), 20), ravend.log()
    return sim, ravend


class Commander:
    """Publishes commands one at a time and waits for each result."""

    def __init__(self, broker, device_mac: str) -> None:
        self.prefix = f"ravend/{device_mac}/cmd"
        self.sub = Subscriber(broker.host, broker.port, [f"{self.prefix}/+/result"],
                              client_id="test-results").start()
        self.conn = Connection(Endpoint(host=broker.host, port=broker.port,
                                        client_id="test-commander"))
        self.conn.connect(5)
        self.sent = 0

    def send(self, name: str, payload: bytes, *, retain: bool = False) -> None:
        self.conn.publish_all([Message(f"{self.prefix}/{name}", payload, 1, retain)], 5)

    def ask(self, name: str, payload: bytes, log: Any = "") -> dict[str, Any]:
        self.send(name, payload)
        self.sent += 1
        assert self.sub.wait_for(lambda: len(self.sub.snapshot()) >= self.sent, 15), \
            (name, payload[:80], log() if callable(log) else log)
        last = self.sub.snapshot()[self.sent - 1]
        assert last.topic == f"{self.prefix}/{name}/result", (last.topic, name)
        reply: dict[str, Any] = last.json()
        return reply

    def close(self) -> None:
        self.conn.close()
        self.sub.stop()


def ravenctl(config: Path, *args: str) -> str:
    done = subprocess.run([sys.executable, "-m", "ravend.cli.ravenctl", *args, "--config",
                           str(config)], capture_output=True, text=True, cwd=ROOT, timeout=60)
    return done.stdout + done.stderr


def raw_request(path: Path, line: bytes) -> dict[str, Any]:
    """One request line as bytes, not as the JSON ``call`` would make of it."""
    with socket.socket(socket.AF_UNIX) as sock:
        sock.settimeout(15)
        sock.connect(str(path))
        sock.sendall(line)
        data = b""
        while not data.endswith(b"\n"):
            chunk = sock.recv(65536)
            assert chunk, f"ravend closed the connection without answering {line[:20]!r}"
            data += chunk
    reply: dict[str, Any] = json.loads(data)
    return reply


def assert_refused(reply: dict[str, Any], request: object) -> None:
    assert reply["ok"] is False, (request, reply)
    error = reply["error"]
    assert isinstance(error, str) and 0 < len(error) <= 300, (request, error)
    assert "failed inside ravend" not in error, (request, error)  # a refusal, not a bug


def test_every_command_refuses_every_bad_argument_and_still_answers(
        tmp_path: Path, mosquitto_server) -> None:
    sim, ravend = start(tmp_path, mosquitto_server)
    commander = Commander(mosquitto_server, sim.device_mac)
    socket_path = tmp_path / "state" / "control"
    try:
        for name, args in bad_requests():
            assert_refused(call(socket_path, name, args, timeout=15), (name, args))
            assert_refused(commander.ask(name, json.dumps(args).encode(), ravend.log),
                           (name, args))
        for name in GOOD_ARGS:
            for payload in BAD_PAYLOADS:
                assert_refused(commander.ask(name, payload, ravend.log), (name, payload))
        for line in BAD_PAYLOADS[-2:]:  # the socket reads the same nesting as a request line
            assert_refused(raw_request(socket_path, line + b"\n"), line[:20])
        assert not WIRE_COMMANDS & {n for n, _ in sim.received_commands()}
        assert "Traceback" not in ravend.log()
        # Both threads still serve: a good command gets its answer on each path.
        reply = commander.ask("price_set", b'{"amount": "0.1234"}', ravend.log)
        assert reply["ok"] is True and "0.1234" in reply["answer"], reply
        reply = call(socket_path, "fast_poll", {"seconds": 5, "minutes": 1}, timeout=15)
        assert reply["ok"] is True, reply
        assert ("set_current_price", {"Price": "0x000004d2", "TrailingDigits": "0x04"}) in \
            sim.received_commands()
    finally:
        commander.close()
        ravend.stop()
        sim.stop()


def retained_lines(log: str) -> list[str]:
    return [line for line in log.splitlines() if "MQTT commands: retained" in line]


def test_a_retained_command_is_never_sent_to_the_stick(tmp_path: Path, mosquitto_server) -> None:
    sim = simulator(tmp_path)
    publisher = Commander(mosquitto_server, sim.device_mac)
    publisher.send("period_close", b"{}", retain=True)
    sim, ravend = start(tmp_path, mosquitto_server, sim)
    try:
        # Commands run in order: the answer to a live command comes after the retained one ran.
        assert publisher.ask("schedule_show", b"{}", ravend.log)["ok"] is True
        assert "close_current_period" not in [n for n, _ in sim.received_commands()]
        ignored = retained_lines(ravend.log())
        assert len(ignored) == 1 and "cmd/period_close" in ignored[0], ignored
        # And again after a reconnect (the broker keeps the retained message across restarts).
        mosquitto_server.restart()
        assert wait_for(lambda: ravend.log().count("MQTT commands: listening") >= 2, 30), \
            ravend.log()
        publisher.close()
        publisher = Commander(mosquitto_server, sim.device_mac)
        assert publisher.ask("schedule_show", b"{}", ravend.log)["ok"] is True
        assert "close_current_period" not in [n for n, _ in sim.received_commands()]
        assert len(retained_lines(ravend.log())) == 2, ravend.log()
        # A live period_close is still run.
        assert publisher.ask("period_close", b"{}", ravend.log)["ok"] is True
        assert "close_current_period" in [n for n, _ in sim.received_commands()]
    finally:
        publisher.close()
        ravend.stop()
        sim.stop()


def test_device_info_carries_neither_link_key_nor_install_code(tmp_path: Path,
                                                               mosquitto_server) -> None:
    sim, ravend = start(tmp_path, mosquitto_server)
    everything = Subscriber(mosquitto_server.host, mosquitto_server.port, ["#"],
                            client_id="test-everything").start()
    commander = Commander(mosquitto_server, sim.device_mac)
    secrets = [sim._link_key, sim._install_code]
    secrets += [s.removeprefix("0x") for s in secrets]
    try:
        for refresh in (True, False):
            reply = commander.ask("device_info", json.dumps({"refresh": refresh}).encode(),
                                  ravend.log)
            assert reply["ok"] is True and reply["data"]["device"]["device_mac_id"] == \
                sim.device_mac, reply
            socket_reply = call(tmp_path / "state" / "control", "device_info",
                                {"refresh": refresh}, timeout=15)
            assert socket_reply["ok"] is True, socket_reply
            for text in (json.dumps(reply), json.dumps(socket_reply)):
                assert not [s for s in secrets if s.lower() in text.lower()], text
        published = b"".join(m.payload for m in everything.snapshot()).lower()
        assert published and not [s for s in secrets if s.lower().encode() in published]
        assert not [s for s in secrets if s.lower() in ravend.log().lower()]
        # What the store kept, as ravenctl prints it.
        config = tmp_path / "ravend.conf"
        assert wait_for(lambda: "DeviceInfo" in ravenctl(config, "info"), 10)
        for args, shown in ((("info",), sim.device_mac), (("info", "--json"), sim.device_mac),
                            (("status",), "readings"), (("status", "--json"), "meters"),
                            (("device", "info", "--refresh", "--json"), sim.device_mac)):
            out = ravenctl(config, *args)
            assert shown in out and "Traceback" not in out, (args, out)
            assert not [s for s in secrets if s.lower() in out.lower()], (args, out)
    finally:
        commander.close()
        everything.stop()
        ravend.stop()
        sim.stop()


class BrokenSession:
    """A device session with a bug in it: every request raises what no handler expects."""

    def request(self, name: str, args: object = None, timeout: float | None = None) -> None:
        raise RuntimeError(f"bug while sending {name}")


def test_an_unexpected_exception_costs_one_answer_not_the_caller(caplog) -> None:
    from ravend.control import run_command

    reply = run_command(BrokenSession(), "period_close", {})  # type: ignore[arg-type]
    assert reply == {"ok": False, "error": "period_close failed inside ravend (RuntimeError);"
                                           " see its log"}
    logged = [r for r in caplog.records if r.levelname == "ERROR"]
    assert len(logged) == 1 and "period_close" in logged[0].getMessage(), logged
    assert logged[0].exc_info is not None  # with its traceback
