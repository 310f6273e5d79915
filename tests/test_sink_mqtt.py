"""The MQTT sink in its worker against a real Mosquitto: what is published, and outages.

An outage is real: the broker is killed (SIGKILL) or not started yet; the worker must spool to
its outbox and replay in order, and paho must not resend anything by itself afterwards (the
outbox is the only copy), so a reading is published again only when its batch failed.
"""

from __future__ import annotations

import dataclasses
import json
import os
import time
from collections import Counter
from pathlib import Path

import pytest

from ravend.config import MqttConfig
from ravend.mqtt_client import PAHO_VERSION
from ravend.protocol.model import Kind, Reading, scale
from ravend.sinks.base import SinkUnavailable, StateItem
from ravend.sinks.mqtt import MqttSink
from ravend.sinks.mqtt_payload import parse_reading
from ravend.sinks.worker import SinkWorker
from tests.helpers.mqtt import Subscriber, reading_messages, save_broker_state, validate_ha_sensor
from tests.helpers.readings import DEVICE, METER, demands
from tests.helpers.wait import wait_for

STATUS = "ravend/ravend/test-ravend/status"


def config(server, **kw) -> MqttConfig:
    return MqttConfig(enabled=True, host=server.host, port=server.port, client_id="test-ravend",
                      publish_timeout=2.0, **kw)


def worker(tmp_path: Path, sink: MqttSink) -> SinkWorker:
    return SinkWorker(sink, tmp_path / "outbox-mqtt.db", retry_min=0.05, retry_max=0.3,
                      max_delay=0.05, spool_max_mb=sink.spool_max_mb)


def device_info(fw: str = "2.0.0 (7400)") -> StateItem:
    return StateItem(DEVICE, "", "DeviceInfo", 1_700_000_000.0, {
        "device_mac_id": DEVICE, "fw_version": fw, "hw_version": "1.2.3",
        "manufacturer": "Rainforest Automation, Inc.", "model_id": "Z106-RAVEn",
        "link_key": "0xsecret", "install_code": "0xsecret2"})


def connection_status() -> StateItem:
    return StateItem(DEVICE, METER, "ConnectionStatus", 1_700_000_001.0, {
        "device_mac_id": DEVICE, "meter_mac_id": METER, "status": "Connected",
        "link_strength": 100, "channel": 20})


def summation(i: int) -> list[Reading]:
    return [Reading(METER, kind, 1_700_000_000 + i, 1_700_000_000.5 + i, 5000 + i, 1, 1000,
                    scale(5000 + i, 1, 1000), "kWh", DEVICE)
            for kind in (Kind.SUMMATION_DELIVERED, Kind.SUMMATION_RECEIVED)]


def price() -> Reading:
    return Reading(METER, Kind.PRICE, 1_700_000_000, 1_700_000_000.5, 1234, 1, 10000,
                   scale(1234, 1, 10000), "USD/kWh", DEVICE)


