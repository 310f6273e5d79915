"""Meter commands over MQTT with `[mqtt] allow_commands`: a real Mosquitto, the real ravend and
the simulator's wire; refused when commands are off; Home Assistant entities only when on."""

from __future__ import annotations

import json
import time
from pathlib import Path

from ravend.mqtt_client import Connection, Endpoint, Message
from ravend.simulator import MeterSimulator
from tests.helpers.mqtt import Subscriber
from tests.helpers.process import RavendProcess, stored_rows, write_config
from tests.helpers.wait import wait_for


def publish(broker, topic: str, payload: dict) -> None:
    conn = Connection(Endpoint(host=broker.host, port=broker.port, client_id="test-commander"))
    conn.connect(5)
    try:
        conn.publish_all([Message(topic, json.dumps(payload).encode(), 1, False)], 5)
    finally:
        conn.close()


def start(tmp_path: Path, broker, **mqtt: str):
    link = str(tmp_path / "stick")
    sim = MeterSimulator("raven", link=link, seed=31, speed=20, reply_delay=0.02).start()
    config = write_config(tmp_path / "ravend.conf", tmp_path / "state", link,
                          mqtt={"enabled": "yes", "host": broker.host, "port": str(broker.port),
                                "client_id": "ravend-test", **mqtt})
    ravend = RavendProcess(config, tmp_path / "ravend.log")
    assert wait_for(lambda: len(stored_rows(tmp_path / "state" / "ravend.db")) > 3, 20), \
        ravend.log()
    return sim, ravend


def test_price_set_over_mqtt_reaches_the_wire_and_is_stored(tmp_path: Path,
                                                            mosquitto_server) -> None:
    sub = Subscriber(mosquitto_server.host, mosquitto_server.port, ["#"]).start()
    sim, ravend = start(tmp_path, mosquitto_server, allow_commands="yes")
    try:
        assert wait_for(lambda: "MQTT commands: listening" in ravend.log(), 10), ravend.log()
        topic = f"ravend/{sim.device_mac}/cmd/price_set"
        publish(mosquitto_server, topic, {"amount": "0.1234"})
        assert sub.wait_for(lambda: sub.on(topic + "/result"), 15), ravend.log()
        result = sub.on(topic + "/result")[0].json()
        assert result["ok"] is True and "0.1234" in result["answer"]
        assert ("set_current_price", {"Price": "0x000004d2", "TrailingDigits": "0x04"}) in \
            sim.received_commands()
        db = tmp_path / "state" / "ravend.db"
        assert wait_for(lambda: any(k == "price" and raw == 1234
                                    for _, k, _, raw, *_ in stored_rows(db)), 10)
        # Bad input: refused with a clear answer, nothing sent.
        bad = f"ravend/{sim.device_mac}/cmd/schedule_set"
        publish(mosquitto_server, bad, {"event": "demand", "seconds": -5})
        assert sub.wait_for(lambda: sub.on(bad + "/result"), 15)
        assert "seconds must be from 1 to 65535" in sub.on(bad + "/result")[0].json()["error"]
        assert "set_schedule" not in [n for n, _ in sim.received_commands()]
        restart = f"ravend/{sim.device_mac}/cmd/device_restart"
        publish(mosquitto_server, restart, {"yes": True})
        assert sub.wait_for(lambda: sub.on(restart + "/result"), 15)
        assert "not allowed" in sub.on(restart + "/result")[0].json()["error"]
        assert "restart" not in [n for n, _ in sim.received_commands()]
        # Home Assistant: buttons and the price number, announced because commands are on.
        assert sub.wait_for(lambda: sub.on(r"homeassistant/number/.+/set_price/config"), 10)
        buttons = {m.topic.split("/")[-2] for m in sub.on(r"homeassistant/button/.+/config")}
        assert buttons == {"close_period", "refresh"}
        number = sub.on(r"homeassistant/number/.+/set_price/config")[0].json()
        assert number["command_topic"] == topic
        assert (number["min"], number["max"], number["step"]) == (0, 10, 0.001)
    finally:
        ravend.stop()
        sim.stop()
        sub.stop()


def test_commands_are_refused_with_the_setting_to_change_when_not_allowed(
        tmp_path: Path, mosquitto_server) -> None:
    sub = Subscriber(mosquitto_server.host, mosquitto_server.port, ["#"]).start()
    sim, ravend = start(tmp_path, mosquitto_server)
    try:
        assert wait_for(lambda: "MQTT commands: listening" in ravend.log(), 20), ravend.log()
        topic = f"ravend/{sim.device_mac}/cmd/price_set"
        for _ in range(2):
            publish(mosquitto_server, topic, {"amount": "0.5"})
        assert sub.wait_for(lambda: len(sub.on(topic + "/result")) == 2, 10)
        for answer in sub.on(topic + "/result"):
            reply = answer.json()
            assert reply["ok"] is False and "allow_commands = yes" in reply["error"]
        time.sleep(0.5)
        assert "set_current_price" not in [n for n, _ in sim.received_commands()]
        assert not sub.on(r"homeassistant/(button|number)/.+")
        refusals = [line for line in ravend.log().splitlines() if "refused: [mqtt]" in line]
        assert len(refusals) == 1 and "allow_commands is off" in refusals[0], refusals
    finally:
        ravend.stop()
        sim.stop()
        sub.stop()
