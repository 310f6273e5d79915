"""The live view's push: one poller for every client, Server-Sent Events to each.

The poller reads the store's newest reading id (one search of the primary key) every
``POLL`` seconds while a live view is open, and wakes the streams when it grew, so a reading
reaches the page within about half a second, whatever the number of open pages; with no live
view open it sleeps (no wake-ups while idle). Each stream holds one worker thread while it
is open, so their number is bounded (``[web] max_streams``); one more is refused (503).

A page reloaded or closed gives its slot back within about ``CHECK`` seconds: each time the
stream wakes it peeks at its connection for the client's end of file (``client_gone``), rather
than waiting for a keep-alive write to fail, which takes a second write after the peer's reset
(7 to 19 s with ``KEEPALIVE``). Only the stream looks: waitress's own look-ahead
(``channel_request_lookahead``) would take any client's end of file for a hang-up, and a
script that shuts its side down after its request (nc -N, socat) would get no answer at all.
On stop every stream is woken and ends its answer properly, so the server can close without
cutting a write short.
"""

from __future__ import annotations

import logging
import socket
import threading
import time
from collections.abc import Callable, Generator
from typing import Any

from ravend.db import store_errors
from ravend.web.jsontext import dumps
from ravend.web.store import Stores

log = logging.getLogger("ravend.web")

#: Seconds between two looks at the newest id.
POLL = 0.5
#: Seconds after which an idle stream sends a comment (a proxy or a client gone without a
#: word is noticed when the write fails).
KEEPALIVE = 5.0
#: Seconds between two looks of a waiting stream at whether its client has gone.
CHECK = 0.5


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

    def end_streams(self) -> int:
        """Wake every stream to end its answer (no more are served): the open ones, counted.
        Quick and without waiting, for a signal handler."""
        self._stop.set()
        with self._changed:
            self._changed.notify_all()
            return self._active

    def stop(self) -> None:
        self.end_streams()
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
        """A stream slot, False when every one is taken (or the server is stopping)."""
        if self._stop.is_set() or not self._slots.acquire(blocking=False):
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

    def events(self, snapshot: Callable[[], dict[str, Any]],
               gone: Callable[[], bool] = lambda: False) -> Generator[bytes, None, None]:
        """``snapshot()`` now and after each new reading (its ``newest_id`` tells: the poller
        may have seen a reading later than the snapshot did, or the other way round); a
        comment while nothing new comes; the end when ``gone()`` says the client left or the
        poller stops."""
        seen = self.newest
        body = snapshot()
        sent = body.get("newest_id")
        yield b"retry: 2000\n\n" + event(dumps(body))
        quiet = time.monotonic()  # since the last write
        while True:
            def moved(last: int = seen) -> bool:
                return self.newest != last or self._stop.is_set()

            with self._changed:
                self._changed.wait_for(moved, CHECK)
            if self._stop.is_set() or gone():
                return
            if self.newest == seen:
                if time.monotonic() - quiet >= KEEPALIVE:
                    quiet = time.monotonic()
                    yield b": keepalive\n\n"
                continue
            seen = self.newest
            body = snapshot()
            if body.get("newest_id") == sent:
                continue
            sent = body.get("newest_id")
            quiet = time.monotonic()
            yield event(dumps(body))


class Stream:
    """A WSGI body of events that gives its slot back exactly once when closed, also when it
    was never iterated (a HEAD request, a client gone before the first byte)."""

    def __init__(self, poller: Poller, snapshot: Callable[[], dict[str, Any]]) -> None:
        self._poller = poller
        self._gone: Callable[[], bool] | None = None
        self._events = poller.events(snapshot, self.gone)
        self._open = True
        self._lock = threading.Lock()

    def watch(self, gone: Callable[[], bool] | None) -> None:
        """``gone()`` tells when the client has closed its connection (the server's check;
        None: no such check, a keep-alive write failing tells)."""
        self._gone = gone

    def gone(self) -> bool:
        return self._gone is not None and bool(self._gone())

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


def client_gone(environ: dict[str, Any]) -> Callable[[], bool] | None:
    """Whether the client of this request has closed its connection, for a stream to look at
    as it waits: waitress's own word (``waitress.client_disconnected``: the channel closed),
    or the socket at its end of file, peeked at without reading (the server does not read a
    connection while its request runs, so nothing else is taken from it meanwhile). None
    under a server that tells neither: a keep-alive write failing tells then."""
    closed = environ.get("waitress.client_disconnected")
    sock = getattr(getattr(closed, "__self__", None), "socket", None)
    if closed is None or not isinstance(sock, socket.socket):
        return closed

    def gone() -> bool:
        if closed():
            return True
        try:
            return sock.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT) == b""
        except (BlockingIOError, InterruptedError):
            return False  # nothing to read: still there
        except OSError:
            return True  # reset, or closed by the server meanwhile
    return gone


def event(data: str) -> bytes:
    """One Server-Sent Event of JSON text (one line: JSON has no raw newlines)."""
    return b"event: now\ndata: " + data.encode() + b"\n\n"
