"""Stand in for systemd's notify socket: what ravend tells it (READY, STATUS, WATCHDOG)."""

from __future__ import annotations

import socket
import time
from pathlib import Path


def notify_socket(tmp_path: Path) -> socket.socket:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(tmp_path / "notify"))
    sock.settimeout(0.2)
    return sock


def received(sock: socket.socket, seconds: float) -> list[str]:
    out: list[str] = []
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            out.extend(sock.recv(4096).decode().splitlines())
        except TimeoutError:
            continue
    return out
