"""A real Home Assistant core (2024.3.3, from .venv-ha) sees every ravend entity as intended;
run by `make check-ha` (mk/ha.mk), not by `make check`: a cold HA start takes a minute or two.

A private Mosquitto, the simulator (an EMU-2 hearing two meters) and a real ravend publishing
every entity it can announce; then ``hass -c <tmp> --skip-pip`` with a config entry of the MQTT
integration pointing at that broker (written into .storage, as the UI would) and a test-only
integration (tests/ha_probe/ravend_probe) that reports from inside the core what HA made of
the entities, and the energy dashboard's validation of ravend's energy, cost and price sensors.
The file is not named test_*.py so that the suite does not collect it; pytest runs it when
named on the command line.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import time
from pathlib import Path
from typing import Any

from ravend.sinks import mqtt_discovery
from tests.helpers import servers
from tests.helpers.ha_discovery import EVERY_ENTITY, INTENDED, ROOT, start_announcing_everything
from tests.helpers.mqtt import Subscriber
from tests.helpers.wait import wait_for

HASS = ROOT / ".venv-ha" / "bin" / "hass"
PROBE = Path(__file__).resolve().parent / "ha_probe" / "ravend_probe"
START_TIMEOUT = 300.0  # a cold core (fresh .storage, the frontend, the recorder's schema)


def ha_config(config_dir: Path, broker: Any, probe_output: Path, unique_ids: list[str],
              energy: list[dict[str, str]], set_value: dict[str, Any]) -> None:
    """configuration.yaml, the MQTT config entry and the probe integration in CONFIG_DIR."""
    http_port = servers.free_port()
    (config_dir / "custom_components").mkdir(parents=True)
    shutil.copytree(PROBE, config_dir / "custom_components" / PROBE.name)
    probe = {"output": str(probe_output), "unique_ids": unique_ids, "energy": energy,
             "set_value": set_value}
    (config_dir / "configuration.yaml").write_text(
        "homeassistant:\n"
        "  name: ravend check\n  latitude: 52.5\n  longitude: 13.4\n  elevation: 0\n"
        "  unit_system: metric\n  time_zone: UTC\n  currency: USD\n  country: US\n"
        f"http:\n  server_host: 127.0.0.1\n  server_port: {http_port}\n"
        "recorder:\n  commit_interval: 0\n"
        "energy:\n"
        "logger:\n  default: warning\n"
        f"ravend_probe: {json.dumps(probe)}\n")
    storage = config_dir / ".storage"
    storage.mkdir()
    entry = {
        "entry_id": "ravendcheckmqtt0000000000000001", "version": 1, "minor_version": 1,
        "domain": "mqtt", "title": broker.host,
        "data": {"broker": broker.host, "port": broker.port, "discovery": True,
                 "discovery_prefix": "homeassistant"},
        "options": {}, "pref_disable_new_entities": False, "pref_disable_polling": False,
        "source": "user", "unique_id": None, "disabled_by": None,
    }
    (storage / "core.config_entries").write_text(json.dumps({
        "version": 1, "minor_version": 1, "key": "core.config_entries",
        "data": {"entries": [entry]}}))


def read_probe(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}


def test_a_real_home_assistant_core_has_every_ravend_entity_as_intended(
        tmp_path: Path, mosquitto_server) -> None:
    assert HASS.exists(), f"{HASS} is missing: run `make deps` (builds .venv-ha)"
    commands = Subscriber(mosquitto_server.host, mosquitto_server.port,
                          ["ravend/+/cmd/#"], client_id="ha-check-commands").start()
    sim, ravend = start_announcing_everything(tmp_path / "ravend", mosquitto_server)
    nodes = sorted(mqtt_discovery.node_id(mac) for mac in sim.meter_macs)
    unique_ids = [f"{node}_{o}" for node in nodes for objects in EVERY_ENTITY.values()
                  for o in sorted(objects)]
    first, second = nodes
    # Grid consumption and return of each meter in the energy dashboard: the first meter's
    # with ravend's cost and export credit, the second's costed by HA from ravend's price.
    energy = [
        {"from": f"{first}_summation_delivered", "cost": f"{first}_cost",
         "to": f"{first}_summation_received", "compensation": f"{first}_export_credit"},
        {"from": f"{second}_summation_delivered", "price": f"{second}_price",
         "to": f"{second}_summation_received", "compensation": f"{second}_export_credit"},
    ]
    config_dir = tmp_path / "ha"
    probe_output = tmp_path / "probe.json"
    # A price with more places than the number's step, set as an automation would.
    set_value = {"unique_id": f"{first}_set_price", "value": 0.1234}
    ha_config(config_dir, mosquitto_server, probe_output, unique_ids, energy, set_value)
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}
    ha_log = tmp_path / "hass.log"
    hass = servers._spawn([str(HASS), "-c", str(config_dir), "--skip-pip"], ha_log,
                          config_dir, env)

    def done() -> bool:
        """Everything reported, or no point waiting: hass died or logged an error."""
        report = read_probe(probe_output)
        return (len(report.get("entities", {})) == len(unique_ids)
                and report.get("energy_validation") is not None
                and report.get("set_value_done")) or hass.poll() is not None \
            or " ERROR " in ha_log.read_text(errors="replace")

    try:
        deadline = time.monotonic() + START_TIMEOUT
        while not done() and time.monotonic() < deadline:
            time.sleep(1)
        report = read_probe(probe_output)
        assert hass.poll() is None, f"hass exited:\n{servers.log_tail(ha_log)}"
        entities = report.get("entities", {})
        missing = sorted(set(unique_ids) - set(entities))
        assert not missing, (missing, servers.log_tail(ha_log))
        # HA's number.set_value reached the stick through ravend's price_set, all four places.
        assert report["set_value_done"], servers.log_tail(ha_log)
        set_price = ("set_current_price", {"Price": "0x000004d2", "TrailingDigits": "0x04"})
        assert wait_for(lambda: set_price in sim.received_commands(), 30), (
            [(m.topic, m.payload) for m in commands.snapshot()], sim.received_commands(),
            ravend.log())
    finally:
        stopped_cleanly = servers._reap(hass, signal.SIGTERM, 60)
        ravend.stop()
        sim.stop()
        commands.stop()
    log = ha_log.read_text(errors="replace")

    # One device per meter, every entity of a meter on its device.
    for node in nodes:
        mine = {e["device_id"] for uid, e in entities.items() if uid.startswith(node + "_")}
        assert len(mine) == 1 and None not in mine, (node, mine)
        assert {tuple(e["device_identifiers"]) for uid, e in entities.items()
                if uid.startswith(node + "_")} == {(f"mqtt:{node}",)}
    assert len({e["device_id"] for e in entities.values()}) == len(nodes)

    # The measuring sensors with the intended device class, state class and unit.
    for node in nodes:
        got = {name: (entities[f"{node}_{name}"]["attributes"].get("device_class"),
                      entities[f"{node}_{name}"]["attributes"].get("state_class"),
                      entities[f"{node}_{name}"]["attributes"].get("unit_of_measurement"))
               for name in INTENDED}
        assert got == INTENDED, node
        for uid in (f"{node}_demand", f"{node}_price", f"{node}_summation_delivered"):
            float(entities[uid]["state"])  # a number, not unknown or unavailable
        number = entities[f"{node}_set_price"]
        assert number["entity_id"].startswith("number.")
        assert (number["attributes"]["min"], number["attributes"]["max"],
                number["attributes"]["step"]) == ("0.0", "10.0", "0.001")
        assert float(number["state"]) == float(entities[f"{node}_price"]["state"])
        for button in EVERY_ENTITY["button"]:
            assert entities[f"{node}_{button}"]["entity_id"].startswith("button.")

    # The energy dashboard: no issue for any energy, cost or price sensor.
    validation = report["energy_validation"]
    assert validation == {"energy_sources": [[]], "device_consumption": []}, validation
    # And nothing Home Assistant refused, failed at or warned about (a refused discovery
    # config is one ERROR line of homeassistant.components.mqtt; a sensor whose unit or state
    # class does not fit its device class, a "Please update your configuration" WARNING).
    for line in log.splitlines():
        assert " ERROR " not in line and " CRITICAL " not in line, servers.log_tail(ha_log)
        assert "Please update your configuration" not in line, line
        if " WARNING " in line:
            assert "[homeassistant.components." not in line, line
    assert stopped_cleanly, servers.log_tail(ha_log)
