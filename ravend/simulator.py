"""A RAVEn / EMU-2 meter stick emulated on a pseudo-terminal, for tests, benchmarks and demos.

ravend has to be exercised without hardware, and a test that compares what ravend stored with what
the "meter" said is only honest if the meter side is an independent generator. So this module never
imports ravend's framer or decoder: it formats the XML fragments itself, byte for byte the way the
devices do (RAVEn: two-space indent and CRLF; EMU-2: four spaces and LF), and keeps a thread-safe
record of every reading whose last byte reached the wire (``sent_readings()``) and of every command
the host wrote (``received_commands()``, ``received_bytes()``).

The device side is a real pty (not a socket or a pipe), so the code under test opens it with
pyserial or ``os.open`` exactly as it opens ``/dev/ttyUSB0``; ``unplug()`` closes the master, which
the reader sees as EOF/EIO just as on a real unplug. One writer thread writes everything, so a
fragment is never interleaved with another, and its writes are paced by the reader: the flat-out
mode (``send_readings``) measures ravend's throughput, not the simulator's.

Values come from ``random.Random(seed)`` alone: the same seed and the same sequence of calls give
the same bytes (push timing, and so the interleaving of pushes, follows the real clock).
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import functools
import heapq
import inspect
import itertools
import os
import pty
import random
import re
import select
import signal
import struct
import sys
import termios
import threading
import time
import tty
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from types import FrameType

from ravend.protocol.model import METER_EPOCH_OFFSET, Kind

__all__ = ["PERSONALITIES", "QUIRKS", "MeterSimulator", "SentReading", "main"]

#: Every quirk the simulator can put on the wire, with what it does (also the CLI's --help text).
QUIRKS: dict[str, str] = {
    "negative_demand": "exporting solar: some demands are negative (8-digit two's complement)",
    "multiplier3": "Multiplier 0x00000003 (raw values a third of the true value)",
    "zero_divisor": "Multiplier and Divisor 0x00000000 (zero means 1: raw values in kW / kWh)",
    "wide_summation": "summation values above 2^32",
    "unset_timestamp": "some TimeStamps are 0xffffffff (not set)",
    "partial_start": "the very first bytes on the wire are the tail of a demand fragment",
    "nul_noise": "NUL bytes, stray CR, blank lines and bytes >= 0x80 between fragments",
    "cp1252_text": "cp1252 bytes and 0xff filler in labels and messages; HTML-escaped message text",
    "duplicates": "now and then a reading fragment is sent twice, byte-identical",
    "clock_backwards": "now and then a TimeStamp earlier than the previous (never a used key)",
    "no_indent": "child elements at column 0 (seen on EMU-2)",
    "unknown_fragment": "fragments with an unknown root tag; unknown child fields in known ones",
}

# How often the random quirks strike (per fragment). High enough that a test sending a few dozen
# readings sees every quirk, low enough that most of the stream stays ordinary.
_P_NOISE = 0.25
_P_UNKNOWN_ROOT = 0.08
_P_EXTRA_CHILD = 0.15
_P_DUPLICATE = 0.1
_P_BACKWARDS = 0.12
_P_UNSET = 0.1
_P_SOLAR_FLIP = 0.2

#: Default push intervals in simulated seconds (RAVEn XML API defaults), in push order.
DEFAULT_SCHEDULE: dict[str, int] = {
    "demand": 8,
    "summation": 240,
    "price": 90,
    "message": 120,
    "time": 900,
}
_PUSH_ORDER = tuple(DEFAULT_SCHEDULE)

_MAX_COMMAND = 16 * 1024  # a <Command> longer than this is garbage: drop it, as a device would
_UNSET = "0xffffffff"


@dataclass(frozen=True, slots=True)
class _Personality:
    name: str
    model_id: str
    newline: bytes
    indent: int
    device_prefix: str
    fw_version: str
    hw_version: str
    image_type: str
    date_code: str
    digits_left: str
    answers_initialize: bool  # False: the firmware answers `initialize` with "Unknown command"


PERSONALITIES: dict[str, _Personality] = {
    "raven": _Personality(
        "raven",
        "Z106-RAVEn",
        b"\r\n",
        2,
        "00158d00",
        "2.0.0 (7400)",
        "1.2.3",
        "0x1301",
        "2013022101000040",
        "0x0f",
        True,
    ),
    "emu2": _Personality(
        "emu2",
        "Z105-2-EMU2-LEDD_JM",
        b"\n",
        4,
        "d8d5b900",
        "1.1.9 (9315)",
        "2.7.3",
        "0x0000",
        "2017100612000086",
        "0x05",
        False,
    ),
}


@dataclass(frozen=True, slots=True)
class SentReading:
    """One reading as the simulator put it on the wire: what ravend should end up storing.

    Fragments without Multiplier/Divisor or TimeStamp are recorded the way a reader would scale
    and time them: a price has multiplier 1 and divisor 10**TrailingDigits; LastPeriodUsage,
    which has no TimeStamp, is timed by its EndDate.
    """

    meter_mac: str  # '0x' + 16 lower-case hex digits
    kind: str  # a Kind value
    meter_time: int | None  # Unix seconds UTC of the fragment's TimeStamp; None when 0xffffffff
    raw: int  # signed integer value as meant (-1482 for 0xfffffa36)
    multiplier: int  # as sent
    divisor: int  # as sent

    @property
    def key(self) -> tuple[str, str, int | None]:
        return (self.meter_mac, self.kind, self.meter_time)


_Out = tuple[bytes, list[SentReading]]


@dataclass(slots=True)
class _Stamps:
    """Timestamps used so far for one (meter, fragment kind): keeps keys unique."""

    last: int | None = None  # the previous timestamp sent
    hi: int | None = None  # the highest one sent
    used: set[int] = field(default_factory=set)  # only kept with the clock_backwards quirk


@dataclass(slots=True)
class _Meter:
    """The state of one simulated meter: the simulator's single source of values."""

    mac: str
    demand_w: float
    delivered_wh: float
    received_wh: float
    period_start: int
    period_base_wh: float
    last_usage_wh: float
    last_start: int
    last_end: int
    price: int
    trailing_digits: int
    tier: int
    rate_label: bytes
    message_id: int
    message_text: bytes
    ext_pan_id: str
    short_addr: int
    solar: bool = False
    energy_t: float | None = None  # simulated Unix time up to which energy is integrated
    message_confirmed: bool = False
    nick_name: str = "Home"
    account: str = ""
    auth: str = ""
    host: str = ""
    enabled: bool = True
    fast_freq: int = 0
    fast_until: float = 0.0  # simulated Unix time
    schedule: dict[str, list[int | bool]] = field(default_factory=dict)  # event -> [freq, on]
    due: dict[str, float] = field(default_factory=dict)  # event -> monotonic time

    def net_w(self) -> float:
        return -0.6 * self.demand_w if self.solar else self.demand_w

    def net_wh(self) -> float:
        return self.delivered_wh - self.received_wh


@dataclass(slots=True)
class _Port:
    master: int
    slave: int
    name: str
    closing: bool = False
    closed: bool = False


