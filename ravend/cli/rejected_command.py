"""``ravenctl rejected``: list the readings a store could not take, from ``rejected.db``.

Read-only (the file is opened with ``mode=ro``), so it never disturbs the running service. A
reading is in this list iff a sink's worker left it out for good; what each one held and why
is in its row (``ravend.sinks.quarantine``).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import sys
from collections.abc import Callable
from typing import Any

from ravend.config import Config

NAME = "rejected"


def add_parser(sub: Any, config_args: Callable[[argparse.ArgumentParser], None]) -> None:
    r = sub.add_parser(
        NAME, help="readings a store could not take, and why",
        description="List the readings a sink left out for good (a value the store cannot"
        " take, a payload that cannot be built, an outbox entry that cannot be decoded), with"
        " the reason, from rejected.db in the state directory. Read-only.")
    config_args(r)
    r.add_argument("--sink", metavar="NAME", help="only this sink (sqlite, mysql, mqtt)")
    r.add_argument("--limit", type=int, default=1000, help="the newest N (default 1000)")
    r.add_argument("--json", action="store_true", help="machine-readable output")


def run(args: argparse.Namespace, config: Config) -> int:
    from ravend.sinks.quarantine import FILE_NAME, Quarantine, QuarantineError

    box = Quarantine(config.service.state_dir / FILE_NAME, readonly=True)
    try:
        rows = box.rows(args.sink, limit=args.limit)
    except QuarantineError as exc:
        print(f"ravenctl rejected: {exc}", file=sys.stderr)
        return 1
    finally:
        box.close()
    if args.json:
        print(json.dumps(rows, indent=2))
    elif not rows:
        print("no rejected readings" + (f" for sink {args.sink}" if args.sink else ""))
    else:
        for row in rows:
            when = dt.datetime.fromtimestamp(row["rejected_at"], dt.UTC).strftime(
                "%Y-%m-%d %H:%M:%S")
            key = (f"{row['meter_mac']} {row['kind']} {row['key_time']}" if row["kind"]
                   else "(undecodable outbox entry)")
            print(f"{when}  {row['sink']}  {key}  {row['reason']}")
    sys.stdout.flush()
    return 0
