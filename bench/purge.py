#!/usr/bin/python3
"""Purge benchmark: delete the oldest 80 % of a big store while ravend's sink keeps writing.

    bench/purge.py            2,000,000 readings per store (about two minutes each; the MariaDB
                              table, ~460 MB, is still well past its 128 MB buffer pool)
    bench/purge.py --quick    100,000 readings per store
    bench/purge.py --only sqlite|mariadb
    bench/purge.py --readings 5000000   the purge issue's own size (about five minutes each)

Each run bulk-loads the readings straight into the store (LOAD DATA on MariaDB, one big
executemany on SQLite: never through the sink), starts a writer thread that stores 10 readings
a second through the real sink (MysqlSink / SqliteSink, one write each, as the service's worker
does under light load), and purges with ``ravend.purge.purge`` and the default [retention]
chunk and pause. Figures: the writer's worst and 99th-percentile write time during the purge
(target: worst <= 200 ms), purge rows/s (pauses included), and the size before and after
(MariaDB: data+index of the readings table from the server's statistics, and the .ibd file;
SQLite: the database file plus its WAL).

MariaDB is a private server (tests/helpers/servers.py) with Debian's default InnoDB buffer pool
(128 MB) and redo log (96 MB), not the test suite's smaller ones. Roll-ups are switched off
here (``rollups = no``): the purge may then take every row older than the cutoff, which is what
is measured.

``bench_purge_mariadb(quick)`` and ``bench_purge_sqlite(quick)`` return table rows
(dicts: name, value, unit, target, ok) for bench/run.py.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import random
import shutil
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
for p in (ROOT,):
    if str(p) not in sys.path:
        sys.path.insert(0, str(p))

from ravend.config import MysqlConfig, RetentionConfig  # noqa: E402
from ravend.db.mysql import driver as mysql_driver  # noqa: E402
from ravend.protocol.model import KIND_UNITS, Kind, Reading, scale  # noqa: E402
from ravend.purge import purge  # noqa: E402
from ravend.store import MysqlStore, SqliteStore  # noqa: E402

FULL, QUICK = 2_000_000, 100_000
PURGED_SHARE = 0.8
WRITER_RATE = 10.0  # readings a second
STALL_TARGET_MS = 200.0
METER = "0x00135003001234ab"
DEVICE = "0xd8d5b9000000054e"
TICK = 8  # seconds between demands, as the devices push them
SUMMATION_EVERY = 30  # ticks (240 s)


def log(message: str) -> None:
    print(f"[purge bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def row(name: str, value: float | None, unit: str, target: str | None = None,
        ok: bool | None = None) -> dict[str, Any]:
    return {"name": name, "value": value, "unit": unit, "target": target, "ok": ok}


# --- data -------------------------------------------------------------------------------------


def plan(n: int) -> tuple[int, int]:
    """(first key time, ticks) for n readings ending an hour ago."""
    per_cycle = SUMMATION_EVERY + 2
    ticks = n * SUMMATION_EVERY // per_cycle + 1
    start = int(time.time()) - 3600 - ticks * TICK
    return start, ticks


def generate(n: int) -> Iterator[tuple[Any, ...]]:
    """n readings as rows of readings' columns (without id), oldest first."""
    start, ticks = plan(n)
    rng = random.Random(7)
    count = 0
    total = 50_000_000
    for tick in range(ticks):
        t = start + tick * TICK
        raw = rng.randint(-800, 4000)
        yield (METER, "demand", t, t, t + 0.3, DEVICE, raw, 1, 1000, f"{raw / 1000:.3f}", "kW")
        count += 1
        if tick % SUMMATION_EVERY == 0:
            total += rng.randint(0, 400)
            yield (METER, "summation_delivered", t, t, t + 0.3, DEVICE, total, 1, 1000,
                   f"{total / 1000:.3f}", "kWh")
            yield (METER, "summation_received", t, t, t + 0.3, DEVICE, 1234, 1, 1000,
                   "1.234", "kWh")
            count += 2
        if count >= n:
            return


def cutoff_of(n: int) -> int:
    """The key time below which PURGED_SHARE of the generated readings lie."""
    keep = n - int(n * PURGED_SHARE)
    for i, r in enumerate(generate(n)):
        if i == n - keep:
            return int(r[2])
    raise AssertionError("unreachable")


# --- the writer -------------------------------------------------------------------------------


