"""``ravenctl``: look at what ravend stored, export it, and run the meter simulator."""

from __future__ import annotations

import argparse
import contextlib
import csv
import datetime as dt
import errno
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

from ravend import __version__
from ravend.cli import (
    backup_command,
    device_commands,
    doctor_command,
    rejected_command,
    report_command,
    simulate_command,
    store_commands,
)
from ravend.config import (
    DEFAULT_PATH,
    EX_CONFIG,
    Config,
    ConfigError,
    ConfigUnreadable,
)
from ravend.runtime.config_loader import load_config, refuse
from ravend.timetext import iso_utc

DESCRIPTION = """\
Inspect and export what ravend has stored, and simulate a meter stick without hardware.
Reads the SQLite store named by the configuration file ([service] state_dir, [sqlite] path);
reading never disturbs the running service.
"""

EPILOG = """\
examples:
  ravenctl status                     per meter: last demand and summation, counts, db size;
                                      whether ravend runs, and which of its parts are down
  ravenctl info                       what the stick last said about itself and its meters
  ravenctl tail                       follow new readings as ravend stores them
  ravenctl export --since 2026-11-01 --format csv > november.csv
  ravenctl simulate --link /tmp/raven a fake RAVEn on a pty (point [device] port at it)
  ravenctl device info --refresh      ask the stick (through the running ravend)
  ravenctl price set 0.1234 --currency USD
  ravenctl export --rollup daily      one row per meter and day: demand avg/min/max, kWh
  ravenctl report --days 2            yesterday and today: kWh, kW, cost, gaps
  ravenctl purge --dry-run            what the retention settings would delete now
  ravenctl db migrate                 create/upgrade the SQLite and MySQL tables
  ravenctl doctor                     what is wrong with the setup, one line each with the fix
  ravenctl rejected                   readings a store could not take, and why
  ravenctl backup --to /mnt/usb       a verified copy of the SQLite store (then rotation)
  ravenctl restore FILE               put a verified backup in place (ravend stopped)
Run 'ravenctl COMMAND --help' for each command's options. See ravenctl(1).
"""

EX_STALE = 3
EX_NODATA = 2
#: ravend runs, but a part of it is down (or its control socket does not answer).
EX_PART_DOWN = 5


def _config_args(p: argparse.ArgumentParser, dest: str = "") -> None:
    """The options every command takes. Given before the command too (as git and systemctl
    allow): there they land in top_* and main() uses them where the command has none."""
    p.add_argument("-c", "--config", dest=dest + "config", metavar="PATH",
                   help=f"configuration file (default {DEFAULT_PATH})")
    p.add_argument("--db", dest=dest + "db", type=Path, metavar="PATH",
                   help="SQLite database to read (default: from the configuration)")
    p.add_argument("--state-dir", dest=dest + "state_dir", type=Path, metavar="DIR",
                   help="override [service] state_dir")


def _command_index(argv: list[str]) -> int | None:
    """Where the command is: the first word that is neither an option nor an option's value."""
    i = 0
    while i < len(argv):
        word = argv[i]
        if not word.startswith("-"):
            return i
        i += 2 if word in ("-c", "--config", "--db", "--state-dir") else 1
    return None


def _merge_top_options(args: argparse.Namespace) -> None:
    """Options given before the command fill in those the command was not given."""
    for name in ("config", "db", "state_dir"):
        top = getattr(args, "top_" + name, None)
        if getattr(args, name, None) is None:
            setattr(args, name, top)
    if args.config is None:
        args.config = DEFAULT_PATH


class _Unbuilt:
    """Stands in for the parser of a command that was not chosen: takes every call (add_argument,
    add_subparsers, add_parser...) and builds nothing."""

    def __getattr__(self, name: str) -> Any:
        return self._ignore

    def _ignore(self, *args: Any, **kwargs: Any) -> _Unbuilt:
        return self


