"""The simulated stick's port: a real pty, the symlink to it, unplug and replug, reads and writes.

The device side is a real pty (not a socket or a pipe), so the code under test opens it with
pyserial or ``os.open`` exactly as it opens ``/dev/ttyUSB0``. Unplugging closes the master, which
the reader sees as EOF/EIO just as on a real unplug; the link is repointed atomically on replug.
Every read, write and close of the pty's fds holds ``_fd_lock``, so a close never races a write.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import pty
import select
import struct
import termios
import threading
import time
import tty
from dataclasses import dataclass

from ravend.simulator.replies import CommandReplies


@dataclass(slots=True)
class Port:
    """One plugged-in stick: the pty's two ends and the slave's name (/dev/pts/N)."""

    master: int
    slave: int
    name: str
    closing: bool = False
    closed: bool = False


class PtyPort(CommandReplies):
    """Plugs, unplugs and does the pty I/O, as a part of ``MeterSimulator``."""

    first_push_delay: float
    _link: str | None
    _port: Port | None
    _last_name: str
    _fd_lock: threading.Lock
    _stop_evt: threading.Event
    _received: bytearray

    def _plug(self) -> None:
        master, slave = pty.openpty()
        tty.setraw(slave)  # nothing echoed or translated: the bytes are the device's bytes
        os.set_blocking(master, False)  # lets unplug()/stop() interrupt a write nobody reads
        port = Port(master, slave, os.ttyname(slave))
        with self._cv:
            self._port = port
            self._last_name = port.name
            self._reset_due(time.monotonic() + self.first_push_delay)
            self._cv.notify_all()
        if self._link is not None:
            self._point_link(self._link, port.name)

    def _close_port(self, *, drain_timeout: float, half: bool = False) -> None:
        with self._cv:
            port = self._port
            if port is None:
                return
            port.closing = True  # the writer writes no further byte to this port
            self._timed.clear()  # replies die with the device
            self._cv.notify_all()
        if half:
            data = self._loose_demand()
            with self._fd_lock, contextlib.suppress(OSError):
                os.write(port.master, data[: len(data) // 2])
        if drain_timeout > 0:
            self._drain(port, drain_timeout)
        with self._fd_lock:
            for fd in (port.master, port.slave):
                with contextlib.suppress(OSError):
                    os.close(fd)
            port.closed = True
        with self._cv:
            if self._port is port:
                self._port = None
        if self._link is not None:
            self._remove_link(self._link, port.name)

    @staticmethod
    def _drain(port: Port, timeout: float) -> bool:
        """Wait until the slave's input queue stays empty (a reader took everything)."""
        deadline = time.monotonic() + timeout
        empty = 0
        while empty < 3:
            try:
                raw = fcntl.ioctl(port.slave, termios.FIONREAD, b"\0\0\0\0")
                pending = struct.unpack("i", raw)[0]
            except OSError:
                return False
            empty = empty + 1 if pending == 0 else 0
            if empty < 3 and time.monotonic() >= deadline:
                return False
            time.sleep(0.01)
        return True

    @staticmethod
    def _point_link(path: str, target: str) -> None:
        if os.path.lexists(path) and not os.path.islink(path):
            raise FileExistsError(f"{path} exists and is not a symlink; not replacing it")
        tmp = f"{path}.{os.getpid()}.{threading.get_ident()}.tmp"
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        os.symlink(target, tmp)
        os.replace(tmp, path)  # atomic repoint: a reader never sees the link missing mid-swap

    @staticmethod
    def _remove_link(path: str, target: str) -> None:
        with contextlib.suppress(OSError):
            if os.path.islink(path) and os.readlink(path) == target:
                os.unlink(path)

    def _write(self, port: Port, data: bytes) -> bool:
        """Write all of data unless the port goes away; True when the last byte was written."""
        view = memoryview(data)
        off = 0
        while off < len(view):
            if port.closing or self._stop_evt.is_set():
                return False
            with self._fd_lock:
                if port.closing or port.closed:
                    return False
                try:
                    off += os.write(port.master, view[off:])
                    continue
                except BlockingIOError:
                    pass  # the pty is full: wait below until the reader takes some
                except OSError:
                    return False
            try:
                select.select([], [port.master], [], 0.05)
            except (OSError, ValueError):
                return False
        return True

    def _reader_loop(self) -> None:
        """Collect what the host writes and cut it into <Command>…</Command> (may arrive split)."""
        buf = bytearray()
        current: Port | None = None
        while not self._stop_evt.is_set():
            port = self._port
            if port is not current:
                buf.clear()
                current = port
            if port is None or port.closing:
                self._stop_evt.wait(0.02)
                continue
            try:
                readable, _, _ = select.select([port.master], [], [], 0.05)
            except (OSError, ValueError):
                self._stop_evt.wait(0.02)
                continue
            if not readable:
                continue
            with self._fd_lock:
                if port.closed or port.closing:
                    continue
                try:
                    data = os.read(port.master, 4096)
                except BlockingIOError:
                    continue
                except OSError:
                    data = b""
            if not data:
                self._stop_evt.wait(0.02)
                continue
            with self._rec_lock:
                self._received += data
            buf += data
            self._cut_commands(buf)
