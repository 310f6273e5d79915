"""ravend-web's JSON API, as a real process over HTTP: the answers equal the store's roll-ups
and an independent computation of them, a 6-hour outage is a run of gap points (never one
spike), the live view is pushed within 2 s of a reading that came the real way (simulator ->
ravend -> SQLite), nothing but GET and HEAD is served, listening beyond loopback takes a
password file, and basic authentication checks bcrypt hashes. schemathesis, against the
OpenAPI document, runs on the PyPI stack (marker pypi_only: Debian has no schemathesis)."""

from __future__ import annotations

import base64
import http.client
import json
import os
import sqlite3
import subprocess
import sys
import time
from decimal import Decimal
from pathlib import Path
from typing import NamedTuple
from urllib.parse import urlsplit

import pytest

from ravend.cli import ravenctl
from ravend.simulator import MeterSimulator
from ravend.sinks.sqlite import SqliteSink
from tests.helpers.cost import D
from tests.helpers.process import (
    WebProcess,
    run_program,
    running_ravend,
    stored_rows,
    write_config,
)
from tests.helpers.readings import store_readings
from tests.helpers.servers import free_port, port_accepts
from tests.helpers.wait import wait_for
from tests.helpers.web import request, running_web
from tests.test_report import (
    DAYS,
    EXPORT_RATE,
    GAP,
    PERIODS,
    cents,
    expected_week,
    week_readings,
)

MONDAY, NEXT_MONDAY = "2025-03-03", "2025-03-10"


def week_conf(path: Path, state: Path, extra: str = "") -> Path:
    path.write_text(f"[service]\nstate_dir = {state}\ncontrol_socket = {state / 'control'}\n"
                    "[retention]\nraw_days = 0\ntime_zone = America/Phoenix\n"
                    f"[tariff]\nperiods = {PERIODS}\ncurrency = USD\n"
                    f"export_rate = {EXPORT_RATE}\n{extra}")
    return path


def week_store(tmp: Path) -> tuple[list, Path, Path]:
    """The known week of tests/test_report.py (its 6-hour outage included) in a store, rolled
    up by `ravenctl purge`: (readings, database, config)."""
    state = tmp / "state"
    state.mkdir()
    readings = week_readings()
    store_readings(state / "ravend.db", readings)
    conf = week_conf(tmp / "ravend.conf", state)
    assert ravenctl.main(["purge", "--config", str(conf)]) == 0
    return readings, state / "ravend.db", conf


@pytest.fixture(scope="module")
def week(tmp_path_factory):
    """The known week served by ravend-web: (base URL, readings, database, config)."""
    tmp = tmp_path_factory.mktemp("web-week")
    readings, db, conf = week_store(tmp)
    with running_web(conf, tmp / "web.log") as url:
        yield url, readings, db, conf


def get(url: str, **kw) -> dict:
    reply = request(url, **kw)
    assert reply.status == 200, (url, reply)
    return reply.json()


def test_daily_rollups_and_report_equal_an_independent_computation(week) -> None:
    url, readings, _db, _conf = week
    expected = expected_week(readings)
    body = get(f"{url}/api/v1/rollups?resolution=daily&start={MONDAY}&end={NEXT_MONDAY}")
    points = body["points"]
    assert [p["day"] for p in points] == sorted(expected)[:DAYS]
    for p in points:
        want = expected[p["day"]]
        assert D(str(p["delivered_kwh"])) == want["in"].quantize(D("1e-9")), p
        assert D(str(p["received_kwh"])) == want["out"].quantize(D("1e-9")), p
        assert cents(str(p["cost"])) == cents(want["cost"]), p
        assert cents(str(p["export_credit"])) == cents(want["credit"]), p
    report = get(f"{url}/api/v1/report?start={MONDAY}&end={NEXT_MONDAY}")["meters"]
    assert len(report) == 1
    assert [d["gap_hours"] for d in report[0]["days"]] == [0, 0, 0, 4, 2, 0, 0]
    assert cents(str(report[0]["totals"]["net_cost"])) == cents(
        sum(expected[d]["net"] for d in sorted(expected)[:DAYS]))


def test_hourly_points_equal_the_stored_rollups(week) -> None:
    url, _readings, db, _conf = week
    body = get(f"{url}/api/v1/rollups?resolution=hourly&start={MONDAY}&end=2025-03-05")
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    stored = {r[0]: r[1:] for r in conn.execute(
        "SELECT period_start, demand_samples, demand_avg_kw, demand_max_kw, delivered_kwh,"
        " received_kwh, cost FROM rollup_hourly")}
    conn.close()
    assert len(body["points"]) == 48
    for p in body["points"]:
        n, avg, peak, kwh_in, kwh_out, cost = stored[p["start"]]
        assert p["demand_samples"] == n
        for got, want in ((p["demand_avg_kw"], avg), (p["demand_max_kw"], peak),
                          (p["delivered_kwh"], kwh_in), (p["received_kwh"], kwh_out),
                          (p["cost"], cost)):
            assert Decimal(str(got)) == Decimal(str(want)), p


