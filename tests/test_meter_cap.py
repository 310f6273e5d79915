"""Bounded per-meter state: thousands of meter MACs on the wire (a stick hearing the street, a
garbled MeterMacId) through the real ravend with SQLite, a real Mosquitto and the metrics.
Every reading is stored and published; only the first `[service] max_meters` meters get a Home
Assistant device and metric series, and one line says so."""

from __future__ import annotations

from pathlib import Path

from ravend.simulator import MeterSimulator
from tests.helpers import servers
from tests.helpers.metrics import scrape
from tests.helpers.mqtt import Subscriber
from tests.helpers.process import RavendProcess, stored_rows, write_config
from tests.helpers.wait import wait_for

#: Meters on the wire besides the simulator's own.
STRANGERS = 3000
MAX_METERS = 4
#: 2023-01-01 in the stick's clock (seconds since 2000-01-01 UTC).
STAMP = 725_846_400


def demand_fragment(device_mac: str, meter: int) -> bytes:
    """An InstantaneousDemand from another meter, as the stick would print it."""
    fields = [("DeviceMacId", device_mac), ("MeterMacId", f"0x{meter:016x}"),
              ("TimeStamp", f"0x{STAMP:08x}"), ("Demand", "0x0003e8"),
              ("Multiplier", "0x00000001"), ("Divisor", "0x000003e8"), ("DigitsRight", "0x03"),
              ("DigitsLeft", "0x06"), ("SuppressLeadingZero", "Y")]
    body = "".join(f"  <{k}>{v}</{k}>\r\n" for k, v in fields)
    return f"<InstantaneousDemand>\r\n{body}</InstantaneousDemand>\r\n".encode()


def test_thousands_of_meters_are_all_stored_but_only_the_cap_is_tracked(
        tmp_path: Path, mosquitto_server) -> None:
    link = str(tmp_path / "stick")
    db = tmp_path / "state" / "ravend.db"
    port = servers.free_port()
    sim = MeterSimulator("raven", link=link, seed=51, speed=20, reply_delay=0.02).start()
    config = write_config(tmp_path / "ravend.conf", tmp_path / "state", link,
                          service={"max_meters": str(MAX_METERS)},
                          metrics={"listen": f"127.0.0.1:{port}"},
                          mqtt={"enabled": "yes", "host": mosquitto_server.host,
                                "port": str(mosquitto_server.port), "client_id": "ravend-test"})
    sub = Subscriber(mosquitto_server.host, mosquitto_server.port,
                     ["ravend/+/demand", "homeassistant/#"]).start()
    ravend = RavendProcess(config, tmp_path / "ravend.log")
    strangers = {f"0x{0x00AB_0000_0000_0000 + i:016x}" for i in range(STRANGERS)}
    try:
        assert wait_for(lambda: len(stored_rows(db)) > 0, 20), ravend.log()
        for i in range(STRANGERS):
            sim.write_raw(demand_fragment(sim.device_mac, 0x00AB_0000_0000_0000 + i))

        def stored_strangers() -> int:
            return len({mac for mac, kind, *_ in stored_rows(db) if kind == "demand"}
                       & strangers)

        assert wait_for(lambda: stored_strangers() == STRANGERS, 120), \
            (stored_strangers(), ravend.log()[-3000:])
        published = lambda: {m.topic.split("/")[1] for m in sub.on(r"ravend/[^/]+/demand")}  # noqa: E731
        assert wait_for(lambda: strangers <= published(), 60), len(published() & strangers)
        samples = scrape(f"http://127.0.0.1:{port}/metrics")
    finally:
        code, _ = ravend.stop()
        sim.stop()
        sub.stop()
    log = ravend.log()
    assert code == 0 and "Traceback" not in log, log[-3000:]
    nodes = {m.topic.split("/")[2] for m in sub.on(r"homeassistant/[^/]+/[^/]+/[^/]+/config")}
    assert len(nodes) == MAX_METERS, sorted(nodes)[:10]
    series = {dict(labels)["meter"] for (name, labels) in samples
              if name == "ravend_demand_kilowatts"}
    assert 0 < len(series) <= MAX_METERS, len(series)
    assert {f"ravend_{mac.removeprefix('0x')}" for mac in series} <= nodes
    told = [line for line in log.splitlines() if "max_meters" in line]
    assert len(told) == 1 and "WARNING" in told[0] and f"max_meters = {MAX_METERS}" in told[0], \
        told[:3]
