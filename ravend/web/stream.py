"""The live view's push: one poller for every client, Server-Sent Events to each.

The poller reads the store's newest reading id (one search of the primary key) every
``POLL`` seconds while a live view is open, and wakes the streams when it grew, so a reading
reaches the page within about half a second, whatever the number of open pages; with no live
view open it sleeps (no wake-ups while idle). Each stream holds one worker thread while it
is open, so their number is bounded (``[web] max_streams``); one more is refused (503).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Generator
from typing import Any

from ravend.db import store_errors
from ravend.web.jsontext import dumps
from ravend.web.store import Stores

log = logging.getLogger("ravend.web")

#: Seconds between two looks at the newest id.
POLL = 0.5
#: Seconds after which an idle stream sends a comment, so a closed page is noticed.
KEEPALIVE = 5.0


class Poller:
    """Wakes every waiting stream when the store's newest reading id changes."""

    def __init__(self, stores: Stores, max_streams: int) -> None:
        self.stores = stores
        self.newest = -1
        self._changed = threading.Condition()
        self._slots = threading.BoundedSemaphore(max_streams)
        self._active = 0  # open streams (guarded by _changed)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="web-poller", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        with self._changed:
            self._changed.notify_all()
        if self._thread is not None:
            self._thread.join(2 * POLL)

    def _run(self) -> None:
        from ravend.web.queries import newest_id

        while not self._stop.is_set():
            with self._changed:
                self._changed.wait_for(lambda: self._active > 0 or self._stop.is_set())
            if self._stop.wait(POLL):
                return
            try:
                newest = newest_id(self.stores.get())
            except FileNotFoundError:
                continue  # ravend has not made the store yet
            except store_errors() as exc:
                log.debug("poller: %s", exc)
                self.stores.drop()
                continue
            if newest != self.newest:
                with self._changed:
                    self.newest = newest
                    self._changed.notify_all()

    def acquire(self) -> bool:
        """A stream slot, False when every one is taken."""
        if not self._slots.acquire(blocking=False):
            return False
        with self._changed:
            self._active += 1
            self._changed.notify_all()
        return True

    def release(self) -> None:
        with self._changed:
            self._active -= 1
        self._slots.release()

    def stream(self, snapshot: Callable[[], dict[str, Any]]) -> Stream:
        """Events for one page, in the slot ``acquire`` took (given back when it closes)."""
        return Stream(self, snapshot)

    def events(self, snapshot: Callable[[], dict[str, Any]]) -> Generator[bytes, None, None]:
        """``snapshot()`` now and after each new reading (its ``newest_id`` tells: the poller
        may have seen a reading later than the snapshot did, or the other way round); a
        comment while nothing new comes."""
        seen = self.newest
        body = snapshot()
        sent = body.get("newest_id")
        yield b"retry: 2000\n\n" + event(dumps(body))
        while not self._stop.is_set():
            def moved(last: int = seen) -> bool:
                return self.newest != last or self._stop.is_set()

            with self._changed:
                self._changed.wait_for(moved, KEEPALIVE)
            if self._stop.is_set():
                return
            if self.newest == seen:
                yield b": keepalive\n\n"
                continue
            seen = self.newest
            body = snapshot()
            if body.get("newest_id") == sent:
                continue
            sent = body.get("newest_id")
            yield event(dumps(body))


class Stream:
    """A WSGI body of events that gives its slot back exactly once when closed, also when it
    was never iterated (a HEAD request, a client gone before the first byte)."""

    def __init__(self, poller: Poller, snapshot: Callable[[], dict[str, Any]]) -> None:
        self._poller = poller
        self._events = poller.events(snapshot)
        self._open = True
        self._lock = threading.Lock()

    def __iter__(self) -> Stream:
        return self

    def __next__(self) -> bytes:
        try:
            return next(self._events)
        except StopIteration:
            self.close()
            raise
        except store_errors() as exc:
            log.warning("store, in a live view: %s", exc)
            self._poller.stores.drop()
            self.close()
            raise StopIteration from None

    def close(self) -> None:
        with self._lock:
            if not self._open:
                return
            self._open = False
        self._events.close()
        self._poller.release()

def event(data: str) -> bytes:
    """One Server-Sent Event of JSON text (one line: JSON has no raw newlines)."""
    return b"event: now\ndata: " + data.encode() + b"\n\n"
