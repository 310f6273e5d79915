"""``ravenctl db migrate``, ``ravenctl purge`` and ``ravenctl export --rollup``: the SQL stores.

Thin: argument parsing and printing; the work is in ``ravend.db`` (connections, migrations),
``ravend.maintenance`` and ``ravend.store``.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ravend.config import Config
from ravend.export_rows import json_line, reading_values, rollup_columns, rollup_values

NAMES = frozenset({"db", "purge"})
EX_FAILED = 1

def add_parsers(sub: Any, config_args: Callable[[argparse.ArgumentParser], None]) -> None:
    db = sub.add_parser(
        "db", help="database schema: ravenctl db migrate",
        description="Manage the schema of the SQL stores.")
    actions = db.add_subparsers(dest="db_command", metavar="ACTION", required=True)
    m = actions.add_parser(
        "migrate", help="create or upgrade the tables of the enabled stores",
        description="Apply this version's numbered schema migrations (sql/<engine>/NNN_*.sql)"
        " to the enabled stores: the SQLite file ([sqlite]) and the MySQL/MariaDB database"
        " ([mysql]). ravend does the same whenever it opens a store; run this to upgrade a"
        " database ahead of time, for example a CalPlug python-raven database, whose"
        " instantaneous_demand and run_info tables are upgraded in place with their rows kept"
        " (error rows and wrapped negative demands are flagged, not deleted).")
    config_args(m)
    m.add_argument("--store", choices=["sqlite", "mysql"], action="append",
                   help="only this store (repeatable; default: every enabled one; naming a"
                   " store uses its settings even if it is not enabled)")

    p = sub.add_parser(
        "purge", help="roll up, then delete what [retention] says may go",
        description="Do now what ravend's maintenance thread does every purge_interval: bring"
        " the hourly and daily roll-ups up to date, then delete raw readings older than"
        " raw_days (only rolled-up ones), roll-ups older than rollup_days and, for SQLite,"
        " the oldest raw readings past max_db_mb; then give the space back to the file system"
        " (SQLite). In chunks, with pauses: safe while ravend runs. --dry-run only counts.")
    config_args(p)
    p.add_argument("--dry-run", action="store_true", help="say what would go; change nothing")
    p.add_argument("--store", choices=["sqlite", "mysql"], action="append",
                   help="only this store (repeatable; default: every enabled one)")


def add_export_args(e: argparse.ArgumentParser) -> None:
    e.add_argument("--rollup", choices=["hourly", "daily"],
                   help="export the hourly or daily roll-ups instead of raw readings (times:"
                   " period start; daily rows also give the local date)")
    e.add_argument("--store", choices=["sqlite", "mysql"], default="sqlite",
                   help="the store to read: raw readings or --rollup rows (default sqlite)")


def run(args: argparse.Namespace, config: Config) -> int:
    if args.command == "db":
        return cmd_migrate(args, config)
    return cmd_purge(args, config)


def _sqlite_path(args: argparse.Namespace, config: Config) -> Path:
    return Path(args.db) if getattr(args, "db", None) else config.sqlite_path


def _chosen(args: argparse.Namespace, config: Config) -> list[str]:
    if args.store:
        return list(dict.fromkeys(args.store))
    chosen = [name for name, on in (("sqlite", config.sqlite.enabled),
                                    ("mysql", config.mysql.enabled)) if on]
    return chosen


def _errors() -> tuple[type[BaseException], ...]:
    from ravend.db import store_errors

    return store_errors()  # ConfigError included: a password file that cannot be used


def cmd_migrate(args: argparse.Namespace, config: Config) -> int:
    status = 0
    for name in _chosen(args, config):
        history = None
        try:
            if name == "sqlite":
                from ravend.db.sqlite import connect, migrate, schema_version

                path = _sqlite_path(args, config)
                path.parent.mkdir(parents=True, exist_ok=True)
                conn = connect(path)
                try:
                    applied = migrate(conn)
                    version = schema_version(conn)
                finally:
                    conn.close()
                label = f"sqlite {path}"
            else:
                from ravend.calplug_history import upgrade_database
                from ravend.db import mysql

                cfg = config.mysql
                applied, history = upgrade_database(cfg)  # then the CalPlug history
                conn = mysql.connect(cfg)
                try:
                    version = mysql.schema_version(conn)
                finally:
                    conn.close()
                label = f"mysql {mysql.where(cfg)}"
        except _errors() as exc:
            print(f"ravenctl: {name}: {exc}", file=sys.stderr)
            status = EX_FAILED
            continue
        if history is not None and history.read:
            print(f"{label}: {history.line()}")
        if applied:
            print(f"{label}: applied {', '.join(map(str, applied))} (schema version {version})")
        else:
            print(f"{label}: up to date (schema version {version})")
    return status


def cmd_purge(args: argparse.Namespace, config: Config) -> int:
    from ravend import maintenance
    from ravend.db.sqlite import no_database
    from ravend.store import MysqlStore, SqliteStore, Store
    from ravend.tariff import tariff_of

    status = 0
    for name in _chosen(args, config):
        if name == "sqlite":
            path = _sqlite_path(args, config)

            def open_sqlite(path: Path = path) -> Store:
                if not path.exists():
                    raise no_database(path)
                return SqliteStore(path)

            opener: Callable[[], Store] = open_sqlite
        else:
            def open_mysql() -> Store:
                return MysqlStore(config.mysql)

            opener = open_mysql
        try:
            report = maintenance.run_once(opener, config.retention, dry_run=args.dry_run,
                                          tariff=tariff_of(config))
        except FileNotFoundError as exc:
            print(f"ravenctl: {exc}", file=sys.stderr)
            status = status or 2
            continue
        except _errors() as exc:
            print(f"ravenctl: {name}: {exc}", file=sys.stderr)
            status = EX_FAILED
            continue
        lines = report.lines(dry_run=args.dry_run)
        if config.retention.raw_days == 0:
            lines.append(f"{name}: raw readings are kept forever ([retention] raw_days = 0)")
        print("\n".join(lines) if lines else f"{name}: nothing to do")
    return status


def export_rollups(args: argparse.Namespace, config: Config, since: float | None,
                   until: float | None) -> int:
    table = f"rollup_{args.rollup}"
    columns = rollup_columns(args.rollup)
    where = []
    params: list[Any] = []
    if since is not None:
        where.append("period_start >= ?")
        params.append(int(since))
    if until is not None:
        where.append("period_start < ?")
        params.append(int(until))
    sql = (f"SELECT {', '.join(columns)} FROM {table}"
           + (f" WHERE {' AND '.join(where)}" if where else "")
           + " ORDER BY period_start, meter_mac")
    try:
        if args.store == "mysql":
            from ravend.db import mysql

            conn = mysql.connect(config.mysql)
            sql = mysql.DIALECT.sql(sql)
        else:
            from ravend.db.sqlite import connect_existing

            conn = connect_existing(_sqlite_path(args, config), readonly=True)
        cur = conn.cursor()
        cur.execute(sql, params)
    except FileNotFoundError:
        raise
    except _errors() as exc:
        print(f"ravenctl: {args.store}: {exc} (is the schema migrated? ravenctl db migrate)",
              file=sys.stderr)
        return EX_FAILED
    try:
        out = sys.stdout
        writer = csv.writer(out) if args.format == "csv" else None
        if writer is not None:
            writer.writerow(columns)
        for row in cur:
            values = rollup_values(row, args.rollup == "daily")
            if writer is not None:
                writer.writerow(["" if v is None else v for v in values])
            else:
                out.write(json_line(columns, values) + "\n")
    finally:
        with contextlib.suppress(Exception):
            conn.close()
    return 0


def export_mysql_readings(args: argparse.Namespace, config: Config, since: float | None,
                          until: float | None) -> int:
    """``export --store mysql`` of raw readings: the same columns, in the same order and
    types as from SQLite (DECIMAL value as the float SQLite holds)."""
    from ravend.db import READING_COLUMNS, mysql

    where, params = ["id > 0"], []
    if since is not None:
        where.append("key_time >= ?")
        params.append(since)
    if until is not None:
        where.append("key_time < ?")
        params.append(until)
    if args.kind:
        where.append(f"kind IN ({', '.join(['?'] * len(args.kind))})")
        params.extend(args.kind)
    sql = mysql.DIALECT.sql(f"SELECT {', '.join(READING_COLUMNS)} FROM readings WHERE"
                            f" {' AND '.join(where)} ORDER BY id")
    try:
        conn = mysql.connect(config.mysql)
        cur = conn.cursor()
        cur.execute(sql, params)
    except _errors() as exc:
        print(f"ravenctl: mysql: {exc} (is the schema migrated? ravenctl db migrate)",
              file=sys.stderr)
        return EX_FAILED
    try:
        writer = csv.writer(sys.stdout) if args.format == "csv" else None
        if writer is not None:
            writer.writerow(READING_COLUMNS)
        for row in cur:
            values = reading_values(row)
            if writer is not None:
                writer.writerow(values)
            else:
                sys.stdout.write(json.dumps(dict(zip(READING_COLUMNS, values, strict=True)))
                                 + "\n")
    finally:
        with contextlib.suppress(Exception):
            conn.close()
    return 0

