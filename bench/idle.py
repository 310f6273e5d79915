#!/usr/bin/python3
"""Idle cost at the real rate: ravend, its repeater, mongo-ingest and ravend-web, measured at once.

    bench/idle.py            a 180 s window (the issue's minimum of 3 minutes)
    bench/idle.py --quick    a 30 s window (labelled as such: few wake-ups to average)
    bench/idle.py --threads  also print every thread's wake-ups and CPU time

The whole chain runs as it would at home: the meter simulator on a pty at speed 1 (RAVEn push
defaults: a demand every 8 s, a price every 90 s, a message every 120 s, a summation every
240 s), ravend on it with its default SQLite store and a control socket, ravend-repeater
publishing that store to a private Mosquitto, and ravend-mongo-ingest storing what it publishes
in a private SecantusDB (tests/helpers/servers.py), and ravend-web on a free loopback port
serving that store with no page open (asked once for its health when it starts, never in the
window: idle is the dashboard nobody is looking at). Every process runs on Debian's
interpreter, as the package runs them. After a settling time (start-up commands, first connections,
the first readings through to MongoDB) the bench reads, for each process and each of its threads:

- CPU time: utime + stime from /proc/PID/stat (all threads, clock ticks);
- wake-ups: voluntary context switches (a thread blocked and was woken: a timeout, a read, a
  lock), from /proc/PID/task/TID/status, summed over the threads. /proc/PID/status alone would
  give the main thread's only. Involuntary switches (preempted by other load on the machine)
  are kept in the JSON, not counted as wake-ups.

once at the start of the window and once at its end (reading /proc wakes nobody), and reports
CPU as % of one core and wake-ups per second, against the targets (<= 0.2 %, <= 2/s). The
readings stored in SQLite and in MongoDB during the window are counted too: a chain that
stopped moving would look idle, so the run fails if nothing reached MongoDB.

Threads: CPython does not give its threads' names to the OS (before 3.14), so every process is
started through a small launcher that sets each Python thread's name as its OS name
(prctl PR_SET_NAME, 15 bytes, what ``top -H`` shows) when it starts; the main thread is the one
whose id is the process id. The launcher adds nothing that runs later.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if __name__ == "__main__" and sys.path[0] == str(Path(__file__).resolve().parent):
    sys.path[0] = str(ROOT)  # run as a script: import bench/ and ravend as packages
for _p in (ROOT,):
    if str(_p) not in sys.path:
        sys.path.insert(0, str(_p))

from bench import scratchconf  # noqa: E402
from bench.core import DEBIAN_PYTHON  # noqa: E402
from bench.processes import debian_env, free_port, terminate, wait_until  # noqa: E402
from ravend.protocol.model import Kind  # noqa: E402
from ravend.simulator import MeterSimulator  # noqa: E402
from tests.helpers import servers  # noqa: E402  (private Mosquitto and SecantusDB)

CPU_TARGET = 0.2  # % of one core, per process
WAKE_TARGET = 2.0  # voluntary context switches a second, per process
WINDOW_FULL, WINDOW_QUICK = 180.0, 30.0
#: From the last process's start to the window's start.
SETTLE_FULL, SETTLE_QUICK = 20.0, 8.0
#: The processes, in the order they start and are reported.
NAMES = ("ravend", "ravend-repeater", "ravend-mongo-ingest", "ravend-web")
_MODULES = {"ravend": "ravend.cli.ravend", "ravend-repeater": "ravend.cli.repeater",
            "ravend-mongo-ingest": "ravend.cli.mongo_ingest", "ravend-web": "ravend.cli.web"}
_CLOCK_TICKS = os.sysconf("SC_CLK_TCK")

#: Runs ``-m MODULE ARGS`` with every new thread's Python name given to the OS (PR_SET_NAME).
_LAUNCHER = """\
import ctypes, runpy, sys, threading
_libc = ctypes.CDLL(None)
_inner = threading.Thread._bootstrap_inner
def _named(self):
    try:
        _libc.prctl(15, self.name.encode("ascii", "replace")[:15], 0, 0, 0)
    except Exception:
        pass
    _inner(self)
