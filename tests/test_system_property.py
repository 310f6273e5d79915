"""System property: any fragment the stick may send, valid or not, costs no reading.

Hypothesis generates fragments for every tag of the decoder's table, every numeric child as hex
of any width (tests/helpers/fragment_strategies.py), mixed with noise. The meter simulator
writes exactly those bytes on its pty to a real ravend with SQLite and MQTT (a private Mosquitto)
on. The same bytes go through the pure framer and decoder here: the readings they accept are what
each sink owes. For every sink, stored plus listed as rejected (``<state_dir>/rejected.db``) must be
exactly that set, every stored or published value the first one received for its key (a later value
for the same key is neither stored nor published), and nothing else. No thread dies: ravend is
still running at the end, its log holds no traceback, and SIGTERM stops it with exit 0.

Hypothesis is the generator here, not the runner: its examples are collected into one stream
for one ravend run (a ravend start per example would take hours). The seed is in every failure
message; RAVEND_PROPTEST_SEED=<seed> replays that stream.
"""

from __future__ import annotations

import json
import os
import queue
import random
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import seed as hypothesis_seed
from hypothesis import strategies as st

from ravend.simulator import MeterSimulator
from ravend.sinks.mqtt_payload import PayloadError, parse_reading
from tests.helpers.fragment_strategies import REALISTIC, piece, render
from tests.helpers.mqtt import Subscriber, reading_messages
from tests.helpers.process import ROOT, RavendProcess, stored_rows, write_config
from tests.helpers.wait import wait_for

Key = tuple[str, str, "int | None"]  # (meter_mac, kind, meter_time): None = host-timed
Value = tuple[int, int, int]  # (raw, multiplier, divisor)

SINKS = ("sqlite", "mqtt")
#: Below this share of pieces carrying an accepted reading, the run proves little: fail.
MIN_ACCEPTED_SHARE = 0.10
#: Pieces written to the pty at once: the simulator's replies to ravend's commands go between.
CHUNK = 40
SENTINEL_METER = "0x00aabb00000000ff"
#: Most pieces one hypothesis example gives.
BATCH = 30
#: A piece whose readings take longer than this to compute is costly (no input should).
COSTLY_S = 2.0


# --- generating the stream ---------------------------------------------------------------------


def generate(count: int, seed: int) -> list[bytes]:
    """``count`` distinct pieces from hypothesis, batched: each example is a short list of
    pieces (hypothesis repeats itself a lot while it explores; an exact repeat proves nothing
    new, the duplicates quirk of the end-to-end tests covers it)."""
    out: list[bytes] = []
    seen: set[bytes] = set()
    round_ = 0
    while len(out) < count:
        @settings(max_examples=max(10, 2 * (count - len(out)) // BATCH), database=None,
                  deadline=None, phases=[Phase.generate],
                  suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                         HealthCheck.filter_too_much])
        @hypothesis_seed(seed + round_)
        @given(st.lists(piece(), min_size=1, max_size=BATCH))
        def collect(batch: list[bytes]) -> None:
            for data in batch:
                if data not in seen:
                    seen.add(data)
                    out.append(data)

        collect()
        round_ += 1
    return out[:count]


def sentinel() -> bytes:
    """A plain demand fragment sent last: the newest reading every sink should account for."""
    _, _, last_time = REALISTIC["TimeStamp"]
    return render("InstantaneousDemand", [
        ("DeviceMacId", "0xd8d5b90000aa0001"), ("MeterMacId", SENTINEL_METER),
        ("TimeStamp", f"0x{last_time + 1:08x}"), ("Demand", "0x000400"),
        ("Multiplier", "0x00000001"), ("Divisor", "0x000003e8")])


# --- what the pure decoder accepts ----------------------------------------------------------------

#: Run in a child process: a field that makes a reading costly to compute (the fault
#: matrix's "costly fields") would hang this test otherwise; stderr names the piece being
#: turned into readings.
#: A piece the decoder raises on is reported as such (decode() promises never to raise).
_DECODE_CHILD = """
import json, sys
from ravend.protocol import StreamDecoder, readings_from, DecodeError, Discarded
from ravend.serialize import reading_to_dict
for line in sys.stdin:
    data = json.loads(line).encode("latin-1")
    readings, error = [], None
    try:
        for item in StreamDecoder().feed(data):
            if not isinstance(item, (DecodeError, Discarded)):
                readings.extend(reading_to_dict(r) for r in readings_from(item, 1.7e9))
        for d in readings:  # as hex: the integers may be too long for decimal text
            d.update({n: hex(d[n]) for n in ("raw", "multiplier", "divisor")}, value="")
    except Exception as exc:
        readings, error = [], repr(exc)[:300]
    print(json.dumps({"readings": readings, "error": error}), flush=True)
"""


