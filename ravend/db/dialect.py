"""What differs between SQLite and MySQL/MariaDB in the SQL ravend writes: one object per engine
(``ravend.db.sqlite.DIALECT``, ``ravend.db.mysql.DIALECT``), this is their common shape.

ravend writes each query once, with ``?`` placeholders (SQLite's own style); the dialect turns
them into the driver's (``%s`` for mysqlclient), builds the upsert and insert-if-absent forms,
runs ``executemany`` and chunked deletes the way the engine does them well, and tells a data
error (``ReadingRejected``: never retried) from any other (``SinkUnavailable``: retried).
Queries themselves stay with the code that uses them; none of ravend's has a literal ``?``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from ravend.errors import ReadingRejected, SinkUnavailable


class Dialect:
    """The SQL of one engine. Subclasses fill in what differs; see the module docstring."""

    name = "sql"
    #: The driver's placeholder for one parameter.
    placeholder = "?"

    def sql(self, text: str) -> str:
        """A query written with ``?`` placeholders, in the driver's style."""
        return text if self.placeholder == "?" else text.replace("?", self.placeholder)

    def marks(self, n: int) -> str:
        """``?, ?, ?`` (in the driver's style) for n values."""
        return ", ".join([self.placeholder] * n)

    def insert(self, table: str, columns: Sequence[str], verb: str = "INSERT") -> str:
        """``INSERT INTO table (columns) VALUES (?, ...)``, the head that ``upsert`` and
        ``insert_ignore`` add their engine's conflict clause to (``verb``: the engine's own
        form, such as SQLite's ``INSERT OR IGNORE``)."""
        return f"{verb} INTO {table} ({', '.join(columns)}) VALUES ({self.marks(len(columns))})"

    def upsert(self, table: str, columns: Sequence[str], key: Sequence[str]) -> str:
        """Insert a row, or update the row with the same ``key`` to these values."""
        raise NotImplementedError

    def insert_ignore(self, table: str, columns: Sequence[str]) -> str:
        """Insert a row unless its key is there already; the stored row is kept as it is."""
        raise NotImplementedError

    def executemany(self, conn: Any, sql: str, rows: Sequence[Sequence[Any]]) -> int:
        """Run ``sql`` (driver style) once per row; returns the rows it changed."""
        raise NotImplementedError

    def delete_chunk(self, conn: Any, table: str, where: str, params: Sequence[Any],
                     limit: int, *, order: str, index: str, by_id: bool = True) -> int:
        """Delete up to ``limit`` rows matching ``where`` (``?`` style), oldest first along
        ``index`` on ``order``. ``by_id``: the table has an ``id`` primary key."""
        raise NotImplementedError

    def rejects(self, exc: BaseException) -> bool:
        """Whether a driver error is about the data (never retried), not about the store."""
        raise NotImplementedError

    def failure(self, exc: BaseException, message: str) -> SinkUnavailable | ReadingRejected:
        """ravend's kind of a driver error: ``ReadingRejected`` for data, else unavailable."""
        return ReadingRejected(message) if self.rejects(exc) else SinkUnavailable(message)
