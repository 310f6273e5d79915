"""What Linux's /proc says about a process under test: how often it woke up, how much CPU it
used, whether it has exited. The idle tests measure a program at rest with these; counting wake-ups
and CPU ticks is what tells a blocking wait from a busy poll."""

from __future__ import annotations

import os
from pathlib import Path


def _voluntary_switches(status: Path) -> int:
    with open(status) as f:
        return next(int(line.split()[1]) for line in f
                    if line.startswith("voluntary_ctxt_switches"))


def wakeups(pid: int) -> int:
    """Voluntary context switches of all the process's threads."""
    return sum(_voluntary_switches(task / "status")
               for task in Path(f"/proc/{pid}/task").iterdir())


def thread_wakeups(native_id: int) -> int:
    """Voluntary context switches of one thread of this (the test's) process."""
    return _voluntary_switches(Path(f"/proc/self/task/{native_id}/status"))


def cpu_seconds(pid: int) -> float:
    """User plus system CPU time the process has used so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def exited(pid: int) -> bool:
    """The process is gone, or a zombie that only its parent has still to reap."""
    return (not Path(f"/proc/{pid}").exists()
            or "Z" in Path(f"/proc/{pid}/stat").read_text().split()[2])
