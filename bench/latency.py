"""Latency from a fragment's last byte on the wire to its reading being committed.

The bench writes the fragments itself on a pty of its own (one demand fragment a second, as a
stick pushes at most; ten a second in the quick run, still one at a time), because it must know
when each last byte was written: the simulator's writer thread keeps no per-fragment times. The
time is taken right after ``os.write`` of the whole fragment returns (one write; the pty buffer
is empty between fragments, so that is when the reader can have it all).

Commit detection: after each write the bench polls the database with a read-only connection in a
tight loop (``POLL_S`` apart) until the row is there. In WAL mode a new read transaction sees a
transaction as soon as the writer's COMMIT has put it into the WAL index, which happens before
that COMMIT returns in ravend, so the first poll that sees the row is at most one poll interval
plus one query after the commit: that bound (measured, in the JSON) is the method's error. The
loop runs only between a write and its commit, so it does not load the machine the rest of the
second. The row's ``received_at`` (ravend's clock when its read returned) splits the latency into
the read part and the decode-queue-commit part.
"""

from __future__ import annotations

import contextlib
import math
import os
import pty
import select
import time
import tty
from dataclasses import dataclass, field
from typing import Any

from bench.core import Context
from bench.processes import Ravend, Store
from bench.stream import RAVEN, MeterStream

POLL_S = 0.0002
#: A reading not committed within this long is counted as lost, not as a latency.
GIVE_UP_S = 5.0


def percentile(values: list[float], p: float) -> float:
    """Nearest-rank percentile: with 30 values, p99 is the largest, as it should be."""
    ordered = sorted(values)
    return ordered[max(0, math.ceil(p / 100 * len(ordered)) - 1)]


@dataclass(slots=True)
class LatencyRun:
    total_ms: list[float] = field(default_factory=list)  # last byte written -> row visible
    read_ms: list[float] = field(default_factory=list)  # last byte written -> received_at
    lost: int = 0
    query_ms: float = 0.0  # mean time of one poll query: with POLL_S, the detection error
    interval_s: float = 1.0  # between two fragments

    def detail(self) -> dict[str, Any]:
        return {
            "n": len(self.total_ms), "lost": self.lost, "interval_s": self.interval_s,
            "p50_ms": percentile(self.total_ms, 50), "p99_ms": percentile(self.total_ms, 99),
            "max_ms": max(self.total_ms),
            "read_p50_ms": percentile(self.read_ms, 50),
            "read_p99_ms": percentile(self.read_ms, 99),
            "detection_error_ms": POLL_S * 1000 + self.query_ms,
        }


class PtyStick:
    """The device end of a pty: writes fragments, swallows whatever the host sends."""

    def __init__(self) -> None:
        self.master, self.slave = pty.openpty()
        tty.setraw(self.slave)  # bytes pass as they are: no echo, no CR/LF translation
        self.port = os.ttyname(self.slave)

    def host_wrote(self, timeout: float) -> bool:
        """Wait for the host's first bytes (ravend's first command: it has the port open)."""
        ready, _, _ = select.select([self.master], [], [], timeout)
        if ready:
            self.swallow()
        return bool(ready)

    def swallow(self) -> None:
        while select.select([self.master], [], [], 0)[0]:
            try:
                if not os.read(self.master, 4096):
                    return
            except OSError:
                return

    def write(self, data: bytes) -> float:
        """Write all of ``data``; the wall-clock time right after its last byte went."""
        view = memoryview(data)
        while view:
            view = view[os.write(self.master, view) :]
        return time.time()

    def close(self) -> None:
        for fd in (self.master, self.slave):
            with contextlib.suppress(OSError):
                os.close(fd)


def measure(ctx: Context) -> LatencyRun:
    def run() -> LatencyRun:
        # Quick: 100 fragments 0.1 s apart (a commit takes ~1 ms: each still meets an idle
        # ravend), so that the p99 is not simply the largest of 30.
        n, interval = ctx.pick((100, 0.1), (120, 1.0))
        stick = PtyStick()
        ravend = Ravend(stick.port, ctx.work / "latency")
        meter = MeterStream(RAVEN, seed=3)
        result = LatencyRun(interval_s=interval)
        store: Store | None = None
        queries = 0
        query_s = 0.0
        try:
            if not stick.host_wrote(30):
                raise RuntimeError(f"ravend did not open {stick.port}: {ravend.log_tail()}")
            store = Store(ravend.db)
            time.sleep(1.0)  # past start-up (sink open, first commands): steady state
            base = int(time.time())
            next_at = time.monotonic() + interval
            for i in range(n):
                stick.swallow()
                key = base + i
                data = meter.demand(key)
                time.sleep(max(0.0, next_at - time.monotonic()))
                next_at += interval
                written = stick.write(data)
                while True:
                    t0 = time.perf_counter()
                    received = store.received_at(meter.meter_mac, key)
                    query_s += time.perf_counter() - t0
                    queries += 1
                    seen = time.time()
                    if received is not None:
                        result.total_ms.append((seen - written) * 1000)
                        result.read_ms.append((received - written) * 1000)
                        break
                    if seen - written > GIVE_UP_S:
                        result.lost += 1
                        break
                    time.sleep(POLL_S)
                ravend.check_alive()
        finally:
            if store is not None:
                store.close()
            ravend.stop()
            stick.close()
        if not result.total_ms:
            raise RuntimeError(f"no reading was committed: {ravend.log_tail()}")
        result.query_ms = 1000 * query_s / max(queries, 1)
        return result

    return ctx.once("latency", run)
