"""The endpoints under /api/v1/: each takes the query parameters and answers JSON (or, for
readings, CSV or JSON lines). Read-only; the pages use nothing else.

The figures are ``ravend.web.queries``'; this module turns parameters into ranges (local days
in [retention] time_zone, as ``ravenctl report`` counts them) and refuses what it cannot use
with a 400 that says why.
"""

from __future__ import annotations

import datetime as dt
import logging
import re
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ravend import __version__
from ravend import rollup as ru
from ravend.db import store_errors
from ravend.web import queries as q
from ravend.web.jsontext import dumps

if TYPE_CHECKING:
    from ravend.config import Config
    from ravend.web.store import Stores
    from ravend.web.stream import Poller

log = logging.getLogger("ravend.web")
METER = re.compile(r"^0x[0-9a-f]{16}$")
#: The longest range each resolution answers, in days.
MAX_DAYS = {"hourly": 62, "daily": 732, "monthly": 3660}
#: How long `now` waits for the running ravend's health answer.
HEALTH_TIMEOUT = 1.0
#: Seconds a client refused a live view (every slot taken) is told to wait (Retry-After): a
#: closed page's slot is free again within about a second.
RETRY_AFTER = 2


class BadRequest(ValueError):
    """A parameter that cannot be used: 400 with this text."""


class DownloadCut(Exception):
    """A download whose store could not be read after its first bytes were sent: ravend-web
    says so in one line, then the answer ends without its last chunk, so the client sees a
    cut download rather than a short one that looks whole. server.py keeps waitress from
    logging a traceback for it as well."""


@dataclass
class Answer:
    status: int
    body: Iterator[bytes] | bytes
    content_type: str = "application/json"
    headers: list[tuple[str, str]] = field(default_factory=list)


def json_answer(value: Any, status: int = 200) -> Answer:
    return Answer(status, (dumps(value) + "\n").encode())


@dataclass
class Context:
    config: Config
    stores: Stores
    poller: Poller
    clock: Callable[[], float] = time.time

    @property
    def tz(self) -> dt.tzinfo:
        return ru.zone(self.config.retention.time_zone)


def _one(params: dict[str, list[str]], name: str) -> str | None:
    values = params.get(name)
    if not values:
        return None
    if len(values) > 1:
        raise BadRequest(f"{name} given more than once")
    return values[0]


def _choice(params: dict[str, list[str]], name: str, choices: tuple[str, ...],
            default: str) -> str:
    value = _one(params, name)
    if value is None:
        return default
    if value not in choices:
        raise BadRequest(f"{name} must be one of {', '.join(choices)}")
    return value


def _meter(ctx: Context, params: dict[str, list[str]], *, required: bool = True) -> str | None:
    value = _one(params, "meter")
    if value is not None:
        if not METER.match(value):
            raise BadRequest("meter must be 0x and 16 lower-case hex digits")
        return value
    if not required:
        return None
    found = q.meters(ctx.stores.get())
    return found[0] if found else None


#: The latest time a parameter may name (2100-01-01): Unix seconds as ravend stores them.
LATEST = 4_102_444_800
_DATE = re.compile(r"^[0-9]{4}-[0-9]{2}-[0-9]{2}$")
_SECONDS = re.compile(r"^[0-9]{1,10}$")


def parse_time(text: str, tz: dt.tzinfo) -> int:
    """YYYY-MM-DD (local midnight) or Unix seconds, from 1970 to 2100: exactly what the
    OpenAPI document says, so that anything else is refused (400)."""
    t = text.strip()
    if _SECONDS.match(t) and int(t) <= LATEST:
        return int(t)
    if _DATE.match(t):
        try:
            day = dt.date.fromisoformat(t)
            if 1970 <= day.year < 2100:
                return max(0, int(dt.datetime.combine(day, dt.time(), tz).timestamp()))
        except (ValueError, OverflowError, OSError):
            pass
    raise BadRequest(f"cannot read time {text!r} (YYYY-MM-DD from 1970 to 2099, or Unix"
                     f" seconds up to {LATEST})")


def _range(ctx: Context, params: dict[str, list[str]], default_days: int,
           max_days: int) -> tuple[int, int]:
    """[start, end) from the parameters; default: the last ``default_days`` local days. A
    range longer than ``max_days`` is cut there; one that ends before it starts is empty."""
    now = ctx.clock()
    today = ru.day_period(int(now), ctx.tz)
    start_text, end_text = _one(params, "start"), _one(params, "end")
    end = parse_time(end_text, ctx.tz) if end_text is not None else today.end
    if start_text is not None:
        start = parse_time(start_text, ctx.tz)
    else:
        last = dt.datetime.fromtimestamp(max(end - 1, 0), ctx.tz).date()
        day = last - dt.timedelta(days=default_days - 1)
        start = max(0, int(dt.datetime.combine(day, dt.time(), ctx.tz).timestamp()))
    return start, max(start, min(end, start + max_days * 86400))


# --- endpoints --------------------------------------------------------------------------------


def meters(ctx: Context, params: dict[str, list[str]]) -> Answer:
    return json_answer({"meters": q.meters(ctx.stores.get())})


