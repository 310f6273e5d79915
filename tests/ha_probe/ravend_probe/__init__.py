"""A Home Assistant integration for `make check-ha` only: it reports what a real HA core made of
ravend's MQTT discovery, from inside the core (no REST token or websocket needed).

Configured in the test's configuration.yaml::

    ravend_probe:
      output: /path/probe.json          # rewritten every second
      unique_ids: [ravend_<meter>_demand, ...]   # the entities to report
      energy:                           # energy dashboard grid sources, by unique id
        - {from: <uid>, cost: <uid>, to: <uid>, compensation: <uid>}
        - {from: <uid>, price: <uid>, to: <uid>, compensation: <uid>}
      set_value: {unique_id: <uid of a number>, value: 0.1234}   # one number.set_value call

Each second it writes, per unique id found in the entity registry: entity id, state,
attributes, and its device's identifiers. Once every entity named in ``energy`` has a numeric
state it sets those energy preferences, has the recorder compile the statistics of the current
5-minute period (HA would do so at the period's end: minutes to wait), and writes the energy
validation's issues (``homeassistant.components.energy.validate``: what the energy dashboard
shows). Once the number named in ``set_value`` is available it calls ``number.set_value`` on it,
as a user's automation would, and reports that it did (``set_value_done``).
"""

from __future__ import annotations

import asyncio
import json
import logging
from datetime import timedelta
from pathlib import Path
from typing import Any

from homeassistant.components.energy import data as energy_data
from homeassistant.components.energy import validate as energy_validate
from homeassistant.components.recorder import get_instance
from homeassistant.components.recorder.tasks import StatisticsTask
from homeassistant.core import HomeAssistant
from homeassistant.helpers import device_registry as dr
from homeassistant.helpers import entity_registry as er
from homeassistant.util import dt as dt_util

DOMAIN = "ravend_probe"
_LOGGER = logging.getLogger(__name__)


async def async_setup(hass: HomeAssistant, config: dict[str, Any]) -> bool:
    conf = config[DOMAIN]
    probe = Probe(hass, Path(conf["output"]), list(conf["unique_ids"]), conf.get("energy", []),
                  conf.get("set_value"))
    hass.async_create_background_task(probe.run(), "ravend_probe")
    return True


class Probe:
    def __init__(self, hass: HomeAssistant, output: Path, unique_ids: list[str],
                 energy: list[dict[str, str]], set_value: dict[str, Any] | None) -> None:
        self.hass = hass
        self.set_value = set_value
        self.set_value_done = False
        self.output = output
        self.unique_ids = unique_ids
        self.energy = energy
        self.validation: dict[str, Any] | None = None

    def entities(self) -> dict[str, dict[str, Any]]:
        entities = er.async_get(self.hass)
        devices = dr.async_get(self.hass)
        out = {}
        for uid in self.unique_ids:
            entity_id = next((e.entity_id for e in entities.entities.values()
                              if e.platform == "mqtt" and e.unique_id == uid), None)
            if entity_id is None:
                continue
            entry = entities.async_get(entity_id)
            device = devices.async_get(entry.device_id) if entry and entry.device_id else None
            state = self.hass.states.get(entity_id)
            out[uid] = {
                "entity_id": entity_id,
                "state": state.state if state else None,
                "attributes": {k: str(v) for k, v in (state.attributes if state else {}).items()},
                "device_id": entry.device_id if entry else None,
                "device_identifiers": sorted(f"{d}:{i}" for d, i in device.identifiers)
                if device else [],
            }
        return out

    def energy_ready(self, entities: dict[str, dict[str, Any]]) -> bool:
        wanted = {uid for source in self.energy for uid in source.values()}
        for uid in wanted:
            try:
                float(entities[uid]["state"])
            except (KeyError, TypeError, ValueError):
                return False
        return True

    async def validate_energy(self, entities: dict[str, dict[str, Any]]) -> dict[str, Any]:
        def eid(uid: str | None) -> str | None:
            return entities[uid]["entity_id"] if uid else None

        flows_from, flows_to = [], []
        for source in self.energy:
            flows_from.append({"stat_energy_from": eid(source["from"]),
                               "stat_cost": eid(source.get("cost")),
                               "entity_energy_price": eid(source.get("price")),
                               "number_energy_price": None})
            flows_to.append({"stat_energy_to": eid(source["to"]),
                             "stat_compensation": eid(source.get("compensation")),
                             "entity_energy_price": None, "number_energy_price": None})
        manager = await energy_data.async_get_manager(self.hass)
        await manager.async_update({"energy_sources": [{
            "type": "grid", "flow_from": flows_from, "flow_to": flows_to,
            "cost_adjustment_day": 0.0}]})
        await self.hass.async_block_till_done()
        recorder = get_instance(self.hass)
        now = dt_util.utcnow()
        period = now.replace(minute=now.minute - now.minute % 5, second=0, microsecond=0)
        await recorder.async_block_till_done()
        recorder.queue_task(StatisticsTask(period, False))
        recorder.queue_task(StatisticsTask(period - timedelta(minutes=5), False))
        await recorder.async_block_till_done()
        result = await energy_validate.async_validate(self.hass)
        return result.as_dict()

    async def run(self) -> None:
        while True:
            try:
                entities = self.entities()
                if self.validation is None and self.energy and self.energy_ready(entities):
                    self.validation = await self.validate_energy(entities)
                # Not before the number is available: HA skips unavailable entities silently.
                number = entities.get(self.set_value["unique_id"]) if self.set_value else None
                if number and not self.set_value_done \
                        and number["state"] not in (None, "unknown", "unavailable"):
                    await self.hass.services.async_call("number", "set_value", {
                        "entity_id": entities[self.set_value["unique_id"]]["entity_id"],
                        "value": self.set_value["value"]}, blocking=True)
                    self.set_value_done = True
                report = {"entities": entities, "energy_validation": self.validation,
                          "set_value_done": self.set_value_done}
                tmp = self.output.with_suffix(".tmp")
                tmp.write_text(json.dumps(report, indent=1, sort_keys=True))
                tmp.replace(self.output)
            except Exception:  # a probe that dies silently would look like a missing entity
                _LOGGER.exception("ravend_probe failed")
            await asyncio.sleep(1)