@dataclass(slots=True)
class _Bulk:
    """A send_readings() request, produced one fragment at a time so pushes can interleave."""

    n: int
    kinds: tuple[str, ...]
    flat: bool
    i: int = 0
    next_at: float = 0.0


def _hex(value: int, digits: int) -> str:
    return f"0x{value:0{digits}x}"


def _demand_hex(raw: int) -> str:
    """6 digits when >= 0, else 8 digits of 32-bit two's complement: what the devices print."""
    return f"0x{raw:06x}" if raw >= 0 else f"0x{raw & 0xFFFFFFFF:08x}"


def _u64_hex(raw: int) -> str:
    return f"0x{raw & 0xFFFFFFFFFFFFFFFF:016x}"


def _stamp_hex(unix: int | None) -> str:
    if unix is None:
        return _UNSET
    return f"0x{(unix - METER_EPOCH_OFFSET) & 0xFFFFFFFF:08x}"


def _parse_hex(text: str) -> int:
    return int(text.strip(), 16)


class MeterSimulator:
    """A RAVEn or EMU-2 on a pty: pushes readings on a schedule and answers commands.

    ``speed`` scales the push schedule and the meter clock (speed 60: a demand every 8/60 s, and
    the meter's clock advances a minute per second); ``reply_delay`` is real time.
    """

    def __init__(
        self,
        personality: str = "raven",
        *,
        link: str | None = None,
        seed: int = 0,
        speed: float = 1.0,
        meters: int = 1,
        quirks: Iterable[str] = (),
        start_time: int = 1_700_000_000,
        reply_delay: float = 0.05,
        pushes: bool = True,
        first_push_delay: float = 0.5,
        record: bool = True,
    ) -> None:
        key = personality.lower().replace("-", "").replace("_", "")
        if key not in PERSONALITIES:
            raise ValueError(f"unknown personality {personality!r} (use 'raven' or 'emu2')")
        if speed <= 0:
            raise ValueError("speed must be > 0")
        if meters < 1:
            raise ValueError("meters must be >= 1")
        if isinstance(quirks, str):
            quirks = (quirks,)
        qs = frozenset(quirks)
        unknown = sorted(qs - QUIRKS.keys())
        if unknown:
            raise ValueError(f"unknown quirk(s) {unknown}; known: {', '.join(QUIRKS)}")
        self._p = PERSONALITIES[key]
        self.personality = key
        self.quirks = qs
        self.seed = seed
        self.speed = float(speed)
        self.start_time = int(start_time)
        self.reply_delay = float(reply_delay)
        self.first_push_delay = float(first_push_delay)
        self._link = link
        self._pushes = pushes
        self._record = record  # False: count readings but keep no list (endless flat-out runs)
        self._indent = b"" if "no_indent" in qs else b" " * self._p.indent
        self._rng = random.Random(seed)
        rng = self._rng

        self.device_mac = f"0x{self._p.device_prefix}{rng.getrandbits(32):08x}"
        self.meter_macs: list[str] = []
        while len(self.meter_macs) < meters:
            prefix = rng.choice(("00135003", "00078100", "001c6400"))
            mac = f"0x{prefix}{rng.getrandbits(32):08x}"
            if mac not in self.meter_macs:
                self.meter_macs.append(mac)
        self._install_code = f"0x{rng.getrandbits(64):016x}"
        self._link_key = f"0x{rng.getrandbits(128):032x}"
        self._channel = rng.randint(11, 26)
        self._tz_offset = rng.choice((-8, -7, -6, -5, 0, 1, 10)) * 3600
        self._meters = [self._new_meter(mac) for mac in self.meter_macs]
        self._stamps: dict[tuple[str, str], _Stamps] = {}
        for m in self._meters:
            self._stamps[(m.mac, "last_period_usage")] = _Stamps(m.last_end, m.last_end)

        self._cv = threading.Condition()  # guards queues, _port swaps, and wakes the writer
        self._fd_lock = threading.Lock()  # held around every read/write/close of the pty fds
        self._rec_lock = threading.Lock()  # guards the records below
        self._sent: list[SentReading] = []
        self._counts: dict[str, int] = {}
        self._commands: list[tuple[str, dict[str, str]]] = []
        self._received = bytearray()
        self._timed: list[tuple[float, int, Callable[[], list[_Out]]]] = []
        self._jobs: deque[bytes | _Bulk] = deque()
        self._seq = itertools.count()
        self._port: _Port | None = None
        self._last_name = ""
        self._threads: list[threading.Thread] = []
        self._stop_evt = threading.Event()
        self._started = False
        self._stopped = False
        self._first_output = True
        self._busy = False  # the writer is between picking an item and going idle
        self._paused_until = 0.0  # monotonic; pushes wait while a restart cycle runs
        self._t0 = time.monotonic()

    # ----------------------------------------------------------------------------- public API

    @property
    def port(self) -> str:
        """What to give ravend as its port: the link if one was asked for, else /dev/pts/N."""
        return self._link if self._link is not None else self._last_name

    @property
    def slave_name(self) -> str:
        """The pty slave currently (or last) behind the port."""
        return self._last_name

    @property
    def model(self) -> str:
        return self._p.model_id

    @property
    def plugged(self) -> bool:
        port = self._port
        return port is not None and not port.closing

    def start(self) -> MeterSimulator:
        """Open the pty, create the link, start the writer and command-reader threads."""
        if self._started:
            return self
        if self._stopped:
            raise RuntimeError("a stopped simulator cannot be restarted; make a new one")
        self._started = True
        self._t0 = time.monotonic()
        try:
            self._plug()
        except BaseException:
            self.stop()  # e.g. the link path is taken: leave no pty open behind
            raise
        for name, target in (("writer", self._writer_loop), ("reader", self._reader_loop)):
            t = threading.Thread(target=target, name=f"meter-sim-{name}", daemon=True)
            self._threads.append(t)
            t.start()
        return self

    def stop(self) -> None:
        """Stop the threads (joined within 2 s), close the pty and remove the link. Idempotent."""
        if self._stopped:
            return
        self._stopped = True
        self._stop_evt.set()
        with self._cv:
            self._cv.notify_all()
        deadline = time.monotonic() + 2.0
        for t in self._threads:
            t.join(max(0.0, deadline - time.monotonic()))
        self._close_port(drain_timeout=0.0)

    def __enter__(self) -> MeterSimulator:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def unplug(self, *, mid_fragment: bool = False, drain_timeout: float = 0.5) -> None:
        """Pull the stick: close the pty (the reader gets EOF/EIO) and remove the link.

        Waits up to ``drain_timeout`` for a reader to take what is already written, so the readings
        counted as sent did reach it; with ``mid_fragment`` the last bytes before the cut are the
        first half of a demand fragment (not recorded as sent).
        """
        self._close_port(drain_timeout=drain_timeout, half=mid_fragment)

    def replug(self, link: str | None = None) -> None:
        """Plug a stick back in: a new pty, the link (old or new path) pointing to it."""
        if not self._started or self._stopped:
            raise RuntimeError("replug() needs a started simulator")
        if self.plugged:
            self.unplug(drain_timeout=0.0)
        if link is not None:
            self._link = link
        self._plug()

    def set_pushes(self, enabled: bool) -> None:
        """Switch the push schedule on or off (on: first pushes ``first_push_delay`` from now)."""
        with self._cv:
            if enabled and not self._pushes:
                self._reset_due(time.monotonic() + self.first_push_delay)
            self._pushes = enabled
            self._cv.notify_all()

    def send_readings(
        self, n: int, kinds: Sequence[str] = ("demand",), *, flat_out: bool = True
    ) -> None:
        """Queue n reading fragments (kinds taken in turn, meters round-robin); returns at once.

        ``flat_out``: as fast as the reader takes them, each with the next meter timestamp (so the
        bytes depend on the seed only); else one per demand interval, stamped by the meter clock.
        A summation fragment records two readings (delivered and received). Use ``wait_for`` to
        wait until they are written.
        """
        if n < 0:
            raise ValueError("n must be >= 0")
        ks = tuple(Kind(k).value for k in kinds)
        if not ks:
            raise ValueError("kinds must not be empty")
        with self._cv:
            self._jobs.append(_Bulk(n, ks, flat_out, 0, time.monotonic()))
            self._cv.notify_all()

    def write_raw(self, data: bytes) -> None:
        """Inject arbitrary bytes, in order with the fragments (between two of them)."""
        with self._cv:
            self._jobs.append(bytes(data))
            self._cv.notify_all()

    def sent_readings(self) -> list[SentReading]:
        """Every reading written complete on the wire, in order; a duplicate appears twice."""
        with self._rec_lock:
            return list(self._sent)

    def sent_count(self, kind: str | None = None) -> int:
        """How many readings (of one kind) were written complete; cheap, and kept without record."""
        with self._rec_lock:
            if kind is None:
                return sum(self._counts.values())
            return self._counts.get(Kind(kind).value, 0)

    def received_commands(self) -> list[tuple[str, dict[str, str]]]:
        """(Name, {other child tag: text}) of every <Command> received, in order."""
        with self._rec_lock:
            return [(name, dict(fields)) for name, fields in self._commands]

    def received_bytes(self) -> bytes:
        """Every byte the host wrote, as written."""
        with self._rec_lock:
            return bytes(self._received)

    def idle(self) -> bool:
        """True when nothing is being or waiting to be written (replies, raw, send_readings)."""
        with self._cv:
            return not self._jobs and not self._timed and not self._busy

    def drain(self, timeout: float = 1.0) -> bool:
        """Wait until everything queued is written and a reader has taken it; True if so."""
        deadline = time.monotonic() + timeout
        while not self.idle():
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.01)
        port = self._port
        if port is None:
            return False
        return self._drain(port, max(0.0, deadline - time.monotonic()))

    def wait_for(self, predicate: Callable[..., object], timeout: float) -> bool:
        """Poll ``predicate()`` (or ``predicate(sim)``) until true or ``timeout`` s; its result."""
        try:
            wants_sim = bool(inspect.signature(predicate).parameters)
        except (TypeError, ValueError):
            wants_sim = False
        deadline = time.monotonic() + timeout
        while True:
            if predicate(self) if wants_sim else predicate():
                return True
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.01)

    # ---------------------------------------------------------------------------- pty and link

    def _plug(self) -> None:
        master, slave = pty.openpty()
        tty.setraw(slave)  # nothing echoed or translated: the bytes are the device's bytes
        os.set_blocking(master, False)  # lets unplug()/stop() interrupt a write nobody reads
        port = _Port(master, slave, os.ttyname(slave))
        with self._cv:
            self._port = port
            self._last_name = port.name
            self._reset_due(time.monotonic() + self.first_push_delay)
            self._cv.notify_all()
        if self._link is not None:
            self._point_link(self._link, port.name)

    def _close_port(self, *, drain_timeout: float, half: bool = False) -> None:
        with self._cv:
            port = self._port
            if port is None:
                return
            port.closing = True  # the writer writes no further byte to this port
            self._timed.clear()  # replies die with the device
            self._cv.notify_all()
        if half:
            data = self._loose_demand()
            with self._fd_lock, contextlib.suppress(OSError):
                os.write(port.master, data[: len(data) // 2])
        if drain_timeout > 0:
            self._drain(port, drain_timeout)
        with self._fd_lock:
            for fd in (port.master, port.slave):
                with contextlib.suppress(OSError):
                    os.close(fd)
            port.closed = True
        with self._cv:
            if self._port is port:
                self._port = None
        if self._link is not None:
            self._remove_link(self._link, port.name)

    @staticmethod
    def _drain(port: _Port, timeout: float) -> bool:
        """Wait until the slave's input queue stays empty (a reader took everything)."""
        deadline = time.monotonic() + timeout
        empty = 0
        while empty < 3:
            try:
                raw = fcntl.ioctl(port.slave, termios.FIONREAD, b"\0\0\0\0")
                pending = struct.unpack("i", raw)[0]
            except OSError:
                return False
            empty = empty + 1 if pending == 0 else 0
            if empty < 3 and time.monotonic() >= deadline:
                return False
            time.sleep(0.01)
        return True

    @staticmethod
    def _point_link(path: str, target: str) -> None:
        if os.path.lexists(path) and not os.path.islink(path):
            raise FileExistsError(f"{path} exists and is not a symlink; not replacing it")
        tmp = f"{path}.{os.getpid()}.{threading.get_ident()}.tmp"
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        os.symlink(target, tmp)
        os.replace(tmp, path)  # atomic repoint: a reader never sees the link missing mid-swap

    @staticmethod
    def _remove_link(path: str, target: str) -> None:
        with contextlib.suppress(OSError):
            if os.path.islink(path) and os.readlink(path) == target:
                os.unlink(path)

    def _write(self, port: _Port, data: bytes) -> bool:
        """Write all of data unless the port goes away; True when the last byte was written."""
        view = memoryview(data)
        off = 0
        while off < len(view):
            if port.closing or self._stop_evt.is_set():
                return False
            with self._fd_lock:
                if port.closing or port.closed:
                    return False
                try:
                    off += os.write(port.master, view[off:])
                    continue
                except BlockingIOError:
                    pass  # the pty is full: wait below until the reader takes some
                except OSError:
                    return False
            try:
                select.select([], [port.master], [], 0.05)
            except (OSError, ValueError):
                return False
        return True

    # ------------------------------------------------------------------------------- threads

    def _reader_loop(self) -> None:
        """Collect what the host writes and cut it into <Command>…</Command> (may arrive split)."""
        buf = bytearray()
        current: _Port | None = None
        while not self._stop_evt.is_set():
            port = self._port
            if port is not current:
                buf.clear()
                current = port
            if port is None or port.closing:
                self._stop_evt.wait(0.02)
                continue
            try:
                readable, _, _ = select.select([port.master], [], [], 0.05)
            except (OSError, ValueError):
                self._stop_evt.wait(0.02)
                continue
            if not readable:
                continue
            with self._fd_lock:
                if port.closed or port.closing:
                    continue
                try:
                    data = os.read(port.master, 4096)
                except BlockingIOError:
                    continue
                except OSError:
                    data = b""
            if not data:
                self._stop_evt.wait(0.02)
                continue
            with self._rec_lock:
                self._received += data
            buf += data
            self._cut_commands(buf)

    def _cut_commands(self, buf: bytearray) -> None:
        while True:
            start = buf.find(b"<Command>")
            if start < 0:
                del buf[: max(0, len(buf) - 8)]  # keep a possible split "<Command" prefix
                return
            end = buf.find(b"</Command>", start)
            if end < 0:
                del buf[:start]
                if len(buf) > _MAX_COMMAND:
                    del buf[:9]
                return
            body = bytes(buf[start + 9 : end])
            del buf[: end + 10]
            self._on_command(body)

    def _on_command(self, body: bytes) -> None:
        fields: dict[str, str] = {}
        for tag, text in re.findall(rb"<([A-Za-z_][\w.-]*)>([^<]*)</\1>", body):
            fields[tag.decode("latin-1")] = text.decode("latin-1").strip()
        name = fields.pop("Name", "")
        with self._rec_lock:
            self._commands.append((name, dict(fields)))
        self._schedule(self.reply_delay, functools.partial(self._answer, name, fields))

    def _schedule(self, delay: float, fn: Callable[[], list[_Out]]) -> None:
        with self._cv:
            heapq.heappush(self._timed, (time.monotonic() + delay, next(self._seq), fn))
            self._cv.notify_all()

    def _writer_loop(self) -> None:
        """The only thread that writes to the pty and the only one that changes meter state."""
        while not self._stop_evt.is_set():
            port = self._port
            if port is None or port.closing:
                with self._cv:
                    self._busy = False
                    self._cv.wait(0.05)
                continue
            now = time.monotonic()
            reply: Callable[[], list[_Out]] | None = None
            job: bytes | _Bulk | None = None
            with self._cv:
                self._busy = True  # until _idle_wait: idle() must not say "done" mid-fragment
                if self._timed and self._timed[0][0] <= now:
                    reply = heapq.heappop(self._timed)[2]
                elif self._jobs:
                    job = self._jobs[0]
                    if isinstance(job, bytes):
                        self._jobs.popleft()
            if reply is not None:
                for data, readings in reply():
                    if not self._emit(port, data, readings):
                        break
                continue
            if isinstance(job, bytes):
                self._first_output = False
                self._write(port, job)
                continue
            if job is not None and (job.flat or job.next_at <= now):
                self._bulk_step(port, job)
                continue
            if self._push_due(port, now):
                continue
            self._idle_wait(now, job)

    def _idle_wait(self, now: float, job: _Bulk | None) -> None:
        wake = now + 0.1
        with self._cv:
            self._busy = False
            if self._timed:
                wake = min(wake, self._timed[0][0])
            if job is not None:
                wake = min(wake, job.next_at)
            if self._pushes:
                for m in self._meters:
                    for ev, (_, on) in m.schedule.items():
                        if on:
                            wake = min(wake, max(m.due[ev], self._paused_until))
            timeout = wake - time.monotonic()
            if timeout > 0:
                self._cv.wait(timeout)

    def _bulk_step(self, port: _Port, job: _Bulk) -> None:
        if job.i >= job.n:
            self._pop_job(job)
            return
        kind = job.kinds[job.i % len(job.kinds)]
        m = self._meters[(job.i // len(job.kinds)) % len(self._meters)]
        job.i += 1
        if not job.flat:
            interval = int(m.schedule["demand"][0]) / self.speed
            job.next_at = max(job.next_at + interval, time.monotonic())
        data, readings = self._reading_fragment(m, kind, flat=job.flat)
        if job.i >= job.n:
            self._pop_job(job)
        self._emit(port, data, readings)

    def _pop_job(self, job: _Bulk) -> None:
        with self._cv:
            if self._jobs and self._jobs[0] is job:
                self._jobs.popleft()

    def _push_due(self, port: _Port, now: float) -> bool:
        """Write the earliest push that is due, if any; True when one was written."""
        if not self._pushes or now < self._paused_until:
            return False
        best: tuple[float, int, _Meter, str] | None = None
        sim_now = self._sim_now()
        for mi, m in enumerate(self._meters):
            for ev in _PUSH_ORDER:
                if not m.schedule[ev][1] or m.due[ev] > now:
                    continue
                cand = (m.due[ev], mi * 10 + _PUSH_ORDER.index(ev), m, ev)
                if best is None or cand[:2] < best[:2]:
                    best = cand
        if best is None:
            return False
        _, _, m, ev = best
        freq = int(m.schedule[ev][0])
        if ev == "demand" and m.fast_freq and sim_now < m.fast_until:
            freq = m.fast_freq
        interval = max(freq, 1) / self.speed
        nxt = m.due[ev] + interval
        m.due[ev] = nxt if nxt > now else now + interval
        data, readings = self._push_fragment(m, ev)
        self._emit(port, data, readings)
        return True

    def _reset_due(self, at: float) -> None:
        for i, m in enumerate(self._meters):
            for j, ev in enumerate(_PUSH_ORDER):
                m.due[ev] = at + 0.02 * i + 0.001 * j  # stagger meters; keep push order

    def _emit(self, port: _Port, data: bytes, readings: list[SentReading]) -> bool:
        """Write one fragment (with the stream quirks around it); record its readings if whole."""
        rng = self._rng
        if self._first_output:
            self._first_output = False
            if "partial_start" in self.quirks:
                tail = self._loose_demand()
                self._write(port, tail[rng.randint(len(tail) // 4, 3 * len(tail) // 4) :])
        if "nul_noise" in self.quirks and rng.random() < _P_NOISE:
            self._write(port, self._noise())
        if "unknown_fragment" in self.quirks and rng.random() < _P_UNKNOWN_ROOT:
            tag = rng.choice(("DiagnosticInfo", "RadioStatistics"))
            fields = [
                ("DeviceMacId", self.device_mac),
                ("Counter", _hex(rng.getrandbits(16), 4)),
                ("Note", "reserved"),
            ]
            self._write(port, self._frag(tag, fields, extra=False))
        if not self._write(port, data):
            return False
        if readings:
            self._note_sent(readings)
            if (
                "duplicates" in self.quirks
                and rng.random() < _P_DUPLICATE
                and self._write(port, data)
            ):
                self._note_sent(readings)
        return True

    def _note_sent(self, readings: list[SentReading]) -> None:
        with self._rec_lock:
            if self._record:
                self._sent.extend(readings)
            for r in readings:
                self._counts[r.kind] = self._counts.get(r.kind, 0) + 1

    def _noise(self) -> bytes:
        rng = self._rng
        parts: list[bytes] = []
        for _ in range(rng.randint(1, 3)):
            pick = rng.randrange(4)
            if pick == 0:
                parts.append(b"\x00" * rng.randint(1, 8))
            elif pick == 1:
                parts.append(b"\r")
            elif pick == 2:
                parts.append(self._p.newline * rng.randint(1, 2))
            else:
                parts.append(bytes(rng.randint(0x80, 0xFF) for _ in range(rng.randint(1, 6))))
        if rng.random() < 0.5:
            parts.append(self._p.newline)
        return b"".join(parts)

    # ---------------------------------------------------------------------- values and clocks

    def _new_meter(self, mac: str) -> _Meter:
        rng = self._rng
        if "wide_summation" in self.quirks:
            delivered = float((2**32 + rng.getrandbits(30)) * self._energy_unit())
        else:
            delivered = float(rng.randint(5_000_000, 90_000_000))
        received = float(rng.randint(0, 2_000_000)) if "negative_demand" in self.quirks else 0.0
        period_start = self.start_time - rng.randint(3, 25) * 86400
        price, tier = rng.choice(((0x9C, 1), (0xB4, 2), (0x13B, 3)))
        if "cp1252_text" in self.quirks:
            label = b"Tarif \xe9t\xe9" + b"\xff" * rng.randint(1, 6)
            text = b"Heures pleines &amp; creuses: tarif r\xe9duit apr\xe8s 22h\xff\xff"
        else:
            label = f"Tier {tier}".encode()
            text = b"Welcome to the energy program"
        m = _Meter(
            mac=mac,
            demand_w=rng.uniform(400.0, 2500.0),
            delivered_wh=delivered,
            received_wh=received,
            period_start=period_start,
            period_base_wh=delivered - received - rng.randint(20_000, 400_000),
            last_usage_wh=float(rng.randint(200_000, 900_000)),
            last_start=period_start - 30 * 86400,
            last_end=period_start,
            price=price,
            trailing_digits=3,
            tier=tier,
            rate_label=label,
            message_id=rng.getrandbits(32),
            message_text=text,
            ext_pan_id=mac,
            short_addr=rng.getrandbits(16),
        )
        m.schedule = {ev: [freq, True] for ev, freq in DEFAULT_SCHEDULE.items()}
        return m

    def _sim_now(self) -> float:
        return self.start_time + (time.monotonic() - self._t0) * self.speed

    def _energy_unit(self) -> int:
        """Wh per raw unit: how the (multiplier, divisor) quirks change the raw numbers."""
        if "zero_divisor" in self.quirks:
            return 1000
        if "multiplier3" in self.quirks:
            return 3
        return 1

    def _scaling(self) -> tuple[int, int]:
        if "zero_divisor" in self.quirks:
            return 0, 0
        if "multiplier3" in self.quirks:
            return 3, 1000
        return 1, 1000

    def _stamp(self, m: _Meter, group: str, *, flat: bool, quirky: bool = True) -> int | None:
        """The next TimeStamp (Unix s) for (meter, group): unique unless a quirk says otherwise."""
        rng = self._rng
        st = self._stamps.setdefault((m.mac, group), _Stamps())
        if quirky and "unset_timestamp" in self.quirks and rng.random() < _P_UNSET:
            return None
        backwards = "clock_backwards" in self.quirks
        if quirky and backwards and st.last is not None and rng.random() < _P_BACKWARDS:
            for _ in range(8):
                cand = st.last - rng.randint(1, 60)
                if cand not in st.used and cand > METER_EPOCH_OFFSET:
                    return self._use_stamp(st, cand)
        if st.hi is None:
            ts = self.start_time if flat else int(self._sim_now())
        elif flat:
            ts = st.hi + (rng.randint(1, 3) if backwards else 1)  # gaps for backward stamps
        else:
            ts = max(int(self._sim_now()), st.hi + 1)
        return self._use_stamp(st, ts)

    def _use_stamp(self, st: _Stamps, ts: int) -> int:
        st.last = ts
        st.hi = ts if st.hi is None else max(st.hi, ts)
        if "clock_backwards" in self.quirks:
            st.used.add(ts)
            if len(st.used) > 4096:  # backward stamps stay within 120 s of hi: forget the rest
                st.used = {t for t in st.used if t > st.hi - 600}
        return ts

    def _advance(self, m: _Meter, ts: int | None, *, flat: bool) -> None:
        """Integrate the current demand up to time t (simulated): summations follow demand."""
        if ts is not None:
            t = float(ts)
        elif flat:
            t = (m.energy_t if m.energy_t is not None else self.start_time) + 1.0
        else:
            t = self._sim_now()
        if m.energy_t is None:
            m.energy_t = t
            return
        dt = t - m.energy_t
        if dt <= 0:
            return
        wh = m.net_w() * min(dt, 3600.0) / 3600.0
        if wh >= 0:
            m.delivered_wh += wh
        else:
            m.received_wh -= wh
        m.energy_t = t

    def _walk(self, m: _Meter) -> None:
        rng = self._rng
        w = m.demand_w + rng.gauss(0.0, 150.0)
        if w < 200.0:
            w = 400.0 - w
        if w > 6000.0:
            w = 12000.0 - w
        m.demand_w = min(max(w, 200.0), 6000.0)
        if "negative_demand" in self.quirks and rng.random() < _P_SOLAR_FLIP:
            m.solar = not m.solar

    def _raw(self, milli: float, *, floor: bool) -> int:
        unit = self._energy_unit()
        return int(milli // unit) if floor else round(milli / unit)

    # ------------------------------------------------------------------------------ fragments

    def _frag(
        self, tag: str, fields: list[tuple[str, str | bytes]], *, extra: bool = True
    ) -> bytes:
        """One fragment, pretty-printed the way this personality prints it."""
        if extra and "unknown_fragment" in self.quirks and self._rng.random() < _P_EXTRA_CHILD:
            fields = [*fields, self._rng.choice((("Protocol", "Zigbee"), ("Port", "/dev/ttyS0")))]
        nl, ind = self._p.newline, self._indent
        out = [b"<" + tag.encode() + b">" + nl]
        for name, text in fields:
            t = text if isinstance(text, bytes) else text.encode("latin-1")
            n = name.encode()
            out.append(ind + b"<" + n + b">" + t + b"</" + n + b">" + nl)
        out.append(b"</" + tag.encode() + b">" + nl)
        return b"".join(out)

    def _loose_demand(self) -> bytes:
        """A demand fragment that is never recorded (partial start, mid-fragment unplug).

        Reads meter state without changing it, so it is safe from any thread.
        """
        m = self._meters[0]
        mult, div = self._scaling()
        fields: list[tuple[str, str | bytes]] = [
            ("DeviceMacId", self.device_mac),
            ("MeterMacId", m.mac),
            ("TimeStamp", _stamp_hex(self.start_time - 8)),
            ("Demand", _demand_hex(self._raw(m.net_w(), floor=False))),
            ("Multiplier", _hex(mult, 8)),
            ("Divisor", _hex(div, 8)),
            ("DigitsRight", "0x03"),
            ("DigitsLeft", self._p.digits_left),
            ("SuppressLeadingZero", "Y"),
        ]
        return self._frag("InstantaneousDemand", fields, extra=False)

    def _push_fragment(self, m: _Meter, event: str) -> _Out:
        if event == "demand":
            return self._demand(m, flat=False)
        if event == "summation":
            return self._summation(m, flat=False)
        if event == "price":
            return self._price(m, flat=False)
        if event == "message":
            return self._message(m), []
        return self._time_cluster(m), []

    def _reading_fragment(self, m: _Meter, kind: str, *, flat: bool) -> _Out:
        if kind == Kind.DEMAND.value:
            return self._demand(m, flat=flat)
        if kind in (Kind.SUMMATION_DELIVERED.value, Kind.SUMMATION_RECEIVED.value):
            return self._summation(m, flat=flat)
        if kind == Kind.PRICE.value:
            return self._price(m, flat=flat)
        if kind == Kind.CURRENT_PERIOD_USAGE.value:
            return self._current_usage(m, flat=flat)
        self._close_period(m, flat=flat)
        return self._last_usage(m)

    def _demand(self, m: _Meter, *, flat: bool) -> _Out:
        ts = self._stamp(m, "demand", flat=flat)
        self._advance(m, ts, flat=flat)
        self._walk(m)
        raw = self._raw(m.net_w(), floor=False)
        mult, div = self._scaling()
        fields: list[tuple[str, str | bytes]] = [
            ("DeviceMacId", self.device_mac),
            ("MeterMacId", m.mac),
            ("TimeStamp", _stamp_hex(ts)),
            ("Demand", _demand_hex(raw)),
            ("Multiplier", _hex(mult, 8)),
            ("Divisor", _hex(div, 8)),
            ("DigitsRight", "0x03"),
            ("DigitsLeft", self._p.digits_left),
            ("SuppressLeadingZero", "Y"),
        ]
        reading = SentReading(m.mac, Kind.DEMAND.value, ts, raw, mult, div)
        return self._frag("InstantaneousDemand", fields), [reading]

    def _summation(self, m: _Meter, *, flat: bool) -> _Out:
        ts = self._stamp(m, "summation", flat=flat)
        self._advance(m, ts, flat=flat)
        delivered = self._raw(m.delivered_wh, floor=True)
        received = self._raw(m.received_wh, floor=True)
        mult, div = self._scaling()
        fields: list[tuple[str, str | bytes]] = [
            ("DeviceMacId", self.device_mac),
            ("MeterMacId", m.mac),
            ("TimeStamp", _stamp_hex(ts)),
            ("SummationDelivered", _u64_hex(delivered)),
            ("SummationReceived", _u64_hex(received)),
            ("Multiplier", _hex(mult, 8)),
            ("Divisor", _hex(div, 8)),
            ("DigitsRight", "0x01"),
            ("DigitsLeft", "0x06"),
            ("SuppressLeadingZero", "Y"),
        ]
        readings = [
            SentReading(m.mac, Kind.SUMMATION_DELIVERED.value, ts, delivered, mult, div),
            SentReading(m.mac, Kind.SUMMATION_RECEIVED.value, ts, received, mult, div),
        ]
        return self._frag("CurrentSummationDelivered", fields), readings

    def _current_usage(self, m: _Meter, *, flat: bool) -> _Out:
        ts = self._stamp(m, "current_period_usage", flat=flat)
        self._advance(m, ts, flat=flat)
        raw = self._raw(m.net_wh() - m.period_base_wh, floor=True)
        mult, div = self._scaling()
        fields: list[tuple[str, str | bytes]] = [
            ("DeviceMacId", self.device_mac),
            ("MeterMacId", m.mac),
            ("TimeStamp", _stamp_hex(ts)),
            ("CurrentUsage", _u64_hex(raw)),
            ("Multiplier", _hex(mult, 8)),
            ("Divisor", _hex(div, 8)),
            ("DigitsRight", "0x03"),
            ("DigitsLeft", "0x06"),
            ("SuppressLeadingZero", "Y"),
            ("StartDate", _stamp_hex(m.period_start)),
        ]
        reading = SentReading(m.mac, Kind.CURRENT_PERIOD_USAGE.value, ts, raw, mult, div)
        return self._frag("CurrentPeriodUsage", fields), [reading]

    def _close_period(self, m: _Meter, *, flat: bool) -> None:
        end = self._stamp(m, "last_period_usage", flat=flat, quirky=False)
        assert end is not None  # quirky=False never gives "unset"
        self._advance(m, end, flat=flat)
        net = m.net_wh()
        m.last_usage_wh = net - m.period_base_wh
        m.last_start, m.last_end = m.period_start, end
        m.period_start, m.period_base_wh = end, net

    def _last_usage(self, m: _Meter) -> _Out:
        """LastPeriodUsage has no TimeStamp: its reading is timed by EndDate."""
        raw = self._raw(m.last_usage_wh, floor=True)
        mult, div = self._scaling()
        fields: list[tuple[str, str | bytes]] = [
            ("DeviceMacId", self.device_mac),
            ("MeterMacId", m.mac),
            ("LastUsage", _u64_hex(raw)),
            ("Multiplier", _hex(mult, 8)),
            ("Divisor", _hex(div, 8)),
            ("DigitsRight", "0x03"),
            ("DigitsLeft", "0x06"),
            ("SuppressLeadingZero", "Y"),
            ("StartDate", _stamp_hex(m.last_start)),
            ("EndDate", _stamp_hex(m.last_end)),
        ]
        reading = SentReading(m.mac, Kind.LAST_PERIOD_USAGE.value, m.last_end, raw, mult, div)
        return self._frag("LastPeriodUsage", fields), [reading]

    def _price(self, m: _Meter, *, flat: bool, change: bool = True) -> _Out:
        rng = self._rng
        if change and m.rate_label != b"Set by User" and rng.random() < 0.1:
            m.price, m.tier = rng.choice(((0x9C, 1), (0xB4, 2), (0x13B, 3)))
            if "cp1252_text" not in self.quirks:
                m.rate_label = f"Tier {m.tier}".encode()
        ts = self._stamp(m, "price", flat=flat)
        fields: list[tuple[str, str | bytes]] = [
            ("DeviceMacId", self.device_mac),
            ("MeterMacId", m.mac),
            ("TimeStamp", _stamp_hex(ts)),
            ("Price", _hex(m.price, 8)),
            ("Currency", "0x0348"),
            ("TrailingDigits", _hex(m.trailing_digits, 2)),
            ("Tier", _hex(m.tier, 2)),
        ]
        if self._p.name == "raven":
            fields.append(("TierLabel", f"Tier {m.tier}"))
        fields += [("StartTime", _UNSET), ("Duration", "0xffff"), ("RateLabel", m.rate_label)]
        readings = []
        if m.price != 0xFFFFFFFF:
            div = 10**m.trailing_digits
            readings.append(SentReading(m.mac, Kind.PRICE.value, ts, m.price, 1, div))
        return self._frag("PriceCluster", fields), readings

    def _message(self, m: _Meter) -> bytes:
        return self._frag(
            "MessageCluster",
            [
                ("DeviceMacId", self.device_mac),
                ("MeterMacId", m.mac),
                ("TimeStamp", _stamp_hex(int(self._sim_now()))),
                ("Id", _hex(m.message_id, 8)),
                ("Text", m.message_text),
                ("Priority", "Low"),
                ("StartTime", _stamp_hex(self.start_time - 3600)),
                ("Duration", "0xffff"),
                ("ConfirmationRequired", "N"),
                ("Confirmed", "Y" if m.message_confirmed else "N"),
                ("Queue", "Active"),
            ],
        )

    def _time_cluster(self, m: _Meter) -> bytes:
        now = int(self._sim_now())
        return self._frag(
            "TimeCluster",
            [
                ("DeviceMacId", self.device_mac),
                ("MeterMacId", m.mac),
                ("UTCTime", _stamp_hex(now)),
                ("LocalTime", _stamp_hex(now + self._tz_offset)),
            ],
        )

    def _status_fields(self, m: _Meter, status: str) -> list[tuple[str, str | bytes]]:
        connected = status == "Connected"
        return [
            ("Status", status),
            ("Description", "Successfully Joined" if connected else " "),
            ("StatusCode", "0x00"),
            ("ExtPanId", m.ext_pan_id),
            ("Channel", str(self._channel)),
            ("ShortAddr", _hex(m.short_addr, 4)),
            ("LinkStrength", "0x64" if connected else "0x00"),
        ]

    def _connection_status(self, m: _Meter, status: str = "Connected") -> bytes:
        head: list[tuple[str, str | bytes]] = [("DeviceMacId", self.device_mac)]
        if status == "Connected":
            head.append(("MeterMacId", m.mac))
        return self._frag("ConnectionStatus", head + self._status_fields(m, status))

    def _network_info(self, m: _Meter) -> bytes:
        head: list[tuple[str, str | bytes]] = [
            ("DeviceMacId", self.device_mac),
            ("CoordMacId", m.mac),
        ]
        return self._frag("NetworkInfo", head + self._status_fields(m, "Connected"))

    def _device_info(self) -> bytes:
        p = self._p
        return self._frag(
            "DeviceInfo",
            [
                ("DeviceMacId", self.device_mac),
                ("InstallCode", self._install_code),
                ("LinkKey", self._link_key),
                ("FWVersion", p.fw_version),
                ("HWVersion", p.hw_version),
                ("ImageType", p.image_type),
                ("Manufacturer", "Rainforest Automation, Inc."),
                ("ModelId", p.model_id),
                ("DateCode", p.date_code),
            ],
        )

    def _meter_info(self, m: _Meter) -> bytes:
        return self._frag(
            "MeterInfo",
            [
                ("DeviceMacId", self.device_mac),
                ("MeterMacId", m.mac),
                ("MeterType", "electric" if self._p.name == "raven" else "0x0000"),
                ("NickName", m.nick_name),
                ("Account", m.account),
                ("Auth", m.auth),
                ("Host", m.host),
                ("Enabled", "Y" if m.enabled else "N"),
            ],
        )

    def _schedule_info(self, m: _Meter, event: str) -> bytes:
        freq, on = m.schedule[event]
        return self._frag(
            "ScheduleInfo",
            [
                ("DeviceMacId", self.device_mac),
                ("MeterMacId", m.mac),
                ("Event", event),
                ("Frequency", _hex(int(freq), 8)),
                ("Enabled", "Y" if on else "N"),
            ],
        )

    def _profile_data(self, m: _Meter, f: dict[str, str]) -> bytes:
        rng = self._rng
        periods = min(max(_parse_hex(f.get("NumberOfPeriods") or "0x01"), 1), 12)
        end_text = f.get("EndTime") or "0x00000000"
        end_meter = _parse_hex(end_text)
        if end_meter in (0, 0xFFFFFFFF):
            end = int(self._sim_now()) // 900 * 900
        else:
            end = end_meter + METER_EPOCH_OFFSET
        received = f.get("IntervalChannel", "Delivered").lower() == "received"
        data: list[tuple[str, str | bytes]] = []
        for _ in range(periods):  # newest first; Wh per 15 minutes
            wh = rng.uniform(0.0, 300.0) if received else m.demand_w / 4 * rng.uniform(0.7, 1.3)
            data.append(("IntervalData", _hex(int(wh) & 0xFFFFFF, 6)))
        head: list[tuple[str, str | bytes]] = [
            ("DeviceMacId", self.device_mac),
            ("MeterMacId", m.mac),
            ("EndTime", _stamp_hex(end)),
            ("Status", "0x00"),
            ("ProfileIntervalPeriod", "3"),
            ("NumberOfPeriodsDelivered", _hex(periods, 2)),
        ]
        return self._frag("ProfileData", head + data)

    def _warning(self, text: str) -> bytes:
        return self._frag("Warning", [("Text", text)], extra=False)

    # ------------------------------------------------------------------------------- commands

    def _meter_for(self, f: dict[str, str]) -> _Meter:
        mac = f.get("MeterMacId", "").strip().lower()
        for m in self._meters:
            if m.mac == mac:
                return m
        return self._meters[0]

    def _answer(self, name: str, f: dict[str, str]) -> list[_Out]:
        """The reply to one command, built when it is due (in the writer thread)."""
        m = self._meter_for(f)
        cmd = name.strip().lower()
        try:
            return self._dispatch(cmd, m, f)
        except ValueError:
            return [(self._warning("Invalid argument"), [])]

    def _dispatch(self, cmd: str, m: _Meter, f: dict[str, str]) -> list[_Out]:
        # A flat table of if/returns reads more plainly than a dict of lambdas here.
        if cmd == "get_device_info":
            return [(self._device_info(), [])]
        if cmd == "get_connection_status":
            return [(self._connection_status(m), [])]
        if cmd == "initialize":
            if self._p.answers_initialize:
                return [(self._connection_status(m), [])]
            return [(self._warning("Unknown command"), [])]
        if cmd == "restart":
            return self._restart(m)
        if cmd == "factory_reset":
            return []  # recorded by the reader; never acted on
        if cmd == "get_network_info":
            return [(self._network_info(m), [])]
        if cmd == "get_meter_list":
            fields: list[tuple[str, str | bytes]] = [("DeviceMacId", self.device_mac)]
            fields += [("MeterMacId", mac) for mac in self.meter_macs]
            return [(self._frag("MeterList", fields), [])]
        if cmd == "get_meter_info":
            return [(self._meter_info(m), [])]
        if cmd == "set_meter_info":
            for tag, attr in (("NickName", "nick_name"), ("Account", "account")):
                if tag in f:
                    setattr(m, attr, f[tag])
            for tag, attr in (("Auth", "auth"), ("Host", "host")):
                if tag in f:
                    setattr(m, attr, f[tag])
            if "Enabled" in f:
                m.enabled = f["Enabled"].upper() == "Y"
            return [(self._meter_info(m), [])]
        if cmd == "get_time":
            return [(self._time_cluster(m), [])]
        if cmd == "get_message":
            return [(self._message(m), [])]
        if cmd == "confirm_message":
            if _parse_hex(f.get("Id") or "0x0") == m.message_id:
                m.message_confirmed = True
            return [(self._message(m), [])]
        if cmd == "get_current_price":
            return [self._price(m, flat=False, change=False)]
        if cmd == "set_current_price":
            price = _parse_hex(f["Price"]) if "Price" in f else 0
            digits = _parse_hex(f["TrailingDigits"]) if "TrailingDigits" in f else 0
            if not 0 <= price <= 0xFFFFFFFF or not 0 <= digits <= 9:
                raise ValueError("price out of range")
            m.price, m.trailing_digits, m.rate_label = price, digits, b"Set by User"
            return [self._price(m, flat=False, change=False)]
        if cmd == "get_instantaneous_demand":
            return [self._demand(m, flat=False)]
        if cmd == "get_current_summation_delivered":
            return [self._summation(m, flat=False)]
        if cmd == "get_current_period_usage":
            return [self._current_usage(m, flat=False)]
        if cmd == "get_last_period_usage":
            return [self._last_usage(m)]
        if cmd == "close_current_period":
            self._close_period(m, flat=False)
            return [self._current_usage(m, flat=False)]
        if cmd in ("get_schedule", "set_schedule", "set_schedule_default"):
            return self._schedule_command(cmd, m, f)
        if cmd == "set_fast_poll":
            freq = min(max(_parse_hex(f.get("Frequency") or "0x04"), 1), 0xFF)
            minutes = min(max(_parse_hex(f.get("Duration") or "0x00"), 0), 0x0F)
            m.fast_freq = freq
            m.fast_until = self._sim_now() + minutes * 60
            m.due["demand"] = time.monotonic() + freq / self.speed
            return [self._demand(m, flat=False)]
        if cmd == "get_profile_data":
            return [(self._profile_data(m, f), [])]
        return [(self._warning("Unknown command"), [])]

    def _schedule_command(self, cmd: str, m: _Meter, f: dict[str, str]) -> list[_Out]:
        event = f.get("Event", "").strip().lower()
        if event and event not in DEFAULT_SCHEDULE:
            raise ValueError(f"unknown event {event}")
        if cmd == "get_schedule":
            events = [event] if event else list(_PUSH_ORDER)
            return [(self._schedule_info(m, ev), []) for ev in events]
        targets = [m] if "MeterMacId" in f else self._meters
        now = time.monotonic()
        if cmd == "set_schedule_default":
            for t in targets:
                t.schedule = {ev: [freq, True] for ev, freq in DEFAULT_SCHEDULE.items()}
            return [(self._schedule_info(m, ev), []) for ev in _PUSH_ORDER]
        if not event:
            raise ValueError("set_schedule needs Event")
        for t in targets:
            freq, on = t.schedule[event]
            if "Frequency" in f:
                freq = max(_parse_hex(f["Frequency"]), 1)
            if "Enabled" in f:
                on = f["Enabled"].strip().upper() == "Y"
            t.schedule[event] = [freq, on]
            t.due[event] = now + int(freq) / self.speed
        return [(self._schedule_info(m, event), [])]

    def _restart(self, m: _Meter) -> list[_Out]:
        """Answer as a rebooting stick does: a ConnectionStatus cycle, pushes paused meanwhile."""
        cycle = (
            "Initializing",
            "Network Discovery",
            "Joining",
            "Join: Success",
            "Authenticating",
            "Authenticating: Success",
            "Connected",
        )
        step = 0.1
        for i, status in enumerate(cycle[1:], start=1):
            frag = self._connection_status(m, status)
            self._schedule(step * i, lambda frag=frag: [(frag, [])])
        self._paused_until = time.monotonic() + step * len(cycle)
        return [(self._connection_status(m, cycle[0]), [])]


# ----------------------------------------------------------------------------------------- CLI


def _build_parser() -> argparse.ArgumentParser:
    quirk_help = "\n".join(f"  {name:17} {text}" for name, text in QUIRKS.items())
    parser = argparse.ArgumentParser(
        prog="ravenctl simulate",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description=(
            "Emulate a Rainforest RAVEn (or EMU-2) on a pseudo-terminal, so ravend can be tried\n"
            "without hardware. Prints the port to give ravend, then pushes readings on the\n"
            "device's schedule and answers commands until Ctrl-C / SIGTERM."
        ),
        epilog="quirks (--quirk, repeatable):\n"
        + quirk_help
        + "\n\nexample: ravenctl simulate --speed 10 --quirk nul_noise --quirk duplicates\n"
        "         (then give ravend the printed port)",
    )
    parser.add_argument("--emu2", action="store_true", help="behave like an EMU-2, not a RAVEn")
    parser.add_argument(
        "--link",
        default="./raven-sim",
        metavar="PATH",
        help="symlink to create to the pty; use it as ravend's port (default: %(default)s)",
    )
    parser.add_argument(
        "--speed",
        type=float,
        default=1.0,
        help="run the push schedule and meter clock this many times faster (default: 1)",
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of all values (default: 0)")
    parser.add_argument("--meters", type=int, default=1, help="number of meters (default: 1)")
    parser.add_argument(
        "--quirk",
        action="append",
        default=[],
        choices=sorted(QUIRKS),
        metavar="Q",
        help="add a device quirk (repeatable; list below)",
    )
    parser.add_argument(
        "--count",
        type=int,
        default=0,
        metavar="N",
        help="exit after N demand readings have been written",
    )
    parser.add_argument(
        "--flat-out",
        action="store_true",
        help="write demand readings as fast as the reader takes them, instead of pushing on the "
        "schedule (benchmarks)",
    )
    parser.add_argument(
        "--start-time",
        type=int,
        default=None,
        metavar="UNIX",
        help="the meter clock at start, in Unix seconds (default: now)",
    )
    parser.add_argument(
        "--reply-delay",
        type=float,
        default=0.05,
        metavar="S",
        help="seconds before answering a command (default: %(default)s)",
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    """``ravenctl simulate``: run a simulator until SIGINT/SIGTERM (or --count readings)."""
    args = _build_parser().parse_args(argv)
    if args.speed <= 0 or args.meters < 1 or args.count < 0:
        print(
            "ravenctl simulate: --speed must be > 0, --meters >= 1, --count >= 0", file=sys.stderr
        )
        return 2
    link = os.path.abspath(args.link)
    sim = MeterSimulator(
        "emu2" if args.emu2 else "raven",
        link=link,
        seed=args.seed,
        speed=args.speed,
        meters=args.meters,
        quirks=args.quirk,
        reply_delay=args.reply_delay,
        start_time=int(time.time()) if args.start_time is None else args.start_time,
        pushes=not args.flat_out,
        record=False,
    )
    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    previous: dict[int, object] = {}
    if threading.current_thread() is threading.main_thread():
        for sig in (signal.SIGINT, signal.SIGTERM):
            previous[sig] = signal.signal(sig, on_signal)
    try:
        try:
            sim.start()
        except FileExistsError as exc:
            print(f"ravenctl simulate: {exc}", file=sys.stderr)
            return 2
        print(
            f"Simulated {sim.model} on {sim.slave_name}: point ravend at port {sim.port}",
            flush=True,
        )
        if args.flat_out:
            sim.send_readings(args.count or sys.maxsize, ("demand",), flat_out=True)

        while not stop.wait(0.05):
            if args.count and sim.sent_count(Kind.DEMAND.value) >= args.count:
                sim.drain(1.0)  # let a reader take the last fragment before the pty goes away
                break
    finally:
        sim.stop()
        for sig, handler in previous.items():
            signal.signal(sig, handler)  # type: ignore[arg-type]
    return 0


if __name__ == "__main__":
    sys.exit(main())
