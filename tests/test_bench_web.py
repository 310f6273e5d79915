"""The web bench rows' assumptions (bench/web.py, bench/browser.py), checked without running
them: the writer's meter must not become the pages' default meter, and every view the page has
must be among those whose first render is timed."""

from __future__ import annotations

import re
from pathlib import Path

from bench import browser, web, yearstore
from ravend.simulator import MeterSimulator

APP_JS = Path(__file__).resolve().parent.parent / "ravend" / "web" / "static" / "app.js"


def test_the_writers_meter_sorts_after_the_years() -> None:
    """The API's default meter is the smallest MAC: the year's must stay first, or every
    default answer and every view would show the writer's few minutes instead of the year."""
    writer = MeterSimulator("raven", seed=web.WRITER_SEED, pushes=False).meter_macs
    assert writer == [writer[0]] and writer[0] > yearstore.METER


def test_every_view_of_the_page_is_timed() -> None:
    found = re.search(r"const VIEWS = \[([^\]]*)\]", APP_JS.read_text(encoding="utf-8"))
    assert found is not None
    page = set(re.findall(r'"([a-z]+)"', found.group(1)))
    store = yearstore.YearStore(Path("x.db"), Path("x.conf"), 30, 0, yearstore.START)
    timed = browser.views(store)
    assert set(timed) == page
    for view, (address, ready) in timed.items():
        assert address.startswith(f"/#view={view}") and ready.startswith(view)


def test_p95_is_over_every_request() -> None:
    store = yearstore.YearStore(Path("x.db"), Path("x.conf"), 30, 0, yearstore.START)
    times = web.WebTimes(store, {"a": [0.001] * 95, "b": [0.5] * 5})
    assert times.p95() == 0.5
    times.seconds["a"].append(0.001)
    assert times.p95() == 0.001
