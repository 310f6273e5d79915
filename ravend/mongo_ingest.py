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
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import logging
import threading
import time
import warnings
from collections.abc import Sequence
from decimal import Decimal
from typing import Any
from urllib.parse import parse_qsl

from ravend.config import (
    Config,
    ConfigError,
    MongoConfig,
    read_secret,
    redact_uri,
    scrub,
    uri_secrets,
)
from ravend.protocol.model import Reading
from ravend.runtime.backoff import Backoff
from ravend.runtime.notify import Notifier
from ravend.runtime.signals import install_signals
from ravend.sinks.conflicts import Key, KeyConflicts, Value
from ravend.sinks.mqtt_payload import PayloadError, parse_reading, parse_reading_topic

log = logging.getLogger("ravend.mongo_ingest")

#: Name of the unique index on the reading's identity.
INDEX_NAME = "reading_key"
INDEX_KEYS = [("meter_mac", 1), ("kind", 1), ("key_time", 1)]
#: A batch is written when no message came for this long: a live stream (one message every few
#: seconds) is stored at once, and a broker that waits for our acknowledgements (its in-flight
#: window is full) is not kept waiting. Broker bursts arrive microseconds apart.
QUIET_GAP = 0.002
#: The main loop sleeps at most this long when nothing happens: a message, a lost broker
#: connection and SIGTERM wake it at once, and the watchdog ping and an out-of-date STATUS= are
#: timed; this is only a safety net.
IDLE_WAIT = 60.0
#: pymongo's kill-cursors thread runs this often here instead of every second (see
#: ``quiet_pymongo``); the ingest leaves no cursor open for it to kill.
KILL_CURSORS_INTERVAL = 60.0
#: pymongo 3.x's streaming server monitor looks this often whether its check was cancelled
#: (pymongo: every 0.5 s); pymongo 4.7+ is told to poll instead (serverMonitoringMode=poll).
MONITOR_CANCEL_POLL = 5.0
#: STATUS= at most this often.
STATUS_INTERVAL = 5.0
#: SIGTERM: how long to keep trying to store what was received before exiting.
STOP_BUDGET = 10.0
#: A rejected message is logged at most this often (with the count since the last line).
REJECT_LOG_INTERVAL = 60.0
#: Driver timeouts unless the URI sets its own: a MongoDB that is down is noticed within
#: seconds, and a write never blocks the loop (and its watchdog pings) for long.
DRIVER_TIMEOUTS_MS = {"serverSelectionTimeoutMS": 5000, "connectTimeoutMS": 5000,
                      "socketTimeoutMS": 20000}
#: Duplicate key: the reading is stored already.
DUPLICATE_KEY = 11000
#: Duplicates of one meter and kind spread over at most this many seconds are looked up in one
#: range query (a redelivered backlog: contiguous times); wider, one look-up per key.
LOOKUP_SPAN_S = 6 * 3600
#: Write errors that no retry can fix (the collection's validator refuses the document).
REFUSED_CODES = frozenset({121})
_INT64 = (-(2 ** 63), 2 ** 63 - 1)
_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)


class StoreUnavailable(Exception):
    """MongoDB cannot take the batch now (down, refused the login, timed out): retry later."""


# --- documents -----------------------------------------------------------------------------------


def bson_date(unix: float) -> dt.datetime:
    """UTC datetime to the millisecond (a BSON date's precision), rounded, not truncated, so
    that ``...20.512`` parsed as a float stays .512."""
    return _EPOCH + dt.timedelta(milliseconds=round(unix * 1000))


def document(r: Reading) -> dict[str, Any]:
    """The MongoDB document of a reading; ValueError when BSON cannot hold it exactly."""
    from bson.decimal128 import Decimal128, create_decimal128_context
    from bson.int64 import Int64

    for name in ("raw", "multiplier", "divisor"):
        number = getattr(r, name)
        if not _INT64[0] <= number <= _INT64[1]:
            raise ValueError(f"{name}: {number} does not fit a 64-bit integer")
    for text in (r.meter_mac, r.device_mac, r.unit):
        text.encode("utf-8")  # a lone surrogate from JSON cannot be BSON: UnicodeEncodeError
    exact = r.value
    if len(exact.as_tuple().digits) > 34:  # decimal128 holds 34 significant digits
        exact = create_decimal128_context().create_decimal(exact)
    return {
        "meter_mac": r.meter_mac,
        "device_mac": r.device_mac or None,
        "kind": r.kind.value,
        "key_time": bson_date(r.key_time),
        "meter_time": None if r.meter_time is None else bson_date(r.meter_time),
        "received_at": bson_date(r.received_at),
        "value": float(r.value),
        "value_exact": Decimal128(exact),
        "unit": r.unit,
        "raw": Int64(r.raw),
        "multiplier": r.multiplier,
        "divisor": r.divisor,
        "scale": Decimal128(r.scale),
        "clock_flag": r.clock_flag,
    }


