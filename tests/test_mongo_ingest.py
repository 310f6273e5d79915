"""ravend-mongo-ingest against a real SecantusDB and a private Mosquitto.

Documents and the idempotent write on the server itself; the service in-process (skipped and
rejected messages, acknowledgements, SIGTERM's flush) and as the real process (exit 78 on a bad
configuration, a persistent session across a stop, kill -9 in a flood); and the acceptance
run: the simulator → ravend → Mosquitto → two ingests in one shared-subscription group →
MongoDB, with one ingest killed and MongoDB stopped on the way: every reading exactly once.
"""

from __future__ import annotations

import datetime as dt
import itertools
import os
import subprocess
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pymongo
import pytest

from ravend.config import MongoConfig, load
from ravend.mongo_ingest import MongoIngest, subscription
from ravend.mongo_store import (
    INDEX_NAME,
    MongoStore,
    StoreUnavailable,
    decimal_of,
    document,
    reading_of,
)
from ravend.mqtt_client import MANUAL_ACK, Connection, Endpoint, Message
from ravend.protocol.model import Kind, Reading, scale
from ravend.pymongo_quiet import quiet_pymongo
from ravend.simulator import MeterSimulator
from ravend.sinks.mqtt_payload import reading_payload, reading_topic
from tests.helpers.config import write
from tests.helpers.process import (
    FAST_DEVICE,
    IngestProcess,
    RavendProcess,
    run_program,
    write_config,
)
from tests.helpers.procfs import thread_wakeups, wakeups
from tests.helpers.readings import DEVICE, METER, T0
from tests.helpers.wait import wait_for

#: The broker keeps every message for an ingest that is away (Mosquitto's default is 1,000).
BROKER_CONFIG = "max_queued_messages 0"
_names = itertools.count(1)


def reading(i: int, kind: Kind = Kind.DEMAND, *, raw: int | None = None,
            meter_time: int | None = -1, meter: str = METER) -> Reading:
    value = (i * 7919) % 9000 - 3000 if raw is None else raw
    divisor = 100 if kind is Kind.PRICE else 1000
    unit = {Kind.DEMAND: "kW", Kind.PRICE: "USD/kWh"}.get(kind, "kWh")
    when = T0 + i if meter_time == -1 else meter_time
    return Reading(meter, kind, when, T0 + i + 0.512, value, 1, divisor,
                   scale(value, 1, divisor), unit, DEVICE)


def message(r: Reading, prefix: str = "ravend") -> Message:
    return Message(reading_topic(prefix, r), reading_payload(r))


def new_db() -> str:
    return f"ingest_test_{os.getpid()}_{next(_names)}"


def mongo_client(server: Any) -> pymongo.MongoClient:
    return pymongo.MongoClient(server.uri, serverSelectionTimeoutMS=10_000, tz_aware=True)


def write_ingest_config(path: Path, broker: Any, uri: str, database: str,
                        **mongo: str) -> Path:
    keys = {"uri": uri, "database": database, "client_id": "test-ingest", **mongo}
    text = ("[service]\nlog_level = debug\n[device]\n"
            + "".join(f"{k} = {FAST_DEVICE[k]}\n" for k in ("reconnect_min", "reconnect_max"))
            + f"[mqtt]\nhost = {broker.host}\nport = {broker.port}\npublish_timeout = 5s\n"
            + "[mongo]\n" + "".join(f"{k} = {v}\n" for k, v in keys.items()))
    path.write_text(text)
    return path


def publisher(broker: Any, client_id: str = "test-publisher") -> Connection:
    conn = Connection(Endpoint(host=broker.host, port=broker.port, client_id=client_id))
    conn.connect(5)
    return conn


def stored_keys(coll: Any) -> list[tuple[str, str, int]]:
    return [reading_of(d) for d in coll.find({}, {"_id": 0})]


