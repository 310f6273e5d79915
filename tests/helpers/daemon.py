"""ravend in daemon mode (``--daemon --pidfile``), as a SysV init script starts it: the
starting command returns once ravend has detached, and the pid file names the running ravend."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from tests.helpers.process import ROOT, program_env


def start_daemon(config: Path, pidfile: Path, log: Path) -> None:
    """``ravend --daemon --pidfile`` as an init script runs it, its output appended to ``log``:
    the command returns 0 once ravend has detached (then look for it in ``daemon_pid``)."""
    with open(log, "ab") as out:
        started = subprocess.run(
            [sys.executable, "-m", "ravend.cli.ravend", "--config", str(config), "--daemon",
             "--pidfile", str(pidfile)], stdout=out, stderr=out, env=program_env(), cwd=ROOT,
            timeout=30)
    assert started.returncode == 0


def daemon_pid(pidfile: Path) -> int | None:
    """The PID a daemon's pid file names, once it is written whole.

    python-daemon's pid file is its lock: created (O_EXCL) first, the pid written after, so a
    reader can find it empty for a moment (a CI failure): only a whole line counts."""
    text = pidfile.read_text() if pidfile.exists() else ""
    return int(text.split()[0]) if text.endswith("\n") else None
