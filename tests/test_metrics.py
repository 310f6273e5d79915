"""[metrics]: scraped over HTTP from a real ravend and parsed with prometheus_client's own parser.

The acceptance check is that the endpoint, scraped during an end-to-end run, shows what the store
holds: per kind, the readings the SQLite sink counts as stored equal the rows in the file.
"""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest

from ravend.config import ConfigError, DeviceConfig, load
from ravend.device import DeviceSession
from ravend.metrics import MetricsServer
from ravend.protocol.model import Kind
from ravend.service import Dispatcher
from ravend.simulator import MeterSimulator
from tests.helpers import servers
from tests.helpers.metrics import scrape, try_scrape, value
from tests.helpers.process import ROOT, RavendProcess, running_ravend, stored_rows, write_config
from tests.helpers.wait import wait_for


def last_values(db: Path, kind: str) -> dict[str, float]:
    """Each meter's newest stored value of a kind (ids grow in the order the sink wrote)."""
    import sqlite3

    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        rows = conn.execute("SELECT meter_mac, value FROM readings WHERE kind = ? ORDER BY id",
                            (kind,)).fetchall()
    finally:
        conn.close()
    return dict(rows)


def test_scraped_counts_equal_the_store(tmp_path: Path) -> None:
    link = str(tmp_path / "stick")
    db = tmp_path / "state" / "ravend.db"
    port = servers.free_port()
    url = f"http://127.0.0.1:{port}/metrics"
    # negative_demand: a meter that exports too, so summation_received is stored and scraped.
    sim = MeterSimulator("raven", link=link, seed=11, speed=200, quirks=("negative_demand",),
                         reply_delay=0.02).start()
    config = write_config(tmp_path / "ravend.conf", tmp_path / "state", link,
                          metrics={"listen": f"127.0.0.1:{port}"})
    with running_ravend(config, tmp_path / "ravend.log", then_stop=(sim.stop,)) as ravend:
        assert wait_for(lambda: len(stored_rows(db)) >= 60, 30), ravend.log()
        live = try_scrape(url)  # mid-run, while readings flow
        assert live is not None, ravend.log()
        assert value(live, "ravend_device_connected") == 1
        sim.set_pushes(False)
        assert sim.drain(5)
        sent = {s.key for s in sim.sent_readings()}
        assert wait_for(lambda: len(stored_rows(db)) >= len(sent), 20), ravend.log()

        # A row is committed a moment before the worker counts it: wait until both agree.
        def settled() -> bool:
            samples = try_scrape(url)
            return samples is not None and sum(
                value(samples, "ravend_readings_stored_total", sink="sqlite", kind=k.value)
                for k in Kind) == len(stored_rows(db))

        assert wait_for(settled, 10, interval=0.2), ravend.log()
        samples = scrape(url)
        rows = stored_rows(db)
        demands = last_values(db, "demand")
        delivered = last_values(db, "summation_delivered")
        received = last_values(db, "summation_received")
    log = ravend.log()
    assert "Traceback" not in log, log
    assert f"metrics on http://127.0.0.1:{port}/metrics" in log

    assert len(rows) == len(sent)
    by_kind = Counter(kind for _, kind, *_ in rows)
    assert {"demand", "summation_delivered", "summation_received"} <= set(by_kind)
    for kind in Kind:  # every kind, the ones not stored at 0
        got = value(samples, "ravend_readings_stored_total", sink="sqlite", kind=kind.value)
        assert got == by_kind.get(kind.value, 0), kind
    assert value(samples, "ravend_readings_received_total") == len(rows)
    assert value(samples, "ravend_device_connected") == 1
    assert value(samples, "ravend_device_reconnects_total") == 0
    assert value(samples, "ravend_decode_errors_total") == 0
    assert value(samples, "ravend_fragments_total") >= len(rows)
    assert value(samples, "ravend_sink_up", sink="sqlite") == 1
    assert value(samples, "ravend_sink_spool_depth", sink="sqlite") == 0
    assert value(samples, "ravend_sink_dropped_total", sink="sqlite") == 0
    assert value(samples, "ravend_sink_rejected_total", sink="sqlite") == 0
    assert 0 <= value(samples, "ravend_last_reading_age_seconds") < 30
    assert demands and delivered and received
    for meter, kw in demands.items():
        assert value(samples, "ravend_demand_kilowatts", meter=meter) == pytest.approx(kw)
    for meter, kwh in delivered.items():
        assert value(samples, "ravend_summation_delivered_kilowatt_hours",
                     meter=meter) == pytest.approx(kwh)
    for meter, kwh in received.items():
        assert value(samples, "ravend_summation_received_kilowatt_hours",
                     meter=meter) == pytest.approx(kwh)


def test_busy_port_is_logged_once_and_readings_are_still_stored(tmp_path: Path) -> None:
    link = str(tmp_path / "stick")
    db = tmp_path / "state" / "ravend.db"
    with socket.socket() as squatter:
        squatter.bind((servers.LOOPBACK, 0))
        squatter.listen()
        port = squatter.getsockname()[1]
        sim = MeterSimulator("emu2", link=link, seed=3, speed=200, reply_delay=0.02).start()
        config = write_config(tmp_path / "ravend.conf", tmp_path / "state", link,
                              metrics={"listen": f"{servers.LOOPBACK}:{port}"})
        ravend = RavendProcess(config, tmp_path / "ravend.log")
        try:
            assert wait_for(lambda: len(stored_rows(db)) >= 20, 30), ravend.log()
            assert ravend.proc.poll() is None
        finally:
            code, _ = ravend.stop()
            sim.stop()
    log = ravend.log()
    assert code == 0, log
    lines = [line for line in log.splitlines() if "metrics:" in line]
    assert len(lines) == 1, log
    assert "ERROR" in lines[0]
    assert f"cannot listen on {servers.LOOPBACK}:{port}" in lines[0]
    assert "in use" in lines[0]
    assert "Traceback" not in log


