"""``ravenctl doctor``: argument parsing and printing; the checks are in ``ravend.doctor``.

It runs before ravenctl loads the configuration, because a configuration that does not load is
one of the things it reports (as one FAIL line) rather than a reason to stop (exit 78).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

NAME = "doctor"
EX_PROBLEM = 1

#: argparse fills it into lines of the terminal's width (line breaks here do not count).
DESCRIPTION = """\
Check what ravend needs, one line each with the fix: the configuration is valid; the device is
there, and which one; the service user may open it (group dialout); no other process
(ModemManager, a second logger) holds the port; each enabled store is reachable; a verified
backup of the SQLite store newer than two days; how many readings wait in the outboxes; free
space for the state directory; when ravend runs, whether each of its parts is up. Changes
nothing. Exits 1 when any line says FAIL (WARN does not count), 0 otherwise. Run it as root to
see which process holds the port.
"""


def add_parser(sub: Any, config_args: Callable[[argparse.ArgumentParser], None]) -> None:
    d = sub.add_parser(NAME, help="check the setup; one line per problem, with the fix",
                       description=DESCRIPTION)
    config_args(d)
    d.add_argument("--user", default="ravend", metavar="NAME",
                   help="the service user to check (default ravend)")
    d.add_argument("--json", action="store_true", help="machine-readable output")


def run(args: argparse.Namespace) -> int:
    from ravend.doctor import Options, failed, run

    checks = run(Options(config=args.config, user=args.user,
                         db=Path(args.db) if args.db else None, state_dir=args.state_dir))
    if args.json:
        print(json.dumps([c.as_dict() for c in checks], indent=2))
    else:
        for check in checks:
            print(check.line())
    sys.stdout.flush()
    return EX_PROBLEM if failed(checks) else 0
