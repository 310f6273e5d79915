"""Read /etc/ravend/ravend.conf into typed, validated, frozen settings — or refuse it in one line.

The settings, their defaults and why, are ravend.config_sections'; the rules across keys
ravend.config_checks'. Unknown sections and keys, wrong types and impossible values are refused
at start with the file, line, section, key, the value and what was expected, so that systemd
sees exit status 78 (EX_CONFIG) and does not restart-loop on a typo. The rest of ravend imports
the sections and the error from here.
"""

from __future__ import annotations

import configparser
import dataclasses
import os
import re
from typing import Any

from ravend.config_checks import check_across
from ravend.config_error import EX_CONFIG, ConfigError
from ravend.config_secrets import shown_value
from ravend.config_sections import (
    DEFAULT_BACKUP_DIR,
    DEFAULT_MONGO_URI,
    DEFAULT_SQLITE_NAME,
    DEFAULT_STATE_DIR,
    RETRY_SECTIONS,
    SECTIONS,
    BackupConfig,
    Config,
    DeviceConfig,
    MeterConfig,
    MetricsConfig,
    MongoConfig,
    MqttConfig,
    MysqlConfig,
    RepeaterConfig,
    RetentionConfig,
    RetryPace,
    ServiceConfig,
    SqliteConfig,
    TariffConfig,
    WebConfig,
    opt,
)
from ravend.config_where import where

#: What ``from ravend.config import ...`` offers besides what is defined here.
__all__ = [
    "DEFAULT_BACKUP_DIR", "DEFAULT_MONGO_URI", "DEFAULT_PATH", "DEFAULT_SQLITE_NAME",
    "DEFAULT_STATE_DIR", "EX_CONFIG", "RETRY_SECTIONS", "SECTIONS", "BackupConfig", "Config",
    "ConfigError", "ConfigUnreadable", "DeviceConfig", "MeterConfig", "MetricsConfig",
    "MongoConfig", "MqttConfig", "MysqlConfig", "RepeaterConfig", "RetentionConfig", "RetryPace",
    "ServiceConfig", "SqliteConfig", "TariffConfig", "WebConfig", "companion_unconfigured",
    "load", "opt", "replace",
]

DEFAULT_PATH = "/etc/ravend/ravend.conf"


class ConfigUnreadable(ConfigError):
    """The file exists but this user may not read it: a service lacks its group, a person
    running ravenctl lacks sudo or the group (each says what to do in its own words)."""

    def __init__(self, path: str) -> None:
        super().__init__(f"{path}: permission denied (readable by the service user?)")
        self.path = path


#: A meter as ravend names it in stores and topics: 0x and 16 lower-case hex digits.
_METER_MAC = re.compile(r"^0x[0-9a-f]{16}$")


def _parse_section(path: str, name: str, cls: type, items: dict[str, str]) -> Any:
    """One section's keys through their parsers and bounds (the field metadata of opt)."""
    fields = {f.name: f for f in dataclasses.fields(cls)}
    values: dict[str, Any] = {}
    for key, raw in items.items():
        f = fields.get(key)
        if f is None:
            known = ", ".join(sorted(fields))
            raise ConfigError(f"{where(path, name, key)}: unknown key (known keys: {known})")
        meta = f.metadata
        try:
            value = meta["parse"](raw)
        except ValueError as exc:
            raise ConfigError(f"{where(path, name, key)} = {shown_value(key, raw)}: expected"
                              f" {exc}") from None
        low, high = meta.get("low"), meta.get("high")
        if (low is not None and value < low) or (high is not None and value > high):
            raise ConfigError(f"{where(path, name, key)} = {shown_value(key, raw)}: expected"
                              f" a value from {low:g} to {high:g}")
        values[key] = value
    return cls(**values)


