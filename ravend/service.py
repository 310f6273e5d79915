"""Wire config, device session and sinks together and run them under systemd (or without).

The main thread only waits: for a signal, for the watchdog interval, or for a status change. The
device session runs in its own thread and hands every fragment to ``Dispatcher``, which turns it
into readings and device state and gives them to each sink's worker. READY=1 is sent once the
configuration is valid and every sink's worker is running (a sink that is down at start spools:
the service is still ready). Every long-lived thread is a part of the ``Supervisor``
(ravend.runtime.supervisor), which logs, counts and restarts a part that fails; WATCHDOG=1
only while every part is up and none keeps failing. ``<state_dir>/ravend.lock`` keeps a second
ravend off the same state directory (ravend.statelock).

SIGHUP (``systemctl reload ravend``) re-reads the configuration file and validates it with the
checks of a start (``reconfigure``). A bad file changes nothing: one error line naming the file,
line and key, and ravend runs on with the configuration it has. An unchanged file only reopens the
device port (a replugged stick). A changed file is applied by a restart in place: the service
stops as for SIGTERM (each sink's queue stored or spooled to its outbox, every listener closed,
the lock released) and ``run`` returns with ``reexec`` set, for the caller to exec ravend again
with the same command line: same PID (systemd's MAINPID), every part rebuilt from the new file
by the code that starts it. What the stick sends meanwhile waits in the tty (see
DeviceSession._open), the outboxes are replayed: no reading is lost.
"""

from __future__ import annotations

import logging
import os
import threading
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import fields
from decimal import Decimal
from pathlib import Path

from ravend.config import Config, ConfigError
from ravend.control import ControlServer
from ravend.device import DeviceSession
from ravend.maintenance import Maintenance
from ravend.meter_cap import MeterCap
from ravend.metrics import MetricsServer
from ravend.plural import plural
from ravend.protocol.model import Fragment, Kind, Reading, UnknownFragment
from ravend.protocol.readings import readings_from
from ravend.runtime.notify import Notifier
from ravend.runtime.signals import install_signals
from ravend.runtime.supervisor import Supervisor, fault_point
from ravend.serialize import fragment_body
from ravend.sinks.base import Sink, StateItem
from ravend.sinks.sqlite import SqliteSink
from ravend.sinks.worker import SinkWorker
from ravend.statelock import StateLock

log = logging.getLogger("ravend")

#: STATUS= updates at most this often: systemctl status stays current without a syscall storm.
STATUS_INTERVAL = 5.0
#: SIGTERM must end the process within 5 s (systemd's default stop timeout is longer).
STOP_BUDGET = 4.0
#: Outbox cap of a sink whose config section has no spool_max_mb of its own.
SPOOL_MAX_MB = 100.0


class Dispatcher:
    """Fragment → readings and state → every sink worker; remembers the latest for STATUS=."""

    def __init__(self, workers: Sequence[SinkWorker], meters: MeterCap | None = None,
                 scales: Mapping[str, Decimal] | None = None) -> None:
        self.workers = list(workers)
        self.meters = meters or MeterCap()
        # [meter <MAC>] scale: applied here, once, so every sink stores and publishes the same.
        self.scales = dict(scales or {})
        self.last: dict[str, Reading] = {}
        # Per meter too (several meters can share one stick), for the metrics' last values.
        self.latest: dict[tuple[str, Kind], Reading] = {}
        self.readings = 0
        self.changed = threading.Event()

    def __call__(self, fragment: Fragment, received_at: float) -> None:
        fault_point("fragment")  # test-only hook: a crash inside the device thread
        readings = readings_from(fragment, received_at, self.scales)
        states: list[StateItem] = []
        if not readings:
            states.append(state_of(fragment, received_at))
        for worker in self.workers:
            worker.submit(readings, states)
        if readings:
            self.readings += len(readings)
            for r in readings:
                self.last[r.kind.value] = r
                if self.meters.admits(r.meter_mac):
                    self.latest[(r.meter_mac, r.kind)] = r
            self.changed.set()

    def status_line(self, parts_down: Sequence[str] = ()) -> str:
        demand = self.last.get(Kind.DEMAND.value)
        parts = [plural(self.readings, "reading")]
        if demand is not None:
            stamp = time.strftime("%H:%M:%S", time.localtime(demand.received_at))
            parts.append(f"last demand {demand.value} kW at {stamp}")
        backlog = sum(w.backlog for w in self.workers)
        down = [w.name for w in self.workers if not w.stats.up]
        if down:
            parts.append("down: " + ", ".join(down))
        if parts_down:
            parts.append("part down: " + ", ".join(parts_down))
        if backlog:
            parts.append(f"{backlog} waiting")
        return "; ".join(parts)


