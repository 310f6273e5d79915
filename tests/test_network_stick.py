"""A stick served over the network: the simulator behind a private ser2net, read by ravend with
pyserial's socket:// and rfc2217:// URLs — same reconnect, backoff and one-line logging as a
local stick, and nothing lost that the simulator sent while ravend was connected.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from ravend.simulator import MeterSimulator
from tests.helpers import servers
from tests.helpers.process import RavendProcess, stored_rows, write_config
from tests.helpers.wait import wait_for

#: How long ser2net stays down in the outage test (the issue's acceptance: 30 s).
OUTAGE_SECONDS = 30


class Ser2net:
    """A private ser2net exporting one pty on a TCP port (raw) or as RFC 2217."""

    def __init__(self, tmp: Path, device: str, *, rfc2217: bool) -> None:
        self.binary = servers.find_binary("ser2net", "ser2net")
        self.port = servers.free_port()
        accepter = f"{'telnet(rfc2217),' if rfc2217 else ''}tcp,127.0.0.1,{self.port}"
        self.config = tmp / "ser2net.yaml"
        self.config.write_text(
            "connection: &stick\n"
            f"  accepter: {accepter}\n"
            f"  connector: serialdev,{device},115200n81,local\n"
            "  options:\n"
            "    kickolduser: true\n"
        )
        self.log = tmp / "ser2net.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> Ser2net:
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen([self.binary, "-n", "-d", "-c", str(self.config)],
                                         stdout=log, stderr=log, start_new_session=True)
        if not wait_for(lambda: servers.port_accepts("127.0.0.1", self.port), 10):
            pytest.fail(f"ser2net did not start: {self.log.read_text()}")
        return self

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()


def seen_from_first_stored(sim: MeterSimulator, db: Path) -> set[tuple]:
    """Sent readings from the first one ravend stored on (per meter and kind).

    Bytes the simulator wrote before ser2net first opened the pty were flushed by that open and
    never reached anyone; from the first stored reading on, every sent one must arrive.
    """
    first: dict[tuple[str, str], int] = {}
    for meter, kind, t, *_ in stored_rows(db):
        first[(meter, kind)] = min(t, first.get((meter, kind), t))
    return {(s.meter_mac, s.kind, s.meter_time) for s in sim.sent_readings()
            if (s.meter_mac, s.kind) in first and s.meter_time >= first[(s.meter_mac, s.kind)]}


def stored_keys(db: Path) -> set[tuple]:
    return {(m, k, t) for m, k, t, *_ in stored_rows(db)}


def url(kind: str, port: int) -> str:
    if kind == "socket":
        return f"socket://127.0.0.1:{port}"
    # A pty has no modem lines, so ser2net never acknowledges DTR: tell pyserial not to wait.
    return f"rfc2217://127.0.0.1:{port}?ign_set_control"


@pytest.mark.parametrize("kind", ["socket", "rfc2217"])
def test_readings_over_the_network_stored_once(tmp_path: Path, kind: str) -> None:
    sim = MeterSimulator("emu2", link=str(tmp_path / "stick"), seed=5, speed=100,
                         reply_delay=0.02).start()
    net = Ser2net(tmp_path, sim.port, rfc2217=kind == "rfc2217").start()
    db = tmp_path / "state" / "ravend.db"
    config = write_config(tmp_path / "ravend.conf", tmp_path / "state", url(kind, net.port))
    ravend = RavendProcess(config, tmp_path / "ravend.log")
    try:
        assert wait_for(lambda: len(stored_rows(db)) >= 30, 30), ravend.log()
        sim.set_pushes(False)
        assert sim.drain(5)
        assert wait_for(lambda: stored_keys(db) >= seen_from_first_stored(sim, db), 15)
    finally:
        code, _ = ravend.stop()
        net.kill()
        sim.stop()
    rows = stored_rows(db)
    assert len(rows) == len({(m, k, t) for m, k, t, *_ in rows})
    assert code == 0
    names = [n for n, _ in sim.received_commands()]
    assert "get_device_info" in names  # commands travel over the network link too


def test_ser2net_outage_reconnects_by_itself(tmp_path: Path) -> None:
    sim = MeterSimulator("raven", link=str(tmp_path / "stick"), seed=6, speed=100,
                         reply_delay=0.02).start()
    net = Ser2net(tmp_path, sim.port, rfc2217=False).start()
    db = tmp_path / "state" / "ravend.db"
    config = write_config(tmp_path / "ravend.conf", tmp_path / "state", url("socket", net.port),
                          device={"reconnect_max": "2"})
    ravend = RavendProcess(config, tmp_path / "ravend.log")
    try:
        assert wait_for(lambda: len(stored_rows(db)) >= 20, 30), ravend.log()
        sim.set_pushes(False)
        assert sim.drain(5)
        before_outage = seen_from_first_stored(sim, db)
        assert wait_for(lambda: stored_keys(db) >= before_outage, 10)
        net.kill()
        time.sleep(OUTAGE_SECONDS)
        assert ravend.proc.poll() is None
        net.start()
        assert wait_for(lambda: "device back" in ravend.log(), 20), ravend.log()
        sim.set_pushes(True)
        count = len(stored_rows(db))
        assert wait_for(lambda: len(stored_rows(db)) >= count + 20, 30), ravend.log()
        sim.set_pushes(False)
        assert sim.drain(5)
        time.sleep(1.0)
    finally:
        ravend.stop()
        net.kill()
        sim.stop()
    log = ravend.log()
    stored = stored_keys(db)
    assert before_outage <= stored, before_outage - stored
    assert log.count("device lost") == 1, log
    assert log.count("device back") == 1, log
    # Backoff, not a retry storm: one line when it went away, not one per attempt.
    assert log.count("device unavailable") == 1, log
