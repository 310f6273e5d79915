"""One ravend per state directory: ``<state_dir>/ravend.lock``, flock'd for the process's life.

Two ravends on one state directory would share the outboxes (each replaying and acknowledging
the other's rows) and the SQLite store. The lock is an advisory ``flock`` on a file that stays
in place: the kernel drops it when the process ends, however it ends, so there is no stale lock
to clean up. The holder's pid is written into the file for the refusal line and for
``ravenctl status`` / ``doctor`` (``holder``).
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from pathlib import Path

LOCK_NAME = "ravend.lock"
#: EX_TEMPFAIL: another ravend holds the lock (ravend.service lists it in
#: RestartPreventExitStatus, so systemd does not restart into the same refusal).
EX_LOCKED = 75


class AlreadyRunning(RuntimeError):
    """The one line ravend logs when refused."""


class StateLock:
    def __init__(self, state_dir: Path) -> None:
        self.path = Path(state_dir) / LOCK_NAME
        self._fd: int | None = None

    def acquire(self) -> StateLock:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o640)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            pid = holder(self.path) or _written_pid(self.path)
            raise AlreadyRunning(
                f"another ravend (pid {pid or 'unknown'}) holds {self.path}: it uses the same"
                " state directory; stop it, or give this one another [service] state_dir"
            ) from None
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self._fd = fd
        return self

    def release(self) -> None:
        fd, self._fd = self._fd, None
        if fd is not None:
            os.close(fd)  # closing drops the flock; the file stays (no race on unlink)


def holder(path: Path, proc: str = "/proc") -> int | None:
    """The pid of the live process holding the lock at ``path``, or None when nobody does.

    Read from /proc/locks (by the file's device and inode), not by trying the lock: a probe
    that took it, even shared for a moment, could make a starting ravend refuse itself."""
    try:
        st = os.stat(path)
        locks = Path(proc, "locks").read_text()
    except OSError:
        return None
    for line in locks.splitlines():
        fields = line.split()
        # "1: FLOCK  ADVISORY  WRITE 1234 08:01:5678 0 EOF" (a blocked waiter: "1: -> FLOCK").
        if len(fields) < 6 or fields[1] != "FLOCK":
            continue
        with contextlib.suppress(ValueError):
            major, minor, inode = fields[5].split(":")
            if (int(inode) == st.st_ino and int(major, 16) == os.major(st.st_dev)
                    and int(minor, 16) == os.minor(st.st_dev)):
                return int(fields[4])
    return None


def _written_pid(path: Path) -> int | None:
    with contextlib.suppress(OSError, ValueError, IndexError):
        return int(path.read_text().split()[0])
    return None
