"""The one polling helper: the tests watch processes, threads and brokers that answer in their
own time, so every "until this holds" goes through here with a bound."""

from __future__ import annotations

import time
from collections.abc import Callable


def wait_for(predicate: Callable[[], object], timeout: float = 10.0, what: str | None = None,
             interval: float = 0.02) -> bool:
    """Call ``predicate`` every ``interval`` seconds until it is true or ``timeout`` has passed;
    it is asked once more at the deadline, so a slow last step still counts.

    Returns whether it came true, for ``assert wait_for(...), context``. With ``what``, a
    timeout fails the test itself, naming what was awaited.
    """
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    if predicate():
        return True
    if what is not None:
        raise AssertionError(f"timed out after {timeout:g} s waiting for {what}")
    return False
