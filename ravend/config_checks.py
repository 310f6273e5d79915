"""The rules of ravend.conf that involve more than one key, or a file a key names: checked
once every section has been read, each refusal a ConfigError that says where (config_where).

ravend.config calls check_across from load(); the sections are ravend.config_sections'.
"""

from __future__ import annotations

import os

from ravend.config_error import ConfigError
from ravend.config_secrets import read_secret
from ravend.config_sections import (
    DEFAULT_MONGO_URI,
    RETRY_SECTIONS,
    Config,
    MongoConfig,
    MqttConfig,
    MysqlConfig,
    TariffConfig,
    WebConfig,
)
from ravend.config_where import where


def check_across(config: Config, path: str) -> None:
    """Rules that involve more than one key."""
    dev = config.device
    if dev.reconnect_min > dev.reconnect_max:
        raise ConfigError(
            f"{where(path, 'device', 'reconnect_min')}: must not exceed reconnect_max "
            f"({dev.reconnect_min:g} > {dev.reconnect_max:g})"
        )
    for section in RETRY_SECTIONS:
        _check_retry(config, section, path)
    _check_mqtt(config.mqtt, path)
    _check_mysql(config.mysql, path)
    _check_mongo(config.mongo, path)
    _check_tariff(config.tariff, path)
    _check_web(config.web, path)


def _check_retry(config: Config, section: str, path: str) -> None:
    """retry_min must not exceed retry_max, either of them possibly [device]'s stand-in."""
    own, pace = getattr(config, section), config.retry(section)
    if pace.minimum <= pace.maximum or (own.retry_min is None and own.retry_max is None):
        return  # both unset: [device]'s own check has spoken
    if own.retry_min is None:
        raise ConfigError(
            f"{where(path, section, 'retry_max')}: must not be below [device] reconnect_min,"
            f" which applies while retry_min is unset ({pace.minimum:g} > {pace.maximum:g})")
    if own.retry_max is None:
        raise ConfigError(
            f"{where(path, section, 'retry_min')}: must not exceed [device] reconnect_max,"
            f" which applies while retry_max is unset ({pace.minimum:g} > {pace.maximum:g})")
    raise ConfigError(f"{where(path, section, 'retry_min')}: must not exceed retry_max"
                      f" ({pace.minimum:g} > {pace.maximum:g})")


def _check_mqtt(mq: MqttConfig, path: str) -> None:
    if mq.password and mq.password_file:
        raise ConfigError(f"{where(path, 'mqtt', 'password_file')}: set password or"
                          " password_file, not both")
    if mq.password_file:
        read_secret(mq.password_file, where(path, "mqtt", "password_file"))
    if mq.key_file and not mq.cert_file:
        raise ConfigError(f"{where(path, 'mqtt', 'key_file')}: needs cert_file as well")
    for key in ("ca_file", "cert_file", "key_file"):
        value = getattr(mq, key)
        if value and not mq.tls:
            raise ConfigError(f"{where(path, 'mqtt', key)}: set, but tls = no"
                              " (the connection would not be encrypted)")
        if value and not os.path.isfile(value):
            raise ConfigError(f"{where(path, 'mqtt', key)} = {value!r}: no such file")


def _check_mysql(my: MysqlConfig, path: str) -> None:
    if my.password and my.password_file:
        raise ConfigError(f"{where(path, 'mysql', 'password_file')}: set password or"
                          " password_file, not both")
    if my.password_file:
        # Only the mode here: whoever runs ravenctl may not be allowed to read it; the service
        # reads it at each connection (read_secret), so a fixed file is picked up on the retry.
        try:
            mode = os.stat(my.password_file).st_mode
        except FileNotFoundError:
            raise ConfigError(f"{where(path, 'mysql', 'password_file')} ="
                              f" {my.password_file!r}: no such file") from None
        except OSError:
            mode = 0
        if mode & 0o077:
            raise ConfigError(
                f"{where(path, 'mysql', 'password_file')}: {my.password_file} is accessible by"
                f" group or others (mode {mode & 0o777:04o}): make it readable by the service"
                f" user only (chmod 600 {my.password_file})")
    if my.ssl_key and not my.ssl_cert:
        raise ConfigError(f"{where(path, 'mysql', 'ssl_key')}: needs ssl_cert as well")
    for key in ("ssl_ca", "ssl_cert", "ssl_key"):
        value = getattr(my, key)
        if value and not os.path.isfile(value):
            raise ConfigError(f"{where(path, 'mysql', key)} = {value!r}: no such file")


def _check_mongo(mo: MongoConfig, path: str) -> None:
    if mo.uri_file and mo.uri != DEFAULT_MONGO_URI:
        raise ConfigError(f"{where(path, 'mongo', 'uri_file')}: set uri or uri_file, not both")
    if mo.uri_file:
        # Only the mode, as for [mysql] password_file: ravend-mongo-ingest reads the file at
        # each connection, and whoever runs `ravend --check-config` may not be allowed to.
        try:
            mode = os.stat(mo.uri_file).st_mode
        except FileNotFoundError:
            raise ConfigError(f"{where(path, 'mongo', 'uri_file')} = {mo.uri_file!r}:"
                              " no such file") from None
        except OSError:
            mode = 0
        if mode & 0o077:
            raise ConfigError(
                f"{where(path, 'mongo', 'uri_file')}: {mo.uri_file} is accessible by group or"
                f" others (mode {mode & 0o777:04o}): make it readable by the service user only"
                f" (chmod 600 {mo.uri_file})")


def _check_tariff(ta: TariffConfig, path: str) -> None:
    if ta.rate is not None and ta.periods:
        raise ConfigError(f"{where(path, 'tariff', 'periods')}: set rate or periods, not both")
    if ta.source == "config" and ta.rate is None and not ta.periods:
        raise ConfigError(f"{where(path, 'tariff', 'source')}: config needs a rate or periods")


def _check_web(we: WebConfig, path: str) -> None:
    if we.max_streams >= we.threads:
        raise ConfigError(f"{where(path, 'web', 'max_streams')}: must be below threads"
                          f" ({we.max_streams} >= {we.threads}): each live view holds a thread")
    if we.auth == "basic" and not we.password_file:
        raise ConfigError(f"{where(path, 'web', 'auth')}: basic needs a password_file")
    if we.password_file and we.auth == "none":
        raise ConfigError(f"{where(path, 'web', 'password_file')}: set, but auth = none")
