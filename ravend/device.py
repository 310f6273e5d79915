"""The link to the stick: find it, open it, keep it open, talk to it.

ravend is the only owner of the tty. One reader thread blocks on the port; it feeds the sans-I/O
decoder, hands fragments to the service, sends the session's own commands when they fall due
(identify at connect, poll demand when pushes stop, ask summation periodically) and reopens the
port with capped exponential backoff when it goes away. Other threads (the control socket, MQTT
commands) call ``request``, which writes under the same lock and spacing and waits for the reply
matched by root tag.

Ports are opened with pyserial's ``serial_for_url``: one code path for /dev/ttyUSB0, the
simulator's pty, ``socket://host:port`` and ``rfc2217://host:port`` sticks on the network, and
``spy://`` for a wire trace.
"""

from __future__ import annotations

import contextlib
import glob
import itertools
import logging
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from ravend.config import DeviceConfig
from ravend.protocol import commands
from ravend.protocol.decoder import StreamDecoder
from ravend.protocol.model import (
    DecodeError,
    DeviceInfo,
    Discarded,
    Fragment,
    InstantaneousDemand,
    MeterList,
)
from ravend.runtime.backoff import Backoff

if TYPE_CHECKING:  # imported at run time only where the port is opened (see _open)
    from serial import Serial

log = logging.getLogger("ravend.device")

#: USB ids (PROTOCOL.md). 04b4:0003 is a generic Cypress id: the EMU-2 is recognised only
#: together with Rainforest's manufacturer or product string.
RAVEN_USB = (0x0403, 0x8A28)
EMU2_USB = (0x04B4, 0x0003)
#: Stable names the udev rules create, tried first by `port = auto`.
UDEV_LINKS = ("raven", "emu2")
#: Where `port = auto` looks for those links and serial/by-id names instead of /dev (a test's or
#: a container's device tree). The USB-id scan of sysfs is done only for the real /dev.
DEV_DIR_ENV = "RAVEND_DEV_DIR"
#: A read returns at least this often to run the session's timers even when the line is quiet.
MAX_READ_WAIT = 60.0
#: Bytes asked for per read: a whole burst of fragments fits.
READ_SIZE = 4096
#: Discarded-byte diagnostics are summed and logged once per burst, not once per read.
NOISE_LOG_INTERVAL = 10.0
#: On stop, how long to read on to the end of a fragment that is half received.
FINISH_WAIT = 0.5

OnFragment = Callable[[Fragment, float], None]


class DeviceGone(Exception):
    """The port went away (unplug, EOF, I/O error); the session reopens it."""


class DeviceNotFound(Exception):
    """`port = auto` found no stick."""


class CommandFailed(Exception):
    """A user command could not be carried out (no device, timeout, device said no)."""


def find_port(dev: str | None = None) -> tuple[str, str]:
    """The stick's port and model ('raven', 'emu2' or 'unknown') for `port = auto`.

    Order: the udev rules' stable links, then /dev/serial/by-id names, then USB ids and strings.
    ``dev`` defaults to $RAVEND_DEV_DIR, else /dev; it is looked at again at every (re)open, so
    a stick that comes back under another name is found.
    """
    dev = dev or os.environ.get(DEV_DIR_ENV) or "/dev"
    for name in UDEV_LINKS:
        link = os.path.join(dev, name)
        if os.path.exists(link):
            return link, ("emu2" if "emu2" in name else "unknown")
    for path in sorted(glob.glob(os.path.join(dev, "serial/by-id/*"))):
        name = os.path.basename(path)
        if "RAVEn" in name or "RFA-Z106" in name:
            return path, "raven"
        if "Rainforest" in name and "EMU" in name.upper():
            return path, "emu2"
    if os.path.normpath(dev) != "/dev":
        raise DeviceNotFound(f"no RAVEn or EMU-2 found (looked for {dev}/raven and"
                             f" {dev}/serial/by-id/*Rainforest*); is the stick plugged in?")
    try:
        from serial.tools import list_ports
    except ImportError:  # pragma: no cover - python3-serial is a hard dependency
        raise DeviceNotFound("python3-serial is not installed") from None
    for info in list_ports.comports():
        if (info.vid, info.pid) == RAVEN_USB:
            return info.device, "raven"
        texts = f"{info.manufacturer or ''} {info.product or ''}"
        if (info.vid, info.pid) == EMU2_USB and "Rainforest" in texts:
            return info.device, "emu2"
    raise DeviceNotFound(
        "no RAVEn or EMU-2 found (looked for /dev/raven, /dev/serial/by-id/*Rainforest*,"
        " USB 0403:8a28 and Rainforest 04b4:0003); is the stick plugged in?"
    )


@dataclass
class _Waiter:
    tag: str
    event: threading.Event = field(default_factory=threading.Event)
    fragment: Fragment | None = None


