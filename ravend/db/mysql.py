"""MySQL / MariaDB, through mysqlclient (Debian: python3-mysqldb), imported only when used.

Sessions run in UTC (``time_zone = '+00:00'``) with ``sql_mode = TRADITIONAL``, whatever the
server's defaults; migrations run in a lenient mode so that old rows with zero dates upgrade.
The password file is read at every connection, so fixing it is enough for the next retry to
succeed. Anything the server says on connecting (down, refused, wrong credentials, no TLS) is
``SinkUnavailable`` with one line saying what to do; a missing driver or an unusable password
file is a ``ConfigError``.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Callable, Sequence
from typing import Any

from ravend.config import ConfigError, MysqlConfig
from ravend.config_secrets import read_secret
from ravend.db.dialect import Dialect
from ravend.db.migrations import migrations, split_statements
from ravend.errors import SinkUnavailable

PACKAGE = "python3-mysqldb"

#: Errors about the data of a batch, whatever class the mysqlclient version maps them to:
#: NULL into NOT NULL, out of range, truncated, wrong value, too long, out-of-range arithmetic,
#: CHECK constraints (MariaDB, MySQL).
DATA_ERRORS = frozenset({1048, 1264, 1265, 1292, 1366, 1406, 1690, 3819, 4025})
#: Wrong user or password (1045), no right on the database (1044), socket auth refused (1698).
AUTH_ERRORS = frozenset({1045, 1044, 1698})
UNKNOWN_DATABASE = 1049


def driver() -> Any:
    """The MySQLdb module, or the ConfigError that tells which Debian package is missing."""
    try:
        import MySQLdb
    except ImportError:
        raise ConfigError(
            f"[mysql] is enabled but mysqlclient is not installed (apt install {PACKAGE})"
        ) from None
    return MySQLdb


def where(cfg: MysqlConfig) -> str:
    """The server as a log line names it."""
    server = cfg.unix_socket if cfg.unix_socket else f"{cfg.host}:{cfg.port}"
    return f"mysql://{cfg.user}@{server}/{cfg.database}"


def error_code(exc: BaseException) -> int | None:
    args = getattr(exc, "args", ())
    return args[0] if args and isinstance(args[0], int) else None


def explain(exc: BaseException, cfg: MysqlConfig) -> str:
    """One line saying what went wrong and, where there is one, what to do."""
    code = error_code(exc)
    args: tuple[Any, ...] = getattr(exc, "args", ())
    message = str(args[1]) if len(args) > 1 else str(exc)
    if code in AUTH_ERRORS:
        secret = f"password_file {cfg.password_file}" if cfg.password_file else "password"
        return (f"{where(cfg)}: the credentials are wrong: {message} (error {code});"
                f" fix [mysql] user/{secret} or the account's grants; readings are spooled"
                f" until then")
    if code == UNKNOWN_DATABASE:
        return (f"{where(cfg)}: database {cfg.database!r} does not exist (error {code}):"
                f" CREATE DATABASE {cfg.database} and grant {cfg.user!r} rights on it")
    return f"{where(cfg)}: {message}" + (f" (error {code})" if code is not None else "")


def _option_file(cfg: MysqlConfig) -> str:
    """A client option file with the TLS switches mysqlclient 1.4 cannot pass as arguments."""
    import tempfile  # here: only TLS set-ups need it, and it would load shutil into every ravend

    fd, path = tempfile.mkstemp(prefix="ravend-mysql-", suffix=".cnf")
    with os.fdopen(fd, "w") as handle:
        handle.write("[ravend]\n")
        handle.write(f"ssl-verify-server-cert={1 if cfg.ssl_verify_server_cert else 0}\n")
    return path


def tls_wanted(cfg: MysqlConfig) -> bool:
    return bool(cfg.ssl_ca or cfg.ssl_cert or cfg.ssl_key)


def connect(cfg: MysqlConfig, *, migration: bool = False) -> Any:
    """A new connection, or SinkUnavailable/ConfigError saying why there is none.

    ConfigError: the driver is missing or the password file cannot be used; SinkUnavailable:
    anything the server said (down, refused, wrong credentials, no TLS).
    """
    db = driver()
    if cfg.password_file:
        password = read_secret(cfg.password_file, "[mysql] password_file")
    else:
        password = cfg.password
    kwargs: dict[str, Any] = {
        "user": cfg.user,
        "password": password,
        "database": cfg.database,
        "connect_timeout": max(1, round(cfg.connect_timeout)),
        "read_timeout": max(1, round(cfg.query_timeout)),
        "write_timeout": max(1, round(cfg.query_timeout)),
        "charset": "utf8mb4",
        "autocommit": False,
        # Migrations: old rows may hold zero dates that strict mode refuses to carry over.
        "sql_mode": "NO_ENGINE_SUBSTITUTION" if migration else "TRADITIONAL",
        "init_command": "SET time_zone = '+00:00'",
    }
    if cfg.unix_socket:
        kwargs.update(host="localhost", unix_socket=cfg.unix_socket)
    else:
        kwargs.update(host=cfg.host, port=cfg.port)
    option_file = None
    if tls_wanted(cfg):
        kwargs["ssl"] = {k: v for k, v in (("ca", cfg.ssl_ca), ("cert", cfg.ssl_cert),
                                           ("key", cfg.ssl_key)) if v}
        option_file = _option_file(cfg)
        kwargs.update(read_default_file=option_file, read_default_group="ravend")
    try:
        conn = db.connect(**kwargs)
    except db.Error as exc:
        raise SinkUnavailable(explain(exc, cfg)) from exc
    finally:
        if option_file:
            with contextlib.suppress(OSError):
                os.unlink(option_file)
    if tls_wanted(cfg):
        try:
            cur = conn.cursor()
            cur.execute("SHOW SESSION STATUS LIKE 'Ssl_cipher'")
            row = cur.fetchone()
        except db.Error as exc:
            conn.close()
            raise SinkUnavailable(explain(exc, cfg)) from exc
        if not row or not row[1]:
            conn.close()
            raise SinkUnavailable(f"{where(cfg)}: TLS is configured ([mysql] ssl_*) but the"
                                  " server does not offer it; not sending data in clear")
    return conn


# --- migrations -------------------------------------------------------------------------------

#: Only one process migrates a database at a time (the service, ravenctl db migrate).
_LOCK = "ravend.migrate"
_LOCK_WAIT = 60


def schema_version(conn: Any) -> int:
    cur = conn.cursor()
    cur.execute("SELECT COUNT(*) FROM information_schema.tables"
                " WHERE table_schema = DATABASE() AND table_name = 'schema_version'")
    if not cur.fetchone()[0]:
        return 0
    cur.execute("SELECT COALESCE(MAX(version), 0) FROM schema_version"
                " WHERE applied_at IS NOT NULL")
    return int(cur.fetchone()[0])


def migrate(conn: Any, after: Callable[[Any], object] | None = None) -> list[int]:
    """Apply pending migrations in order, then ``after(conn)`` under the same lock (the copy
    of a CalPlug database's history, ``ravend.calplug_history``); returns the versions applied.

    MySQL commits each DDL statement by itself, so progress is kept per statement in
    ``schema_version.step``: a migration that failed half-way (disk full, connection lost)
    resumes at the statement that failed. Each of ravend's ALTERs is a single statement, which
    InnoDB applies whole or not at all.
    """
    cur = conn.cursor()
    cur.execute("SELECT GET_LOCK(%s, %s)", (_LOCK, _LOCK_WAIT))
    if cur.fetchone()[0] != 1:
        raise RuntimeError(f"another process has been migrating this database for"
                           f" {_LOCK_WAIT}s (lock {_LOCK})")
    try:
        cur.execute(
            "CREATE TABLE IF NOT EXISTS schema_version (version INT NOT NULL PRIMARY KEY,"
            " name VARCHAR(100) NOT NULL, step INT NOT NULL DEFAULT 0, applied_at DOUBLE NULL)"
            " ENGINE=InnoDB DEFAULT CHARSET=utf8mb4"
        )
        conn.commit()
        cur.execute("SELECT version, step, applied_at FROM schema_version")
        done = {v: (step, applied) for v, step, applied in cur.fetchall()}
        applied = []
        for m in migrations("mysql"):
            step, when = done.get(m.version, (0, None))
            if when is not None:
                continue
            if m.version not in done:
                cur.execute("INSERT INTO schema_version (version, name, step) VALUES (%s, %s, 0)",
                            (m.version, m.name))
                conn.commit()
            for i, statement in enumerate(split_statements(m.sql)):
                if i < step:
                    continue
                cur.execute(statement)
                cur.execute("UPDATE schema_version SET step = %s WHERE version = %s",
                            (i + 1, m.version))
                conn.commit()
            cur.execute("UPDATE schema_version SET applied_at = %s WHERE version = %s",
                        (time.time(), m.version))
            conn.commit()
            applied.append(m.version)
        if after is not None:
            after(conn)
        return applied
    except BaseException:
        with contextlib.suppress(Exception):
            conn.rollback()
        raise
    finally:
        with contextlib.suppress(Exception):
            cur.execute("SELECT RELEASE_LOCK(%s)", (_LOCK,))
            cur.fetchall()


def migrate_database(cfg: MysqlConfig,
                     after: Callable[[Any], object] | None = None) -> list[int]:
    """Connect, migrate (and ``after``, as ``migrate``), disconnect; errors as in ``connect``."""
    db = driver()
    conn = connect(cfg, migration=True)
    try:
        return migrate(conn, after)
    except db.Error as exc:
        raise SinkUnavailable(f"migration failed: {explain(exc, cfg)}") from exc
    finally:
        with contextlib.suppress(Exception):
            conn.close()


def connect_reader(cfg: MysqlConfig) -> Any:
    """A connection for reading: autocommit, so that each query sees the rows committed since
    the last one (no snapshot stays open). Errors as in ``connect``."""
    conn = connect(cfg)
    conn.autocommit(True)
    return conn


def connect_readonly(cfg: MysqlConfig) -> Any:
    """``connect_reader`` in a read-only session: the server refuses any write through it
    (ravend-web, which must never change the store)."""
    conn = connect_reader(cfg)
    conn.cursor().execute("SET SESSION TRANSACTION READ ONLY")
    return conn


# --- the dialect ------------------------------------------------------------------------------


class MysqlDialect(Dialect):
    name = "mysql"
    placeholder = "%s"

    def upsert(self, table: str, columns: Sequence[str], key: Sequence[str]) -> str:
        sets = ", ".join(f"{c} = VALUES({c})" for c in columns if c not in key)
        return self.insert(table, columns) + f" ON DUPLICATE KEY UPDATE {sets}"

    def insert_ignore(self, table: str, columns: Sequence[str]) -> str:
        # Not INSERT IGNORE: that would also turn a value that does not fit (strict mode's
        # refusal) into a silently clamped one. Every table written this way has an id.
        return self.insert(table, columns) + " ON DUPLICATE KEY UPDATE id = id"

    def executemany(self, conn: Any, sql: str, rows: Sequence[Sequence[Any]]) -> int:
        cur = conn.cursor()
        cur.executemany(sql, rows)
        # Affected rows: 1 per row inserted, 0 per key already there.
        return int(cur.rowcount)

    def delete_chunk(self, conn: Any, table: str, where: str, params: Sequence[Any],
                     limit: int, *, order: str, index: str, by_id: bool = True) -> int:
        cur = conn.cursor()
        if not by_id:  # small tables keyed otherwise (roll-ups, by period): delete directly
            cur.execute(self.sql(f"DELETE FROM {table} WHERE {where} ORDER BY {order} LIMIT ?"),
                        (*params, limit))
            return int(cur.rowcount)
        # Pick the ids along the time index with a plain (non-locking) read, then delete them
        # by primary key: the delete locks exactly the rows it removes, whatever plan the
        # optimizer would have chosen for a DELETE ... ORDER BY ... LIMIT.
        cur.execute(self.sql(f"SELECT id FROM {table} FORCE INDEX ({index}) WHERE {where}"
                             f" ORDER BY {order} LIMIT ?"), (*params, limit))
        ids = [r[0] for r in cur.fetchall()]
        if not ids:
            return 0
        cur = conn.cursor()
        cur.execute(f"DELETE FROM {table} WHERE id IN ({self.marks(len(ids))})", tuple(ids))
        return int(cur.rowcount)

    def rejects(self, exc: BaseException) -> bool:
        db = driver()
        return isinstance(exc, db.DataError | db.IntegrityError) or (
            error_code(exc) in DATA_ERRORS)


DIALECT = MysqlDialect()
