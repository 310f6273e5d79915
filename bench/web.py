"""ravend-web on a year of one home's readings (bench/yearstore.py's store; the quick run uses
its 30 days): every API answer's time, and the server's resident memory after them.

ravend-web runs as a real process on a free port, reading a copy-free, read-only view of the
cached store. Each endpoint a page uses is asked ``RUNS`` times, warm, over loopback: the time
from sending the request to the last byte of the answer, an upper bound of the server's own
time. The p95 is over every request of every endpoint; the slowest endpoint is in the detail.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass, field
from typing import Any

from bench import yearstore
from bench.core import Context
from bench.yearstore import ROOT

RUNS = 20


@dataclass
class WebTimes:
    store: yearstore.YearStore
    seconds: dict[str, list[float]] = field(default_factory=dict)
    rss_mib: float = 0.0

    def p95(self) -> float:
        every = sorted(t for times in self.seconds.values() for t in times)
        return every[min(len(every) - 1, int(len(every) * 0.95))]

    def detail(self) -> dict[str, Any]:
        worst = max(self.seconds, key=lambda k: max(self.seconds[k]))
        return {"readings": self.store.readings, "days": self.store.days, "runs": RUNS,
                "slowest": worst, "slowest_max_s": round(max(self.seconds[worst]), 4),
                "median_s": {k: round(sorted(v)[len(v) // 2], 4)
                             for k, v in self.seconds.items()}}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _rss_mib(pid: int) -> float:
    with open(f"/proc/{pid}/status", encoding="ascii") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def measure(ctx: Context) -> WebTimes:
    days = ctx.pick(yearstore.QUICK_DAYS, yearstore.FULL_DAYS)
    store = yearstore.store(days, ctx.log)
    port = _free_port()
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    log = open(ctx.work / "ravend-web.log", "wb")  # noqa: SIM115 - the child holds it
    proc = subprocess.Popen([sys.executable, "-m", "ravend.cli.web", "--config",
                             str(store.config), "--listen", f"127.0.0.1:{port}"],
                            cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 15
        while True:
            try:
                urllib.request.urlopen(f"{base}/api/v1/health", timeout=2).read()
                break
            except OSError:
                if time.monotonic() > deadline or proc.poll() is not None:
                    raise RuntimeError("ravend-web did not start") from None
                time.sleep(0.1)
        middle = store.start + days // 2 * yearstore.DAY
        day = time.strftime("%Y-%m-%d", time.gmtime(middle))
        after = time.strftime("%Y-%m-%d", time.gmtime(middle + yearstore.DAY))
        first = time.strftime("%Y-%m-%d", time.gmtime(store.start))
        last = time.strftime("%Y-%m-%d", time.gmtime(store.end))
        paths = {
            "meters": "/api/v1/meters",
            "now": "/api/v1/now",
            "day": f"/api/v1/rollups?resolution=hourly&start={day}&end={after}",
            "days": f"/api/v1/rollups?resolution=daily&start={first}&end={last}",
            "year": f"/api/v1/rollups?resolution=monthly&start={first}&end={last}",
            "report-week": f"/api/v1/report?end={last}",
            "device": "/api/v1/device",
            "health": "/api/v1/health",
        }
        times = WebTimes(store)
        for name, path in paths.items():
            ctx.log(f"web: {name} on {store.readings:,} readings")
            urllib.request.urlopen(base + path, timeout=30).read()  # warm
            runs = []
            for _ in range(RUNS):
                started = time.perf_counter()
                with urllib.request.urlopen(base + path, timeout=30) as resp:
                    resp.read()
                runs.append(time.perf_counter() - started)
            times.seconds[name] = runs
        times.rss_mib = _rss_mib(proc.pid)
        return times
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()
