"""Simulator on a pty → the real ravend process → Mosquitto → a subscriber: every reading.

The broker is killed (SIGKILL) in the middle of the stream and started again a few seconds
later; every reading the simulator sent must still reach the subscriber, repeats only as exact
copies (same key, same payload). The Home Assistant discovery configs ravend published must
validate against Home Assistant's MQTT sensor schema.
"""

from __future__ import annotations

import time
from pathlib import Path

from ravend.simulator import MeterSimulator
from ravend.sinks.mqtt_payload import parse_reading
from tests.helpers.accounting import quiet
from tests.helpers.mqtt import Subscriber, reading_messages, save_broker_state, validate_ha_sensor
from tests.helpers.process import running_ravend, write_config
from tests.helpers.wait import wait_for


def test_every_reading_reaches_the_subscriber_across_a_broker_crash(tmp_path: Path,
                                                                   make_mosquitto) -> None:
    broker = make_mosquitto(extra_config="max_queued_messages 100000")
    sub = Subscriber(broker.host, broker.port, ["#"], client_id="e2e-subscriber",
                     clean_session=False).start()
    save_broker_state(broker)  # the subscriber's session survives the kill
    link = str(tmp_path / "stick")
    sim = MeterSimulator("emu2", link=link, seed=11, speed=60, reply_delay=0.02,
                         quirks=("negative_demand", "duplicates")).start()
    config = write_config(tmp_path / "ravend.conf", tmp_path / "state", link, mqtt={
        "enabled": "yes", "host": broker.host, "port": str(broker.port),
        "client_id": "ravend-e2e", "publish_timeout": "2s"})

    def keys() -> set[tuple]:
        return {parse_reading(m.payload).key for m in reading_messages(sub)}

    with running_ravend(config, tmp_path / "ravend.log", stop_within=5,
                        then_stop=(sim.stop, lambda: sub.stop(settle=0.3))) as ravend:
        assert wait_for(lambda: len(keys()) >= 20, 30), ravend.log()
        broker.kill()
        assert sim.wait_for(lambda: sim.sent_count("demand") >= 60, 30)
        time.sleep(1.0)
        broker.start()
        assert sim.wait_for(lambda: sim.sent_count("demand") >= 90, 30)
        want = quiet(sim)
        assert wait_for(lambda: keys() >= want, 30), (len(want - keys()), ravend.log())
    log = ravend.log()
    assert "Traceback" not in log
    assert "mqtt: unavailable" in log and "mqtt: available again" in log

    seen: dict[tuple, tuple] = {}
    for m in reading_messages(sub):
        r = parse_reading(m.payload)
        assert m.topic == f"ravend/{r.meter_mac}/{r.kind.value}"
        # A repeat (a retried batch, or the device sending a fragment twice) has the same key
        # and the same values; only a device repeat has a later received_at.
        values = (r.raw, r.multiplier, r.divisor, r.value, r.unit, r.device_mac, r.meter_time)
        assert seen.setdefault(r.key, values) == values, f"{r.key}: repeat differs"
    assert set(seen) == want
    sent = {(s.meter_mac, s.kind, s.meter_time): (s.raw, s.multiplier, s.divisor)
            for s in sim.sent_readings()}
    assert {k: v[:3] for k, v in seen.items()} == sent
    assert any(v[0] < 0 for v in seen.values())  # negative demand came through

    configs = {m.topic: m.json() for m in sub.on("homeassistant/sensor/.*/config")}
    assert {t.split("/")[3] for t in configs} >= {
        "demand", "summation_delivered", "summation_received", "price", "link_strength",
        "connection_status"}
    for topic, cfg in configs.items():
        validate_ha_sensor(topic, cfg)
        assert cfg["device"]["model"] == sim.model
        assert cfg["device"]["sw_version"] == "1.1.9 (9315)"
    statuses = [m.payload for m in sub.on("ravend/ravend/ravend-e2e/status")]
    assert statuses[0] == b"online" and statuses[-1] == b"offline"
