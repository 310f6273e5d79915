"""The simulated stick as callers see it: ``MeterSimulator``, its public API and its writer thread.

One writer thread writes everything, so a fragment is never interleaved with another, and it alone
changes meter state. Its writes are paced by the reader: the flat-out mode (``send_readings``)
measures ravend's throughput, not the simulator's. Every reading whose last byte reached the wire
is recorded (``sent_readings()``), as is every command the host wrote (``received_commands()``,
``received_bytes()``).

The parts of the class live beside it, each with one job: meter state and quirks (meter.py), the
fragments' text (fragments.py), command replies (replies.py) and the pty (port.py).
"""

from __future__ import annotations

import heapq
import inspect
import itertools
import random
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

from ravend.protocol.model import Kind
from ravend.simulator.fragments import fixed_hex
from ravend.simulator.meter import (
    P_DUPLICATE,
    P_NOISE,
    P_UNKNOWN_ROOT,
    PERSONALITIES,
    PUSH_ORDER,
    QUIRKS,
    Meter,
    Out,
    SentReading,
    Stamps,
)
from ravend.simulator.port import Port, PtyPort
from ravend.simulator.replies import Timed


@dataclass(slots=True)
class Bulk:
    """A send_readings() request, produced one fragment at a time so pushes can interleave."""

    n: int
    kinds: tuple[str, ...]
    flat: bool
    i: int = 0
    next_at: float = 0.0


class MeterSimulator(PtyPort):
    """A RAVEn or EMU-2 on a pty: pushes readings on a schedule and answers commands.

    ``speed`` scales the push schedule and the meter clock (speed 60: a demand every 8/60 s, and
    the meter's clock advances a minute per second); ``reply_delay`` is real time.

    Its parts are base classes, one a module, each on top of the one before: ``MeterState``
    (values and clocks), ``Fragments`` (their text), ``CommandReplies`` and ``PtyPort``. Each
    declares the attributes it uses; ``__init__`` here sets them all, drawing from the seeded
    random generator in one fixed order.
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
        self._stamps: dict[tuple[str, str], Stamps] = {}
        for m in self._meters:
            self._stamps[(m.mac, "last_period_usage")] = Stamps(m.last_end, m.last_end)

        self._cv = threading.Condition()  # guards queues, _port swaps, and wakes the writer
        self._fd_lock = threading.Lock()  # held around every read/write/close of the pty fds
        self._rec_lock = threading.Lock()  # guards the records below
        self._sent: list[SentReading] = []
        self._counts: dict[str, int] = {}
        self._commands: list[tuple[str, dict[str, str]]] = []
        self._received = bytearray()
        self._timed: list[Timed] = []
        self._jobs: deque[bytes | Bulk] = deque()
        self._seq = itertools.count()
        self._port: Port | None = None
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
            self._jobs.append(Bulk(n, ks, flat_out, 0, time.monotonic()))
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

    # ------------------------------------------------------------------------- writer thread

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
            reply: Callable[[], list[Out]] | None = None
            job: bytes | Bulk | None = None
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

    def _idle_wait(self, now: float, job: Bulk | None) -> None:
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

    def _bulk_step(self, port: Port, job: Bulk) -> None:
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

    def _pop_job(self, job: Bulk) -> None:
        with self._cv:
            if self._jobs and self._jobs[0] is job:
                self._jobs.popleft()

    def _push_due(self, port: Port, now: float) -> bool:
        """Write the earliest push that is due, if any; True when one was written."""
        if not self._pushes or now < self._paused_until:
            return False
        best: tuple[float, int, Meter, str] | None = None
        sim_now = self._sim_now()
        for mi, m in enumerate(self._meters):
            for ev in PUSH_ORDER:
                if not m.schedule[ev][1] or m.due[ev] > now:
                    continue
                cand = (m.due[ev], mi * 10 + PUSH_ORDER.index(ev), m, ev)
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

    def _emit(self, port: Port, data: bytes, readings: list[SentReading]) -> bool:
        """Write one fragment (with the stream quirks around it); record its readings if whole."""
        rng = self._rng
        if self._first_output:
            self._first_output = False
            if "partial_start" in self.quirks:
                tail = self._loose_demand()
                self._write(port, tail[rng.randint(len(tail) // 4, 3 * len(tail) // 4) :])
        if "nul_noise" in self.quirks and rng.random() < P_NOISE:
            self._write(port, self._noise())
        if "unknown_fragment" in self.quirks and rng.random() < P_UNKNOWN_ROOT:
            tag = rng.choice(("DiagnosticInfo", "RadioStatistics"))
            fields = [
                ("DeviceMacId", self.device_mac),
                ("Counter", fixed_hex(rng.getrandbits(16), 4)),
                ("Note", "reserved"),
            ]
            self._write(port, self._frag(tag, fields, extra=False))
        if not self._write(port, data):
            return False
        if readings:
            self._note_sent(readings)
            if (
                "duplicates" in self.quirks
                and rng.random() < P_DUPLICATE
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
