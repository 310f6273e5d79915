"""ravend's programs as subprocesses, as systemd runs them: ravend against a simulator port,
the companions (repeater, mongo-ingest), and one-shot commands such as ravenctl. One wrapper
for all, so that every test starts, stops and reads them the same way."""

from __future__ import annotations

import contextlib
import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import NamedTuple

from tests.helpers.wait import wait_for

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


def program_env() -> dict[str, str]:
    """The environment every program runs in: ravend from this tree, output unbuffered."""
    return {**os.environ, "PYTHONPATH": str(ROOT), "PYTHONUNBUFFERED": "1"}


def run_program(module: str, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """Run one of ravend's programs (``python -m module``) to its end, output captured."""
    return subprocess.run([sys.executable, "-m", module, *args], capture_output=True, text=True,
                          env=program_env(), cwd=ROOT, timeout=timeout)


def ravenctl(*args: str, timeout: float = 30) -> subprocess.CompletedProcess[str]:
    """``ravenctl`` as a user runs it, to its end."""
    return run_program("ravend.cli.ravenctl", *args, timeout=timeout)


class Stopped(NamedTuple):
    """How a program ended on SIGTERM: its exit status and how long it took."""

    code: int
    seconds: float


class ProgramProcess:
    """One of ravend's long-running programs as a subprocess, as systemd runs it: ``--config``,
    its output appended to a log file, SIGTERM to stop. The subclasses name the program."""

    module = ""
    stop_timeout = 10.0  # seconds SIGTERM is given before SIGKILL

    def __init__(self, config: Path, log: Path, *extra: str) -> None:
        self.config = config
        self.log_path = log
        with open(log, "ab") as out:  # the child holds its own copy
            self.proc = subprocess.Popen(
                [sys.executable, "-m", self.module, "--config", str(config), *extra],
                stdout=out, stderr=subprocess.STDOUT, env=program_env(), cwd=ROOT,
            )

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self, timeout: float | None = None) -> Stopped:
        """SIGTERM, then SIGKILL if it has not exited within ``timeout`` (the class's bound)."""
        started = time.monotonic()
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            code = self.proc.wait(self.stop_timeout if timeout is None else timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            code = self.proc.wait()
        return Stopped(code, time.monotonic() - started)

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


class RavendProcess(ProgramProcess):
    module = "ravend.cli.ravend"


class RepeaterProcess(ProgramProcess):
    module = "ravend.cli.repeater"


class WebProcess(ProgramProcess):
    """The real ``ravend-web``."""

    module = "ravend.cli.web"


class IngestProcess(ProgramProcess):
    """The real ``ravend-mongo-ingest``."""

    module = "ravend.cli.mongo_ingest"
    stop_timeout = 20.0

    def wait_subscribed(self, count: int = 1, timeout: float = 20) -> None:
        assert wait_for(lambda: self.log().count("subscribed to") >= count, timeout), self.log()


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


@contextlib.contextmanager
def running_ravend(config: Path, log: Path, *extra: str, stop_within: float | None = None,
                   then_stop: Iterable[Callable[[], object]] = ()) -> Iterator[RavendProcess]:
    """ravend for the length of a ``with`` block. At its end: SIGTERM, then ``then_stop`` (the
    simulator, a subscriber: what fed or watched it), then the clean stop is asserted, exit
    status 0, within ``stop_within`` seconds when given. When the block fails, everything is
    stopped the same way and its failure is the one reported."""
    ravend = RavendProcess(config, log, *extra)
    try:
        yield ravend
    finally:
        code, took = ravend.stop()
        for stop in then_stop:
            stop()
    assert code == 0, ravend.log()
    if stop_within is not None:
        assert took < stop_within, f"SIGTERM took {took:.1f}s"
