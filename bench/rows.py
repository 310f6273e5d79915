"""Every row of the bench table, in print order: one function per row.

To add a row, write ``def name(ctx: Context) -> Result`` under ``@row(key, what, unit,
target)``; reuse a shared run through the measurement modules (their runs are memoised on the
context, so several rows cost one run), or measure something new in a module of its own.
``target=None`` makes a row informational: printed, kept, never failing.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

from bench import fuzz, latency, parsing, throughput
from bench.core import Context, Result, Target, row
from ravend.protocol.framer import MAX_FRAGMENT_BYTES

MIB = 1024.0

# --- 1. parsing on one core --------------------------------------------------------------------


@row("decoder", "decoder fragments/s, one core (ravend)", "frag/s", Target(">=", 50_000))
def decoder_rate(ctx: Context) -> Result:
    run = parsing.result(ctx, "ravend")
    return Result(run.rate, detail={**run.detail(), "mix": dict(parsing.stream(ctx).counts)})


@row("framer", "  framer alone, same stream (ravend)", "frag/s", None)
def framer_rate(ctx: Context) -> Result:
    run = parsing.result(ctx, "framer")
    return Result(run.rate, detail=run.detail())


@row("aioraven", "aioraven 0.7.1 parser, same stream", "frag/s", None)
def aioraven_rate(ctx: Context) -> Result:
    run = parsing.result(ctx, "aioraven")
    return Result(run.rate, detail=run.detail())


@row("decoder-ratio", "decoder speed ravend / aioraven", "x", Target(">=", 3))
def decoder_ratio(ctx: Context) -> Result:
    ours, theirs = parsing.result(ctx, "ravend"), parsing.result(ctx, "aioraven")
    return Result(ours.rate / theirs.rate)


# --- 2. pty -> ravend -> SQLite, flat out ------------------------------------------------------


@row("simulator", "simulator flat-out ceiling (reader: cat)", "readings/s", None)
def simulator_ceiling(ctx: Context) -> Result:
    run = throughput.simulator_ceiling(ctx)
    return Result(run.rate, detail={"readings": run.readings, "seconds": run.seconds})


@row("throughput", "pty -> ravend -> SQLite committed", "readings/s", Target(">=", 2_000))
def ravend_throughput(ctx: Context) -> Result:
    run = throughput.ravend_flat_out(ctx)
    return Result(run.steady()[0], detail=run.detail())  # past start-up


@row("cpu", "ravend CPU per 1,000 readings", "s", Target("<=", 0.1))
def ravend_cpu(ctx: Context) -> Result:
    return Result(throughput.ravend_flat_out(ctx).steady()[1])


@row("naive", "naive logger (pyserial, etree, commit/row)", "readings/s", None)
def naive_throughput(ctx: Context) -> Result:
    run = throughput.naive_peer(ctx)
    return Result(run.rate, detail={"readings": run.readings, "seconds": run.seconds})


@row("naive-ratio", "throughput ravend / naive logger", "x", Target(">=", 5))
def naive_ratio(ctx: Context) -> Result:
    ours = throughput.ravend_flat_out(ctx).steady()[0]
    return Result(ours / throughput.naive_peer(ctx).rate)


# --- 3. latency at 1 reading/s -----------------------------------------------------------------


@row("latency-p50", "fragment end -> committed, p50", "ms", None)
def latency_p50(ctx: Context) -> Result:
    run = latency.measure(ctx)
    return Result(latency.percentile(run.total_ms, 50), detail=run.detail(),
                  what=f"fragment end -> committed, p50 ({len(run.total_ms)} at"
                       f" {1 / run.interval_s:g}/s)")


@row("latency-p99", "fragment end -> committed, p99", "ms", Target("<=", 10))
def latency_p99(ctx: Context) -> Result:
    run = latency.measure(ctx)
    if run.lost:  # a reading never committed counts as the longest wait we allowed
        return Result(latency.GIVE_UP_S * 1000, f"{run.lost} lost", run.detail())
    return Result(latency.percentile(run.total_ms, 99))


# --- 4. memory and descriptors after many readings ---------------------------------------------


def _marks(ctx: Context) -> tuple[throughput.Checkpoint, throughput.Checkpoint]:
    checkpoints = throughput.ravend_flat_out(ctx).checkpoints
    return checkpoints[0], checkpoints[-1]


@row("rss", "ravend RSS after the last checkpoint", "MiB", Target("<=", 40))
def rss(ctx: Context) -> Result:
    first, last = _marks(ctx)
    return Result(last.rss_kib / MIB, what=f"ravend RSS after {last.readings:,} readings",
                  detail={"first_kib": first.rss_kib, "last_kib": last.rss_kib})


@row("rss-growth", "ravend RSS growth between checkpoints", "MiB", Target("<=", 1))
def rss_growth(ctx: Context) -> Result:
    first, last = _marks(ctx)
    curve = {c.readings: round(c.rss_kib / MIB, 1)
             for c in throughput.ravend_flat_out(ctx).checkpoints}
    return Result((last.rss_kib - first.rss_kib) / MIB,
                  what=f"ravend RSS growth {first.readings:,} -> {last.readings:,}",
                  detail={"rss_mib_at": curve})


@row("fds", "ravend open fds growth between checkpoints", "fds", Target("<=", 0))
def fds(ctx: Context) -> Result:
    first, last = _marks(ctx)
    return Result(last.fds - first.fds, f"{first.fds} -> {last.fds}",
                  what=f"ravend open fds {first.readings:,} -> {last.readings:,}")


# --- 5. fuzz ------------------------------------------------------------------------------------


def _fuzz(ctx: Context) -> fuzz.FuzzResult:
    return ctx.once("fuzz", lambda: fuzz.run(ctx.pick(20_000, 1_000_000)))


@row("fuzz-rate", "fuzz framer+decoder (generation included)", "inputs/s", None)
def fuzz_rate(ctx: Context) -> Result:
    r = _fuzz(ctx)
    return Result(r.inputs / r.seconds, detail={"inputs": r.inputs, "bytes": r.bytes,
                                                "seconds": r.seconds, "items": r.items})


@row("fuzz-escapes", "fuzz exceptions escaped", "inputs", Target("<=", 0))
def fuzz_escapes(ctx: Context) -> Result:
    r = _fuzz(ctx)
    return Result(r.escapes, f"{r.escapes} of {r.inputs:,}", {"examples": r.examples})


@row("fuzz-buffer", "fuzz largest framer buffer", "bytes", Target("<=", MAX_FRAGMENT_BYTES))
def fuzz_buffer(ctx: Context) -> Result:
    return Result(_fuzz(ctx).max_buffer)


# --- 6. stores and MQTT: measured by their own modules (bench/mqtt.py, bench/purge.py) ----------
#
# Those modules run standalone too and return a list of {"name", "value", ...} rows; the table
# takes each figure it shows from there, by a phrase of its name, and keeps the whole list.


def _external(ctx: Context, module: str, fn: str) -> list[dict[str, object]]:
    def run() -> list[dict[str, object]]:
        import importlib

        measure: Callable[[bool], list[dict[str, object]]] = getattr(
            importlib.import_module(f"bench.{module}"), fn)
        return measure(ctx.quick)

    return ctx.once(f"{module}.{fn}", run)


def _pick(rows: list[dict[str, object]], phrase: str, scale: float = 1.0) -> Result:
    for r in rows:
        if phrase in str(r["name"]):
            value = r["value"]
            return Result(None if value is None else float(value) * scale,  # type: ignore[arg-type]
                          what=str(r["name"]), detail={"rows": rows})
    raise LookupError(f"no row named like {phrase!r} in {[r['name'] for r in rows]}")


@row("repeater-drain", "ravend-repeater SQLite -> Mosquitto, QoS 1", "msg/s", Target(">=", 5_000))
def repeater_drain(ctx: Context) -> Result:
    return _pick(_external(ctx, "mqtt", "bench_repeater_drain"), "repeater drain, QoS 1")


@row("mqtt-p50", "fragment end -> MQTT subscriber, p50", "ms", None)
def mqtt_p50(ctx: Context) -> Result:
    return _pick(_external(ctx, "mqtt", "bench_mqtt_latency"), "latency p50")


@row("mqtt-p99", "fragment end -> MQTT subscriber, p99", "ms", Target("<=", 50))
def mqtt_p99(ctx: Context) -> Result:
    return _pick(_external(ctx, "mqtt", "bench_mqtt_latency"), "latency p99")


@row("purge-mariadb-stall", "MariaDB purge: writer's worst insert", "ms", Target("<=", 200))
def purge_mariadb_stall(ctx: Context) -> Result:
    return _pick(_external(ctx, "purge", "bench_purge_mariadb"), "writer's worst write")


@row("purge-mariadb-rate", "MariaDB purge rate", "rows/s", None)
def purge_mariadb_rate(ctx: Context) -> Result:
    return _pick(_external(ctx, "purge", "bench_purge_mariadb"), "purge rate")


def _size_after_purge(rows: list[dict[str, object]], what: str) -> Result:
    """The ``what`` after-purge row, displayed as before -> after."""
    before = _pick(rows, f"{what} before purge").value
    after = _pick(rows, f"{what} after purge")
    after.display = f"{before:g} -> {after.value:g}" if before and after.value else None
    return after


@row("purge-mariadb-size", "MariaDB readings table after purging 80 %", "MB", None)
def purge_mariadb_size(ctx: Context) -> Result:
    return _size_after_purge(_external(ctx, "purge", "bench_purge_mariadb"), "(data+index)")


@row("purge-sqlite-stall", "SQLite purge: writer's worst insert", "ms", Target("<=", 200))
def purge_sqlite_stall(ctx: Context) -> Result:
    return _pick(_external(ctx, "purge", "bench_purge_sqlite"), "writer's worst write")


@row("purge-sqlite-rate", "SQLite purge rate", "rows/s", None)
def purge_sqlite_rate(ctx: Context) -> Result:
    return _pick(_external(ctx, "purge", "bench_purge_sqlite"), "purge rate")


@row("purge-sqlite-file", "SQLite file after purging 80 %", "MB", None)
def purge_sqlite_file(ctx: Context) -> Result:
    return _size_after_purge(_external(ctx, "purge", "bench_purge_sqlite"),
                             "database file (+WAL)")


# --- 7. MongoDB ingest (bench/mongo.py) ----------------------------------------------------------


@row("mongo-ingest", "ravend-mongo-ingest Mosquitto -> SecantusDB", "docs/s", None)
def mongo_ingest(ctx: Context) -> Result:
    return _pick(_external(ctx, "mongo", "bench_mongo_ingest"), "mongo ingest, MQTT")


@row("mongo-insert", "  SecantusDB insert_many, same documents", "docs/s", None)
def mongo_insert(ctx: Context) -> Result:
    return _pick(_external(ctx, "mongo", "bench_mongo_ingest"), "insert_many, same documents")


@row("mongo-ratio", "mongo ingest / insert_many", "%", Target(">=", 80))
def mongo_ratio(ctx: Context) -> Result:
    return _pick(_external(ctx, "mongo", "bench_mongo_ingest"), "/ insert_many rate")


@row("mongo-replay", "mongo documents added by a replay", "docs", Target("<=", 0))
def mongo_replay(ctx: Context) -> Result:
    return _pick(_external(ctx, "mongo", "bench_mongo_ingest"), "added by a replay")


@row("mongo-exact", "mongo documents == readings published", "yes=1", Target(">=", 1))
def mongo_exact(ctx: Context) -> Result:
    return _pick(_external(ctx, "mongo", "bench_mongo_ingest"), "stored == readings published")


# --- 8. idle at the real rate: the three services at once (bench/idle.py) -----------------------


def _idle(ctx: Context) -> Any:
    from bench import idle

    return ctx.once("idle", lambda: idle.measure(ctx.quick, ctx.work / "idle", ctx.log))


def _idle_cpu(ctx: Context, name: str) -> Result:
    run = _idle(ctx)
    window = f"{run.window:g} s" + (", quick" if run.quick else "")
    return Result(run.processes[name].cpu_percent, what=f"idle, real rate ({window}): {name} CPU",
                  detail=run.detail(name))


def _idle_wakeups(ctx: Context, name: str) -> Result:
    p = _idle(ctx).processes[name]
    return Result(p.wakeups, what=f"  {name} wake-ups",
                  detail={"voluntary_per_s": p.wakeups, "involuntary_per_s": p.involuntary})


def _idle_rows(key: str, program: str) -> None:
    """The two idle rows of one program: its CPU share and its wake-ups, same targets for all."""
    row(f"idle-{key}-cpu", f"idle, real rate: {program} CPU", "% core", Target("<=", 0.2))(
        functools.partial(_idle_cpu, name=program))
    row(f"idle-{key}-wake", f"  {program} wake-ups", "/s", Target("<=", 2))(
        functools.partial(_idle_wakeups, name=program))


for _key, _program in (("ravend", "ravend"), ("repeater", "ravend-repeater"),
                       ("ingest", "ravend-mongo-ingest"), ("web", "ravend-web")):
    _idle_rows(_key, _program)


# --- 9. ravenctl on a year of one home's readings (bench/storecmds.py, bench/yearstore.py) -------


def _store_size(store: Any) -> str:
    """"365 days, 4.2M readings": the year store a row ran on."""
    n = store.readings
    return f"{store.days} days, " + (f"{n / 1e6:.1f}M readings" if n >= 10**6
                                      else f"{n:,} readings")


def _store_cmd(ctx: Context, key: str, what: str, sized: bool = False) -> Result:
    from bench import storecmds

    run = ctx.once("storecmds", lambda: storecmds.measure(ctx))
    return Result(run.seconds[key], what=f"{what} ({_store_size(run.store)})" if sized
                  else what, detail=run.detail(key))


@row("status-command", "ravenctl status, whole command", "s", Target("<=", 0.1))
def status_command(ctx: Context) -> Result:
    return _store_cmd(ctx, "status_command", "ravenctl status, whole command", sized=True)


@row("status-store", "  its store queries, in process", "s", None)
def status_store(ctx: Context) -> Result:
    return _store_cmd(ctx, "status_store", "  its store queries, in process")


@row("status-tiny", "  the whole command on a store of one reading", "s", None)
def status_tiny(ctx: Context) -> Result:
    return _store_cmd(ctx, "status_command_tiny",
                      "  the whole command on a store of one reading")


@row("status-before", "  status's queries before (count per kind)", "s", None)
def status_before(ctx: Context) -> Result:
    return _store_cmd(ctx, "status_before", "  status's queries before (count per kind)")


@row("doctor-store", "ravenctl doctor: sink sqlite check", "s", Target("<=", 0.1))
def doctor_store(ctx: Context) -> Result:
    return _store_cmd(ctx, "doctor_store", "ravenctl doctor: sink sqlite check")


@row("report-year", "ravenctl report, every day of the store", "s", None)
def report_year(ctx: Context) -> Result:
    return _store_cmd(ctx, "report_year", "ravenctl report, every day")


@row("export-day", "ravenctl export, one day as CSV", "s", None)
def export_day(ctx: Context) -> Result:
    return _store_cmd(ctx, "export_day", "ravenctl export, one day as CSV")


# --- 10. ravend-web on a year of one home's readings (bench/web.py) -----------------------------


def _web(ctx: Context) -> Any:
    from bench import web

    return ctx.once("web", lambda: web.measure(ctx))


@row("web-api-p95", "ravend-web: every API answer, p95, ravend writing", "s",
     Target("<=", 0.05))
def web_api_p95(ctx: Context) -> Result:
    run = _web(ctx)
    return Result(run.p95(), what=f"ravend-web: every API answer, p95, ravend writing"
                  f" ({_store_size(run.store)})", detail=run.detail())


@row("web-rss", "  ravend-web resident memory after them", "MiB", Target("<=", 40))
def web_rss(ctx: Context) -> Result:
    return Result(_web(ctx).rss_mib)


@row("web-render", "ravend-web: slowest view's first render, Chromium", "s", Target("<=", 1))
def web_render(ctx: Context) -> Result:
    from bench import browser

    run = ctx.once("browser", lambda: browser.measure(ctx))
    return Result(run.median(run.slowest()), what=f"ravend-web: slowest view's first render"
                  f" ({run.slowest()}), Chromium ({_store_size(run.store)})",
                  detail=run.detail())
