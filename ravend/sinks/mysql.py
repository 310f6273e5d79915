"""The MySQL / MariaDB store, through mysqlclient (Debian: python3-mysqldb), imported lazily.

Writes are batched ``executemany`` inserts that leave an existing row alone
(``ON DUPLICATE KEY UPDATE id = id``: unlike ``INSERT IGNORE`` it still refuses bad data in
strict mode, so a value that does not fit is rejected instead of silently clamped). A batch is
one transaction over ``readings``, the CalPlug ``instantaneous_demand`` mirror, ``run_info`` and
``device_state``: stored whole or not at all, so a retry can neither lose nor duplicate. The
first value of a key is the one kept (``ravend.sinks.conflicts``): when the insert changed fewer
rows than the batch holds (a duplicate changes none), the stored rows of the batch's keys are
looked up in one indexed query, and a different value is counted and logged.

Errors are sorted into what the worker does next: a lost or refused connection, a timeout, a
deadlock, wrong credentials, a full disk (anything about the server rather than the data) is
``SinkUnavailable`` (spool, retry; the connection is dropped and made again on the next write),
data that cannot fit is ``ReadingRejected``. The password file is read at every connection, so
fixing it is enough for the next retry to succeed.

Sessions run in UTC (``time_zone = '+00:00'``) with ``sql_mode = TRADITIONAL``, whatever the
server's defaults; migrations run in a lenient mode so that old rows with zero dates upgrade.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import logging
import os
import tempfile
import time
import uuid
from collections.abc import Sequence
from decimal import ROUND_HALF_EVEN, Context, Decimal, InvalidOperation
from typing import Any

from ravend import __version__
from ravend.config import ConfigError, MysqlConfig, read_secret
from ravend.migrations import migrations, split_statements
from ravend.protocol.model import Kind, Reading
from ravend.serialize import dumps
from ravend.sinks.base import ReadingRejected, Sink, SinkUnavailable, StateItem
from ravend.sinks.conflicts import Key, KeyConflicts, Value, value_of

log = logging.getLogger("ravend.sinks")

PACKAGE = "python3-mysqldb"

#: Errors about the data of a batch, whatever class the mysqlclient version maps them to:
#: NULL into NOT NULL, out of range, truncated, wrong value, too long, out-of-range arithmetic,
#: CHECK constraints (MariaDB, MySQL).
DATA_ERRORS = frozenset({1048, 1264, 1265, 1292, 1366, 1406, 1690, 3819, 4025})
#: Wrong user or password (1045), no right on the database (1044), socket auth refused (1698).
AUTH_ERRORS = frozenset({1045, 1044, 1698})
UNKNOWN_DATABASE = 1049

#: The scaled value columns are DECIMAL(30,9): 21 digits before the point, 9 after.
_Q = Decimal("1e-9")
_LIMIT = Decimal("1e21")
_CTX = Context(prec=60)

#: TIMESTAMP's range (the CalPlug `time` column); a key time outside it stores NULL there.
_TS_MIN, _TS_MAX = 1, 2_147_483_647

_INSERT_READING = (
    "INSERT INTO readings (meter_mac, kind, key_time, meter_time, received_at, device_mac, raw,"
    " multiplier, divisor, value, unit, scale)"
    " VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)"
    " ON DUPLICATE KEY UPDATE id = id"
)
_INSERT_DEMAND = (
    "INSERT INTO instantaneous_demand (time, demand, multiplier, divisor, run, hash, meter_mac,"
    " key_time, meter_time, received_at, kw) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)"
    " ON DUPLICATE KEY UPDATE id = id"
)
_INSERT_RUN = (
    "INSERT INTO run_info (name, hash, meter_id, time, software)"
    " SELECT %s, %s, %s, %s, %s FROM DUAL"
    " WHERE NOT EXISTS (SELECT 1 FROM run_info WHERE hash = %s AND meter_id = %s)"
)
_UPSERT_STATE = (
    "INSERT INTO device_state (device_mac, meter_mac, tag, received_at, body)"
    " VALUES (%s, %s, %s, %s, %s)"
    " ON DUPLICATE KEY UPDATE received_at = VALUES(received_at), body = VALUES(body)"
)


def driver() -> Any:
    """The MySQLdb module, or the ConfigError that tells which Debian package is missing."""
    try:
        import MySQLdb
    except ImportError:
        raise ConfigError(
            f"[mysql] is enabled but mysqlclient is not installed (apt install {PACKAGE})"
        ) from None
    return MySQLdb


def decimal_column(value: Decimal) -> Decimal | None:
    """A value for a DECIMAL(30,9) column: rounded half-even to 9 places; None if too large."""
    try:
        q = value.quantize(_Q, rounding=ROUND_HALF_EVEN, context=_CTX)
    except InvalidOperation:
        return None
    return q if abs(q) < _LIMIT else None


def _timestamp(unix: int) -> dt.datetime | None:
    if not _TS_MIN <= unix <= _TS_MAX:
        return None
    return dt.datetime.fromtimestamp(unix, dt.UTC).replace(tzinfo=None)


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
    args = getattr(exc, "args", ())
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


def migrate(conn: Any) -> list[int]:
    """Apply pending migrations in order; returns the versions applied.

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
        return applied
    except BaseException:
        with contextlib.suppress(Exception):
            conn.rollback()
        raise
    finally:
        with contextlib.suppress(Exception):
            cur.execute("SELECT RELEASE_LOCK(%s)", (_LOCK,))
            cur.fetchall()


