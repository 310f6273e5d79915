"""``ravend-repeater``: parses arguments, loads the config, runs ravend.repeater.Repeater."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from ravend import __version__
from ravend.config import DEFAULT_PATH, EX_CONFIG, ConfigError, companion_unconfigured
from ravend.repeater import Repeater
from ravend.repeater_sources import make_source
from ravend.runtime.config_loader import load_config, refuse
from ravend.runtime.logs import setup_logging

DESCRIPTION = """\
Publish the readings that ravend stored (SQLite, or MySQL/MariaDB) to the MQTT broker of the
[mqtt] section, in the order they were stored, as ravend's MQTT sink would have published them.

The id of the last row the broker acknowledged is kept in a watermark file, so the repeater
resumes exactly where it stopped after a restart, a crash or a broker outage; rows stored later
are followed as they arrive. Settings: [repeater] and [mqtt] in the configuration file.
"""

EPILOG = """\
examples:
  ravend-repeater --check-config             validate the configuration and exit
  ravend-repeater --config ./ravend.conf --state-dir ./state
exit status: 0 stopped by SIGTERM/SIGINT, 78 configuration error (also: [repeater] enabled
is not yes), 1 other failure.
See ravend-repeater(8) and ravend.conf(5).
"""


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="ravend-repeater", description=DESCRIPTION, epilog=EPILOG,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("-c", "--config", default=DEFAULT_PATH, metavar="PATH",
                   help=f"configuration file (default {DEFAULT_PATH})")
    p.add_argument("--check-config", action="store_true",
                   help="validate the configuration, print the result, exit (0 ok, 78 bad)")
    p.add_argument("--state-dir", type=Path, help="override [service] state_dir")
    p.add_argument("--log-level", choices=["debug", "info", "warning", "error"],
                   help="override [service] log_level")
    p.add_argument("--version", action="version", version=f"ravend-repeater {__version__}")
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        config = load_config(args.config, state_dir=args.state_dir, log_level=args.log_level)
        unconfigured = companion_unconfigured(config, "repeater", " (and the broker in [mqtt])")
        if unconfigured:
            raise ConfigError(unconfigured)
        try:
            import paho.mqtt.client  # noqa: F401
        except ImportError:
            raise ConfigError("python3-paho-mqtt is not installed"
                              " (apt install python3-paho-mqtt)") from None
        source = make_source(config)
    except ConfigError as exc:
        return refuse("ravend-repeater", exc)
    if args.check_config:
        print(f"ravend-repeater: configuration OK ({config.source}; reading {source.description})")
        return 0

    setup_logging(config.service.log_level)
    try:
        repeater = Repeater(config, source=source)
    except ConfigError as exc:
        logging.getLogger("ravend.repeater").error("%s", exc)
        return EX_CONFIG
    repeater.install_signals()
    return repeater.run()


if __name__ == "__main__":
    sys.exit(main())