@dataclass
class Decoded:
    readings: list[dict]
    error: str | None = None  # the decoder raised (repr of the exception)
    costly: bool = False  # its readings took longer than the budget to compute


def _lines_into(stream: Iterable[str] | None, lines: queue.Queue[str]) -> None:
    for line in stream or ():
        lines.put(line)


def decode_each(pieces: list[bytes], budget: float) -> list[Decoded]:
    """What the pure framer+decoder make of each piece decoded on its own (every piece ends at
    a line end, so a stream of them frames the same as each alone). A piece whose readings take
    longer than ``budget`` seconds is marked costly and decoding goes on after it."""
    out: list[Decoded] = []
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    while len(out) < len(pieces):
        with tempfile.TemporaryFile("w+") as feed:
            feed.writelines(json.dumps(p.decode("latin-1")) + "\n" for p in pieces[len(out):])
            feed.seek(0)
            child = subprocess.Popen([sys.executable, "-c", _DECODE_CHILD], stdin=feed,
                                     stdout=subprocess.PIPE, text=True, cwd=ROOT, env=env)
            lines: queue.Queue[str] = queue.Queue()
            reader = threading.Thread(target=_lines_into, args=(child.stdout, lines),
                                      daemon=True)
            reader.start()
            try:
                while len(out) < len(pieces):
                    d = json.loads(lines.get(timeout=budget))
                    out.append(Decoded(d["readings"], d["error"]))
            except queue.Empty:
                out.append(Decoded([], costly=True))  # decoding goes on after it
            finally:
                child.kill()
                child.wait()
                reader.join(5)
    return out


def key_of(d: dict) -> Key:
    return (d["meter_mac"], d["kind"], d["meter_time"])


def value_of(d: dict) -> Value:
    """(raw, multiplier, divisor) of a reading dict: ints, or hex text from the decoder child."""
    return tuple(v if isinstance(v, int) else int(v, 16)  # type: ignore[return-value]
                 for v in (d["raw"], d["multiplier"], d["divisor"]))


@dataclass
class Plan:
    """What goes on the wire, and what the sinks owe for it."""

    pieces: list[bytes]
    owed: dict[Key, Value] = field(default_factory=dict)  # key -> first value received
    accepted_pieces: int = 0
    conflicts: int = 0  # later readings with an owed key and another value
    raised: list[tuple[bytes, str]] = field(default_factory=list)  # the decoder raised
    costly: list[bytes] = field(default_factory=list)  # readings too costly to compute


def plan(pieces: list[bytes], budget: float) -> Plan:
    """Keep a piece unless it carries a second host-timed reading for a meter and kind (its key
    would be the host's receive second, which the test cannot know: two in the same second are
    one key); note the first value of every key."""
    kept = Plan([])
    host_timed: set[tuple[str, str]] = set()
    for data, decoded in zip(pieces, decode_each(pieces, budget), strict=True):
        readings = decoded.readings
        timed_by_host = {(d["meter_mac"], d["kind"]) for d in readings if d["meter_time"] is None}
        if timed_by_host & host_timed:
            continue
        host_timed |= timed_by_host
        kept.pieces.append(data)
        if decoded.error is not None:
            kept.raised.append((data, decoded.error))
        if decoded.costly:
            kept.costly.append(data)
        kept.accepted_pieces += bool(readings)
        for d in readings:
            first = kept.owed.setdefault(key_of(d), value_of(d))
            kept.conflicts += first != value_of(d)
    return kept


# --- what the sinks did ---------------------------------------------------------------------------


def rejected_keys(state_dir: Path) -> dict[str, set[Key]]:
    """Per sink, the keys listed in the quarantine (interface 1); no file yet means none."""
    out: dict[str, set[Key]] = {name: set() for name in SINKS}
    path = state_dir / "rejected.db"
    if not path.exists():
        return out
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=5)
    try:
        rows = conn.execute("SELECT sink, reading FROM rejected").fetchall()
    except sqlite3.OperationalError:
        rows = []  # created, table not yet there
    finally:
        conn.close()
    for sink, reading in rows:
        out.setdefault(sink, set()).add(key_of(json.loads(reading)))
    return out


