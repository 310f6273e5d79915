"""ravend-repeater: publish the rows of the SQL store to MQTT, resuming exactly where it stopped.

The store's ``readings`` table has an ever-growing integer ``id``. The repeater keeps one number,
the watermark: the highest id the broker has acknowledged, in a small file written atomically
(write, fsync, rename, fsync the directory). Each round reads the rows after the watermark (one
batch, in id order), publishes them through the MQTT sink (same topics, payloads, discovery and
availability as ravend's own MQTT sink) and moves the watermark only once the broker has
acknowledged every message of the batch. A crash, kill -9 or broker outage at any point therefore
repeats at most one batch (same keys, same values) and never skips a row.

Idle on SQLite (Linux), it blocks until ravend writes the store: an inotify watch on the
database's directory wakes it when the database or its WAL is written (``StoreWatch``), so it
costs nothing between readings and publishes a new row at once (looking again shortly after
an event that showed nothing yet: ``RECHECK_MAX``); it still looks on its own once a minute
(``WATCH_FALLBACK``). Without the watch (MySQL, or inotify unavailable) it looks for new
rows after 50 ms, then twice as long each time up to ``poll_interval``: no busy loop, and a
burst is picked up within 50 ms. For SQLite, ``PRAGMA data_version`` tells whether another
connection committed anything since the last look, so an idle look costs no table read.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import os
import select
import sqlite3
import struct
import threading
import time
from collections.abc import Sequence
from decimal import Decimal
from pathlib import Path
from typing import Any, Protocol

from ravend.calplug_history import HISTORY_DEVICE
from ravend.config import Config, ConfigError
from ravend.db import mysql as mysql_db
from ravend.db import sqlite as sqlite_db
from ravend.plural import plural
from ravend.protocol.model import Kind, Reading, scale
from ravend.runtime.backoff import Backoff
from ravend.runtime.notify import Notifier
from ravend.runtime.signals import install_signals
from ravend.sinks.base import SinkUnavailable, StateItem

log = logging.getLogger("ravend.repeater")

#: First idle pause; doubles up to [repeater] poll_interval.
IDLE_MIN = 0.05
#: STATUS= at most this often.
STATUS_INTERVAL = 5.0
#: With a StoreWatch, the longest idle pause: a look now and then even if no event came.
WATCH_FALLBACK = 60.0
#: After a write event, look again after 50 ms, 100, 200, 400 ms unless rows turned up: SQLite
#: writes the WAL (the event) before it publishes the commit in the WAL index (shared memory,
#: no event), so a look right after the event can miss a transaction that no event follows.
RECHECK_MAX = 0.4

_COLUMNS = ("id, meter_mac, kind, key_time, meter_time, received_at, device_mac, raw,"
            " multiplier, divisor, scale, unit")
#: The same for a store that ravend has not migrated to sql/*/..._meter_scale.sql yet.
_COLUMNS_UNSCALED = _COLUMNS.replace(" scale,", " 1 AS scale,")


class SourceUnavailable(Exception):
    """The store cannot be read now (no database yet, server down); retry later."""


class Source(Protocol):
    description: str

    def fetch(self, after_id: int, limit: int) -> list[tuple[int, Reading]]: ...

    def newest_id(self) -> int: ...

    def maybe_changed(self) -> bool: ...

    def states(self) -> list[StateItem]: ...

    def close(self) -> None: ...


def row_reading(row: Sequence[Any]) -> tuple[int, Reading]:
    """(id, Reading) of a row in _COLUMNS order; the value is recomputed exactly from raw."""
    (id_, meter, kind, key_time, meter_time, received_at, device, raw, multiplier, divisor,
     factor, unit) = row
    factor = Decimal(str(factor))  # SQLite's REAL: its repr is the decimal the config gave
    reading = Reading(
        meter_mac=meter, kind=Kind(kind),
        meter_time=None if meter_time is None else int(meter_time),
        received_at=float(received_at), raw=int(raw), multiplier=int(multiplier),
        divisor=int(divisor), value=scale(int(raw), int(multiplier), int(divisor), factor),
        unit=unit, device_mac=device or "", scale=factor,
    )
    if reading.key_time != int(key_time):  # host-timed rows: received_at and key_time agree
        reading = dataclasses.replace(reading, received_at=float(key_time))
    return int(id_), reading


class SqliteSource:
    """ravend's SQLite store, read-only (WAL: never in ravend's way), opened by ravend.db."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.description = f"sqlite:{path}"
        self._conn: sqlite3.Connection | None = None
        self._data_version: int | None = None
        self._state_seen: dict[tuple[str, str, str], float] = {}
        self._columns = _COLUMNS_UNSCALED  # until the store is seen to have readings.scale

    def _connection(self) -> sqlite3.Connection:
        if self._conn is None:
            if not self.path.exists():
                raise SourceUnavailable(str(sqlite_db.no_database(self.path)))
            try:
                self._conn = sqlite_db.connect(self.path, readonly=True, timeout=10)
                self._conn.execute("SELECT 1 FROM readings LIMIT 1")
            except sqlite3.Error as exc:
                self.close()
                raise SourceUnavailable(f"{self.path}: {exc}") from exc
        return self._conn

    def _query(self, sql: str, params: Sequence[Any] = ()) -> list[Any]:
        conn = self._connection()
        try:
            return conn.execute(sql, params).fetchall()
        except sqlite3.Error as exc:
            self.close()
            raise SourceUnavailable(f"{self.path}: {exc}") from exc

    def fetch(self, after_id: int, limit: int) -> list[tuple[int, Reading]]:
        if self._columns is not _COLUMNS:  # looked at again until ravend has migrated the store
            names = {row[1] for row in self._query("PRAGMA table_info(readings)")}
            self._columns = _COLUMNS if "scale" in names else _COLUMNS_UNSCALED
        rows = self._query(f"SELECT {self._columns} FROM readings WHERE id > ? ORDER BY id"
                           " LIMIT ?", (after_id, limit))
        return [row_reading(r) for r in rows]

    def newest_id(self) -> int:
        """The highest id ever given (sqlite_sequence: the newest rows may have been purged),
        so a watermark past the rows still stored is not taken for a replaced store."""
        newest = int(self._query("SELECT COALESCE(MAX(id), 0) FROM readings")[0][0])
        try:
            given = self._connection().execute(
                "SELECT seq FROM sqlite_sequence WHERE name = 'readings'").fetchone()
        except sqlite3.Error:  # a store from before sql/sqlite/005_monotonic_ids.sql
            given = None
        return max(newest, int(given[0])) if given else newest

    def maybe_changed(self) -> bool:
        """False only when no other connection committed since the last call."""
        version = self._query("PRAGMA data_version")[0][0]
        changed: bool = version != self._data_version
        self._data_version = version
        return changed

    def states(self) -> list[StateItem]:
        """Device state rows that changed since the last call (DeviceInfo for discovery ...)."""
        rows = self._query("SELECT device_mac, meter_mac, tag, received_at, body"
                           " FROM device_state")
        return _changed_states(rows, self._state_seen)

    def close(self) -> None:
        if self._conn is not None:
            with contextlib.suppress(sqlite3.Error):
                self._conn.close()
            self._conn = None
            self._data_version = None

    def watch(self) -> StoreWatch | None:
        """A StoreWatch on the database, or None where inotify is not available."""
        try:
            return StoreWatch(self.path)
        except (OSError, AttributeError) as exc:  # no inotify (not Linux), watch limit reached
            log.info("cannot watch %s for changes (%s): looking every poll_interval instead",
                     self.path, exc)
            return None


