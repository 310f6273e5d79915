"""Read /etc/ravend/ravend.conf into typed, validated, frozen settings — or refuse it in one line.

Every key has its default here, next to why it is what it is; etc/ravend.conf repeats them with
comments for users. Unknown sections and keys, wrong types and impossible values are refused at
start with the file, line, section, key, the value and what was expected, so that systemd sees
exit status 78 (EX_CONFIG) and does not restart-loop on a typo.
"""

from __future__ import annotations

import configparser
import dataclasses
import os
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

DEFAULT_PATH = "/etc/ravend/ravend.conf"
DEFAULT_STATE_DIR = Path("/var/lib/ravend")
DEFAULT_SQLITE_NAME = Path("ravend.db")
EX_CONFIG = 78


class ConfigError(Exception):
    """The configuration cannot be used; ``str()`` is the one line to log."""

    exit_status = EX_CONFIG


# --- value parsers: each returns the value or raises ValueError saying what was expected ------

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|min|h|d)?\s*$")
_UNIT_SECONDS = {None: 1.0, "s": 1.0, "ms": 0.001, "m": 60.0, "min": 60.0, "h": 3600.0,
                 "d": 86400.0}


def duration(text: str) -> float:
    match = _DURATION.match(text)
    if not match:
        raise ValueError("a duration such as 30, 30s, 5m, 2h or 7d")
    return float(match.group(1)) * _UNIT_SECONDS[match.group(2)]


def boolean(text: str) -> bool:
    t = text.strip().lower()
    if t in ("1", "yes", "true", "on"):
        return True
    if t in ("0", "no", "false", "off"):
        return False
    raise ValueError("yes or no")


def integer(text: str) -> int:
    try:
        return int(text.strip(), 10)
    except ValueError:
        raise ValueError("a whole number") from None


def number(text: str) -> float:
    try:
        return float(text.strip())
    except ValueError:
        raise ValueError("a number") from None


def text(value: str) -> str:
    return value.strip()


def one_of(*choices: str) -> Callable[[str], str]:
    def parse(value: str) -> str:
        v = value.strip().lower()
        if v not in choices:
            raise ValueError("one of " + ", ".join(choices))
        return v

    return parse


def opt(name: str, parse: Callable[[str], Any], default: Any, *, low: float | None = None,
        high: float | None = None) -> Any:
    """A config key: its parser and bounds travel in the dataclass field's metadata."""
    return field(default=default, metadata={"parse": parse, "low": low, "high": high, "doc": name})


# --- sections ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class ServiceConfig:
    # Where the SQLite store, outboxes and other state live (systemd's StateDirectory).
    state_dir: Path = opt("state directory", Path, DEFAULT_STATE_DIR)
    log_level: str = opt("log level", one_of("debug", "info", "warning", "error"), "info")
    # Group commit: readings are written at most this long after they arrive, or sooner when
    # `batch_size` are waiting. One second keeps latency low and a Pi's SD card happy.
    commit_interval: float = opt("commit interval", duration, 1.0, low=0.01, high=60)
    batch_size: int = opt("batch size", integer, 500, low=1, high=100_000)
    # Readings waiting in memory per sink before they go to its on-disk outbox instead.
    queue_size: int = opt("queue size", integer, 10_000, low=100, high=10_000_000)


@dataclass(frozen=True)
class DeviceConfig:
    # `auto` finds the stick (udev symlink /dev/raven, /dev/serial/by-id, then USB ids); or a
    # path such as /dev/ttyUSB0, or a pyserial URL (socket://host:port, rfc2217://host:port).
    port: str = opt("port", text, "auto")
    model: str = opt("model", one_of("auto", "raven", "emu2"), "auto")
    baudrate: int = opt("baud rate", integer, 115200, low=1200, high=4_000_000)
    # Poll for demand when the device has pushed none for this long.
    demand_poll_after: float = opt("demand poll delay", duration, 60.0, low=1, high=86400)
    # Ask for the summation this often (devices push it only every few minutes).
    summation_interval: float = opt("summation interval", duration, 300.0, low=10, high=86400)
    # Devices answer slowly (~4 s) and drop commands sent back to back.
    command_spacing: float = opt("command spacing", duration, 1.0, low=0, high=60)
    reply_timeout: float = opt("reply timeout", duration, 10.0, low=0.1, high=300)
    # No byte at all for this long → the link is dead (a half-open TCP link says nothing).
    silence_timeout: float = opt("silence timeout", duration, 300.0, low=1, high=86400)
    # Reopen delays double from reconnect_min up to reconnect_max.
    reconnect_min: float = opt("minimum reconnect delay", duration, 1.0, low=0.01, high=3600)
    reconnect_max: float = opt("maximum reconnect delay", duration, 60.0, low=0.01, high=3600)
    # `ravenctl status` exits non-zero when the newest reading is older than this.
    stale_after: float = opt("stale after", duration, 300.0, low=1, high=10 * 86400)


