"""The processes a bench row starts and what it reads about them from /proc and their databases.

ravend runs as a real subprocess on Debian's interpreter, exactly as the unit runs it (minus
systemd): ``python3 -m ravend.cli.ravend --config DIR/ravend.conf --port PTY``, with its state
and every other path of that config in DIR (bench.scratchconf), so the figures include its
threads, its queue and its SQLite commits. Its CPU time and memory come from /proc
(utime+stime, VmRSS, /proc/PID/fd), read from outside so that measuring costs it nothing.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import sqlite3
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench import scratchconf
from bench.core import DEBIAN_PYTHON, ROOT

_CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def debian_env() -> dict[str, str]:
    """Debian's PATH and dist-packages, the source tree on PYTHONPATH, nothing of pyenv."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONHOME", "VIRTUAL_ENV")}
    env.update(PATH="/usr/sbin:/usr/bin:/sbin:/bin", PYTHONPATH=str(ROOT), PYTHONNOUSERSITE="1")
    return env


def cpu_seconds(pid: int) -> float:
    """User plus system CPU time of all the process's threads so far."""
    with open(f"/proc/{pid}/stat", encoding="ascii") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    # After "pid (comm)": state is fields[0]; utime and stime are stat fields 14 and 15.
    return (int(fields[11]) + int(fields[12])) / _CLOCK_TICKS


def rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status", encoding="ascii") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError(f"no VmRSS for pid {pid}")


def fd_count(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def free_port() -> int:
    """A loopback TCP port nobody listens on now (for a server the bench starts)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def terminate(proc: subprocess.Popen[bytes], timeout: float = 10.0) -> int:
    """SIGTERM, as systemctl stop does; SIGKILL if it does not end in time. Its exit status."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
    try:
        return proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        return proc.wait()


def wait_until(predicate: Callable[[], object], timeout: float, interval: float = 0.02) -> bool:
    deadline = time.monotonic() + timeout
    while True:
        if predicate():
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(interval)


def ravend_config(state_dir: Path, sections: scratchconf.Sections | None = None) -> Path:
    """``state_dir``/ravend.conf: ``sections``, state_dir itself as [service] state_dir (where
    Ravend looks for the SQLite file) and the other paths of scratchconf in it."""
    own = {name: dict(keys) for name, keys in (sections or {}).items()}
    own.setdefault("service", {})["state_dir"] = state_dir
    return scratchconf.write(state_dir / "ravend.conf", state_dir, own)


class Ravend:
    """ravend on a port, with its state (and so its SQLite file), its control socket and its
    config file (``sections`` on top of bench.scratchconf's paths) in ``state_dir``."""

    def __init__(self, port: str, state_dir: Path,
                 sections: scratchconf.Sections | None = None) -> None:
        self.state_dir = state_dir
        self.db = state_dir / "ravend.db"
        self.log_path = state_dir / "ravend.log"
        state_dir.mkdir(parents=True, exist_ok=True)
        conf = ravend_config(state_dir, sections)
        self._log = open(self.log_path, "wb")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(
            [DEBIAN_PYTHON, "-m", "ravend.cli.ravend", "--config", str(conf), "--port", port],
            stdin=subprocess.DEVNULL, stdout=self._log, stderr=subprocess.STDOUT,
            env=debian_env(), cwd=ROOT,
        )

    @property
    def pid(self) -> int:
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc.poll() is None

    def check_alive(self) -> None:
        if not self.alive():
            raise RuntimeError(f"ravend exited with {self.proc.returncode}: {self.log_tail()}")

    def log_tail(self, lines: int = 8) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return ""
        return " | ".join(text.strip().splitlines()[-lines:])

    def stop(self, timeout: float = 10.0) -> int:
        """SIGTERM, as systemctl stop does; SIGKILL if it does not end in time."""
        code = terminate(self.proc, timeout)
        self._log.close()
        return code


class Store:
    """A read-only look at a readings table, cheap enough to poll while the writer runs.

    Progress is the newest demand ``key_time`` of one meter, found through the
    (meter_mac, kind, key_time) unique index in O(log n): a COUNT(*) would scan the table and
    slow down as it grows. The bench's streams stamp demand readings one second apart, so the
    newest key says how many have been committed.
    """

    def __init__(self, db: Path, timeout: float = 30.0) -> None:
        if not wait_until(lambda: db.exists(), timeout):
            raise RuntimeError(f"{db} was not created within {timeout:g}s")
        self.conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5.0,
                                    isolation_level=None, check_same_thread=False)

    def close(self) -> None:
        self.conn.close()

    def _scalar(self, sql: str, params: tuple[object, ...]) -> Any:
        try:
            found = self.conn.execute(sql, params).fetchone()
        except sqlite3.OperationalError as exc:
            if "no such table" in str(exc):  # the writer has not migrated yet
                return None
            raise
        return None if found is None else found[0]

    def newest_demand(self, meter: str) -> int | None:
        value = self._scalar("SELECT MAX(key_time) FROM readings WHERE meter_mac = ? AND"
                             " kind = 'demand'", (meter,))
        return None if value is None else int(value)

    def rolled_up(self) -> bool:
        """Whether the maintenance thread's roll-ups have caught up with every stored reading."""
        watermark = self._scalar("SELECT value FROM maintenance_state WHERE name ="
                                 " 'rollup_watermark'", ())
        newest = self._scalar("SELECT MAX(id) FROM readings", ())
        return watermark is not None and newest is not None and int(watermark) >= int(newest)

    def demand_count(self, meter: str) -> int:
        value = self._scalar("SELECT COUNT(*) FROM readings WHERE meter_mac = ? AND"
                             " kind = 'demand'", (meter,))
        return int(value or 0)

    def received_at(self, meter: str, key_time: int) -> float | None:
        value = self._scalar("SELECT received_at FROM readings WHERE meter_mac = ? AND"
                             " kind = 'demand' AND key_time = ?", (meter, key_time))
        return None if value is None else float(value)


class Drain:
    """``cat PORT >/dev/null``: a reader that costs the writer nothing (the simulator ceiling)."""

    def __init__(self, port: str) -> None:
        self.proc = subprocess.Popen(["cat", port], stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL)

    def stop(self) -> None:
        with contextlib.suppress(ProcessLookupError):
            self.proc.kill()
        self.proc.wait()
