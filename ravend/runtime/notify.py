"""sd_notify for the Type=notify units: READY=1, STATUS=, WATCHDOG=1, STOPPING=1."""

from __future__ import annotations

import logging
import os

log = logging.getLogger("ravend")


class Notifier:
    """sd_notify when NOTIFY_SOCKET is set; silent otherwise (and without python3-sdnotify)."""

    def __init__(self) -> None:
        self._notifier = None
        if os.environ.get("NOTIFY_SOCKET"):
            try:
                import sdnotify  # a Depends, but a source checkout may run without it

                self._notifier = sdnotify.SystemdNotifier()
            except ImportError:
                log.warning("NOTIFY_SOCKET is set but python3-sdnotify is missing:"
                            " install it or use Type=simple")

    def notify(self, message: str) -> None:
        if self._notifier is not None:
            self._notifier.notify(message)

    @staticmethod
    def watchdog_interval() -> float | None:
        usec = os.environ.get("WATCHDOG_USEC")
        pid = os.environ.get("WATCHDOG_PID")
        if not usec or (pid and pid != str(os.getpid())):
            return None
        return int(usec) / 1e6 / 2  # ping twice per period
