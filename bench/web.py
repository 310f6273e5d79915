"""ravend-web on a year of one home's readings (bench/yearstore.py's store; the quick run uses
its 30 days) while ravend writes into the same store: every API answer's time, and the server's
resident memory after them.

The store is copied into the run's scratch directory (the cached one stays untouched), and the
writer is the real path run flat out: the meter simulator as a process of its own (``python3 -m
ravend.simulator --flat-out``, so that its thread does not share the bench's interpreter) on a
pty, and ravend on it committing into the copy, its roll-ups every 2 s instead of every 5 min
so that the maintenance thread writes during the run too. Its meter sorts after the year's, so
the API's default meter (the first) stays the year's. ravend-web runs as a process on a free
port and reads the same file. Each endpoint a page uses is asked in turn with the others,
warm, over loopback, at least ``RUNS`` times and for at least 5 s (quick) or 15 s: the time
from sending the request to the last byte of the answer, an upper bound of the server's own
time. The p95 is over every request of every endpoint; the slowest endpoint is
in the detail, and so is how many readings ravend committed meanwhile (none fails the run: a
writer that stopped would make the figure a reader-only one).
"""

from __future__ import annotations

import contextlib
import shutil
import sqlite3
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench import scratchconf, yearstore
from bench.core import DEBIAN_PYTHON, Context
from bench.processes import Ravend, debian_env, free_port, rss_kib, terminate, wait_until
from bench.yearstore import ROOT

#: Each endpoint is asked at least this many times, in turn with the others, and for at least
#: this many seconds (several of the writer's commits, roll-ups and WAL checkpoints).
RUNS = 20
QUICK_SECONDS, FULL_SECONDS = 5.0, 15.0
#: The simulator's seed: its one meter, 0x001c6400d8f16adf, sorts after the year's meter.
WRITER_SEED = 1
#: ravend's settings for the writer: the shipped ones, roll-ups every 2 s (as the flat-out row).
WRITER_CONFIG = {"retention": {"time_zone": "UTC", "rollup_interval": "2s"}}


