"""Fixtures that start private real servers (see tests/helpers/servers.py) for the tests.

Shared for the whole run (session scope; a test that stops or kills one gets it started again
after it):
    mariadb_server   MariaDBServer: host, port, unix_socket, user, password, database,
                     root_user, root_password; connect_kwargs(), new_database(name), sql(),
                     stop(), start(), kill()
    mongo_server     SecantusServer: host, port, uri, storage_path; stop(), start(), kill()

One per test:
    mosquitto_server MosquittoServer, anonymous, one plain listener: host, port; stop(),
                     start(), kill()

Factories for servers with options of their own, all killed when the test ends:
    make_mariadb(**kw)    -> MariaDBServer   (kw: extra_args)
    make_mosquitto(**kw)  -> MosquittoServer (kw: users, allow_anonymous, tls, extra_config;
                          start() waits for every listener, extra_config's too)
    make_mongo(**kw)      -> SecantusServer  (kw: sync_on_commit, extra_args)

Not a server: small_disk, a 16 MB tmpfs as a test's state directory (a disk that fills up;
needs root).

A server that cannot start fails the test loudly with the reason and the fix; nothing skips.
"""

from __future__ import annotations

import contextlib
import os
import sys
from pathlib import Path

import pytest

from tests.helpers import servers
from tests.helpers.disk import small_tmpfs


@contextlib.contextmanager
def _loud_failure():
    """Turn a missing program or a server that did not start into pytest.fail (never a skip)."""
    try:
        yield
    except servers.MissingDependency as exc:
        raise pytest.fail.Exception(f"cannot start a test server: {exc}", pytrace=False) from None
    except servers.ServerError as exc:
        raise pytest.fail.Exception(f"test server failed to start: {exc}", pytrace=False) from None


# ---------------------------------------------------------------------------------------------
# shared servers


def _shared(cls, tmp_path_factory, name):
    """One server for the whole run, in its own directory; killed when the run ends."""
    with _loud_failure():
        server = cls(tmp_path_factory.mktemp(name)).start()
    yield server
    server.kill()


@pytest.fixture(scope="session")
def mariadb_server(tmp_path_factory):
    yield from _shared(servers.MariaDBServer, tmp_path_factory, "mariadb")


@pytest.fixture(scope="session")
def mongo_server(tmp_path_factory):
    yield from _shared(servers.SecantusServer, tmp_path_factory, "secantus")


_SHARED = ("mariadb_server", "mongo_server")


@pytest.fixture(autouse=True)
def _restart_shared_servers(request):
    """After a test that stopped or killed a shared server, start it again for the next one."""
    yield
    for name in _SHARED:
        if name in request.fixturenames:
            server = request.getfixturevalue(name)
            if not server.running:
                with _loud_failure():
                    server.start()


# ---------------------------------------------------------------------------------------------
# per-test servers and factories


def _factory(cls, tmp_path):
    """Yield a make(**kwargs) that starts one more ``cls`` server; kill them all at teardown."""
    started = []

    def make(**kwargs):
        with _loud_failure():
            server = cls(tmp_path / f"{cls.kind}{len(started)}", **kwargs).start()
        started.append(server)
        return server

    yield make
    for server in started:
        server.kill()


@pytest.fixture
def make_mariadb(tmp_path):
    yield from _factory(servers.MariaDBServer, tmp_path)


@pytest.fixture
def make_mosquitto(tmp_path):
    yield from _factory(servers.MosquittoServer, tmp_path)


@pytest.fixture
def make_mongo(tmp_path):
    yield from _factory(servers.SecantusServer, tmp_path)


@pytest.fixture
def mosquitto_server(make_mosquitto):
    return make_mosquitto()


# ---------------------------------------------------------------------------------------------
# a disk that fills up


@pytest.fixture()
def small_disk(tmp_path: Path):
    """A 16 MB tmpfs as the state directory: a disk that fills up (needs root). Not smaller:
    while it is full, the WAL cannot be checkpointed (that needs room too), so once space
    returns the writes replayed meanwhile grow it by a few MB before its next checkpoint."""
    with small_tmpfs(tmp_path / "state", "16m") as mount:
        yield mount

# ---------------------------------------------------------------------------------------------
# hooks


def pytest_report_header(config):
    stack = os.environ.get("RAVEND_TEST_STACK", "(unset: run through make)")
    return f"ravend test stack: {stack}; python {sys.executable} {sys.version.split()[0]}"


def pytest_sessionfinish(session, exitstatus):
    # Also reached after Ctrl-C; whatever a fixture could not tear down dies here.
    servers.kill_all()

