"""Validate MQTT discovery messages with Home Assistant's own code; runs in .venv-ha.

Run by tests/helpers/ha_discovery.py as ``.venv-ha/bin/python tests/helpers/ha_validate.py``
(this file needs ``homeassistant``, which only that venv has; it does not import ravend). Reads on
stdin a JSON list of ``{"topic": ..., "payload": "<the message's text>"}`` and the discovery prefix
as its argument; writes on stdout a JSON list, one verdict per message, in order:
``{"topic", "error" (null when Home Assistant accepts it), "config" (the validated config's
device class, state class, unit, unique id and device identifiers)}``.

What a message goes through is what Home Assistant 2024.3 does with it between the broker and a
new entity:

1. the discovery topic matcher and the list of supported components
   (``homeassistant.components.mqtt.discovery``);
2. the abbreviation expansion of the payload, its device and origin blocks and availability
   list (the same loop as ``async_discovery_message_received``, over HA's tables in
   ``homeassistant.components.mqtt.abbreviations``: that loop is a closure, not callable on
   its own), then the origin schema;
3. the platform module's ``DISCOVERY_SCHEMA`` (``homeassistant.components.mqtt.<component>``),
   the call ``async_setup_entity_entry_helper`` makes; a key the schema drops as unknown counts
   as a refusal here (HA drops it silently: the setting would be lost);
4. for a sensor, the checks ``SensorEntity`` makes when it writes its first state (the unit and
   state class its device class allows, no unit on a non-numeric class): Home Assistant logs
   those as "Please update your configuration", and they are refusals here too.
"""

from __future__ import annotations

import importlib
import json
import sys
from typing import Any

import voluptuous as vol
from homeassistant.components.mqtt import abbreviations, discovery
from homeassistant.components.sensor import (
    DEVICE_CLASS_STATE_CLASSES,
    DEVICE_CLASS_UNITS,
    NON_NUMERIC_DEVICE_CLASSES,
)
from homeassistant.helpers import config_validation as cv


class Refused(Exception):
    """The message is one Home Assistant would not turn into an entity (or would warn about)."""


def expand(payload: dict[str, Any]) -> dict[str, Any]:
    """Home Assistant's expansion of abbreviated keys, in the order its discovery does it."""
    for key in list(payload):
        payload[abbreviations.ABBREVIATIONS.get(key, key)] = payload.pop(key)
    device = payload.get("device")
    if isinstance(device, dict):
        for key in list(device):
            device[abbreviations.DEVICE_ABBREVIATIONS.get(key, key)] = device.pop(key)
    origin = payload.get("origin")
    if origin is not None:
        try:
            for key in list(origin):
                origin[abbreviations.ORIGIN_ABBREVIATIONS.get(key, key)] = origin.pop(key)
            discovery.MQTT_ORIGIN_INFO_SCHEMA(origin)
        except Exception as exc:  # HA: "Unable to parse origin information", message dropped
            raise Refused(f"origin refused: {exc}") from exc
    if "availability" in payload:
        for item in cv.ensure_list(payload["availability"]):
            if isinstance(item, dict):
                for key in list(item):
                    item[abbreviations.ABBREVIATIONS.get(key, key)] = item.pop(key)
    if discovery.TOPIC_BASE in payload:
        base = payload.pop(discovery.TOPIC_BASE)
        for key, value in list(payload.items()):
            if isinstance(value, str) and value and key.endswith("topic"):
                if value[0] == discovery.TOPIC_BASE:
                    payload[key] = f"{base}{value[1:]}"
                if value[-1] == discovery.TOPIC_BASE:
                    payload[key] = f"{value[:-1]}{base}"
    payload["platform"] = "mqtt"
    return payload


def sensor_checks(config: dict[str, Any]) -> None:
    """What SensorEntity checks (and warns about) when it writes a state."""
    device_class = config.get("device_class")
    state_class = config.get("state_class")
    unit = config.get("unit_of_measurement")
    if device_class in NON_NUMERIC_DEVICE_CLASSES and unit:
        raise Refused(f"non-numeric device class {device_class} with unit {unit!r}")
    classes = DEVICE_CLASS_STATE_CLASSES.get(device_class) if device_class else None
    if state_class and classes is not None and state_class not in classes:
        raise Refused(f"state class {state_class} impossible for device class {device_class}; "
                      f"expected one of {sorted(str(c) for c in classes)}")
    units = DEVICE_CLASS_UNITS.get(device_class) if device_class else None
    if units is not None and unit not in units:
        raise Refused(f"unit {unit!r} not valid for device class {device_class}; "
                      f"expected one of {sorted(str(u) for u in units)}")


def validate(topic: str, text: str, discovery_prefix: str) -> dict[str, Any]:
    """The validated config of one discovery message; Refused if Home Assistant refuses it."""
    if not topic.startswith(discovery_prefix + "/"):
        raise Refused(f"not under the discovery prefix {discovery_prefix!r}")
    match = discovery.TOPIC_MATCHER.match(topic.removeprefix(discovery_prefix + "/"))
    if not match:
        raise Refused("illegal discovery topic")
    component = match.group("component")
    if component not in discovery.SUPPORTED_COMPONENTS:
        raise Refused(f"integration {component} is not supported")
    try:
        payload = json.loads(text)
    except ValueError as exc:
        raise Refused(f"unable to parse JSON: {exc}") from exc
    if not isinstance(payload, dict) or not payload:
        raise Refused("payload is not a JSON object with keys (empty removes the entity)")
    payload = expand(payload)
    platform = importlib.import_module(f"homeassistant.components.mqtt.{component}")
    try:
        config = platform.DISCOVERY_SCHEMA(dict(payload))
    except vol.Invalid as exc:
        raise Refused(f"{component} DISCOVERY_SCHEMA: {exc}") from exc
    dropped = set(payload) - set(config) - {"platform"}  # discovery's own mark, not the config's
    if dropped:
        raise Refused(f"keys {component} does not know (dropped): {sorted(dropped)}")
    if component == "sensor":
        sensor_checks(config)
    return config


def summary(config: dict[str, Any]) -> dict[str, Any]:
    device = config.get("device") or {}
    return {
        "device_class": str(config["device_class"]) if config.get("device_class") else None,
        "state_class": str(config["state_class"]) if config.get("state_class") else None,
        "unit_of_measurement": config.get("unit_of_measurement"),
        "unique_id": config.get("unique_id"),
        "device_identifiers": sorted(device.get("identifiers") or []),
    }


def main() -> int:
    discovery_prefix = sys.argv[1] if len(sys.argv) > 1 else "homeassistant"
    verdicts = []
    for message in json.load(sys.stdin):
        verdict: dict[str, Any] = {"topic": message["topic"], "error": None, "config": None}
        try:
            verdict["config"] = summary(validate(message["topic"], message["payload"],
                                                 discovery_prefix))
        except Refused as exc:
            verdict["error"] = str(exc)
        verdicts.append(verdict)
    json.dump(verdicts, sys.stdout)
    return 0


if __name__ == "__main__":
    sys.exit(main())
