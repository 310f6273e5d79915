"""Home Assistant accepts every entity ravend announces: each discovery message a real ravend
publishes to a real Mosquitto goes through Home Assistant 2024.3.3's own discovery code and its
platform's DISCOVERY_SCHEMA (tests/helpers/ha_validate.py, run in .venv-ha), and none is refused.

A config Home Assistant refuses is dropped whole, with one log line in HA that a user rarely
reads: the entity is simply missing (as the "Set price" number was, with its step of 0.0001).
"""

from __future__ import annotations

import json
from pathlib import Path

from ravend.protocol.model import Kind
from ravend.sinks import mqtt_discovery
from tests.helpers.ha_discovery import (
    EVERY_ENTITY,
    INTENDED,
    ha_verdicts,
    refused,
    start_announcing_everything,
)
from tests.helpers.mqtt import Subscriber

CONFIG_TOPIC = r"homeassistant/[a-z_]+/ravend_[0-9a-f]+/[a-z_]+/config"


def entities(sub: Subscriber) -> dict[str, set[tuple[str, str]]]:
    """Per node id, the (component, object id) pairs announced so far."""
    out: dict[str, set[tuple[str, str]]] = {}
    for m in sub.on(CONFIG_TOPIC):
        _, component, node, object_id, _ = m.topic.split("/")
        out.setdefault(node, set()).add((component, object_id))
    return out


def test_home_assistant_accepts_every_config_a_real_ravend_publishes(tmp_path: Path,
                                                                    mosquitto_server) -> None:
    sub = Subscriber(mosquitto_server.host, mosquitto_server.port, ["homeassistant/#"]).start()
    sim, ravend = start_announcing_everything(tmp_path, mosquitto_server)
    want = {(c, o) for c, objects in EVERY_ENTITY.items() for o in objects}
    nodes = {mqtt_discovery.node_id(mac) for mac in sim.meter_macs}
    try:
        assert sub.wait_for(lambda: entities(sub) == dict.fromkeys(nodes, want), 60), (
            {n: sorted(want - e) for n, e in entities(sub).items()}, ravend.log())
    finally:
        ravend.stop()
        sim.stop()
        sub.stop()
    messages = [(m.topic, m.payload) for m in sub.on(CONFIG_TOPIC)]
    verdicts = ha_verdicts(messages)  # every announcement, re-announcements included
    assert refused(verdicts) == []
    assert {v["topic"] for v in verdicts} == {
        f"homeassistant/{c}/{n}/{o}/config" for n in nodes for c, o in want}

    # What Home Assistant made of them: one device per meter, the intended classes and units.
    for verdict in verdicts:
        assert verdict["config"]["device_identifiers"] == [verdict["topic"].split("/")[2]]
    made = {v["topic"].split("/")[3]: v["config"] for v in verdicts
            if v["topic"].split("/")[2] == min(nodes)}
    assert {name: (made[name]["device_class"], made[name]["state_class"],
                   made[name]["unit_of_measurement"]) for name in INTENDED} == INTENDED


def test_the_validation_refuses_what_home_assistant_refuses() -> None:
    """The check is not vacuous: configs Home Assistant 2024.3.3 refuses, or warns about when
    the entity writes its state, are reported as refused, each with HA's reason."""
    topics = mqtt_discovery.Topics("ravend", "homeassistant", "ravend/status")
    meter, device = "0x00135003001234ab", "0xd8d5b90000001234"
    (number_topic, number), = [c for c in mqtt_discovery.command_configs(
        topics, meter, device, None, False) if "/number/" in c[0]]
    demand_topic, demand = mqtt_discovery.reading_config(topics, meter, Kind.DEMAND, "kW", None)
    price_topic, price = mqtt_discovery.reading_config(topics, meter, Kind.PRICE, "USD/kWh", None)
    bad = [
        (number_topic, {**number, "step": 0.0001}),  # main's "Set price" until issue 17
        (demand_topic, {**demand, "unit_of_measurement": "%"}),
        (price_topic, {**price, "device_class": "monetary", "state_class": "measurement"}),
        (demand_topic.replace("/sensor/", "/gauge/"), demand),
        (demand_topic, {**demand, "expire_afterwards": 5}),
    ]
    verdicts = ha_verdicts([(t, json.dumps(c).encode()) for t, c in bad])
    errors = [v["error"] or "" for v in verdicts]
    assert "value must be at least 0.001" in errors[0] and "'step'" in errors[0], errors[0]
    assert "unit '%' not valid for device class power" in errors[1], errors[1]
    assert "state class measurement impossible for device class monetary" in errors[2], errors[2]
    assert "integration gauge is not supported" in errors[3], errors[3]
    assert "expire_afterwards" in errors[4], errors[4]
    # And the same configs as ravend builds them are accepted.
    good = ha_verdicts([(number_topic, mqtt_discovery.encode(number)),
                        (demand_topic, mqtt_discovery.encode(demand)),
                        (price_topic, mqtt_discovery.encode(price))])
    assert refused(good) == []
