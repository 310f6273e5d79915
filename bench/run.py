#!/usr/bin/python3
"""Run ravend's benchmarks and print one table of figures against their targets.

    bench/run.py            the full run (within 15 minutes on 2 cores): `make bench`
    bench/run.py --quick    smaller sizes (within 2 minutes): `make bench-quick`
    bench/run.py --only throughput,cpu   some rows only (keys: --list)

It starts everything it needs (the simulator, ravend, the peers; a venv for aioraven under
.cache/) and needs no meter. Progress goes to stderr, the table to stdout, and every figure with
its details to bench/results-<date>.json. The exit status is 1 when a row misses its target or
cannot be measured, so that a script can tell.
"""

from __future__ import annotations

import argparse
import datetime as dt
import sys
import time
from pathlib import Path

# Run as a script (bench/run.py): the repository root holds both `bench` and `ravend`.
ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench import rows  # noqa: E402,F401 - importing registers the rows
from bench.core import ROWS, Context, header, machine, remove, run_rows, save, scratch, table  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="bench/run.py", description=__doc__.splitlines()[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog="rows: " + ", ".join(r.key for r in ROWS))
    p.add_argument("--quick", action="store_true", help="smaller sizes, under 2 minutes")
    p.add_argument("--only", metavar="KEYS", help="comma-separated row keys to run")
    p.add_argument("--list", action="store_true", help="list the row keys and exit")
    p.add_argument("--out", type=Path, metavar="PATH",
                   help="where the JSON goes (default bench/results-<date>.json)")
    args = p.parse_args(argv)
    if args.list:
        for r in ROWS:
            print(f"{r.key:14} {r.what}")
        return 0
    only = set(args.only.split(",")) if args.only else None
    unknown = (only or set()) - {r.key for r in ROWS}
    if unknown:
        p.error(f"unknown row(s) {', '.join(sorted(unknown))}; see --list")

    started = time.monotonic()

    def log(message: str) -> None:
        print(f"[{time.monotonic() - started:6.1f}s] {message}", file=sys.stderr, flush=True)

    m = machine()
    work = scratch()
    try:
        outcomes = run_rows(Context(args.quick, work, log), only)
    finally:
        remove(work)
    m["bench_seconds"] = round(time.monotonic() - started, 1)
    stamp = dt.datetime.now().strftime("%Y-%m-%d-%H%M%S")
    out = args.out or ROOT / "bench" / f"results-{stamp}.json"
    save(out, m, args.quick, outcomes)
    print(header(m, args.quick))
    print(table(outcomes))
    print(f"({m['bench_seconds']:.0f} s; details in {out})")
    return 0 if all(o.status in ("pass", "info") for o in outcomes) else 1


if __name__ == "__main__":
    sys.exit(main())
