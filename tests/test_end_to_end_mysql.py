"""Simulator on a pty → the real ravend process → SQLite and MariaDB at once.

Both stores end up with exactly the readings the simulator sent, each once, although MariaDB is
stopped for a while in the middle (the MySQL worker spools meanwhile and replays); and the
maintenance thread rolls both up to the same hourly and daily figures.
"""

from __future__ import annotations

import sqlite3
from collections import Counter
from decimal import Decimal
from pathlib import Path

from ravend.protocol.model import scale
from ravend.simulator import MeterSimulator
from tests.helpers.mysql import conf_keys, query
from tests.helpers.process import running_ravend, stored_rows, write_config
from tests.helpers.wait import wait_for

ROLLUP = ("SELECT meter_mac, period_start, period_end, demand_samples, demand_avg_kw,"
          " demand_min_kw, demand_max_kw, delivered_kwh, received_kwh, energy_seconds,"
          " counter_resets FROM {} ORDER BY meter_mac, period_start")


def mysql_rows(server, db: str) -> list[tuple]:
    try:
        return query(server, db, "SELECT meter_mac, kind, meter_time, raw, multiplier, divisor,"
                     " value FROM readings")
    except Exception:
        return []  # not created yet, or the server is down


def as_decimals(rows: list[tuple]) -> list[tuple]:
    """SQLite keeps the roll-up decimals as text: compare them as numbers."""
    return [(r[0], *(Decimal(v) if isinstance(v, str) else v for v in r[1:])) for r in rows]


def rolled_up(server, db: str, sqlite_db: Path) -> bool:
    """Both stores have rolled up every reading they hold."""
    mark = "SELECT value FROM maintenance_state WHERE name = 'rollup_watermark'"
    try:
        with sqlite3.connect(f"file:{sqlite_db}?mode=ro", uri=True) as conn:
            top = conn.execute("SELECT MAX(id) FROM readings").fetchone()[0]
            done = conn.execute(mark).fetchall()
        my_top = query(server, db, "SELECT MAX(id) FROM readings")[0][0]
        my_done = query(server, db, mark)
    except Exception:
        return False
    return done == [(top,)] and my_done == [(my_top,)]


def test_sqlite_and_mariadb_store_every_reading_once_across_a_database_outage(
        tmp_path: Path, mariadb_server) -> None:
    link = str(tmp_path / "stick")
    state = tmp_path / "state"
    sqlite_db = state / "ravend.db"
    db = mariadb_server.new_database("e2e")
    sim = MeterSimulator("emu2", link=link, seed=11, speed=200, reply_delay=0.02,
                         quirks=("negative_demand", "duplicates", "wide_summation",
                                 "multiplier3", "clock_backwards")).start()
    config = write_config(tmp_path / "ravend.conf", state, link,
                          mysql=conf_keys(mariadb_server, db, run_name="e2e"),
                          retention={"rollup_interval": "1s", "time_zone": "UTC",
                                     "raw_days": "0"})  # the simulated meter lives in 2023
    with running_ravend(config, tmp_path / "ravend.log",
                        stop_within=5, then_stop=(sim.stop,)) as ravend:
        assert wait_for(lambda: len(mysql_rows(mariadb_server, db)) >= 40, 30), ravend.log()
        mariadb_server.stop()
        stopped_at = sim.sent_count("demand")
        assert sim.wait_for(lambda: sim.sent_count("demand") >= stopped_at + 60, 30)
        assert wait_for(lambda: "mysql: unavailable" in ravend.log(), 10), ravend.log()
        mariadb_server.start()
        assert sim.wait_for(lambda: sim.sent_count("demand") >= stopped_at + 120, 30)
        sim.set_pushes(False)
        assert sim.drain(5)
        want = {(s.meter_mac, s.kind, s.meter_time): (s.raw, s.multiplier, s.divisor)
                for s in sim.sent_readings()}
        assert wait_for(lambda: len(stored_rows(sqlite_db)) >= len(want)
                        and len(mysql_rows(mariadb_server, db)) >= len(want), 30), ravend.log()
        assert wait_for(lambda: rolled_up(mariadb_server, db, sqlite_db), 20), ravend.log()
    log = ravend.log()
    assert "Traceback" not in log
    # One line for the lost connection, one for the refused reconnect; none per retry.
    assert 1 <= log.count("mysql: unavailable") <= 2, log
    assert "mysql: available again" in log

    lite, my = stored_rows(sqlite_db), mysql_rows(mariadb_server, db)
    for rows in (lite, my):
        keys = Counter((m, k, t) for m, k, t, *_ in rows)
        assert max(keys.values()) == 1, "a reading was stored twice"
        assert set(keys) == set(want), (set(want) - set(keys), set(keys) - set(want))
        for meter, kind, t, raw, mult, div, value in rows:
            assert (raw, mult, div) == want[(meter, kind, t)]
            assert Decimal(str(value)) == scale(raw, mult, div).quantize(Decimal("1e-9")) or (
                abs(Decimal(str(value)) - scale(raw, mult, div)) < Decimal("1e-9"))
    assert any(r[1] == "demand" and r[3] < 0 for r in my)
    assert any(r[1].startswith("summation") and r[3] > 2**32 for r in my)

    # The CalPlug view: every demand once, one run_info row for this start and meter.
    demand = [r for r in my if r[1] == "demand"]
    assert query(mariadb_server, db, "SELECT COUNT(*), COUNT(DISTINCT hash) FROM"
                 " instantaneous_demand")[0] == (len(demand), 1)
    assert query(mariadb_server, db, "SELECT name, meter_id FROM run_info") == [
        ("e2e", sim.meter_macs[0])]

    # Same readings, same roll-ups, whatever the store.
    with sqlite3.connect(sqlite_db) as conn:
        for table in ("rollup_hourly", "rollup_daily"):
            lite_rollups = as_decimals(conn.execute(ROLLUP.format(table)).fetchall())
            assert lite_rollups
            assert lite_rollups == query(mariadb_server, db, ROLLUP.format(table))
    assert sum(r[3] for r in lite_rollups) == len(demand)  # every demand in one day's samples