threading.Thread._bootstrap_inner = _named
sys.argv = sys.argv[1:]
runpy.run_module(sys.argv[0], run_name="__main__", alter_sys=True)
"""


# --- /proc ------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ThreadSample:
    name: str
    ticks: int  # utime + stime
    voluntary: int
    involuntary: int


def _read(path: str) -> str | None:
    try:
        with open(path, encoding="ascii", errors="replace") as f:
            return f.read()
    except (FileNotFoundError, ProcessLookupError):
        return None  # a thread that ended meanwhile


def _ticks(stat: str) -> int:
    fields = stat.rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])  # stat fields 14 and 15: utime, stime


def process_ticks(pid: int) -> int:
    """utime + stime of the whole process (every thread, living or ended)."""
    stat = _read(f"/proc/{pid}/stat")
    if stat is None:
        raise RuntimeError(f"process {pid} is gone")
    return _ticks(stat)


def thread_samples(pid: int) -> dict[int, ThreadSample]:
    out = {}
    for entry in os.listdir(f"/proc/{pid}/task"):
        base = f"/proc/{pid}/task/{entry}"
        stat, status, comm = _read(f"{base}/stat"), _read(f"{base}/status"), _read(f"{base}/comm")
        if stat is None or status is None or comm is None:
            continue
        switches = {k: int(v) for k, _, v in (line.partition(":\t") for line in
                                               status.splitlines())
                    if k in ("voluntary_ctxt_switches", "nonvoluntary_ctxt_switches")}
        tid = int(entry)
        out[tid] = ThreadSample("main" if tid == pid else comm.strip(), _ticks(stat),
                                switches["voluntary_ctxt_switches"],
                                switches["nonvoluntary_ctxt_switches"])
    return out


@dataclass(frozen=True, slots=True)
class ProcessSample:
    at: float  # monotonic
    ticks: int
    threads: dict[int, ThreadSample]


def sample(pid: int) -> ProcessSample:
    threads = thread_samples(pid)
    return ProcessSample(time.monotonic(), process_ticks(pid), threads)


# --- figures ----------------------------------------------------------------------------------


@dataclass(slots=True)
class ProcessFigures:
    name: str
    pid: int
    seconds: float
    cpu_percent: float  # of one core
    wakeups: float  # voluntary switches a second, all threads
    involuntary: float  # a second, all threads
    threads: list[dict[str, Any]] = field(default_factory=list)  # busiest first

    @classmethod
    def between(cls, name: str, pid: int, a: ProcessSample, b: ProcessSample) -> ProcessFigures:
        seconds = b.at - a.at
        threads: list[dict[str, Any]] = []  # the JSON details: name, figures, CPU seconds
        for tid, end in b.threads.items():
            start = a.threads.get(tid, ThreadSample(end.name, 0, 0, 0))  # new in the window
            threads.append({"tid": tid, "name": end.name,
                            "wakeups_per_s": round((end.voluntary - start.voluntary) / seconds,
                                                   3),
                            "involuntary_per_s": round((end.involuntary - start.involuntary)
                                                       / seconds, 3),
                            "cpu_s": (end.ticks - start.ticks) / _CLOCK_TICKS})
        gone = sorted(set(a.threads) - set(b.threads))
        threads.sort(key=lambda t: (-t["wakeups_per_s"], -t["cpu_s"]))
        figures = cls(name, pid, seconds,
                      100 * (b.ticks - a.ticks) / _CLOCK_TICKS / seconds,
                      sum(t["wakeups_per_s"] for t in threads),
                      sum(t["involuntary_per_s"] for t in threads), threads)
        if gone:  # their switches in the window are not counted: say so
            figures.threads.append({"ended_in_window": [a.threads[t].name for t in gone]})
        return figures


@dataclass(slots=True)
class IdleRun:
    quick: bool
    window: float
    settle: float
    processes: dict[str, ProcessFigures]
    stored_sqlite: int  # readings committed by ravend during the window
    stored_mongo: int  # documents the ingest added during the window
    pushes: dict[str, int]

    def detail(self, name: str) -> dict[str, Any]:
        p = self.processes[name]
        return {"window_s": round(p.seconds, 1), "settle_s": self.settle, "pid": p.pid,
                "cpu_percent": round(p.cpu_percent, 4), "wakeups_per_s": round(p.wakeups, 3),
                "involuntary_per_s": round(p.involuntary, 3), "threads": p.threads,
                "readings_stored_sqlite_in_window": self.stored_sqlite,
                "documents_stored_mongo_in_window": self.stored_mongo,
                "simulator_pushes": self.pushes}


# --- the run ------------------------------------------------------------------------------------


class _Process:
    def __init__(self, name: str, config: Path, work: Path, *args: str) -> None:
        self.name = name
        self.log_path = work / f"{name}.log"
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen(
                [DEBIAN_PYTHON, "-c", _LAUNCHER, _MODULES[name], "--config", str(config), *args],
                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                env={**debian_env(), "PYTHONUNBUFFERED": "1"}, cwd=ROOT)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def check(self) -> None:
        if self.proc.poll() is not None:
            raise RuntimeError(f"{self.name} exited with {self.proc.returncode}:"
                               f" {self.log_tail()}")

    def log_tail(self, lines: int = 10) -> str:
        with contextlib.suppress(OSError):
            return " | ".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        return ""

    def stop(self) -> None:
        terminate(self.proc, 15)


def _sqlite_count(db: Path, conn: Any = None) -> int:
    """The newest reading's id. A connection of its own is opened and closed (before the
    window: closing it is a write event for the repeater's watch), or ``conn`` is used."""
    import sqlite3

    if conn is not None:
        return int(conn.execute("SELECT COALESCE(MAX(id), 0) FROM readings").fetchone()[0])
    with contextlib.closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5)) as c:
        return _sqlite_count(db, c)


