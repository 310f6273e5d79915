"""Device session against the simulator on a real pty: discovery, commands, replies, reconnect."""

from __future__ import annotations

import logging
import os
import threading
import time
from pathlib import Path

import pytest

from ravend.config import DeviceConfig
from ravend.device import CommandFailed, DeviceNotFound, DeviceSession, find_port
from ravend.protocol.commands import CommandError
from ravend.protocol.model import DeviceInfo, Fragment, InstantaneousDemand, PriceCluster
from ravend.simulator import MeterSimulator
from tests.helpers.wait import wait_for

FAST = {"command_spacing": 0.05, "reply_timeout": 3.0, "reconnect_min": 0.05,
        "reconnect_max": 0.2}


def test_auto_prefers_the_udev_link(tmp_path: Path) -> None:
    (tmp_path / "serial" / "by-id").mkdir(parents=True)
    target = tmp_path / "ttyUSB0"
    target.touch()
    os.symlink(target, tmp_path / "serial/by-id/usb-Rainforest_RFA-Z106-RA-PC_RAVEn_v2.3.21-if00")
    assert find_port(str(tmp_path))[1] == "raven"
    os.symlink(target, tmp_path / "raven")
    assert find_port(str(tmp_path)) == (str(tmp_path / "raven"), "unknown")


def test_auto_recognises_the_emu2_by_name(tmp_path: Path) -> None:
    (tmp_path / "serial" / "by-id").mkdir(parents=True)
    os.symlink("/dev/null", tmp_path / "serial/by-id/usb-Rainforest_Automation__Inc._EMU-2-if00")
    assert find_port(str(tmp_path))[1] == "emu2"


def test_auto_ignores_other_serial_devices(tmp_path: Path) -> None:
    (tmp_path / "serial" / "by-id").mkdir(parents=True)
    os.symlink("/dev/null", tmp_path / "serial/by-id/usb-FTDI_FT232R_USB_UART_A50285BI-if00-port0")
    with pytest.raises(DeviceNotFound, match="is the stick plugged in"):
        find_port(str(tmp_path))


class Session:
    """A DeviceSession on its own thread, collecting fragments."""

    def __init__(self, port: str, **config: float) -> None:
        self.fragments: list[Fragment] = []
        self.session = DeviceSession(DeviceConfig(port=port, **{**FAST, **config}),
                                     lambda f, t: self.fragments.append(f))
        self.thread = threading.Thread(target=self.session.run, daemon=True)
        self.thread.start()

    def wait(self, predicate, timeout: float = 10.0) -> bool:
        return wait_for(predicate, timeout)

    def stop(self) -> None:
        self.session.stop()
        self.thread.join(5)
        assert not self.thread.is_alive()


@pytest.fixture()
def sim(tmp_path: Path):
    with MeterSimulator("raven", link=str(tmp_path / "stick"), seed=9, speed=20,
                        reply_delay=0.02) as s:
        yield s


def test_identifies_device_and_model_at_connect(sim: MeterSimulator) -> None:
    s = Session(sim.port)
    try:
        assert s.wait(lambda: s.session.device_mac and s.session.meter_mac)
        assert s.session.device_mac == sim.device_mac
        assert s.session.meter_mac == sim.meter_macs[0]
        assert s.session.stats.model == "raven"
    finally:
        s.stop()


def test_request_returns_the_matching_reply(sim: MeterSimulator) -> None:
    s = Session(sim.port)
    try:
        assert s.wait(lambda: s.session.stats.connected and s.session.device_mac)
        reply = s.session.request("get_device_info")
        assert isinstance(reply, DeviceInfo) and reply.device_mac_id == sim.device_mac
        assert s.session.request("set_current_price",
                                 {"Price": 1234, "TrailingDigits": 4}) is None
        assert s.wait(lambda: any(isinstance(f, PriceCluster) and f.price == 1234
                                  for f in s.fragments))
    finally:
        s.stop()
    assert ("set_current_price", {"Price": "0x000004d2", "TrailingDigits": "0x04"}) in \
        sim.received_commands()


def test_bad_arguments_never_reach_the_wire(sim: MeterSimulator) -> None:
    s = Session(sim.port)
    try:
        assert s.wait(lambda: s.session.stats.connected)
        before = sim.received_bytes()
        with pytest.raises(CommandError):
            s.session.request("set_schedule", {"Event": "demand", "Frequency": -5})
        with pytest.raises(CommandError):
            s.session.request("factory_reset")
        time.sleep(0.2)
        assert b"factory_reset" not in sim.received_bytes()
        assert b"-5" not in sim.received_bytes()[len(before):]
    finally:
        s.stop()


def test_request_without_a_stick_fails_clearly(tmp_path: Path) -> None:
    s = Session(str(tmp_path / "absent"))
    try:
        with pytest.raises(CommandFailed, match="not connected"):
            s.session.request("get_device_info")
    finally:
        s.stop()


def test_demand_is_polled_when_pushes_stop(tmp_path: Path) -> None:
    sim = MeterSimulator("emu2", link=str(tmp_path / "stick"), seed=1, pushes=False,
                         reply_delay=0.02).start()
    s = Session(sim.port, demand_poll_after=1.0)
    try:
        assert s.wait(lambda: any(isinstance(f, InstantaneousDemand) for f in s.fragments))
    finally:
        s.stop()
        sim.stop()
    assert "get_instantaneous_demand" in [n for n, _ in sim.received_commands()]


def test_silent_link_is_reopened(tmp_path: Path, caplog) -> None:
    sim = MeterSimulator("raven", link=str(tmp_path / "stick"), seed=1, pushes=False,
                         reply_delay=0.02).start()
    caplog.set_level(logging.INFO, "ravend.device")
    s = Session(sim.port, silence_timeout=1.0, demand_poll_after=3600)
    try:
        assert s.wait(lambda: "no data for 1s" in caplog.text, 10)
        assert s.wait(lambda: "device back" in caplog.text, 10)
    finally:
        s.stop()
        sim.stop()
    assert s.session.stats.reconnects >= 1
