"""Flat-out runs over a real pty: ravend, the naive peer, and the simulator's own ceiling.

The meter is ravend's simulator (``MeterSimulator``, pushes off, flat-out ``send_readings``): its
writer is paced by the reader, so the figures are the reader's, as long as the reader stays well
below the simulator's ceiling, which is measured too (a ``cat`` that reads and drops).

A committed reading is one a read-only connection can see. Progress is polled every
``POLL_S`` through an O(log n) index lookup (``Store``), and a run's rate is taken between the
first poll that sees a committed row and the poll that sees the last one, so start-up (process
start, migrations, the port's first open) is not in it. ravend's CPU time is read from
/proc/PID/stat at the same two polls.
"""

from __future__ import annotations

import contextlib
import select
import sqlite3
import subprocess
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from bench.core import DEBIAN_PYTHON, ROOT, Context
from bench.processes import (
    Drain,
    Ravend,
    Store,
    cpu_seconds,
    debian_env,
    fd_count,
    rss_kib,
    wait_until,
)
from ravend.simulator import MeterSimulator

POLL_S = 0.02
#: Let the sink worker finish and the allocator settle before reading memory.
SETTLE_S = 1.0
#: Same seed for ravend and the peer: both read the same bytes.
SEED = 7
#: A run slower than this is stuck, not slow (the target is 2,000 readings/s).
FLOOR_RATE = 100.0
#: The shipped settings except a roll-up every 2 s instead of every 5 min, so the maintenance
#: thread works during the run (as it would over a real meter's days) and has caught up at
#: each checkpoint: memory is then compared between the same two states, not between a
#: process that has never rolled up and one that has.
FLAT_OUT_CONFIG = {"retention": {"rollup_interval": "2s"}}


def _simulator() -> MeterSimulator:
    return MeterSimulator("raven", seed=SEED, pushes=False, record=False).start()


@dataclass(slots=True)
class Checkpoint:
    """ravend after the first ``readings`` demand readings were committed and rolled up."""

    readings: int
    rate: float  # readings/s over this segment, first to last commit
    cpu_per_1000: float  # ravend CPU seconds per 1,000 readings over the same interval
    seconds: float
    rss_kib: int
    fds: int


@dataclass(slots=True)
class FlatOut:
    checkpoints: list[Checkpoint] = field(default_factory=list)
    stored: int = 0
    sent: int = 0

    def detail(self) -> dict[str, Any]:
        return {"checkpoints": [asdict(c) for c in self.checkpoints],
                "stored_demand": self.stored, "sent_demand": self.sent}

    def steady(self) -> tuple[float, float]:
        """Readings/s and CPU s per 1,000 over every segment after the first (start-up)."""
        later = self.checkpoints[1:] or self.checkpoints
        readings = sum(c.rate * c.seconds for c in later)
        seconds = sum(c.seconds for c in later)
        cpu = sum(c.cpu_per_1000 * c.rate * c.seconds / 1000 for c in later)
        return readings / seconds, 1000 * cpu / max(readings, 1)


def _segment(ravend: Ravend, store: Store, meter: str, first_key: int, last_key: int,
             timeout: float) -> tuple[float, float, int]:
    """Poll until ``last_key`` is committed; (seconds, CPU seconds, readings) between the first
    poll that saw a key of this segment and the poll that saw the last."""
    start: tuple[float, float, int] | None = None
    deadline = time.monotonic() + timeout
    while True:
        key = store.newest_demand(meter)
        now = time.monotonic()
        if key is not None and key >= first_key:
            if start is None:
                start = (now, cpu_seconds(ravend.pid), key)
            if key >= last_key:
                assert start is not None
                return now - start[0], cpu_seconds(ravend.pid) - start[1], key - start[2]
        if now > deadline:
            raise RuntimeError(f"only up to key {key} of {first_key}..{last_key} committed in"
                               f" {timeout:.0f}s; ravend: {ravend.log_tail()}")
        ravend.check_alive()
        time.sleep(POLL_S)


