"""MQTT test helpers: a subscriber that records everything, and Home Assistant's sensor schema.

The subscriber uses ravend's own ``mqtt_client.Connection`` (so it runs on paho 1.6 and 2.x
alike) and keeps reconnecting until stopped: with ``clean_session=False`` the broker queues QoS 1
messages for it while it is away, across a broker restart too when the broker saved its sessions.
"""

from __future__ import annotations

import json
import re
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from ravend.mqtt_client import Connection, Endpoint, MqttError
from tests.helpers.wait import wait_for


@dataclass(frozen=True)
class Received:
    topic: str
    payload: bytes
    retain: bool
    qos: int

    def json(self) -> Any:
        return json.loads(self.payload)


class Subscriber:
    def __init__(self, host: str, port: int, topics: Sequence[str] = ("#",), *,
                 client_id: str = "test-subscriber", clean_session: bool = True, qos: int = 1,
                 **endpoint: Any) -> None:
        self.endpoint = Endpoint(host=host, port=port, client_id=client_id, **endpoint)
        self.topics = [(t, qos) for t in topics]
        self.clean_session = clean_session
        self.messages: list[Received] = []
        self.connects = 0
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._ready = threading.Event()
        self._conn: Connection | None = None
        self._thread = threading.Thread(target=self._run, name="test-subscriber", daemon=True)

    def start(self, timeout: float = 10.0) -> Subscriber:
        self._thread.start()
        if not self._ready.wait(timeout):
            raise AssertionError(f"subscriber could not subscribe to {self.endpoint}")
        return self

    def stop(self, settle: float = 0.0) -> None:
        """Disconnect, after listening ``settle`` seconds more for what is still in flight."""
        time.sleep(settle)
        self._stop.set()
        conn = self._conn
        if conn is not None:
            conn.close()
        self._thread.join(5)

    def _on_message(self, msg: Any) -> None:
        with self._lock:
            self.messages.append(Received(msg.topic, bytes(msg.payload), bool(msg.retain),
                                          int(msg.qos)))

    def _run(self) -> None:
        while not self._stop.is_set():
            conn = Connection(self.endpoint, clean_session=self.clean_session,
                              on_message=self._on_message)
            try:
                conn.connect(5)
                self._conn = conn
                granted = conn.subscribe(self.topics, 5)
                assert all(g < 128 for g in granted), granted
                self.connects += 1
                self._ready.set()
                conn.wait_lost()
            except MqttError:
                pass
            finally:
                conn.close()
            self._stop.wait(0.1)

    # queries
    def snapshot(self) -> list[Received]:
        with self._lock:
            return list(self.messages)

    def on(self, pattern: str) -> list[Received]:
        """Messages whose topic matches the regular expression (whole topic)."""
        rx = re.compile(pattern)
        return [m for m in self.snapshot() if rx.fullmatch(m.topic)]

    def wait_for(self, predicate: Callable[[], object], timeout: float) -> bool:
        return wait_for(predicate, timeout, interval=0.05)


def save_broker_state(broker: Any, timeout: float = 5.0) -> None:
    """Make Mosquitto write its persistence file now (SIGUSR1), so that sessions and their
    subscriptions survive a later SIGKILL, as they would after its periodic autosave."""
    import os
    import signal

    before = broker.log_text().count("Saving in-memory database")
    os.kill(broker.pid, signal.SIGUSR1)
    deadline = time.monotonic() + timeout
    while broker.log_text().count("Saving in-memory database") <= before:
        if time.monotonic() > deadline:
            raise AssertionError(f"{broker!r} did not save its state")
        time.sleep(0.02)


def reading_messages(sub: Subscriber, prefix: str = "ravend") -> list[Received]:
    return sub.on(re.escape(prefix) + r"/0x[0-9a-f]+/[a-z_]+")


# --- Home Assistant: MQTT sensor discovery schema ---------------------------------------------
# Written from the "MQTT Sensor" page of the Home Assistant documentation (configuration
# variables) and its "MQTT Discovery" page (device and origin blocks).

