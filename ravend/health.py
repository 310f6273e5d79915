"""The running ravend's own view of its parts, for ``ravenctl status`` and ``ravenctl doctor``.

The service answers the control socket's ``health`` command with its supervisor's view
(ravend.runtime.supervisor). Whether a ravend runs at all is told by the state directory's lock
(ravend.statelock), so that a ravend whose control socket is down, or does not answer, is
reported as such rather than as "not running". Nothing here changes anything, and nothing here
imports the device or the decoder (ravend.control_client, not ravend.control): ``ravenctl
status`` imports this module, and its whole run must stay fast.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ravend.control_client import call
from ravend.plural import plural
from ravend.statelock import LOCK_NAME, holder

if TYPE_CHECKING:
    from ravend.config import Config

#: How long ravenctl waits for the answer (the service answers from memory).
TIMEOUT = 5.0


@dataclass(frozen=True)
class ServiceHealth:
    pid: int | None  # the ravend holding the state directory's lock, None when none does
    answered: bool  # its control socket gave the health answer
    error: str = ""  # why it did not
    parts: list[dict[str, Any]] = field(default_factory=list)

    @property
    def running(self) -> bool:
        return self.pid is not None or self.answered

    def down(self) -> list[dict[str, Any]]:
        return [p for p in self.parts if not p.get("up") or p.get("failing")]

    def summary(self) -> str:
        """One line: ``running (pid 12): all 4 parts up`` or which are down and why."""
        if not self.running:
            return "not running"
        who = f"running (pid {self.pid})" if self.pid else "running"
        if not self.answered:
            return f"{who}, but its control socket does not answer: {self.error}"
        down = self.down()
        if not down:
            return f"{who}: all {plural(len(self.parts), 'part')} up"
        return f"{who}: DOWN " + "; ".join(describe(p) for p in down)

    def as_dict(self) -> dict[str, Any]:
        return {"running": self.running, "pid": self.pid, "answered": self.answered,
                "error": self.error, "parts": self.parts,
                "down": [p["name"] for p in self.down()]}


def describe(part: dict[str, Any]) -> str:
    state = "up" if part.get("up") else "down"
    if part.get("failing") and part.get("up"):
        state = "keeps failing"
    text = f"{part.get('name')} {state}, {plural(part.get('restarts', 0), 'restart')}"
    if part.get("last_error"):
        text += f", last error: {part['last_error']}"
    return text


def query(config: Config, timeout: float = TIMEOUT) -> ServiceHealth:
    pid = holder(Path(config.service.state_dir) / LOCK_NAME)
    socket_path = config.service.control_socket
    if not socket_path:
        return ServiceHealth(pid, False, "no control socket configured")
    try:
        reply = call(Path(socket_path), "health", timeout=timeout)
    except (OSError, ValueError) as exc:
        return ServiceHealth(pid, False, str(exc) or type(exc).__name__)
    data = reply.get("data") if reply.get("ok") else None
    if not isinstance(data, dict):
        return ServiceHealth(pid, False, str(reply.get("error") or "no health answer"))
    parts = [p for p in data.get("parts", []) if isinstance(p, dict)]
    return ServiceHealth(pid or data.get("pid"), True, "", parts)
