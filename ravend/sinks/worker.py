"""One thread, one bounded queue and one durable outbox per sink.

The device thread hands readings to every worker with ``submit`` and never waits on a store for
long: a queue still full after SUBMIT_WAIT_S spills to the outbox on disk. Each worker commits
whatever has gathered since its last write (group commit: one reading at 1 reading/s, hundreds
under load), and while its sink is down it spools to the outbox and retries with capped
exponential backoff, replaying in order. The worker blocks on its queue when idle: no polling
tick.

Order is kept by an *ordinal* per submitted batch, counted on from the outbox's last one: a
batch that spilled past older ones still queued, or one that failed after newer ones spilled,
takes its place in the outbox by ordinal, so that a sink sees readings in the order the meter
sent them (the retained MQTT state is the newest reading, not whichever replayed last).

Nothing one reading does stops a sink. Any exception from a write but SinkUnavailable (retry
later) is about the data: the batch is written again one reading at a time, and each reading
that still fails is *rejected*: one error line with its key and the reason, counted
(``stats.rejected``) and kept in the quarantine file (``rejected.db``, ``ravenctl rejected``).
So is an outbox entry that cannot be decoded. An exception the sink did not expect may have left
its connection in a bad state (mid-transaction): the sink is closed and opened again before the
next write. If SYSTEMATIC_AFTER single writes in a row fail the same unexpected way, the fault
is the sink's, not the readings': it is treated as unavailable (spool, retry with backoff) after
those, so that a broken sink does not quarantine everything, while a run of bad readings still
gets through SYSTEMATIC_AFTER at a time. The outbox failing (a full disk at acknowledgement) is
"unavailable" too: the rows stay and replay again, harmless duplicates by key.
"""

from __future__ import annotations

import contextlib
import enum
import itertools
import logging
import queue
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

from ravend.plural import plural
from ravend.protocol.model import Reading
from ravend.runtime.backoff import Backoff
from ravend.runtime.outage import Outage
from ravend.sinks.base import ReadingRejected, Sink, SinkUnavailable, StateItem
from ravend.sinks.outbox import Outbox, OutboxError, Spooled
from ravend.sinks.quarantine import FILE_NAME as QUARANTINE_FILE
from ravend.sinks.quarantine import Quarantine, QuarantineError

log = logging.getLogger("ravend.sinks")

class _Stop(enum.Enum):
    """The stop request's type: a one-member enum, so that ``is _STOP`` narrows the queue's
    items for the type checker."""

    STOP = "stop"


_STOP: Final = _Stop.STOP

#: What the queue holds: (ordinal, readings, states).
Item = tuple[int, list[Reading], list[StateItem]]

#: How long the device thread may wait for room in a full queue before it spills to the outbox.
#: Short next to the device's pace (a reading every few seconds; the tty buffers the bytes
#: meanwhile), long next to a commit (milliseconds): a sink that is only briefly behind, as in
#: a burst, slows the reader down instead of sending readings on a detour through the disk. A
#: sink that is stuck costs the reader this wait once: until the queue is half empty again, a
#: reading that finds it full goes to the outbox without waiting.
SUBMIT_WAIT_S = 0.1

#: Single-reading writes in a row failing with the same unexpected error after which the sink,
#: not the readings, is taken to be at fault (see the module docstring).
SYSTEMATIC_AFTER = 10


@dataclass
class SinkStats:
    stored: int = 0
    spooled: int = 0
    dropped: int = 0
    rejected: int = 0
    up: bool = False
    last_error: str = ""
    stored_by_kind: dict[str, int] = field(default_factory=dict)


