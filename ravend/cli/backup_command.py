"""``ravenctl backup`` and ``ravenctl restore``: argument parsing and printing.

The work is in ``ravend.backup``, imported only when one of these commands runs (``ravenctl
status`` must stay light: tests/test_status_imports.py).
"""

from __future__ import annotations

import argparse
import signal
import sys
from collections.abc import Callable
from pathlib import Path
from types import FrameType
from typing import Any

from ravend.config import Config
from ravend.plural import plural
from ravend.timetext import iso_utc

NAMES = frozenset({"backup", "restore"})
EX_FAILED = 1
#: No store to back up yet (ravend has never run here): ravend-backup.service counts it as a
#: success (SuccessExitStatus=2), as nothing is lost.
EX_NODATA = 2
#: The running ravend holds the state lock (EX_TEMPFAIL).
EX_RUNNING = 75


def add_parsers(sub: Any, config_args: Callable[[argparse.ArgumentParser], None]) -> None:
    b = sub.add_parser(
        "backup", help="a verified, compressed copy of the SQLite store, then rotation",
        description="Copy the SQLite store while ravend runs (SQLite's backup API: a consistent"
        " snapshot, the writer never waits), with the configuration file and a manifest"
        " (version, schema, readings per kind, time range, checksum), into a .tar.gz. Each"
        " copy is read back and verified (integrity check, checksum, counts) before it is"
        " renamed into place; then the older copies are rotated ([backup] keep_daily,"
        " keep_weekly). The outboxes are not copied. ravend-backup.timer runs this daily.")
    config_args(b)
    b.add_argument("--to", type=Path, metavar="DIR",
                   help="the folder to write to (default: [backup] dir, /var/backups/ravend)")

    r = sub.add_parser(
        "restore", help="put a verified backup in place of the SQLite store",
        description="Verify the backup (a corrupt or truncated file, or one of a newer schema,"
        " is refused), then put its database in place of the SQLite store in one rename,"
        " keeping the current store as <store>.before-restore; a backup of an older schema is"
        " migrated. Refused while ravend runs: stop it first (sudo systemctl stop ravend),"
        " then start it again. --check only verifies and says what the backup holds.")
    config_args(r)
    r.add_argument("file", type=Path, metavar="FILE", help="a ravend-*.tar.gz backup")
    r.add_argument("--check", action="store_true",
                   help="verify the backup and describe it; change nothing")


def _exit_on_sigterm() -> None:
    """SIGTERM (systemctl stop, a timeout) becomes SystemExit, so that the work folder, a full
    copy of the store, is removed on the way out rather than left behind for ever."""

    def stop(signum: int, frame: FrameType | None) -> None:
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, stop)


def run(args: argparse.Namespace, config: Config) -> int:
    from ravend.backup import BackupError, StoreRunning

    _exit_on_sigterm()
    try:
        if args.command == "backup":
            return cmd_backup(args, config)
        return cmd_restore(args, config)
    except StoreRunning as exc:
        print(f"ravenctl: {exc}", file=sys.stderr)
        return EX_RUNNING
    except BackupError as exc:
        print(f"ravenctl: {exc}", file=sys.stderr)
        return EX_FAILED
    except PermissionError as exc:
        print(f"ravenctl: {exc.filename or exc}: permission denied: run it with sudo, or as"
              " the ravend user", file=sys.stderr)
        return EX_FAILED


def _store(args: argparse.Namespace, config: Config) -> Path:
    return Path(args.db) if args.db else config.sqlite_path


def _holds(manifest: Any) -> str:
    kinds = ", ".join(f"{n} {kind}" for kind, n in sorted(manifest.readings.items()))
    span = (f", {iso_utc(manifest.oldest)} .. {iso_utc(manifest.newest)}"
            if manifest.oldest is not None else "")
    return (f"{plural(manifest.total, 'reading')} ({kinds or 'none'}){span};"
            f" {manifest.rollup_hourly} hourly and {manifest.rollup_daily} daily roll-ups;"
            f" schema {manifest.schema_version}, ravend {manifest.ravend_version}")


def cmd_backup(args: argparse.Namespace, config: Config) -> int:
    from ravend import backup

    store = _store(args, config)
    if not store.exists():
        print(f"ravenctl: {store}: no database yet (has ravend run?): nothing to back up",
              file=sys.stderr)
        return EX_NODATA
    folder = args.to or config.backup.dir
    conffile = Path(args.config)
    path, manifest = backup.take(store, folder, conffile if conffile.is_file() else None)
    size = path.stat().st_size
    print(f"{path}: verified; {_holds(manifest)}; {size / 1e6:.1f} MB")
    gone = backup.rotate(folder, config.backup.keep_daily, config.backup.keep_weekly,
                         written=path)
    if gone:
        print(f"rotation removed {', '.join(p.name for p in gone)}")
    return 0


def cmd_restore(args: argparse.Namespace, config: Config) -> int:
    from ravend import backup

    if args.check:
        manifest = backup.verify(args.file)
        backup.check_schema(args.file, manifest)
        print(f"{args.file}: verified; {_holds(manifest)}")
        return 0
    store = _store(args, config)
    done = backup.restore(args.file, store, config.service.state_dir)
    print(f"{store}: restored from {args.file}; {_holds(done.manifest)}")
    if done.migrated:
        print(f"migrated to schema {done.migrated[-1]} (applied"
              f" {', '.join(map(str, done.migrated))})")
    if done.kept is not None:
        print(f"the store it replaced is kept as {done.kept}")
    return 0
