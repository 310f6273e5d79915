"""The two kinds of store behind the same few calls, for the tests that run once on each: a
SQLite file, or a new database on the shared MariaDB. Written through the real sinks, read
through ravend's Store or plain SQL."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from ravend.protocol.model import Reading
from ravend.sinks.mysql import MysqlSink
from ravend.sinks.sqlite import SqliteSink
from ravend.store import MysqlStore, SqliteStore, Store
from tests.helpers.mysql import mysql_config, query


class StoreEnv:
    """One store of ``kind`` ("sqlite" or "mysql"), its sink open for writing."""

    def __init__(self, kind: str, tmp_path: Path, mariadb_server: Any, name: str) -> None:
        self.kind = kind
        if kind == "sqlite":
            self.path = tmp_path / "ravend.db"
            self.sink: Any = SqliteSink(self.path)
        else:
            self.server = mariadb_server
            self.db = mariadb_server.new_database(name)
            self.cfg = mysql_config(mariadb_server, self.db)
            self.sink = MysqlSink(self.cfg)
        self.sink.open()

    def write(self, readings: list[Reading]) -> None:
        for i in range(0, len(readings), 2000):
            self.sink.write(readings[i:i + 2000], [])

    def store(self) -> Store:
        return SqliteStore(self.path) if self.kind == "sqlite" else MysqlStore(self.cfg)

    def rows(self, sql: str) -> list[tuple]:
        if self.kind == "sqlite":
            with sqlite3.connect(self.path) as conn:
                return conn.execute(sql).fetchall()
        return query(self.server, self.db, sql)

    def close(self) -> None:
        self.sink.close()


def each_store(request: pytest.FixtureRequest, tmp_path: Path,
               cls: type[StoreEnv]) -> Iterator[Any]:
    """The body of a fixture with ``params=["sqlite", "mysql"]``: a ``cls`` for this test's
    store (MariaDB started only for the mysql one), closed at the end."""
    server = request.getfixturevalue("mariadb_server") if request.param == "mysql" else None
    env = cls(request.param, tmp_path, server, request.node.name)
    yield env
    env.close()
