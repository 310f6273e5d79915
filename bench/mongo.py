#!/usr/bin/python3
"""MongoDB ingest figures: ravend-mongo-ingest's rate against the server's own insert_many.

    bench/mongo.py            50,000 readings
    bench/mongo.py --quick    9,000 readings

``bench_mongo_ingest(quick)`` starts a private Mosquitto and a private SecantusDB (from
tests/helpers/servers.py) and returns rows ``{"name", "value", "unit", "target", "ok"}``;
``target`` is a string such as ``">= 80"`` or None for a figure given for information.

Ingest: ``ravend-mongo-ingest`` runs once to make its persistent session, and stops. Then, in
each round, a fifth (quick: a third) of the readings is published to the broker at QoS 1
(demand, summation and price messages as ravend publishes them), which queues them for the
session, and the ingest starts and drains them into SecantusDB; its time is from the round's
first stored document to its last (process start-up excluded), found by index look-ups:
counting documents costs SecantusDB a scan.

Baseline: in the same rounds, just before each drain (so that both see the same load from
whatever else runs on the machine), the same documents (built from the same payloads) go into
a collection with the same unique index and write concern, one ``insert_many`` per batch of the
same size. The ingest must reach 80 % of that: MQTT, parsing and acknowledgements may cost at
most a fifth of the store's own speed. For comparison, the same documents as ``$setOnInsert``
upserts (the other idempotent write); and a replay of a round's messages must add nothing.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if __name__ == "__main__" and sys.path[0] == str(Path(__file__).resolve().parent):
    sys.path[0] = str(ROOT)  # run as a script: import bench/ and ravend as packages
for _p in (ROOT,):
    if str(_p) not in sys.path:
        sys.path.insert(0, str(_p))

from bench import scratchconf  # noqa: E402
from ravend.mongo_store import INDEX_KEYS, INDEX_NAME, document  # noqa: E402
from ravend.mqtt_client import PAHO_VERSION, Connection, Endpoint, Message  # noqa: E402
from ravend.protocol.model import Kind, Reading, scale  # noqa: E402
from ravend.sinks.mqtt_payload import parse_reading, reading_payload, reading_topic  # noqa: E402
from tests.helpers import servers  # noqa: E402  (private Mosquitto and SecantusDB)

RATIO_TARGET = 80.0  # % of insert_many
BATCH = 200  # [mongo] batch_size default
#: How often the bench looks for the last document (a look costs the server a little).
POLL = 0.05
METER = "0x00135003001234ab"
DEVICE = "0xd8d5b9000000054e"
#: Mosquitto as packaged, except that it keeps a whole round's backlog for the session (its
#: default queue is 1,000 messages per client; past it, QoS 1 messages are dropped).
BROKER_CONFIG = "max_queued_messages 0"


def _row(name: str, value: float | None, unit: str, op: str | None = None,
         bound: float | None = None) -> dict[str, Any]:
    if op is None or bound is None or value is None:
        return {"name": name, "value": None if value is None else round(value, 2),
                "unit": unit, "target": None, "ok": value is not None}
    ok = value >= bound if op == ">=" else value <= bound
    return {"name": name, "value": round(value, 2), "unit": unit,
            "target": f"{op} {bound:g}", "ok": ok}


def readings(n: int) -> list[Reading]:
    out = []
    for i in range(n):
        kind = (Kind.DEMAND, Kind.DEMAND, Kind.SUMMATION_DELIVERED, Kind.PRICE)[i % 4]
        raw = (i * 7919) % 9000 - 1000 if kind is Kind.DEMAND else 100_000 + i
        divisor = 100 if kind is Kind.PRICE else 1000
        unit = {Kind.DEMAND: "kW", Kind.SUMMATION_DELIVERED: "kWh"}.get(kind, "USD/kWh")
        out.append(Reading(METER, kind, 1_700_000_000 + i, 1_700_000_000.25 + i, raw, 1,
                           divisor, scale(raw, 1, divisor), unit, DEVICE))
    return out


def _collection(client: Any, name: str) -> Any:
    from pymongo.write_concern import WriteConcern

    db = client["bench"]
    db.drop_collection(name)
    coll = db.get_collection(name, write_concern=WriteConcern(j=True))  # as the ingest's
    coll.create_index(INDEX_KEYS, unique=True, name=INDEX_NAME)
    return coll


def _timed_inserts(coll: Any, docs: list[dict[str, Any]]) -> float:
    """Seconds to insert these documents, one insert_many per batch."""
    started = time.monotonic()
    for i in range(0, len(docs), BATCH):
        coll.insert_many([dict(d) for d in docs[i:i + BATCH]], ordered=False)
    return time.monotonic() - started


def _timed_upserts(coll: Any, docs: list[dict[str, Any]]) -> float:
    from pymongo import UpdateOne

    started = time.monotonic()
    for i in range(0, len(docs), BATCH):
        coll.bulk_write([UpdateOne(_key(d), {"$setOnInsert": d}, upsert=True)
                         for d in docs[i:i + BATCH]], ordered=False)
    return time.monotonic() - started


def _key(doc: dict[str, Any]) -> dict[str, Any]:
    return {k: doc[k] for k, _ in INDEX_KEYS}


class _Ingest:
    """ravend-mongo-ingest as a process, started and stopped again for each round."""

    def __init__(self, work: Path, broker: Any, mongo: Any, collection: str) -> None:
        self.work = work
        self.log = work / "ingest.log"
        self.config = scratchconf.write(work / "ravend.conf", work, {
            "mqtt": {"host": broker.host, "port": broker.port},
            "mongo": {"uri": mongo.uri, "database": "bench", "collection": collection,
                      "client_id": "bench-ingest", "batch_size": BATCH}})
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "ravend.cli.mongo_ingest", "--config", str(self.config)],
            stdout=subprocess.DEVNULL, stderr=open(self.log, "ab"),  # noqa: SIM115
            env={**os.environ, "PYTHONPATH": str(ROOT), "PYTHONUNBUFFERED": "1"}, cwd=ROOT)

    def text(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def wait_log(self, needle: str, count: int, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while self.text().count(needle) < count:
            if self.proc is None or self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"ingest: no {needle!r}:\n{self.text()[-2000:]}")
            time.sleep(0.05)

    def stop(self) -> None:
        proc, self.proc = self.proc, None
        if proc is not None and proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def _drain(ingest: _Ingest, coll: Any, first: dict[str, Any], last: dict[str, Any],
           timeout: float) -> float:
    """Start the ingest on a queued backlog; seconds from its first document to its last.
    (Counting documents costs SecantusDB a scan: the first and the last reading are looked up
    by the unique index instead; the broker delivers a session's queue in order.)"""
    ingest.start()
    first_at = None
    deadline = time.monotonic() + timeout
    while True:
        now = time.monotonic()
        if first_at is None and coll.find_one(_key(first), {"_id": 1}) is not None:
            first_at = now
        if first_at is not None and coll.find_one(_key(last), {"_id": 1}) is not None:
            break
        if now > deadline or ingest.proc is None or ingest.proc.poll() is not None:
            raise RuntimeError(f"ingest did not store the last reading:\n{ingest.text()[-2000:]}")
        time.sleep(POLL)
    ended = time.monotonic()
    ingest.stop()
    return ended - first_at


def bench_mongo_ingest(quick: bool) -> list[dict[str, Any]]:
    """The ingest's drain rate and the server's insert_many rate, measured in alternating
    rounds (so that both see the same load from anything else on the machine)."""
    import pymongo

    n = 9_000 if quick else 50_000
    rounds = 3 if quick else 5
    work = Path(tempfile.mkdtemp(prefix="ravend-bench-mongo-"))
    broker = servers.MosquittoServer(work / "broker", extra_config=BROKER_CONFIG).start()
    mongo = servers.SecantusServer(work / "mongo")
    mongo.start()  # returns it typed as its base class, which has no uri
    client: pymongo.MongoClient[dict[str, Any]] = pymongo.MongoClient(
        mongo.uri, serverSelectionTimeoutMS=10_000)
    ingest = _Ingest(work, broker, mongo, "ingest")
    pub = Connection(Endpoint(host=broker.host, port=broker.port, client_id="bench-pub"))
    try:
        rs = readings(n)
        messages = [Message(reading_topic("ravend", r), reading_payload(r)) for r in rs]
        docs = [document(parse_reading(m.payload)) for m in messages]
        baseline = _collection(client, "baseline")
        upserted = _collection(client, "upserted")
        client["bench"].drop_collection("ingest")
        ingest.start()  # once, to make the persistent session and its subscription
        ingest.wait_log("subscribed", 1, 30)
        ingest.stop()
        pub.connect(10)
        insert_s = ingest_s = upsert_s = 0.0
        size = n // rounds
        for i in range(0, n, size):
            chunk = slice(i, i + size)
            insert_s += _timed_inserts(baseline, docs[chunk])
            pub.publish_all(messages[chunk], 120)  # queued by the broker for the session
            ingest_s += _drain(ingest, client["bench"]["ingest"], docs[i], docs[i + size - 1],
                               120 if quick else 600)
        upsert_s = _timed_upserts(upserted, docs[:size])
        stored = client["bench"]["ingest"].count_documents({})
        again = _store_again(ingest, pub, messages[:size], client["bench"]["ingest"])
    finally:
        pub.close()
        ingest.stop()
        client.close()
        broker.kill()
        mongo.kill()
        shutil.rmtree(work, ignore_errors=True)
    # Each round's rate leaves out its first document (the clock starts when it is there).
    rate = (n - rounds) / ingest_s
    insert_rate = n / insert_s
    return [
        _row(f"mongo ingest, MQTT QoS 1 -> SecantusDB, {n:,} readings (paho {PAHO_VERSION},"
             f" pymongo {pymongo.version})", rate, "docs/s"),
        _row(f"SecantusDB insert_many, same documents, batches of {BATCH}", insert_rate,
             "docs/s"),
        _row("ingest rate / insert_many rate", 100 * rate / insert_rate, "%", ">=",
             RATIO_TARGET),
        _row("SecantusDB $setOnInsert upserts, same documents (for comparison)",
             size / upsert_s, "docs/s"),
        _row("documents stored == readings published", float(stored == n), "", ">=", 1),
        _row("documents added by a replay of 1 round's messages", float(again), "", "<=", 0),
    ]


def _store_again(ingest: _Ingest, pub: Connection, messages: list[Message], coll: Any) -> int:
    """Publish messages again (a replay) and one new reading after them: how many documents
    the replay added (0 expected). The broker delivers in order: once the new reading is
    stored, the replay has been handled."""
    before = coll.count_documents({})
    sentinel = readings(len(messages) * 100 + 1)[-1]
    pub.publish_all([*messages, Message(reading_topic("ravend", sentinel),
                                        reading_payload(sentinel))], 120)
    ingest.start()
    key = _key(document(sentinel))
    deadline = time.monotonic() + 120
    while coll.find_one(key, {"_id": 1}) is None:
        if time.monotonic() > deadline:
            raise RuntimeError(f"ingest did not store the replay:\n{ingest.text()[-2000:]}")
        time.sleep(POLL)
    ingest.stop()
    return int(coll.count_documents({}) - before - 1)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="bench/mongo.py", description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="9,000 readings")
    args = p.parse_args(argv)
    rows = bench_mongo_ingest(args.quick)
    width = max(len(r["name"]) for r in rows)
    for r in rows:
        value = "-" if r["value"] is None else f"{r['value']:.1f} {r['unit']}".strip()
        verdict = "info" if r["target"] is None else ("ok" if r["ok"] else "MISSED")
        print(f"{r['name']:<{width}}  {value:>16}  {r['target'] or '':>8}  {verdict}")
    return 0 if all(r["ok"] for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