def test_readings_states_discovery_and_availability(tmp_path, mosquitto_server) -> None:
    sub = Subscriber(mosquitto_server.host, mosquitto_server.port).start()
    sink = MqttSink(config(mosquitto_server))
    w = worker(tmp_path, sink)
    w.start()
    w.submit([], [device_info(), connection_status()])
    w.submit(demands(5) + summation(0) + [price()])
    assert wait_for(lambda: w.stats.stored == 8)
    assert sub.wait_for(lambda: len(reading_messages(sub)) == 8, 5)
    w.stop()
    assert sub.wait_for(lambda: [m.payload for m in sub.on(STATUS)][-1:] == [b"offline"], 5)
    sub.stop()

    # A subscriber that comes later gets the latest of everything, retained.
    late = Subscriber(mosquitto_server.host, mosquitto_server.port, client_id="late").start()
    assert late.wait_for(lambda: len(late.snapshot()) >= 4 + 2 + 6 + 1, 5)
    late.stop()
    retained = {m.topic: m for m in late.snapshot()}
    assert all(m.retain for m in retained.values())
    assert parse_reading(retained[f"ravend/{METER}/demand"].payload) == demands(5)[-1]
    assert retained[STATUS].payload == b"offline"
    assert f"ravend/{DEVICE}/info/DeviceInfo" in retained

    readings = reading_messages(sub)
    assert all(m.qos == 1 for m in readings)
    assert [parse_reading(m.payload) for m in readings if m.topic.endswith("/demand")] == \
        demands(5)
    assert {m.topic for m in readings} == {f"ravend/{METER}/{k}" for k in (
        "demand", "summation_delivered", "summation_received", "price")}

    info = sub.on(f"ravend/{DEVICE}/info/DeviceInfo")
    assert len(info) == 1
    assert b"secret" not in info[0].payload
    assert info[0].json()["body"]["model_id"] == "Z106-RAVEn"
    assert sub.on(f"ravend/{DEVICE}/info/ConnectionStatus")[0].json()["body"][
        "link_strength"] == 100

    assert [m.payload for m in sub.on(STATUS)] == [b"online", b"offline"]

    configs = {m.topic: m.json() for m in sub.on("homeassistant/.*")}
    node = "ravend_" + METER[2:]
    assert set(configs) == {f"homeassistant/sensor/{node}/{o}/config" for o in (
        "demand", "summation_delivered", "summation_received", "price", "link_strength",
        "connection_status")}
    for topic, cfg in configs.items():
        validate_ha_sensor(topic, cfg)
        assert cfg["availability_topic"] == STATUS
        assert cfg["device"] == {"identifiers": [node], "name": f"Meter {METER}",
                                 "manufacturer": "Rainforest Automation, Inc.",
                                 "model": "Z106-RAVEn", "sw_version": "2.0.0 (7400)",
                                 "hw_version": "1.2.3"}
    demand = configs[f"homeassistant/sensor/{node}/demand/config"]
    assert (demand["device_class"], demand["unit_of_measurement"], demand["state_class"]) == (
        "power", "kW", "measurement")
    assert demand["state_topic"] == f"ravend/{METER}/demand"
    assert demand["value_template"] == "{{ value_json.value }}"
    energy = configs[f"homeassistant/sensor/{node}/summation_received/config"]
    assert (energy["device_class"], energy["unit_of_measurement"], energy["state_class"]) == (
        "energy", "kWh", "total_increasing")
    rate = configs[f"homeassistant/sensor/{node}/price/config"]
    assert "device_class" not in rate  # a price per kWh is not an amount of money
    assert (rate["unit_of_measurement"], rate["state_class"]) == ("USD/kWh", "measurement")
    link = configs[f"homeassistant/sensor/{node}/link_strength/config"]
    assert link["state_topic"] == f"ravend/{DEVICE}/info/ConnectionStatus"
    assert link["value_template"] == "{{ value_json.body.link_strength }}"
    assert link["unit_of_measurement"] == "%"
    assert len({c["unique_id"] for c in configs.values()}) == len(configs)


def test_discovery_is_sent_once_and_again_when_the_firmware_changes(tmp_path,
                                                                   mosquitto_server) -> None:
    sub = Subscriber(mosquitto_server.host, mosquitto_server.port, ["homeassistant/#"]).start()
    sink = MqttSink(config(mosquitto_server))
    sink.open()
    sink.write(demands(3), [device_info()])
    sink.write(demands(3, start=3), [device_info()])
    sink.write(demands(3, start=6), [device_info("2.1.0")])
    sink.close()
    sub.stop(settle=0.3)
    firmware = [m.json()["device"]["sw_version"] for m in sub.on(".*/demand/config")]
    assert firmware == ["2.0.0 (7400)", "2.1.0"]


def test_no_discovery_when_disabled(tmp_path, mosquitto_server) -> None:
    sub = Subscriber(mosquitto_server.host, mosquitto_server.port).start()
    sink = MqttSink(config(mosquitto_server, discovery=False, retain_state=False, qos=0))
    sink.open()
    sink.write(demands(3), [device_info()])
    sink.close()
    sub.stop(settle=0.3)
    assert not sub.on("homeassistant/.*")
    assert len(reading_messages(sub)) == 3
    late = Subscriber(mosquitto_server.host, mosquitto_server.port, client_id="late").start()
    late.stop(settle=0.3)
    assert not reading_messages(late)  # nothing retained


def test_broker_down_at_start_then_everything_in_order(tmp_path, make_mosquitto) -> None:
    broker = make_mosquitto()
    # A persistent session, saved by the clean stop: the broker keeps what arrives for the
    # subscriber even if the sink replays before the subscriber is back.
    sub = Subscriber(broker.host, broker.port, ["ravend/+/+"], client_id="durable",
                     clean_session=False).start()
    broker.stop()
    sink = MqttSink(config(broker))
    with pytest.raises(SinkUnavailable, match="refused"):
        sink.open()
    w = worker(tmp_path, sink)
    w.start()
    for r in demands(50):
        w.submit([r])
    assert wait_for(lambda: w.stats.spooled >= 50 and not w.stats.up)
    broker.start()
    assert wait_for(lambda: w.stats.stored == 50, 15), w
    assert sub.wait_for(lambda: len(reading_messages(sub)) >= 50, 10)
    w.stop()
    sub.stop()
    got = [parse_reading(m.payload) for m in reading_messages(sub)]
    # In order; a repeat can only be the retained latest, sent again on re-subscribing.
    assert list(dict.fromkeys(got)) == demands(50)
    assert all(r == demands(50)[-1] for r in got[50:])


