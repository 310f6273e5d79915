"""The client side of ravend's control socket: one request line, one reply line.

Kept apart from ravend.control (the server and the device commands) so that a caller that only
asks, as ``ravenctl status`` does, imports neither the device session nor the protocol decoder:
a status must answer in a blink at any size, and most of its time would otherwise be imports.
The wire format is ravend.control's: one JSON object per line each way.
"""

from __future__ import annotations

import json
import socket
from pathlib import Path
from typing import Any


def call(path: Path, command: str, args: dict[str, Any] | None = None,
         timeout: float = 60.0) -> dict[str, Any]:
    """One request, one reply; OSError when ravend is not there (or closes without a word),
    ValueError when the reply is not JSON."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(timeout)
        sock.connect(str(path))
        sock.sendall(json.dumps({"command": command, "args": args or {}}).encode() + b"\n")
        data = bytearray()
        while b"\n" not in data:
            chunk = sock.recv(65536)
            if not chunk:
                break
            data += chunk
    if not data:
        raise OSError("ravend closed the connection without answering")
    reply: dict[str, Any] = json.loads(data.split(b"\n", 1)[0])
    return reply