def test_a_six_hour_gap_is_a_run_of_gap_points_not_a_spike(week) -> None:
    url, _readings, _db, _conf = week
    points = get(f"{url}/api/v1/rollups?resolution=hourly&start=2025-03-06"
                 "&end=2025-03-08")["points"]
    gaps = [p for p in points if p["gap"]]
    assert [p["start"] for p in gaps] == list(range(GAP[0], GAP[1], 3600))
    assert all(p["demand_avg_kw"] is None and p["demand_max_kw"] is None for p in gaps)
    assert all(p["demand_avg_kw"] is not None for p in points if not p["gap"])
    # The energy counted across the outage is spread evenly over it: no spike after it.
    assert len({p["delivered_kwh"] for p in gaps}) == 1
    after = next(p for p in points if p["start"] == GAP[1])
    assert after["delivered_kwh"] < 2 * max(p["delivered_kwh"] for p in points if not p["gap"])
    days = get(f"{url}/api/v1/rollups?resolution=daily&start=2025-03-06&end=2025-03-08")
    assert [p["gap"] for p in days["points"]] == [False, False]  # partly heard days


def test_monthly_is_the_sum_of_its_days(week) -> None:
    url, *_ = week
    month = get(f"{url}/api/v1/rollups?resolution=monthly&start=2025-03-01&end=2025-04-01")
    days = get(f"{url}/api/v1/rollups?resolution=daily&start=2025-03-01&end=2025-04-01")
    assert len(month["points"]) == 1 and month["points"][0]["day"] == "2025-03"
    m = month["points"][0]
    for name in ("delivered_kwh", "received_kwh", "cost", "export_credit"):
        total = sum(Decimal(str(p[name])) for p in days["points"] if p[name] is not None)
        assert Decimal(str(m[name])) == total, name
    assert m["demand_max_kw"] == max(p["demand_max_kw"] for p in days["points"]
                                     if p["demand_max_kw"] is not None)
    # Gaps: the days without any reading (the week's readings end at the next Monday 00:00).
    assert sum(p["gap"] for p in days["points"]) == 31 - DAYS - 1


@pytest.mark.parametrize(("query", "args"), [
    ("rollup=daily&format=csv", ["--rollup", "daily", "--format", "csv"]),
    ("rollup=hourly&format=jsonl", ["--rollup", "hourly", "--format", "jsonl"]),
    ("format=jsonl", ["--format", "jsonl"]),
    ("format=csv", ["--format", "csv"]),
])
def test_readings_are_what_ravenctl_export_writes(week, query: str, args: list[str]) -> None:
    url, _readings, _db, conf = week
    lo, hi = GAP[0] - 2 * 86400, GAP[1] + 3600
    reply = request(f"{url}/api/v1/readings?{query}&start={lo}&end={hi}")
    assert reply.status == 200
    assert "attachment" in reply.headers["Content-Disposition"]
    export = run_program("ravend.cli.ravenctl", "export", "--config", str(conf), "--since",
                         str(lo), "--until", str(hi), *args)
    assert export.returncode == 0, export.stderr
    assert reply.body.decode().splitlines() == export.stdout.splitlines()
    assert len(export.stdout.splitlines()) > 3


@pytest.mark.parametrize("method", ["POST", "PUT", "DELETE", "PATCH", "OPTIONS"])
def test_only_get_and_head_are_served(week, method: str) -> None:
    url, *_ = week
    for path in ("/api/v1/now", "/api/v1/readings", "/"):
        reply = request(f"{url}{path}", method=method)
        assert reply.status == 405, (path, reply)
        assert reply.headers["Allow"] == "GET, HEAD"
    head = request(f"{url}/api/v1/meters", method="HEAD")
    assert head.status == 200 and head.body == b""


def test_live_views_are_bounded_and_never_block_other_requests(week) -> None:
    url, *_ = week
    streams = []
    try:
        for _ in range(4):  # [web] max_streams by default
            streams.append(live := open_stream(url))
            assert live.resp.status == 200
        time.sleep(1)  # held open, they stay taken
        full = request(f"{url}/api/v1/now/stream")
        assert full.status == 503 and full.headers["Retry-After"] == "2", full
        assert "live views" in full.json()["error"]
        started = time.monotonic()
        assert request(f"{url}/api/v1/meters").status == 200
        assert time.monotonic() - started < 1.0
    finally:
        for live in streams:
            live.hang_up()


class Live(NamedTuple):
    """A live view's request as a browser's EventSource makes it, and its answer. Both hold
    the socket (waitress ends a stream's connection with it, so http.client hands the socket
    to the answer): ``hang_up`` closes both, as a page that is reloaded or closed does."""

    conn: http.client.HTTPConnection
    resp: http.client.HTTPResponse

    def hang_up(self) -> None:
        self.resp.close()
        self.conn.close()


def open_stream(url: str) -> Live:
    """A live view opened: its first line read when it is served, a refusal read to its end."""
    parts = urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=10)
    conn.request("GET", "/api/v1/now/stream", headers={"Accept": "text/event-stream"})
    resp = conn.getresponse()
    if resp.status == 200:
        assert resp.readline() == b"retry: 2000\n"
    else:
        resp.read()
    return Live(conn, resp)


def slot(url: str, timeout: float) -> tuple[Live, float]:
    """A live view opened as soon as a slot is free, and the seconds that took (AssertionError
    after ``timeout``)."""
    started = time.monotonic()
    while True:
        live = open_stream(url)
        took = time.monotonic() - started
        if live.resp.status == 200:
            return live, took
        live.hang_up()
        assert live.resp.status == 503 and took < timeout, (live.resp.status, took)
        time.sleep(0.05)


def refused(url: str) -> bool:
    live = open_stream(url)
    live.hang_up()
    return live.resp.status == 503


