"""The configuration of a command line: the file, the options that override it, and the one
line a program refuses it with. ravend, ravend-repeater, ravend-mongo-ingest and ravenctl all
load their file here, so that an override or a refusal reads the same in each."""

from __future__ import annotations

import os
import sys
from pathlib import Path

from ravend.config import EX_CONFIG, Config, ConfigError, load, replace


def load_config(path: str | os.PathLike[str] | None, *, port: str | None = None,
                state_dir: Path | None = None, log_level: str | None = None) -> Config:
    """The file (absent: all defaults) with the command line's overrides of [device] port,
    [service] state_dir (made absolute) and log_level; ConfigError when it cannot be used."""
    config = load(path)
    overrides: dict[str, dict[str, object]] = {}
    if port:
        overrides.setdefault("device", {})["port"] = port
    if state_dir:
        overrides.setdefault("service", {})["state_dir"] = state_dir.resolve()
    if log_level:
        overrides.setdefault("service", {})["log_level"] = log_level
    return replace(config, **overrides) if overrides else config


def refuse(program: str, exc: ConfigError) -> int:
    """The one line on stderr for a configuration the program cannot start with; the exit
    status (78, EX_CONFIG)."""
    print(f"{program}: configuration error: {exc}", file=sys.stderr)
    return EX_CONFIG
