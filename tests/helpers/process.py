"""Run the real `ravend` as a subprocess against a simulator port, as systemd would."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

FAST_DEVICE = {
    "command_spacing": "0.05",
    "reply_timeout": "2",
    "reconnect_min": "0.1",
    "reconnect_max": "0.5",
}


def write_config(path: Path, state_dir: Path, port: str, **sections: dict[str, str]) -> Path:
    device = {**FAST_DEVICE, "port": port, **sections.pop("device", {})}
    service = {"state_dir": str(state_dir), "log_level": "info",
               "control_socket": str(state_dir / "control"), **sections.pop("service", {})}
    # The simulator's meter clock starts in 2023: keep raw readings unless a test says otherwise.
    retention = {"raw_days": "0", **sections.pop("retention", {})}
    parts = {"service": service, "device": device, "retention": retention, **sections}
    text = "".join(
        f"[{name}]\n" + "".join(f"{k} = {v}\n" for k, v in keys.items())
        for name, keys in parts.items()
    )
    path.write_text(text)
    return path


class RavendProcess:
    def __init__(self, config: Path, log: Path, *extra: str) -> None:
        self.config = config
        self.log_path = log
        env = {**os.environ, "PYTHONPATH": str(ROOT), "PYTHONUNBUFFERED": "1"}
        self._log = open(log, "ab")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "ravend.cli.ravend", "--config", str(config), *extra],
            stdout=self._log, stderr=subprocess.STDOUT, env=env, cwd=ROOT,
        )

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self, timeout: float = 10.0) -> tuple[int, float]:
        """SIGTERM; returns the exit status and how long it took."""
        started = time.monotonic()
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            code = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            code = self.proc.wait()
        self._log.close()
        return code, time.monotonic() - started

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self._log.close()


def stored_rows(db: Path) -> list[tuple]:
    if not db.exists():
        return []
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5)
    try:
        return conn.execute(
            "SELECT meter_mac, kind, meter_time, raw, multiplier, divisor, value FROM readings"
        ).fetchall()
    except sqlite3.OperationalError:
        return []
    finally:
        conn.close()


def wait_for(predicate, timeout: float, interval: float = 0.05) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    return bool(predicate())