def load(path: str | os.PathLike[str] | None = None, *, must_exist: bool = False) -> Config:
    """Parse and validate the whole file; a missing file means all defaults unless must_exist."""
    path = str(path or DEFAULT_PATH)
    parser = configparser.ConfigParser(interpolation=None, strict=True)
    # configparser documents replacing this hook by assigning it; its stubs declare a method
    # (so no assigning), and mypy then reads str.lower as taking the parser too (a mismatch).
    parser.optionxform = str.lower  # type: ignore[assignment,method-assign]
    try:
        with open(path, encoding="utf-8") as handle:
            parser.read_file(handle)
    except FileNotFoundError:
        if must_exist:
            raise ConfigError(f"{path}: no such file") from None
        # The same decision as for a file that leaves [repeater]/[mongo] enabled unset.
        return _companions_decided(Config(source=f"{path} (absent: defaults)"), {})
    except PermissionError:
        raise ConfigUnreadable(path) from None
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    except configparser.Error as exc:
        first = str(exc).splitlines()[0]
        raise ConfigError(f"{path}: {first}") from None
    if parser.defaults():
        raise ConfigError(f"{path}: [DEFAULT] is not used by ravend; move its keys to a section")
    sections: dict[str, Any] = {}
    meters: dict[str, MeterConfig] = {}
    for name in parser.sections():
        if name.lower().split(" ", 1)[0] == "meter":
            mac = _meter_section(path, name)
            if mac in meters:
                raise ConfigError(f"{where(path, name.lower())}: a second section for {mac}")
            meters[mac] = _parse_section(path, name.lower(), MeterConfig, dict(parser[name]))
            continue
        cls = SECTIONS.get(name.lower())
        if cls is None:
            known = ", ".join(f"[{s}]" for s in SECTIONS)
            raise ConfigError(f"{where(path, name)}: unknown section (known: {known},"
                              " [meter <MAC>])")
        sections[name.lower()] = _parse_section(path, name.lower(), cls, dict(parser[name]))
    config = Config(**sections, meters=meters, source=path)
    check_across(config, path)
    given = {name.lower(): set(parser[name]) for name in parser.sections()}
    return _companions_decided(config, given)


def _companions_decided(config: Config, given: dict[str, set[str]]) -> Config:
    """[repeater] and [mongo] enabled when the file leaves them unset: yes if it configures
    that companion otherwise (any other key of its own section; for the repeater also an
    [mqtt] host other than localhost), as files written before the key existed did; else no,
    so that an unconfigured companion refuses to start instead of retrying localhost."""
    changes: dict[str, dict[str, Any]] = {}
    if config.repeater.enabled is None:
        own = given.get("repeater", set()) - {"enabled"}
        broker = "host" in given.get("mqtt", set()) and config.mqtt.host != "localhost"
        changes["repeater"] = {"enabled": bool(own) or broker}
    if config.mongo.enabled is None:
        changes["mongo"] = {"enabled": bool(given.get("mongo", set()) - {"enabled"})}
    return replace(config, **changes) if changes else config


def companion_unconfigured(config: Config, section: str, hint: str) -> str | None:
    """The one line a companion refuses to start with unless [section] enabled is yes (None
    when it may run); hint names what else to set."""
    if getattr(config, section).enabled:
        return None
    path = config.source.split(" (", 1)[0]
    return f"not configured: set [{section}] enabled = yes in {path}{hint}"


def _meter_section(path: str, name: str) -> str:
    """The MAC of a [meter <MAC>] section, as ravend writes it (0x, 16 lower-case digits)."""
    mac = name.split(" ", 1)[1].strip().lower() if " " in name.strip() else ""
    if not _METER_MAC.match(mac):
        raise ConfigError(f"{where(path, name.lower())}: expected [meter <MAC>] with the"
                          " meter's MAC as ravend stores it: 0x and 16 hex digits, e.g."
                          " [meter 0x00135003001234ab] (`ravenctl status` lists them)")
    return mac


def replace(config: Config, **sections: dict[str, Any]) -> Config:
    """A copy with some keys changed (tests, command-line overrides), validated by the caller."""
    changed = {name: dataclasses.replace(getattr(config, name), **keys)
               for name, keys in sections.items()}
    return dataclasses.replace(config, **changed)