@dataclass(frozen=True)
class SqliteConfig:
    enabled: bool = opt("enabled", boolean, True)
    # Relative paths are under [service] state_dir.
    path: Path = opt("database path", Path, DEFAULT_SQLITE_NAME)


@dataclass(frozen=True)
class Config:
    service: ServiceConfig = field(default_factory=ServiceConfig)
    device: DeviceConfig = field(default_factory=DeviceConfig)
    sqlite: SqliteConfig = field(default_factory=SqliteConfig)
    source: str = "(defaults)"

    @property
    def sqlite_path(self) -> Path:
        return self.service.state_dir / self.sqlite.path


SECTIONS: dict[str, type] = {
    "service": ServiceConfig,
    "device": DeviceConfig,
    "sqlite": SqliteConfig,
}


def _line_of(path: str, section: str, key: str | None) -> int | None:
    """configparser forgets line numbers; find the key's line again for the error message."""
    try:
        lines = Path(path).read_text(encoding="utf-8", errors="replace").splitlines()
    except OSError:
        return None
    current = None
    for number_, line in enumerate(lines, 1):
        stripped = line.strip()
        if stripped.startswith("[") and stripped.endswith("]"):
            current = stripped[1:-1].strip().lower()
            if key is None and current == section:
                return number_
        elif current == section and key is not None:
            name = re.split(r"[=:]", stripped, maxsplit=1)[0].strip().lower()
            if name == key and not stripped.startswith(("#", ";")):
                return number_
    return None


def _where(path: str, section: str, key: str | None = None) -> str:
    line = _line_of(path, section, key)
    loc = f"{path}:{line}" if line else path
    return f"{loc}: [{section}]" + (f" {key}" if key else "")


def _parse_section(path: str, name: str, cls: type, items: dict[str, str]) -> Any:
    fields = {f.name: f for f in dataclasses.fields(cls)}
    values: dict[str, Any] = {}
    for key, raw in items.items():
        f = fields.get(key)
        if f is None:
            known = ", ".join(sorted(fields))
            raise ConfigError(f"{_where(path, name, key)}: unknown key (known keys: {known})")
        meta = f.metadata
        try:
            value = meta["parse"](raw)
        except ValueError as exc:
            raise ConfigError(f"{_where(path, name, key)} = {raw!r}: expected {exc}") from None
        low, high = meta.get("low"), meta.get("high")
        if (low is not None and value < low) or (high is not None and value > high):
            raise ConfigError(
                f"{_where(path, name, key)} = {raw!r}: expected a value from {low:g} to {high:g}"
            )
        values[key] = value
    return cls(**values)


def load(path: str | os.PathLike[str] | None = None, *, must_exist: bool = False) -> Config:
    """Parse and validate the whole file; a missing file means all defaults unless must_exist."""
    path = str(path or DEFAULT_PATH)
    parser = configparser.ConfigParser(interpolation=None, strict=True)
    parser.optionxform = str.lower  # type: ignore[assignment,method-assign]
    try:
        with open(path, encoding="utf-8") as handle:
            parser.read_file(handle)
    except FileNotFoundError:
        if must_exist:
            raise ConfigError(f"{path}: no such file") from None
        return Config(source=f"{path} (absent: defaults)")
    except PermissionError:
        raise ConfigError(f"{path}: permission denied (readable by the service user?)") from None
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    except configparser.Error as exc:
        first = str(exc).splitlines()[0]
        raise ConfigError(f"{path}: {first}") from None
    if parser.defaults():
        raise ConfigError(f"{path}: [DEFAULT] is not used by ravend; move its keys to a section")
    sections: dict[str, Any] = {}
    for name in parser.sections():
        cls = SECTIONS.get(name.lower())
        if cls is None:
            known = ", ".join(f"[{s}]" for s in SECTIONS)
            raise ConfigError(f"{_where(path, name)}: unknown section (known: {known})")
        sections[name.lower()] = _parse_section(path, name.lower(), cls, dict(parser[name]))
    config = Config(**sections, source=path)
    _check_across(config, path)
    return config


def _check_across(config: Config, path: str) -> None:
    """Rules that involve more than one key."""
    dev = config.device
    if dev.reconnect_min > dev.reconnect_max:
        raise ConfigError(
            f"{_where(path, 'device', 'reconnect_min')}: must not exceed reconnect_max "
            f"({dev.reconnect_min:g} > {dev.reconnect_max:g})"
        )


def replace(config: Config, **sections: dict[str, Any]) -> Config:
    """A copy with some keys changed (tests, command-line overrides), validated by the caller."""
    changed = {name: dataclasses.replace(getattr(config, name), **keys)
               for name, keys in sections.items()}
    return dataclasses.replace(config, **changed)
