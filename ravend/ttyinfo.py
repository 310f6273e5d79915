"""What is behind a serial port and who has it open, from sysfs and /proc, without touching it.

For ``ravenctl doctor``: a path that names another adapter, ModemManager probing the stick with
AT commands, or a second logger reading half of the bytes are the usual reasons ravend reads
nothing useful, and all of them can be seen here before the port is opened.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import glob
import os
from dataclasses import dataclass
from pathlib import Path

from ravend.device import EMU2_USB, RAVEN_USB

#: The pty master's device node names (the classic one and the per-instance one of devpts).
PTMX = ("/dev/ptmx", "/dev/pts/ptmx")


@dataclass(frozen=True)
class Identity:
    """A local serial port as the kernel knows it."""

    path: str  # as configured (often a link: /dev/raven, /dev/serial/by-id/..., a test link)
    node: str  # the device node it resolves to
    kind: str  # "usb", "pty" or "tty"
    model: str = ""  # "RAVEn" or "EMU-2" when the USB ids say so
    usb: str = ""  # "0403:8a28 Rainforest RFA-Z106-RA-PC RAVEn v2.3.21"
    by_id: str = ""  # its /dev/serial/by-id name, if udev gave it one

    def describe(self) -> str:
        where = self.path if self.path == self.node else f"{self.path} → {self.node}"
        if self.kind == "pty":
            return f"{where}: a pseudo-terminal (the simulator, or a bridge such as socat)"
        if self.kind == "tty":
            return f"{where}: a serial port without USB ids (a built-in UART?)"
        parts = [self.model or "not a RAVEn or EMU-2", f"USB {self.usb}"]
        if self.by_id:
            parts.append(f"by-id {self.by_id}")
        return f"{where}: " + ", ".join(parts)


def _read(path: str) -> str:
    try:
        with open(path, encoding="utf-8", errors="replace") as handle:
            return handle.read().strip()
    except OSError:
        return ""


def _usb_device_dir(tty: str, sys_root: str) -> str | None:
    """The sysfs directory of the USB device (not the interface) behind a tty, if any."""
    try:
        here = os.path.realpath(os.path.join(sys_root, "class/tty", tty, "device"))
    except OSError:
        return None
    top = os.path.join(sys_root, "devices")
    while here.startswith(top) and here != top:
        if os.path.exists(os.path.join(here, "idVendor")):
            return here
        here = os.path.dirname(here)
    return None


def _model(vid: int, pid: int, strings: str) -> str:
    if (vid, pid) == RAVEN_USB:
        return "RAVEn"
    if (vid, pid) == EMU2_USB and ("Rainforest" in strings or "EMU" in strings.upper()):
        return "EMU-2"
    return ""


def identify(path: str, *, sys_root: str = "/sys", dev: str = "/dev") -> Identity:
    """Name the node behind ``path`` and, for a USB adapter, its ids and strings."""
    node = os.path.realpath(path)
    name = os.path.basename(node)
    if node.startswith("/dev/pts/"):
        return Identity(path, node, "pty")
    by_id = ""
    for link in sorted(glob.glob(os.path.join(dev, "serial/by-id/*"))):
        if os.path.realpath(link) == node:
            by_id = os.path.basename(link)
            break
    usb_dir = _usb_device_dir(name, sys_root)
    if usb_dir is None:
        return Identity(path, node, "tty", by_id=by_id)
    vendor, product = _read(f"{usb_dir}/idVendor"), _read(f"{usb_dir}/idProduct")
    strings = " ".join(s for s in (_read(f"{usb_dir}/manufacturer"),
                                   _read(f"{usb_dir}/product")) if s)
    try:
        model = _model(int(vendor, 16), int(product, 16), strings)
    except ValueError:
        model = ""
    usb = f"{vendor}:{product}" + (f" {strings}" if strings else "")
    return Identity(path, node, "usb", model, usb, by_id)


@dataclass(frozen=True)
class Holder:
    """A process that has the port open."""

    pid: int
    comm: str
    cmdline: str

    @property
    def is_ravend(self) -> bool:
        args = self.cmdline.split(" ")
        names = {os.path.basename(a) for a in args[:2]}
        return self.comm == "ravend" or "ravend" in names or "ravend.cli.ravend" in args

    def __str__(self) -> str:
        shown = self.cmdline if len(self.cmdline) <= 60 else self.cmdline[:57] + "..."
        if not shown or shown == self.comm:
            return f"{self.comm} (pid {self.pid})"
        return f"{self.comm} (pid {self.pid}: {shown})"


def _pty_index(node: str) -> int | None:
    base = os.path.basename(node)
    if node.startswith("/dev/pts/") and base.isdigit():
        return int(base)
    return None


def holders(node: str, *, proc: str = "/proc",
            exclude: frozenset[int] = frozenset()) -> tuple[list[Holder], bool]:
    """The processes with ``node`` open, and whether every process could be looked at.

    A process that also holds the pty's master is the other end of a pseudo-terminal (the
    simulator, socat), not a competitor, and is left out, as are the pids in ``exclude``.
    Other users' descriptors are hidden from non-root callers: then the flag is False.
    """
    pty_index = _pty_index(node)
    found: list[Holder] = []
    complete = True
    for entry in os.scandir(proc):
        if not entry.name.isdigit() or int(entry.name) in exclude:
            continue
        fd_dir = os.path.join(entry.path, "fd")
        try:
            fds = os.listdir(fd_dir)
        except PermissionError:
            complete = False
            continue
        except OSError:  # the process ended meanwhile
            continue
        has_node = False
        has_master = False
        for fd in fds:
            try:
                target = os.readlink(os.path.join(fd_dir, fd))
            except OSError:
                continue
            if target == node:
                has_node = True
            elif pty_index is not None and target in PTMX:
                info = _read(os.path.join(entry.path, "fdinfo", fd))
                has_master = has_master or f"tty-index:\t{pty_index}" in info.splitlines()
        if has_node and not has_master:
            comm = _read(os.path.join(entry.path, "comm"))
            raw = _read(os.path.join(entry.path, "cmdline"))
            found.append(Holder(int(entry.name), comm, raw.replace("\0", " ").strip()))
    return found, complete


def running_ravend(*, proc: str = "/proc") -> list[Holder]:
    """ravend processes, seen by their names, which unlike descriptors every user may read."""
    found = []
    for entry in os.scandir(proc):
        if entry.name.isdigit():
            comm = _read(os.path.join(entry.path, "comm"))
            raw = _read(os.path.join(entry.path, "cmdline"))
            holder = Holder(int(entry.name), comm, raw.replace("\0", " ").strip())
            if holder.is_ravend:
                found.append(holder)
    return found


def exclusive_open(node: str | Path) -> str | None:
    """None if the port can be opened and locked as ravend opens it (pyserial's exclusive=True:
    flock LOCK_EX); else why not. Non-blocking, no termios change, closed at once."""
    try:
        fd = os.open(node, os.O_RDWR | os.O_NOCTTY | os.O_NONBLOCK)
    except OSError as exc:
        if exc.errno == errno.EBUSY:
            return "busy: another process opened it exclusively (TIOCEXCL)"
        return exc.strerror or str(exc)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return "locked by another process"
    except OSError as exc:
        return exc.strerror or str(exc)
    finally:
        with contextlib.suppress(OSError):
            os.close(fd)  # also drops our lock
    return None