def stored_sqlite(db: Path) -> dict[Key, list[Value]]:
    out: dict[Key, list[Value]] = {}
    for meter, kind, meter_time, raw, multiplier, divisor, _ in stored_rows(db):
        out.setdefault((meter, kind, meter_time), []).append((raw, multiplier, divisor))
    return out


def published_mqtt(sub: Subscriber) -> tuple[dict[Key, list[Value]], list[str]]:
    out: dict[Key, list[Value]] = {}
    bad: list[str] = []
    for message in reading_messages(sub):
        try:
            r = parse_reading(message.payload)
        except PayloadError as exc:
            bad.append(f"{message.topic}: {exc}")
            continue
        out.setdefault((r.meter_mac, r.kind.value, r.meter_time), []).append(
            (r.raw, r.multiplier, r.divisor))
    return out, bad


def _short(obj: object) -> str:
    """repr for a failure message: huge integers as abbreviated hex, long bytes cut."""
    if isinstance(obj, int) and obj.bit_length() > 64:
        return f"0x{obj:x}"[:20] + f"...({obj.bit_length()} bits)"
    if isinstance(obj, tuple | list):
        inner = ", ".join(_short(x) for x in obj)
        return f"({inner})" if isinstance(obj, tuple) else f"[{inner}]"
    text = repr(obj)
    return text if len(text) <= 300 else text[:300] + "..."


def _first(items: Iterable[object], n: int = 5) -> str:
    """The first n items, in the order given (the stream's order where it has one)."""
    listed = [_short(x) for x in items]
    more = f" (and {len(listed) - n} more)" if len(listed) > n else ""
    return ", ".join(listed[:n]) + more


def accounting(sink: str, owed: dict[Key, Value], got: dict[Key, list[Value]],
               rejected: set[Key]) -> list[str]:
    """What is wrong with one sink's books: empty when stored + rejected = owed, first values."""
    problems = []
    missing = [k for k in owed if k not in got and k not in rejected]  # in stream order
    if missing:
        problems.append(f"{sink}: {len(missing)} of {len(owed)} accepted readings neither stored"
                        f" nor rejected, e.g. {_first((k, owed[k]) for k in missing)}")
    extra = sorted((got.keys() | rejected) - owed.keys(), key=_short)
    if extra:
        problems.append(f"{sink}: {len(extra)} stored or rejected readings the decoder never"
                        f" accepted, e.g. {_first(extra)}")
    wrong = {k: sorted(set(v)) for k, v in got.items() if k in owed and set(v) != {owed[k]}}
    if wrong:
        problems.append(f"{sink}: {len(wrong)} keys hold a value other than the first received"
                        f" (same-key rule), e.g. "
                        f"{_first((k, 'first', owed[k], 'got', v) for k, v in wrong.items())}")
    return problems


def thread_deaths(log: str) -> list[str]:
    """'THREAD: exception' for each thread that died, 'logged: exception' for each other
    traceback in the log (the exception is the traceback's first unindented line)."""
    lines = log.splitlines()
    out = []
    for i, line in enumerate(lines):
        if not line.startswith("Traceback"):
            continue
        end = next((j for j in range(i + 1, len(lines)) if lines[j][:1] not in ("", " ")), None)
        exc = lines[end] if end is not None else "(cut off)"
        before = lines[i - 1] if i else ""
        if before.startswith("Exception in thread "):
            out.append(f"{before[len('Exception in thread '):].rstrip(':')}: {exc}")
        elif not before.startswith("During handling"):
            out.append(f"logged: {exc}")
    return out