def test_closed_live_views_give_their_slots_back_within_seconds(week) -> None:
    """A page reloaded or left (its connection closed) frees its slot at once, not when a
    keep-alive write fails seconds later: four reloads in a row leave the fifth page live."""
    url, *_ = week
    streams: list[Live] = []
    try:
        for _ in range(4):  # [web] max_streams by default (an earlier test's may be freeing)
            streams.append(slot(url, 10)[0])
        time.sleep(1.5)  # held open: the slots stay taken
        assert refused(url)
        for round_ in range(3):  # every slot closed by its client, then taken again at once
            for live in streams:
                live.hang_up()
            again = []
            for _ in range(4):
                live, took = slot(url, 3.0)
                again.append(live)
                assert took < 3.0, (round_, took)
            streams = again
            time.sleep(1.5)
            assert refused(url)
    finally:
        for live in streams:
            live.hang_up()


def test_a_client_that_half_closes_after_its_request_gets_the_answer(week) -> None:
    """A script that sends its request and then shuts its side down (nc -N, socat, an
    HTTP/1.0 health check) still reads the whole answer: only a live view ends when its
    client's end of file comes (the test above), no other request is dropped for it."""
    import socket

    url, *_ = week
    port = urlsplit(url).port
    assert port is not None
    for path in ("/api/v1/meters", f"/api/v1/readings?start={MONDAY}&end={NEXT_MONDAY}"):
        whole = request(f"{url}{path}")
        assert whole.status == 200
        with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
            sock.sendall(f"GET {path} HTTP/1.0\r\nHost: localhost\r\n\r\n".encode())
            sock.shutdown(socket.SHUT_WR)
            answer = b""
            while chunk := sock.recv(65536):
                answer += chunk
        head, _, body = answer.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.0 200"), (path, answer[:200])
        assert body == whole.body, (path, len(body), len(whole.body))


def test_sigterm_ends_open_live_views_cleanly(tmp_path: Path) -> None:
    """SIGTERM with live views open: each stream ends as a complete answer (its last chunk
    sent), ravend-web exits 0 within seconds and logs no traceback."""
    _readings, _db, conf = week_store(tmp_path)
    port = free_port()
    log = tmp_path / "web.log"
    web = WebProcess(conf, log, "--listen", f"127.0.0.1:{port}")
    url = f"http://127.0.0.1:{port}"
    streams = []
    try:
        assert wait_for(lambda: port_accepts("127.0.0.1", port) or web.proc.poll() is not None,
                        15), web.log()
        streams = [open_stream(url) for _ in range(2)]
        assert [live.resp.status for live in streams] == [200, 200]
    finally:
        code, took = web.stop()
    assert code == 0 and took < 5.0, (code, took, web.log())
    for live in streams:
        live.resp.read()  # to the end: http.client.IncompleteRead if the last chunk never came
        live.hang_up()
    text = web.log()
    assert "Traceback" not in text and "Exception" not in text, text
    assert "Bad file descriptor" not in text, text
    assert text.count("stopping") == 1, text


def test_strict_security_headers_and_clear_errors(week) -> None:
    url, *_ = week
    for path in ("/", "/api/v1/meters", "/app.js", "/no/such/page"):
        headers = request(f"{url}{path}").headers
        csp = headers["Content-Security-Policy"]
        assert "default-src 'self'" in csp and "script-src 'self';" in csp
        assert "unsafe-inline" not in csp
        assert headers["X-Content-Type-Options"] == "nosniff"
        assert headers["X-Frame-Options"] == "DENY"
    assert request(f"{url}/no/such/page").status == 404
    for bad in ("rollups?resolution=weekly", "rollups?start=yesterday", "now?meter=1234",
                "readings?format=xml", "report?end=2100-13-01"):
        reply = request(f"{url}/api/v1/{bad}")
        assert reply.status == 400, (bad, reply)
        assert reply.json()["error"]
    openapi = get(f"{url}/api/v1/openapi.json")
    assert openapi["openapi"].startswith("3.")
    assert {p.removeprefix("/api/v1/") for p in openapi["paths"]} == {
        "meters", "now", "now/stream", "rollups", "report", "readings", "device", "health",
        "openapi.json"}


def status_for_host(url: str, host: str, auth: str | None = None) -> int:
    parts = urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=10)
    try:
        headers = {"Host": host, **({"Authorization": auth} if auth else {})}
        conn.request("GET", "/api/v1/health", headers=headers)
        resp = conn.getresponse()
        resp.read()
        return resp.status
    finally:
        conn.close()


def test_without_a_password_only_local_host_names_are_answered(week) -> None:
    """DNS rebinding: a page at evil.example re-pointed at 127.0.0.1 sends Host: evil.example;
    without a password that is 421, never the API's data."""
    url, *_ = week
    port = urlsplit(url).port
    for host in (f"localhost:{port}", f"127.0.0.1:{port}", f"[::1]:{port}", "LOCALHOST.",
                 "127.0.0.1"):
        assert status_for_host(url, host) == 200, host
    for host in (f"evil.example:{port}", "evil.example", f"127.0.0.1.evil.example:{port}",
                 f"[::2]:{port}", ""):
        assert status_for_host(url, host) == 421, host


@pytest.mark.pypi_only
def test_schemathesis_finds_no_failure(week, tmp_path: Path) -> None:
    """Every check of schemathesis against the OpenAPI document (the endless event stream
    aside: test_live_view_is_pushed_within_two_seconds reads it)."""
    url, *_ = week
    cli = Path(sys.executable).parent / "schemathesis"
    assert cli.exists(), f"{cli}: schemathesis is in tools/deps/pypi.txt (make deps)"
    run = subprocess.run(
        [str(cli), "run", f"{url}/api/v1/openapi.json", "--checks", "all", "--max-examples",
         "40", "--workers", "2", "--exclude-path", "/api/v1/now/stream", "--seed", "19"],
        capture_output=True, text=True, cwd=tmp_path, timeout=240)
    assert run.returncode == 0, run.stdout[-6000:] + run.stderr[-2000:]
    assert "No issues found" in run.stdout