def reading_of(doc: dict[str, Any]) -> tuple[str, str, int]:
    """The key (meter_mac, kind, key_time in Unix seconds) of a stored document."""
    when = doc["key_time"]
    if when.tzinfo is None:
        when = when.replace(tzinfo=dt.UTC)
    return doc["meter_mac"], doc["kind"], int((when - _EPOCH).total_seconds())


def decimal_of(value: Any) -> Decimal:
    """A stored value_exact as a Decimal."""
    return value.to_decimal() if hasattr(value, "to_decimal") else Decimal(str(value))


# --- the store -----------------------------------------------------------------------------------


def uri_options(uri: str) -> set[str]:
    """Lower-case names of the options a MongoDB URI sets."""
    return {k.lower() for k, _ in parse_qsl(uri.partition("?")[2], keep_blank_values=True)}



def _short(exc: BaseException) -> str:
    """pymongo's messages carry the whole topology description: keep the first part."""
    text = str(exc) or type(exc).__name__
    for cut in (", Timeout:", " (configured timeouts", ", full error:"):
        text = text.split(cut)[0]
    return text[:300]


def _has_option(name: str) -> bool:
    """Whether this pymongo knows a MongoClient option (serverMonitoringMode: 4.7+)."""
    from pymongo import common

    return name.lower() in getattr(common, "VALIDATORS", {})


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
        from pymongo import network  # pymongo 3.x; 4.x has network_layer and the option

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

    class EventDrivenExecutor(base):  # type: ignore[misc,valid-type]
        _ravend_event_driven = True

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
            stop = getattr(self, should_stop)
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

    periodic_executor.PeriodicExecutor = EventDrivenExecutor
    return True


@dataclasses.dataclass
class WriteOutcome:
    inserted: int = 0
    duplicates: int = 0  # stored already with the same value
    refused: list[tuple[int, str]] = dataclasses.field(default_factory=list)  # (index, why)
    #: stored already with another value: (key, kept, refused)
    conflicts: list[tuple[Key, Value, Value]] = dataclasses.field(default_factory=list)


def value_of_doc(doc: dict[str, Any]) -> Value:
    return int(doc["raw"]), int(doc["multiplier"]), int(doc["divisor"])


