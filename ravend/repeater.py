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
The stores it reads (``Source``, ``StoreWatch``) are in ravend.repeater_sources.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import os
import threading
import time
from pathlib import Path
from typing import Any

from ravend.calplug_history import HISTORY_DEVICE
from ravend.config import Config, ConfigError
from ravend.plural import plural
from ravend.protocol.model import Reading
from ravend.repeater_sources import Source, SourceUnavailable, StoreWatch, make_source
from ravend.runtime.backoff import Backoff
from ravend.runtime.notify import Heartbeat, Notifier
from ravend.runtime.outage import Outage
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
    last_error: str = ""  # why the store or broker is not reachable; "" while publishing


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
        self._outage = Outage(self.stats, Backoff(retry.minimum, retry.maximum))
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
        beat = Heartbeat(self.notifier, STATUS_INTERVAL)
        status_published = -1  # stats.published when STATUS= was last sent
        idle = IDLE_MIN
        recheck = 0.0  # > 0: the next pause after a write event that showed no rows yet
        wm = start
        checked = False
        while not self._stop.is_set():
            if beat.beat(time.monotonic(), self.status_line):
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
                    beat.send_status(self.status_line(), now)
                    status_published = self.stats.published
                wait = beat.wait(now, recheck or WATCH_FALLBACK)
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
        if self._outage.recovered():
            log.info("publishing again (watermark %d)", self.stats.watermark)
        return True

    def _failed(self, error: str) -> None:
        if self._outage.failed(error):
            log.error("%s (retrying; watermark stays at %s)", error, self.stats.watermark)
        self.notifier.notify("STATUS=" + self.status_line())
        self._stop.wait(self._outage.delay)

    def status_line(self) -> str:
        parts = [f"{self.stats.published} published", f"watermark {self.stats.watermark}"]
        with contextlib.suppress(SourceUnavailable):
            backlog = max(0, self.source.newest_id() - self.stats.watermark)
            self.stats.backlog = backlog
            parts.append(f"{backlog} to go")
        if self.stats.last_error:
            parts.append(f"waiting: {self.stats.last_error}")
        return "; ".join(parts)

    def shutdown(self) -> None:
        self.notifier.notify("STOPPING=1")
        self.sink.close()
        self.source.close()
        if self._watch is not None:
            self._watch.close()
        log.info("ravend-repeater stopped (%s published, watermark %d)",
                 plural(self.stats.published, "reading"), self.stats.watermark)
