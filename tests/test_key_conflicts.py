"""Same key, another value: every store keeps the FIRST value of a reading's key.

A meter whose clock is frozen sends demand after demand with one TimeStamp: the stores used to
disagree (SQLite and MariaDB kept the first silently, the retained MQTT message held the last).
The rule (ravend.sinks.conflicts): the first value is kept everywhere, a later different value
is neither stored nor published, counted (ravend_readings_conflicting_total{sink}) and logged
once per burst; the same value again (a replay) is a silent duplicate.
"""

from __future__ import annotations

import logging
import os
import re
import sqlite3
import time
from pathlib import Path

import pymongo
import pytest

from ravend.config import MongoConfig
from ravend.mongo_store import MongoStore, document
from ravend.mqtt_client import Message
from ravend.protocol.model import METER_EPOCH_OFFSET
from ravend.simulator import MeterSimulator
from ravend.sinks.mqtt import first_values
from ravend.sinks.mqtt_payload import parse_reading, reading_payload, reading_topic
from ravend.sinks.sqlite import SqliteSink
from tests.helpers import servers
from tests.helpers.metrics import try_scrape
from tests.helpers.mqtt import Subscriber
from tests.helpers.mysql import conf_keys, query
from tests.helpers.process import IngestProcess, RavendProcess, stored_rows, write_config
from tests.helpers.readings import demand, fragment
from tests.helpers.wait import wait_for
from tests.test_mongo_ingest import new_db, publisher, write_ingest_config

METER, DEVICE = "0x0013500300aabbcc", "0xd8d5b90000001234"
CONFLICT_LINE = "refused the other value"


def test_sqlite_keeps_the_first_value_and_counts_each_other_one(tmp_path: Path,
                                                                 caplog) -> None:
    sink = SqliteSink(tmp_path / "ravend.db")
    sink.open()
    with caplog.at_level(logging.INFO, logger="ravend.sinks"):
        sink.write([demand(0, raw=1000)], [])
        sink.write([demand(0, raw=2000), demand(0, raw=1000), demand(0, raw=3000)], [])
        sink.write([demand(0, raw=1000), demand(1)], [])  # a replay: silent, ends the burst
        sink.write([demand(1, raw=5)], [])
    sink.close()
    rows = stored_rows(tmp_path / "ravend.db")
    assert sorted(r[3] for r in rows) == [1000, 1001]
    assert sink.conflicts.count == 3
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 2, warnings  # one per burst
    assert "raw=1000" in warnings[0] and "raw=2000" in warnings[0]


def test_mqtt_publishes_the_first_value_of_a_key_and_replays_normally() -> None:
    published = {}
    send, conflicts, seen = first_values([demand(0, raw=1), demand(0, raw=2), demand(0, raw=1)],
                                         published)
    assert [r.raw for r in send] == [1, 1]  # the same value again is a harmless duplicate
    assert [(c[1][0], c[2][0]) for c in conflicts] == [(1, 2)]
    send, conflicts, _ = first_values([demand(0, raw=3), demand(1, raw=4)], seen)
    assert [r.raw for r in send] == [4] and len(conflicts) == 1
    # A key that comes back after another key of its meter and kind is still known.
    send, conflicts, _ = first_values([demand(2, raw=5), demand(0, raw=6)], seen)
    assert [r.raw for r in send] == [5] and [(c[1][0], c[2][0]) for c in conflicts] == [(1, 6)]