@dataclass
class Flood:
    """An ingest process subscribed to ``broker`` while a thread publishes ``n`` readings."""

    db: str
    config: Path
    ingest: IngestProcess
    coll: Any
    pub: Connection
    sender: threading.Thread
    n: int


def start_flood(tmp_path: Path, broker: Any, mongo: Any, n: int, batch_size: str) -> Flood:
    """Start the ingest, wait until it subscribed, then start publishing readings 0..n-1."""
    db = new_db()
    config = write_ingest_config(tmp_path / "ravend.conf", broker, mongo.uri, db,
                                 batch_size=batch_size)
    ingest = IngestProcess(config, tmp_path / "ingest.log")
    ingest.wait_subscribed()
    coll = mongo_client(mongo)[db]["readings"]
    pub = publisher(broker)
    sender = threading.Thread(target=pub.publish_all,
                              args=([message(reading(i)) for i in range(n)], 60))
    sender.start()
    return Flood(db, config, ingest, coll, pub, sender, n)


def assert_each_stored_once(coll: Any, n: int) -> None:
    keys = stored_keys(coll)
    assert len(keys) == len(set(keys)) == n


# --- documents and the store ----------------------------------------------------------------------


def test_document_holds_the_reading_with_bson_types() -> None:
    from bson.decimal128 import Decimal128
    from bson.int64 import Int64

    doc = document(reading(3, raw=-1482))
    assert doc == {
        "meter_mac": METER, "device_mac": DEVICE, "kind": "demand",
        "key_time": dt.datetime(2023, 11, 14, 22, 13, 23, tzinfo=dt.UTC),
        "meter_time": dt.datetime(2023, 11, 14, 22, 13, 23, tzinfo=dt.UTC),
        "received_at": dt.datetime(2023, 11, 14, 22, 13, 23, 512000, tzinfo=dt.UTC),
        "value": -1.482, "value_exact": Decimal128("-1.482"), "unit": "kW",
        "raw": Int64(-1482), "multiplier": 1, "divisor": 1000, "scale": Decimal128("1"),
        "clock_flag": None,
    }
    assert isinstance(doc["raw"], Int64)


def test_host_timed_reading_is_keyed_by_its_receive_second() -> None:
    doc = document(reading(7, meter_time=None))
    assert doc["meter_time"] is None
    assert doc["clock_flag"] == "unset"
    assert doc["key_time"] == dt.datetime.fromtimestamp(T0 + 7, dt.UTC)
    assert doc["received_at"] == dt.datetime.fromtimestamp(T0 + 7.512, dt.UTC)


def test_value_that_bson_cannot_hold_is_refused() -> None:
    wide = reading(1, Kind.SUMMATION_DELIVERED, raw=2**63 - 1)
    assert document(wide)["raw"] == 2**63 - 1
    with pytest.raises(ValueError, match=r"raw: .* 64-bit"):
        document(reading(1, Kind.SUMMATION_DELIVERED, raw=2**64))


def test_store_round_trip_keeps_every_field(mongo_server) -> None:
    db = new_db()
    store = MongoStore(MongoConfig(database=db), uri=mongo_server.uri)
    readings = [reading(0), reading(1, Kind.PRICE, raw=1234), reading(2, meter_time=None),
                reading(3, Kind.SUMMATION_RECEIVED, raw=-(2**62))]
    outcome = store.write([document(r) for r in readings])
    store.close()
    assert outcome.inserted == 4
    coll = mongo_client(mongo_server)[db]["readings"]
    got = {reading_of(d): d for d in coll.find()}
    assert set(got) == {r.key for r in readings}
    for r in readings:
        d = got[r.key]
        assert decimal_of(d["value_exact"]) == r.value
        assert (d["raw"], d["multiplier"], d["divisor"], d["unit"]) == (
            r.raw, r.multiplier, r.divisor, r.unit)
        assert d["received_at"].timestamp() == pytest.approx(r.received_at, abs=1e-6)
        assert (d["meter_time"] is None) == (r.meter_time is None)
    index = coll.index_information()[INDEX_NAME]
    assert index["unique"] and [k for k, _ in index["key"]] == ["meter_mac", "kind", "key_time"]


