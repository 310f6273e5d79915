"""The per-engine layer under every store: SQLite (``ravend.db.sqlite``) and MySQL/MariaDB
(``ravend.db.mysql``).

Each engine module opens connections the way ravend needs them (pragmas and WAL; session
settings, TLS and the password file), read-only or for writing, migrates the schema
(``ravend.db.migrations``) and holds the engine's ``DIALECT`` (``ravend.db.dialect``):
placeholders, upsert and insert-if-absent, ``executemany``, chunked deletes and the sorting of
driver errors into ravend's "unavailable" and "rejected" kinds (``ravend.errors``).

The sinks, maintenance, the repeater and every ``ravenctl`` command open stores through here.
The queries stay with the code that uses them.
"""

from __future__ import annotations

import sqlite3

from ravend.config import ConfigError
from ravend.errors import SinkUnavailable

#: The columns of ``readings`` that exports give, in their order (SQLite and MySQL alike).
READING_COLUMNS = (
    "meter_mac", "kind", "key_time", "meter_time", "received_at", "device_mac", "raw",
    "multiplier", "divisor", "value", "unit", "scale",
)


def store_errors() -> tuple[type[BaseException], ...]:
    """Exceptions that mean 'this store, this time' rather than a bug."""
    errors: list[type[BaseException]] = [sqlite3.Error, SinkUnavailable, ConfigError, OSError]
    try:
        import MySQLdb  # optional (python3-mysqldb): only when installed

        errors.append(MySQLdb.Error)
    except ImportError:
        pass
    return tuple(errors)