def test_mongo_store_tells_a_conflict_from_a_duplicate(mongo_server) -> None:
    db = new_db()
    store = MongoStore(MongoConfig(database=db), uri=mongo_server.uri)
    assert store.write([document(demand(0, raw=1000))]).inserted == 1
    outcome = store.write([document(demand(0, raw=1000)), document(demand(0, raw=2000)),
                           document(demand(1))])
    assert (outcome.inserted, outcome.duplicates) == (1, 1)
    assert [(kept[0], refused[0]) for _, kept, refused in outcome.conflicts] == [(1000, 2000)]
    # Keys a day apart: looked up one by one, the same answer.
    assert store.write([document(demand(86_400, raw=7))]).inserted == 1
    apart = store.write([document(demand(0, raw=3)), document(demand(86_400, raw=7)),
                         document(demand(86_400, raw=8))])
    store.close()
    assert (apart.inserted, apart.duplicates) == (0, 1)
    assert sorted((kept[0], refused[0]) for _, kept, refused in apart.conflicts) == [
        (7, 8), (1000, 3)]
    doc = pymongo.MongoClient(mongo_server.uri)[db]["readings"].find_one({"raw": 2000})
    assert doc is None


def conflicting(samples: dict | None, sink: str) -> float:
    if samples is None:
        return -1
    return samples.get(("ravend_readings_conflicting_total", frozenset({("sink", sink)})), -1)


def test_a_frozen_meter_clock_keeps_the_first_value_in_every_store(
        tmp_path: Path, mariadb_server, make_mosquitto, mongo_server) -> None:
    broker = make_mosquitto(extra_config="max_queued_messages 0")
    link = str(tmp_path / "stick")
    state = tmp_path / "state"
    sqlite_db = state / "ravend.db"
    my_db = mariadb_server.new_database("conflicts")
    mongo_db = new_db()
    port = servers.free_port()
    sim = MeterSimulator("emu2", link=link, seed=5, pushes=False, reply_delay=0.01).start()
    config = write_config(tmp_path / "ravend.conf", state, link,
                          mysql=conf_keys(mariadb_server, my_db),
                          mqtt={"enabled": "yes", "host": broker.host, "port": str(broker.port),
                                "client_id": "ravend-conflicts", "publish_timeout": "5s"},
                          metrics={"listen": f"127.0.0.1:{port}"})
    ingest = IngestProcess(write_ingest_config(tmp_path / "ingest.conf", broker,
                                               mongo_server.uri, mongo_db),
                           tmp_path / "ingest.log")
    ravend = RavendProcess(config, tmp_path / "ravend.log")
    url = f"http://127.0.0.1:{port}/metrics"
    frozen = int(time.time()) - METER_EPOCH_OFFSET - 60  # wire TimeStamps: since 2000
    later = frozen + 8
    sinks = ("sqlite", "mysql", "mqtt")
    coll = pymongo.MongoClient(mongo_server.uri, serverSelectionTimeoutMS=10_000)[mongo_db][
        "readings"]

    def all_conflicts(n: int) -> bool:
        samples = try_scrape(url)
        return all(conflicting(samples, s) == n for s in sinks)

    try:
        ingest.wait_subscribed()
        assert wait_for(lambda: "device opened" in ravend.log(), 20), ravend.log()
        # Burst 1: the first value, then three others for the same TimeStamp.
        for raw in (1000, 2000, 3000, 4000):
            sim.write_raw(fragment(METER, DEVICE, frozen, raw))
        assert wait_for(lambda: all_conflicts(3), 20), (ravend.log(), try_scrape(url))
        # A reading with another key: no conflict, the burst ends. Then burst 2.
        sim.write_raw(fragment(METER, DEVICE, later, 500))
        assert wait_for(lambda: coll.count_documents({"meter_mac": METER}) == 2, 20), ingest.log()
        for raw in (500, 600, 700):  # the first is a duplicate: silent
            sim.write_raw(fragment(METER, DEVICE, later, raw))
        assert wait_for(lambda: all_conflicts(5), 20), (ravend.log(), try_scrape(url))
        # Another publisher's different value for a stored key reaches the ingest itself.
        other = publisher(broker, "other-publisher")
        refused = demand(0, raw=1, meter=METER, meter_time=frozen + METER_EPOCH_OFFSET)
        other.publish_all([Message(reading_topic("ravend", refused), reading_payload(refused))],
                          5)
        other.close()
        assert wait_for(lambda: CONFLICT_LINE in ingest.log(), 20), ingest.log()
        sub = Subscriber(broker.host, broker.port, [f"ravend/{METER}/demand"],
                         client_id="late-subscriber").start()
        assert sub.wait_for(lambda: sub.snapshot(), 10)
        retained = sub.snapshot()[0]
        sub.stop()
    finally:
        code, _ = ravend.stop()
        sim.stop()
        assert ingest.stop().code == 0
    log = ravend.log()
    assert code == 0 and "Traceback" not in log, log
    t1, t2 = frozen + METER_EPOCH_OFFSET, later + METER_EPOCH_OFFSET
    first = {t1: 1000, t2: 500}
    # (the simulated stick's own meter answers ravend's start-up queries: not ours)
    assert {r[2]: r[3] for r in stored_rows(sqlite_db) if r[0] == METER} == first
    assert dict(query(mariadb_server, my_db, "SELECT meter_time, raw FROM readings"
                      f" WHERE meter_mac = '{METER}'")) == first
    assert {d["raw"] for d in coll.find({"meter_mac": METER})} == {1000, 500}
    assert retained.retain and parse_reading(retained.payload).raw == 500
    for sink in sinks:  # once per burst, in each store
        assert log.count(f"{sink}: reading {METER} demand") == 2, (sink, log)
        # ... and the stop line owns up to them
        assert re.search(rf"stored .*{sink}=\d+ \(5 not kept \(a key seen with another value\)",
                         log), log
    assert ingest.log().count(CONFLICT_LINE) == 1, ingest.log()
    assert "1 refused as conflicting" in ingest.log()