def now_snapshot(ctx: Context, meter: str | None) -> dict[str, Any]:
    from ravend import health

    at = ctx.clock()
    store = ctx.stores.get()
    body: dict[str, Any] = {"time": at, "time_zone": ru.zone_name(ctx.tz)}
    if meter is None:
        body.update({"meter_mac": None, "demand_kw": None, "direction": None,
                     "demand_time": None, "today": None, "month": None,
                     "last_reading_at": None, "last_reading_age_s": None,
                     "newest_id": q.newest_id(store), "link": q.link(store)})
    else:
        body.update(q.now(store, meter, ctx.tz, at))
    service = health.query(ctx.config, timeout=HEALTH_TIMEOUT)
    body["service"] = {"running": service.running, "answered": service.answered,
                       "summary": service.summary(),
                       "down": [p.get("name") for p in service.down()]}
    return body


def now(ctx: Context, params: dict[str, list[str]]) -> Answer:
    return json_answer(now_snapshot(ctx, _meter(ctx, params)))


def now_stream(ctx: Context, params: dict[str, list[str]]) -> Answer:
    meter = _meter(ctx, params)
    if not ctx.poller.acquire():
        answer = json_answer({"error": "too many live views open; try again later"}, 503)
        answer.headers.append(("Retry-After", str(RETRY_AFTER)))
        return answer
    return Answer(200, ctx.poller.stream(lambda: now_snapshot(ctx, meter)),
                  "text/event-stream", [("X-Accel-Buffering", "no")])


def rollups(ctx: Context, params: dict[str, list[str]]) -> Answer:
    resolution = _choice(params, "resolution", q.RESOLUTIONS, "hourly")
    meter = _meter(ctx, params)
    start, end = _range(ctx, params, 1, MAX_DAYS[resolution])
    points = [] if meter is None else q.rollups(ctx.stores.get(), meter, resolution, start, end,
                                                ctx.tz, ctx.clock())
    return json_answer({"meter_mac": meter, "resolution": resolution, "start": start,
                        "end": end, "time_zone": ru.zone_name(ctx.tz), "points": points})


def report(ctx: Context, params: dict[str, list[str]]) -> Answer:
    meter = _meter(ctx, params, required=False)
    start, end = _range(ctx, params, 7, MAX_DAYS["daily"])
    days = q.periods("daily", start, end, ctx.tz)
    return json_answer({"time_zone": ru.zone_name(ctx.tz),
                        "meters": q.report(ctx.stores.get(), meter, days, ctx.tz, ctx.clock())})


def readings(ctx: Context, params: dict[str, list[str]]) -> Answer:
    fmt = _choice(params, "format", ("csv", "jsonl"), "csv")
    kind = _choice(params, "rollup", ("raw", "hourly", "daily"), "raw")
    meter = _meter(ctx, params, required=False)
    start, end = _range(ctx, params, 1, 3660)
    lines = q.export_lines(ctx.stores.get(), fmt, None if kind == "raw" else kind, meter, start,
                           end)
    name = f"ravend-{kind}-{start}-{end}.{fmt}"
    # The first chunk is read before the answer starts: a store that cannot be read then is a
    # 503 with its reason (route()), not a 200 cut short.
    first = next(lines, "")
    body = _download(ctx, name, first, lines)
    return Answer(200, body, "text/csv; charset=utf-8" if fmt == "csv"
                  else "application/jsonl; charset=utf-8",
                  [("Content-Disposition", f'attachment; filename="{name}"')])


def _download(ctx: Context, name: str, first: str, lines: Iterator[str]) -> Iterator[bytes]:
    yield first.encode()
    try:
        for line in lines:
            yield line.encode()
    except store_errors() as exc:
        ctx.stores.drop()
        log.warning("download %s cut short: the store cannot be read: %s", name, exc)
        raise DownloadCut(name) from exc


def device(ctx: Context, params: dict[str, list[str]]) -> Answer:
    return json_answer(q.device(ctx.stores.get(), _meter(ctx, params, required=False)))


def health(ctx: Context, params: dict[str, list[str]]) -> Answer:
    from ravend import health as service_health

    store: dict[str, Any] = {"engine": ctx.config.web.store, "ok": True, "error": None}
    try:
        store["newest_id"] = q.newest_id(ctx.stores.get())
    except FileNotFoundError as exc:
        store.update(ok=False, error=str(exc))
    except store_errors() as exc:
        ctx.stores.drop()
        store.update(ok=False, error=str(exc))
    service = service_health.query(ctx.config, timeout=HEALTH_TIMEOUT)
    return json_answer({"version": __version__, "store": store, "service": service.as_dict()})


def openapi(ctx: Context, params: dict[str, list[str]]) -> Answer:
    from ravend.web.openapi import document

    return json_answer(document())


ROUTES: dict[str, Callable[[Context, dict[str, list[str]]], Answer]] = {
    "/api/v1/meters": meters,
    "/api/v1/now": now,
    "/api/v1/now/stream": now_stream,
    "/api/v1/rollups": rollups,
    "/api/v1/report": report,
    "/api/v1/readings": readings,
    "/api/v1/device": device,
    "/api/v1/health": health,
    "/api/v1/openapi.json": openapi,
}