def test_store_writes_each_reading_once_whatever_is_replayed(mongo_server) -> None:
    db = new_db()
    store = MongoStore(MongoConfig(database=db), uri=mongo_server.uri)
    first = [document(reading(i)) for i in range(100)]
    assert store.write(first).inserted == 100
    # The same dicts again (they carry their _id now: a batch retried after a failure) ...
    again = store.write(first)
    assert (again.inserted, again.duplicates) == (0, 100)
    # ... fresh documents for the same readings (a redelivery), overlapping new ones ...
    mixed = store.write([document(reading(i)) for i in range(50, 150)])
    assert (mixed.inserted, mixed.duplicates) == (50, 50)
    # ... and a host-timed reading, twice in one batch (the stick sent it twice).
    twice = store.write([document(reading(500, meter_time=None)) for _ in range(2)])
    assert (twice.inserted, twice.duplicates) == (1, 1)
    store.close()
    assert_each_stored_once(mongo_client(mongo_server)[db]["readings"], 151)


def test_store_down_raises_unavailable_then_recovers(make_mongo) -> None:
    server = make_mongo()
    store = MongoStore(MongoConfig(), uri=server.uri + "?serverSelectionTimeoutMS=500")
    assert store.write([document(reading(0))]).inserted == 1
    server.stop()
    started = time.monotonic()
    with pytest.raises(StoreUnavailable):
        store.write([document(reading(1))])
    assert time.monotonic() - started < 5
    assert not store.is_open
    server.start()
    assert store.write([document(reading(1)), document(reading(0))]).inserted == 1


# --- configuration --------------------------------------------------------------------------------


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return run_program("ravend.cli.mongo_ingest", *args)


def test_subscription_defaults_to_the_reading_topics_and_can_be_shared(tmp_path: Path) -> None:
    conf = tmp_path / "ravend.conf"
    conf.write_text("[mqtt]\ntopic_prefix = home/meter\n")
    assert subscription(load(conf)) == "home/meter/+/+"
    conf.write_text("[mqtt]\ntopic_prefix = home/meter\n[mongo]\nshare_group = db\n"
                    "topic_filter = home/meter/+/demand\n")
    assert subscription(load(conf)) == "$share/db/home/meter/+/demand"


@pytest.mark.parametrize(("text", "expected"), [
    ("uri = http://db/", "uri = 'http://db/': expected a MongoDB URI"),
    ("uri = mongodb://db/?w=banana&journal=maybe", "[mongo] uri mongodb://db/:"),
    ("topic_filter = ravend/#/x", "expected a topic filter"),
    ("topic_filter = $share/g/ravend/+/+", "expected a topic filter"),
    ("share_group = a/b", "expected a share group name"),
    ("database = my.db", "expected a database name"),
    ("batch_size = 0", "expected a value from 1 to 10000"),
    ("client_id = a b", "expected a client id"),
])
def test_bad_mongo_settings_exit_78_in_one_line(tmp_path: Path, text: str, expected: str) -> None:
    conf = write(tmp_path, f"[mongo]\n{text}\n")
    done = run_cli("--config", str(conf), "--check-config")
    assert done.returncode == 78, done
    assert done.stderr.count("\n") == 1 and expected in done.stderr, done.stderr
    assert "Traceback" not in done.stderr


def test_uri_file_readable_by_others_is_refused_and_a_private_one_used(tmp_path: Path,
                                                                     mongo_server) -> None:
    secret = tmp_path / "mongo.uri"
    secret.write_text(mongo_server.uri + "\n")
    secret.chmod(0o640)
    conf = tmp_path / "ravend.conf"
    conf.write_text(f"[mongo]\nuri_file = {secret}\n")
    done = run_cli("--config", str(conf), "--check-config")
    assert done.returncode == 78 and "accessible by group or others" in done.stderr, done
    secret.chmod(0o600)
    done = run_cli("--config", str(conf), "--check-config")
    assert done.returncode == 0, done
    assert "configuration OK" in done.stdout and "ravend/+/+" in done.stdout
    conf.write_text(f"[mongo]\nuri = mongodb://other/\nuri_file = {secret}\n")
    done = run_cli("--config", str(conf), "--check-config")
    assert done.returncode == 78 and "not both" in done.stderr, done


