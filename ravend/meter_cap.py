"""The meters ravend keeps per-meter state for: the first ``[service] max_meters`` it hears.

A house has one meter, sometimes two; a stick that hears a neighbourhood, or a wire that
garbles the MeterMacId, brings a new MAC with nearly every fragment. Each tracked meter costs
a Home Assistant device, metric series and running-cost state for as long as ravend runs, so
only the first few are tracked. Readings of any other meter are still stored and published on
their reading topics: the cap bounds what ravend remembers, never what it stores. One instance
is shared by the dispatcher (metrics) and the MQTT sink (discovery), so they agree on the set
and the operator reads one line about it.
"""

from __future__ import annotations

import logging
import threading

from ravend.config import ServiceConfig

log = logging.getLogger("ravend.meters")

DEFAULT_MAX_METERS: int = ServiceConfig.max_meters


class MeterCap:
    def __init__(self, limit: int = DEFAULT_MAX_METERS) -> None:
        self.limit = limit
        self._tracked: set[str] = set()
        self._refused = 0  # readings or states of untracked meters, for tests and status
        self._lock = threading.Lock()  # the device thread and the MQTT worker both ask

    def admits(self, meter: str) -> bool:
        """Whether per-meter state may be kept for this meter (taking it on while room is left)."""
        with self._lock:
            if meter in self._tracked:
                return True
            if len(self._tracked) < self.limit:
                self._tracked.add(meter)
                return True
            self._refused += 1
            first = self._refused == 1
        if first:
            log.warning("meter %s is one more than [service] max_meters = %d: its readings are"
                        " stored and published, but it gets no Home Assistant device and no"
                        " metric series (nor does any further meter; this is said once)",
                        meter[:32], self.limit)
        return False

    @property
    def tracked(self) -> frozenset[str]:
        with self._lock:
            return frozenset(self._tracked)
