"""``ravend-mongo-ingest``: parses arguments, loads the config, runs ravend.mongo_ingest."""

from __future__ import annotations

import argparse
import logging
import sys

from ravend import __version__
from ravend.config import DEFAULT_PATH, EX_CONFIG, ConfigError, companion_unconfigured
from ravend.mongo_ingest import MongoIngest, check, subscription
from ravend.runtime.config_loader import load_config, refuse
from ravend.runtime.logs import setup_logging

DESCRIPTION = """\
Store the readings that ravend publishes to MQTT in a MongoDB collection, each exactly once.

It subscribes (QoS 1, persistent session) to the broker of the [mqtt] section, writes the
readings in batches to the collection of the [mongo] section, which has a unique index on
(meter_mac, kind, key_time), and acknowledges a message only once it is stored (with
paho-mqtt 2.x; paho-mqtt 1.6 acknowledges on receipt, see the man page). Several instances
with the same [mongo] share_group split the messages between them.
"""

EPILOG = """\
examples:
  ravend-mongo-ingest --check-config          validate the configuration and exit
  ravend-mongo-ingest --config ./ravend.conf --log-level debug
exit status: 0 stopped by SIGTERM/SIGINT, 78 configuration error (also: [mongo] enabled
is not yes), 1 other failure.
See ravend-mongo-ingest(8) and ravend.conf(5).
"""


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="ravend-mongo-ingest", description=DESCRIPTION,
                                epilog=EPILOG,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("-c", "--config", default=DEFAULT_PATH, metavar="PATH",
                   help=f"configuration file (default {DEFAULT_PATH})")
    p.add_argument("--check-config", action="store_true",
                   help="validate the configuration, print the result, exit (0 ok, 78 bad)")
    p.add_argument("--log-level", choices=["debug", "info", "warning", "error"],
                   help="override [service] log_level")
    p.add_argument("--version", action="version", version=f"ravend-mongo-ingest {__version__}")
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        config = load_config(args.config, log_level=args.log_level)
        unconfigured = companion_unconfigured(config, "mongo", " (and uri or uri_file)")
        if unconfigured:
            raise ConfigError(unconfigured)
        store = check(config)
    except ConfigError as exc:
        return refuse("ravend-mongo-ingest", exc)
    if args.check_config:
        print(f"ravend-mongo-ingest: configuration OK ({config.source}; {subscription(config)}"
              f" on {config.mqtt.host}:{config.mqtt.port} → {store.description})")
        return 0

    setup_logging(config.service.log_level)
    # pymongo 4 logs every command and connection at debug level: keep the journal readable.
    logging.getLogger("pymongo").setLevel(max(logging.INFO, logging.getLogger().level))
    try:
        ingest = MongoIngest(config, store=store)
    except ConfigError as exc:
        logging.getLogger("ravend.mongo_ingest").error("%s", exc)
        return EX_CONFIG
    ingest.install_signals()
    return ingest.run()


if __name__ == "__main__":
    sys.exit(main())