class MongoStore:
    """One collection with the unique reading index; pymongo 3.11 (Debian 12) and 4.x."""

    def __init__(self, cfg: MongoConfig, *, uri: str | None = None) -> None:
        self.cfg = cfg
        self._uri = uri
        self._client: Any = None
        self._collection: Any = None
        self.description = self._describe(uri or (f"{cfg.uri_file}:" if cfg.uri_file
                                                  else cfg.uri))

    def _describe(self, uri: str) -> str:
        return f"{redact_uri(uri).rstrip('/')}/{self.cfg.database}.{self.cfg.collection}"

    def __repr__(self) -> str:
        return f"<MongoStore {self.description} {'open' if self.is_open else 'closed'}>"

    def uri(self) -> str:
        """The URI: [mongo] uri, or the first line of uri_file, read now (ConfigError)."""
        if self._uri is not None:
            return self._uri
        if self.cfg.uri_file:
            from ravend.config import mongo_uri

            text = read_secret(self.cfg.uri_file, "[mongo] uri_file")
            try:
                uri = mongo_uri(text)
            except ValueError as exc:
                raise ConfigError(f"[mongo] uri_file {self.cfg.uri_file}: expected {exc}"
                                  ) from None
            self.description = self._describe(uri)
            return uri
        return self.cfg.uri

    def client_options(self, uri: str) -> dict[str, Any]:
        given = uri_options(uri)
        opts: dict[str, Any] = {"appname": "ravend-mongo-ingest"}
        opts.update({k: v for k, v in DRIVER_TIMEOUTS_MS.items() if k.lower() not in given})
        if "servermonitoringmode" not in given and _has_option("serverMonitoringMode"):
            # A streaming monitor (MongoDB 4.4+) waits for the server's next hello in 0.5 s
            # steps; polling asks every heartbeatFrequencyMS (10 s) and blocks in between.
            opts["serverMonitoringMode"] = "poll"
        return opts

    def check(self) -> None:
        """Refuse a URI the driver cannot use (ConfigError), without connecting. SRV URIs need
        DNS to be checked, which may be down at boot: the service checks those when it
        connects."""
        import pymongo
        from pymongo.errors import ConfigurationError

        uri = self.uri()
        if uri.startswith("mongodb+srv://"):
            return
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("error")  # pymongo 3 only warns about a bad option value
                pymongo.MongoClient(uri, connect=False, **self.client_options(uri)).close()
        except (ConfigurationError, ValueError, TypeError, UserWarning) as exc:
            raise ConfigError(f"[mongo] uri {redact_uri(uri)}:"
                              f" {scrub(_short(exc), uri_secrets(uri))}") from None

    @property
    def is_open(self) -> bool:
        return self._collection is not None

    def open(self) -> None:
        """Connect and make sure the unique index is there; StoreUnavailable if not now."""
        import pymongo
        from pymongo.errors import PyMongoError
        from pymongo.write_concern import WriteConcern

        if self.is_open:
            return
        try:
            uri = self.uri()
        except ConfigError as exc:
            raise StoreUnavailable(str(exc)) from None
        quiet_pymongo()
        try:
            self._client = pymongo.MongoClient(uri, **self.client_options(uri))
            db = self._client[self.cfg.database]
            # Acknowledged only once journaled, unless the URI says otherwise (w=majority ...):
            # the broker forgets a message once we acknowledge it, so the write must last.
            given = uri_options(uri)
            wc = None if given & {"w", "journal", "wtimeoutms"} else WriteConcern(j=True)
            collection = db.get_collection(self.cfg.collection, write_concern=wc)
            self._ensure_index(collection)
        except (PyMongoError, OSError, ValueError, TypeError) as exc:
            self.close()
            raise StoreUnavailable(_short(exc)) from exc
        self._collection = collection

    @staticmethod
    def _ensure_index(collection: Any) -> None:
        """Create the unique index unless it is there. Looked up first: a createIndexes is a
        DDL operation that may wait for the collection behind other clients' writes."""
        for index in collection.list_indexes():
            if index.get("name") != INDEX_NAME:
                continue
            keys = [(k, int(v)) for k, v in index["key"].items()]
            if keys != INDEX_KEYS or not index.get("unique"):
                raise ValueError(f"{collection.full_name} has an index {INDEX_NAME} that is not"
                                 f" unique on {', '.join(k for k, _ in INDEX_KEYS)}: drop it")
            return
        collection.create_index(INDEX_KEYS, unique=True, name=INDEX_NAME)

    def write(self, docs: Sequence[dict[str, Any]]) -> WriteOutcome:
        """Insert every document not stored yet. The documents get an ``_id`` the first time,
        which they keep, so writing the same batch again after a failure is harmless."""
        from pymongo.errors import BulkWriteError, PyMongoError

        if not docs:
            return WriteOutcome()
        self.open()
        try:
            result = self._collection.insert_many(docs, ordered=False)
            return WriteOutcome(inserted=len(result.inserted_ids))
        except BulkWriteError as exc:
            details = exc.details or {}
            outcome = WriteOutcome(inserted=int(details.get("nInserted", 0)))
            retry = []
            duplicates: list[dict[str, Any]] = []
            for error in details.get("writeErrors", []):
                code = error.get("code")
                index = int(error.get("index", -1))
                if code == DUPLICATE_KEY and 0 <= index < len(docs):
                    duplicates.append(docs[index])
                elif code == DUPLICATE_KEY:
                    outcome.duplicates += 1
                elif code in REFUSED_CODES:
                    outcome.refused.append((int(error.get("index", -1)),
                                            str(error.get("errmsg", code))))
                else:
                    retry.append(error)
            concern = details.get("writeConcernErrors") or []
            if retry or concern:
                first = (retry or concern)[0]
                self.close()
                raise StoreUnavailable(f"write failed: {first.get('errmsg', first)}") from None
        except (PyMongoError, OSError) as exc:
            self.close()
            raise StoreUnavailable(_short(exc)) from exc
        try:
            self._sort_duplicates(duplicates, outcome)
        except (PyMongoError, OSError) as exc:
            self.close()
            raise StoreUnavailable(_short(exc)) from exc
        return outcome

    def _sort_duplicates(self, duplicates: list[dict[str, Any]], outcome: WriteOutcome) -> None:
        """Same key and same value (a redelivery): a duplicate; another value: a conflict."""
        if not duplicates:
            return
        stored = self._stored_values(duplicates)
        for doc in duplicates:
            key = reading_of(doc)
            kept = stored.get(key)
            if kept is not None and kept != value_of_doc(doc):
                outcome.conflicts.append((key, kept, value_of_doc(doc)))
            else:
                outcome.duplicates += 1

    def _stored_values(self, docs: list[dict[str, Any]]) -> dict[Key, Value]:
        """The stored values of those documents' keys. Per meter and kind, one query on the
        unique index: equality on both and a key-time range (what a redelivered backlog
        needs), or one look-up per key when the times are far apart. ``$or`` and ``$in`` of
        many keys would be one query too, but SecantusDB answers them by a scan."""
        fields = {"_id": 0, "meter_mac": 1, "kind": 1, "key_time": 1, "raw": 1,
                  "multiplier": 1, "divisor": 1}
        groups: dict[tuple[str, str], list[dict[str, Any]]] = {}
        for d in docs:
            groups.setdefault((d["meter_mac"], d["kind"]), []).append(d)
        found: list[dict[str, Any]] = []
        for (meter, kind), group in groups.items():
            times = [d["key_time"] for d in group]
            first, last = min(times), max(times)
            if (last - first).total_seconds() <= LOOKUP_SPAN_S:
                found += self._collection.find({"meter_mac": meter, "kind": kind,
                                                "key_time": {"$gte": first, "$lte": last}},
                                               fields)
            else:
                for when in times:
                    one = self._collection.find_one(
                        {"meter_mac": meter, "kind": kind, "key_time": when}, fields)
                    if one is not None:
                        found.append(one)
        return {reading_of(d): value_of_doc(d) for d in found}

    def close(self) -> None:
        client, self._client, self._collection = self._client, None, None
        if client is not None:
            with contextlib.suppress(Exception):
                client.close()


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


