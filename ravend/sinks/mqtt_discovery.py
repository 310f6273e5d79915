"""Home Assistant MQTT discovery configs for what ravend publishes: pure functions.

One Home Assistant device per meter (identifier ``ravend_<meter mac>``), named after the meter
and described with the stick's model and firmware from its DeviceInfo. Sensors read the ravend
topics directly (``state_topic`` plus a ``value_template`` into the JSON payload), so discovery
adds no messages per reading. Every config names ravend's availability topic: the entities go
"unavailable" when ravend's connection to the broker dies (its last will).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from ravend import __version__
from ravend.protocol.model import Kind
from ravend.sinks.mqtt_payload import cost_topic

MANUFACTURER = "Rainforest Automation"
CONNECTION_STATUS_TAG = "ConnectionStatus"


@dataclass(frozen=True, slots=True)
class SensorSpec:
    object_id: str
    name: str
    device_class: str | None
    state_class: str | None
    unit: str | None  # None: the reading's own unit (price: <currency>/kWh)
    value_template: str
    entity_category: str | None = None
    icon: str | None = None


_READING = "{{ value_json.value }}"

READING_SENSORS: dict[Kind, SensorSpec] = {
    Kind.DEMAND: SensorSpec("demand", "Demand", "power", "measurement", "kW", _READING),
    Kind.SUMMATION_DELIVERED: SensorSpec("summation_delivered", "Energy delivered", "energy",
                                         "total_increasing", "kWh", _READING),
    Kind.SUMMATION_RECEIVED: SensorSpec("summation_received", "Energy received", "energy",
                                        "total_increasing", "kWh", _READING),
    # A price per kWh is a rate, not an amount of money: Home Assistant's "monetary" class is
    # for amounts (its units are currencies), so no device class; "measurement" lets it keep
    # the price's statistics (mean, min, max) like any other rate.
    Kind.PRICE: SensorSpec("price", "Price", None, "measurement", None, _READING),
}

#: The running cost (``ravend.running_cost``), for Home Assistant's energy dashboard (cost of
#: grid consumption, compensation for return): monetary totals whose ``last_reset`` is when
#: ravend started counting, so a restart of ravend is a new cycle, not a refund.
COST_SENSORS: tuple[SensorSpec, ...] = (
    SensorSpec("cost", "Energy cost", "monetary", "total", None, "{{ value_json.cost }}",
               icon="mdi:cash"),
    SensorSpec("export_credit", "Export credit", "monetary", "total", None,
               "{{ value_json.export_credit }}", icon="mdi:cash-plus"),
)
COST_RESET = "{{ value_json.since }}"

LINK_SENSORS: tuple[SensorSpec, ...] = (
    SensorSpec("link_strength", "Link strength", None, "measurement", "%",
               "{{ value_json.body.link_strength }}", "diagnostic", "mdi:signal"),
    SensorSpec("connection_status", "Connection status", None, None, None,
               "{{ value_json.body.status }}", "diagnostic", "mdi:zigbee"),
)


@dataclass(frozen=True, slots=True)
class Topics:
    """The topic settings a config refers to."""

    prefix: str  # [mqtt] topic_prefix
    discovery_prefix: str
    availability: str  # ravend's status topic


def node_id(meter_mac: str) -> str:
    """``ravend_<16 hex digits>``: only [a-z0-9_], as discovery topics require."""
    return "ravend_" + meter_mac.lower().removeprefix("0x")


def config_topic(discovery_prefix: str, meter_mac: str, object_id: str) -> str:
    return f"{discovery_prefix}/sensor/{node_id(meter_mac)}/{object_id}/config"


def device_block(meter_mac: str, device_info: Mapping[str, Any] | None) -> dict[str, Any]:
    """The HA device of a meter; model and firmware are the stick's (from DeviceInfo)."""
    info = device_info or {}
    device: dict[str, Any] = {
        "identifiers": [node_id(meter_mac)],
        "name": f"Meter {meter_mac}",
        "manufacturer": info.get("manufacturer") or MANUFACTURER,
    }
    for key, field in (("model", "model_id"), ("sw_version", "fw_version"),
                       ("hw_version", "hw_version")):
        if info.get(field):
            device[key] = str(info[field])
    return device


def entity_common(topics: Topics, meter_mac: str,
                  device_info: Mapping[str, Any] | None) -> dict[str, Any]:
    """What every entity of a meter says alike: ravend's availability topic, the meter's
    device block (Home Assistant groups the entities by it) and the origin."""
    return {
        "availability_topic": topics.availability,
        "payload_available": "online",
        "payload_not_available": "offline",
        "device": device_block(meter_mac, device_info),
        "origin": {"name": "ravend", "sw_version": __version__},
    }