def _answers(url: str) -> bool:
    import urllib.request

    try:
        with urllib.request.urlopen(url, timeout=2) as answer:
            answer.read()
        return True
    except OSError:
        return False


def measure(quick: bool, work: Path, log: Callable[[str], None]) -> IdleRun:
    """Start everything in ``work``, settle, measure the window, stop everything."""
    import sqlite3

    import pymongo

    window = WINDOW_QUICK if quick else WINDOW_FULL
    settle = SETTLE_QUICK if quick else SETTLE_FULL
    work.mkdir(parents=True, exist_ok=True)
    broker = servers.MosquittoServer(work / "broker")
    mongo = servers.SecantusServer(work / "mongo")
    sim = MeterSimulator("raven", link=str(work / "stick"), seed=11, speed=1.0)
    procs: dict[str, _Process] = {}
    client: pymongo.MongoClient[dict[str, Any]] | None = None
    reader: sqlite3.Connection | None = None
    try:
        broker.start()
        mongo.start()
        sim.start()
        config = scratchconf.write(work / "ravend.conf", work, {
            "device": {"port": sim.port},
            "mqtt": {"host": broker.host, "port": broker.port},
            "mongo": {"uri": mongo.uri, "database": "bench", "collection": "readings"}})
        db = work / "state" / "ravend.db"
        procs["ravend"] = _Process("ravend", config, work)
        if not wait_until(lambda: db.exists() and _sqlite_count(db) > 0, 60, 0.2):
            procs["ravend"].check()
            raise RuntimeError(f"ravend stored nothing in 60 s: {procs['ravend'].log_tail()}")
        for name in NAMES[1:3]:
            procs[name] = _Process(name, config, work)
        web = f"127.0.0.1:{free_port()}"
        procs["ravend-web"] = _Process("ravend-web", config, work, "--listen", web)
        if not wait_until(lambda: _answers(f"http://{web}/api/v1/health"), 30, 0.2):
            procs["ravend-web"].check()
            raise RuntimeError(f"ravend-web did not answer: {procs['ravend-web'].log_tail()}")
        client = pymongo.MongoClient(mongo.uri, serverSelectionTimeoutMS=10_000)
        coll = client["bench"]["readings"]
        started = time.monotonic()
        if not wait_until(lambda: coll.find_one({}, {"_id": 1}) is not None, 60, 0.5):
            for p in procs.values():
                p.check()
            raise RuntimeError("no reading reached MongoDB within 60 s: "
                               + "; ".join(f"{p.name}: {p.log_tail(3)}" for p in procs.values()))
        log(f"idle: chain up (meter -> ravend -> SQLite -> repeater -> broker -> ingest ->"
            f" SecantusDB; ravend-web on {web}); settling {settle:g} s")
        reader = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5)  # closed after
        time.sleep(max(0.0, started + settle - time.monotonic()))
        for p in procs.values():
            p.check()
        sqlite_before, mongo_before = _sqlite_count(db, reader), coll.count_documents({})
        pushes_before = {k.value: sim.sent_count(k.value) for k in Kind}
        first = {name: sample(p.pid) for name, p in procs.items()}
        log(f"idle: measuring for {window:g} s")
        end = time.monotonic() + window
        while time.monotonic() < end:
            time.sleep(min(5.0, max(0.0, end - time.monotonic())))
            for p in procs.values():
                p.check()
        last = {name: sample(p.pid) for name, p in procs.items()}
        stored_sqlite = _sqlite_count(db, reader) - sqlite_before
        stored_mongo = coll.count_documents({}) - mongo_before
        pushes = {k: sim.sent_count(k) - n for k, n in pushes_before.items()}
    finally:
        if reader is not None:
            reader.close()
        if client is not None:
            client.close()
        for p in reversed(list(procs.values())):
            p.stop()
        sim.stop()
        broker.kill()
        mongo.kill()
    if stored_mongo <= 0:
        raise RuntimeError(f"nothing reached MongoDB during the {window:g} s window"
                           f" ({stored_sqlite} readings stored in SQLite): the chain is stuck")
    figures = {name: ProcessFigures.between(name, procs[name].pid, first[name], last[name])
               for name in NAMES}
    return IdleRun(quick, window, settle, figures, stored_sqlite, stored_mongo, pushes)


