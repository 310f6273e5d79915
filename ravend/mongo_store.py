"""MongoDB for ravend-mongo-ingest: the collection, the reading's document, and the write outcome.

The twin of ravend.mqtt_client: everything that knows pymongo and BSON is here, and the ingest
(ravend.mongo_ingest) only moves batches. pymongo and bson are imported where they are used, not
at the top: the package is optional, and ``ravend-mongo-ingest`` must be able to say that it is
missing (ravend.mongo_ingest.check) instead of failing on import.

Its part in the ingest's exactly-once delivery (see ravend.mongo_ingest): a unique index on
``(meter_mac, kind, key_time)``, and a write whose outcome tells apart the documents it inserted,
those stored already with the same value (duplicates) and those stored with another (conflicts).

Works with pymongo 3.11 (Debian 12) and 4.x.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import warnings
from collections.abc import Sequence
from decimal import Decimal
from typing import Any
from urllib.parse import parse_qsl

from ravend.config import ConfigError, MongoConfig
from ravend.config_secrets import read_secret, redact_uri, scrub, uri_secrets
from ravend.config_values import mongo_uri
from ravend.protocol.model import Reading
from ravend.pymongo_quiet import quiet_pymongo
from ravend.sinks.conflicts import Key, Value

#: Name of the unique index on the reading's identity.
INDEX_NAME = "reading_key"
INDEX_KEYS = [("meter_mac", 1), ("kind", 1), ("key_time", 1)]
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


def short_error(exc: BaseException) -> str:
    """pymongo's messages carry the whole topology description: keep the first part."""
    text = str(exc) or type(exc).__name__
    for cut in (", Timeout:", " (configured timeouts", ", full error:"):
        text = text.split(cut)[0]
    return text[:300]


def has_option(name: str) -> bool:
    """Whether this pymongo knows a MongoClient option (serverMonitoringMode: 4.7+)."""
    from pymongo import common

    return name.lower() in getattr(common, "VALIDATORS", {})


@dataclasses.dataclass
class WriteOutcome:
    """What one ``MongoStore.write`` did with its batch, for the ingest's counts and logs."""

    inserted: int = 0
    duplicates: int = 0  # stored already with the same value
    refused: list[tuple[int, str]] = dataclasses.field(default_factory=list)  # (index, why)
    #: stored already with another value: (key, kept, refused)
    conflicts: list[tuple[Key, Value, Value]] = dataclasses.field(default_factory=list)


def value_of_doc(doc: dict[str, Any]) -> Value:
    """The value a stored document holds, as ``ravend.sinks.conflicts`` compares them."""
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
        if "servermonitoringmode" not in given and has_option("serverMonitoringMode"):
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
                              f" {scrub(short_error(exc), uri_secrets(uri))}") from None

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
            raise StoreUnavailable(short_error(exc)) from exc
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
            raise StoreUnavailable(short_error(exc)) from exc
        try:
            self._sort_duplicates(duplicates, outcome)
        except (PyMongoError, OSError) as exc:
            self.close()
            raise StoreUnavailable(short_error(exc)) from exc
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
