"""The optional Prometheus endpoint ([metrics] listen): what ravend knows, read at scrape time.

Nothing here counts: a collector reads the live stats of the device session, the sink workers
and the dispatcher when Prometheus asks, so the device thread pays nothing for metrics and the
numbers cannot drift from the ones ravend logs. The exposition format is prometheus_client's
(python3-prometheus-client, a Recommends), imported only when an endpoint is configured. The
serving thread blocks in the kernel until a scrape arrives: no timer wakes it.
"""

from __future__ import annotations

import contextlib
import logging
import socket
import threading
import time
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any, Protocol

from ravend.config import ConfigError
from ravend.config_values import split_listen
from ravend.protocol.model import Kind, Reading

if TYPE_CHECKING:
    from ravend.device import DeviceSession
    from ravend.metrics_http import ScrapeServer
    from ravend.runtime.supervisor import Supervisor
    from ravend.sinks.worker import SinkWorker

log = logging.getLogger("ravend.metrics")


class DispatcherView(Protocol):
    """What the collector reads of the service's Dispatcher (ravend.service), which the service
    hands in: named here, so that this module does not import the service that imports it."""

    workers: list[SinkWorker]
    readings: int
    last: dict[str, Reading]
    latest: dict[tuple[str, Kind], Reading]


def prometheus() -> Any:
    """prometheus_client, or the one-line ConfigError that names the Debian package."""
    try:
        import prometheus_client
        import prometheus_client.core
    except ImportError:
        raise ConfigError("[metrics] listen is set, but python3-prometheus-client is not"
                          " installed (apt install python3-prometheus-client)") from None
    return prometheus_client


class ServiceCollector:
    """A prometheus_client collector over the service's own objects (duck-typed: subclassing
    prometheus_client's Collector would import it whether or not metrics are on)."""

    def __init__(self, dispatcher: DispatcherView, device: DeviceSession,
                 clock: Callable[[], float] = time.time,
                 supervisor: Supervisor | None = None) -> None:
        self.dispatcher = dispatcher
        self.device = device
        self.supervisor = supervisor
        self.clock = clock  # received_at is wall-clock time
        self._core = prometheus().core

    def collect(self) -> Iterator[Any]:
        counter, gauge = self._core.CounterMetricFamily, self._core.GaugeMetricFamily
        dev = self.device.stats
        yield gauge("ravend_device_connected", "1 while the stick's port is open",
                    value=int(dev.connected))
        yield counter("ravend_device_reconnects", "Times the stick was lost and reopened",
                      value=dev.reconnects)
        yield counter("ravend_fragments", "Fragments decoded from the stick", value=dev.fragments)
        yield counter("ravend_decode_errors", "Fragments that could not be decoded",
                      value=dev.decode_errors)
        yield counter("ravend_discarded_bytes",
                      "Bytes skipped: noise, and fragments that could not be decoded",
                      value=dev.discarded_bytes)
        yield counter("ravend_readings_received", "Readings decoded (before any sink)",
                      value=self.dispatcher.readings)
        yield from self._last_reading(gauge)
        yield from self._sinks(counter, gauge)
        yield from self._meters(gauge)
        yield from self._parts(counter, gauge)

    def _parts(self, counter: Any, gauge: Any) -> Iterator[Any]:
        """The supervisor's view: a part that is not running is 0, never 1."""
        if self.supervisor is None:
            return
        up = gauge("ravend_part_up", "1 while the part's thread runs (device, sink-NAME,"
                   " maintenance, control, mqtt-commands, metrics), 0 while it is down",
                   labels=["part"])
        failing = gauge("ravend_part_failing", "1 when the part cannot stay up (it keeps"
                        " failing, or could not start)", labels=["part"])
        restarts = counter("ravend_part_restarts", "Times the part was restarted after a"
                           " failure", labels=["part"])
        for h in self.supervisor.health():
            up.add_metric([h.name], int(h.up))
            failing.add_metric([h.name], int(h.failing))
            restarts.add_metric([h.name], h.restarts)
        yield from (up, failing, restarts)

    def _last_reading(self, gauge: Any) -> Iterator[Any]:
        family = gauge("ravend_last_reading_age_seconds",
                       "Seconds since the newest reading arrived (absent before the first)")
        last = list(self.dispatcher.last.values())  # a copy: the device thread adds to it
        if last:
            newest = max(r.received_at for r in last)
            family.add_metric([], max(0.0, self.clock() - newest))  # the clock may step back
        yield family

    def _sinks(self, counter: Any, gauge: Any) -> Iterator[Any]:
        stored = counter("ravend_readings_stored",
                         "Readings written to a sink (a reading the stick sent twice counts"
                         " twice; the store keeps it once)", labels=["sink", "kind"])
        up = gauge("ravend_sink_up", "1 while the sink takes writes, 0 while it spools",
                   labels=["sink"])
        spool = gauge("ravend_sink_spool_depth",
                      "Readings and device states waiting in the sink's outbox on disk",
                      labels=["sink"])
        dropped = counter("ravend_sink_dropped", "Readings dropped, the oldest first: outbox"
                          " full, or outbox unwritable and queue full", labels=["sink"])
        rejected = counter("ravend_sink_rejected", "Readings the sink left out for good"
                           " (ravenctl rejected)", labels=["sink"])
        conflicting = counter("ravend_readings_conflicting",
                              "Readings refused: their key (meter, kind, key time) was stored"
                              " with another value, and the first value is kept",
                              labels=["sink"])
        for worker in self.dispatcher.workers:
            stats, name = worker.stats, worker.name
            by_kind = dict(stats.stored_by_kind)
            # Every kind from the start: a series that appears late breaks rate() and alerts.
            for kind in Kind:
                stored.add_metric([name, kind.value], by_kind.get(kind.value, 0))
            up.add_metric([name], int(stats.up))
            spool.add_metric([name], len(worker.outbox))
            dropped.add_metric([name], stats.dropped)
            rejected.add_metric([name], stats.rejected)
            conflicts = getattr(worker.sink, "conflicts", None)
            conflicting.add_metric([name], conflicts.count if conflicts is not None else 0)
        yield from (stored, up, spool, dropped, rejected, conflicting)

    def _meters(self, gauge: Any) -> Iterator[Any]:
        families = {
            Kind.DEMAND: gauge("ravend_demand_kilowatts",
                               "Last instantaneous demand (negative while exporting)",
                               labels=["meter"]),
            Kind.SUMMATION_DELIVERED: gauge("ravend_summation_delivered_kilowatt_hours",
                                            "Last summation delivered by the grid",
                                            labels=["meter"]),
            Kind.SUMMATION_RECEIVED: gauge("ravend_summation_received_kilowatt_hours",
                                           "Last summation received by the grid (exported)",
                                           labels=["meter"]),
        }
        for (meter, kind), reading in sorted(dict(self.dispatcher.latest).items()):
            family = families.get(kind)
            if family is not None:
                family.add_metric([meter], float(reading.value))
        yield from families.values()


