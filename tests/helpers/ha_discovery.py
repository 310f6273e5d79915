"""Run discovery messages through Home Assistant's own validation (tests/helpers/ha_validate.py) in
.venv-ha, the venv `make deps` builds with homeassistant 2024.3.3 (tools/deps/ha.txt).

The tests run on Debian's Python and on .venv-pypi, neither of which has (or could hold)
Home Assistant's pinned dependencies: hence a subprocess. Without .venv-ha this fails (with
the command that makes it), it does not skip.
"""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from ravend.simulator import MeterSimulator
from tests.helpers.process import RavendProcess, write_config

ROOT = Path(__file__).resolve().parents[2]
HA_PYTHON = ROOT / ".venv-ha" / "bin" / "python"
VALIDATOR = Path(__file__).resolve().parent / "ha_validate.py"


def ha_verdicts(messages: Iterable[tuple[str, bytes]],
                discovery_prefix: str = "homeassistant") -> list[dict[str, Any]]:
    """One verdict per message, in order: {"topic", "error": None or why Home Assistant
    refuses it, "config": what Home Assistant made of it (classes, unit, ids)}."""
    assert HA_PYTHON.exists(), f"{HA_PYTHON} is missing: run `make deps` (builds .venv-ha)"
    request = [{"topic": topic, "payload": payload.decode()} for topic, payload in messages]
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}
    done = subprocess.run([str(HA_PYTHON), str(VALIDATOR), discovery_prefix],
                          input=json.dumps(request), capture_output=True, text=True, env=env,
                          timeout=120, check=False)
    assert done.returncode == 0, f"{VALIDATOR.name} failed:\n{done.stderr}"
    verdicts = json.loads(done.stdout)
    assert len(verdicts) == len(request), done.stdout
    return verdicts


def refused(verdicts: list[dict[str, Any]]) -> list[tuple[str, str]]:
    """(topic, Home Assistant's reason) of each message refused."""
    return [(v["topic"], v["error"]) for v in verdicts if v["error"]]


#: Every entity ravend can announce for a meter, by component: start_announcing_everything
#: switches all of them on (commands with restart, a tariff with a currency and an export rate).
EVERY_ENTITY = {
    "sensor": {"demand", "summation_delivered", "summation_received", "price", "link_strength",
               "connection_status", "cost", "export_credit"},
    "button": {"close_period", "refresh", "restart_stick"},
    "number": {"set_price"},
}

#: What each measuring sensor should be in Home Assistant: (device class, state class, unit).
INTENDED = {
    "demand": ("power", "measurement", "kW"),
    "summation_delivered": ("energy", "total_increasing", "kWh"),
    "summation_received": ("energy", "total_increasing", "kWh"),
    "price": (None, "measurement", "USD/kWh"),  # a rate, not an amount of money
    "cost": ("monetary", "total", "USD"),
    "export_credit": ("monetary", "total", "USD"),
}


def start_announcing_everything(tmp_path: Path, broker: Any,
                                meters: int = 2) -> tuple[MeterSimulator, RavendProcess]:
    """The simulator (an EMU-2 hearing METERS meters) and a real ravend publishing to BROKER
    with every entity of EVERY_ENTITY on; the caller stops both."""
    tmp_path.mkdir(parents=True, exist_ok=True)
    link = str(tmp_path / "stick")
    sim = MeterSimulator("emu2", link=link, seed=17, speed=60, meters=meters,
                         reply_delay=0.02).start()
    config = write_config(
        tmp_path / "ravend.conf", tmp_path / "state", link,
        mqtt={"enabled": "yes", "host": broker.host, "port": str(broker.port),
              "client_id": "ravend-ha", "allow_commands": "yes", "allow_restart": "yes"},
        tariff={"rate": "0.15", "currency": "USD", "export_rate": "0.05"})
    return sim, RavendProcess(config, tmp_path / "ravend.log")
