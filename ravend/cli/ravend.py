"""``ravend``: the logging service. Parses arguments, loads the config, runs the service."""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import NoReturn

from ravend import __version__
from ravend.config import DEFAULT_PATH, EX_CONFIG, Config, ConfigError
from ravend.db.mysql import driver as mysql_driver
from ravend.memory import limit_malloc_arenas
from ravend.metrics import prometheus
from ravend.runtime.config_loader import load_config, refuse
from ravend.runtime.logs import setup_logging
from ravend.service import Service
from ravend.statelock import EX_LOCKED, AlreadyRunning

DESCRIPTION = """\
Read a Rainforest Automation RAVEn (RFA-Z106) or EMU-2 meter stick and store every reading it
sends in the sinks enabled in the configuration file (SQLite by default).

Runs in the foreground, logging one line per event to stderr; under systemd (Type=notify) it
reports readiness, status and watchdog pings. A missing or unplugged stick is waited for, a
store that is down is spooled for; only a bad configuration stops it (exit status 78).
SIGHUP (systemctl reload ravend) reads the file again: a bad one is refused in one line and the
running configuration kept; a changed one is applied by a restart in place (same PID).
"""

EPILOG = """\
examples:
  ravend --check-config                      validate /etc/ravend/ravend.conf and exit
  ravend --port /dev/ttyUSB0                 use this port instead of the configured one
  ravend --port socket://pi.local:3001       a stick served over TCP (ser2net)
  ravend --config ./ravend.conf --state-dir ./state
                                             run from a work folder, no root needed
exit status: 0 stopped by SIGTERM/SIGINT, 78 configuration error, 75 another ravend holds the
state directory, 1 other failure.
See ravend(8) and ravend.conf(5).
"""


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="ravend", description=DESCRIPTION, epilog=EPILOG,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("-c", "--config", default=DEFAULT_PATH, metavar="PATH",
                   help=f"configuration file (default {DEFAULT_PATH}; absent = all defaults)")
    p.add_argument("--check-config", action="store_true",
                   help="validate the configuration, print the result, exit (0 ok, 78 bad)")
    p.add_argument("--port", help="override [device] port (path, 'auto' or pyserial URL)")
    p.add_argument("--state-dir", type=Path, help="override [service] state_dir")
    p.add_argument("--log-level", choices=["debug", "info", "warning", "error"],
                   help="override [service] log_level")
    p.add_argument("--daemon", action="store_true",
                   help="detach into the background (python-daemon) for systems without"
                        " systemd; do not use under systemd")
    p.add_argument("--pidfile", type=Path, default=Path("/run/ravend/ravend.pid"),
                   help="PID file written with --daemon (default %(default)s)")
    p.add_argument("--version", action="version", version=f"ravend {__version__}")
    return p


def configure(args: argparse.Namespace) -> Config:
    """The file and the command line's overrides, validated (ConfigError): at start and for
    each SIGHUP, which re-reads the file with the same overrides."""
    return load_config(args.config, port=args.port, state_dir=args.state_dir,
                       log_level=args.log_level)


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        config = configure(args)
        if args.check_config:
            check_start(config)  # what the start checks, so that OK means it will start
    except ConfigError as exc:
        return refuse("ravend", exc)
    if args.check_config:
        print(f"ravend: configuration OK ({config.source})")
        return 0

    setup_logging(config.service.log_level)
    try:
        check_start(config)
    except ConfigError as exc:
        logging.getLogger("ravend").error("%s", exc)
        return EX_CONFIG
    limit_malloc_arenas()  # before the service's threads exist
    code = (_run_daemon(config, args.pidfile, lambda: reconfigure(args)) if args.daemon
            else _serve(config, lambda: reconfigure(args)))
    if code is None:
        _exec_again()
    return code


def reconfigure(args: argparse.Namespace) -> Config:
    """SIGHUP's check: everything ``ravend --check-config`` and the start check."""
    config = configure(args)
    check_start(config)
    return config


def _exec_again() -> NoReturn:
    """Start again with the same command line in the same process (same PID for systemd):
    the service has stopped to apply a reloaded configuration (ravend.service docstring)."""
    logging.shutdown()
    for stream in (sys.stdout, sys.stderr):
        if stream is not None:
            stream.flush()
    for fd in (0, 1, 2):
        # python-daemon's /dev/null can land on 0 itself, close-on-exec: keep all three open.
        with contextlib.suppress(OSError):
            os.set_inheritable(fd, True)
    os.execv(sys.executable, [sys.executable, *sys.orig_argv[1:]])


def _serve(config: Config, reconfigure: Callable[[], Config]) -> int | None:
    """Run the service; a second ravend on the same state directory: one line, exit 75.
    None: stopped to apply a reloaded configuration, to be started again."""
    try:
        service = Service(config, reconfigure=reconfigure)
    except AlreadyRunning as exc:
        logging.getLogger("ravend").error("%s", exc)
        return EX_LOCKED
    service.install_signals()
    code = service.run()
    return None if service.reexec else code


def check_start(config: Config) -> None:
    """What a start refuses beyond the file itself (ConfigError, exit 78): a feature that is
    configured but whose Debian package is missing. ``--check-config``, the start and each
    SIGHUP call this one function, so that "configuration OK" means ravend will start."""
    try:
        import serial  # noqa: F401
    except ImportError:
        raise ConfigError("python3-serial is not installed (apt install python3-serial)") from None
    if config.mqtt.enabled:
        try:
            import paho.mqtt.client  # noqa: F401
        except ImportError:
            raise ConfigError("[mqtt] enabled = yes, but python3-paho-mqtt is not installed"
                              " (apt install python3-paho-mqtt)") from None
    if config.mysql.enabled:
        mysql_driver()  # ConfigError naming python3-mysqldb
    if config.metrics.listen:
        prometheus()  # ConfigError naming python3-prometheus-client


def _run_daemon(config: Config, pidfile: Path, reconfigure: Callable[[], Config]
                ) -> int | None:
    try:
        import daemon
        import daemon.pidfile
    except ImportError:
        print("ravend: --daemon needs python3-daemon (apt install python3-daemon)",
              file=sys.stderr)
        return 1
    pidfile.parent.mkdir(parents=True, exist_ok=True)
    context = daemon.DaemonContext(pidfile=daemon.pidfile.TimeoutPIDLockFile(str(pidfile)),
                                   stderr=sys.stderr, files_preserve=[sys.stderr.fileno()])
    with context:
        setup_logging(config.service.log_level)
        # None (a reload): the context has released the PID file when main() execs again.
        return _serve(config, reconfigure)


if __name__ == "__main__":
    sys.exit(main())