class Writer(threading.Thread):
    """Writes one reading every 1/WRITER_RATE s through a sink and times every write."""

    def __init__(self, write: Callable[[list[Reading], list[Any]], None]) -> None:
        super().__init__(name="bench-writer", daemon=True)
        self.write = write
        self.times: list[float] = []
        self.errors: list[str] = []
        self._halt = threading.Event()
        self._base = int(time.time()) + 10_000_000  # newer than anything loaded

    def run(self) -> None:
        period = 1.0 / WRITER_RATE
        next_at = time.monotonic()
        i = 0
        while not self._halt.is_set():
            t = self._base + i
            r = Reading(METER, Kind.DEMAND, t, time.time(), 1000 + i % 500, 1, 1000,
                        scale(1000 + i % 500, 1, 1000), KIND_UNITS[Kind.DEMAND], DEVICE)
            started = time.perf_counter()
            try:
                self.write([r], [])
            except Exception as exc:  # a failed write is a finding, not a crash
                self.errors.append(f"{type(exc).__name__}: {exc}")
            self.times.append(time.perf_counter() - started)
            i += 1
            next_at += period
            self._halt.wait(max(0.0, next_at - time.monotonic()))

    def stop(self) -> None:
        self._halt.set()
        self.join(10)

    def figures(self) -> tuple[float, float]:
        """(worst, 99th percentile) in ms."""
        ordered = sorted(self.times)
        worst = ordered[-1] * 1000
        p99 = ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))] * 1000
        return worst, p99


def run_purge(store_factory: Callable[[], Any], cutoff: int,
              write: Callable[[list[Reading], list[Any]], None]) -> tuple[Any, float, Writer]:
    """Purge everything older than cutoff while the writer writes; (report, seconds, writer)."""
    settings = RetentionConfig(raw_days=1, rollups=False)
    store = store_factory()
    store.now = lambda: cutoff + 86400  # the purge's cutoff is now - raw_days
    writer = Writer(write)
    writer.start()
    time.sleep(1.0)  # the writer's steady state first
    started = time.monotonic()
    try:
        report = purge(store, settings)
    finally:
        took = time.monotonic() - started
        time.sleep(1.0)
        writer.stop()
        store.close()
    return report, took, writer


def result_rows(engine: str, n: int, report: Any, took: float, writer: Writer,
                sizes: list[tuple[str, float, float]]) -> list[dict[str, Any]]:
    worst, p99 = writer.figures()
    out = [
        row(f"{engine}: purge of {report.purged:,} of {n:,} readings, writer's worst write",
            round(worst, 1), "ms", f"<= {STALL_TARGET_MS:g}",
            worst <= STALL_TARGET_MS and not writer.errors),
        row(f"{engine}: writer's 99th percentile write during the purge", round(p99, 1), "ms"),
        row(f"{engine}: purge rate (~50 ms steps of <= {RetentionConfig().purge_chunk} rows,"
            f" {RetentionConfig().purge_pause * 1000:g} ms apart"
            + (", vacuum included)" if engine == "SQLite" else ")"),
            round(report.purged / took) if took else None, "rows/s"),
    ]
    for name, before, after in sizes:
        out.append(row(f"{engine}: {name} before purge", round(before / 1e6, 1), "MB"))
        out.append(row(f"{engine}: {name} after purge", round(after / 1e6, 1), "MB"))
    if writer.errors:
        out.append(row(f"{engine}: writer errors during the purge ({writer.errors[0]})",
                       len(writer.errors), "errors", "== 0", False))
    return out


# --- MariaDB ----------------------------------------------------------------------------------


def _mariadb_load(server: Any, db: str, n: int, work: Path) -> None:
    mysqldb = mysql_driver()  # the module, as ravend's sink gets it (typed Any: its stubs
    # leave Connection.commit and close unannotated)

    tsv = work / "readings.tsv"
    with open(tsv, "w") as out:
        for r in generate(n):
            out.write("\t".join(str(v) for v in r) + "\n")
    conn = mysqldb.connect(**server.connect_kwargs(db), local_infile=1)
    try:
        cur = conn.cursor()
        cur.execute("SET unique_checks = 0")
        cur.execute(
            f"LOAD DATA LOCAL INFILE '{tsv}' INTO TABLE readings (meter_mac, kind, key_time,"
            " meter_time, received_at, device_mac, raw, multiplier, divisor, value, unit)")
        conn.commit()
    finally:
        conn.close()
    tsv.unlink()


def _mariadb_sizes(server: Any, db: str) -> tuple[int, int]:
    """(data + index bytes of readings by the server's statistics, .ibd file bytes)."""
    mysqldb = mysql_driver()  # the module, as ravend's sink gets it (typed Any: its stubs
    # leave Connection.commit and close unannotated)

    conn = mysqldb.connect(**server.connect_kwargs(db))
    try:
        cur = conn.cursor()
        cur.execute("ANALYZE TABLE readings")
        cur.fetchall()
        cur.execute("SELECT data_length + index_length FROM information_schema.tables"
                    " WHERE table_schema = %s AND table_name = 'readings'", (db,))
        stats = int(cur.fetchone()[0])
    finally:
        conn.close()
    ibd = server.datadir / db / "readings.ibd"
    return stats, ibd.stat().st_size if ibd.exists() else 0


