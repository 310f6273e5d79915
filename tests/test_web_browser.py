"""ravend-web's pages in a real browser: Debian's headless Chromium driven by Selenium (Debian's
python3-selenium, or selenium from PyPI, driving the same Chromium and chromedriver).

The period views are checked against the store itself (the known week of tests/test_report.py,
with its 6-hour outage): each table row equals the stored roll-up. The live view runs on the
real path (simulator with two meters -> ravend -> SQLite) and must show a new reading within
2 s; the meter selector switches meters. Every view is screenshot at phone (390x844) and
desktop (1366x900) sizes into $RAVEND_ARTIFACTS (else a temporary directory), light and, with
prefers-color-scheme: dark emulated through the DevTools protocol, dark (``*-dark.png``)."""

from __future__ import annotations

import datetime as dt
import os
import shutil
import sqlite3
import time
from decimal import Decimal
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import Select

from ravend.simulator import MeterSimulator
from tests.helpers.process import WebProcess, running_ravend, stored_rows, write_config
from tests.helpers.servers import free_port, port_accepts
from tests.helpers.wait import wait_for
from tests.helpers.web import running_web
from tests.test_web_api import slot, week_store

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
#: What the pages show for an unknown value (an en dash).
UNKNOWN = "\u2013"
SIZES = {"phone": (390, 844), "desktop": (1366, 900)}
PHOENIX = ZoneInfo("America/Phoenix")


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    for path, package in ((CHROMIUM, "chromium"), (CHROMEDRIVER, "chromium-driver")):
        assert Path(path).exists(), f"{path} is missing: apt install {package} (make deps)"
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu",
                "--disable-background-networking", "--disable-component-update",
                "--disable-sync", "--no-first-run", "--hide-scrollbars",
                f"--user-data-dir={tmp_path_factory.mktemp('chromium-profile')}"):
        options.add_argument(arg)
    driver = webdriver.Chrome(options=options, service=Service(CHROMEDRIVER))
    try:
        yield driver
    finally:
        driver.quit()


@pytest.fixture(scope="module")
def artifacts(tmp_path_factory) -> Path:
    where = os.environ.get("RAVEND_ARTIFACTS")
    path = Path(where) / "screenshots" if where else tmp_path_factory.mktemp("screenshots")
    path.mkdir(parents=True, exist_ok=True)
    return path


def show(driver, url: str, ready: str, timeout: float = 10) -> float:
    """Open ``url`` and wait until the page says it has drawn ``ready``; the seconds it took."""
    started = time.monotonic()
    driver.get(url)
    assert wait_for(lambda: (driver.execute_script("return document.body.dataset.ready")
                             or "").startswith(ready), timeout), (
        url, driver.execute_script("return document.body.dataset.ready"),
        driver.find_element(By.ID, "error").text)
    return time.monotonic() - started


def shoot(driver, artifacts: Path, name: str) -> None:
    path = artifacts / f"{name}.png"
    assert driver.save_screenshot(str(path)), path
    assert path.stat().st_size > 5000
    # Nothing wider than the screen: a phone never scrolls sideways.
    assert driver.execute_script(
        "return document.documentElement.scrollWidth <= window.innerWidth + 1"), name


def color_scheme(driver, scheme: str) -> None:
    """Emulate prefers-color-scheme (``dark``, ``light``; ``""``: the browser's own)."""
    driver.execute_cdp_cmd("Emulation.setEmulatedMedia", {
        "features": [{"name": "prefers-color-scheme", "value": scheme}]})


def lightness(driver) -> float:
    """The page background's relative luminance (0 black .. 1 white), from its computed
    style."""
    rgb = driver.execute_script(
        "return getComputedStyle(document.body).backgroundColor.match(/[0-9.]+/g).map(Number)")

    def linear(c: float) -> float:
        c /= 255
        return c / 12.92 if c <= 0.04045 else ((c + 0.055) / 1.055) ** 2.4

    r, g, b = (linear(c) for c in rgb[:3])
    return 0.2126 * r + 0.7152 * g + 0.0722 * b


def shoot_dark(driver, artifacts: Path, name: str, url: str, ready: str) -> None:
    """The view at ``url`` again in dark mode (drawn anew: the charts take their colours from
    the page's when they draw), screenshot as ``name-dark``; light again afterwards."""
    assert lightness(driver) > 0.8, name  # the light page that was just shot
    color_scheme(driver, "dark")
    try:
        show(driver, url, ready)
        assert lightness(driver) < 0.05, name
        shoot(driver, artifacts, f"{name}-dark")
    finally:
        color_scheme(driver, "")


