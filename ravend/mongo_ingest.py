"""ravend-mongo-ingest: readings from the MQTT broker into a MongoDB collection, each exactly once.

Data path: paho's network thread parses each message (``mqtt_payload.parse_reading``) into a
document and queues it; the main thread takes a batch (when it is full, when no message came
for ``QUIET_GAP``, or ``max_batch_delay`` after its oldest message), inserts it, and only then
acknowledges its messages to the broker.

Exactly once: the collection has a unique index on the reading's identity ``(meter_mac, kind,
key_time)`` and a batch is written with an unordered ``insert_many``; a document whose key is
already there fails alone with a duplicate-key error (11000), which means "already stored". That
is an insert-ignore, with the outcome of a ``$setOnInsert`` upsert on the key, and 4 to 5 times
faster on SecantusDB (bench/mongo.py); a batch that failed is simply written again. The first
value of a key is the one kept (``ravend.sinks.conflicts``): when some documents failed as
duplicates, the stored documents of those keys are looked up (one indexed query) and one with
another value (raw, multiplier, divisor) is counted as a conflict and logged once per burst.

Delivery: a persistent session (clean session off, MQTT 3.1.1, QoS 1) under a stable client id,
so the broker keeps what is published while the ingest or MongoDB is away. A message is
acknowledged (PUBACK) only once its batch is stored: paho-mqtt 2.x's ``manual_ack``, and the
same on paho-mqtt 1.6 (Debian 12) through ``mqtt_client`` (1.6 itself acknowledges as soon as
``on_message`` returns). A crash at any point loses nothing: the broker delivers again whatever
was not acknowledged, and the unique index turns what was stored already into a no-op.

MongoDB down: the broker connection is cut at once (the session stays with the broker, which
queues new messages and keeps the unacknowledged ones), what was received is kept in memory and
written with backoff, and the ingest subscribes again once it is stored. SIGTERM: stop taking
messages, store what was received, acknowledge it, disconnect.

Why not a time-series collection: MongoDB cannot put a unique index on one, and the unique key
is what makes replays, redeliveries and several ingests harmless. See ravend-mongo-ingest(8).

This module is the loop (MQTT in, batches out, acknowledgements, retries and counts); MongoDB
itself (the collection, the documents, a write's outcome) is ravend.mongo_store, and the patch
that keeps pymongo's threads asleep is ravend.pymongo_quiet.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
import time
from typing import Any

from ravend.config import Config, ConfigError
from ravend.mongo_store import MongoStore, StoreUnavailable, document
from ravend.runtime.backoff import Backoff
from ravend.runtime.notify import Heartbeat, Notifier
from ravend.runtime.outage import Outage
from ravend.runtime.packages import require
from ravend.runtime.signals import install_signals
from ravend.sinks.conflicts import KeyConflicts
from ravend.sinks.mqtt_payload import PayloadError, parse_reading, parse_reading_topic

# ravend.mqtt_client imports paho at its top, and paho is optional: it is imported where it is
# used, so that ``check`` can tell that it is missing instead of the import failing.

log = logging.getLogger("ravend.mongo_ingest")

#: A batch is written when no message came for this long: a live stream (one message every few
#: seconds) is stored at once, and a broker that waits for our acknowledgements (its in-flight
#: window is full) is not kept waiting. Broker bursts arrive microseconds apart.
QUIET_GAP = 0.002
#: The main loop sleeps at most this long when nothing happens: a message, a lost broker
#: connection and SIGTERM wake it at once, and the watchdog ping and an out-of-date STATUS= are
#: timed; this is only a safety net.
IDLE_WAIT = 60.0
#: STATUS= at most this often.
STATUS_INTERVAL = 5.0
#: SIGTERM: how long to keep trying to store what was received before exiting.
STOP_BUDGET = 10.0
#: A rejected message is logged at most this often (with the count since the last line).
REJECT_LOG_INTERVAL = 60.0


# --- the service ---------------------------------------------------------------------------------


def subscription(config: Config) -> str:
    """The topic filter to subscribe to, with the shared-subscription prefix if any."""
    mc = config.mongo
    base = mc.topic_filter or f"{config.mqtt.topic_prefix}/+/+"
    return f"$share/{mc.share_group}/{base}" if mc.share_group else base


@dataclasses.dataclass(slots=True)
class Item:
    """One received message: the document to store (None: nothing to store, only to
    acknowledge) and what its acknowledgement needs."""

    doc: dict[str, Any] | None
    gen: int  # the connection it came on
    mid: int
    qos: int
    at: float  # monotonic arrival time


@dataclasses.dataclass
class IngestStats:
    stored: int = 0  # documents inserted
    duplicates: int = 0  # readings that were stored already
    conflicting: int = 0  # readings refused: their key was stored with another value
    rejected: int = 0  # messages on reading topics that are not readings
    skipped: int = 0  # messages on other topics, and empty (retained-clearing) ones
    batches: int = 0
    up: bool = False
    last_error: str = ""  # why the broker or MongoDB is not reachable; "" while storing


class MongoIngest:
    """Main loop; ``run`` returns the exit status. ``request_stop`` may come from any thread."""

    def __init__(self, config: Config, *, store: MongoStore | None = None,
                 notifier: Any = None) -> None:
        from ravend.mqtt_client import MANUAL_ACK  # paho: see the note at the imports

        self.config = config
        self.cfg = config.mongo
        self.store = store if store is not None else MongoStore(config.mongo)
        self.notifier = notifier if notifier is not None else Notifier()
        self.topic = subscription(config)
        self.stats = IngestStats()
        self.conflicts = KeyConflicts("mongo", log)
        if not MANUAL_ACK:
            raise ConfigError("this paho-mqtt cannot hold acknowledgements back (1.6 or 2.x"
                              " can)")
        # Messages received and not yet stored, at most: a batch fills while one is written.
        self.limit = 2 * self.cfg.batch_size
        self._stop = threading.Event()
        #: Set while a connection is up and subscribed (tests, status).
        self.subscribed = threading.Event()
        self._cond = threading.Condition()
        self._pending: list[Item] = []
        self._writing = 0
        self._conn: Any = None
        self._gen = 0
        self._live_gen = 0  # the connection whose messages may be acknowledged; 0: none
        self._stopping = False
        self._subscribing = False
        self._had_session = False
        # Retry pauses double from [mongo] retry_min to retry_max ([device]'s when unset).
        retry = config.retry("mongo")
        self._outage = Outage(self.stats, Backoff(retry.minimum, retry.maximum))
        self._reject_logged_at = -REJECT_LOG_INTERVAL
        self._rejects_unlogged = 0

    def request_stop(self, *_: object) -> None:
        self._stop.set()
        self._wake()

    def _wake(self, *_: object) -> None:
        """Wake the main loop (it waits on the condition); from any thread or a signal handler
        (the condition's lock is reentrant)."""
        with self._cond:
            self._cond.notify_all()

    def install_signals(self) -> None:
        install_signals(self.request_stop)

    # --- paho's network thread ----------------------------------------------------------------

    def _decode(self, msg: Any) -> dict[str, Any] | None:
        """The document of a reading message; None for a message that holds none."""
        try:
            topic = msg.topic
        except UnicodeDecodeError:
            self.stats.skipped += 1
            return None
        head = topic.rsplit("/", 2)[0]
        where = parse_reading_topic(head, topic) if topic.count("/") >= 2 else None
        if where is None or not msg.payload:
            self.stats.skipped += 1  # status, device state, discovery; a cleared retained one
            return None
        try:
            reading = parse_reading(bytes(msg.payload))
            if (reading.meter_mac, reading.kind) != where:
                raise PayloadError(f"the topic names {where[0]} {where[1].value}, the payload"
                                   f" {reading.meter_mac} {reading.kind.value}")
            return document(reading)
        except (PayloadError, ValueError, ArithmeticError) as exc:  # decimal128's range too
            self._rejected(topic, str(exc) or type(exc).__name__)
            return None

    def _rejected(self, topic: str, why: str) -> None:
        self.stats.rejected += 1
        self._rejects_unlogged += 1
        now = time.monotonic()
        if now - self._reject_logged_at >= REJECT_LOG_INTERVAL:
            more = self._rejects_unlogged - 1
            log.warning("message on %s is not a reading, skipped: %s%s", topic, why,
                        f" ({more} more since the last such line)" if more else "")
            self._reject_logged_at = now
            self._rejects_unlogged = 0

    def _on_message(self, msg: Any, gen: int) -> None:
        if self._stopping:
            return  # never acknowledged: the broker delivers it again after the restart
        try:
            doc = self._decode(msg)
        except Exception:  # a bug must not end paho's thread; the message is skipped
            log.exception("cannot handle a message on %r", getattr(msg, "topic", "?"))
            doc = None
        now = time.monotonic()
        with self._cond:
            self._pending.append(Item(doc, gen, int(msg.mid), int(msg.qos), now))
            waiting = len(self._pending)
            if waiting == 1 or waiting >= self.cfg.batch_size:
                self._cond.notify_all()
            # Flow control: paho's thread reads no more from the broker while two batches wait;
            # not while the main thread waits for the SUBACK, which a resumed session's queued
            # messages come before (as many as the broker's in-flight window lets through).
            while (len(self._pending) + self._writing >= self.limit
                   and gen == self._live_gen and not self._subscribing):
                self._cond.wait()

    # --- main thread ----------------------------------------------------------------------------

    def run(self) -> int:
        from ravend.mqtt_client import PAHO_VERSION

        log.info("ravend-mongo-ingest started (%s:%d %s as %s, paho-mqtt %s → %s)",
                 self.config.mqtt.host, self.config.mqtt.port, self.topic, self._client_id(),
                 PAHO_VERSION, self.store.description)
        self.notifier.notify("READY=1\nSTATUS=starting")
        beat = Heartbeat(self.notifier, STATUS_INTERVAL)
        resume_at = 0.0
        while not self._stop.is_set():
            now = time.monotonic()
            beat.beat(now, self.status_line)
            # No tick: wake for the watchdog's next ping and for a STATUS= that is out of date.
            wait = beat.wait(now, IDLE_WAIT)
            if self.status_line() != beat.status:
                wait = min(wait, beat.until_status(now))
            wait = max(0.0, wait)
            if now < resume_at:  # after a failure; the loop keeps pinging the watchdog
                self._stop.wait(min(resume_at - now, wait))
            elif not self._step(wait):
                self.notifier.notify("STATUS=" + self.status_line())
                resume_at = time.monotonic() + self._outage.delay
        return self._shutdown()

    def _client_id(self) -> str:
        from ravend.mqtt_client import expand_client_id

        return expand_client_id(self.cfg.client_id)

    def _step(self, wait: float = IDLE_WAIT) -> bool:
        """One round, waiting up to ``wait`` for messages; False after a failure (the caller
        waits before the next)."""
        if not self.store.is_open:
            try:
                self.store.open()
            except StoreUnavailable as exc:
                self._drop_connection()
                return self._failed(f"MongoDB {self.store.description}: {exc}")
        conn = self._conn
        if conn is None or not conn.connected:
            if self._waiting():  # received on a connection that is gone: store them first
                batch = self._take(wait=0)
                return self._store(batch) if batch else True
            self._drop_connection()
            if not self._connect():
                return False
        batch = self._take(wait=wait)
        return self._store(batch) if batch else True

    def _waiting(self) -> int:
        with self._cond:
            return len(self._pending)

    def _connect(self) -> bool:
        from ravend.mqtt_client import Connection, MqttError, endpoint_from_config

        mq = self.config.mqtt
        self._gen += 1
        gen = self._gen
        try:
            endpoint = endpoint_from_config(mq, client_id=self.cfg.client_id)
            conn = Connection(endpoint, clean_session=False, manual_ack=True,
                              on_message=lambda msg: self._on_message(msg, gen),
                              on_lost=self._wake)
        except (ConfigError, MqttError) as exc:
            return self._failed(f"broker: {exc}")
        with self._cond:
            self._live_gen = gen
        self._conn = conn
        try:
            self._subscribing = True
            conn.connect(mq.publish_timeout)
            # Again on a resumed session too: the filter may have changed since.
            granted = conn.subscribe([(self.topic, 1)], mq.publish_timeout)
            if not granted or granted[0] >= 128:
                raise MqttError(f"the broker refused the subscription to {self.topic}"
                                " (not allowed by its ACL?)")
        except MqttError as exc:
            self._drop_connection()
            return self._failed(f"broker: {exc}")
        finally:
            with self._cond:
                self._subscribing = False
                self._cond.notify_all()
        if conn.session_present:
            log.info("broker %s: session resumed, subscribed to %s", endpoint, self.topic)
        elif self._had_session:
            log.warning("broker %s: it had no session for %s any more; messages published"
                        " while it was away may be missing (broker restarted without"
                        " persistence?)", endpoint, endpoint.client_id)
        else:
            log.info("broker %s: new session, subscribed to %s", endpoint, self.topic)
        self._had_session = True
        self.subscribed.set()
        return True

    def _drop_connection(self) -> None:
        """Cut the broker connection (nothing more is acknowledged on it), release
        ``on_message`` if it waits, and end paho's thread."""
        conn, self._conn = self._conn, None
        self.subscribed.clear()
        if conn is None:
            return
        conn.abort()
        with self._cond:
            self._live_gen = 0
            self._cond.notify_all()
        conn.close(clean=False)

    def _take(self, wait: float) -> list[Item]:
        """The next batch: up to batch_size, once full, quiet for QUIET_GAP, or
        max_batch_delay after its oldest message; [] if nothing came within ``wait``."""
        size = self.cfg.batch_size
        with self._cond:
            conn = self._conn
            # Checked under the lock that request_stop and the lost connection's callback take
            # to wake us: neither can slip in between the check and the wait.
            if (not self._pending and wait > 0 and not self._stop.is_set()
                    and conn is not None and conn.connected):
                self._cond.wait(wait)
            if not self._pending:
                return []
            while len(self._pending) < size and wait > 0:
                if self._stop.is_set() or conn is None or not conn.connected:
                    break
                now = time.monotonic()
                until = min(self._pending[0].at + self.cfg.max_batch_delay,
                            self._pending[-1].at + QUIET_GAP)
                if now >= until:
                    break
                self._cond.wait(until - now)
            batch = self._pending[:size]
            del self._pending[:size]
            self._writing = len(batch)
            return batch

    def _store(self, batch: list[Item]) -> bool:
        docs = [it.doc for it in batch if it.doc is not None]
        started = time.monotonic()
        try:
            outcome = self.store.write(docs)
        except StoreUnavailable as exc:
            # Stop receiving and acknowledging until MongoDB is back; keep what we have.
            self._drop_connection()
            with self._cond:
                self._pending[:0] = batch
                self._writing = 0
                self._cond.notify_all()
            return self._failed(f"MongoDB {self.store.description}: {exc}")
        for index, why in outcome.refused:
            log.error("MongoDB refused a document, skipped (%s): %s", why,
                      {k: v for k, v in docs[index].items() if k != "_id"} if 0 <= index
                      < len(docs) else "?")
        self._ack(batch)
        with self._cond:
            self._writing = 0
            self._cond.notify_all()
        if log.isEnabledFor(logging.DEBUG):
            log.debug("batch of %d: %d stored, %d already stored in %.1f ms (waited %.1f ms)",
                      len(batch), outcome.inserted, outcome.duplicates,
                      (time.monotonic() - started) * 1000, (started - batch[0].at) * 1000)
        self.stats.stored += outcome.inserted
        self.stats.duplicates += outcome.duplicates
        for key, kept, refused in outcome.conflicts:
            self.conflicts.refuse(key, kept, refused)
        self.conflicts.batch_done(len(outcome.conflicts))
        self.stats.conflicting = self.conflicts.count
        self.stats.rejected += len(outcome.refused)
        self.stats.batches += 1
        if self._outage.recovered():
            log.info("storing again (%s)", self.store.description)
        return True

    def _ack(self, batch: list[Item]) -> None:
        """Acknowledge, in order, what came on the connection that is still up. Messages of a
        lost connection cannot be: the broker delivers them again."""
        conn = self._conn
        if conn is None:
            return
        live = self._live_gen
        for it in batch:
            if it.gen == live and it.qos:
                conn.ack(it.mid, it.qos)

    def _failed(self, error: str) -> bool:
        if self._outage.failed(error):
            log.error("%s (retrying; %d received messages kept)", error, self._waiting())
        return False

    def status_line(self) -> str:
        s = self.stats
        parts = [f"{s.stored} stored", f"{s.duplicates} already stored"]
        if s.conflicting:
            parts.append(f"{s.conflicting} refused (key stored with another value)")
        if s.rejected:
            parts.append(f"{s.rejected} rejected")
        waiting = self._waiting()
        if waiting:
            parts.append(f"{waiting} waiting")
        if s.last_error:
            parts.append(f"waiting: {s.last_error}")
        return "; ".join(parts)

    def _shutdown(self) -> int:
        """SIGTERM: take no more messages, store what was received, acknowledge it,
        disconnect."""
        self.notifier.notify("STOPPING=1")
        with self._cond:
            self._stopping = True
        deadline = time.monotonic() + STOP_BUDGET
        while self._waiting():
            batch = self._take(wait=0)
            if not self._store(batch):
                if time.monotonic() > deadline:
                    break
                time.sleep(min(self._outage.delay, 1.0))
        if self._conn is not None:
            self._close_clean()
        left = [it for it in self._pending if it.doc is not None]
        self.store.close()
        if left:
            log.warning("%d received readings not stored at stop (%s); they were not"
                        " acknowledged: the broker delivers them again", len(left),
                        self.stats.last_error or "MongoDB unavailable")
        log.info("ravend-mongo-ingest stopped (%d stored, %d already stored, %d rejected,"
                 " %d refused as conflicting)", self.stats.stored, self.stats.duplicates,
                 self.stats.rejected, self.stats.conflicting)
        return 0

    def _close_clean(self) -> None:
        """DISCONNECT after the acknowledgements (paho sends its packets in order)."""
        conn, self._conn = self._conn, None
        self.subscribed.clear()
        with self._cond:
            self._live_gen = 0
            self._cond.notify_all()
        conn.close(clean=True)


def check(config: Config) -> MongoStore:
    """What the CLI checks before it starts (ConfigError): the drivers and the URI. Returns
    the store."""
    require("pymongo", "python3-pymongo")
    require("paho.mqtt.client", "python3-paho-mqtt")
    from ravend.mqtt_client import MANUAL_ACK, PAHO_VERSION

    if not MANUAL_ACK:
        raise ConfigError(f"paho-mqtt {PAHO_VERSION} cannot hold acknowledgements back"
                          " (1.6 and 2.x can)")
    store = MongoStore(config.mongo)
    store.check()
    return store
