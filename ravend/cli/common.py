"""What the daemons' command lines share: ravend, ravend-repeater, ravend-mongo-ingest and
ravend-web take the same options for their configuration file, and go through the same steps
before they run, so that a refusal, ``--check-config`` and an override read the same in each.

The steps (``run``): load the file with the line's overrides; a companion not enabled in it
refuses; the program's own check (its optional packages, its store, its password file); any
ConfigError so far is refused in one line on stderr, exit 78; ``--check-config`` then says
"configuration OK" and exits 0; else logging is set up and the program starts. Each program's
module keeps what is its own: its texts and extra options, and the hooks of its ``Program``.
"""

from __future__ import annotations

import argparse
import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Generic, Protocol, TypeVar

from ravend import __version__
from ravend.config import DEFAULT_PATH, EX_CONFIG, Config, ConfigError, companion_unconfigured
from ravend.runtime.config_loader import load_config, refuse
from ravend.runtime.logs import setup_logging

#: Adds a program's own options to its parser.
AddOptions = Callable[[argparse.ArgumentParser], None]

#: What a program's check found, handed to its "configuration OK" line and its start.
Checked = TypeVar("Checked")


def parser(prog: str, description: str, epilog: str, *, config_note: str = "",
           overrides: AddOptions | None = None, more: AddOptions | None = None
           ) -> argparse.ArgumentParser:
    """A daemon's parser, its options in the order its help lists them: -c/--config
    (``config_note`` follows the default in its help), --check-config, the program's own
    overrides of the file (``overrides``, e.g. add_state_dir), --log-level, its other options
    (``more``), --version."""
    p = argparse.ArgumentParser(prog=prog, description=description, epilog=epilog,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("-c", "--config", default=DEFAULT_PATH, metavar="PATH",
                   help=f"configuration file (default {DEFAULT_PATH}{config_note})")
    p.add_argument("--check-config", action="store_true",
                   help="validate the configuration, print the result, exit (0 ok, 78 bad)")
    if overrides:
        overrides(p)
    p.add_argument("--log-level", choices=["debug", "info", "warning", "error"],
                   help="override [service] log_level")
    if more:
        more(p)
    p.add_argument("--version", action="version", version=f"{prog} {__version__}")
    return p


def add_state_dir(p: argparse.ArgumentParser) -> None:
    """--state-dir, the override of every program that keeps or reads state there."""
    p.add_argument("--state-dir", type=Path, help="override [service] state_dir")


def configure(args: argparse.Namespace) -> Config:
    """The file with the overrides this program's line has (ConfigError): [device] port,
    [service] state_dir and log_level, each where the program takes it."""
    return load_config(args.config, port=getattr(args, "port", None),
                       state_dir=getattr(args, "state_dir", None), log_level=args.log_level)


def _nothing_more(config: Config, checked: object) -> str:
    return ""


@dataclass(frozen=True)
class Program(Generic[Checked]):
    """A daemon's own part of ``run``."""

    #: prog, and the first word of its refusals and of "configuration OK".
    name: str
    #: What a start needs beyond the file (ConfigError: refused); ``--check-config`` runs it too.
    check: Callable[[Config], Checked]
    #: After setup_logging: build and run the program; its exit status.
    start: Callable[[Config, Checked], int]
    #: What "configuration OK (<file>; ...)" says after the file; "" for nothing.
    ok: Callable[[Config, Checked], str] = _nothing_more
    #: ([section], hint) of a companion that runs only where [section] enabled is yes.
    companion: tuple[str, str] | None = None
    #: The file and the line's overrides (ConfigError).
    configure: Callable[[argparse.Namespace], Config] = configure


def run(program: Program[Checked], args: argparse.Namespace) -> int:
    """The steps every daemon goes through (module docstring); the exit status."""
    try:
        config = program.configure(args)
        if program.companion:
            unconfigured = companion_unconfigured(config, *program.companion)
            if unconfigured:
                raise ConfigError(unconfigured)
        checked = program.check(config)
    except ConfigError as exc:
        return refuse(program.name, exc)
    if args.check_config:
        details = program.ok(config, checked)
        print(f"{program.name}: configuration OK ({config.source}"
              f"{'; ' + details if details else ''})")
        return 0
    setup_logging(config.service.log_level)
    return program.start(config, checked)


class Daemon(Protocol):
    """What ravend-repeater and ravend-mongo-ingest build and run."""

    def install_signals(self) -> None: ...

    def run(self) -> int: ...


def logged_refusal(logger: str, exc: ConfigError) -> int:
    """A ConfigError found once logging is set up: one error line in the log; exit 78."""
    logging.getLogger(logger).error("%s", exc)
    return EX_CONFIG


def run_daemon(logger: str, build: Callable[[], Daemon]) -> int:
    """Build the program's object (a ConfigError it raises: logged, 78), install its signal
    handlers, run it; its exit status."""
    try:
        daemon = build()
    except ConfigError as exc:
        return logged_refusal(logger, exc)
    daemon.install_signals()
    return daemon.run()
