"""The store as ravend-web sees it: read-only, one connection per worker thread.

SQLite is opened with ``mode=ro`` (``ravend.db.sqlite.connect_existing``): it never creates,
migrates or locks the file for writing, so ravend writes and purges meanwhile. MySQL/MariaDB is
a read-only session (``ravend.db.mysql.connect_readonly``). The queries are ``ravend.store.Store``'s
engine-neutral ones, with ``?`` placeholders.
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING

from ravend.db.sqlite import file_identity
from ravend.store import SqliteStore, Store

if TYPE_CHECKING:
    from ravend.config import Config


def open_readonly(config: Config) -> Store:
    """A read-only Store of the configured engine; FileNotFoundError while there is no
    database yet, or the engine's error."""
    if config.web.store == "mysql":
        from ravend.db import mysql

        return Store(mysql.connect_readonly(config.mysql), mysql.DIALECT)
    return SqliteStore(config.sqlite_path, readonly=True, busy_timeout=5.0)


class Stores:
    """One read-only Store per thread, opened on first use, dropped after an error (the next
    request opens a fresh one: a restarted MariaDB) and reopened when the SQLite file was
    replaced (a restore puts a new file in place with one rename)."""

    def __init__(self, config: Config) -> None:
        self.config = config
        self._local = threading.local()

    def get(self) -> Store:
        store = getattr(self._local, "store", None)
        if store is not None and self._identity() != self._local.identity:
            self.drop()  # replaced (ravenctl restore): the open connection reads the old file
            store = None
        if store is None:
            # Taken before the open: a file replaced in between is noticed on the next call.
            identity = self._identity()
            store = open_readonly(self.config)
            self._local.store = store
            self._local.identity = identity
        return store

    def _identity(self) -> tuple[int, int] | None:
        """The SQLite file the path names now (one stat per request); None for MySQL."""
        if self.config.web.store == "mysql":
            return None
        return file_identity(self.config.sqlite_path)

    def drop(self) -> None:
        store = getattr(self._local, "store", None)
        self._local.store = None
        if store is not None:
            store.close()