def sensor_config(spec: SensorSpec, topics: Topics, meter_mac: str, state_topic: str,
                  device_info: Mapping[str, Any] | None, unit: str | None = None) -> dict[str, Any]:
    config: dict[str, Any] = {
        "name": spec.name,
        "unique_id": f"{node_id(meter_mac)}_{spec.object_id}",
        "state_topic": state_topic,
        "value_template": spec.value_template,
        **entity_common(topics, meter_mac, device_info),
    }
    if spec.device_class:
        config["device_class"] = spec.device_class
    if spec.state_class:
        config["state_class"] = spec.state_class
    if spec.unit or unit:
        config["unit_of_measurement"] = spec.unit or unit
    if spec.entity_category:
        config["entity_category"] = spec.entity_category
    if spec.icon:
        config["icon"] = spec.icon
    return config


def reading_config(topics: Topics, meter_mac: str, kind: Kind, unit: str,
                   device_info: Mapping[str, Any] | None) -> tuple[str, dict[str, Any]] | None:
    """(config topic, config) of the sensor showing a kind of reading; None if it has none."""
    spec = READING_SENSORS.get(kind)
    if spec is None:
        return None
    state = f"{topics.prefix}/{meter_mac}/{kind.value}"
    return (config_topic(topics.discovery_prefix, meter_mac, spec.object_id),
            sensor_config(spec, topics, meter_mac, state, device_info, unit))


def cost_configs(topics: Topics, meter_mac: str, currency: str, export_credit: bool,
                 device_info: Mapping[str, Any] | None) -> list[tuple[str, dict[str, Any]]]:
    """The cost sensor (and the export credit's, when credited) of a meter; the unit, which
    Home Assistant requires of a monetary sensor, is the currency."""
    state = cost_topic(topics.prefix, meter_mac)
    out = []
    for spec in COST_SENSORS if export_credit else COST_SENSORS[:1]:
        config = sensor_config(spec, topics, meter_mac, state, device_info, currency)
        config["last_reset_value_template"] = COST_RESET
        out.append((config_topic(topics.discovery_prefix, meter_mac, spec.object_id), config))
    return out


def link_configs(topics: Topics, meter_mac: str, device_mac: str,
                 device_info: Mapping[str, Any] | None) -> list[tuple[str, dict[str, Any]]]:
    """Link strength and connection status of the stick a meter is heard through."""
    state = f"{topics.prefix}/{device_mac}/info/{CONNECTION_STATUS_TAG}"
    return [(config_topic(topics.discovery_prefix, meter_mac, spec.object_id),
             sensor_config(spec, topics, meter_mac, state, device_info))
            for spec in LINK_SENSORS]


def encode(config: Mapping[str, Any]) -> bytes:
    return json.dumps(config, separators=(",", ":"), sort_keys=True).encode()


#: Buttons offered when MQTT commands are on: (object id, name, command, icon).
COMMAND_BUTTONS: tuple[tuple[str, str, str, str], ...] = (
    ("close_period", "Close billing period", "period_close", "mdi:calendar-end"),
    ("refresh", "Refresh readings", "refresh", "mdi:refresh"),
)
RESTART_BUTTON = ("restart_stick", "Restart stick", "device_restart", "mdi:restart")

#: The "Set price" number's step, in the price sensor's own unit (<currency>/kWh): 0.001 is the
#: finest step Home Assistant's number schema accepts (a config with 0.0001 is refused whole).
#: The step is the granularity of HA's own input; number.set_value (an automation, a script)
#: is not held to it and may carry more places, which price_set keeps (up to 9 trailing digits;
#: `make check-ha` sets 0.1234 through HA and sees it reach the stick).
#: Kept in the currency, not in cents: the number then shows the same value and unit as the
#: price sensor, needs no conversion in its templates, and every currency reads the same way.
PRICE_STEP = 0.001


def command_topic(prefix: str, device_mac: str, command: str) -> str:
    """Where ravend listens for a command (`[mqtt] allow_commands`); results go to .../result."""
    return f"{prefix}/{device_mac}/cmd/{command}"


def command_configs(topics: Topics, meter_mac: str, device_mac: str,
                    device_info: Mapping[str, Any] | None,
                    allow_restart: bool) -> list[tuple[str, dict[str, Any]]]:
    """Buttons (close period, refresh, restart if allowed) and a number entity for the price."""
    node = node_id(meter_mac)
    common = entity_common(topics, meter_mac, device_info)
    buttons = [*COMMAND_BUTTONS, *((RESTART_BUTTON,) if allow_restart else ())]
    out: list[tuple[str, dict[str, Any]]] = [
        (f"{topics.discovery_prefix}/button/{node}/{object_id}/config", {
            **common, "name": name, "unique_id": f"{node}_{object_id}", "icon": icon,
            "command_topic": command_topic(topics.prefix, device_mac, command),
            "payload_press": "{}",
        })
        for object_id, name, command, icon in buttons
    ]
    out.append((f"{topics.discovery_prefix}/number/{node}/set_price/config", {
        **common, "name": "Set price", "unique_id": f"{node}_set_price", "icon": "mdi:cash",
        "command_topic": command_topic(topics.prefix, device_mac, "price_set"),
        "command_template": '{"amount": "{{ value }}"}',
        "state_topic": f"{topics.prefix}/{meter_mac}/{Kind.PRICE.value}",
        "value_template": _READING, "min": 0, "max": 10, "step": PRICE_STEP, "mode": "box",
    }))
    return out