# --- standalone ---------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="bench/idle.py", description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help=f"a {WINDOW_QUICK:g} s window")
    p.add_argument("--threads", action="store_true", help="print every thread's figures")
    p.add_argument("--keep", action="store_true", help="keep the work directory (logs)")
    args = p.parse_args(argv)
    started = time.monotonic()

    def log(message: str) -> None:
        print(f"[{time.monotonic() - started:6.1f}s] {message}", file=sys.stderr, flush=True)

    work = Path(tempfile.mkdtemp(prefix="ravend-bench-idle-", dir="/var/tmp"))
    try:
        run = measure(args.quick, work, log)
    finally:
        if args.keep:
            log(f"kept {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)
    ok = True
    print(f"idle at the real rate, {run.window:g} s window"
          f"{' (quick)' if run.quick else ''}: {run.stored_sqlite} readings stored in SQLite,"
          f" {run.stored_mongo} documents in MongoDB")
    for name, f in run.processes.items():
        good = f.cpu_percent <= CPU_TARGET and f.wakeups <= WAKE_TARGET
        ok &= good
        print(f"{name:20} CPU {f.cpu_percent:6.3f} % (<= {CPU_TARGET:g})  wake-ups"
              f" {f.wakeups:6.2f}/s (<= {WAKE_TARGET:g})  {'ok' if good else 'MISSED'}")
        if args.threads:
            for t in f.threads:
                if "tid" in t:
                    print(f"    {t['name']:16} {t['wakeups_per_s']:7.2f}/s  cpu {t['cpu_s']:.2f} s"
                          f"  involuntary {t['involuntary_per_s']:.2f}/s")
                else:
                    print(f"    {t}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
