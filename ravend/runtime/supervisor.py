"""Every long-lived thread of ravend runs here, so that none can die in silence.

A *part* is a named target (the device reader, a sink worker, maintenance, the control socket,
MQTT commands, metrics) that runs in a thread the supervisor owns. When an unexpected exception
escapes the target, or the target returns while ravend is not stopping (a thread that quietly
ends is a death too), the failure is logged once as an error with its traceback (a repeat of the
same error: one line without it), counted, and the part restarted after a capped exponential
backoff (ravend.runtime.backoff; reset once the part has stayed up for STABLE_AFTER seconds).

A part that fails DOWN_FAILURES times within DOWN_WINDOW seconds *cannot stay up*: it is still
restarted, but ``healthy()`` turns False, so the service stops its WATCHDOG=1 pings and systemd
(WatchdogSec in ravend.service) restarts ravend; STATUS= names the part. A part that could not
even start for a reason its owner logged (a metrics port taken, a control socket directory that
cannot be written) is registered with ``unavailable``: shown as down with that reason, never as
up, but it does not stop the watchdog: restarting ravend would not free the port, and metrics or
the control socket are never a reason to stop logging.

``health()`` is what ``ravenctl status``, ``ravenctl doctor`` (through the control socket's
``health`` command) and the metrics (``ravend_part_up``, ``ravend_part_restarts_total``) show.

Test-only fault hook: ``RAVEND_TEST_FAULT=name[:times][,name[:times]...]`` makes
``fault_point(name)`` raise ``InjectedFault`` ``times`` times (default: every time). The
supervisor calls ``fault_point(part)`` each time a part (re)starts; the service also calls it
from inside the device thread per fragment (``fragment``) and inside each sink worker after a
durable write (``stored-<sink>``). Never set it in production.
"""

from __future__ import annotations

import collections
import logging
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from ravend.plural import plural
from ravend.runtime.backoff import Backoff

log = logging.getLogger("ravend.supervisor")

#: A part that fails this many times within DOWN_WINDOW seconds cannot stay up.
DOWN_FAILURES = 5
DOWN_WINDOW = 600.0
#: A part that ran this long before failing starts its backoff again from the minimum.
STABLE_AFTER = 60.0
#: The environment variable of the test-only fault hook (see the module docstring).
FAULT_ENV = "RAVEND_TEST_FAULT"


class InjectedFault(RuntimeError):
    """Raised by ``fault_point`` under RAVEND_TEST_FAULT (tests only)."""


_fault_lock = threading.Lock()
_faults_raised: dict[str, int] = {}


def fault_point(name: str) -> None:
    """Raise InjectedFault here when RAVEND_TEST_FAULT names this point (tests only)."""
    spec = os.environ.get(FAULT_ENV)
    if not spec:
        return
    for entry in spec.split(","):
        point, _, times = entry.strip().partition(":")
        if point != name:
            continue
        with _fault_lock:
            raised = _faults_raised.get(name, 0)
            if times and raised >= int(times):
                return
            _faults_raised[name] = raised + 1
        raise InjectedFault(f"test fault injected in {name} ({FAULT_ENV})")


@dataclass(frozen=True)
class PartHealth:
    name: str
    up: bool  # its thread is alive and inside its target
    restarts: int
    last_error: str  # "" when it never failed
    since: float  # wall-clock time of the last change of `up`
    failing: bool  # cannot stay up (DOWN_FAILURES within DOWN_WINDOW), or unavailable

    def as_dict(self) -> dict[str, object]:
        return {"name": self.name, "up": self.up, "restarts": self.restarts,
                "last_error": self.last_error, "since": self.since, "failing": self.failing}


class _Part:
    def __init__(self, name: str, target: Callable[[], None], backoff: Backoff) -> None:
        self.name = name
        self.target = target
        self.backoff = backoff
        self.thread: threading.Thread | None = None
        self.up = False
        self.restarts = 0
        self.last_error = ""
        self.since = time.time()
        self.failures: collections.deque[float] = collections.deque(maxlen=DOWN_FAILURES)
        self.unavailable = False
        self.reported_down = False