# --- the real path: simulator -> ravend -> SQLite, with ravend-web reading meanwhile ----------


@pytest.fixture(scope="module")
def live(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("web-live")
    link = str(tmp / "stick")
    state = tmp / "state"
    sim = MeterSimulator("emu2", link=link, seed=5, speed=4, start_time=int(time.time()),
                         reply_delay=0.02).start()
    conf = write_config(tmp / "ravend.conf", state, link,
                        service={"commit_interval": "0.2"},
                        retention={"rollup_interval": "1s", "time_zone": "UTC"})
    with running_ravend(conf, tmp / "ravend.log", then_stop=(sim.stop,)) as ravend:
        db = state / "ravend.db"
        assert wait_for(lambda: any(r[1] == "demand" for r in stored_rows(db)), 30), ravend.log()
        with running_web(conf, tmp / "web.log") as url:
            yield url, db, sim


def newest_demand(db: Path) -> tuple[str, int, Decimal]:
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        mac, t, raw, mult, div = conn.execute(
            "SELECT meter_mac, key_time, raw, multiplier, divisor FROM readings"
            " WHERE kind = 'demand' ORDER BY key_time DESC LIMIT 1").fetchone()
    finally:
        conn.close()
    return mac, t, Decimal(raw) * (mult or 1) / (div or 1)


def test_live_now_equals_the_store(live) -> None:
    url, db, sim = live
    assert get(f"{url}/api/v1/meters")["meters"] == sim.meter_macs
    for _ in range(5):  # a reading may land between the two reads: then look again
        before = newest_demand(db)
        now = get(f"{url}/api/v1/now")
        if newest_demand(db) == before:
            break
    mac, t, kw = before
    assert (now["meter_mac"], now["demand_time"]) == (mac, t)
    assert Decimal(str(now["demand_kw"])) == kw
    assert now["direction"] == ("export" if kw < 0 else "import")
    assert now["last_reading_age_s"] < 30
    assert now["service"]["running"] is True and now["service"]["down"] == []
    device = get(f"{url}/api/v1/device")
    assert device["meters"] == sim.meter_macs
    assert device["device_info"] is not None and device["firmware"]
    health = get(f"{url}/api/v1/health")
    assert health["store"]["ok"] and health["service"]["answered"]


def test_live_view_is_pushed_within_two_seconds(live) -> None:
    url, db, _sim = live
    parts = urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=20)
    conn.request("GET", "/api/v1/now/stream")
    resp = conn.getresponse()
    assert resp.status == 200
    assert resp.getheader("Content-Type") == "text/event-stream"

    def next_event() -> dict:
        data = None
        while True:
            line = resp.readline().decode()
            assert line, "the stream ended"
            if line.startswith("data: "):
                data = json.loads(line[6:])
            elif line == "\n" and data is not None:
                return data

    first = next_event()
    delays = []
    while len(delays) < 2:
        event = next_event()
        arrived = time.time()
        assert event["newest_id"] > first["newest_id"]
        conn_db = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
        received = conn_db.execute("SELECT received_at FROM readings WHERE id = ?",
                                   (event["newest_id"],)).fetchone()[0]
        conn_db.close()
        delays.append(arrived - received)
        first = event
    conn.close()
    assert max(delays) < 2.0, delays


def test_reading_meanwhile_never_holds_ravend_up(live) -> None:
    """Answers while ravend commits a reading every fraction of a second and rolls up every
    second: every answer 200, and ravend goes on storing (its writes never wait on ours)."""
    url, db, _sim = live
    before = len(stored_rows(db))
    started = time.monotonic()
    statuses = set()
    while time.monotonic() - started < 3:
        for path in ("now", "rollups?resolution=hourly", "report", "readings?format=jsonl",
                     "device", "health"):
            statuses.add(request(f"{url}/api/v1/{path}").status)
    assert statuses == {200}
    assert wait_for(lambda: len(stored_rows(db)) > before, 10)


# --- who may look -----------------------------------------------------------------------------


def test_refuses_to_listen_beyond_loopback_without_a_password_file(tmp_path: Path) -> None:
    conf = week_conf(tmp_path / "ravend.conf", tmp_path)
    port = free_port()
    run = run_program("ravend.cli.web", "--config", str(conf), "--listen", f"0.0.0.0:{port}")
    assert run.returncode == 78, run
    assert run.stderr.count("\n") == 1 and "beyond loopback" in run.stderr, run.stderr
    assert "password_file" in run.stderr and "auth = none" in run.stderr
    conf = week_conf(tmp_path / "open.conf", tmp_path, "[web]\nauth = none\n")
    run = run_program("ravend.cli.web", "--config", str(conf), "--listen", f"0.0.0.0:{port}",
                      "--check-config")
    assert run.returncode == 0 and "no password" in run.stdout, run
    conf = week_conf(tmp_path / "basic.conf", tmp_path, "[web]\nauth = basic\n")
    run = run_program("ravend.cli.web", "--config", str(conf), "--check-config")
    assert run.returncode == 78 and "needs a password_file" in run.stderr, run