class MongoIngest:
    """Main loop; ``run`` returns the exit status. ``request_stop`` may come from any thread."""

    def __init__(self, config: Config, *, store: MongoStore | None = None,
                 notifier: Any = None) -> None:
        from ravend.mqtt_client import MANUAL_ACK

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
        self._backoff = Backoff(retry.minimum, retry.maximum)
        self._last_error = ""
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
        watchdog = self.notifier.watchdog_interval()
        last_ping = last_status = resume_at = 0.0
        status = ""
        while not self._stop.is_set():
            now = time.monotonic()
            if watchdog is not None and now - last_ping >= watchdog:
                self.notifier.notify("WATCHDOG=1")
                last_ping = now
            if now - last_status >= STATUS_INTERVAL:
                status = self.status_line()
                self.notifier.notify("STATUS=" + status)
                last_status = now
            # No tick: wake for the watchdog's next ping and for a STATUS= that is out of date.
            wait = IDLE_WAIT
            if watchdog is not None:
                wait = min(wait, last_ping + watchdog - now)
            if self.status_line() != status:
                wait = min(wait, last_status + STATUS_INTERVAL - now)
            wait = max(0.0, wait)
            if now < resume_at:  # after a failure; the loop keeps pinging the watchdog
                self._stop.wait(min(resume_at - now, wait))
            elif not self._step(wait):
                self.notifier.notify("STATUS=" + self.status_line())
                resume_at = time.monotonic() + self._backoff.delay
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
        if not self.stats.up:
            if self._last_error:
                log.info("storing again (%s)", self.store.description)
            self.stats.up = True
            self._last_error = ""
            self._backoff.reset()
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
        if self.stats.up or error != self._last_error:
            log.error("%s (retrying; %d received messages kept)", error, self._waiting())
        else:
            self._backoff.longer()  # the same failure again: wait longer
        self.stats.up = False
        self._last_error = error
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
        if self._last_error:
            parts.append(f"waiting: {self._last_error}")
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
                time.sleep(min(self._backoff.delay, 1.0))
        if self._conn is not None:
            self._close_clean()
        left = [it for it in self._pending if it.doc is not None]
        self.store.close()
        if left:
            log.warning("%d received readings not stored at stop (%s); they were not"
                        " acknowledged: the broker delivers them again", len(left),
                        self._last_error or "MongoDB unavailable")
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
    try:
        import pymongo  # noqa: F401
    except ImportError:
        raise ConfigError("python3-pymongo is not installed (apt install python3-pymongo)"
                          ) from None
    try:
        import paho.mqtt.client  # noqa: F401
    except ImportError:
        raise ConfigError("python3-paho-mqtt is not installed"
                          " (apt install python3-paho-mqtt)") from None
    from ravend.mqtt_client import MANUAL_ACK, PAHO_VERSION

    if not MANUAL_ACK:
        raise ConfigError(f"paho-mqtt {PAHO_VERSION} cannot hold acknowledgements back"
                          " (1.6 and 2.x can)")
    store = MongoStore(config.mongo)
    store.check()
    return store
