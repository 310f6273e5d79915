#!/usr/bin/python3
"""MQTT figures: the repeater's drain rate at QoS 1, and latency from the meter to a subscriber.

    bench/mqtt.py            full sizes (a 100,000-row backlog; 120 readings at 1/s)
    bench/mqtt.py --quick    10,000 rows; 100 readings at 10/s (each still meets an idle ravend)

Each function starts what it needs (a private Mosquitto from tests/helpers/servers.py, with
its default test configuration; the meter simulator on a pty; ravend or ravend-repeater as
processes) and returns rows ``{"name", "value", "unit", "target", "ok"}``; ``target`` is a string
such as ``">= 5000"`` or None for a figure given for information.

Drain: a SQLite store holding the backlog (demand, summation and price rows), ``ravend-repeater``
started on it, a ``mosquitto_sub`` subscribed to everything at QoS 1 as a real consumer would be;
the rate is rows / time from the first committed watermark to the last (start-up excluded; the
figure with start-up is given too). The watermark only moves when the broker has acknowledged
a whole batch, so this is the acknowledged rate.

Latency: the simulator pushes one demand a second on its pty; the time is taken when the write
of a fragment's last byte returns in the simulator, and again when the subscriber's on_message
sees the reading (same host, same clock). ravend runs with its default SQLite sink and the MQTT
sink, as a user would.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
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
from ravend.mqtt_client import PAHO_VERSION, Connection, Endpoint  # noqa: E402
from ravend.protocol.model import Kind, Reading, scale  # noqa: E402
from ravend.simulator import MeterSimulator, SentReading  # noqa: E402
from ravend.sinks.mqtt_payload import parse_reading  # noqa: E402
from ravend.sinks.sqlite import SqliteSink  # noqa: E402
from tests.helpers import servers  # noqa: E402  (private Mosquitto)

DRAIN_TARGET = 5000.0  # msg/s acknowledged at QoS 1
LATENCY_P99_TARGET_MS = 50.0
#: Readings skipped at the start of the latency run (ravend's start-up queries, first connect).
WARM_UP = 3
METER = "0x00135003001234ab"
DEVICE = "0x00158d0000000001"


def _row(name: str, value: float | None, unit: str, op: str | None = None,
         bound: float | None = None) -> dict[str, Any]:
    if op is None or bound is None or value is None:
        return {"name": name, "value": value, "unit": unit, "target": None,
                "ok": value is not None}
    ok = value >= bound if op == ">=" else value <= bound
    return {"name": name, "value": round(value, 2), "unit": unit,
            "target": f"{op} {bound:g}", "ok": ok}


def percentile(values: list[float], p: float) -> float:
    """Nearest rank: with 20 values, p99 is the largest."""
    ordered = sorted(values)
    return ordered[max(0, math.ceil(p / 100 * len(ordered)) - 1)]


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(ROOT), "PYTHONUNBUFFERED": "1"}


# --- drain ---------------------------------------------------------------------------------------


def _backlog(n: int) -> list[Reading]:
    out = []
    for i in range(n):
        kind = (Kind.DEMAND, Kind.DEMAND, Kind.SUMMATION_DELIVERED, Kind.PRICE)[i % 4]
        raw = (i * 7919) % 9000 if kind is Kind.DEMAND else 100_000 + i
        divisor = 100 if kind is Kind.PRICE else 1000
        unit = {Kind.DEMAND: "kW", Kind.SUMMATION_DELIVERED: "kWh"}.get(kind, "USD/kWh")
        out.append(Reading(METER, kind, 1_700_000_000 + i, 1_700_000_000.25 + i, raw, 1,
                           divisor, scale(raw, 1, divisor), unit, DEVICE))
    return out


def _watermark(path: Path) -> int:
    try:
        return int(json.loads(path.read_text())["last_id"])
    except (OSError, ValueError, KeyError):
        return 0


def bench_repeater_drain(quick: bool) -> list[dict[str, Any]]:
    n = 10_000 if quick else 100_000
    work = Path(tempfile.mkdtemp(prefix="ravend-bench-mqtt-"))
    broker = servers.MosquittoServer(work / "broker").start()
    consumer = repeater = None
    try:
        state = work / "state"
        sink = SqliteSink(state / "ravend.db")
        sink.open()
        rows = _backlog(n)
        for i in range(0, n, 5000):
            sink.write(rows[i:i + 5000], [])
        sink.close()
        config = scratchconf.write(work / "ravend.conf", work, {
            "service": {"state_dir": state}, "mqtt": {"host": broker.host, "port": broker.port},
            "repeater": {"client_id": "bench-repeater"}})
        consumer = subprocess.Popen(
            ["mosquitto_sub", "-h", broker.host, "-p", str(broker.port), "-q", "1",
             "-i", "bench-consumer", "-t", "ravend/#"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(0.3)
        mark = state / "repeater.watermark"
        started = time.monotonic()
        repeater = subprocess.Popen(
            [sys.executable, "-m", "ravend.cli.repeater", "--config", str(config)],
            stdout=subprocess.DEVNULL, stderr=open(work / "repeater.log", "wb"),  # noqa: SIM115
            env=_env(), cwd=ROOT)
        first_at = first = None
        deadline = started + (120 if quick else 600)
        while True:
            wm = _watermark(mark)
            now = time.monotonic()
            if wm and first_at is None:
                first_at, first = now, wm
            if wm >= n:
                break
            if now > deadline or repeater.poll() is not None:
                log = (work / "repeater.log").read_text(errors="replace")[-2000:]
                raise RuntimeError(f"repeater stopped at {wm} of {n} rows:\n{log}")
            time.sleep(0.005)
        ended = time.monotonic()
    finally:
        for proc in (repeater, consumer):
            if proc is not None and proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                with contextlib.suppress(subprocess.TimeoutExpired):
                    proc.wait(10)
        broker.kill()
        shutil.rmtree(work, ignore_errors=True)
    assert first_at is not None and first is not None
    steady = (n - first) / max(ended - first_at, 1e-9)
    overall = n / (ended - started)
    return [
        _row(f"repeater drain, QoS 1, {n} rows (paho {PAHO_VERSION})", steady, "msg/s", ">=",
             DRAIN_TARGET),
        _row("repeater drain including process start-up", overall, "msg/s"),
    ]


# --- latency -------------------------------------------------------------------------------------


class _TimedSimulator(MeterSimulator):
    """The simulator, noting when each reading's fragment was written to the pty in full."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.written_at: dict[tuple[str, str, int | None], float] = {}

    def _note_sent(self, readings: list[SentReading]) -> None:
        now = time.time()  # right after the write of the fragment's last byte returned
        for r in readings:
            self.written_at.setdefault(r.key, now)
        super()._note_sent(readings)