def ravend_flat_out(ctx: Context) -> FlatOut:
    """One ravend, readings sent in as many segments as there are checkpoints."""

    def measure() -> FlatOut:
        # Full run: ten segments of 100,000, so the RSS curve shows a leak (a slope) apart
        # from the allocator's one-time steps in the first few hundred thousand.
        marks = ctx.pick((20_000, 100_000), tuple(range(100_000, 1_000_001, 100_000)))
        sim = _simulator()
        ravend = Ravend(sim.port, ctx.work / "flat-out", FLAT_OUT_CONFIG)
        result = FlatOut()
        store: Store | None = None
        try:
            # ravend's first command on the wire says it has the port open: bytes written before
            # that would be flushed by the open.
            if not wait_until(lambda: sim.received_commands(), 30):
                raise RuntimeError(f"ravend did not open {sim.port}: {ravend.log_tail()}")
            store = Store(ravend.db)
            meter = sim.meter_macs[0]
            sent = 0
            for mark in marks:
                first_key = sim.start_time + sent
                sim.send_readings(mark - sent)
                seconds, cpu, readings = _segment(ravend, store, meter, first_key,
                                                  sim.start_time + mark - 1,
                                                  30 + (mark - sent) / FLOOR_RATE)
                sent = mark
                # Both checkpoints in the same state: every reading committed and rolled up.
                if not wait_until(store.rolled_up, 60 + mark / FLOOR_RATE / 10):
                    raise RuntimeError(f"roll-ups did not catch up with {mark:,} readings:"
                                       f" {ravend.log_tail()}")
                time.sleep(SETTLE_S)
                result.checkpoints.append(Checkpoint(
                    mark, readings / seconds, 1000 * cpu / max(readings, 1), seconds,
                    rss_kib(ravend.pid), fd_count(ravend.pid)))
                ctx.log(f"  {mark:,} readings: {readings / seconds:,.0f}/s,"
                        f" RSS {result.checkpoints[-1].rss_kib / 1024:.1f} MiB")
            result.stored = store.demand_count(meter)
            result.sent = sim.sent_count("demand")
        finally:
            if store is not None:
                store.close()
            ravend.stop()
            sim.stop()
        if result.stored != result.sent:
            raise RuntimeError(f"ravend stored {result.stored} of {result.sent} demand readings")
        return result

    return ctx.once("flat-out", measure)


@dataclass(frozen=True, slots=True)
class PeerRun:
    readings: int
    seconds: float

    @property
    def rate(self) -> float:
        return self.readings / self.seconds


def naive_peer(ctx: Context) -> PeerRun:
    """bench/naive_logger.py on the same simulator stream, for at most a bounded time."""

    def measure() -> PeerRun:
        n = ctx.pick(2_000, 20_000)
        cap = ctx.pick(5.0, 30.0)
        work = ctx.work / "naive"
        work.mkdir()
        db = work / "naive.db"
        errors = work / "naive.log"
        sim = _simulator()
        with open(errors, "wb") as stderr:
            peer = subprocess.Popen([DEBIAN_PYTHON, str(ROOT / "bench" / "naive_logger.py"),
                                     sim.port, str(db)],
                                    stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                    stderr=stderr, env=debian_env(), cwd=work)
        try:
            assert peer.stdout is not None
            ready, _, _ = select.select([peer.stdout], [], [], 30)
            if not ready or peer.stdout.readline().strip() != b"ready":
                raise RuntimeError(f"the naive logger did not start: {_tail(errors)}")
            sim.send_readings(n)
            first: tuple[float, int] | None = None
            last = (0.0, 0)
            deadline = time.monotonic() + cap + 30
            with contextlib.closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True,
                                                    timeout=5)) as conn:
                while True:
                    count = conn.execute("SELECT COALESCE(MAX(id), 0) FROM readings"
                                         ).fetchone()[0]
                    now = time.monotonic()
                    if count and first is None:
                        first = (now, count)
                        deadline = now + cap  # the rate needs no more than `cap` seconds
                    if count:
                        last = (now, count)
                    if count >= n or now > deadline:
                        break
                    if peer.poll() is not None:
                        raise RuntimeError(f"the naive logger exited with {peer.returncode}:"
                                           f" {_tail(errors)}")
                    time.sleep(0.05)
            if first is None or last[1] == first[1]:
                raise RuntimeError("the naive logger committed nothing")
            return PeerRun(last[1] - first[1], last[0] - first[0])
        finally:
            peer.kill()
            peer.wait()
            sim.stop()

    return ctx.once("naive", measure)


def _tail(path: Path) -> str:
    return " | ".join(path.read_text(errors="replace").strip().splitlines()[-5:])


def simulator_ceiling(ctx: Context) -> PeerRun:
    """How fast the simulator writes when its reader does nothing (``cat``)."""

    def measure() -> PeerRun:
        n = ctx.pick(20_000, 100_000)
        sim = _simulator()
        drain = Drain(sim.port)
        try:
            time.sleep(0.3)  # let cat open the port first
            started = time.monotonic()
            sim.send_readings(n)
            if not sim.wait_for(lambda: sim.sent_count() >= n, 120):
                raise RuntimeError(f"the simulator wrote {sim.sent_count()} of {n} readings")
            return PeerRun(n, time.monotonic() - started)
        finally:
            drain.stop()
            sim.stop()

    return ctx.once("simulator", measure)
