"""``ravend-mongo-ingest``: parses arguments, loads the config, runs ravend.mongo_ingest."""

from __future__ import annotations

import argparse
import logging
import sys

from ravend.cli import common
from ravend.config import Config
from ravend.mongo_ingest import MongoIngest, check, subscription
from ravend.mongo_store import MongoStore

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
    return common.parser("ravend-mongo-ingest", DESCRIPTION, EPILOG)


def _start(config: Config, store: MongoStore) -> int:
    # pymongo 4 logs every command and connection at debug level: keep the journal readable.
    logging.getLogger("pymongo").setLevel(max(logging.INFO, logging.getLogger().level))
    return common.run_daemon("ravend.mongo_ingest", lambda: MongoIngest(config, store=store))


PROGRAM = common.Program(
    "ravend-mongo-ingest", check=check, start=_start,
    ok=lambda config, store: (f"{subscription(config)} on {config.mqtt.host}:{config.mqtt.port}"
                              f" → {store.description}"),
    companion=("mongo", " (and uri or uri_file)"))


def main(argv: list[str] | None = None) -> int:
    return common.run(PROGRAM, parser().parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