class Supervisor:
    def __init__(self, *, backoff_min: float = 1.0, backoff_max: float = 30.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.backoff_min, self.backoff_max = backoff_min, backoff_max
        self.clock = clock
        self.stopping = threading.Event()
        self._parts: dict[str, _Part] = {}
        self._lock = threading.Lock()

    def add(self, name: str, target: Callable[[], None]) -> None:
        """Register a part; its thread starts with ``start()`` (or now, once started)."""
        part = _Part(name, target, Backoff(self.backoff_min, self.backoff_max))
        with self._lock:
            self._parts[name] = part
        part.thread = threading.Thread(target=self._guard, args=(part,), name=name, daemon=True)

    def unavailable(self, name: str, reason: str) -> None:
        """A part that could not start (its owner logged why): down, with that reason."""
        part = _Part(name, lambda: None, Backoff(self.backoff_min, self.backoff_max))
        part.unavailable, part.last_error = True, reason
        with self._lock:
            self._parts[name] = part

    def start(self) -> None:
        for part in list(self._parts.values()):
            if part.thread is not None and part.thread.ident is None:
                part.thread.start()

    def stop(self) -> None:
        """ravend is stopping: targets that return now are not failures; no more restarts."""
        self.stopping.set()

    def join(self, name: str, timeout: float) -> None:
        part = self._parts.get(name)
        if part is not None and part.thread is not None and part.thread.ident is not None:
            part.thread.join(timeout)

    def health(self) -> list[PartHealth]:
        now = self.clock()
        out = []
        for part in list(self._parts.values()):
            alive = part.thread is not None and part.thread.is_alive()
            out.append(PartHealth(part.name, part.up and alive, part.restarts, part.last_error,
                                  part.since, part.unavailable or self._failing(part, now)))
        return out

    def down(self) -> list[str]:
        """Parts that are not running, or cannot stay up."""
        return [h.name for h in self.health() if not h.up or h.failing]

    def healthy(self) -> bool:
        """WATCHDOG=1 may be sent: every startable part runs, none cannot stay up."""
        return all(h.up and not h.failing for h in self.health()
                   if not self._parts[h.name].unavailable)

    def _failing(self, part: _Part, now: float) -> bool:
        return (len(part.failures) >= DOWN_FAILURES
                and now - part.failures[0] <= DOWN_WINDOW)

    def _set_up(self, part: _Part, up: bool) -> None:
        if part.up != up:
            part.up, part.since = up, time.time()

    def _guard(self, part: _Part) -> None:
        previous = ""
        while True:
            started = self.clock()
            self._set_up(part, True)
            exc: BaseException | None = None
            try:
                fault_point(part.name)
                part.target()
            except Exception as caught:
                exc = caught
            self._set_up(part, False)
            if exc is None and self.stopping.is_set():
                return
            error = (f"{type(exc).__name__}: {exc}" if exc is not None
                     else "its thread ended while ravend was running")
            part.last_error = error
            if self.stopping.is_set():
                log.error("%s failed while stopping: %s", part.name, error, exc_info=exc)
                return
            now = self.clock()
            part.failures.append(now)
            if now - started >= STABLE_AFTER:
                part.backoff.reset()
            delay = part.backoff.next()
            if error != previous:
                log.error("%s failed: %s (restarting in %.1fs)", part.name, error, delay,
                          exc_info=exc)
            else:
                log.error("%s failed again: %s (restarting in %.1fs)", part.name, error, delay)
            previous = error
            if self._failing(part, now) and not part.reported_down:
                part.reported_down = True
                log.error("%s cannot stay up (%d failures within %.0fs): watchdog pings stop,"
                          " so that systemd restarts ravend", part.name, DOWN_FAILURES,
                          DOWN_WINDOW)
            if self.stopping.wait(delay):
                self._last_run(part)
                return
            part.restarts += 1
            log.info("%s: restarted (%s)", part.name, plural(part.restarts, "restart"))

    def _last_run(self, part: _Part) -> None:
        """Stopped while waiting to restart: run the target once more, for it to finish what
        it holds (a sink worker spools its queue); every target returns at once when stopping."""
        self._set_up(part, True)
        try:
            part.target()
        except Exception as exc:
            log.error("%s failed while stopping: %s: %s", part.name, type(exc).__name__, exc,
                      exc_info=exc)
        finally:
            self._set_up(part, False)
