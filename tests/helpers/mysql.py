"""Helpers for the tests against the private MariaDB (see servers.py): configs and queries."""

from __future__ import annotations

import dataclasses
from typing import Any

import MySQLdb

from ravend.config import MysqlConfig


def mysql_config(server: Any, database: str, **keys: Any) -> MysqlConfig:
    """[mysql] settings for DATABASE on SERVER over TCP, with short timeouts for tests."""
    base = MysqlConfig(enabled=True, host=server.host, port=server.port, user=server.user,
                       password=server.password, database=database, connect_timeout=3,
                       query_timeout=10)
    return dataclasses.replace(base, **keys)


def conf_keys(server: Any, database: str, **extra: str) -> dict[str, str]:
    """The same as ravend.conf keys, for write_config(..., mysql=...)."""
    return {"enabled": "yes", "host": server.host, "port": str(server.port),
            "user": server.user, "password": server.password, "database": database,
            "connect_timeout": "3", "query_timeout": "10", **extra}


def query(server: Any, database: str, sql: str, params: tuple = ()) -> list[tuple]:
    conn = MySQLdb.connect(**server.connect_kwargs(database))
    try:
        cur = conn.cursor()
        cur.execute("SET time_zone = '+00:00'")
        cur.execute(sql, params)
        rows = list(cur.fetchall())
        conn.commit()
        return rows
    finally:
        conn.close()


def execute(server: Any, database: str, *statements: str, sql_mode: str | None = None) -> None:
    conn = MySQLdb.connect(**server.connect_kwargs(database))
    try:
        cur = conn.cursor()
        cur.execute("SET time_zone = '+00:00'")
        if sql_mode is not None:
            cur.execute("SET SESSION sql_mode = %s", (sql_mode,))
        for statement in statements:
            cur.execute(statement)
        conn.commit()
    finally:
        conn.close()
