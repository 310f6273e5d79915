"""sd_notify for the Type=notify units: READY=1, STATUS=, WATCHDOG=1, STOPPING=1."""

from __future__ import annotations

import logging
import os
from collections.abc import Callable

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


class Heartbeat:
    """What a companion's main loop (ravend-repeater, ravend-mongo-ingest) tells systemd as it
    goes round: WATCHDOG=1 once per ``watchdog_interval`` (none without a watchdog), and STATUS=
    at most every ``status_interval``. The loop passes the time it read and asks how long it
    may sleep before the next ping is due, so that an idle loop needs no tick of its own."""

    def __init__(self, notifier: Notifier, status_interval: float) -> None:
        self.notifier = notifier
        self.watchdog = notifier.watchdog_interval()
        self.status_interval = status_interval
        self.last_ping = 0.0
        self.last_status = 0.0
        self.status = ""  # the last STATUS= text sent by ``beat`` or ``send_status``

    def beat(self, now: float, status: Callable[[], str]) -> bool:
        """Ping the watchdog when due, and send STATUS= with ``status()`` when the last one is
        ``status_interval`` old; True when it sent STATUS=."""
        if self.watchdog is not None and now - self.last_ping >= self.watchdog:
            self.notifier.notify("WATCHDOG=1")
            self.last_ping = now
        if now - self.last_status >= self.status_interval:
            self.send_status(status(), now)
            return True
        return False

    def send_status(self, text: str, now: float) -> None:
        """STATUS= now (the loop has news); the next periodic one is timed from here."""
        self.notifier.notify("STATUS=" + text)
        self.status = text
        self.last_status = now

    def wait(self, now: float, longest: float) -> float:
        """``longest``, or less: the time left until the next watchdog ping is due."""
        if self.watchdog is None:
            return longest
        return min(longest, self.last_ping + self.watchdog - now)

    def until_status(self, now: float) -> float:
        """The time left until the next periodic STATUS= is due."""
        return self.last_status + self.status_interval - now