# --- the service, in-process -----------------------------------------------------------------


class Running:
    """MongoIngest.run in a thread."""

    def __init__(self, config: Path) -> None:
        self.ingest = MongoIngest(load(config))
        self.code: int | None = None
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        self.code = self.ingest.run()

    def stop(self) -> int | None:
        self.ingest.request_stop()
        self.thread.join(20)
        assert not self.thread.is_alive(), "the ingest did not stop"
        return self.code


def test_other_topics_are_skipped_and_bad_readings_rejected_and_all_acknowledged(
        tmp_path: Path, mosquitto_server, mongo_server, caplog) -> None:
    db = new_db()
    config = write_ingest_config(tmp_path / "ravend.conf", mosquitto_server, mongo_server.uri,
                                 db, topic_filter="ravend/#")
    run = Running(config)
    pub = publisher(mosquitto_server)
    try:
        assert run.ingest.subscribed.wait(10)
        good = [reading(i) for i in range(20)]
        wrong = reading(99)
        messages = [message(r) for r in good] + [
            Message("ravend/ravend/ravend-pi/status", b"online"),
            Message(f"ravend/{DEVICE}/info/DeviceInfo", b'{"v": 1}'),
            Message(f"ravend/{METER}/demand", b"not json"),
            Message(f"ravend/{METER}/demand", b""),  # a cleared retained message
            Message(f"ravend/{METER}/price", reading_payload(wrong)),  # topic says price
            Message(f"ravend/{METER}/demand", reading_payload(good[0])),  # a repeat
        ]
        pub.publish_all(messages, 10)
        coll = mongo_client(mongo_server)[db]["readings"]
        assert wait_for(lambda: run.ingest.stats.skipped + run.ingest.stats.rejected >= 5
                        and run.ingest.stats.duplicates >= 1, 10), run.ingest.stats
    finally:
        code = run.stop()
        pub.close()
    assert code == 0
    assert sorted(stored_keys(coll)) == sorted(r.key for r in good)
    stats = run.ingest.stats
    assert (stats.stored, stats.duplicates, stats.rejected, stats.skipped) == (20, 1, 2, 3)
    rejected = [r.message for r in caplog.records if "not a reading" in r.message]
    assert len(rejected) == 1, rejected  # one line a minute, not one per message
    # Everything was acknowledged: the next start gets nothing again.
    again = Running(config)
    try:
        assert again.ingest.subscribed.wait(10)
        time.sleep(1.0)
    finally:
        again.stop()
    assert (again.ingest.stats.stored, again.ingest.stats.duplicates,
            again.ingest.stats.rejected) == (0, 0, 0)


def test_unacknowledged_message_is_delivered_again(mosquitto_server) -> None:
    """The acknowledgement is held back until ack() on this paho too (1.6 or 2.x)."""
    assert MANUAL_ACK
    got: list[Any] = []
    endpoint = Endpoint(host=mosquitto_server.host, port=mosquitto_server.port, client_id="held")

    def connect() -> Connection:
        conn = Connection(endpoint, clean_session=False, manual_ack=True,
                          on_message=got.append)
        conn.connect(5)
        conn.subscribe([("t/+", 1)], 5)
        return conn

    connect().close()
    pub = publisher(mosquitto_server)
    pub.publish_all([Message("t/a", b"1"), Message("t/b", b"2")], 5)
    conn = connect()
    assert wait_for(lambda: len(got) == 2, 5)
    conn.ack(got[0].mid, got[0].qos)  # only the first
    time.sleep(0.3)
    conn.close()
    got.clear()
    conn = connect()
    assert wait_for(lambda: len(got) >= 1, 5)
    time.sleep(0.3)
    conn.close()
    pub.close()
    assert [m.payload for m in got] == [b"2"]


