"""One finding of ``ravenctl doctor``: a name, how bad, what was seen and the fix.

Its own module so that the checks of the setup (``ravend.doctor``) and of the stores
(``ravend.doctor_sinks``) can both make findings without importing each other.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass


class Status(enum.Enum):
    OK = "ok"
    WARN = "warn"  # worth a look; does not make doctor fail
    FAIL = "fail"  # ravend cannot work like this


@dataclass(frozen=True)
class Check:
    name: str
    status: Status
    message: str
    fix: str = ""

    def line(self) -> str:
        """``FAIL  device: /dev/ttyUSB0 not found — plug in the stick or set [device] port``."""
        text = f"{self.status.name:<5} {self.name}: {self.message}"
        return text + (f" — {self.fix}" if self.fix and self.status is not Status.OK else "")

    def as_dict(self) -> dict[str, str]:
        return {"check": self.name, "status": self.status.value, "message": self.message,
                "fix": self.fix}
