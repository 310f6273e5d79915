"""``ravenctl doctor``: can each enabled store be reached, right now, the way ravend reaches it?

Each probe goes through the sink's own connect code, so that a wrong password, a missing
driver or TLS the server does not offer fail here exactly as they would in the service; the
timeouts are cut short so that a dead server costs seconds, not the service's minute.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
from collections.abc import Callable
from pathlib import Path

from ravend.config import ConfigError, MqttConfig, MysqlConfig
from ravend.doctor_check import Check, Status

#: Longest wait for one store, in seconds.
TIMEOUT = 3.0


def check_sqlite(path: Path, may_write: Callable[[Path], bool] = lambda p: os.access(p, os.W_OK),
                 user: str = "ravend") -> Check:
    """The directory must be writable by the service (WAL needs its -wal and -shm files next to
    the database) and an existing file must open; read-only, so the service is not disturbed."""
    import sqlite3

    from ravend.db.sqlite import connect, schema_version, store_bytes

    name = "sink sqlite"
    directory = path.parent
    if not directory.is_dir():
        return Check(name, Status.WARN, f"{directory} does not exist yet",
                     "systemd creates it when ravend starts (StateDirectory=); without systemd:"
                     f" install -d -o {user} -m 0750 {directory}")
    if not may_write(directory):
        return Check(name, Status.FAIL, f"{directory} is not writable by {user}",
                     f"chown {user}: {directory}")
    if not path.exists():
        return Check(name, Status.OK, f"{path}: no database yet; ravend creates it at start")
    try:
        conn = connect(path, readonly=True, timeout=TIMEOUT)
        try:
            version = schema_version(conn)
        finally:
            conn.close()
    except sqlite3.Error as exc:
        return Check(name, Status.FAIL, f"{path}: {exc}",
                     "move the file aside; ravend starts a new one (readings since are kept)")
    size = store_bytes(path) / 1e6  # with its WAL, as ravenctl status counts it
    return Check(name, Status.OK, f"{path} opens (schema version {version}, {size:.1f} MB)")


def check_mysql(cfg: MysqlConfig, timeout: float = TIMEOUT) -> Check:
    from ravend.db import mysql, store_errors

    name = "sink mysql"
    short = dataclasses.replace(cfg, connect_timeout=min(cfg.connect_timeout, timeout),
                                query_timeout=min(cfg.query_timeout, timeout))
    try:
        conn = mysql.connect(short)
        try:
            version = mysql.schema_version(conn)
        finally:
            with contextlib.suppress(Exception):
                conn.close()
    except ConfigError as exc:
        return Check(name, Status.FAIL, str(exc), "see [mysql] in ravend.conf(5)")
    except store_errors() as exc:
        return Check(name, Status.FAIL, str(exc),
                     "start the server, or fix [mysql] host/port/unix_socket; ravend spools"
                     " readings until it is reachable")
    if version == 0:
        return Check(name, Status.WARN, f"{mysql.where(cfg)} reachable, no tables yet",
                     "ravenctl db migrate (ravend also does it at start)")
    return Check(name, Status.OK, f"{mysql.where(cfg)} reachable (schema version {version})")


def check_mqtt(cfg: MqttConfig, timeout: float = TIMEOUT) -> Check:
    """Connect and wait for the CONNACK, under a client id of our own: with ravend's, the
    broker would disconnect the running service to let us in."""
    name = "sink mqtt"
    try:
        from ravend.mqtt_client import Connection, MqttError, endpoint_from_config
    except ImportError:
        return Check(name, Status.FAIL, "paho-mqtt is not installed", "apt install"
                     " python3-paho-mqtt")
    try:
        endpoint = endpoint_from_config(cfg, client_id=f"ravenctl-doctor-{os.getpid()}")
        conn = Connection(endpoint)
        try:
            conn.connect(timeout)
        finally:
            conn.close()
    except ConfigError as exc:
        return Check(name, Status.FAIL, str(exc), "see [mqtt] in ravend.conf(5)")
    except MqttError as exc:
        return Check(name, Status.FAIL, str(exc),
                     "start the broker, or fix [mqtt] host/port/tls/username; ravend spools"
                     " readings until it is reachable")
    return Check(name, Status.OK, f"{endpoint} accepted a connection")