class StoreWatch:
    """Blocks until another process writes an SQLite database, or ``wake`` is called: an
    inotify watch on the database's directory (the files may be created, replaced or removed)
    for writes to the database, its WAL or its rollback journal. Linux only (OSError else)."""

    _IN_MODIFY, _IN_MOVED_TO, _IN_CREATE, _IN_DELETE, _IN_Q_OVERFLOW = (
        0x2, 0x80, 0x100, 0x200, 0x4000)
    _EVENT = struct.Struct("iIII")  # wd, mask, cookie, len; then len bytes of name

    def __init__(self, path: Path) -> None:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        fd = libc.inotify_init1(os.O_NONBLOCK | os.O_CLOEXEC)  # IN_NONBLOCK | IN_CLOEXEC
        if fd < 0:
            raise OSError(ctypes.get_errno(), f"inotify_init1: {os.strerror(ctypes.get_errno())}")
        # Not IN_CLOSE_WRITE: a reader closing the WAL (opened read-write) has written nothing.
        mask = self._IN_MODIFY | self._IN_MOVED_TO | self._IN_CREATE | self._IN_DELETE
        if libc.inotify_add_watch(fd, os.fsencode(path.parent), mask) < 0:
            errno = ctypes.get_errno()
            os.close(fd)
            raise OSError(errno, f"inotify_add_watch {path.parent}: {os.strerror(errno)}")
        self._fd = fd
        self._names = {os.fsencode(path.name + suffix) for suffix in ("", "-wal", "-journal")}
        self._wake_r, self._wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)

    def wait(self, timeout: float) -> bool:
        """Block until the database was written (True), ``wake`` or ``timeout`` (False).
        Writes to other files of the directory (the repeater's own watermark) do not count."""
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            ready, _, _ = select.select([self._fd, self._wake_r], [], [], left)
            if self._wake_r in ready:
                with contextlib.suppress(OSError):
                    os.read(self._wake_r, 512)
                return False
            if self._fd in ready and self._changed():
                return True

    def _changed(self) -> bool:
        changed = False
        while True:
            try:
                data = os.read(self._fd, 65536)
            except BlockingIOError:
                return changed
            offset = 0
            while offset + self._EVENT.size <= len(data):
                _, mask, _, length = self._EVENT.unpack_from(data, offset)
                start = offset + self._EVENT.size
                name = data[start:start + length].rstrip(b"\0")
                offset = start + length
                if mask & self._IN_Q_OVERFLOW or name in self._names:
                    changed = True

    def wake(self) -> None:
        """End a ``wait`` now; safe from a signal handler and from any thread."""
        with contextlib.suppress(OSError):
            os.write(self._wake_w, b"\0")

    def close(self) -> None:
        for fd in (self._fd, self._wake_r, self._wake_w):
            with contextlib.suppress(OSError):
                os.close(fd)


