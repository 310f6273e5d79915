"""ravenctl on a year of one home's readings: status, doctor's store check, report, export.

The store is bench/yearstore.py's (cached under .cache/; the quick run uses its 30 days). Each
figure is the median of a few runs, warm (the file in the page cache, as on a machine that
runs ravend): what a user waits for when they type the command.

* ``status_command``: the whole ``ravenctl status`` as a process, interpreter start and imports
  included (the modules compiled, as installed): the target (<= 0.1 s) is on this, what a user
  waits for;
* ``status_store``: what ``ravenctl status`` asks of the store (open it read-only, the summary
  per meter and kind, the newest received time, the size), in this process: the part that
  grows with the store;
* ``status_command_tiny``: the same on a store of one reading, for comparison;
* ``status_before``: the queries status made before (a COUNT, MIN, MAX per kind over the whole
  table, MAX(received_at) over every row), for comparison;
* ``doctor_store``: doctor's ``sink sqlite`` check;
* ``report_year`` and ``export_day``: ``ravenctl report`` over every day of the store, ``ravenctl
  export`` of one day as CSV (to /dev/null), as processes.
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

from bench import yearstore
from bench.core import Context
from bench.yearstore import ROOT
from ravend.sinks.sqlite import SqliteSink

RUNS = 5


@dataclass
class StoreTimes:
    store: yearstore.YearStore
    seconds: dict[str, float] = field(default_factory=dict)
    runs: dict[str, list[float]] = field(default_factory=dict)

    def detail(self, key: str) -> dict[str, Any]:
        s = self.store
        return {"readings": s.readings, "days": s.days, "db": str(s.db),
                "runs_s": [round(x, 4) for x in self.runs[key]]}


def _median(fn: Callable[[], object], runs: int = RUNS) -> tuple[float, list[float]]:
    fn()  # warm: the pages in the cache, the modules imported
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        fn()
        times.append(time.perf_counter() - started)
    return statistics.median(times), times


#: Where the ravenctl runs keep their compiled modules, as the package's are compiled at install
#: (make's PYTHONDONTWRITEBYTECODE would otherwise have every run compile every module).
PYCACHE = ROOT / ".cache" / "bench-pycache"


def _ravenctl(store: yearstore.YearStore, *args: str) -> Callable[[], None]:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    env.update(PYTHONPATH=str(ROOT), PYTHONPYCACHEPREFIX=str(PYCACHE))

    def run() -> None:
        proc = subprocess.run([sys.executable, "-m", "ravend.cli.ravenctl", *args,
                               "--config", str(store.config)], cwd=ROOT, env=env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        if proc.returncode not in (0, 3):  # 3: stale, as a store of last year's readings is
            raise RuntimeError(f"ravenctl {' '.join(args)} exited {proc.returncode}:"
                               f" {proc.stderr.strip()[-300:]}")

    return run


def _status_store(store: yearstore.YearStore) -> None:
    """As ravenctl status does."""
    from ravend.store_status import SqliteReader

    reader = SqliteReader(store.db)
    try:
        reader.summary()
        reader.newest_received()
        reader.size_bytes()
    finally:
        reader.close()


#: What status asked before it read only indexes: a GROUP BY and a MAX over every row.
BEFORE = (
    "SELECT meter_mac, kind, COUNT(*), MIN(key_time), MAX(key_time), MAX(received_at)"
    " FROM readings GROUP BY meter_mac, kind ORDER BY meter_mac, kind",
    "SELECT MAX(received_at) FROM readings",
)


def _status_before(store: yearstore.YearStore) -> None:
    from ravend.db.sqlite import connect

    conn = connect(store.db, readonly=True)
    try:
        for sql in BEFORE:
            conn.execute(sql).fetchall()
    finally:
        conn.close()


def _doctor_store(store: yearstore.YearStore) -> None:
    from ravend.doctor_check import Status
    from ravend.doctor_sinks import check_sqlite

    check = check_sqlite(store.db, lambda p: True)
    if check.status is not Status.OK:
        raise RuntimeError(check.line())


def _one_reading_store(ctx: Context) -> Path:
    """A store of one reading: what ravenctl status costs when the store costs nothing."""
    from ravend.protocol.model import Kind, Reading

    path = ctx.work / "one-reading.db"
    sink = SqliteSink(path)
    sink.open()
    try:
        sink.write([Reading(yearstore.METER, Kind.DEMAND, yearstore.START, yearstore.START + 0.4,
                            500, 1, 1000, Decimal("0.5"), "kW", yearstore.DEVICE)], [])
    finally:
        sink.close()
    return path


def _iso_day(t: int) -> str:
    """The UTC date of ``t``, as ravenctl's --since and --until take it."""
    return time.strftime("%Y-%m-%d", time.gmtime(t))


def measure(ctx: Context) -> StoreTimes:
    days = ctx.pick(yearstore.QUICK_DAYS, yearstore.FULL_DAYS)
    store = yearstore.store(days, ctx.log)
    times = StoreTimes(store)
    day = store.start + (days // 2) * yearstore.DAY
    tiny = _one_reading_store(ctx)
    cases: dict[str, Callable[[], object]] = {
        "status_store": lambda: _status_store(store),
        "status_command": _ravenctl(store, "status"),
        "status_command_tiny": _ravenctl(store, "status", "--db", str(tiny)),
        "status_before": lambda: _status_before(store),
        "doctor_store": lambda: _doctor_store(store),
        "report_year": _ravenctl(store, "report", "--since", _iso_day(store.start), "--until",
                                 _iso_day(store.end), "--format", "csv"),
        "export_day": _ravenctl(store, "export", "--since", _iso_day(day), "--until",
                                _iso_day(day + yearstore.DAY)),
    }
    for key, fn in cases.items():
        ctx.log(f"store commands: {key} on {store.readings:,} readings")
        runs = 1 if key == "status_before" else RUNS  # seconds each: once is enough
        times.seconds[key], times.runs[key] = _median(fn, runs)
    return times