def drain_while_read(sim: MeterSimulator, ravend: RavendProcess, timeout: float) -> bool:
    """Wait until the simulator has written everything; give up early once nobody will read
    it (ravend exited, or its device thread died unsupervised)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if sim.drain(1.0):
            return True
        if ravend.proc.poll() is not None or "Exception in thread device" in ravend.log():
            return False
    return False


# --- the run --------------------------------------------------------------------------------------


def run_property(tmp_path: Path, make_mosquitto, count: int, settle: float) -> None:
    seed = int(os.environ.get("RAVEND_PROPTEST_SEED") or random.randrange(2**32))
    where = f"[seed {seed}, {count} pieces; RAVEND_PROPTEST_SEED={seed} replays]"
    book = plan([*generate(count, seed), sentinel()], budget=COSTLY_S)
    share = book.accepted_pieces / len(book.pieces)
    assert share >= MIN_ACCEPTED_SHARE, \
        f"only {share:.0%} of generated pieces carry an accepted reading: vacuous {where}"

    broker = make_mosquitto(extra_config="max_queued_messages 1000000")
    sub = Subscriber(broker.host, broker.port, ["ravend/#"], client_id="proptest").start()
    link = str(tmp_path / "stick")
    state_dir = tmp_path / "state"
    db = state_dir / "ravend.db"
    sim = MeterSimulator("raven", link=link, seed=16, pushes=False, reply_delay=0.01).start()
    config = write_config(tmp_path / "ravend.conf", state_dir, link, mqtt={
        "enabled": "yes", "host": broker.host, "port": str(broker.port),
        "client_id": "ravend-proptest", "publish_timeout": "2s"})
    ravend = RavendProcess(config, tmp_path / "ravend.log")

    def books() -> tuple[dict[Key, Value], dict[str, dict[Key, list[Value]]],
                         dict[str, set[Key]], list[str]]:
        owed = dict(book.owed)
        for s in sim.sent_readings():  # the simulator's replies to ravend's own requests
            owed.setdefault(s.key, (s.raw, s.multiplier, s.divisor))
        mqtt, bad = published_mqtt(sub)
        return owed, {"sqlite": stored_sqlite(db), "mqtt": mqtt}, rejected_keys(state_dir), bad

    def all_accounted() -> bool:
        owed, got, rejected, _ = books()
        return all(owed.keys() <= got[s].keys() | rejected[s] for s in SINKS)

    alive = read_all = False
    try:
        assert wait_for(lambda: "device opened" in ravend.log(), 20), ravend.log()
        assert sim.drain(10)
        for start in range(0, len(book.pieces), CHUNK):
            sim.write_raw(b"".join(book.pieces[start:start + CHUNK]))
        read_all = drain_while_read(sim, ravend, settle)
        if read_all:  # else nothing more is coming: account for what did
            wait_for(all_accounted, settle, interval=0.2)
        alive = ravend.proc.poll() is None
    finally:
        code, took = ravend.stop()
        sim.stop()
        sub.stop(settle=0.3)
    owed, got, rejected, bad = books()
    log = ravend.log()
    problems = []
    if book.raised:
        raised = _first(((p[:160], e) for p, e in book.raised), 2)
        problems.append(f"the pure decoder raised on {len(book.raised)} pieces (decode() must"
                        f" never raise), e.g. {raised}")
    if book.costly:
        costly = _first((p[:200] for p in book.costly), 2)
        problems.append(f"{len(book.costly)} pieces whose readings take over {COSTLY_S:g}s to"
                        f" compute (an unbounded, costly field), e.g. {costly}")
    problems += [p for s in SINKS for p in accounting(s, owed, got[s], rejected[s])]
    problems += [f"mqtt: unparseable reading message {b}" for b in bad[:3]]
    if not read_all:
        problems.append(f"ravend stopped reading its port: the simulator could not write all"
                        f" {len(book.pieces)} pieces (the device thread died or hangs)")
    if not alive:
        problems.append(f"ravend exited ({ravend.proc.returncode}) before the end of the run")
    if code != 0:
        problems.append(f"SIGTERM: exit {code} after {took:.1f}s (want 0)")
    deaths = thread_deaths(log)
    if deaths:
        problems.append(f"{len(deaths)} tracebacks in ravend's log: " + "; ".join(deaths[:4]))
    summary = (f"{len(book.pieces)} pieces, {book.accepted_pieces} with accepted readings,"
               f" {len(owed)} keys owed, {book.conflicts} same-key conflicts;"
               f" rejected: " + ", ".join(f"{s}={len(rejected[s])}" for s in SINKS))
    assert not problems, "\n".join([where, summary, *problems, "--- log tail:",
                                    *log.splitlines()[-40:]])


def test_generated_fragments_are_each_stored_or_rejected_by_every_sink(
        tmp_path: Path, make_mosquitto) -> None:
    run_property(tmp_path, make_mosquitto, int(os.environ.get("RAVEND_PROPTEST_PIECES", "400")),
                 settle=20)


@pytest.mark.slow
def test_generated_fragments_long_run(tmp_path: Path, make_mosquitto) -> None:
    run_property(tmp_path, make_mosquitto,
                 int(os.environ.get("RAVEND_PROPTEST_LONG_PIECES", "20000")), settle=300)
