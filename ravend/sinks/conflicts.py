"""Same key, another value: the one rule every store follows, and its counter.

A reading's key is (meter MAC, kind, key time). The FIRST value a store receives for a key is
the one it keeps; a later reading with the same key and another value (raw, multiplier or
divisor differ) is a *conflict*: neither stored nor published, counted, and logged. A meter
whose clock is frozen sends one conflict after another: the warning is logged once per burst,
a burst lasting until a batch written without any conflict. Same key and same value (a replay
after an outage, a fragment the stick sent twice) is a harmless duplicate: silent.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # not at run time: ravenctl status imports this module
    from ravend.protocol.model import Reading

#: What "the same value" means: value is raw * multiplier / divisor, so these three decide.
Value = tuple[int, int, int]
Key = tuple[str, str, int]


def key_of(r: Reading) -> Key:
    return r.meter_mac, r.kind.value, r.key_time


def value_of(r: Reading) -> Value:
    return int(r.raw), int(r.multiplier), int(r.divisor)


class KeyConflicts:
    """Counts conflicts for one store and logs the first of each burst (one warning)."""

    def __init__(self, store: str, logger: logging.Logger) -> None:
        self.store = store
        self.log = logger
        self.count = 0  # conflicts since the start (ravend_readings_conflicting_total)
        self._in_burst = False
        self._burst = 0

    def refuse(self, key: Any, kept: Value, refused: Value) -> None:
        """One reading refused: its key is held by ``kept``, it brought ``refused``."""
        self.count += 1
        self._burst += 1
        if not self._in_burst:
            self._in_burst = True
            meter, kind, when = key
            self.log.warning(
                "%s: reading %s %s at key time %s already stored with raw=%s multiplier=%s"
                " divisor=%s; refused the other value raw=%s multiplier=%s divisor=%s (the"
                " first value is kept; further conflicts are counted, not logged, until a"
                " batch without any)", self.store, meter, kind, when, *kept, *refused)

    def batch_done(self, conflicts: int) -> None:
        """After each written batch: a batch without conflict ends the burst."""
        if conflicts == 0 and self._in_burst:
            self.log.info("%s: %d readings refused for a key already stored with another"
                          " value, that burst is over", self.store, self._burst)
            self._in_burst = False
            self._burst = 0