def migrate_database(cfg: MysqlConfig) -> list[int]:
    """Connect, migrate, disconnect (``ravenctl db migrate``); errors as in ``connect``."""
    db = driver()
    conn = connect(cfg, migration=True)
    try:
        return migrate(conn)
    except db.Error as exc:
        raise SinkUnavailable(f"migration failed: {explain(exc, cfg)}") from exc
    finally:
        with contextlib.suppress(Exception):
            conn.close()


# --- the sink ---------------------------------------------------------------------------------


def reading_row(r: Reading) -> tuple[Any, ...]:
    return (r.meter_mac, r.kind.value, r.key_time, r.meter_time, r.received_at, r.device_mac,
            r.raw, r.multiplier, r.divisor, decimal_column(r.value), r.unit, r.scale)


def stored_values(cur: Any, keys: Sequence[Key]) -> dict[Key, Value]:
    """The stored (raw, multiplier, divisor) of those keys that are in ``readings``: one query
    whose OR of key equalities the optimizer turns into look-ups of the unique index."""
    unique = list(dict.fromkeys(keys))
    if not unique:
        return {}
    cur.execute("SELECT meter_mac, kind, key_time, raw, multiplier, divisor FROM readings WHERE "
                + " OR ".join(["(meter_mac = %s AND kind = %s AND key_time = %s)"] * len(unique)),
                [p for key in unique for p in key])
    return {(meter, kind, int(when)): (int(raw), int(mult), int(div))
            for meter, kind, when, raw, mult, div in cur.fetchall()}


class MysqlSink(Sink):
    name = "mysql"

    def __init__(self, cfg: MysqlConfig, *, start_id: str = "") -> None:
        self.cfg = cfg
        self.start_id = start_id or uuid.uuid4().hex
        self._db = driver()
        self._conn: Any = None
        self._migrated = False
        self._runs_noted: set[str] = set()  # meters with this start's run_info row committed
        self.conflicts = KeyConflicts(self.name, log)

    def __repr__(self) -> str:
        return f"<MysqlSink {where(self.cfg)} connected={self._conn is not None}>"

    def open(self) -> None:
        self._connect()

    def _connect(self) -> Any:
        if self._conn is not None:
            return self._conn
        try:
            if not self._migrated:
                migrate_database(self.cfg)
                self._migrated = True
            self._conn = connect(self.cfg)
        except ConfigError as exc:  # the password file became unusable after the start
            raise SinkUnavailable(str(exc)) from exc
        except RuntimeError as exc:  # the migration lock
            raise SinkUnavailable(f"{where(self.cfg)}: {exc}") from exc
        return self._conn

    def _drop(self) -> None:
        if self._conn is not None:
            with contextlib.suppress(Exception):
                self._conn.close()
            self._conn = None

    def write(self, readings: Sequence[Reading], states: Sequence[StateItem]) -> None:
        conn = self._connect()
        new_meters: list[str] = []
        conflicts: list[tuple[Key, Value, Value]] = []
        try:
            cur = conn.cursor()
            if readings:
                cur.executemany(_INSERT_READING, [reading_row(r) for r in readings])
                # Affected rows: 1 per row inserted, 0 per key already there.
                if cur.rowcount < len(readings):
                    stored = stored_values(cur, [r.key for r in readings])
                    conflicts = [(r.key, stored[r.key], value_of(r)) for r in readings
                                 if r.key in stored and stored[r.key] != value_of(r)]
            if self.cfg.calplug_tables and readings:
                demand = [r for r in readings if r.kind is Kind.DEMAND]
                if demand:
                    cur.executemany(_INSERT_DEMAND, [self._demand_row(r) for r in demand])
                now = _timestamp(int(time.time()))
                for meter in dict.fromkeys(r.meter_mac for r in readings):
                    if meter not in self._runs_noted:
                        cur.execute(_INSERT_RUN, (self.cfg.run_name, self.start_id, meter, now,
                                                  f"ravend {__version__}", self.start_id, meter))
                        new_meters.append(meter)
            if states:
                cur.executemany(_UPSERT_STATE, [
                    (s.device_mac, s.meter_mac, s.tag, s.received_at, dumps(s.body))
                    for s in states
                ])
            conn.commit()
        except self._db.Error as exc:
            raise self._failure(exc) from exc
        self._runs_noted.update(new_meters)
        for key, kept, refused in conflicts:  # counted once committed: a retry counts once
            self.conflicts.refuse(key, kept, refused)
        self.conflicts.batch_done(len(conflicts))

    def _demand_row(self, r: Reading) -> tuple[Any, ...]:
        return (_timestamp(r.key_time), r.raw, r.multiplier, r.divisor, self.cfg.run_name,
                self.start_id, r.meter_mac, r.key_time, r.meter_time, r.received_at,
                decimal_column(r.value))

    def _failure(self, exc: BaseException) -> Exception:
        """Roll back; keep the connection for data errors, drop it for everything else."""
        code = error_code(exc)
        data = isinstance(exc, self._db.DataError | self._db.IntegrityError) or (
            code in DATA_ERRORS)
        if data:
            try:
                self._conn.rollback()
            except self._db.Error:
                self._drop()
            return ReadingRejected(explain(exc, self.cfg))
        self._drop()
        return SinkUnavailable(explain(exc, self.cfg))

    def close(self) -> None:
        self._drop()
