"""The MySQL / MariaDB store; connections, migrations and the SQL dialect are
``ravend.db.mysql``'s.

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
data that cannot fit is ``ReadingRejected``.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import logging
import time
import uuid
from collections.abc import Sequence
from decimal import ROUND_HALF_EVEN, Context, Decimal, InvalidOperation
from typing import Any

from ravend import __version__
from ravend.calplug_history import upgrade_database
from ravend.config import ConfigError, MysqlConfig
from ravend.db import READING_COLUMNS
from ravend.db.mysql import DIALECT, connect, driver, explain, where
from ravend.protocol.model import Kind, Reading
from ravend.serialize import dumps
from ravend.sinks.base import Sink, SinkUnavailable, StateItem
from ravend.sinks.conflicts import Key, KeyConflicts, Value, value_of

log = logging.getLogger("ravend.sinks")

#: The scaled value columns are DECIMAL(30,9): 21 digits before the point, 9 after.
_Q = Decimal("1e-9")
_LIMIT = Decimal("1e21")
_CTX = Context(prec=60)

#: TIMESTAMP's range (the CalPlug `time` column); a key time outside it stores NULL there.
_TS_MIN, _TS_MAX = 1, 2_147_483_647

_INSERT_READING = DIALECT.insert_ignore("readings", READING_COLUMNS)
_INSERT_DEMAND = DIALECT.insert_ignore(
    "instantaneous_demand", ("time", "demand", "multiplier", "divisor", "run", "hash",
                             "meter_mac", "key_time", "meter_time", "received_at", "kw"))
_INSERT_RUN = DIALECT.sql(
    "INSERT INTO run_info (name, hash, meter_id, time, software)"
    " SELECT ?, ?, ?, ?, ? FROM DUAL"
    " WHERE NOT EXISTS (SELECT 1 FROM run_info WHERE hash = ? AND meter_id = ?)"
)
_UPSERT_STATE = DIALECT.upsert(
    "device_state", ("device_mac", "meter_mac", "tag", "received_at", "body"),
    ("device_mac", "meter_mac", "tag"))


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
                + " OR ".join([DIALECT.sql("(meter_mac = ? AND kind = ? AND key_time = ?)")]
                            * len(unique)),
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
                upgrade_database(self.cfg)  # migrations, then the CalPlug history
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
                inserted = DIALECT.executemany(conn, _INSERT_READING,
                                               [reading_row(r) for r in readings])
                if inserted < len(readings):
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
        failure = DIALECT.failure(exc, explain(exc, self.cfg))
        if isinstance(failure, SinkUnavailable):
            self._drop()
            return failure
        try:
            self._conn.rollback()
        except self._db.Error:
            self._drop()
        return failure

    def close(self) -> None:
        self._drop()