def test_a_password_file_line_bcrypt_cannot_check_is_refused_at_start(tmp_path: Path) -> None:
    """A hash bcrypt would refuse (a cost outside 4..31, cut short, a stray character) is
    refused with its line, exit 78, as any bad line: not a traceback at start (the unknown
    users' stand-in is hashed at the file's dearest cost) nor a 500 at every login."""
    import bcrypt

    good = bcrypt.hashpw(b"right", bcrypt.gensalt(rounds=4)).decode()
    for bad in [good.replace("$04$", "$03$"), good.replace("$04$", "$32$"),
                good.replace("$04$", "$99$"), good[:-1], good + "x", good[:-1] + "!",
                good[:28] + "b" + good[29:]]:  # the salt's last character, 16 bytes' worth
        secrets = tmp_path / "web.passwd"
        secrets.write_text(f"anna:{good}\nbert:{bad}\n")
        conf = week_conf(tmp_path / "ravend.conf", tmp_path,
                         f"[web]\npassword_file = {secrets}\n")
        run = run_program("ravend.cli.web", "--config", str(conf), "--check-config")
        assert run.returncode == 78, (bad, run)
        assert run.stderr.count("\n") == 1 and f"{secrets}:2: expected user:bcrypt-hash" \
            in run.stderr, (bad, run.stderr)


def test_basic_authentication_with_a_bcrypt_file(tmp_path: Path) -> None:
    import bcrypt
    secrets = tmp_path / "web.passwd"
    hashed = bcrypt.hashpw(b"s3cret pass", bcrypt.gensalt(rounds=4)).decode()
    secrets.write_text(f"# who may look\nanna:{hashed.replace('$2b$', '$2y$')}\n")
    conf = week_conf(tmp_path / "ravend.conf", tmp_path,
                     f"[web]\npassword_file = {secrets}\n")
    with running_web(conf, tmp_path / "web.log", host="0.0.0.0") as url:
        health = f"{url}/api/v1/health"
        none = request(health)
        assert none.status == 401 and none.headers["WWW-Authenticate"].startswith("Basic ")
        assert request(health, auth=("anna", "wrong")).status == 401
        assert request(health, auth=("bert", "s3cret pass")).status == 401
        for _ in range(2):  # the second time from the remembered check
            assert request(health, auth=("anna", "s3cret pass")).status == 200
        assert request(f"{url}/", auth=("anna", "s3cret pass")).status == 200
        # With a password in force, any host name may be used (a name on the network).
        token = "Basic " + base64.b64encode(b"anna:s3cret pass").decode()
        assert status_for_host(url, "ravend.lan:80", token) == 200
        assert status_for_host(url, "ravend.lan:80") == 401
        # Guessing: the tenth wrong password shuts the address out for a while.
        for n in range(8):  # two wrong ones above
            assert request(health, auth=("anna", f"guess {n}")).status == 401
        refused = request(health, auth=("anna", "one more"))
        assert refused.status == 429 and 0 < int(refused.headers["Retry-After"]) <= 60
        assert "too many wrong passwords" in refused.json()["error"]
        assert request(health, auth=("bert", "s3cret pass")).status == 429
        assert request(health, auth=("anna", "s3cret pass")).status == 200  # remembered
    assert "wrong passwords within 60 s" in (tmp_path / "web.log").read_text()


def counted_checks(monkeypatch: pytest.MonkeyPatch) -> list[bytes]:
    """Every hash bcrypt.checkpw is asked to check, from now on."""
    import bcrypt

    checked: list[bytes] = []
    real = bcrypt.checkpw

    def checkpw(password: bytes, hashed: bytes) -> bool:
        checked.append(hashed)
        return real(password, hashed)

    monkeypatch.setattr(bcrypt, "checkpw", checkpw)
    return checked


def basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


