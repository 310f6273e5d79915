"""``ravenctl status`` answers from indexes, at a cost that does not grow with the store, and
says the same size as ``ravenctl doctor`` (the WAL counted by both).

No timings: what status asks SQLite is read back from the connection itself (every statement
through a trace callback, then its EXPLAIN QUERY PLAN; the virtual machine's steps through a
progress handler), on a real store written by the real sink.
"""

from __future__ import annotations

import json
import re
import sqlite3
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from ravend.cli import ravenctl
from ravend.db import sqlite as sqlite_db
from ravend.doctor_sinks import check_sqlite
from ravend.protocol.model import Kind, Reading, scale
from ravend.sinks.sqlite import SqliteSink
from tests.helpers.process import ravenctl as run_ravenctl
from tests.helpers.readings import DEVICE, METER, T0, demands

#: More demand readings than status counts exactly (ravend.store_status.EXACT_LIMIT = 10,000).
BIG = 12_000
#: Progress handler granularity: one call per this many virtual-machine instructions.
STEP = 100


def summations(n: int, every: int = 30) -> list[Reading]:
    return [Reading(METER, Kind.SUMMATION_DELIVERED, T0 + i * every, T0 + i * every + 0.5,
                    5_000_000 + i, 1, 1000, scale(5_000_000 + i, 1, 1000), "kWh", DEVICE)
            for i in range(n)]


