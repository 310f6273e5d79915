"""``ravend-repeater``: parses arguments, loads the config, runs ravend.repeater.Repeater."""

from __future__ import annotations

import argparse
import sys

from ravend.cli import common
from ravend.config import Config
from ravend.repeater import Repeater
from ravend.repeater_sources import Source, make_source
from ravend.runtime.packages import require

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
    return common.parser("ravend-repeater", DESCRIPTION, EPILOG, overrides=common.add_state_dir)


def _check(config: Config) -> Source:
    require("paho.mqtt.client", "python3-paho-mqtt")
    return make_source(config)


def _start(config: Config, source: Source) -> int:
    return common.run_daemon("ravend.repeater", lambda: Repeater(config, source=source))


PROGRAM = common.Program(
    "ravend-repeater", check=_check, start=_start,
    ok=lambda config, source: f"reading {source.description}",
    companion=("repeater", " (and the broker in [mqtt])"))


def main(argv: list[str] | None = None) -> int:
    return common.run(PROGRAM, parser().parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
