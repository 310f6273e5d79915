"""ravend-web for the tests: started as a real process on a free port, and plain HTTP requests
to it (urllib: what a script would use), answers with their status, headers and body."""

from __future__ import annotations

import base64
import contextlib
import json
import urllib.error
import urllib.request
from collections.abc import Iterator
from email.message import Message
from pathlib import Path
from typing import Any, NamedTuple

from tests.helpers.process import WebProcess
from tests.helpers.servers import free_port, port_accepts
from tests.helpers.wait import wait_for


class Reply(NamedTuple):
    status: int
    headers: Message  # names in any case
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


def request(url: str, method: str = "GET", auth: tuple[str, str] | None = None,
            timeout: float = 10) -> Reply:
    req = urllib.request.Request(url, method=method)
    if auth is not None:
        token = base64.b64encode(f"{auth[0]}:{auth[1]}".encode()).decode()
        req.add_header("Authorization", f"Basic {token}")
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return Reply(resp.status, resp.headers, resp.read())
    except urllib.error.HTTPError as exc:
        return Reply(exc.code, exc.headers, exc.read())


@contextlib.contextmanager
def running_web(config: Path, log: Path, host: str = "127.0.0.1") -> Iterator[str]:
    """ravend-web on a free port for a ``with`` block; yields its base URL. At the end it
    must stop cleanly on SIGTERM (exit status 0)."""
    port = free_port()
    web = WebProcess(config, log, "--listen", f"{host}:{port}")
    try:
        assert wait_for(lambda: port_accepts("127.0.0.1", port) or web.proc.poll() is not None,
                        15), web.log()
        assert web.proc.poll() is None, web.log()
        yield f"http://127.0.0.1:{port}"
    finally:
        code, _took = web.stop()
    assert code == 0, web.log()