def table(driver) -> list[list[str]]:
    rows = driver.find_elements(By.CSS_SELECTOR, "#table tbody tr")
    return [[c.text for c in r.find_elements(By.CSS_SELECTOR, "th, td")]
            + [r.get_attribute("class")] for r in rows]


def close(shown: str, stored, places: int) -> bool:
    if stored is None:
        return shown == UNKNOWN
    half = Decimal(1).scaleb(-places) / 2
    return abs(Decimal(shown) - Decimal(str(stored))) <= half + Decimal("1e-9")


# --- the period views against the known week --------------------------------------------------


@pytest.fixture(scope="module")
def week_url(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("browser-week")
    _readings, db, conf = week_store(tmp)
    with running_web(conf, tmp / "web.log") as url:
        yield url, db


def stored(db: Path, table_name: str, lo: int, hi: int) -> list[tuple]:
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        return conn.execute(
            "SELECT period_start, delivered_kwh, received_kwh, cost, demand_avg_kw, demand_max_kw,"
            f" demand_samples FROM {table_name} WHERE period_start >= ? AND period_start < ?"
            " ORDER BY period_start", (lo, hi)).fetchall()
    finally:
        conn.close()


def local(day: str) -> int:
    return int(dt.datetime.combine(dt.date.fromisoformat(day), dt.time(), PHOENIX).timestamp())


def check_rows(rows: list[list[str]], want: list[tuple]) -> None:
    assert len(rows) == len(want)
    for row, (_start, kwh_in, kwh_out, cost, avg, peak, _n) in zip(rows, want, strict=True):
        assert close(row[1], kwh_in, 3) and close(row[2], kwh_out, 3), (row, kwh_in, kwh_out)
        assert close(row[3], cost, 2) and close(row[4], avg, 3) and close(row[5], peak, 3), row


@pytest.mark.parametrize("size", sorted(SIZES))
def test_period_views_show_the_stored_rollups(browser, week_url, artifacts, size) -> None:
    url, db = week_url
    browser.set_window_size(*SIZES[size])
    # Day: the UTC hours of the local day, the outage (20:00 to midnight) as gap rows.
    show(browser, f"{url}/#view=day&date=2025-03-06", "day:2025-03-06")
    rows = table(browser)
    want = stored(db, "rollup_hourly", local("2025-03-06"), local("2025-03-07"))
    check_rows(rows, want)
    assert [r[0] for r in rows if "gap" in r[-1]] == ["20:00", "21:00", "22:00", "23:00"]
    assert all(r[4] == UNKNOWN and r[6] == "gap: no reading" for r in rows if "gap" in r[-1])
    assert "4 periods without any reading" in browser.find_element(By.ID, "totals").text
    assert browser.find_element(By.ID, "meter-choice").is_displayed() is False  # one meter
    shoot(browser, artifacts, f"day-{size}")
    shoot_dark(browser, artifacts, f"day-{size}", f"{url}/#view=day&date=2025-03-06",
               "day:2025-03-06")
    # Week (compared with the week before) and month: local days.
    show(browser, f"{url}/#view=week&date=2025-03-06&compare=1", "week:2025-03-03")
    check_rows(table(browser), stored(db, "rollup_daily", local("2025-03-03"),
                                      local("2025-03-10")))
    assert "The period before" in browser.find_element(By.ID, "totals").text
    shoot(browser, artifacts, f"week-{size}")
    shoot_dark(browser, artifacts, f"week-{size}", f"{url}/#view=week&date=2025-03-06&compare=1",
               "week:2025-03-03")
    show(browser, f"{url}/#view=month&date=2025-03-06", "month:2025-03-01")
    rows = table(browser)
    days = {r[0]: r for r in stored(db, "rollup_daily", local("2025-03-01"), local("2025-04-01"))}
    assert len(rows) == 31
    for row in rows:
        start = local(row[0])
        if start in days:
            check_rows([row], [days[start]])
        else:
            assert row[1] == UNKNOWN and "gap" in row[-1]
    shoot(browser, artifacts, f"month-{size}")
    shoot_dark(browser, artifacts, f"month-{size}", f"{url}/#view=month&date=2025-03-06",
               "month:2025-03-01")
    # Year: months, each the sum of its stored days.
    show(browser, f"{url}/#view=year&date=2025-03-06", "year:2025-01-01")
    rows = table(browser)
    assert [r[0] for r in rows] == [f"2025-{m:02d}" for m in range(1, 13)]
    march = list(days.values())
    total_in = sum(Decimal(str(r[1])) for r in march if r[1] is not None)
    assert close(rows[2][1], total_in, 3)
    assert close(rows[2][5], max(Decimal(str(r[5])) for r in march if r[5] is not None), 3)
    # Previous and next walk the years.
    browser.find_element(By.ID, "prev").click()
    assert wait_for(lambda: browser.execute_script("return document.body.dataset.ready")
                    == "year:2024-01-01:0x00135003001234ab", 5)
    shoot(browser, artifacts, f"year-empty-{size}")
    show(browser, f"{url}/#view=year&date=2025-03-06", "year:2025-01-01")
    shoot(browser, artifacts, f"year-{size}")
    shoot_dark(browser, artifacts, f"year-{size}", f"{url}/#view=year&date=2025-03-06",
               "year:2025-01-01")


# --- the live view, the selector, Data and Device on the real path -------------------------


@pytest.fixture(scope="module")
def live_url(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("browser-live")
    link = str(tmp / "stick")
    state = tmp / "state"
    sim = MeterSimulator("emu2", link=link, seed=11, speed=4, meters=2,
                         start_time=int(time.time()), reply_delay=0.02).start()
    conf = write_config(tmp / "ravend.conf", state, link, service={"commit_interval": "0.2"},
                        retention={"rollup_interval": "1s", "time_zone": "UTC"})
    db = state / "ravend.db"
    with running_ravend(conf, tmp / "ravend.log", then_stop=(sim.stop,)) as ravend:
        assert wait_for(lambda: {r[0] for r in stored_rows(db) if r[1] == "demand"}
                        == set(sim.meter_macs), 30), ravend.log()
        with running_web(conf, tmp / "web.log") as url:
            yield url, db, sim, conf


def received(db: Path, newest_id: int) -> float:
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        return conn.execute("SELECT received_at FROM readings WHERE id = ?",
                            (newest_id,)).fetchone()[0]
    finally:
        conn.close()


def test_live_view_and_meter_selector(browser, live_url, artifacts) -> None:
    url, db, sim, _conf = live_url
    browser.set_window_size(*SIZES["desktop"])
    first, second = sorted(sim.meter_macs)  # the API lists meters in order
    show(browser, f"{url}/#view=now", f"now:{first}")
    now = browser.find_element(By.ID, "now")
    seen = int(now.get_attribute("data-newest-id"))
    delays = []
    for _ in range(2):
        assert wait_for(lambda s=seen: int(now.get_attribute("data-newest-id")) > s, 15)
        arrived = time.time()
        seen = int(now.get_attribute("data-newest-id"))
        delays.append(arrived - received(db, seen))
    assert max(delays) < 2.0, delays
    assert browser.find_element(By.ID, "demand").text not in ("", UNKNOWN)
    choice = browser.find_element(By.ID, "meter")
    assert choice.is_displayed()
    assert [o.get_attribute("value") for o in Select(choice).options] == [first, second]
    Select(choice).select_by_value(second)
    assert wait_for(lambda: (browser.execute_script("return document.body.dataset.ready")
                             or "").startswith(f"now:{second}"), 10)
    assert f"meter={second}" in browser.current_url
    for size in sorted(SIZES):
        browser.set_window_size(*SIZES[size])
        show(browser, f"{url}/#view=now&meter={second}", f"now:{second}")
        shoot(browser, artifacts, f"now-{size}")
        shoot_dark(browser, artifacts, f"now-{size}", f"{url}/#view=now&meter={second}",
                   f"now:{second}")
        show(browser, f"{url}/#view=data&meter={second}", "data")
        link = browser.find_element(By.ID, "download-csv").get_attribute("href")
        assert "/api/v1/readings?format=csv" in link and f"meter={second}" in link
        shoot(browser, artifacts, f"data-{size}")
        shoot_dark(browser, artifacts, f"data-{size}", f"{url}/#view=data&meter={second}", "data")
        show(browser, f"{url}/#view=device", "device")
        text = browser.find_element(By.ID, "device-table").text
        assert "fw version" in text and first in text and second in text
        shoot(browser, artifacts, f"device-{size}")
        shoot_dark(browser, artifacts, f"device-{size}", f"{url}/#view=device", "device")


def stream_state(driver) -> tuple[str, str]:
    """The Now view's stream state (connecting, live, reconnecting) and the line shown for it
    ("" when hidden)."""
    now = driver.find_element(By.ID, "now")
    line = driver.find_element(By.ID, "stream-state")
    return (now.get_attribute("data-stream") or "", line.text if line.is_displayed() else "")


def test_live_view_refused_while_full_reconnects_when_a_slot_frees(browser, live_url) -> None:
    """Every live view slot taken by other clients: the page says it is reconnecting (not a
    stale "waiting for a reading"), and once the slots free it shows a new reading by itself,
    without a reload."""
    url, db, _sim, _conf = live_url
    browser.set_window_size(*SIZES["phone"])
    browser.get("about:blank")  # an earlier page's live view closed, its slot freed
    others = [slot(url, 10)[0] for _ in range(4)]  # [web] max_streams by default
    try:
        browser.get(f"{url}/#view=now")  # a new page
        assert wait_for(lambda: stream_state(browser)[0] == "reconnecting", 10), (
            stream_state(browser))
        assert "reconnecting" in stream_state(browser)[1]
        assert browser.find_element(By.ID, "direction").text != "waiting for a reading"
        time.sleep(3)  # a retry or two refused meanwhile: still reconnecting, nothing shown
        assert stream_state(browser)[0] == "reconnecting"
        assert not browser.find_element(By.ID, "now").get_attribute("data-newest-id")
    finally:
        for live in others:
            live.hang_up()
    freed = time.monotonic()
    assert wait_for(lambda: stream_state(browser) == ("live", ""), 20), stream_state(browser)
    recovered = time.monotonic() - freed
    now = browser.find_element(By.ID, "now")
    seen = int(now.get_attribute("data-newest-id"))
    assert wait_for(lambda: int(now.get_attribute("data-newest-id")) > seen, 15)
    assert received(db, int(now.get_attribute("data-newest-id"))) > time.time() - 10
    assert browser.find_element(By.ID, "demand").text not in ("", UNKNOWN)
    assert recovered < 10, recovered  # the backoff's next step, 2 s then 4 s then 8 s


def test_live_view_recovers_when_ravend_web_restarts(browser, live_url, tmp_path) -> None:
    """ravend-web stopped and started again while the Now page stays open: the page says it
    is reconnecting meanwhile, then shows new readings again by itself."""
    _url, db, _sim, conf = live_url
    port = free_port()

    def start() -> WebProcess:
        web = WebProcess(conf, tmp_path / "web.log", "--listen", f"127.0.0.1:{port}")
        assert wait_for(lambda: port_accepts("127.0.0.1", port) or web.proc.poll() is not None,
                        15), web.log()
        return web

    browser.set_window_size(*SIZES["phone"])
    web = start()
    try:
        show(browser, f"http://127.0.0.1:{port}/#view=now", "now:")
        assert stream_state(browser) == ("live", "")
        now = browser.find_element(By.ID, "now")
        assert web.stop().code == 0, web.log()
        assert wait_for(lambda: stream_state(browser)[0] == "reconnecting", 10), (
            stream_state(browser))
        assert "reconnecting" in stream_state(browser)[1]
        seen = int(now.get_attribute("data-newest-id"))
        time.sleep(3)  # down meanwhile: the browser's own retry is refused too
        web = start()
        assert wait_for(lambda: stream_state(browser) == ("live", "")
                        and int(now.get_attribute("data-newest-id")) > seen, 20), (
            stream_state(browser), web.log())
        assert received(db, int(now.get_attribute("data-newest-id"))) > time.time() - 10
    finally:
        assert web.stop().code == 0, web.log()
    assert "Traceback" not in web.log(), web.log()


def test_every_view_renders_within_a_second(browser, week_url) -> None:
    url, _db = week_url
    browser.set_window_size(*SIZES["desktop"])
    for view, date, ready in (("day", "2025-03-06", "day"), ("week", "2025-03-06", "week"),
                              ("month", "2025-03-06", "month"), ("year", "2025-03-06", "year"),
                              ("data", "", "data"), ("device", "", "device")):
        took = show(browser, f"{url}/#view={view}&date={date}", ready)
        assert took < 1.0, (view, took)


def test_screenshots_can_be_kept(artifacts) -> None:
    """RAVEND_KEEP_SCREENSHOTS=DIR copies this run's screenshots there (doc/screenshots)."""
    keep = os.environ.get("RAVEND_KEEP_SCREENSHOTS")
    shots = sorted(artifacts.glob("*.png"))
    assert len(shots) >= 28
    assert len([s for s in shots if s.name.endswith("-dark.png")]) == 14
    if keep:
        Path(keep).mkdir(parents=True, exist_ok=True)
        for shot in shots:
            if "empty" not in shot.name:
                shutil.copy(shot, Path(keep) / shot.name)