@dataclass
class WebTimes:
    store: yearstore.YearStore
    seconds: dict[str, list[float]] = field(default_factory=dict)
    rss_mib: float = 0.0
    written: int = 0  # readings ravend committed while the API was asked
    writing_s: float = 0.0

    def p95(self) -> float:
        every = sorted(t for times in self.seconds.values() for t in times)
        return every[min(len(every) - 1, int(len(every) * 0.95))]

    def detail(self) -> dict[str, Any]:
        worst = max(self.seconds, key=lambda k: max(self.seconds[k]))
        return {"readings": self.store.readings, "days": self.store.days,
                "requests_per_endpoint": len(next(iter(self.seconds.values()))),
                "slowest": worst, "slowest_max_s": round(max(self.seconds[worst]), 4),
                "median_s": {k: round(sorted(v)[len(v) // 2], 4)
                             for k, v in self.seconds.items()},
                "writer_committed_meanwhile": self.written,
                "writer_readings_per_s": round(self.written / max(self.writing_s, 1e-9))}


@dataclass(frozen=True)
class Web:
    base: str  # http://127.0.0.1:PORT
    pid: int


@contextlib.contextmanager
def running_web(config: Path, log_path: Path) -> Iterator[Web]:
    """ravend-web on Debian's interpreter, as the package runs it, until the block ends."""
    port = free_port()
    with open(log_path, "wb") as log:
        proc = subprocess.Popen([DEBIAN_PYTHON, "-m", "ravend.cli.web", "--config", str(config),
                                 "--listen", f"127.0.0.1:{port}"], stdin=subprocess.DEVNULL,
                                cwd=ROOT, env=debian_env(), stdout=log, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 15
        while True:
            try:
                urllib.request.urlopen(f"{base}/api/v1/health", timeout=2).read()
                break
            except OSError:
                if time.monotonic() > deadline or proc.poll() is not None:
                    tail = log_path.read_text(errors="replace").strip().splitlines()[-5:]
                    raise RuntimeError(f"ravend-web did not start: {' | '.join(tail)}") from None
                time.sleep(0.1)
        yield Web(base, proc.pid)
    finally:
        terminate(proc)


def paths(store: yearstore.YearStore) -> dict[str, str]:
    """Every endpoint the pages ask, on the middle of the store's days (the report: its end)."""
    middle = store.start + store.days // 2 * yearstore.DAY
    day = time.strftime("%Y-%m-%d", time.gmtime(middle))
    after = time.strftime("%Y-%m-%d", time.gmtime(middle + yearstore.DAY))
    first = time.strftime("%Y-%m-%d", time.gmtime(store.start))
    last = time.strftime("%Y-%m-%d", time.gmtime(store.end))
    return {
        "meters": "/api/v1/meters",
        "now": "/api/v1/now",
        "day": f"/api/v1/rollups?resolution=hourly&start={day}&end={after}",
        "days": f"/api/v1/rollups?resolution=daily&start={first}&end={last}",
        "year": f"/api/v1/rollups?resolution=monthly&start={first}&end={last}",
        "report-week": f"/api/v1/report?end={last}",
        "device": "/api/v1/device",
        "health": "/api/v1/health",
    }


def _newest_id(db: Path) -> int:
    with contextlib.closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5)) as c:
        return int(c.execute("SELECT COALESCE(MAX(id), 0) FROM readings").fetchone()[0])


class Writer:
    """The simulator (a process) flat out on a pty, and ravend committing into ``state/``."""

    def __init__(self, store: yearstore.YearStore, work: Path) -> None:
        self.state = work / "state"
        self.state.mkdir(parents=True)
        self.db = self.state / "ravend.db"
        shutil.copyfile(store.db, self.db)  # checkpointed (TRUNCATE): the file is all of it
        link = work / "stick"
        self._sim_log = open(work / "simulator.log", "wb")  # noqa: SIM115 - closed in stop()
        self.sim = subprocess.Popen(
            [DEBIAN_PYTHON, "-m", "ravend.simulator", "--flat-out", "--link", str(link),
             "--seed", str(WRITER_SEED), "--start-time", str(store.end)],
            stdin=subprocess.DEVNULL, stdout=self._sim_log, stderr=subprocess.STDOUT,
            env=debian_env(), cwd=ROOT)
        self.ravend: Ravend | None = None
        if not wait_until(lambda: link.exists() or self.sim.poll() is not None, 15, 0.05) \
                or self.sim.poll() is not None:
            self.stop()
            raise RuntimeError(f"the simulator did not start: {self._sim_tail()}")
        self.ravend = Ravend(str(link), self.state, WRITER_CONFIG)
        # The writer's scratch paths: ravend-web asks its control socket for /api/v1/health.
        self.config = scratchconf.write(work / "web.conf", self.state, {
            "service": {"state_dir": self.state}, "retention": {"time_zone": "UTC"}})
        base = store.readings
        if not wait_until(lambda: self.newest_id() > base, 60, 0.2):
            self.ravend.check_alive()
            self.stop()
            raise RuntimeError(f"ravend committed nothing in 60 s: {self.ravend.log_tail()}")

    def newest_id(self) -> int:
        return _newest_id(self.db)

    def check(self) -> None:
        if self.sim.poll() is not None:
            raise RuntimeError(f"the simulator exited: {self._sim_tail()}")
        if self.ravend is not None:
            self.ravend.check_alive()

    def _sim_tail(self) -> str:
        self._sim_log.flush()
        path = Path(self._sim_log.name)
        return " | ".join(path.read_text(errors="replace").strip().splitlines()[-5:])

    def stop(self) -> None:
        if self.ravend is not None:
            self.ravend.stop()
        terminate(self.sim)
        self._sim_log.close()


def measure(ctx: Context) -> WebTimes:
    days = ctx.pick(yearstore.QUICK_DAYS, yearstore.FULL_DAYS)
    store = yearstore.store(days, ctx.log)
    work = ctx.work / "web"
    work.mkdir()
    ctx.log(f"web: copying the {days}-day store; ravend writes into it flat out")
    writer = Writer(store, work)
    try:
        with running_web(writer.config, work / "ravend-web.log") as web:
            times = WebTimes(store)
            every = paths(store)
            for path in every.values():  # warm
                urllib.request.urlopen(web.base + path, timeout=30).read()
            times.seconds = {name: [] for name in every}
            least = ctx.pick(QUICK_SECONDS, FULL_SECONDS)
            ctx.log(f"web: every endpoint in turn, {least:g} s at least, on"
                    f" {store.readings:,} readings, ravend writing")
            before, started = writer.newest_id(), time.monotonic()
            rounds = 0
            while rounds < RUNS or time.monotonic() - started < least:
                for name, path in every.items():
                    began = time.perf_counter()
                    with urllib.request.urlopen(web.base + path, timeout=30) as resp:
                        resp.read()
                    times.seconds[name].append(time.perf_counter() - began)
                rounds += 1
                if rounds % 20 == 0:
                    writer.check()
            times.writing_s = time.monotonic() - started
            times.written = writer.newest_id() - before
            times.rss_mib = rss_kib(web.pid) / 1024
    finally:
        writer.stop()
    if times.written <= 0:
        raise RuntimeError("ravend committed nothing while the API was asked: no writer")
    return times