class _OneCommand:
    """The subparsers of a run whose command is known: only that command's parser is built.

    Each parser costs argparse a gettext look-up per message (files stat'ed on every call), and
    ravenctl has some thirty: building them all took a tenth of a ``ravenctl status`` run."""

    def __init__(self, sub: Any, name: str) -> None:
        self.sub = sub
        self.name = name
        self.built = False

    def add_parser(self, name: str, **kwargs: Any) -> Any:
        if name != self.name:
            return _Unbuilt()
        self.built = True
        return self.sub.add_parser(name, **kwargs)


def _chosen(argv: list[str]) -> str | None:
    """The command named on the line, when only its parser is needed: not when the line asks
    for ravenctl's own help (which lists every command) before it."""
    at = _command_index(argv)
    if at is None or any(w.startswith(("-h", "--h")) for w in argv[:at]):
        return None
    return argv[at]


def parser(only: str | None = None) -> argparse.ArgumentParser:
    """ravenctl's parser; with ``only``, the parser of that one command alone (every command's
    when ``only`` is no command's name, so that a typo is told the choices)."""
    p = argparse.ArgumentParser(prog="ravenctl", description=DESCRIPTION, epilog=EPILOG,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--version", action="version", version=f"ravenctl {__version__}")
    _config_args(p, dest="top_")
    every = p.add_subparsers(dest="command", metavar="COMMAND", required=True)
    sub: Any = every if only is None else _OneCommand(every, only)

    s = sub.add_parser("status", help="last readings per meter; exit 3 when stale",
                       description="Per meter and kind: the latest value, how many readings (about,"
                       " past 10,000: status reads only indexes, fast at any size), the"
                       " oldest and newest; the database size; whether ravend runs and which of"
                       " its parts are down. Exits 5 when a part of the running ravend is down,"
                       " 3 when the newest reading is older than [device] stale_after, 2 when"
                       " there is none, so cron, a systemd timer or a monitoring agent can alarm"
                       " on it.")
    _config_args(s)
    s.add_argument("--json", action="store_true", help="machine-readable output")

    i = sub.add_parser("info", help="device and meter information as last stored",
                       description="What the stick last reported: DeviceInfo (model, firmware),"
                       " ConnectionStatus, MeterList, MeterInfo, TimeCluster and any fragment"
                       " this version does not know, as stored by ravend.")
    _config_args(i)
    i.add_argument("--json", action="store_true", help="machine-readable output")

    t = sub.add_parser("tail", help="follow new readings",
                       description="Print readings as ravend stores them (Ctrl-C to stop).")
    _config_args(t)
    t.add_argument("-n", "--lines", type=int, default=10, help="show the last N first")
    t.add_argument("--interval", type=float, default=1.0, help="seconds between looks")
    t.add_argument("--count", type=int, help="exit after printing this many new readings")

    e = sub.add_parser("export", help="write readings as CSV or JSON lines",
                       description="Write readings in a time range to stdout. Times are meter"
                       " times (host receive time where the meter clock was unset).")
    _config_args(e)
    e.add_argument("--since", help="start (ISO date/time, UTC unless an offset is given,"
                   " or Unix seconds); default: the beginning")
    e.add_argument("--until", help="end, exclusive; default: now")
    e.add_argument("--format", choices=["csv", "jsonl"], default="csv")
    e.add_argument("--kind", action="append", help="only this kind (repeatable)")

    store_commands.add_export_args(e)

    device_commands.add_parsers(sub, _config_args)
    store_commands.add_parsers(sub, _config_args)
    doctor_command.add_parser(sub, _config_args)
    report_command.add_parser(sub, _config_args)
    rejected_command.add_parser(sub, _config_args)
    backup_command.add_parsers(sub, _config_args)

    simulate_command.add_parser(sub)
    if isinstance(sub, _OneCommand) and not sub.built:
        return parser()
    return p


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    command_at = _command_index(argv)
    if command_at is not None and argv[command_at] == simulate_command.NAME:
        return simulate_command.main(argv[command_at + 1:])  # its own (store options mean nothing)
    args = parser(_chosen(argv)).parse_args(argv)
    _merge_top_options(args)
    if args.command == doctor_command.NAME:
        return doctor_command.run(args)  # a bad configuration is one of its findings
    try:
        config = _config(args)
    except ConfigUnreadable as exc:
        print(no_access(exc.path), file=sys.stderr)
        return EX_CONFIG
    except ConfigError as exc:
        return refuse("ravenctl", exc)
    if args.command in device_commands.NAMES:
        return device_commands.run(args, config)
    if args.command in store_commands.NAMES:
        return store_commands.run(args, config)
    if args.command == report_command.NAME:
        return report_command.run(args, config)
    if args.command == rejected_command.NAME:
        return rejected_command.run(args, config)
    if args.command in backup_command.NAMES:
        return backup_command.run(args, config)
    command = {"status": cmd_status, "info": cmd_info, "tail": cmd_tail,
               "export": cmd_export}[args.command]
    try:
        return command(args, config)
    except PermissionError as exc:
        print(no_access(exc.filename or str(exc)), file=sys.stderr)
        return EX_NODATA
    except FileNotFoundError as exc:
        print(f"ravenctl: {exc}", file=sys.stderr)
        return EX_NODATA
    except KeyboardInterrupt:
        return 0
    except BrokenPipeError:
        return 0


def _config(args: argparse.Namespace) -> Config:
    return load_config(args.config, state_dir=getattr(args, "state_dir", None))


def no_access(path: str | os.PathLike[str]) -> str:
    """The one line for a file this user may not read: what to do about it."""
    return (f"ravenctl: {path}: permission denied: run it with sudo, or join the group ravend"
            " (sudo adduser $USER ravend, then log in again)")


def _reader(args: argparse.Namespace, config: Config) -> Any:
    from ravend.store_status import SqliteReader

    path = Path(args.db or config.sqlite_path)
    # In a directory this user may not search, the file looks absent: say why instead.
    with contextlib.suppress(FileNotFoundError):
        os.stat(path)  # PermissionError when a directory on the way is closed to this user
        if not os.access(path, os.R_OK):
            raise PermissionError(errno.EACCES, "permission denied", str(path))
    return SqliteReader(path)


def _iso(ts: float | None) -> str:
    return iso_utc(ts)


def _ago(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f}s ago"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min ago"
    if seconds < 172800:
        return f"{seconds / 3600:.1f} h ago"
    return f"{seconds / 86400:.1f} days ago"


def cmd_status(args: argparse.Namespace, config: Config) -> int:
    from ravend.health import query

    reader = _reader(args, config)
    service = query(config)
    rows = reader.summary()
    newest = reader.newest_received()
    size = reader.size_bytes()
    now = time.time()
    stale = newest is None or now - newest > config.device.stale_after
    if args.json:
        print(json.dumps({"database": str(reader.path), "size_bytes": size,
                          "newest_received": newest, "stale": stale,
                          "stale_after": config.device.stale_after, "meters": rows,
                          "service": service.as_dict()}, indent=2))
    else:
        print(f"database  {reader.path} ({size / 1e6:.1f} MB)")
        if newest is None:
            print("no readings stored yet")
        meter = None
        for row in rows:
            if row["meter_mac"] != meter:
                meter = row["meter_mac"]
                print(f"meter {meter}")
            print(f"  {row['kind']:<22} {_exact(row):>14} {row['unit']:<8}"
                  f" {_how_many(row):>9} {'reading' if row['n'] == 1 else 'readings':<8}"
                  f"  {_iso(row['oldest'])} .. {_iso(row['newest'])}")
        if newest is not None:
            print(f"newest reading received {_ago(now - newest)}"
                  + (f"  STALE (older than {config.device.stale_after:g}s)" if stale else ""))
        print(f"ravend    {service.summary()}")
    reader.close()
    if service.running and (service.down() or not service.answered):
        return EX_PART_DOWN
    if newest is None:
        return EX_NODATA
    return EX_STALE if stale else 0


def _how_many(row: dict[str, Any]) -> str:
    """An exact count as it is; an estimate (``n_exact`` false) rounded, as "about 3.9M"."""
    n = int(row["n"])
    if row.get("n_exact", True):
        return str(n)
    for size, unit in ((10**6, "M"), (10**3, "k")):
        if n >= size:
            return f"about {n / size:.2g}{unit}" if n < 100 * size else f"about {n // size}{unit}"
    return f"about {n}"


def cmd_info(args: argparse.Namespace, config: Config) -> int:
    from ravend.sinks.mqtt_payload import without_secrets  # the stick's keys are never shown

    reader = _reader(args, config)
    states = reader.states()
    reader.close()
    if args.json:
        print(json.dumps([{**s, "body": without_secrets(json.loads(s["body"]))}
                          for s in states], indent=2))
        return 0 if states else EX_NODATA
    if not states:
        print("no device information stored yet")
        return EX_NODATA
    for s in states:
        body = without_secrets(json.loads(s["body"]))
        head = f"{s['tag']}  (device {s['device_mac'] or '-'}"
        head += f", meter {s['meter_mac']})" if s["meter_mac"] else ")"
        print(f"{head}  received {_iso(s['received_at'])}")
        for key, value in body.items():
            if key in ("device_mac_id", "meter_mac_id", "raw") or value in (None, [], ""):
                continue
            print(f"    {key:<28} {_shown(key, value)}")
    return 0


#: Fields of the stick's fragments that the decoder made Unix seconds (``--json`` keeps them so).
_TIME_FIELDS = frozenset({"time_stamp", "utc_time", "local_time", "start_time", "end_time"})


def _shown(key: str, value: Any) -> Any:
    """A state field for people: times as ISO (LocalTime is the meter's wall clock, no zone)."""
    if key not in _TIME_FIELDS or isinstance(value, bool) or not isinstance(value, int | float):
        return value
    if key == "local_time":
        return iso_utc(value, "%Y-%m-%d %H:%M:%S") + " (meter local time)"
    return iso_utc(value)


def _exact(row: Any) -> str:
    """The value recomputed from the raw integers: the REAL column may round."""
    from decimal import Decimal

    from ravend.protocol.scaling import scale

    factor = row["scale"] if "scale" in row.keys() else 1  # noqa: SIM118 - a sqlite3.Row
    return str(scale(row["raw"], row["multiplier"], row["divisor"], Decimal(str(factor))))


def _format_row(row: Any) -> str:
    meter_time = row["meter_time"]
    when = _iso(meter_time) if meter_time is not None else _iso(row["key_time"]) + " (host)"
    return f"{when}  {row['meter_mac']}  {row['kind']:<22} {_exact(row)} {row['unit']}"


def cmd_tail(args: argparse.Namespace, config: Config) -> int:
    reader = _reader(args, config)
    last_id = reader.newest_id()
    start = max(0, last_id - args.lines)
    printed = 0
    after = start
    while True:
        for row in reader.readings(after_id=after):
            after = row["id"]
            print(_format_row(row), flush=True)
            if row["id"] > last_id:
                printed += 1
                if args.count is not None and printed >= args.count:
                    return 0
        time.sleep(args.interval)


def parse_when(text: str) -> float:
    t = text.strip()
    try:
        return float(t)
    except ValueError:
        pass
    try:
        when = dt.datetime.fromisoformat(t.replace("Z", "+00:00"))
    except ValueError:
        raise SystemExit(
            f"ravenctl: cannot read time {text!r} (ISO 8601 or Unix seconds)"
        ) from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=dt.UTC)
    return when.timestamp()


def cmd_export(args: argparse.Namespace, config: Config) -> int:
    since = parse_when(args.since) if args.since else None
    until = parse_when(args.until) if args.until else None
    if args.rollup:
        return store_commands.export_rollups(args, config, since, until)
    if args.store == "mysql":
        return store_commands.export_mysql_readings(args, config, since, until)
    reader = _reader(args, config)
    from ravend.db import READING_COLUMNS

    out = sys.stdout
    writer = None
    if args.format == "csv":
        writer = csv.writer(out)
        writer.writerow(READING_COLUMNS)
    kinds = set(args.kind or ())
    for row in reader.readings(since=since, until=until):
        if kinds and row["kind"] not in kinds:
            continue
        if writer is not None:
            writer.writerow([row[c] for c in READING_COLUMNS])
        else:
            out.write(json.dumps({c: row[c] for c in READING_COLUMNS}) + "\n")
    reader.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
