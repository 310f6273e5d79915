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

from ravend.cli import common
from ravend.config import Config, ConfigError
from ravend.db.mysql import driver as mysql_driver
from ravend.memory import limit_malloc_arenas
from ravend.metrics import prometheus
from ravend.runtime.logs import setup_logging
from ravend.runtime.packages import require
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
    return common.parser("ravend", DESCRIPTION, EPILOG, config_note="; absent = all defaults",
                         overrides=_overrides, more=_daemon_options)


def _overrides(p: argparse.ArgumentParser) -> None:
    p.add_argument("--port", help="override [device] port (path, 'auto' or pyserial URL)")
    common.add_state_dir(p)


def _daemon_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--daemon", action="store_true",
                   help="detach into the background (python-daemon) for systems without"
                        " systemd; do not use under systemd")
    p.add_argument("--pidfile", type=Path, default=Path("/run/ravend/ravend.pid"),
                   help="PID file written with --daemon (default %(default)s)")


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    # --check-config checks what the start checks, so that OK means it will start; the start
    # itself checks once logging is set up, so that a refusal is in the journal.
    return common.run(common.Program(
        "ravend", check=lambda config: check_start(config) if args.check_config else None,
        start=lambda config, _: _start(args, config)), args)


def _start(args: argparse.Namespace, config: Config) -> int:
    try:
        check_start(config)
    except ConfigError as exc:
        return common.logged_refusal("ravend", exc)
    limit_malloc_arenas()  # before the service's threads exist
    code = (_run_daemon(config, args.pidfile, lambda: reconfigure(args)) if args.daemon
            else _serve(config, lambda: reconfigure(args)))
    if code is None:
        _exec_again()
    return code


def reconfigure(args: argparse.Namespace) -> Config:
    """SIGHUP's check: the file again with the same overrides (common.configure), and
    everything ``ravend --check-config`` and the start check."""
    config = common.configure(args)
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
    require("serial", "python3-serial")
    if config.mqtt.enabled:
        require("paho.mqtt.client", "python3-paho-mqtt", "[mqtt] enabled = yes, but ")
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