HA_SENSOR_KEYS = {
    "availability", "availability_mode", "availability_template", "availability_topic",
    "default_entity_id", "device", "device_class", "enabled_by_default", "encoding",
    "entity_category", "entity_picture", "expire_after", "force_update", "icon",
    "json_attributes_template", "json_attributes_topic", "last_reset_value_template", "name",
    "object_id", "options", "origin", "payload_available", "payload_not_available", "platform",
    "qos", "state_class", "state_topic", "suggested_display_precision", "unique_id",
    "unit_of_measurement", "value_template",
}
HA_SENSOR_REQUIRED = {"state_topic"}
HA_DEVICE_KEYS = {
    "configuration_url", "connections", "hw_version", "identifiers", "manufacturer", "model",
    "model_id", "name", "serial_number", "suggested_area", "sw_version", "via_device",
}
HA_ORIGIN_KEYS = {"name", "sw_version", "support_url"}
HA_STATE_CLASSES = {"measurement", "measurement_angle", "total", "total_increasing"}
HA_ENTITY_CATEGORIES = {"config", "diagnostic"}
# Device classes ravend uses, with the units Home Assistant accepts for them.
HA_UNITS = {
    "power": {"W", "kW", "MW", "GW", "TW", "mW", "BTU/h"},
    "energy": {"Wh", "kWh", "MWh", "GWh", "TWh", "mWh", "MJ", "GJ", "cal", "kcal", "Mcal",
               "Gcal"},
}
_TOPIC_LEVEL = re.compile(r"[A-Za-z0-9_-]+")


def validate_ha_sensor(topic: str, config: dict[str, Any], discovery_prefix: str =
                       "homeassistant") -> None:
    """Raise AssertionError naming the problem if the config is not a valid MQTT sensor."""
    parts = topic.split("/")
    assert len(parts) == 5 and parts[0] == discovery_prefix and parts[1] == "sensor" \
        and parts[4] == "config", f"{topic}: not <prefix>/sensor/<node_id>/<object_id>/config"
    assert _TOPIC_LEVEL.fullmatch(parts[2]) and _TOPIC_LEVEL.fullmatch(parts[3]), topic
    unknown = set(config) - HA_SENSOR_KEYS
    assert not unknown, f"{topic}: keys Home Assistant does not know: {sorted(unknown)}"
    missing = HA_SENSOR_REQUIRED - set(config)
    assert not missing, f"{topic}: required keys missing: {sorted(missing)}"
    for key in ("state_topic", "availability_topic", "name", "unique_id", "value_template",
                "unit_of_measurement", "icon", "device_class"):
        if key in config:
            assert isinstance(config[key], str) and config[key], f"{topic}: {key} not a string"
    assert "+" not in config["state_topic"] and "#" not in config["state_topic"], topic
    assert not ("availability" in config and "availability_topic" in config), \
        f"{topic}: availability and availability_topic must not be used together"
    if "state_class" in config:
        assert config["state_class"] in HA_STATE_CLASSES, f"{topic}: {config['state_class']}"
    if "entity_category" in config:
        assert config["entity_category"] in HA_ENTITY_CATEGORIES, topic
    device_class = config.get("device_class")
    if device_class in HA_UNITS:
        assert config.get("unit_of_measurement") in HA_UNITS[device_class], \
            f"{topic}: unit {config.get('unit_of_measurement')!r} not valid for {device_class}"
    if device_class == "monetary":
        assert config.get("state_class") in (None, "total"), \
            f"{topic}: monetary sensors allow only state_class total"
    if config.get("state_class") in ("total", "total_increasing", "measurement"):
        assert "unit_of_measurement" in config or device_class is None, topic
    if "value_template" in config:
        assert re.fullmatch(r"\{\{ value_json(\.[a-z_]+)+ \}\}", config["value_template"]), \
            f"{topic}: unexpected template {config['value_template']!r}"
    if "device" in config:
        device = config["device"]
        assert isinstance(device, dict), topic
        unknown = set(device) - HA_DEVICE_KEYS
        assert not unknown, f"{topic}: device keys Home Assistant does not know: {unknown}"
        assert device.get("identifiers") or device.get("connections"), \
            f"{topic}: a device needs identifiers or connections"
        assert "unique_id" in config, f"{topic}: a device needs the entity's unique_id"
        for key in ("name", "manufacturer", "model", "sw_version", "hw_version"):
            if key in device:
                assert isinstance(device[key], str), f"{topic}: device.{key}"
    if "origin" in config:
        assert set(config["origin"]) <= HA_ORIGIN_KEYS and "name" in config["origin"], topic