def test_pymongo_executors_block_between_runs_and_stop_at_once() -> None:
    from pymongo import periodic_executor

    assert quiet_pymongo()
    runs: list[float] = []
    executor = periodic_executor.PeriodicExecutor(
        interval=30.0, min_interval=0.1, target=lambda: runs.append(time.monotonic()) or True,
        name="test_quiet_executor")
    executor.open()
    try:
        assert wait_for(lambda: len(runs) == 1, 5)
        thread = next(t for t in threading.enumerate() if t.name == "test_quiet_executor")
        before = thread_wakeups(thread.native_id)
        time.sleep(1.0)
        after = thread_wakeups(thread.native_id)
        assert after - before <= 1 and len(runs) == 1  # pymongo's own would wake twice a second
        executor.wake()  # an early check, as pymongo asks after an error
        assert wait_for(lambda: len(runs) == 2, 2)
        assert runs[1] - runs[0] >= 0.1  # never sooner than min_interval
    finally:
        started = time.monotonic()
        executor.close()
        executor.join(5)
    assert time.monotonic() - started < 1.0
    assert not thread.is_alive()


def test_idle_ingest_blocks_until_a_message_comes(tmp_path: Path, make_mosquitto,
                                                  mongo_server) -> None:
    db = new_db()
    broker = make_mosquitto(extra_config=BROKER_CONFIG)
    config = write_ingest_config(tmp_path / "ravend.conf", broker, mongo_server.uri, db)
    ingest = IngestProcess(config, tmp_path / "ingest.log")
    coll = mongo_client(mongo_server)[db]["readings"]
    pub = publisher(broker)
    try:
        ingest.wait_subscribed()
        pub.publish_all([message(reading(0))], 5)
        assert wait_for(lambda: coll.count_documents({}) == 1, 10), ingest.log()
        time.sleep(1.0)
        before = wakeups(ingest.proc.pid)
        time.sleep(3.0)
        idle_wakeups = wakeups(ingest.proc.pid) - before
        pub.publish_all([message(reading(1))], 5)
        started = time.monotonic()
        assert wait_for(lambda: coll.count_documents({}) == 2, 5), ingest.log()
        latency = time.monotonic() - started
        started = time.monotonic()
    finally:
        assert ingest.stop().code == 0, ingest.log()
        pub.close()
    assert time.monotonic() - started < 3
    # pymongo's monitors (every 5 to 10 s), paho's keepalive timer (15 s); nothing else.
    assert idle_wakeups <= 4, f"{idle_wakeups} wake-ups in 3 s idle"
    assert latency < 1.0, f"a message took {latency:.2f} s"


def test_sigterm_stores_and_acknowledges_what_was_received_then_exits_0(
        tmp_path: Path, make_mosquitto, mongo_server) -> None:
    broker = make_mosquitto(extra_config=BROKER_CONFIG)
    flood = start_flood(tmp_path, broker, mongo_server, 2000, batch_size="50")
    ingest, coll, pub, n = flood.ingest, flood.coll, flood.pub, flood.n
    assert wait_for(lambda: coll.count_documents({}) >= 200, 30), ingest.log()
    started = time.monotonic()
    assert ingest.stop().code == 0, ingest.log()  # in the middle of the stream
    assert time.monotonic() - started < 5
    flood.sender.join(60)
    first = ingest.log()
    assert "Traceback" not in first and "not stored at stop" not in first, first
    # What it received before SIGTERM is stored and acknowledged: the next start gets only
    # the rest, none of it again.
    ingest = IngestProcess(flood.config, tmp_path / "ingest2.log")
    try:
        assert wait_for(lambda: coll.count_documents({}) >= n, 30), ingest.log()
        time.sleep(0.5)
    finally:
        assert ingest.stop().code == 0
        pub.close()
    assert " 0 already stored" in ingest.log(), ingest.log()
    assert_each_stored_once(coll, n)