class MetricsServer:
    """The HTTP endpoint over a private registry. A port that cannot be had is logged once and
    readings go on being stored: metrics are never a reason to stop logging."""

    def __init__(self, listen: str, dispatcher: DispatcherView, device: DeviceSession,
                 supervisor: Supervisor | None = None) -> None:
        client = prometheus()  # ConfigError when missing, before anything starts
        self.listen = listen
        self.error = ""  # why bind() failed
        self.registry = client.CollectorRegistry(auto_describe=False)
        self.registry.register(ServiceCollector(dispatcher, device, supervisor=supervisor))
        self._app = client.make_wsgi_app(self.registry)
        self._httpd: ScrapeServer | None = None
        self._thread: threading.Thread | None = None
        self._stopping = threading.Event()

    @property
    def address(self) -> tuple[str, int] | None:
        """Where it listens (the port is the real one), or None when not listening."""
        if self._httpd is None:
            return None
        host, port = self._httpd.server_address[:2]
        return str(host), int(port)

    def start(self) -> bool:
        """Bind and serve in a thread of its own (without a supervisor)."""
        if not self.bind():
            return False
        self._thread = threading.Thread(target=self.serve, name="metrics", daemon=True)
        self._thread.start()
        return True

    def bind(self) -> bool:
        """Listen; False (logged once) when the address cannot be had."""
        # Here, not at the top: the HTTP server's imports cost ~2 MiB (ravend.metrics_http).
        from ravend.metrics_http import ScrapeServer

        host, port = split_listen(self.listen)
        try:
            family, _, _, _, sockaddr = socket.getaddrinfo(
                host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)[0]
            self._httpd = ScrapeServer(sockaddr, family)
        except OSError as exc:
            self.error = f"cannot listen on {self.listen}: {exc.strerror or exc}"
            log.error("metrics: %s; no metrics until ravend is restarted"
                      " (readings are still stored)", self.error)
            return False
        self._httpd.set_app(self._app)
        self._stopping.clear()
        log.info("metrics on http://%s/metrics", self.listen)
        return True

    def serve(self) -> None:
        """Answer scrapes until stopped (the supervised part)."""
        httpd = self._httpd
        if httpd is None:
            return  # stopped before it began
        while not self._stopping.is_set():
            httpd.handle_request()  # timeout None: blocks until a connection (or stop)

    def stop(self, timeout: float = 1.0) -> None:
        httpd, self._httpd = self._httpd, None
        if httpd is None:
            return
        self._stopping.set()
        # Shutting the listening socket down wakes the blocked accept (Linux): the loop ends.
        with contextlib.suppress(OSError):
            httpd.socket.shutdown(socket.SHUT_RDWR)
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout)
        httpd.server_close()