def _stored_fault_point(sink: str, readings: Sequence[Reading]) -> None:
    fault_point(f"stored-{sink}")  # test-only hook: a crash inside a sink worker's thread


def state_of(fragment: Fragment, received_at: float) -> StateItem:
    body = fragment_body(fragment)
    tag = fragment.tag if isinstance(fragment, UnknownFragment) else type(fragment).__name__
    device = str(body.get("device_mac_id") or "")
    meter = str(body.get("meter_mac_id") or "")
    return StateItem(device, meter, tag, received_at, body)


def build_sinks(config: Config, start_id: str = "", meters: MeterCap | None = None
                ) -> list[Sink]:
    sinks: list[Sink] = []
    if config.sqlite.enabled:
        sinks.append(SqliteSink(config.sqlite_path))
    if config.mysql.enabled:
        # Loaded only for a MariaDB store (python3-mysqldb, a Recommends): a SQLite-only ravend
        # carries none of it. ConfigError (exit 78) naming python3-mysqldb when it is missing.
        from ravend.sinks.mysql import MysqlSink

        sinks.append(MysqlSink(config.mysql, start_id=start_id))
    if config.mqtt.enabled:
        from ravend.sinks.mqtt import MqttSink  # python3-paho-mqtt, a Recommends
        from ravend.tariff import tariff_of

        sinks.append(MqttSink(config.mqtt, tariff=tariff_of(config),
                              meters=meters or MeterCap(config.service.max_meters)))
    return sinks


def spool_max_mb(config: Config, sink: Sink) -> float:
    """The outbox cap of a sink: `spool_max_mb` of the config section named after it."""
    return float(getattr(getattr(config, sink.name, None), "spool_max_mb", SPOOL_MAX_MB))


def changed_sections(old: Config, new: Config) -> list[str]:
    """The sections whose settings differ, for the reload's log line."""
    return [f.name for f in fields(Config)
            if f.name != "source" and getattr(old, f.name) != getattr(new, f.name)]