def test_readings_published_while_stopped_are_stored_when_it_returns(
        tmp_path: Path, make_mosquitto, mongo_server) -> None:
    db = new_db()
    broker = make_mosquitto(extra_config=BROKER_CONFIG)
    config = write_ingest_config(tmp_path / "ravend.conf", broker, mongo_server.uri, db)
    ingest = IngestProcess(config, tmp_path / "ingest.log")
    ingest.wait_subscribed()
    assert ingest.stop().code == 0
    pub = publisher(broker)
    pub.publish_all([message(reading(i)) for i in range(1500)], 20)
    ingest = IngestProcess(config, tmp_path / "ingest.log")
    coll = mongo_client(mongo_server)[db]["readings"]
    try:
        assert wait_for(lambda: coll.count_documents({}) >= 1500, 30), ingest.log()
    finally:
        assert ingest.stop().code == 0
        pub.close()
    assert "session resumed" in ingest.log()
    assert sorted(stored_keys(coll)) == sorted(reading(i).key for i in range(1500))


def test_kill_9_in_a_flood_loses_nothing(tmp_path: Path, make_mosquitto, mongo_server) -> None:
    broker = make_mosquitto(extra_config=BROKER_CONFIG)
    flood = start_flood(tmp_path, broker, mongo_server, 3000, batch_size="100")
    ingest, coll, pub, n = flood.ingest, flood.coll, flood.pub, flood.n
    try:
        assert wait_for(lambda: coll.count_documents({}) >= 300, 30), ingest.log()
        ingest.kill()  # in the middle of the flood: batches received, being written, acked
        flood.sender.join(60)
        ingest = IngestProcess(flood.config, tmp_path / "ingest.log")
        assert wait_for(lambda: coll.count_documents({}) >= n, 30), (
            coll.count_documents({}), ingest.log())
        time.sleep(0.5)
    finally:
        assert ingest.stop().code == 0
        pub.close()
    assert_each_stored_once(coll, n)


def test_mongodb_kill_9_mid_stream_loses_nothing(tmp_path: Path, make_mosquitto,
                                                 make_mongo) -> None:
    """A message is acknowledged only once MongoDB acknowledged its batch as journaled: a
    MongoDB that syncs its commits (as mongod with j: true) and is killed loses nothing."""
    mongo = make_mongo(sync_on_commit=True)
    broker = make_mosquitto(extra_config=BROKER_CONFIG)
    flood = start_flood(tmp_path, broker, mongo, 1500, batch_size="50")
    ingest, coll, pub, n = flood.ingest, flood.coll, flood.pub, flood.n
    try:
        assert wait_for(lambda: coll.count_documents({}) >= 300, 30), ingest.log()
        mongo.kill()
        flood.sender.join(60)
        assert wait_for(lambda: "(retrying;" in ingest.log(), 20), ingest.log()
        mongo.start()
        coll = mongo_client(mongo)[flood.db]["readings"]
        assert wait_for(lambda: coll.count_documents({}) >= n, 60), ingest.log()
        time.sleep(0.5)
    finally:
        assert ingest.stop().code == 0
        pub.close()
    assert_each_stored_once(coll, n)


# --- acceptance: simulator → ravend → Mosquitto → two ingests → MongoDB ------------------