class SinkWorker:
    def __init__(self, sink: Sink, outbox_path: Path, *, queue_size: int = 2_000,
                 batch_size: int = 500, max_delay: float = 1.0, spool_max_mb: float = 100.0,
                 retry_min: float = 1.0, retry_max: float = 60.0,
                 quarantine_path: Path | None = None) -> None:
        self.sink = sink
        self.name = sink.name
        self.outbox = Outbox(outbox_path, spool_max_mb)
        self.quarantine = Quarantine(quarantine_path or outbox_path.parent / QUARANTINE_FILE)
        self.batch_size = batch_size
        self.max_delay = max_delay
        self.retry_min = retry_min
        self.retry_max = retry_max
        self.stats = SinkStats()
        self._queue: queue.Queue[Item | _Stop] = queue.Queue(maxsize=queue_size)
        self._spilling = False  # the queue was full: submit spills without waiting
        self._ordinals = itertools.count(self.outbox.next_ordinal)
        self._opened = False
        self._retry_at = 0.0
        self._outage = Outage(self.stats, Backoff(retry_min, retry_max))
        self._thread = threading.Thread(target=self._run, name=f"sink-{self.name}", daemon=True)
        self._outbox_failed = False
        self._stopping = False  # the worker has taken the stop request
        self._held = False  # the worker put readings back in memory (outbox unwritable)
        self._wakeup = threading.Event()  # ends a pause early: stop() sets it
        self._memory_drops = 0  # readings dropped from memory since the outbox failed
        self._counts_lock = threading.Lock()  # the reader's submit and the worker both count
        self._in_flight: list[Item] = []  # taken, not yet stored or spooled (_in_hand)
        self._flight_lock = threading.Lock()
        self._abandoned = False  # stop() gave up waiting and spooled what was in memory
        self._streak = 0  # single writes in a row failing the same unexpected way
        self._streak_reason = ""
        #: Set during a replay's one-at-a-time writes: stored/rejected wait for the ack.
        self._pending: list[Callable[[], None]] | None = None
        #: callbacks(sink name, readings) after a durable write (status, metrics)
        self.on_stored: list[Callable[[str, list[Reading]], None]] = []

    def __repr__(self) -> str:
        return (f"<SinkWorker {self.name} up={self.stats.up} queued={self._queue.qsize()}"
                f" spooled={len(self.outbox)}>")

    # --- producer side (device thread) ---------------------------------------------------------

    def submit(self, readings: Sequence[Reading], states: Sequence[StateItem] = ()) -> None:
        if not readings and not states:
            return
        item: Item = (next(self._ordinals), list(readings), list(states))
        if self._spilling and self._queue.qsize() <= self._queue.maxsize // 2:
            self._spilling = False
        try:
            if self._spilling:
                self._queue.put_nowait(item)
            else:
                self._queue.put(item, timeout=SUBMIT_WAIT_S)
        except queue.Full:
            self._spilling = True
            self._spool([item], why="queue full")

    # --- lifecycle -----------------------------------------------------------------------------

    def start(self) -> None:
        self._thread.start()

    def run(self) -> None:
        """The worker loop in the caller's thread: the service's supervisor owns the thread
        (and restarts this after a crash, with the same queue and outbox)."""
        self._thread = threading.current_thread()
        self._run()

    def stop(self, timeout: float = 4.0) -> None:
        """Flush what is queued (to the sink, or else to the outbox) and close."""
        deadline = time.monotonic() + timeout
        self._wakeup.set()
        try:
            self._queue.put(_STOP, timeout=timeout / 2)
        except queue.Full:
            # The worker takes nothing (stuck in a write, or not running): what waits in
            # memory goes to the outbox from here, so that the next start replays it.
            self._spool_queued()
            with contextlib.suppress(queue.Full):
                self._queue.put_nowait(_STOP)
        if self._thread.ident is not None:  # started
            self._thread.join(max(0.0, deadline - time.monotonic()))
        if self._thread.is_alive():
            n = self._spool_abandoned()
            # What the outbox would not take (unwritable, or closed meanwhile by the worker
            # finishing) went back to memory, where it dies with the process: counted, said.
            n -= self._drop_held_at_stop()
            log.warning("%s: a write did not finish within %.1fs; %s waiting in memory"
                        " spooled to %s for the next start (the one in flight too: should it"
                        " still succeed, its replay is a harmless duplicate)", self.name,
                        timeout, plural(n, "reading"), self.outbox.path)

    def _spool_abandoned(self) -> int:
        """From the stopping thread, the worker being stuck in a write: the queue and the batch
        in flight go to the outbox (thread-safe: the outbox serialises its connection)."""
        self._abandoned = True
        with self._flight_lock:
            items = self._take_queued() + list(self._in_flight)
        self._spool(items, why="stopping, a write hanging")
        return sum(len(item[1]) for item in items)

    def alive(self) -> bool:
        return self._thread.is_alive()

    @property
    def backlog(self) -> int:
        return self._queue.qsize() + len(self.outbox)

    # --- worker thread -------------------------------------------------------------------------

    def _run(self) -> None:
        self._try_open()
        while not self._stopping:
            item = self._next(self._wait_time())
            items: list[Item] = []
            size = 0
            deadline = time.monotonic() + self.max_delay
            while item is not None:
                if item is _STOP:
                    self._stopping = True
                    break
                items.append(item)
                size += len(item[1]) + len(item[2])
                if size >= self.batch_size or time.monotonic() > deadline:
                    break
                item = self._next(0.0)
            self._handle(items)
            if self._held and not self._stopping:
                self._pause()
        self._drain_on_stop()
        if self._abandoned:
            return  # stop() spooled from its thread and went on: the process is exiting
        self._close_sink()
        self.outbox.close()
        self.quarantine.close()

    def _close_sink(self) -> None:
        try:
            self.sink.close()
        except Exception as exc:  # the contract says it must not raise; it must not kill us
            log.error("%s: closing failed: %s", self.name, _reason(exc))

    def _wait_time(self) -> float | None:
        """Block forever when all is well; otherwise until the next retry (0: replay now)."""
        if self.stats.up and self._opened:
            return 0.0 if len(self.outbox) else None
        return max(0.0, self._retry_at - time.monotonic())

    def _next(self, timeout: float | None) -> Item | _Stop | None:
        try:
            if timeout == 0.0:
                return self._queue.get_nowait()
            return self._queue.get(timeout=timeout)
        except queue.Empty:
            return None

    def _handle(self, items: list[Item]) -> None:
        with self._in_hand(items):  # until stored or spooled
            if not self._opened:
                self._try_open()
            if items:
                if len(self.outbox) or not self._opened or not (self.stats.up
                                                                 or self._retry_due()):
                    # Keep order: anything newer waits behind what is already spooled.
                    self._spool(items, why="sink unavailable")
                else:
                    # Up, or down with nothing spooled (the outbox unwritable) and a retry
                    # due: then this write is the retry.
                    self._write(items)
        if self._opened and len(self.outbox) and self._retry_due():
            self._replay()

    def _retry_due(self) -> bool:
        return time.monotonic() >= self._retry_at

    def _pause(self) -> None:
        """Readings wait in memory, the outbox unwritable and the sink behind or down: wait for
        the next retry instead of taking them straight back (measured: 62,000 spool attempts
        a second, and the sink never retried)."""
        self._held = False
        wait = self._retry_at - time.monotonic() if not self.stats.up else self.retry_min
        self._wakeup.wait(min(self.retry_max, max(self.retry_min, wait)))

    def _try_open(self) -> None:
        if self._opened or time.monotonic() < self._retry_at:
            return
        try:
            self.sink.open()
        except SinkUnavailable as exc:
            self._failed(str(exc))
            return
        except Exception as exc:  # unexpected: still only "not now", retried with backoff
            self._failed(f"cannot open: {_reason(exc)}")
            return
        self._opened = True
        self._recovered()

    @contextlib.contextmanager
    def _in_hand(self, items: list[Item]) -> Iterator[None]:
        """Items taken from the queue and not yet stored or spooled, for stop() to spool
        should the sink hang meanwhile (in open or in write)."""
        with self._flight_lock:
            self._in_flight = items
        try:
            yield
        finally:
            with self._flight_lock:
                self._in_flight = []

    def _write(self, items: list[Item]) -> bool:
        """False when the sink was down (the items are spooled)."""
        readings, states = _merged(items)
        try:
            self.sink.write(readings, states)
        except SinkUnavailable as exc:
            self._failed(str(exc))
            self._spool(items, why="")
            return False
        except Exception as exc:
            self._after_unexpected(exc)
            if not self._reject(items):
                return False
        else:
            self._stored(readings)
        if not self.stats.up:
            self._recovered()
        return True

    def _replay(self) -> None:
        """Write spooled batches oldest first; the first success after a failure is recovery."""
        while True:
            self._absorb_queue()
            if self._stopping or not len(self.outbox):
                break
            try:
                batches = self.outbox.peek(self.batch_size)
            except OutboxError as exc:
                self._failed(f"outbox: {exc}")
                return
            finally:
                self._count_outbox_losses()
            if not batches:
                return
            items: list[Item] = [(b.ordinal, b.readings, b.states) for b in batches]
            readings, states = _merged(items)
            up = True
            try:
                if readings or states:
                    self.sink.write(readings, states)
            except SinkUnavailable as exc:
                self._failed(str(exc))
                return
            except Exception as exc:
                self._after_unexpected(exc)
                # Counted and quarantined once the rows are acknowledged, not before: a failed
                # ack replays the batch, which would store and reject its readings again.
                with self._deferred_accounting() as settle:
                    up = self._reject(items)  # what it could not write is spooled again
                    acked = self._ack(batches)
                    settle(acked)
                if not acked:
                    return
            else:
                # Ack before counting: whoever sees `stored` grow must not still find the rows
                # in the outbox (and a crash between write and ack only replays, idempotently).
                if not self._ack(batches):
                    return
                self._stored(readings)
            self._quarantine_poison(batches)
            if not up:
                return
            if not self.stats.up:
                self._recovered()
        if not len(self.outbox):
            log.info("%s: spool replayed, writing directly again", self.name)

    @contextlib.contextmanager
    def _deferred_accounting(self) -> Iterator[Callable[[bool], None]]:
        """Within it, readings stored or rejected are only noted; ``settle(True)`` counts (and
        quarantines) them, ``settle(False)`` forgets them (they come back at the replay)."""
        pending: list[Callable[[], None]] = []
        self._pending = pending

        def settle(keep: bool) -> None:
            self._pending = None
            if keep:
                for action in pending:
                    action()

        try:
            yield settle
        finally:
            self._pending = None

    def _ack(self, batches: list[Spooled]) -> bool:
        """False when the outbox cannot forget them (a full disk): the sink then counts as
        unavailable, and the rows replay again at the next retry (duplicates by key)."""
        try:
            self.outbox.ack(batches)
        except OutboxError as exc:
            self._failed(f"outbox: {exc}")
            return False
        finally:
            self._count_outbox_losses()
        return True

    def _count_outbox_losses(self) -> None:
        """Readings a damaged outbox could not give back when it was replaced: dropped."""
        lost = self.outbox.take_lost()
        if lost:
            with self._counts_lock:
                self.stats.dropped += lost

    def _quarantine_poison(self, batches: list[Spooled]) -> None:
        """Entries the outbox could not decode, once their rows are acknowledged (so never
        twice)."""
        for batch in batches:
            for text, reason in batch.poison:
                self._rejected(text, "(undecodable)", reason)

    def _absorb_queue(self) -> None:
        """Before each replayed batch, what waits in the queue joins the outbox: it may be
        older than spooled readings that spilled past it, and the outbox sorts by ordinal.
        (It would be spooled anyway: nothing is written directly while the outbox holds
        anything.)"""
        items = self._take_queued()
        with self._in_hand(items):  # should the spool hang, stop() still sees them
            self._spool(items, why="behind the outbox")

    def _reject(self, items: list[Item]) -> bool:
        """Write one at a time so that only the bad readings are left out, each logged once.
        If the sink goes down meanwhile, the rest (states too) is spooled untried, each with
        its ordinal, and this returns False."""
        unwritten: list[Item] = []
        for ordinal, readings, states in items:
            if unwritten:
                unwritten.append((ordinal, readings, states))
                continue
            for i, r in enumerate(readings):
                if not self._opened:
                    self._try_open()  # reopened after an unexpected error
                    if not self._opened:
                        unwritten.append((ordinal, readings[i:], states))
                        break
                try:
                    self.sink.write([r], [])
                except SinkUnavailable as exc:
                    self._failed(str(exc))
                    unwritten.append((ordinal, readings[i:], states))
                    break
                except Exception as one:
                    self._rejected(r, r.key, _reason(one))
                    if not isinstance(one, ReadingRejected) and self._systematic(one):
                        unwritten.append((ordinal, readings[i + 1:], states))
                        break
                else:
                    self._stored([r])
            if unwritten or not states:
                continue
            if not self._opened:
                self._try_open()
                if not self._opened:
                    unwritten.append((ordinal, [], states))
                    continue
            try:
                self.sink.write([], states)
            except SinkUnavailable as exc:
                self._failed(str(exc))
                unwritten.append((ordinal, [], states))
            except Exception as bad:  # the latest copy only: the next one replaces it
                log.error("%s: device state not stored: %s", self.name, _reason(bad))
                if not isinstance(bad, ReadingRejected):
                    self._after_unexpected(bad)
        self._spool(unwritten, why="")
        return not unwritten

    def _after_unexpected(self, exc: Exception) -> None:
        """An exception the sink did not turn into ReadingRejected may have left it in a bad
        state (an open transaction): close it; the next write opens it again."""
        if isinstance(exc, ReadingRejected):
            return
        self._close_sink()
        self._opened = False

    def _systematic(self, exc: Exception) -> bool:
        """Count one more single write failing unexpectedly; True (the sink is then marked
        unavailable) once SYSTEMATIC_AFTER in a row failed the same way."""
        self._after_unexpected(exc)
        reason = _reason(exc)
        if reason == self._streak_reason:
            self._streak += 1
        else:
            self._streak, self._streak_reason = 1, reason
        if self._streak < SYSTEMATIC_AFTER:
            return False
        self._streak = 0  # the next retry gets as many tries again: bad readings get through
        self._failed(f"{SYSTEMATIC_AFTER} writes in a row failed the same way, taken for a fault"
                     f" of the sink: {reason}")
        return True

    def _rejected(self, reading: Reading | str, key: object, reason: str) -> None:
        """Left out for good: counted, one line, kept in the quarantine file."""
        if self._pending is not None:
            self._pending.append(lambda: self._rejected_now(reading, key, reason))
            return
        self._rejected_now(reading, key, reason)

    def _rejected_now(self, reading: Reading | str, key: object, reason: str) -> None:
        with self._counts_lock:
            self.stats.rejected += 1
        try:
            self.quarantine.add(self.name, reading, reason)
        except QuarantineError as exc:
            text = reading if isinstance(reading, str) else repr(reading)
            log.error("%s: reading %s rejected and left out: %s; %s, so here it is: %s",
                      self.name, key, reason, exc, text)
            return
        log.error("%s: reading %s rejected and left out: %s (listed by ravenctl rejected)",
                  self.name, key, reason)

    def _stored(self, readings: list[Reading]) -> None:
        self._streak = 0
        if self._pending is not None:
            self._pending.append(lambda: self._stored_now(readings))
            return
        self._stored_now(readings)

    def _stored_now(self, readings: list[Reading]) -> None:
        self.stats.stored += len(readings)
        by_kind = self.stats.stored_by_kind
        for r in readings:
            by_kind[r.kind.value] = by_kind.get(r.kind.value, 0) + 1
        for callback in self.on_stored:
            callback(self.name, readings)

    def _spool(self, items: Sequence[Item], why: str) -> None:
        items = [item for item in items if item[1] or item[2]]
        if not items:
            return
        try:
            dropped = self.outbox.append_many(_runs(items))
        except OutboxError as exc:
            self._count_outbox_losses()
            if not self._outbox_failed:
                log.error("%s: %s; readings are kept in memory until it works again",
                          self.name, exc)
                self._outbox_failed = True
            self._hold_in_memory(items)
            return
        if self._outbox_failed:
            drops = self._take_memory_drops()
            log.info("%s: outbox writable again%s", self.name,
                     f"; {drops} oldest readings were dropped meanwhile" if drops else "")
            self._outbox_failed = False
        n = sum(len(item[1]) for item in items)
        self._count_outbox_losses()
        with self._counts_lock:
            self.stats.spooled += n
            self.stats.dropped += dropped
        if dropped:
            log.warning("%s: spool full (%d rows); dropped the %d oldest (%d dropped in all)",
                        self.name, self.outbox.max_rows, dropped, self.stats.dropped)
        if why:
            log.debug("%s: spooled %d readings (%s)", self.name, n, why)

    def _hold_in_memory(self, items: Sequence[Item]) -> None:
        """Last resort when even the outbox cannot be written (its disk is full): keep the
        readings in the queue; when it is full, drop its oldest entry to make room, the
        outbox's own policy. Counted (stats.dropped, the metrics' counter) and logged once per
        outage, with the total when the outbox is writable again."""
        if threading.get_ident() == self._thread.ident:
            self._held = True  # the worker pauses before it takes them again
        for item in items:
            self._hold_one_in_memory(item)

    def _hold_one_in_memory(self, item: Item) -> None:
        while True:
            try:
                self._queue.put_nowait(item)
                return
            except queue.Full:
                pass
            with self._queue.mutex:  # a look at the head, without taking it
                head = self._queue.queue[0] if self._queue.queue else None
            if head is not None and head is not _STOP and item[0] < head[0]:
                # Older than the oldest queued (a write that failed): it is the one to drop.
                self._dropped_in_memory(len(item[1]))
                return
            try:
                oldest = self._queue.get_nowait()
            except queue.Empty:
                continue  # the worker took one meanwhile: there is room now
            if oldest is _STOP:  # stopping: keep the request, drop what came last instead
                self._dropped_in_memory(len(item[1]))
                self._requeue_stop()
                return
            self._dropped_in_memory(len(oldest[1]))

    def _requeue_stop(self) -> None:
        while True:
            try:
                self._queue.put_nowait(_STOP)
                return
            except queue.Full:
                with contextlib.suppress(queue.Empty):
                    item = self._queue.get_nowait()
                    if item is not _STOP:  # only one stop request is ever queued
                        self._dropped_in_memory(len(item[1]))

    def _dropped_in_memory(self, n: int) -> None:
        if not n:
            return
        with self._counts_lock:
            first = not self._memory_drops
            self._memory_drops += n
            self.stats.dropped += n
        if first:
            log.error("%s: queue full (%d entries) and outbox unwritable; dropping the oldest"
                      " readings from now on (counted)", self.name, self._queue.maxsize)

    def _take_memory_drops(self) -> int:
        with self._counts_lock:
            n, self._memory_drops = self._memory_drops, 0
        return n

    def _failed(self, error: str) -> None:
        now = time.monotonic()
        if self._outage.failed(error):
            log.error("%s: unavailable: %s (spooling to %s, retrying)", self.name, error,
                      self.outbox.path)
        self._retry_at = now + self._outage.delay

    def _recovered(self) -> None:
        if self._outage.recovered():
            drops = self._take_memory_drops()
            log.info("%s: available again (%d spooled to replay%s)", self.name,
                     len(self.outbox), f"; {drops} oldest dropped meanwhile, the outbox being"
                     " unwritable" if drops else "")
        self._retry_at = 0.0

    def _take_queued(self) -> list[Item]:
        """Everything waiting in the queue, oldest first; the stop request, if among it, is
        noted (``_stopping``) rather than returned."""
        items: list[Item] = []
        while True:
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                return items
            if item is _STOP:
                self._stopping = True
            else:
                items.append(item)

    def _spool_queued(self) -> None:
        self._spool(self._take_queued(), why="stopping, the sink not taking any")

    def _drain_on_stop(self) -> None:
        items = self._take_queued()
        with self._in_hand(items):
            if self.stats.up and not len(self.outbox):
                if items:
                    self._write(items)
            else:
                self._spool(items, why="stopping")
        self._drop_held_at_stop()

    def _drop_held_at_stop(self) -> int:
        """What is still in memory now (the outbox unwritable, the sink down) dies with the
        process: counted as dropped (so the stop line shows it) and named in one line."""
        left = self._take_queued()
        n = sum(len(item[1]) for item in left)
        if not n:
            return 0
        with self._counts_lock:
            self.stats.dropped += n
        log.error("%s: stopping with %d readings held in memory, the sink down and the outbox"
                  " %s unwritable: they are dropped (counted)", self.name, n, self.outbox.path)
        return n


def _reason(exc: BaseException) -> str:
    """What a rejection says: the sink's own words, or the exception's type and text."""
    if isinstance(exc, ReadingRejected | SinkUnavailable):
        return str(exc)
    return f"{type(exc).__name__}: {exc}"


def _merged(items: Sequence[Item]) -> tuple[list[Reading], list[StateItem]]:
    """One write for the sink, in ordinal order."""
    readings: list[Reading] = []
    states: list[StateItem] = []
    for _, r, s in sorted(items, key=lambda item: item[0]):
        readings.extend(r)
        states.extend(s)
    return readings, states


def _runs(items: Sequence[Item]) -> list[tuple[int, list[Reading], list[StateItem]]]:
    """Items as outbox rows: consecutive ordinals share one row (the usual case: a batch the
    worker took from its queue), a gap starts another, so that a spilled batch numbered in
    between still sorts between them."""
    rows: list[tuple[int, list[Reading], list[StateItem]]] = []
    last = None
    for ordinal, readings, states in sorted(items, key=lambda item: item[0]):
        if rows and last is not None and ordinal == last + 1:
            rows[-1][1].extend(readings)
            rows[-1][2].extend(states)
        else:
            rows.append((ordinal, list(readings), list(states)))
        last = ordinal
    return rows