def demand_times(db: Path) -> set[int]:
    return {r[2] for r in stored_rows(db) if r[0] == METER and r[1] == "demand"}


@pytest.mark.parametrize("fault", ["deleted", "replaced"])
def test_a_store_file_deleted_or_replaced_while_running_is_said_and_reopened(
        tmp_path: Path, fault: str) -> None:
    """Writes used to go on into the unlinked file: every later reading was lost. Replaced:
    a restore of a backup taken before; the readings after it go into the restored file."""
    link = str(tmp_path / "stick")
    db = tmp_path / "state" / "ravend.db"
    sim = MeterSimulator("emu2", link=link, seed=7, pushes=False, reply_delay=0.01).start()
    ravend = RavendProcess(write_config(tmp_path / "ravend.conf", tmp_path / "state", link),
                           tmp_path / "ravend.log")
    start = int(time.time()) - METER_EPOCH_OFFSET - 600
    before = {start + i for i in range(10)}
    after = {start + 100 + i for i in range(10)}
    try:
        assert wait_for(lambda: "device opened" in ravend.log(), 20), ravend.log()
        for stamp in sorted(before):
            sim.write_raw(fragment(METER, DEVICE, stamp, 100))
        want_before = {t + METER_EPOCH_OFFSET for t in before}
        assert wait_for(lambda: demand_times(db) == want_before, 20), ravend.log()
        if fault == "deleted":
            db.unlink()
        else:
            restored = tmp_path / "backup.db"
            with sqlite3.connect(db) as live, sqlite3.connect(restored) as backup:
                live.backup(backup)
            os.replace(restored, db)
        for stamp in sorted(after):
            sim.write_raw(fragment(METER, DEVICE, stamp, 200))
        want_after = {t + METER_EPOCH_OFFSET for t in after}
        if fault == "replaced":
            want_after |= want_before
        assert wait_for(lambda: demand_times(db) == want_after, 20), ravend.log()
    finally:
        code, _ = ravend.stop()
        sim.stop()
    log = ravend.log()
    assert code == 0 and "Traceback" not in log, log
    assert demand_times(db) == want_after  # all of them, in the new file, after the stop too
    assert log.count(f"store file {db} was {fault}") == 1, log
    assert log.count("WARNING sqlite:") == 1, log