class MysqlSource:
    """The MySQL/MariaDB store of [mysql], read through ravend.db.mysql (as the sink writes it).
    Queries are written with ``?``, as for SQLite; the dialect gives the driver's style."""

    def __init__(self, cfg: Any) -> None:
        self.cfg = cfg
        self.description = mysql_db.where(cfg)
        self._conn: Any = None
        self._state_seen: dict[tuple[str, str, str], float] = {}
        self._columns = _COLUMNS_UNSCALED  # until the store is seen to have readings.scale

    def _query(self, sql: str, params: Sequence[Any] = ()) -> list[Any]:
        db = mysql_db.driver()
        try:
            if self._conn is None:
                # Each query must see rows committed since the last one: no open snapshot.
                self._conn = mysql_db.connect_reader(self.cfg)
            cursor = self._conn.cursor()
            cursor.execute(mysql_db.DIALECT.sql(sql), tuple(params))
            rows = list(cursor.fetchall())
            cursor.close()
            return rows
        except (SinkUnavailable, ConfigError) as exc:  # server down; password file unusable
            self.close()
            raise SourceUnavailable(str(exc)) from exc
        except db.Error as exc:
            self.close()
            raise SourceUnavailable(mysql_db.explain(exc, self.cfg)) from exc

    def fetch(self, after_id: int, limit: int) -> list[tuple[int, Reading]]:
        if self._columns is not _COLUMNS:  # looked at again until ravend has migrated the store
            scaled = self._query("SELECT COUNT(*) FROM information_schema.columns WHERE"
                                 " table_schema = DATABASE() AND table_name = 'readings'"
                                 " AND column_name = 'scale'")[0][0]
            self._columns = _COLUMNS if scaled else _COLUMNS_UNSCALED
        rows = self._query(f"SELECT {self._columns} FROM readings WHERE id > ? ORDER BY id"
                           " LIMIT ?", (after_id, limit))
        return [row_reading(r) for r in rows]

    def newest_id(self) -> int:
        return int(self._query("SELECT COALESCE(MAX(id), 0) FROM readings")[0][0])

    def maybe_changed(self) -> bool:
        return True  # no cheap change counter: the primary-key look-up is the check

    def states(self) -> list[StateItem]:
        rows = self._query("SELECT device_mac, meter_mac, tag, received_at, body"
                           " FROM device_state")
        return _changed_states(rows, self._state_seen)

    def close(self) -> None:
        if self._conn is not None:
            with contextlib.suppress(Exception):
                self._conn.close()
            self._conn = None


def _changed_states(rows: Sequence[Sequence[Any]],
                    seen: dict[tuple[str, str, str], float]) -> list[StateItem]:
    """Device state rows whose received_at changed since the last call."""
    out = []
    for device, meter, tag, received_at, body in rows:
        key = (device, meter, tag)
        if seen.get(key) == received_at:
            continue
        try:
            parsed = json.loads(body)
        except ValueError:
            continue
        seen[key] = received_at
        out.append(StateItem(device, meter, tag, float(received_at), parsed))
    return out


