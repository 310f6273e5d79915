"""Make pymongo's background threads sleep between their runs, instead of waking twice a second.

ravend-mongo-ingest runs for months on small machines where idle wake-ups cost power and show in
``powertop``; pymongo's periodic threads poll in 0.5 s steps whatever happens. This module
replaces pymongo's ``PeriodicExecutor`` with a subclass that waits on an Event, and lengthens a
pymongo 3.x poll timeout. It is a monkeypatch of pymongo internals, so it checks that they look
as expected first and otherwise leaves pymongo as it is; it lives apart from the store so that
the patch, and the pymongo versions it knows, can be read (and dropped) in one place.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from typing import Any

# The ingest's logger: the one line this module logs belongs to its story.
log = logging.getLogger("ravend.mongo_ingest")

#: pymongo's kill-cursors thread runs this often here instead of every second (see
#: ``quiet_pymongo``); the ingest leaves no cursor open for it to kill.
KILL_CURSORS_INTERVAL = 60.0
#: pymongo 3.x's streaming server monitor looks this often whether its check was cancelled
#: (pymongo: every 0.5 s); pymongo 4.7+ is told to poll instead (serverMonitoringMode=poll).
MONITOR_CANCEL_POLL = 5.0


def quiet_pymongo() -> bool:
    """Make pymongo's background threads block between their runs instead of polling.

    pymongo (3.11 to 4.x) runs its server monitor, RTT monitor and kill-cursors task (and an
    events thread with listeners) on ``periodic_executor.PeriodicExecutor`` threads, which sleep
    in steps of 0.5 s to notice ``wake()`` and ``close()``: two wake-ups a second per thread,
    six in all, while nothing happens. From now on this process's new executors wait on an
    Event that ``wake()`` and ``close()`` set, so they run when their interval is up (the
    monitors every heartbeatFrequencyMS, 10 s), when pymongo asks for an early check (no sooner
    than min_interval after the last run, as before), or stop at once when closed. The
    kill-cursors task (closing cursors the application dropped, pool upkeep; every second
    otherwise) runs every KILL_CURSORS_INTERVAL: the ingest leaves no cursor open.

    pymongo 3.x (Debian 12) also streams the server monitor's hellos from MongoDB 4.4 on and
    waits for each in 0.5 s steps, to notice a cancelled check: MONITOR_CANCEL_POLL here
    (pymongo cancels the check after an application error; the ingest then closes the client
    and opens a new one anyway). pymongo 4.7+ polls instead (``client_options``).

    Applied once, before the first MongoClient; returns False (pymongo left as it is) if its
    executor does not look as expected.
    """
    from pymongo import periodic_executor

    with contextlib.suppress(ImportError):
        # pymongo 3.x; 4.x (whose stubs mypy reads) has network_layer and the option instead.
        from pymongo import network  # type: ignore[attr-defined]

        if isinstance(getattr(network, "_POLL_TIMEOUT", None), float):
            network._POLL_TIMEOUT = max(network._POLL_TIMEOUT, MONITOR_CANCEL_POLL)

    base = periodic_executor.PeriodicExecutor
    if getattr(base, "_ravend_event_driven", False):
        return True
    should_stop = next((n for n in ("_should_stop", "_PeriodicExecutor__should_stop")
                        if hasattr(base, n)), None)
    probe = base(1.0, 0.5, lambda: True, "probe")
    if should_stop is None or not all(hasattr(probe, a) for a in (
            "_run", "wake", "close", "_event", "_interval", "_min_interval", "_stopped",
            "_skip_sleep", "_target", "_lock", "_thread_will_exit", "_name")):
        log.debug("pymongo's PeriodicExecutor is not as expected: left polling")
        return False
    stop_name: str = should_stop

    class EventDrivenExecutor(periodic_executor.PeriodicExecutor):
        _ravend_event_driven = True
        # Declared, as this class assigns them (pymongo's __init__ sets them; checked above).
        _interval: float
        _skip_sleep: bool
        _event: bool

        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            self._doorbell = threading.Event()
            if self._name == "pymongo_kill_cursors_thread":
                self._interval = max(self._interval, KILL_CURSORS_INTERVAL)

        def wake(self) -> None:
            super().wake()
            self._doorbell.set()

        def close(self, dummy: Any = None) -> None:
            super().close(dummy)
            self._doorbell.set()

        def _run(self) -> None:
            stop = getattr(self, stop_name)
            while not stop():
                try:
                    if not self._target():
                        self._stopped = True
                        break
                except BaseException:
                    with self._lock:
                        self._stopped = True
                        self._thread_will_exit = True
                    raise
                if self._skip_sleep:
                    self._skip_sleep = False
                else:
                    ran = time.monotonic()
                    deadline = ran + self._interval
                    # The flags are the truth; the Event only ends the wait early.
                    while not self._stopped and not self._event:
                        left = deadline - time.monotonic()
                        if left <= 0:
                            break
                        self._doorbell.wait(left)
                        self._doorbell.clear()
                    rest = ran + self._min_interval - time.monotonic()
                    if self._event and not self._stopped and rest > 0:
                        time.sleep(rest)  # an early run, but not sooner than before
                self._event = False

    # The monkeypatch itself: mypy does not let a module's class be replaced.
    periodic_executor.PeriodicExecutor = EventDrivenExecutor  # type: ignore[misc]
    return True