@dataclass
class DeviceStats:
    connected: bool = False
    reconnects: int = 0
    fragments: int = 0
    decode_errors: int = 0
    discarded_bytes: int = 0
    last_fragment_at: float = 0.0
    model: str = "unknown"
    port: str = ""


class DeviceSession:
    """Owns the port for the life of the service; ``run`` returns only when ``stop`` is called."""

    def __init__(self, config: DeviceConfig, on_fragment: OnFragment) -> None:
        self.config = config
        self.on_fragment = on_fragment
        self.stats = DeviceStats()
        self.decoder = StreamDecoder()
        self.device_mac = ""
        self.meter_mac = ""
        # The latest fragment of each root tag, for `ravenctl device info` without a round trip.
        self.latest: dict[str, Fragment] = {}
        self._serial: Serial | None = None
        self._stop = threading.Event()
        self._write_lock = threading.Lock()
        self._last_write = 0.0
        self._waiters: list[_Waiter] = []
        self._waiters_lock = threading.Lock()
        # (monotonic time, order of scheduling, command name): sends in time, then FIFO order.
        self._due: list[tuple[float, int, str]] = []
        self._order = itertools.count()
        self._last_demand = 0.0
        self._last_byte = 0.0
        self._noise_bytes = 0
        self._noise_fragments = 0  # decode errors in the burst (fields too wide, out of range)
        self._noise_reasons: set[str] = set()
        self._noise_since = 0.0
        self._reopen_requested = threading.Event()
        # After a SIGHUP the stick is (usually) the same one mid-stream: a fragment cut by the
        # reopen continues in the tty buffer, so the decoder keeps its state across it.
        self._stream_continues = False

    def __repr__(self) -> str:
        return (f"<DeviceSession {self.stats.port or self.config.port} model={self.stats.model}"
                f" connected={self.stats.connected}>")

    # --- public ------------------------------------------------------------------------------

    def stop(self) -> None:
        self._stop.set()
        self.stop_read()

    def reopen(self) -> None:
        """SIGHUP: close and reopen the port (a replugged stick, a changed symlink)."""
        self._reopen_requested.set()
        self.stop_read()

    def stop_read(self) -> None:
        """Wake the reader; not every URL handler can cancel, the read timeout then ends it."""
        ser = self._serial
        if ser is not None:
            with contextlib.suppress(Exception):
                ser.cancel_read()

    def request(self, name: str, args: dict[str, object] | None = None,
                timeout: float | None = None) -> Fragment | None:
        """Send a validated command and wait for its reply fragment (None if it has none)."""
        command = commands.build(name, args)  # CommandError before anything reaches the wire
        if self._serial is None or not self.stats.connected:
            raise CommandFailed("the meter stick is not connected")
        waiter = _Waiter(command.reply_tag) if command.reply_tag else None
        if waiter:
            with self._waiters_lock:
                self._waiters.append(waiter)
        try:
            self._send(command, wait_spacing=True)
            if waiter is None:
                return None
            if not waiter.event.wait(timeout or self.config.reply_timeout):
                raise CommandFailed(f"no {command.reply_tag} reply to {name} within"
                                    f" {timeout or self.config.reply_timeout:g}s")
            return waiter.fragment
        finally:
            if waiter:
                with self._waiters_lock:
                    if waiter in self._waiters:
                        self._waiters.remove(waiter)

    # --- the reader thread ---------------------------------------------------------------------

    def run(self) -> None:
        backoff = Backoff(self.config.reconnect_min, self.config.reconnect_max)
        lost_at: float | None = None
        first_failure = ""
        while not self._stop.is_set():
            try:
                port = self._open()
            except (DeviceNotFound, DeviceGone) as exc:
                if lost_at is None:
                    lost_at = time.monotonic()
                if str(exc) != first_failure:
                    log.warning("device unavailable: %s (retrying, backoff up to %gs)", exc,
                                self.config.reconnect_max)
                    first_failure = str(exc)
                self._stop.wait(backoff.next())
                continue
            if lost_at is not None:
                log.info("device back on %s after %.0fs", port, time.monotonic() - lost_at)
            else:
                log.info("device opened on %s", port)
            lost_at, first_failure = None, ""
            backoff.reset()
            try:
                self._session()
            except DeviceGone as exc:
                if not self._stop.is_set():
                    log.warning("device lost on %s: %s", port, exc)
                    lost_at = time.monotonic()
                    self.stats.reconnects += 1
            finally:
                self._close()
        self._flush_noise(force=True)

    def _open(self) -> str:
        import serial  # deferred: `ravend --check-config` and ravenctl work without pyserial

        port = self.config.port
        model = self.config.model
        if port == "auto":
            port, found_model = find_port()
            model = found_model if model == "auto" else model
        try:
            try:
                # exclusive: a second logger (or ModemManager) must not share the tty with us.
                ser = serial.serial_for_url(port, baudrate=self.config.baudrate, timeout=1.0,
                                            exclusive=True, do_not_open=True)
            except TypeError:  # URL handlers that do not know `exclusive`
                ser = serial.serial_for_url(port, baudrate=self.config.baudrate, timeout=1.0,
                                            do_not_open=True)
            # pyserial flushes the tty's input on open; what the stick sent while the port was
            # closed (a SIGHUP reopen, a slow restart) is readings, so keep it. pyserial 3.5's
            # posix open() calls the private _reset_input_buffer (TCIFLUSH): replace both.
            # Monkeypatched on purpose: the stubs allow neither assigning to a method nor the
            # private one.
            ser.reset_input_buffer = _keep_input  # type: ignore[method-assign]
            ser._reset_input_buffer = _keep_input  # type: ignore[attr-defined]
            try:
                ser.open()
            finally:
                del ser.reset_input_buffer, ser._reset_input_buffer  # type: ignore[attr-defined]
        except (serial.SerialException, OSError, ValueError) as exc:
            self._stream_continues = False
            raise DeviceGone(f"cannot open {port}: {_short(exc)}") from exc
        self._serial = ser
        if not self._stream_continues:
            self.decoder.reset()  # leftovers of a previous link are not the start of this one
        self._stream_continues = False
        self.stats.port = port
        self.stats.model = model if model != "auto" else "unknown"
        self.stats.connected = True
        now = time.monotonic()
        self._last_byte = now
        self._last_demand = now
        spacing = self.config.command_spacing
        # Identify first, then learn the meters, time and price; pushes flow meanwhile.
        names = ["get_device_info", "get_connection_status", "get_meter_list", "get_time",
                 "get_current_price", "get_current_summation_delivered"]
        self._due = [(now + 0.2 + i * spacing, next(self._order), n) for i, n in enumerate(names)]
        return port

    def _close(self) -> None:
        self.stats.connected = False
        ser, self._serial = self._serial, None
        if ser is not None:
            # Closing a vanished port may fail any way it likes; it is gone either way.
            with contextlib.suppress(Exception):
                ser.close()
        if not self._stream_continues:
            for item in self.decoder.feed(b""):
                self._handle(item, time.time())
        with self._waiters_lock:
            for waiter in self._waiters:
                waiter.event.set()  # wake them; fragment None → CommandFailed upstream

    def _session(self) -> None:
        import serial

        ser = self._serial
        assert ser is not None
        while not self._stop.is_set():
            if self._reopen_requested.is_set():
                self._reopen_requested.clear()
                self._stream_continues = True
                raise DeviceGone("reopen requested (SIGHUP)")
            try:
                self._run_due()
            except CommandFailed as exc:
                raise DeviceGone(str(exc)) from exc
            wait = self._read_wait()
            if abs((ser.timeout or 0) - wait) > 0.5:
                ser.timeout = wait  # reconfigures the tty: only when it really changes
            try:
                data = ser.read(max(1, min(READ_SIZE, ser.in_waiting or 1)))
                if not data:
                    # pyserial returns b"" on timeout; a closed pty or TCP peer raises instead.
                    if time.monotonic() - self._last_byte > self.config.silence_timeout:
                        raise DeviceGone(f"no data for {self.config.silence_timeout:g}s")
                    continue
                more = ser.in_waiting
                if more:
                    data += ser.read(min(more, READ_SIZE * 16))
            except serial.SerialException as exc:
                raise DeviceGone(_short(exc)) from exc
            except OSError as exc:
                raise DeviceGone(_short(exc)) from exc
            self._last_byte = time.monotonic()
            received_at = time.time()
            for item in self.decoder.feed(data):
                self._handle(item, received_at)
            self._flush_noise()
        self._finish_fragment(ser)

    def _finish_fragment(self, ser: Serial) -> None:
        """Stopping: a fragment half read would be cut by the close, and its reading lost
        although the stick is sending it. Read on to its end (a few ms at 115200 baud), one
        byte at a time so that the next fragment is not begun, for at most FINISH_WAIT."""
        deadline = time.monotonic() + FINISH_WAIT
        if not self.decoder.framer.in_fragment:
            return
        with contextlib.suppress(Exception):  # the port may be gone: then so is the fragment
            ser.timeout = 0.05
            while self.decoder.framer.in_fragment and time.monotonic() < deadline:
                data = ser.read(1)
                if data:
                    for item in self.decoder.feed(data):
                        self._handle(item, time.time())

    def _read_wait(self) -> float:
        now = time.monotonic()
        waits = [MAX_READ_WAIT, self.config.silence_timeout - (now - self._last_byte)]
        if self._due:
            spaced = self._last_write + self.config.command_spacing
            waits.append(max(min(t for t, _, _ in self._due), spaced) - now)
        waits.append(self._last_demand + self.config.demand_poll_after - now)
        return max(0.05, min(waits))

    def _run_due(self) -> None:
        now = time.monotonic()
        if now - self._last_demand >= self.config.demand_poll_after and not self._scheduled(
            "get_instantaneous_demand"
        ):
            self._schedule(now, "get_instantaneous_demand")
            self._last_demand = now  # poll again only after another quiet period
        if not self._scheduled("get_current_summation_delivered"):
            self._schedule(now + self.config.summation_interval, "get_current_summation_delivered")
        if not self._due:
            return
        first = min(self._due)
        when, _, name = first
        if when > now:
            return
        if now - self._last_write < self.config.command_spacing:
            return  # spaced out: the read wait ends when the spacing has passed (_read_wait)
        self._due.remove(first)
        args: dict[str, object] = {}
        if self.meter_mac and name in ("get_instantaneous_demand",
                                       "get_current_summation_delivered", "get_current_price",
                                       "get_time"):
            args["MeterMacId"] = self.meter_mac
        self._send(commands.build(name, args), wait_spacing=False)

    def _scheduled(self, name: str) -> bool:
        return any(n == name for _, _, n in self._due)

    def _schedule(self, when: float, name: str) -> None:
        self._due.append((when, next(self._order), name))

    def _send(self, command: commands.Command, *, wait_spacing: bool) -> None:
        import serial

        with self._write_lock:
            ser = self._serial
            if ser is None:
                raise CommandFailed("the meter stick is not connected")
            if wait_spacing:
                delay = self._last_write + self.config.command_spacing - time.monotonic()
                if delay > 0:
                    time.sleep(delay)
            try:
                ser.write(command.encode())
            except (serial.SerialException, OSError) as exc:
                log.debug("write of %s failed: %s", command.name, exc)
                raise CommandFailed(f"cannot write to the stick: {_short(exc)}") from exc
            self._last_write = time.monotonic()
        log.debug("sent %s", command.name)

    def _handle(self, item: Fragment | DecodeError | Discarded, received_at: float) -> None:
        if isinstance(item, Discarded):
            self._note_noise(item.reason, item.count)
            return
        if isinstance(item, DecodeError):
            self.stats.decode_errors += 1
            self._note_noise(str(item), len(item.raw), fragments=1)
            return
        self.stats.fragments += 1
        self.stats.last_fragment_at = received_at
        if isinstance(item, InstantaneousDemand):
            self._last_demand = time.monotonic()
        elif isinstance(item, DeviceInfo):
            self.device_mac = item.device_mac_id
            if self.stats.model == "unknown" and item.model_id:
                self.stats.model = "emu2" if "EMU" in item.model_id.upper() else "raven"
        elif isinstance(item, MeterList) and item.meter_mac_ids and not self.meter_mac:
            self.meter_mac = item.meter_mac_ids[0]
            self._schedule(time.monotonic(), "get_meter_info")
        tag = type(item).__name__
        self.latest[tag] = item
        with self._waiters_lock:
            for waiter in self._waiters:
                if waiter.tag == tag and not waiter.event.is_set():
                    waiter.fragment = item
                    waiter.event.set()
                    break
        self.on_fragment(item, received_at)

    def _note_noise(self, reason: str, count: int, fragments: int = 0) -> None:
        if not (self._noise_bytes or self._noise_fragments):
            self._noise_since = time.monotonic()
        self._noise_bytes += count
        self._noise_fragments += fragments
        self.stats.discarded_bytes += count
        if len(self._noise_reasons) < 5:
            self._noise_reasons.add(reason)

    def _flush_noise(self, force: bool = False) -> None:
        """One log line per burst of bad input, never one per byte or per read."""
        if not (self._noise_bytes or self._noise_fragments):
            return
        if not force and time.monotonic() - self._noise_since < NOISE_LOG_INTERVAL:
            return
        refused = self._noise_fragments
        log.warning("skipped %d bytes of bad input (%s%s)", self._noise_bytes,
                    f"{refused} fragment{'s' if refused != 1 else ''} could not be decoded: "
                    if refused else "", "; ".join(sorted(self._noise_reasons)))
        self._noise_bytes = 0
        self._noise_fragments = 0
        self._noise_fragments = 0  # decode errors in the burst (fields too wide, out of range)
        self._noise_reasons.clear()


def _keep_input() -> None:
    """Stands in for ``Serial.reset_input_buffer`` while the port opens."""


def _short(exc: BaseException) -> str:
    text = str(exc) or type(exc).__name__
    return text.splitlines()[0][:200]