def test_broker_killed_mid_stream_loses_nothing_and_paho_resends_nothing(
        tmp_path, make_mosquitto) -> None:
    broker = make_mosquitto(extra_config="max_queued_messages 100000")
    sub = Subscriber(broker.host, broker.port, ["ravend/+/+"], client_id="durable",
                     clean_session=False).start()
    save_broker_state(broker)  # the subscriber's session survives the kill
    sink = MqttSink(config(broker))
    w = worker(tmp_path, sink)
    w.start()
    for r in demands(100):
        w.submit([r])
    assert wait_for(lambda: w.stats.stored == 100)
    # A SIGKILLed broker loses what it acknowledged but had not delivered yet: that is the
    # broker's promise, not ravend's, so the kill comes once the subscriber has the first 100.
    assert sub.wait_for(lambda: len(reading_messages(sub)) >= 100, 10)
    broker.kill()
    for r in demands(100, start=100):
        w.submit([r])
        time.sleep(0.005)
    assert wait_for(lambda: not w.stats.up and w.stats.spooled >= 1)
    time.sleep(1.0)  # several failed reconnects while down
    broker.start()
    for r in demands(100, start=200):
        w.submit([r])
    assert wait_for(lambda: w.stats.stored >= 300 and not len(w.outbox), 20), w
    want = [r.key for r in demands(300)]

    def missing() -> list[int]:
        got = {parse_reading(m.payload).key for m in reading_messages(sub)}
        return [i for i, key in enumerate(want) if key not in got]

    assert sub.wait_for(lambda: not missing(), 20), f"readings not received: {missing()}"
    w.stop()
    sub.stop(settle=0.3)
    seen: dict[tuple, bytes] = {}
    for m in reading_messages(sub):
        key = parse_reading(m.payload).key
        assert seen.setdefault(key, m.payload) == m.payload, "a repeat with other values"
    assert set(seen) == {r.key for r in demands(300)}
    counts = Counter(parse_reading(m.payload).key for m in reading_messages(sub))
    # Published before the kill and acknowledged: never sent again by anyone.
    assert all(counts[r.key] == 1 for r in demands(90))


def test_tls_password_file_and_spool_cap(tmp_path, make_mosquitto) -> None:
    broker = make_mosquitto(users={"ravend": "pa ss"}, tls=True)
    secret = tmp_path / "mqtt.secret"
    secret.write_text("pa ss\n")
    os.chmod(secret, 0o600)
    cfg = dataclasses.replace(config(broker), port=broker.tls_port, tls=True,
                              ca_file=broker.ca_cert, username="ravend",
                              password_file=str(secret), spool_max_mb=3)
    sub = Subscriber(broker.host, broker.port, ["ravend/+/+"], username="ravend",
                     password="pa ss").start()
    sink = MqttSink(cfg)
    w = worker(tmp_path, sink)
    assert w.outbox.max_rows == int(3 * 1024 * 1024 / 400)
    w.start()
    w.submit(demands(20))
    assert wait_for(lambda: w.stats.stored == 20)
    w.stop()
    assert sub.wait_for(lambda: len(reading_messages(sub)) == 20, 5)
    sub.stop()


def test_wrong_password_is_unavailable_with_the_reason(tmp_path, make_mosquitto) -> None:
    broker = make_mosquitto(users={"ravend": "right"})
    sink = MqttSink(config(broker, username="ravend", password="wrong"))
    with pytest.raises(SinkUnavailable, match=r"(?i)refused by the broker"):
        sink.open()


def test_stopped_broker_mid_batch_raises_and_a_new_connection_follows(mosquitto_server) -> None:
    sink = MqttSink(config(mosquitto_server))
    sink.open()
    sink.write(demands(2), [])
    mosquitto_server.stop()
    with pytest.raises(SinkUnavailable):
        sink.write(demands(200, start=2), [])
    mosquitto_server.start()
    sink.write(demands(2, start=202), [])  # reconnects by itself
    sink.close()


def test_payload_versions_do_not_depend_on_paho() -> None:
    """Nothing in a message depends on the paho version this run uses."""
    r = demands(1)[0]
    from ravend.sinks.mqtt_payload import reading_payload

    assert json.loads(reading_payload(r))["v"] == 1
    assert PAHO_VERSION  # reported in the test log via -ra when it fails


def test_unreadable_tls_files_are_unavailable_not_a_crash(tmp_path, mosquitto_server) -> None:
    """A CA file removed after start: the sink says why and the worker keeps spooling."""
    ca = tmp_path / "ca.pem"
    ca.write_text("not a certificate\n")
    sink = MqttSink(config(mosquitto_server, tls=True, ca_file=str(ca)))
    with pytest.raises(SinkUnavailable, match="cannot load TLS files"):
        sink.open()
    with pytest.raises(SinkUnavailable, match="cannot load TLS files"):
        sink.write(demands(1), [])