def bench_mqtt_latency(quick: bool) -> list[dict[str, Any]]:
    # Speed 8: RAVEn's 8 s demand interval becomes one demand a second; quick, ten a second
    # (a reading takes ~2 ms to the subscriber: no queueing), so that 100 make a p99.
    n, speed = (100, 80) if quick else (120, 8)
    if not hasattr(MeterSimulator, "_note_sent"):
        raise RuntimeError("ravend.simulator.MeterSimulator._note_sent is gone: update bench")
    work = Path(tempfile.mkdtemp(prefix="ravend-bench-mqtt-"))
    broker = servers.MosquittoServer(work / "broker").start()
    arrived: dict[tuple[str, str, int], float] = {}
    lock = threading.Lock()

    def on_message(msg: Any) -> None:
        now = time.time()
        if not msg.topic.endswith("/demand"):
            return
        with lock:
            arrived.setdefault(parse_reading(msg.payload).key, now)

    sub = Connection(Endpoint(host=broker.host, port=broker.port, client_id="bench-sub"),
                     on_message=on_message)
    link = str(work / "stick")
    sim = _TimedSimulator("raven", link=link, seed=5, speed=speed, reply_delay=0.05)
    ravend = None
    try:
        sub.connect(5)
        sub.subscribe([("ravend/+/demand", 1)], 5)
        sim.start()
        config = scratchconf.write(work / "ravend.conf", work, {
            "device": {"port": link},
            "mqtt": {"enabled": "yes", "host": broker.host, "port": broker.port,
                     "client_id": "bench-ravend"}})
        ravend = subprocess.Popen(
            [sys.executable, "-m", "ravend.cli.ravend", "--config", str(config)],
            stdout=subprocess.DEVNULL, stderr=open(work / "ravend.log", "wb"),  # noqa: SIM115
            env=_env(), cwd=ROOT)
        deadline = time.monotonic() + n + 60
        while True:
            with lock:
                got = len(arrived)
            if got >= n + WARM_UP:
                break
            if time.monotonic() > deadline or ravend.poll() is not None:
                log = (work / "ravend.log").read_text(errors="replace")[-2000:]
                raise RuntimeError(f"only {got} of {n + WARM_UP} readings arrived:\n{log}")
            time.sleep(0.1)
    finally:
        if ravend is not None and ravend.poll() is None:
            ravend.send_signal(signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                ravend.wait(10)
        sim.stop()
        sub.close()
        broker.kill()
        shutil.rmtree(work, ignore_errors=True)
    with lock:
        keys = sorted(arrived, key=lambda k: k[2])[WARM_UP:WARM_UP + n]
        latencies = [(arrived[k] - sim.written_at[k]) * 1000 for k in keys
                     if k in sim.written_at]
    lost = n - len(latencies)
    return [
        _row(f"MQTT latency p50, pty to subscriber ({len(latencies)} readings at"
             f" {speed / 8:g}/s)",
             percentile(latencies, 50), "ms"),
        _row("MQTT latency p99, pty to subscriber", percentile(latencies, 99), "ms", "<=",
             LATENCY_P99_TARGET_MS),
        _row("MQTT latency max", max(latencies), "ms"),
        _row("readings without a write time", float(lost), "", "<=", 0),
    ]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="bench/mqtt.py", description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="10,000 rows and 100 readings")
    args = p.parse_args(argv)
    rows = bench_repeater_drain(args.quick) + bench_mqtt_latency(args.quick)
    width = max(len(r["name"]) for r in rows)
    for r in rows:
        value = "-" if r["value"] is None else f"{r['value']:.1f} {r['unit']}".strip()
        verdict = "info" if r["target"] is None else ("ok" if r["ok"] else "MISSED")
        print(f"{r['name']:<{width}}  {value:>14}  {r['target'] or '':>8}  {verdict}")
    return 0 if all(r["ok"] for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
