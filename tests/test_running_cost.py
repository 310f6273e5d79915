"""The running cost (ravend.running_cost) and its MQTT sensor: each counter rise counted once at
the price in effect, published and announced to Home Assistant as a monetary total."""

from __future__ import annotations

import datetime as dt
import json

from ravend.config import MqttConfig
from ravend.protocol.model import Kind
from ravend.rollup import HOUR
from ravend.running_cost import RunningCost
from ravend.sinks.mqtt import MqttSink
from ravend.tariff import Plan, Tariff
from tests.helpers.cost import H0, UTC, F, price, reading
from tests.helpers.mqtt import validate_ha_sensor
from tests.helpers.readings import METER


def test_running_cost_counts_each_counter_rise_once_at_the_price_in_effect() -> None:
    running = RunningCost(Tariff(export_rate=F("0.05"), time_zone="UTC"), UTC, clock=lambda: H0)
    feed = [price(H0, "0.20"), reading(Kind.SUMMATION_DELIVERED, H0, 10_000),
            reading(Kind.SUMMATION_RECEIVED, H0, 0),
            price(H0 + 1800, "0.40"),
            reading(Kind.SUMMATION_DELIVERED, H0 + HOUR, 12_000),  # 2 kWh: half at each price
            reading(Kind.SUMMATION_RECEIVED, H0 + HOUR, 1_000)]
    assert [running.feed(r) for r in feed] == [False, True, True, False, True, True]
    assert [running.feed(r) for r in feed] == [False] * 6  # a retried batch
    state = running.state(METER)
    assert state is not None
    assert (state["cost"], state["export_credit"], state["net_cost"], state["currency"]) == (
        "0.6", "0.05", "0.55", "USD")
    assert state["since"] == dt.datetime.fromtimestamp(H0, UTC).isoformat()
    assert state["key_time"] == H0 + HOUR
    assert RunningCost(Tariff(), UTC).state(METER) is None


def test_mqtt_publishes_the_running_cost_and_announces_a_monetary_total() -> None:
    sink = MqttSink(MqttConfig(enabled=True), tariff=Tariff(
        plan=Plan.flat(F("0.30")), currency="EUR", export_rate=F("0.1"), time_zone="UTC"))
    batch = [reading(Kind.SUMMATION_DELIVERED, H0, 1000),
             reading(Kind.SUMMATION_RECEIVED, H0, 0),
             reading(Kind.SUMMATION_DELIVERED, H0 + HOUR, 3000),
             reading(Kind.SUMMATION_RECEIVED, H0 + HOUR, 500)]
    sink._learn(batch, [])
    messages = sink._discovery() + sink._messages(batch, [])
    (cost,) = [m for m in messages if m.topic == f"ravend/{METER}/cost/running"]
    body = json.loads(cost.payload)
    assert (body["cost"], body["export_credit"], body["net_cost"]) == ("0.6", "0.05", "0.55")
    configs = {m.topic: json.loads(m.payload) for m in messages
               if m.topic.endswith(("/cost/config", "/export_credit/config"))}
    assert len(configs) == 2
    for topic, config in configs.items():
        validate_ha_sensor(topic, config)
        assert (config["device_class"], config["state_class"], config["unit_of_measurement"]) \
            == ("monetary", "total", "EUR")
        assert config["state_topic"] == cost.topic
        assert config["last_reset_value_template"] == "{{ value_json.since }}"
    # No price known at all: no cost message, no cost sensor.
    bare = MqttSink(MqttConfig(enabled=True), tariff=Tariff())
    bare._learn(batch, [])
    assert not [m for m in bare._discovery() + bare._messages(batch, []) if "cost" in m.topic]