def _acceptance(tmp_path: Path, make_mosquitto, mongo: Any, n: int) -> None:
    db = new_db()
    broker = make_mosquitto(extra_config=BROKER_CONFIG)
    link = str(tmp_path / "stick")
    sim = MeterSimulator("emu2", link=link, seed=5, pushes=False, reply_delay=0.01).start()
    ravend_conf = write_config(tmp_path / "ravend.conf", tmp_path / "state", link, mqtt={
        "enabled": "yes", "host": broker.host, "port": str(broker.port),
        "client_id": "ravend-acceptance", "publish_timeout": "2s"})
    ingests = {}
    for name in ("a", "b"):
        conf = write_ingest_config(tmp_path / f"ingest-{name}.conf", broker, mongo.uri, db,
                                   share_group="store", client_id=f"ingest-{name}")
        ingests[name] = (conf, IngestProcess(conf, tmp_path / f"ingest-{name}.log"))
    for _, proc in ingests.values():
        proc.wait_subscribed()
    ravend = RavendProcess(ravend_conf, tmp_path / "ravend.log")
    coll = mongo_client(mongo)[db]["readings"]
    kinds = ("demand", "summation_delivered", "price")  # a summation is two readings

    def count() -> int:
        try:
            return coll.count_documents({})
        except pymongo.errors.PyMongoError:
            return -1

    try:
        assert wait_for(lambda: "device opened" in ravend.log(), 20), ravend.log()
        sim.send_readings(n // 4, kinds)
        assert wait_for(lambda: count() >= n // 10, 60), ravend.log()
        conf_a, proc_a = ingests["a"]
        proc_a.kill()  # SIGKILL mid-stream; its share waits in its session
        time.sleep(1.0)
        ingests["a"] = (conf_a, IngestProcess(conf_a, tmp_path / "ingest-a.log"))
        sim.send_readings(n // 4, kinds)
        assert wait_for(lambda: count() >= n * 3 // 10, 60)
        mongo.stop()  # mid-stream: both ingests hold their batches, the broker queues
        sim.send_readings(n // 4, kinds)
        assert wait_for(lambda: all("(retrying;" in proc.log() for _, proc in ingests.values()),
                        30), ravend.log()
        time.sleep(1.0)
        mongo.start()
        assert sim.drain(60)
        want = {(s.meter_mac, s.kind, s.meter_time) for s in sim.sent_readings()}
        assert len(want) == sim.sent_count() >= n, "the simulator repeated a reading"
        assert wait_for(lambda: count() >= len(want), 120 if n > 5000 else 60), (
            count(), len(want), ingests["a"][1].log()[-3000:], ingests["b"][1].log()[-3000:])
        time.sleep(1.0)  # nothing more may arrive
    finally:
        ravend.stop()
        sim.stop()
        codes = {name: proc.stop().code for name, (_, proc) in ingests.items()}
    assert codes == {"a": 0, "b": 0}, codes
    docs = list(coll.find({}, {"_id": 0}))
    keys = [reading_of(d) for d in docs]
    assert len(keys) == len(set(keys)), "a reading was stored twice"
    assert set(keys) == want
    sent = {(s.meter_mac, s.kind, s.meter_time): s for s in sim.sent_readings()}
    for d, key in zip(docs, keys, strict=True):
        s = sent[key]
        assert (d["raw"], d["multiplier"], d["divisor"]) == (s.raw, s.multiplier, s.divisor)
        assert decimal_of(d["value_exact"]) == scale(s.raw, s.multiplier, s.divisor)
        assert d["value"] == pytest.approx(float(scale(s.raw, s.multiplier, s.divisor)))
    logs = {name: proc.log() for name, (_, proc) in ingests.items()}
    for name, text in logs.items():
        assert "Traceback" not in text, text
        assert "(retrying;" in text and "storing again" in text, (name, text)
    stored = [int(line.split("stopped (")[1].split()[0])
              for text in logs.values() for line in text.splitlines() if "stopped (" in line]
    assert sum(1 for x in stored if x > 0) >= 2, logs  # both instances took a share


def test_acceptance_two_ingests_kill_9_and_mongodb_restart_store_each_reading_once(
        tmp_path: Path, make_mosquitto, mongo_server) -> None:
    """The issue's acceptance size, 20,000 readings (about 20 s here)."""
    _acceptance(tmp_path, make_mosquitto, mongo_server, 20_000)
