"""The MQTT sink: every reading and device state to a broker, with Home Assistant discovery.

``write`` returns only when the broker has acknowledged every message of the batch (PUBACK at
QoS 1, PUBCOMP at 2; at QoS 0, once written to the socket). Anything else — broker down, refused,
connection lost, acknowledgements late by more than ``publish_timeout`` — drops the connection and
raises SinkUnavailable: the worker spools the batch to its outbox and replays it in order on a
new connection. Nothing stays queued inside paho between two connections, so the outbox is the
only copy of what is still to be sent, and a retried batch can only repeat readings (same key,
same values), never lose or reorder them.

Topics (``doc/mqtt.md``): readings on ``<prefix>/<meter_mac>/<kind>`` (retained when
``retain_state``: the retained message is the latest key's FIRST value: a reading with the key
time last published and another value is a conflict, counted and not published, see
``ravend.sinks.conflicts``), device state on
``<prefix>/<device_mac>/info/<tag>``, availability on ``<prefix>/ravend/<client_id>/status``
(``online`` after each connect; the retained last will says ``offline``).
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from collections.abc import Sequence
from typing import Any

from ravend.config import ConfigError, MqttConfig
from ravend.meter_cap import MeterCap
from ravend.mqtt_client import Connection, Message, MqttError, endpoint_from_config
from ravend.protocol.model import Kind, Reading
from ravend.running_cost import RunningCost
from ravend.sinks import mqtt_discovery as ha
from ravend.sinks.base import Sink, SinkUnavailable, StateItem
from ravend.sinks.conflicts import Key, KeyConflicts, Value, value_of
from ravend.sinks.mqtt_payload import (
    OFFLINE,
    ONLINE,
    cost_payload,
    cost_topic,
    reading_payload,
    reading_topic,
    state_payload,
    state_topic,
    status_topic,
)
from ravend.tariff import Tariff

log = logging.getLogger("ravend.sinks")

#: On a clean stop: how long to wait for the broker to take the "offline" status.
CLOSE_TIMEOUT = 1.0
#: Keys (meter, kind, key time) whose published value is remembered, the least recent forgotten
#: first: bounded memory whatever appears on the wire, and a window wide enough for a key that
#: comes back after other readings of its meter and kind (a clock that jumps back and forth).
PUBLISHED_KEYS_MAX = 4096

Published = OrderedDict[tuple[str, str, int], Value]


def first_values(readings: Sequence[Reading], published: Published
                 ) -> tuple[list[Reading], list[tuple[Key, Value, Value]], Published]:
    """Split a batch into the readings to publish and the conflicts: a reading whose key was
    published (recently, or earlier in the batch) with another value. Returns them and the keys
    to remember once the batch is sent."""
    send: list[Reading] = []
    conflicts: list[tuple[Key, Value, Value]] = []
    seen: Published = OrderedDict()
    for r in readings:
        key = r.key
        last = seen.get(key) or published.get(key)
        value = value_of(r)
        if last is not None and last != value:
            conflicts.append((key, last, value))
            continue
        send.append(r)
        seen[key] = value
        seen.move_to_end(key)
    return send, conflicts, seen


class MqttSink(Sink):
    name = "mqtt"

    def __init__(self, config: MqttConfig, *, tariff: Tariff | None = None,
                 meters: MeterCap | None = None) -> None:
        """``tariff``: publish each meter's running cost (and its sensor) priced by it.
        ``meters``: the meters given discovery and running cost (the rest: readings only)."""
        self.config = config
        self.meters = meters or MeterCap()
        self.spool_max_mb = config.spool_max_mb
        self._conn: Connection | None = None
        endpoint = endpoint_from_config(config)  # also validates the password file
        self.client_id = endpoint.client_id
        self.status_topic = status_topic(config.topic_prefix, self.client_id)
        self._topics = ha.Topics(config.topic_prefix, config.discovery_prefix, self.status_topic)
        # What discovery knows: filled from every batch, published when it changes.
        self._units: dict[str, dict[Kind, str]] = {}  # meter → kinds seen → unit
        self._meter_device: dict[str, str] = {}  # meter → the stick it is heard through
        self._device_info: dict[str, dict[str, Any]] = {}  # stick → DeviceInfo body
        self._link_seen: set[str] = set()  # sticks that sent ConnectionStatus
        self._announced: dict[str, bytes] = {}  # config topic → payload, on this connection
        self._pending_discovery: dict[str, bytes] = {}  # in the batch being published
        self._cost: RunningCost | None = None
        if tariff is not None:
            from ravend.rollup import zone

            self._cost = RunningCost(tariff, zone(tariff.time_zone))
        self._cost_moved: set[str] = set()  # meters whose running cost this batch publishes
        self._published: Published = OrderedDict()  # key → the value published for it
        self.conflicts = KeyConflicts(self.name, log)

    def __repr__(self) -> str:
        return f"<MqttSink {self.config.host}:{self.config.port} {self._conn!r}>"

    # --- life cycle ---------------------------------------------------------------------------

    def open(self) -> None:
        self._connect()

    def close(self) -> None:
        conn, self._conn = self._conn, None
        if conn is None:
            return
        if conn.connected:
            # A clean DISCONNECT suppresses the last will: say offline ourselves.
            try:
                conn.publish_all([self._status(OFFLINE)], CLOSE_TIMEOUT)
            except MqttError as exc:
                log.debug("mqtt: offline status not sent: %s", exc)
        conn.close()

    def _connect(self) -> Connection:
        cfg = self.config
        try:
            endpoint = endpoint_from_config(cfg)
        except ConfigError as exc:
            raise SinkUnavailable(str(exc)) from exc
        try:
            conn = Connection(endpoint, will=self._status(OFFLINE))  # TLS files load here
        except MqttError as exc:
            raise SinkUnavailable(str(exc)) from exc
        try:
            conn.connect(cfg.publish_timeout)
            self._announced.clear()  # a new connection: tell the broker everything again
            conn.publish_all([self._status(ONLINE), *self._discovery()], cfg.publish_timeout)
        except MqttError as exc:
            conn.close(clean=False)
            raise SinkUnavailable(str(exc)) from exc
        self._conn = conn
        self._commit_discovery()
        log.info("mqtt: connected to %s as %s", endpoint, endpoint.client_id)
        return conn

    def _drop(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            conn.close(clean=False)

    # --- writing ------------------------------------------------------------------------------

    def write(self, readings: Sequence[Reading], states: Sequence[StateItem]) -> None:
        conn = self._conn
        if conn is None or not conn.connected:
            self._drop()
            conn = self._connect()
        readings, conflicts, sent = first_values(readings, self._published)
        self._learn(readings, states)
        messages = self._discovery()
        messages += self._messages(readings, states)
        try:
            conn.publish_all(messages, self.config.publish_timeout)
        except MqttError as exc:
            self._drop()
            self._pending_discovery.clear()
            raise SinkUnavailable(str(exc)) from exc
        self._commit_discovery()
        self._remember(sent)
        for key, kept, refused in conflicts:  # counted once sent: a retry counts once
            self.conflicts.refuse(key, kept, refused)
        self.conflicts.batch_done(len(conflicts))

    def _remember(self, sent: Published) -> None:
        for key, value in sent.items():
            self._published[key] = value
            self._published.move_to_end(key)
        while len(self._published) > PUBLISHED_KEYS_MAX:
            self._published.popitem(last=False)

    def _messages(self, readings: Sequence[Reading],
                  states: Sequence[StateItem]) -> list[Message]:
        cfg = self.config
        prefix, qos, retain = cfg.topic_prefix, cfg.qos, cfg.retain_state
        out = [Message(state_topic(prefix, s), state_payload(s), qos, retain) for s in states]
        out += [Message(reading_topic(prefix, r), reading_payload(r), qos, retain)
                for r in readings]
        if self._cost is not None:
            for meter in sorted(self._cost_moved):
                state = self._cost.state(meter)
                if state is not None:
                    out.append(Message(cost_topic(prefix, meter), cost_payload(state), qos,
                                       retain))
        return out

    def _status(self, payload: bytes) -> Message:
        return Message(self.status_topic, payload, max(1, self.config.qos), True)

    # --- Home Assistant discovery -------------------------------------------------------------

    def _learn(self, readings: Sequence[Reading], states: Sequence[StateItem]) -> None:
        for s in states:
            if s.tag == "DeviceInfo" and s.device_mac:
                self._device_info[s.device_mac] = s.body
            elif s.tag == ha.CONNECTION_STATUS_TAG and s.device_mac:
                self._link_seen.add(s.device_mac)
                if s.meter_mac and self.meters.admits(s.meter_mac):
                    self._meter_device[s.meter_mac] = s.device_mac
        readings = [r for r in readings if self.meters.admits(r.meter_mac)]
        for r in readings:
            self._units.setdefault(r.meter_mac, {})[r.kind] = r.unit
            if r.device_mac:
                self._meter_device[r.meter_mac] = r.device_mac
        self._cost_moved = set()
        if self._cost is not None:
            for r in readings:
                # A retried batch moves nothing, but says the totals again.
                self._cost.feed(r)
                if r.kind in (Kind.SUMMATION_DELIVERED, Kind.SUMMATION_RECEIVED):
                    self._cost_moved.add(r.meter_mac)

    def _discovery(self) -> list[Message]:
        """Configs that this connection has not carried yet, or that changed (firmware, unit)."""
        self._pending_discovery = {}
        if not self.config.discovery:
            return []
        configs: list[tuple[str, dict[str, Any]]] = []
        for meter, kinds in self._units.items():
            device = self._meter_device.get(meter, "")
            info = self._device_info.get(device)
            for kind, unit in kinds.items():
                one = ha.reading_config(self._topics, meter, kind, unit, info)
                if one is not None:
                    configs.append(one)
            if device in self._link_seen:
                configs += ha.link_configs(self._topics, meter, device, info)
            currency = self._cost.currency(meter) if self._cost is not None else None
            if self._cost is not None and currency and self._cost.state(meter) is not None:
                configs += ha.cost_configs(self._topics, meter, currency,
                                           self._cost.tariff.export_rate is not None, info)
            if device and self.config.allow_commands:
                configs += ha.command_configs(self._topics, meter, device, info,
                                              self.config.allow_restart)
        out = []
        for topic, config in configs:
            payload = ha.encode(config)
            if self._announced.get(topic) != payload:
                self._pending_discovery[topic] = payload
                out.append(Message(topic, payload, self.config.qos, True))
        return out

    def _commit_discovery(self) -> None:
        self._announced.update(self._pending_discovery)
        self._pending_discovery = {}
