"""Run discovery messages through Home Assistant's own validation (tests/ha_validate.py) in
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

ROOT = Path(__file__).resolve().parent.parent
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