class Service:
    def __init__(self, config: Config, *, sinks: Sequence[Sink] | None = None,
                 reconfigure: Callable[[], Config] | None = None) -> None:
        """``reconfigure`` re-reads and validates the file for SIGHUP (ConfigError if bad);
        without it SIGHUP only reopens the device port."""
        self.config = config
        self.reconfigure = reconfigure
        #: Set when run() returned to apply a reloaded configuration: exec ravend again.
        self.reexec = False
        self.start_id = uuid.uuid4().hex  # this service start (CalPlug's run "hash")
        svc = config.service
        # First: before any outbox or store is opened (AlreadyRunning: one line, exit 75).
        self.lock = StateLock(svc.state_dir).acquire()
        # [service] retry_min/max: the pace of everything but the device's reopen.
        retry = config.retry("service")
        self.supervisor = Supervisor(backoff_min=retry.minimum, backoff_max=retry.maximum)
        self.meters = MeterCap(svc.max_meters)  # one set for discovery and metrics
        self.workers = [
            SinkWorker(sink, svc.state_dir / f"outbox-{sink.name}.db",
                       queue_size=svc.queue_size, batch_size=svc.batch_size,
                       max_delay=svc.commit_interval, retry_min=retry.minimum,
                       retry_max=retry.maximum,
                       spool_max_mb=spool_max_mb(config, sink))
            for sink in (build_sinks(config, self.start_id, self.meters) if sinks is None
                         else sinks)
        ]
        # Roll-ups and purges of the configured SQL stores, on connections of their own.
        self.maintenance = (Maintenance(config) if sinks is None and Maintenance.wanted(config)
                            else None)
        self.dispatcher = Dispatcher(self.workers, self.meters, config.meter_scales)
        self.device = DeviceSession(config.device, self.dispatcher)
        self.control = (ControlServer(Path(svc.control_socket), self.device,
                                      max_clients=svc.control_clients, health=self.health)
                        if svc.control_socket else None)
        self.mqtt_commands = None
        if config.mqtt.enabled:
            # Commands off: still listening, to refuse each with the setting to change.
            from ravend.mqtt_commands import MqttCommands  # python3-paho-mqtt, a Recommends

            self.mqtt_commands = MqttCommands(config.mqtt, self.device,
                                              retry_min=retry.minimum,
                                              retry_max=retry.maximum,
                                              allowed=config.mqtt.allow_commands)
        self.metrics = None
        if config.metrics.listen:
            # ConfigError naming python3-prometheus-client when it is missing.
            self.metrics = MetricsServer(config.metrics.listen, self.dispatcher, self.device,
                                         supervisor=self.supervisor)
        self.notifier = Notifier()
        self._stop = threading.Event()
        self._hup = threading.Event()
        self._add_parts()

    def _add_parts(self) -> None:
        """Every long-lived thread, as a supervised part (see ravend.runtime.supervisor)."""
        sup = self.supervisor
        for worker in self.workers:
            worker.on_stored.append(_stored_fault_point)
            sup.add(f"sink-{worker.name}", worker.run)
        sup.add("device", self.device.run)
        if self.maintenance is not None:
            sup.add("maintenance", self.maintenance.run)
        if self.mqtt_commands is not None:
            for name, target in self.mqtt_commands.parts().items():
                sup.add(name, target)

    def health(self) -> dict[str, object]:
        """The control socket's ``health`` answer: this process and each part."""
        parts = self.supervisor.health()
        return {"pid": os.getpid(), "healthy": self.supervisor.healthy(),
                "down": [h.name for h in parts if not h.up or h.failing],
                "parts": [h.as_dict() for h in parts]}

    def request_stop(self, *_: object) -> None:
        self._stop.set()
        self.dispatcher.changed.set()

    def request_reload(self, *_: object) -> None:
        self._hup.set()
        self.dispatcher.changed.set()

    def install_signals(self) -> None:
        install_signals(self.request_stop, self.request_reload)

    def healthy(self) -> bool:
        """The supervisor's view: every part up, none that keeps failing."""
        return self.supervisor.healthy()

    def run(self) -> int:
        if not self.workers:
            log.warning("no sink is enabled: readings are decoded but not stored")
        # A taken metrics port or an unusable control socket is logged by its owner and shown
        # as down; readings are stored regardless.
        if self.metrics is not None:
            if self.metrics.bind():
                self.supervisor.add("metrics", self.metrics.serve)
            else:
                self.supervisor.unavailable("metrics", self.metrics.error)
        if self.control is not None:
            if self.control.bind():
                self.supervisor.add("control", self.control.serve)
            else:
                self.supervisor.unavailable("control", self.control.error)
        self.supervisor.start()
        names = ", ".join(w.name for w in self.workers) or "none"
        log.info("ravend started (port %s, sinks: %s, state in %s)", self.config.device.port,
                 names, self.config.service.state_dir)
        self.notifier.notify("READY=1\nSTATUS=waiting for the meter")
        watchdog = self.notifier.watchdog_interval()
        last_status = 0.0
        was_unhealthy = False
        while not self._stop.is_set():
            self.dispatcher.changed.wait(watchdog)
            self.dispatcher.changed.clear()
            if self._hup.is_set():
                self._hup.clear()
                if self._reload():
                    break
            now = time.monotonic()
            healthy = self.healthy()
            if watchdog is not None and healthy:
                self.notifier.notify("WATCHDOG=1")
            if now - last_status >= STATUS_INTERVAL or (not healthy and not was_unhealthy):
                self.notifier.notify("STATUS=" + self.dispatcher.status_line(
                    self.supervisor.down()))
                last_status = now
            was_unhealthy = not healthy
            if not healthy and watchdog is not None and not self._stop.is_set():
                # A part restarting: look again soon, so that the pings resume with it.
                self._stop.wait(min(1.0, watchdog))
            elif self.dispatcher.readings and not self._stop.is_set():
                # Coalesce: look again in a moment instead of once per reading.
                self._stop.wait(min(STATUS_INTERVAL - (now - last_status), watchdog or 60))
        return self.shutdown()

    def _reload(self) -> bool:
        """SIGHUP: True when the service must stop to be started again with a new file."""
        if self.reconfigure is None:
            log.info("SIGHUP: reopening the device port")
            self.device.reopen()
            return False
        try:
            new = self.reconfigure()
        except ConfigError as exc:
            log.error("SIGHUP: configuration error: %s; keeping the running configuration", exc)
            return False
        except Exception as exc:  # a reload must never be what ends ravend
            log.error("SIGHUP: cannot check the configuration (%s: %s); keeping the running"
                      " configuration", type(exc).__name__, exc, exc_info=exc)
            return False
        changed = changed_sections(self.config, new)
        if not changed:
            log.info("SIGHUP: reopening the device port (configuration unchanged)")
            self.device.reopen()
            return False
        log.info("SIGHUP: %s changed ([%s]); restarting in place to apply it", new.source,
                 "], [".join(changed))
        self.reexec = True
        return True

    def shutdown(self) -> int:
        if self.reexec:
            # systemd shows "reloading" until the new start's READY=1.
            self.notifier.notify(f"RELOADING=1\nMONOTONIC_USEC={time.monotonic_ns() // 1000}")
        else:
            self.notifier.notify("STOPPING=1")
        deadline = time.monotonic() + STOP_BUDGET
        self.supervisor.stop()  # parts that end now are stopping, not failing
        if self.control is not None:
            self.control.stop()
        if self.metrics is not None:
            self.metrics.stop()
        if self.mqtt_commands is not None:
            self.mqtt_commands.stop()
        if self.maintenance is not None:
            self.maintenance.stop(0.5)  # stops between chunks; a daemon thread otherwise
        self.device.stop()
        self.supervisor.join("device", max(0.1, deadline - time.monotonic() - 2.0))
        for worker in self.workers:
            worker.stop(max(0.1, deadline - time.monotonic()))
        log.info("ravend stopped%s (%s received; stored %s)",
                 " to apply the new configuration" if self.reexec else "",
                 plural(self.dispatcher.readings, "reading"),
                 ", ".join(stop_account(w) for w in self.workers) or "nowhere")
        self.lock.release()
        return 0


def stop_account(worker: SinkWorker) -> str:
    """One sink's part of the stop line: what it stored, and whatever it did not, so that
    "stored sqlite=5" never reads as complete while readings were rejected or still wait."""
    stats = worker.stats
    conflicts = getattr(getattr(worker.sink, "conflicts", None), "count", 0)
    extra = [f"{n} {what}" for n, what in ((conflicts, "not kept (a key seen with another value)"),
                                           (stats.rejected, "rejected"),
                                           (len(worker.outbox), "in the outbox"),
                                           (stats.dropped, "dropped")) if n]
    return f"{worker.name}={stats.stored}" + (f" ({', '.join(extra)})" if extra else "")