def store(path: Path, n_demand: int, start: int = 0) -> None:
    sink = SqliteSink(path)
    sink.open()
    try:
        sink.write([*demands(n_demand, start), *summations(n_demand // 30, 30)], [])
    finally:
        sink.close()


@dataclass
class Watch:
    """What ravenctl's read-only connections were asked: statements and VM steps."""

    statements: list[str] = field(default_factory=list)
    steps: int = 0


@pytest.fixture()
def watch(monkeypatch: pytest.MonkeyPatch) -> Iterator[Watch]:
    seen = Watch()
    real_connect = sqlite_db.connect

    def connect(path: Path | str, *, readonly: bool = False,
                timeout: float = 10.0) -> sqlite3.Connection:
        conn = real_connect(path, readonly=readonly, timeout=timeout)
        if readonly:
            def step() -> int:
                seen.steps += STEP
                return 0

            conn.set_trace_callback(seen.statements.append)
            conn.set_progress_handler(step, STEP)
        return conn

    monkeypatch.setattr(sqlite_db, "connect", connect)
    yield seen


def status_json(db: Path, capsys: pytest.CaptureFixture[str]) -> dict[str, object]:
    code = ravenctl.main(["status", "--db", str(db), "--config", "/nonexistent", "--json"])
    assert code == 3, capsys.readouterr().err  # stale: readings of 2023
    return json.loads(capsys.readouterr().out)  # type: ignore[no-any-return]


def plans(db: Path, statements: list[str]) -> dict[str, list[str]]:
    """Each statement that reads the readings table, with its query plan's lines."""
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        return {s: [row[-1] for row in conn.execute("EXPLAIN QUERY PLAN " + s)]
                for s in statements if re.search(r"\bFROM readings\b", s)}
    finally:
        conn.close()


def test_status_searches_indexes_never_scans_readings(
        tmp_path: Path, watch: Watch, capsys: pytest.CaptureFixture[str]) -> None:
    db = tmp_path / "ravend.db"
    store(db, 3_000)
    status_json(db, capsys)
    read = plans(db, watch.statements)
    assert read, watch.statements
    for statement, lines in read.items():
        assert not any(line.startswith("SCAN readings") for line in lines), (statement, lines)
        assert any(line.startswith("SEARCH readings") for line in lines), (statement, lines)


def test_status_costs_the_same_on_a_store_twice_as_big(
        tmp_path: Path, watch: Watch, capsys: pytest.CaptureFixture[str]) -> None:
    """A scan, a COUNT(*) or a GROUP BY over the readings costs in proportion to them."""
    db = tmp_path / "ravend.db"
    store(db, BIG)
    first = status_json(db, capsys)
    small = watch.steps
    store(db, BIG, start=BIG)  # as many again, later
    watch.steps = 0
    second = status_json(db, capsys)
    big = watch.steps
    assert big < small * 1.2, (small, big)
    kinds = {m["kind"]: m for m in second["meters"]}  # type: ignore[index,union-attr]
    # Above EXACT_LIMIT the count is an estimate, and says so; below it, exact.
    assert kinds["demand"]["n_exact"] is False
    assert abs(kinds["demand"]["n"] - 2 * BIG) <= 0.05 * 2 * BIG, kinds["demand"]
    assert kinds["summation_delivered"]["n_exact"] is True
    assert kinds["summation_delivered"]["n"] == BIG // 30  # the same readings written twice
    assert kinds["demand"]["newest"] == T0 + 2 * BIG - 1
    assert kinds["demand"]["oldest"] == T0
    assert kinds["demand"]["raw"] == 1000 + 2 * BIG - 1  # the latest value
    assert second["newest_received"] == T0 + 2 * BIG - 1 + 0.5
    assert first["newest_received"] == T0 + BIG - 1 + 0.5


def test_status_prints_about_for_an_estimated_count(tmp_path: Path) -> None:
    db = tmp_path / "ravend.db"
    store(db, BIG)
    out = ravenctl_text(db)
    demand_line = next(line for line in out.splitlines() if line.strip().startswith("demand"))
    assert re.search(r"about 1[12](\.\d)?k readings", demand_line), demand_line
    summation = next(line for line in out.splitlines() if "summation_delivered" in line)
    assert f" {BIG // 30} readings" in summation, summation


def ravenctl_text(db: Path) -> str:
    proc = run_ravenctl("status", "--db", str(db), "--config", "/nonexistent")
    assert proc.returncode == 3, proc.stderr
    return proc.stdout


def test_status_and_doctor_say_the_same_size_wal_included(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """While ravend runs, recent commits sit in the -wal file: both count it."""
    db = tmp_path / "ravend.db"
    sink = SqliteSink(db)  # kept open, as the service keeps it: no checkpoint at close
    sink.open()
    try:
        sink.write(demands(3_000), [])
        wal = Path(f"{db}-wal").stat().st_size
        assert wal > 200_000, wal  # a WAL big enough to show in "N.N MB"
        total = db.stat().st_size + wal
        data = status_json(db, capsys)
        assert data["size_bytes"] == total
        code = ravenctl.main(["status", "--db", str(db), "--config", "/nonexistent"])
        assert code == 3
        status_mb = re.search(r"\((\d+\.\d) MB\)", capsys.readouterr().out)
        check = check_sqlite(db, lambda p: True)
        doctor_mb = re.search(r"(\d+\.\d) MB\)", check.message)
    finally:
        sink.close()
    assert status_mb and doctor_mb, (status_mb, check.message)
    assert doctor_mb.group(1) == status_mb.group(1) == f"{total / 1e6:.1f}", check.message


def test_export_of_a_time_range_walks_the_time_index(
        tmp_path: Path, watch: Watch, capsys: pytest.CaptureFixture[str]) -> None:
    """An export of one day must not read every row of the year by id to find that day's."""
    db = tmp_path / "ravend.db"
    store(db, 3_000)
    code = ravenctl.main(["export", "--db", str(db), "--config", "/nonexistent",
                          "--since", str(T0 + 1000), "--until", str(T0 + 1100)])
    assert code == 0
    out = capsys.readouterr().out.splitlines()
    assert len(out) == 1 + 100 + 3, out[:3]  # header, a demand a second, summations at 20, 50, 80
    read = plans(db, watch.statements)
    assert read, watch.statements
    for statement, lines in read.items():
        assert any("USING INDEX readings_by_time" in line for line in lines), (statement, lines)
