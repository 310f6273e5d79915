"""Each ravend-web view's first render in headless Chromium, on the year store (the quick run:
its 30 days): Debian's /usr/bin/chromium and /usr/bin/chromedriver driven by python3-selenium,
as tests/test_web_browser.py drives them. Without them the row fails: it never skips.

A first render is a new page, not a change of the address's #fragment: each navigation starts
from about:blank, with the browser's cache off (every file and every API answer is fetched
again, as on a first visit). Its time runs from the navigation's start (``performance.now()``
counts from it) to the first animation frame after the page's own ready marker
(``document.body.dataset.ready``, which app.js sets once the view's chart and table are filled
from the API, or the Now view's first pushed snapshot): a script installed before the page's
own records both. The views are opened in turn, 3 rounds (full: 5) after one warm-up round
(the browser's own first start); the row is the slowest view's median, every time is in the detail.
"""

from __future__ import annotations

import statistics
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench import yearstore
from bench.core import Context
from bench.web import running_web

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
#: Rounds of every view (after one to warm up): quick, full.
QUICK_RUNS, FULL_RUNS = 3, 5
#: A closed live view gives its stream slot back within about half a second (ravend-web looks
#: for the client's end every 0.5 s); a second between live views keeps every open a fresh
#: one, never refused (503) for a slot still held by the round before.
NOW_SPACING = 1.0
#: The desktop size of tests/test_web_browser.py.
WINDOW = (1366, 900)
#: Runs in every new document before the page's scripts: the ready marker's time, and the
#: start of the frame after it (the one that paints what the view has just drawn).
_WATCH = """
new MutationObserver(function (_, observer) {
  var ready = document.body && document.body.dataset.ready;
  if (!ready || window.__benchReady) return;
  window.__benchReady = {marker: ready, at: performance.now()};
  observer.disconnect();
  requestAnimationFrame(function () { window.__benchReady.painted = performance.now(); });
}).observe(document, {subtree: true, attributes: true, attributeFilter: ["data-ready"]});
"""


@dataclass
class RenderTimes:
    store: yearstore.YearStore
    seconds: dict[str, list[float]] = field(default_factory=dict)
    markers: dict[str, str] = field(default_factory=dict)
    chromium: str = ""

    def median(self, view: str) -> float:
        return statistics.median(self.seconds[view])

    def slowest(self) -> str:
        return max(self.seconds, key=self.median)

    def detail(self) -> dict[str, Any]:
        return {"readings": self.store.readings, "days": self.store.days,
                "runs": len(next(iter(self.seconds.values()))),
                "window": list(WINDOW), "cache": "disabled", "browser": self.chromium,
                "slowest": self.slowest(),
                "median_s": {v: round(self.median(v), 4) for v in self.seconds},
                "max_s": {v: round(max(t), 4) for v, t in self.seconds.items()},
                "ready_markers": self.markers}


def views(store: yearstore.YearStore) -> dict[str, tuple[str, str]]:
    """Each view's address (after the server's base) and what its ready marker starts with."""
    middle = store.start + store.days // 2 * yearstore.DAY
    date = time.strftime("%Y-%m-%d", time.gmtime(middle))
    out = {"now": ("/#view=now", "now:0x")}
    for view in ("day", "week", "month", "year"):
        out[view] = (f"/#view={view}&date={date}", f"{view}:")
    out["data"] = ("/#view=data", "data")
    out["device"] = ("/#view=device", "device")
    return out


def _driver(profile: Path) -> Any:
    for path, package in ((CHROMIUM, "chromium"), (CHROMEDRIVER, "chromium-driver")):
        if not path.exists():
            raise RuntimeError(f"{path} is missing: apt install {package} (make deps)")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu",
                "--disable-background-networking", "--disable-component-update",
                "--disable-sync", "--no-first-run", "--hide-scrollbars",
                f"--user-data-dir={profile}"):
        options.add_argument(arg)
    driver = webdriver.Chrome(options=options, service=Service(str(CHROMEDRIVER)))
    driver.set_window_size(*WINDOW)
    driver.execute_cdp_cmd("Network.enable", {})
    driver.execute_cdp_cmd("Network.setCacheDisabled", {"cacheDisabled": True})
    driver.execute_cdp_cmd("Page.addScriptToEvaluateOnNewDocument", {"source": _WATCH})
    return driver


def _render(driver: Any, url: str, ready: str) -> tuple[float, str]:
    """One first render of ``url``: seconds from navigation start to the painted frame."""
    driver.get("about:blank")
    driver.get(url)
    deadline = time.monotonic() + 15
    while True:
        seen = driver.execute_script("return window.__benchReady || null")
        if seen and "painted" in seen:
            break
        if time.monotonic() > deadline:
            error = driver.execute_script("var e = document.getElementById('error');"
                                          " return e && !e.hidden ? e.textContent : ''")
            raise RuntimeError(f"{url} did not draw within 15 s (ready marker {seen!r},"
                               f" error {error!r})")
        time.sleep(0.02)
    if not str(seen["marker"]).startswith(ready):
        raise RuntimeError(f"{url}: the page drew {seen['marker']!r}, not {ready}...")
    if driver.execute_script("var e = document.getElementById('error'); return !e.hidden"):
        raise RuntimeError(f"{url}: the page shows an error")
    return float(seen["painted"]) / 1000, str(seen["marker"])


def _check_filled(driver: Any, view: str) -> None:
    """A period view drew rows with figures (not an empty year)."""
    if view in ("day", "week", "month", "year"):
        filled = driver.execute_script(
            "return Array.from(document.querySelectorAll('#table tbody tr td:nth-child(2)'))"
            ".filter(function (td) { return /[0-9]/.test(td.textContent); }).length")
        if not filled:
            raise RuntimeError(f"the {view} view drew no figures")


def measure(ctx: Context) -> RenderTimes:
    days = ctx.pick(yearstore.QUICK_DAYS, yearstore.FULL_DAYS)
    store = yearstore.store(days, ctx.log)
    work = ctx.work / "browser"
    work.mkdir()
    times = RenderTimes(store)
    with running_web(store.config, work / "ravend-web.log") as web:
        driver = _driver(work / "chromium-profile")
        try:
            times.chromium = str(driver.capabilities.get("browserVersion", ""))
            pages = views(store)
            times.seconds = {view: [] for view in pages}
            runs = ctx.pick(QUICK_RUNS, FULL_RUNS)
            ctx.log(f"browser: {len(pages)} views in turn, {runs} first renders each (after one"
                    f" to warm up) on {store.readings:,} readings")
            now_at = -NOW_SPACING
            for round_ in range(runs + 1):  # round 0 warms up: the browser's first start
                for view, (path, ready) in pages.items():
                    if view == "now":  # let the server notice the last live view has closed
                        time.sleep(max(0.0, now_at + NOW_SPACING - time.monotonic()))
                        now_at = time.monotonic()
                    took, times.markers[view] = _render(driver, web.base + path, ready)
                    _check_filled(driver, view)
                    if round_:
                        times.seconds[view].append(took)
        finally:
            driver.quit()
    return times