def make_source(config: Config) -> Source:
    if config.repeater.source == "sqlite":
        return SqliteSource(config.sqlite_path)
    mysql_db.driver()  # ConfigError naming the package when mysqlclient is missing
    return MysqlSource(config.mysql)


# --- the watermark -----------------------------------------------------------------------------


class Watermark:
    """The id of the last row the broker acknowledged, in a file replaced atomically."""

    def __init__(self, path: Path, source: str) -> None:
        self.path = path
        self.source = source

    def load(self) -> int | None:
        """The saved id, None if there is no file yet; ConfigError if it is someone else's."""
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
            last = int(data["last_id"])
            source = str(data.get("source", self.source))
        except FileNotFoundError:
            return None
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise ConfigError(f"{self.path}: unreadable watermark ({exc}); fix or delete it"
                              " (deleting publishes the store again from [repeater] start)"
                              ) from None
        if source != self.source:
            raise ConfigError(f"{self.path}: watermark of {source}, but the source is now"
                              f" {self.source}; delete it to start over")
        return last

    def save(self, last_id: int) -> None:
        """Write, fsync, rename over the old file, fsync the directory: old or new, never torn."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_name(self.path.name + ".tmp")
        body = json.dumps({"last_id": last_id, "source": self.source,
                           "saved_at": round(time.time(), 3)}) + "\n"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        try:
            os.write(fd, body.encode())
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, self.path)
        dir_fd = os.open(self.path.parent, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)


# --- the service -------------------------------------------------------------------------------


@dataclasses.dataclass
class RepeaterStats:
    published: int = 0
    batches: int = 0
    watermark: int = 0
    backlog: int = 0
    up: bool = False


class Repeater:
    """Main loop; ``run`` returns the exit status. ``request_stop`` may come from any thread."""

    def __init__(self, config: Config, *, source: Source | None = None,
                 sink: Any = None, notifier: Any = None) -> None:
        from ravend.sinks.mqtt import MqttSink  # python3-paho-mqtt, which the CLI checks

        self.config = config
        rc = config.repeater
        self.source = source if source is not None else make_source(config)
        self.sink = sink if sink is not None else MqttSink(
            dataclasses.replace(config.mqtt, client_id=rc.client_id))
        path = rc.watermark_file
        if not path.is_absolute():
            path = config.service.state_dir / path
        self.watermark = Watermark(path, self.source.description)
        self.notifier = notifier if notifier is not None else Notifier()
        self.stats = RepeaterStats()
        self._stop = threading.Event()
        self._opened = False
        # Retry pauses double from [repeater] retry_min to retry_max ([device]'s when unset).
        retry = config.retry("repeater")
        self._backoff = Backoff(retry.minimum, retry.maximum)
        self._last_error = ""
        self._pending_states: list[StateItem] = []
        self._watch: StoreWatch | None = None
        self._watch_tried = False

    def request_stop(self, *_: object) -> None:
        self._stop.set()
        watch = self._watch
        if watch is not None:
            watch.wake()

    def install_signals(self) -> None:
        install_signals(self.request_stop)

    # --- loop ---------------------------------------------------------------------------------

    def run(self) -> int:
        rc = self.config.repeater
        try:
            start = self.watermark.load()
        except ConfigError as exc:
            log.error("%s", exc)
            return exc.exit_status
        log.info("ravend-repeater started (%s → %s as %s, watermark %s)",
                 self.source.description, f"{self.config.mqtt.host}:{self.config.mqtt.port}",
                 self.sink.client_id, self.watermark.path)
        self.notifier.notify("READY=1\nSTATUS=starting")
        watchdog = self.notifier.watchdog_interval()
        last_ping = last_status = 0.0
        status_published = -1  # stats.published when STATUS= was last sent
        idle = IDLE_MIN
        recheck = 0.0  # > 0: the next pause after a write event that showed no rows yet
        wm = start
        checked = False
        while not self._stop.is_set():
            now = time.monotonic()
            if watchdog is not None and now - last_ping >= watchdog:
                self.notifier.notify("WATCHDOG=1")
                last_ping = now
            if now - last_status >= STATUS_INTERVAL:
                self.notifier.notify("STATUS=" + self.status_line())
                last_status = now
                status_published = self.stats.published
            try:
                if wm is None:
                    wm = 0 if rc.start == "oldest" else self.source.newest_id()
                    self.watermark.save(wm)
                    log.info("no watermark yet: starting after row %d (start = %s)", wm,
                             rc.start)
                self.stats.watermark = wm
                if not checked:
                    checked = self._check_watermark(wm)
                self._pending_states += self.source.states()
                rows = self.source.fetch(wm, rc.batch_size) if self._worth_a_look(idle) else []
            except SourceUnavailable as exc:
                self._failed(f"store: {exc}")
                continue
            if not rows and not self._pending_states:
                new_watch = not self._watch_tried
                watch = self._store_watch()
                if watch is None:
                    self._stop.wait(idle)
                    idle = min(idle * 2, rc.poll_interval)
                    continue
                if new_watch:  # rows committed before the watch existed raise no event
                    idle = IDLE_MIN  # so look once more before the first wait
                    continue

                # Until ravend writes the store: no timer but the watchdog's, and a look now and
                # then in case an event was missed. STATUS= is brought up to date first.
                now = time.monotonic()
                if status_published != self.stats.published:
                    self.notifier.notify("STATUS=" + self.status_line())
                    last_status = now
                    status_published = self.stats.published
                wait = recheck or WATCH_FALLBACK
                if watchdog is not None:
                    wait = min(wait, last_ping + watchdog - now)
                written = watch.wait(wait) if wait > 0 else False
                if written:
                    recheck = IDLE_MIN
                elif recheck:
                    recheck = recheck * 2 if recheck * 2 <= RECHECK_MAX else 0.0
                idle = rc.poll_interval  # the next look checks data_version first
                continue
            idle = IDLE_MIN
            recheck = 0.0
            # History copied from a CalPlug database is not news: never published (the
            # watermark still moves past it).
            live = [r for _, r in rows if r.device_mac != HISTORY_DEVICE]
            if not self._publish(live):
                continue
            if rows:
                wm = rows[-1][0]
                self.watermark.save(wm)
                self.stats.watermark = wm
                self.stats.published += len(live)
                self.stats.batches += 1
        self.shutdown()
        return 0

    def _check_watermark(self, wm: int) -> bool:
        """Once: a watermark past the newest row means the store was replaced or restored."""
        newest = self.source.newest_id()
        if wm > newest:
            log.warning("watermark %d is past the newest row (%d) of %s: was the store"
                        " replaced? Rows up to %d will not be published; delete %s to"
                        " publish the store from its start", wm, newest,
                        self.source.description, wm, self.watermark.path)
        return True

    def _store_watch(self) -> StoreWatch | None:
        """The source's StoreWatch, made the first time the store was read (its directory
        exists then); None when the source has none."""
        if not self._watch_tried:
            self._watch_tried = True
            make = getattr(self.source, "watch", None)
            self._watch = make() if make is not None else None
            if self._stop.is_set() and self._watch is not None:
                self._watch.wake()
        return self._watch

    def _worth_a_look(self, idle: float) -> bool:
        """After an idle pause, read the table only if the store changed (or now and then)."""
        if idle == IDLE_MIN:
            return True
        return self.source.maybe_changed() or idle >= self.config.repeater.poll_interval

    def _publish(self, readings: list[Reading]) -> bool:
        try:
            if not self._opened:
                self.sink.open()
                self._opened = True
            self.sink.write(readings, self._pending_states)
        except SinkUnavailable as exc:
            self._failed(f"broker: {exc}")
            return False
        self._pending_states = []
        if not self.stats.up:
            if self._last_error:
                log.info("publishing again (watermark %d)", self.stats.watermark)
            self.stats.up = True
            self._last_error = ""
            self._backoff.reset()
        return True

    def _failed(self, error: str) -> None:
        if self.stats.up or error != self._last_error:
            log.error("%s (retrying; watermark stays at %s)", error, self.stats.watermark)
            delay = self._backoff.delay  # a new failure: retried at the pace reached so far
        else:
            delay = self._backoff.longer()
        self.stats.up = False
        self._last_error = error
        self.notifier.notify("STATUS=" + self.status_line())
        self._stop.wait(delay)

    def status_line(self) -> str:
        parts = [f"{self.stats.published} published", f"watermark {self.stats.watermark}"]
        with contextlib.suppress(SourceUnavailable):
            backlog = max(0, self.source.newest_id() - self.stats.watermark)
            self.stats.backlog = backlog
            parts.append(f"{backlog} to go")
        if self._last_error:
            parts.append(f"waiting: {self._last_error}")
        return "; ".join(parts)

    def shutdown(self) -> None:
        self.notifier.notify("STOPPING=1")
        self.sink.close()
        self.source.close()
        if self._watch is not None:
            self._watch.close()
        log.info("ravend-repeater stopped (%s published, watermark %d)",
                 plural(self.stats.published, "reading"), self.stats.watermark)