@pytest.mark.parametrize("listen", [
    "9105", "localhost", "127.0.0.1:", ":9105", "127.0.0.1:0", "127.0.0.1:65536",
    "::1:9105", "[::1]", "[zz::1]:9105", "[127.0.0.1]:9105", "300.1.2.3:9105",
    "my host:9105", "http://127.0.0.1:9105", "127.0.0.1:9105/metrics",
])
def test_bad_listen_refused_in_one_line(tmp_path: Path, listen: str) -> None:
    path = tmp_path / "ravend.conf"
    path.write_text(f"[metrics]\nlisten = {listen}\n")
    with pytest.raises(ConfigError) as info:
        load(path)
    message = str(info.value)
    assert "\n" not in message
    assert f"{path}:2: [metrics] listen = {listen!r}: expected host:port" in message


@pytest.mark.parametrize("listen", ["", "127.0.0.1:9105", "[::1]:9105", "[::]:1",
                                    "0.0.0.0:65535", "localhost:9105", "metrics.lan:80"])
def test_good_listen_accepted(tmp_path: Path, listen: str) -> None:
    path = tmp_path / "ravend.conf"
    path.write_text(f"[metrics]\nlisten = {listen}\n")
    assert load(path).metrics.listen == listen
    assert load(tmp_path / "absent.conf").metrics.listen == ""  # off by default


def test_ipv6_endpoint_serves_and_stops_at_once(capsys: pytest.CaptureFixture[str]) -> None:
    """In-process: [::1] works, rude clients leave no trace, and stop() wakes the blocked serving
    thread and frees the port."""
    with socket.socket(socket.AF_INET6) as probe:
        probe.bind(("::1", 0))
        port = probe.getsockname()[1]
    dispatcher = Dispatcher([])
    server = MetricsServer(f"[::1]:{port}", dispatcher, DeviceSession(DeviceConfig(), dispatcher))
    assert server.start()
    try:
        assert server.address == ("::1", port)
        with socket.create_connection(("::1", port)):
            pass  # hangs up without asking
        with socket.create_connection(("::1", port)) as rude:
            rude.sendall(b"NONSENSE\r\n\r\n")
            assert rude.recv(100)  # an error page, and the server goes on
        samples = scrape(f"http://[::1]:{port}/metrics")
        assert value(samples, "ravend_device_connected") == 0
        assert value(samples, "ravend_readings_received_total") == 0
        # Before the first reading there is no age to tell.
        assert not any(name == "ravend_last_reading_age_seconds" for name, _ in samples)
    finally:
        started = time.monotonic()
        server.stop()
        took = time.monotonic() - started
    assert took < 0.5
    assert server.address is None
    # Released: a new server (a restarted ravend) gets the port at once.
    again = MetricsServer(f"[::1]:{port}", dispatcher, DeviceSession(DeviceConfig(), dispatcher))
    assert again.start()
    again.stop()
    assert capsys.readouterr().err == ""  # no traceback, no line per request


#: What the HTTP server behind an endpoint pulls in (wsgiref -> http.server, http.client, email,
#: ssl): about 2 MiB of RSS, for nothing in a ravend that serves no metrics (bench row rss).
HTTP_SERVER_MODULES = ("ravend.metrics_http", "wsgiref", "http.server", "http.client", "email",
                       "ssl")


def test_ravend_without_an_endpoint_loads_no_http_server() -> None:
    """ravend's CLI imports the service and ravend.metrics at the top; the HTTP server's modules
    wait until an endpoint is bound (ravend.metrics_http)."""
    proc = subprocess.run(
        [sys.executable, "-c", "import sys, ravend.cli.ravend; print(*sorted(sys.modules))"],
        env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT)},
        capture_output=True, text=True, timeout=30, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr
    names = set(proc.stdout.split())
    assert {"ravend.service", "ravend.metrics"} <= names  # the check is about what they pull in
    loaded = sorted(n for n in names
                    if any(n == m or n.startswith(m + ".") for m in HTTP_SERVER_MODULES))
    assert loaded == []


def test_missing_prometheus_client_is_one_config_error(tmp_path: Path) -> None:
    """Configured but not installed: exit 78 and one line naming the Debian package."""
    shadow = tmp_path / "shadow" / "prometheus_client"
    shadow.mkdir(parents=True)
    (shadow / "__init__.py").write_text("raise ImportError('not installed (test)')\n")
    config = write_config(tmp_path / "ravend.conf", tmp_path / "state", str(tmp_path / "none"),
                          metrics={"listen": "127.0.0.1:9105"})
    proc = subprocess.run(
        [sys.executable, "-m", "ravend.cli.ravend", "--config", str(config)],
        env={"PATH": "/usr/bin:/bin", "PYTHONPATH": f"{shadow.parent}:{ROOT}"},
        capture_output=True, text=True, timeout=30, cwd=ROOT)
    assert proc.returncode == 78, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert "apt install python3-prometheus-client" in lines[0]
