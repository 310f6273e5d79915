"""The README's first command, `make demo` (tools/demo.sh), run as a newcomer would, only
shorter and faster: it must end with readings stored and shown by `ravenctl status`."""

from __future__ import annotations

import os
import sqlite3
import subprocess
from pathlib import Path

from tests.helpers.process import ROOT


def test_demo_stores_readings_and_shows_them(tmp_path: Path) -> None:
    demo = tmp_path / "demo"
    env = {**os.environ, "DEMO_SECONDS": "6", "DEMO_SPEED": "20", "DEMO_DIR": str(demo)}
    proc = subprocess.run(["bash", str(ROOT / "tools" / "demo.sh")], env=env,
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    assert "ravenctl status" in out
    status = out.split("ravenctl status", 1)[1]
    conn = sqlite3.connect(demo / "state" / "ravend.db")
    try:
        demands = conn.execute("SELECT COUNT(*) FROM readings WHERE kind = 'demand'"
                               ).fetchone()[0]
    finally:
        conn.close()
    assert demands >= 3, (out, proc.stderr)
    assert "demand" in status and "kW" in status, status
    assert "started" in proc.stderr and "Traceback" not in proc.stderr, proc.stderr