def bench_purge_mariadb(quick: bool, readings: int | None = None) -> list[dict[str, Any]]:
    from ravend.db.mysql import migrate_database
    from ravend.sinks.mysql import MysqlSink
    from tests.helpers import servers

    n = readings or (QUICK if quick else FULL)
    work = Path(tempfile.mkdtemp(prefix="ravend-bench-purge-"))
    server = servers.MariaDBServer(
        work / "mariadb",
        extra_args=["--innodb-buffer-pool-size=128M", "--innodb-log-file-size=96M",
                    "--local-infile=1"])
    try:
        log(f"mariadb: starting a private server in {work}")
        server.start()
        db = server.new_database("bench")
        cfg = MysqlConfig(enabled=True, host=server.host, port=server.port, user=server.user,
                          password=server.password, database=db)
        migrate_database(cfg)
        log(f"mariadb: loading {n:,} readings")
        started = time.monotonic()
        _mariadb_load(server, db, n, work)
        log(f"mariadb: loaded in {time.monotonic() - started:.0f} s")
        cutoff = cutoff_of(n)
        before = _mariadb_sizes(server, db)
        sink = MysqlSink(cfg, start_id="bench")
        sink.open()
        log("mariadb: purging while the writer writes")
        try:
            report, took, writer = run_purge(lambda: MysqlStore(cfg), cutoff, sink.write)
        finally:
            sink.close()
        log(f"mariadb: purged {report.purged:,} rows in {took:.1f} s")
        time.sleep(2.0)  # InnoDB's purge thread frees the deleted rows' pages
        after = _mariadb_sizes(server, db)
        return result_rows("MariaDB", n, report, took, writer, [
            ("readings table (data+index)", before[0], after[0]),
            ("readings.ibd file", before[1], after[1]),
        ])
    finally:
        server.kill()
        shutil.rmtree(work, ignore_errors=True)


# --- SQLite -----------------------------------------------------------------------------------


def _sqlite_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in (path, Path(f"{path}-wal")) if p.exists())


def bench_purge_sqlite(quick: bool, readings: int | None = None) -> list[dict[str, Any]]:
    from ravend.db import READING_COLUMNS
    from ravend.db.sqlite import connect, migrate
    from ravend.sinks.sqlite import SqliteSink

    n = readings or (QUICK if quick else FULL)
    work = Path(tempfile.mkdtemp(prefix="ravend-bench-purge-"))
    path = work / "ravend.db"
    try:
        conn = connect(path)
        migrate(conn)
        log(f"sqlite: loading {n:,} readings")
        started = time.monotonic()
        # generate() gives every column but scale, which keeps its default of 1 (as in MariaDB).
        columns = [c for c in READING_COLUMNS if c != "scale"]
        insert = (f"INSERT INTO readings ({', '.join(columns)})"
                  f" VALUES ({', '.join('?' * len(columns))})")
        conn.execute("BEGIN")
        conn.executemany(insert, ((*r[:9], float(r[9]), r[10]) for r in generate(n)))
        conn.execute("COMMIT")
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        conn.close()
        log(f"sqlite: loaded in {time.monotonic() - started:.0f} s")
        cutoff = cutoff_of(n)
        before = _sqlite_bytes(path)
        sink = SqliteSink(path)
        sink.open()
        log("sqlite: purging while the writer writes")
        try:
            report, took, writer = run_purge(lambda: SqliteStore(path), cutoff, sink.write)
        finally:
            sink.close()
        log(f"sqlite: purged {report.purged:,} rows in {took:.1f} s")
        after = _sqlite_bytes(path)
        return result_rows("SQLite", n, report, took, writer,
                           [("database file (+WAL)", before, after)])
    finally:
        shutil.rmtree(work, ignore_errors=True)


# --- standalone -------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="bench/purge.py", description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help=f"{QUICK:,} readings instead of"
                   f" {FULL:,}")
    p.add_argument("--only", choices=["sqlite", "mariadb"], help="one store only")
    p.add_argument("--readings", type=int, metavar="N",
                   help="N readings per store (the issue's figure: 5000000, about 5 minutes"
                        " per store)")
    args = p.parse_args(argv)
    rows: list[dict[str, Any]] = []
    if args.only in (None, "sqlite"):
        rows += bench_purge_sqlite(args.quick, args.readings)
    if args.only in (None, "mariadb"):
        rows += bench_purge_mariadb(args.quick, args.readings)
    width = max(len(r["name"]) for r in rows)
    for r in rows:
        status = {True: "ok", False: "MISSED", None: ""}[r["ok"]]
        target = r["target"] or ""
        value = "-" if r["value"] is None else f"{r['value']:,}"
        print(f"{r['name']:<{width}}  {value:>12} {r['unit']:<7} {target:<9} {status}")
    return 0 if all(r["ok"] is not False for r in rows) else 1


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        sys.exit(main())
    os._exit(130)
