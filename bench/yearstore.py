#!/usr/bin/python3
"""A year of one home's readings in a SQLite store, made once and cached under .cache/.

    bench/yearstore.py            make (or find) the year store and print its path
    bench/yearstore.py --quick    the quick store: 30 days (about 350,000 readings)

One meter, as a RAVEn reports it: demand every 8 s, both summations every 4 min, the price
every hour (about 4.2 million readings a year), from a fixed start, so that every run and every
bench (status here, the dashboard's later) looks at the same data. The readings go straight in
with one executemany in one transaction (never through the sink: that is the throughput row's
business), then the hourly and daily roll-ups are computed by ravend's own maintenance code
(``ravend.rollup_update.update_rollups``), as the service would have done over the year.

The file is cached as ``.cache/yearstore-v<VERSION>-<days>d/ravend.db`` next to a ravend.conf
that points at it (time zone UTC, no stick): change the generator, bump ``VERSION``, and the
next run makes a new one. ``store(days)`` returns the ``YearStore``; ``ravenctl --config
<conf>`` reads it. Callers must not write to it (copy it first).
"""

from __future__ import annotations

import argparse
import random
import shutil
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench import scratchconf  # noqa: E402

#: Bump when the data or the roll-ups made from it change: the cache key.
VERSION = 1
#: 2025-12-01T00:00:00Z: a fixed year, so that cached and fresh stores hold the same readings.
START = 1_764_547_200
DAY = 86_400
DEMAND_EVERY = 8
SUMMATION_EVERY = 240
PRICE_EVERY = 3600
METER = "0x00135003007c25b1"
DEVICE = "0xd8d5b9000000a1b2"
FULL_DAYS = 365
QUICK_DAYS = 30
CACHE = ROOT / ".cache"

Row = tuple[Any, ...]


@dataclass(frozen=True)
class YearStore:
    db: Path
    config: Path
    days: int
    readings: int
    start: int

    @property
    def end(self) -> int:
        return self.start + self.days * DAY


def _demand_kw(t: int, rng: random.Random) -> int:
    """Watts: a base load, an evening peak, noise; now and then solar export (negative)."""
    hour = (t % DAY) / 3600
    base = 350 + (1800 if 17 <= hour < 22 else 0) + (600 if 6 <= hour < 8 else 0)
    solar = -2500 if 11 <= hour < 14 and rng.random() < 0.3 else 0
    return base + solar + rng.randint(-150, 600)


def readings(days: int, start: int = START) -> Iterator[Row]:
    """The readings' rows (readings' columns without id), oldest first."""
    rng = random.Random(17)
    delivered, received = 12_345_678, 2_345
    end = start + days * DAY
    for t in range(start, end, DEMAND_EVERY):
        at = t + 0.4
        raw = _demand_kw(t, rng)
        yield (METER, "demand", t, t, at, DEVICE, raw, 1, 1000, raw / 1000, "kW", 1)
        if t % SUMMATION_EVERY == 0:
            delivered += max(0, raw) * SUMMATION_EVERY // 3600
            received += max(0, -raw) * SUMMATION_EVERY // 3600
            yield (METER, "summation_delivered", t, t, at, DEVICE, delivered, 1, 1000,
                   delivered / 1000, "kWh", 1)
            yield (METER, "summation_received", t, t, at, DEVICE, received, 1, 1000,
                   received / 1000, "kWh", 1)
        if t % PRICE_EVERY == 0:
            cents = 1450 if 16 <= (t % DAY) // 3600 < 21 else 980  # per 10,000: USD 0.145
            yield (METER, "price", t, t, at, DEVICE, cents, 1, 10_000, cents / 10_000, "USD", 1)


def sections(db: Path) -> scratchconf.Sections:
    """The store's settings (its SQLite file, days in UTC); scratchconf adds the paths."""
    return {"device": {"port": "auto"}, "sqlite": {"path": db}, "retention": {"time_zone": "UTC"}}


def _build(where: Path, days: int, log: Callable[[str], None]) -> int:
    from ravend.db import READING_COLUMNS
    from ravend.db.sqlite import connect, migrate
    from ravend.rollup_update import update_rollups
    from ravend.store import SqliteStore

    db = where / "ravend.db"
    conn = connect(db)
    migrate(conn)
    insert = (f"INSERT INTO readings ({', '.join(READING_COLUMNS)})"
              f" VALUES ({', '.join('?' * len(READING_COLUMNS))})")
    started = time.monotonic()
    conn.execute("BEGIN")
    conn.executemany(insert, readings(days))
    conn.execute("COMMIT")
    n = int(conn.execute("SELECT COUNT(*) FROM readings").fetchone()[0])
    conn.close()
    log(f"yearstore: {n:,} readings in {time.monotonic() - started:.0f} s; rolling up")
    started = time.monotonic()
    store = SqliteStore(db)
    try:
        report = update_rollups(store, "UTC")
        store.checkpoint("TRUNCATE")
    finally:
        store.close()
    log(f"yearstore: {report.hours:,} hours, {report.days:,} days rolled up in"
        f" {time.monotonic() - started:.0f} s")
    return n


def store(days: int = FULL_DAYS, log: Callable[[str], None] = print) -> YearStore:
    """The cached store of ``days`` days, made first if it is not there yet."""
    where = CACHE / f"yearstore-v{VERSION}-{days}d"
    done = where / "readings.count"
    if not done.exists():
        shutil.rmtree(where, ignore_errors=True)
        building = where.with_name(where.name + ".partial")
        shutil.rmtree(building, ignore_errors=True)
        building.mkdir(parents=True)
        log(f"yearstore: generating {days} days of readings into {where}")
        n = _build(building, days, log)
        (building / "readings.count").write_text(f"{n}\n")
        building.rename(where)
    db = where / "ravend.db"
    config = scratchconf.write(where / "ravend.conf", where, sections(db))
    (where / "state").mkdir(exist_ok=True)
    return YearStore(db, config, days, int(done.read_text()), START)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="bench/yearstore.py", description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help=f"{QUICK_DAYS} days instead of a year")
    p.add_argument("--days", type=int, help="this many days")
    args = p.parse_args(argv)
    days = args.days or (QUICK_DAYS if args.quick else FULL_DAYS)
    s = store(days, lambda m: print(m, file=sys.stderr, flush=True))
    print(f"{s.db}  ({s.readings:,} readings, {days} days; config {s.config})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