def test_an_unknown_user_costs_what_a_wrong_password_costs(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """No timing tells which names are in the password file: an unknown name is checked with
    bcrypt too, once, against a hash of the same cost as the file's."""
    import bcrypt

    from ravend.web.auth import BasicAuth, cost_of

    hashed = bcrypt.hashpw(b"right", bcrypt.gensalt(rounds=5))
    auth = BasicAuth({"anna": hashed})
    checked = counted_checks(monkeypatch)
    assert auth.check(basic("anna", "wrong"), "192.0.2.1") is False
    assert checked == [hashed]
    assert auth.check(basic("bert", "wrong"), "192.0.2.1") is False
    assert auth.check(basic("bert", "right"), "192.0.2.1") is False
    assert len(checked) == 3 and checked[1] == checked[2] != hashed
    assert cost_of(checked[1]) == cost_of(hashed) == 5
    assert auth.check(basic("anna", "right"), "192.0.2.1") is True
    assert len(checked) == 4


def test_wrong_passwords_are_limited_per_address_in_bounded_memory(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """After FAILURES wrong passwords within WINDOW seconds an address waits (no bcrypt run
    for it meanwhile); other addresses, and a password that passed before, go on; the table
    of addresses never outgrows its cap."""
    import bcrypt

    from ravend.web.auth import FAILURES, WINDOW, BasicAuth, FailureLimit, TooManyFailures

    clock = [1000.0]
    limit = FailureLimit(clock=lambda: clock[0], max_clients=100)
    auth = BasicAuth({"anna": bcrypt.hashpw(b"right", bcrypt.gensalt(rounds=4))}, limit)
    assert auth.check(basic("anna", "right"), "192.0.2.1") is True  # remembered from now on
    checked = counted_checks(monkeypatch)
    for _ in range(FAILURES):
        assert auth.check(basic("anna", "guess"), "192.0.2.1") is False
        clock[0] += 1
    assert len(checked) == FAILURES
    with pytest.raises(TooManyFailures) as refused:
        auth.check(basic("anna", "another guess"), "192.0.2.1")
    assert refused.value.retry_after == WINDOW - FAILURES
    with pytest.raises(TooManyFailures):
        auth.check(basic("bert", "a name"), "192.0.2.1")
    assert len(checked) == FAILURES  # refused without bcrypt
    assert auth.check(basic("anna", "right"), "192.0.2.1") is True  # the household's browser
    assert auth.check(basic("anna", "guess"), "192.0.2.2") is False  # another address
    clock[0] += WINDOW
    assert auth.check(basic("anna", "guess"), "192.0.2.1") is False  # the window has passed
    for n in range(1000):  # a flood of addresses (networks: see the test below)
        assert auth.limit.take(f"2001:db8:{n:x}::1") == (0, False)  # one failure counted
    assert len(auth.limit) == 100
    assert auth.limit.wait("2001:db8:3e7::1") == 0  # one failure: it may go on


def test_guesses_sent_at_once_get_no_more_checks_than_the_limit(
        monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    """ravend-web checks with several threads: guesses sent together must not all pass the
    limit before the first wrong one is counted. A try is counted when it starts (given back
    when its password passes), so a burst as large as the server's threads runs bcrypt
    FAILURES times, no more; the one warning is logged once."""
    import threading

    import bcrypt

    from ravend.web.auth import BasicAuth, FailureLimit, TooManyFailures

    threads, failures = 8, 3
    auth = BasicAuth({"anna": bcrypt.hashpw(b"right", bcrypt.gensalt(rounds=4))},
                     FailureLimit(failures=failures))
    real = bcrypt.checkpw
    checked: list[bytes] = []

    def slow(password: bytes, hashed: bytes) -> bool:
        checked.append(hashed)
        time.sleep(0.3)  # a bcrypt of cost 12: every thread is past the limit's look by now
        return real(password, hashed)

    monkeypatch.setattr(bcrypt, "checkpw", slow)
    go = threading.Barrier(threads)
    outcomes: list[str] = []

    def guess(n: int) -> None:
        go.wait()
        try:
            outcomes.append(str(auth.check(basic("anna", f"guess {n}"), "192.0.2.9")))
        except TooManyFailures:
            outcomes.append("429")

    runs = [threading.Thread(target=guess, args=(n,)) for n in range(threads)]
    for run in runs:
        run.start()
    for run in runs:
        run.join(10)
    monkeypatch.setattr(bcrypt, "checkpw", real)
    assert sorted(outcomes) == ["429"] * (threads - failures) + ["False"] * failures, outcomes
    assert len(checked) == failures
    assert caplog.text.count("wrong passwords within") == 1, caplog.text
    assert auth.check(basic("anna", "right"), "192.0.2.10") is True
    assert auth.limit.wait("192.0.2.10") == 0 and len(auth.limit) == 1  # a pass gives back


def test_an_ipv6_client_is_limited_by_its_network_not_by_each_address() -> None:
    """A host on IPv6 picks any address of its /64 at will: counted per address, it would get
    FAILURES guesses from each of them. An IPv4 client seen on a dual-stack socket
    (::ffff:a.b.c.d) is that IPv4 address, not one of every IPv4 client's shared /64."""
    import bcrypt

    from ravend.web.auth import FAILURES, BasicAuth, TooManyFailures

    auth = BasicAuth({"anna": bcrypt.hashpw(b"right", bcrypt.gensalt(rounds=4))})
    for n in range(FAILURES):
        assert auth.check(basic("anna", "guess"), f"2001:db8:0:1::{n + 1:x}") is False
    with pytest.raises(TooManyFailures):
        auth.check(basic("anna", "guess"), "2001:db8:0:1:ffff:ffff:ffff:ffff")
    with pytest.raises(TooManyFailures):
        auth.check(basic("anna", "guess"), "2001:db8:0:1::abcd%eth0")
    assert auth.check(basic("anna", "guess"), "2001:db8:0:2::1") is False  # another network
    for _ in range(FAILURES):
        assert auth.check(basic("anna", "guess"), "::ffff:192.0.2.7") is False
    with pytest.raises(TooManyFailures):
        auth.check(basic("anna", "guess"), "192.0.2.7")
    assert auth.check(basic("anna", "guess"), "::ffff:192.0.2.8") is False  # its neighbour


def test_an_odd_password_is_a_wrong_one_or_bcrypts_own_not_a_crash() -> None:
    """Whatever a client puts in its Authorization header is a 401, never a 500: bad base64,
    no colon, bytes that are not UTF-8, a NUL (python3-bcrypt refuses it: counted as a wrong
    password). A password longer than bcrypt's 72 bytes is checked as htpasswd -B hashed it,
    by its first 72 bytes (bcrypt 5 refuses longer ones)."""
    import bcrypt

    from ravend.web.auth import BasicAuth

    long = "correct horse battery staple, and then some more words " * 2  # 112 bytes
    auth = BasicAuth({"anna": bcrypt.hashpw(b"right", bcrypt.gensalt(rounds=4)),
                      "bert": bcrypt.hashpw(long.encode()[:72], bcrypt.gensalt(rounds=4))})
    raw = [b"anna", b"anna:\xff\xfe", b"\xffanna:right"]
    for header in ["Basic", "Basic ", "Basic !!!", "Basic YW5uYQ", "Bearer x", "Basic \u00e9",
                   *("Basic " + base64.b64encode(r).decode() for r in raw)]:
        assert auth.check(header, "192.0.2.1") is False, header
    assert len(auth.limit) == 0  # no password was tried
    assert auth.check(basic("anna", "rig\0ht"), "192.0.2.1") is False
    assert auth.check(basic("nobody", "\0"), "192.0.2.1") is False
    assert auth.limit.wait("192.0.2.1") == 0 and len(auth.limit) == 1  # two wrong ones
    assert auth.check(basic("bert", long), "192.0.2.2") is True
    assert auth.check(basic("bert", long[:72]), "192.0.2.2") is True
    assert auth.check(basic("bert", long[:71]), "192.0.2.2") is False


def test_a_restored_store_is_served_without_a_restart(tmp_path: Path) -> None:
    """ravenctl restore renames a new file in place: ravend-web notices and reads it, rather
    than the replaced file its connections had open."""
    from tests.helpers.readings import T0
    from tests.test_backup import conf, store_with_rollups, take

    db = store_with_rollups(tmp_path, n=40)
    path = take(tmp_path)
    config = conf(tmp_path)
    with config.open("a") as text:  # two workers, each with its connection open
        text.write("\n[web]\nthreads = 2\nmax_streams = 1\n")
    conn = sqlite3.connect(db, isolation_level=None)
    conn.execute("DELETE FROM readings WHERE id > 10")
    conn.close()

    def served(url: str) -> int:
        start, end = T0 - 86400, T0 + 30 * 86400
        reply = request(f"{url}/api/v1/readings?format=jsonl&start={start}&end={end}")
        assert reply.status == 200, reply
        return len(reply.body.splitlines())

    with running_web(config, tmp_path / "web.log") as url:
        assert [served(url) for _ in range(8)] == [10] * 8
        proc = run_program("ravend.cli.ravenctl", "restore", str(path), "--config", str(config))
        assert proc.returncode == 0, proc.stderr
        assert [served(url) for _ in range(8)] == [40] * 8



# --- long downloads ---------------------------------------------------------------------------


def same_time_store(tmp: Path, times: int = 200, step: int = 1) -> tuple[Path, Path]:
    """Six readings at each of ``times`` times ``step`` seconds apart (two meters, three kinds
    each), in time order: (database, config)."""
    from ravend.protocol.model import KIND_UNITS, Kind, Reading, scale
    from tests.helpers.readings import DEVICE, METER, T0

    kinds = (Kind.DEMAND, Kind.SUMMATION_DELIVERED, Kind.SUMMATION_RECEIVED)
    rows = [Reading(meter, kind, T0 + i * step, T0 + i * step + 0.5, 1000 + i, 1, 1000,
                    scale(1000 + i, 1, 1000), KIND_UNITS[kind], DEVICE)
            for i in range(times) for meter in (METER, "0x00135003009999cd") for kind in kinds]
    state = tmp / "state"
    state.mkdir()
    store_readings(state / "ravend.db", rows)
    return state / "ravend.db", week_conf(tmp / "ravend.conf", state)


def test_a_slow_raw_download_lets_a_checkpoint_through_and_misses_no_row(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A download read slowly, as a slow client takes it, holds no read snapshot between its
    chunks: ravend's commit and a full checkpoint (TRUNCATE: no reader may be left on the
    -wal) go through meanwhile, and the lines are still ``ravenctl export``'s, no row lost or
    repeated where a chunk's edge falls among readings of one time."""
    from ravend.store import SqliteStore
    from ravend.web import queries as q
    from tests.helpers.readings import T0, demand

    db, conf = same_time_store(tmp_path)
    monkeypatch.setattr(q, "CHUNK", 7)  # 6 readings a second: edges fall inside one time
    store = SqliteStore(db, readonly=True, busy_timeout=5.0)  # as ravend-web opens it
    lo, hi = T0, T0 + 200
    lines = q.export_lines(store, "jsonl", None, None, lo, hi)
    body = next(lines)  # the first 16 KiB, then the client pauses
    assert 0 < body.count("\n") < 1200
    writer = sqlite3.connect(db, timeout=0.5, isolation_level=None)
    try:
        sink = SqliteSink(db)  # ravend commits a reading meanwhile (outside the range)
        sink.open()
        sink.write([demand(10_000)], [])
        sink.close()
        busy, wal_frames, _done = writer.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
        assert (busy, wal_frames) == (0, 0)
    finally:
        writer.close()
    body += "".join(lines)
    store.close()
    export = run_program("ravend.cli.ravenctl", "export", "--config", str(conf), "--since",
                         str(lo), "--until", str(hi), "--format", "jsonl")
    assert export.returncode == 0, export.stderr
    assert body.splitlines() == export.stdout.splitlines()
    assert len(body.splitlines()) == 1200


@pytest.mark.parametrize("rollup", [None, "hourly"])
@pytest.mark.parametrize("meter", [None, "0x00135003009999cd"])
def test_chunked_downloads_equal_one_query(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                           rollup: str | None, meter: str | None) -> None:
    """Any chunk size gives the lines of one query in (time, id) order, for one meter or all,
    raw or rolled up (both meters share every hour: edges fall among rows of one hour)."""
    from ravend.store import SqliteStore
    from ravend.web import queries as q
    from tests.helpers.readings import T0

    db, conf = same_time_store(tmp_path, times=120, step=60)  # two hours
    assert ravenctl.main(["purge", "--config", str(conf)]) == 0  # the hourly roll-ups
    store = SqliteStore(db, readonly=True)
    try:
        lo, hi = T0 - 3600, T0 + 3 * 3600
        whole = list(q.export_lines(store, "csv", rollup, meter, lo, hi))
        monkeypatch.setattr(q, "CHUNK", 1)
        assert list(q.export_lines(store, "csv", rollup, meter, lo, hi)) == whole
        monkeypatch.setattr(q, "CHUNK", 5)
        text = "".join(q.export_lines(store, "csv", rollup, meter, lo, hi))
    finally:
        store.close()
    assert text == "".join(whole)
    rows = [line.split(",") for line in text.splitlines()[1:]]
    meters = 1 if meter else 2
    if rollup is None:
        assert len(rows) == 120 * 3 * meters
    else:  # the three hours the two hours of readings touch, each meter's
        assert [r[0] for r in rows].count("0x00135003009999cd") == 3
        assert len(rows) == 3 * meters


def web_pid(conf: Path) -> int:
    """The ravend-web process serving ``conf`` (its command line names it)."""
    for proc in Path("/proc").iterdir():
        try:
            argv = (proc / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if b"ravend.cli.web" in argv and str(conf).encode() in argv:
            return int(proc.name)
    raise AssertionError(f"no ravend-web of {conf}")


def access_modes(pid: int, db: Path) -> list[int]:
    """How the process holds the database file open: the O_ACCMODE of each descriptor (its
    -wal and -shm aside: SQLite opens them read-write for every connection, read-only too)."""
    modes = []
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            target = os.readlink(fd)
            info = (Path(f"/proc/{pid}/fdinfo") / fd.name).read_text()
        except OSError:
            continue  # closed meanwhile
        if target == str(db):
            modes.append(int(info.split("flags:")[1].split()[0], 8) & os.O_ACCMODE)
    return modes


def test_answers_while_the_store_is_purged(tmp_path: Path) -> None:
    """``ravenctl purge`` (what ravend's maintenance does every purge_interval) deletes the
    week's raw readings in small chunks and vacuums while ravend-web answers every view: every
    answer 200 and whole, no "database is locked" anywhere, and ravend-web never opens the
    store for writing, so it can never hold the write lock."""
    _readings, db, conf = week_store(tmp_path)
    before = sqlite3.connect(db).execute("SELECT COUNT(*) FROM readings").fetchone()[0]
    purging = tmp_path / "purge.conf"  # a day of raw readings kept, in chunks of 50
    purging.write_text(conf.read_text().replace(
        "raw_days = 0", "raw_days = 1\npurge_chunk = 50\npurge_pause = 0.01"))
    lo, hi = GAP[0] - 2 * 86400, GAP[1] + 86400
    paths = ("meters", "now", "rollups?resolution=hourly&start=2025-03-06&end=2025-03-08",
             f"report?start={MONDAY}&end={NEXT_MONDAY}",
             f"readings?format=jsonl&start={lo}&end={hi}",
             f"readings?rollup=hourly&format=csv&start={lo}&end={hi}", "device", "health")
    with running_web(conf, tmp_path / "web.log") as url:
        pid = web_pid(conf)
        purge = subprocess.Popen(
            [sys.executable, "-m", "ravend.cli.ravenctl", "purge", "--config", str(purging)],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        answered = 0
        try:
            while purge.poll() is None:
                for path in paths:
                    reply = request(f"{url}/api/v1/{path}", timeout=20)
                    assert reply.status == 200, (path, reply)
                    if path.startswith("readings?format=jsonl"):
                        assert all(json.loads(line) for line in reply.body.splitlines())
                    elif path.startswith("readings"):
                        assert reply.body.startswith(b"meter_mac,period_start,")
                    else:
                        assert isinstance(reply.json(), dict)
                    answered += 1
                modes = access_modes(pid, db)
                assert modes and set(modes) == {os.O_RDONLY}, modes
        finally:
            out, err = purge.communicate(timeout=120)
        assert purge.returncode == 0, err
        assert answered >= len(paths), "the purge ended before one round of answers"
        after = request(f"{url}/api/v1/readings?format=jsonl&start={lo}&end={hi}")
        assert after.status == 200 and after.body == b""  # the purge did delete them
    assert "deleted" in out, out
    assert "locked" not in err + (tmp_path / "web.log").read_text()
    assert sqlite3.connect(db).execute("SELECT COUNT(*) FROM readings").fetchone()[0] < before


def test_a_download_whose_store_breaks_midway_is_cut_and_said_once(tmp_path: Path) -> None:
    """The store turns unreadable after a download's first chunk was sent (its later pages are
    overwritten): ravend-web says so in one line, with no traceback, and ends the answer without
    its last chunk, so the client sees a cut download, never a short one that looks whole. The
    next request is a 503 that names the store, and ravend-web stops cleanly."""
    from tests.helpers.readings import T0

    db, conf = same_time_store(tmp_path, times=2000)  # 12,000 readings: six chunks
    log = tmp_path / "web.log"
    with running_web(conf, log) as url:
        where = urlsplit(url)
        conn = http.client.HTTPConnection(where.hostname, where.port, timeout=10)
        conn.request("GET", f"/api/v1/readings?format=jsonl&start={T0}&end={T0 + 3000}")
        answer = conn.getresponse()
        assert answer.status == 200
        assert answer.read(1000)  # the first chunk is on its way; the client pauses
        size = db.stat().st_size
        with db.open("r+b") as file:  # every page after the first few is garbage now
            file.seek(8 * 4096)
            file.write(os.urandom(size - 8 * 4096))
        with pytest.raises(http.client.IncompleteRead):
            answer.read()
        conn.close()
        again = request(f"{url}/api/v1/readings?format=jsonl&start={T0}&end={T0 + 3000}")
        assert again[0] == 503 and "the store cannot be read" in again[2].decode(), again
    text = log.read_text()
    assert text.count("cut short: the store cannot be read") == 1, text
    assert "Traceback" not in text and "Exception while serving" not in text, text
