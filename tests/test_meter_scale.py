"""[meter <MAC>] scale: a CT meter's ratio applied to every stored and published value.

A meter behind a 60:1 current transformer reports 1/60 of the usage. With ``scale = 60`` ravend
stores and publishes 60 times what the meter said for demand, summations and period usage (never
price), keeps raw, multiplier and divisor exactly as sent and records the factor with each
reading, so that ``value = raw * multiplier / divisor * scale`` explains every row. End to end:
the simulator with two meters on a pty, the real ravend, SQLite and a private Mosquitto.
"""

from __future__ import annotations

import json
import shutil
import sqlite3
import subprocess
import sys
from decimal import Decimal
from fractions import Fraction
from pathlib import Path

import pytest

from ravend.config import ConfigError, load
from ravend.protocol import model as m
from ravend.protocol.model import Kind, scale
from ravend.protocol.readings import readings_from
from ravend.rollup_update import update_rollups
from ravend.serialize import reading_from_dict, reading_to_dict
from ravend.simulator import MeterSimulator
from ravend.sinks.mqtt_payload import parse_reading, reading_dict
from ravend.store import SqliteStore
from tests.helpers.mqtt import Subscriber, reading_messages
from tests.helpers.process import ROOT, RavendProcess, write_config
from tests.helpers.wait import wait_for

METER = "0x00135003001234ab"
OTHER = "0x00135003001234cd"
DEVICE = "0xd8d5b9000000054e"
SIXTY = {METER: Decimal(60)}


# --- the setting -------------------------------------------------------------------------------


def _conf(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "ravend.conf"
    path.write_text("[device]\nport = /dev/null\n\n" + text)
    return path


def test_a_meter_section_gives_its_scale_and_unknown_meters_are_accepted(tmp_path: Path) -> None:
    config = load(_conf(tmp_path, "[Meter 0x00135003001234AB]\nscale = 60\n\n"
                                  "[meter 0x0013500300ffffff]\nscale = 0.5\n\n"
                                  f"[meter {OTHER}]\nscale = 1\n"))
    assert config.meter_scales == {METER: Decimal(60), "0x0013500300ffffff": Decimal("0.5")}
    assert load(_conf(tmp_path, "")).meter_scales == {}


@pytest.mark.parametrize("value", ["0", "-60", "NaN", "nan", "inf", "-Infinity", "sixty", "",
                                   "1e300", "1000001", "0.0000001", "60 kW"])
def test_a_scale_that_is_no_positive_finite_decimal_is_refused_with_file_line_and_key(
        tmp_path: Path, value: str) -> None:
    path = _conf(tmp_path, f"[meter {METER}]\n# the CT ratio\nscale = {value}\n")
    with pytest.raises(ConfigError) as err:
        load(path)
    assert str(err.value).startswith(f"{path}:6: [meter {METER}] scale = {value!r}: expected"
                                     " a positive decimal"), err.value


@pytest.mark.parametrize("section", ["meter", "meter 0x1234", "meter 00135003001234ab",
                                     "meter 0x00135003001234ag", "meter 0x00135003001234abc",
                                     "meter 0x00135003001234ab extra"])
def test_a_meter_section_without_a_canonical_mac_is_refused_at_its_line(
        tmp_path: Path, section: str) -> None:
    path = _conf(tmp_path, f"[{section}]\nscale = 60\n")
    with pytest.raises(ConfigError) as err:
        load(path)
    assert str(err.value).startswith(f"{path}:4: [{section}]: expected [meter <MAC>]"), err.value


def test_an_unknown_key_or_a_second_section_for_one_meter_is_refused(tmp_path: Path) -> None:
    path = _conf(tmp_path, f"[meter {METER}]\nratio = 60\n")
    with pytest.raises(ConfigError, match=rf"{path}:5: \[meter {METER}\] ratio: unknown key"):
        load(path)
    path = _conf(tmp_path, f"[meter {METER}]\nscale = 60\n[meter {METER.upper()[2:]}]\n")
    with pytest.raises(ConfigError, match="expected"):
        load(path)
    path = _conf(tmp_path, f"[meter {METER}]\nscale = 60\n[meter 0X{METER[2:].upper()}]\n")
    with pytest.raises(ConfigError, match=f"a second section for {METER}"):
        load(path)


# --- the readings ------------------------------------------------------------------------------


def test_energy_and_demand_are_scaled_price_and_other_meters_are_not() -> None:
    demand = m.InstantaneousDemand(DEVICE, METER, 1_700_000_000, 1234, 1, 1000)
    summation = m.CurrentSummationDelivered(DEVICE, METER, 1_700_000_000, 5000, 7, 1, 1000)
    usage = m.CurrentPeriodUsage(DEVICE, METER, 1_700_000_000, 250, 1, 1000)
    last = m.LastPeriodUsage(DEVICE, METER, 251, 1, 1000, end_date=1_700_000_000)
    price = m.PriceCluster(DEVICE, METER, 1_700_000_000, 2800, 840, 4)
    scaled = [r for f in (demand, summation, usage, last)
              for r in readings_from(f, 1_700_000_000.5, SIXTY)]
    assert [r.kind for r in scaled] == [Kind.DEMAND, Kind.SUMMATION_DELIVERED,
                                        Kind.SUMMATION_RECEIVED, Kind.CURRENT_PERIOD_USAGE,
                                        Kind.LAST_PERIOD_USAGE]
    assert [r.value for r in scaled] == [Decimal("74.04"), Decimal("300"), Decimal("0.42"),
                                         Decimal("15"), Decimal("15.06")]
    assert [(r.raw, r.multiplier, r.divisor, r.scale) for r in scaled[:2]] == [
        (1234, 1, 1000, 60), (5000, 1, 1000, 60)]
    (p,) = readings_from(price, 1_700_000_000.5, SIXTY)
    assert (p.value, p.scale) == (Decimal("0.28"), 1)
    other = m.InstantaneousDemand(DEVICE, OTHER, 1_700_000_000, 1234, 1, 1000)
    (o,) = readings_from(other, 1_700_000_000.5, SIXTY)
    assert (o.value, o.scale) == (Decimal("1.234"), 1)


def test_the_scale_survives_the_outbox_and_mqtt_and_old_rows_read_as_one() -> None:
    (r,) = readings_from(m.InstantaneousDemand(DEVICE, METER, 1_700_000_000, 1234, 1, 1000),
                         1_700_000_000.5, {METER: Decimal("0.5")})
    assert reading_from_dict(reading_to_dict(r)) == r
    message = reading_dict(r)
    assert (message["value_exact"], message["scale"], message["raw"]) == ("0.617", "0.5", 1234)
    assert parse_reading(message) == r
    old_row = {k: v for k, v in reading_to_dict(r).items() if k != "scale"}
    assert reading_from_dict(old_row).scale == 1  # an outbox row of an older ravend
    old_message = {k: v for k, v in message.items() if k != "scale"}
    assert parse_reading(old_message).scale == 1


# --- end to end --------------------------------------------------------------------------------


def _hourly(db: Path) -> dict[tuple[str, int], tuple[str | None, ...]]:
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5)
    try:
        return {(meter, start): rest for meter, start, *rest in conn.execute(
            "SELECT meter_mac, period_start, demand_avg_kw, delivered_kwh, received_kwh"
            " FROM rollup_hourly")}
    except sqlite3.OperationalError:
        return {}
    finally:
        conn.close()


def _rolled_up_to_the_end(db: Path) -> bool:
    """ravend's maintenance thread has rolled up every stored reading."""
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5)
    try:
        newest = conn.execute("SELECT MAX(id) FROM readings").fetchone()[0]
        done = conn.execute("SELECT value FROM maintenance_state"
                            " WHERE name = 'rollup_watermark'").fetchone()
        return newest is not None and done is not None and done[0] >= newest
    except sqlite3.OperationalError:
        return False
    finally:
        conn.close()


def _close(a: str | None, b: str | None, factor: int) -> bool:
    """a == factor * b up to the rounding of each to 9 places."""
    if a is None or b is None:
        return a is b
    return abs(Fraction(a) - factor * Fraction(b)) <= Fraction(factor + 1, 2 * 10**9)


def test_a_scaled_meter_is_stored_published_and_rolled_up_scaled_end_to_end(
        tmp_path: Path, make_mosquitto) -> None:
    broker = make_mosquitto()
    sub = Subscriber(broker.host, broker.port, ["ravend/+/+"], client_id="scale-sub").start()
    link = str(tmp_path / "stick")
    sim = MeterSimulator("emu2", link=link, seed=17, speed=120, meters=2,
                         reply_delay=0.02).start()
    scaled, plain = sim.meter_macs[0], sim.meter_macs[1]
    state = tmp_path / "state"
    config = write_config(tmp_path / "ravend.conf", state, link, **{
        "mqtt": {"enabled": "yes", "host": broker.host, "port": str(broker.port),
                 "client_id": "ravend-scale", "discovery": "no"},
        "retention": {"rollup_interval": "1s", "time_zone": "UTC"},
        f"meter {scaled}": {"scale": "60"},
        "meter 0x0013500300000001": {"scale": "2"},  # a meter never heard: harmless
    })
    ravend = RavendProcess(config, tmp_path / "ravend.log")
    db = state / "ravend.db"

    def summations(meter: str) -> int:
        return sum(1 for s in sim.sent_readings()
                   if s.meter_mac == meter and s.kind == "summation_delivered")

    try:
        assert sim.wait_for(lambda: min(summations(scaled), summations(plain)) >= 3, 60)
        sim.set_pushes(False)
        assert sim.drain(5)
        sent = {(s.meter_mac, s.kind, s.meter_time): (s.raw, s.multiplier, s.divisor)
                for s in sim.sent_readings()}

        def stored() -> dict[tuple, tuple]:
            if not db.exists():
                return {}
            conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5)
            try:
                return {(mac, kind, t): rest for mac, kind, t, *rest in conn.execute(
                    "SELECT meter_mac, kind, meter_time, raw, multiplier, divisor, scale, value"
                    " FROM readings")}
            except sqlite3.OperationalError:
                return {}
            finally:
                conn.close()

        assert wait_for(lambda: set(stored()) >= set(sent), 30), ravend.log()
        def published() -> dict[tuple, tuple]:
            out = {}
            for msg in reading_messages(sub):
                r = parse_reading(msg.payload)
                out[(r.meter_mac, r.kind.value, r.meter_time)] = (msg.json(), r)
            return out

        assert wait_for(lambda: set(published()) >= set(sent), 30), ravend.log()
        assert wait_for(lambda: _rolled_up_to_the_end(db), 30), ravend.log()
    finally:
        code, _ = ravend.stop()
        sim.stop()
        sub.stop()
    assert code == 0, ravend.log()
    assert "Traceback" not in ravend.log()

    rows, messages = stored(), published()
    kinds = set()
    for key, (raw, mult, div) in sent.items():
        meter, kind, _ = key
        factor = 60 if meter == scaled and kind != "price" else 1
        kinds.add((meter == scaled, kind))
        row_raw, row_mult, row_div, row_scale, row_value = rows[key]
        assert (row_raw, row_mult, row_div) == (raw, mult, div), key  # as sent
        assert row_scale == factor, key
        unscaled = scale(raw, mult, div)
        assert row_value == pytest.approx(float(unscaled * factor), rel=1e-12), key
        message, reading = messages[key]
        assert (message["raw"], message["multiplier"], message["divisor"]) == (raw, mult, div)
        assert message["scale"] == str(factor), key
        assert Decimal(message["value_exact"]) == unscaled * factor, key
        assert reading.value == unscaled * factor
    assert {(True, "demand"), (True, "summation_delivered"), (True, "price"),
            (False, "demand"), (False, "summation_delivered")} <= kinds

    # The roll-ups ravend made, against the same readings rolled up again with no scale.
    copy = tmp_path / "unscaled.db"
    shutil.copy(db, copy)
    conn = sqlite3.connect(copy)
    conn.executescript("UPDATE readings SET scale = 1; DELETE FROM rollup_hourly;"
                       " DELETE FROM rollup_daily;"
                       " DELETE FROM maintenance_state WHERE name = 'rollup_watermark';")
    conn.close()
    store = SqliteStore(copy)
    try:
        update_rollups(store, "UTC")
    finally:
        store.close()
    ours, unscaled_rollups = _hourly(db), _hourly(copy)
    assert set(ours) == set(unscaled_rollups)
    for key, values in ours.items():
        factor = 60 if key[0] == scaled else 1
        base = unscaled_rollups[key]
        if factor == 1:
            assert values == base, key
        else:
            assert all(_close(a, b, factor) for a, b in zip(values, base, strict=True)), (
                key, values, base)
    energy = [v[1] for k, v in ours.items() if k[0] == scaled and v[1] is not None]
    assert energy and any(Fraction(e) > 0 for e in energy)

    # ravenctl status shows the latest value as stored: scaled for the scaled meter.
    shown = subprocess.run([sys.executable, "-m", "ravend.cli.ravenctl", "status", "--json",
                            "--config", str(config)], capture_output=True, text=True,
                           cwd=ROOT, timeout=60)
    latest = {(m["meter_mac"], m["kind"]): m for m in json.loads(shown.stdout)["meters"]}
    last_demand = max((k for k in sent if k[0] == scaled and k[1] == "demand"),
                      key=lambda k: k[2])
    raw, mult, div = sent[last_demand]
    assert latest[(scaled, "demand")]["value"] == pytest.approx(
        float(scale(raw, mult, div) * 60), rel=1e-12), latest
    assert latest[(scaled, "demand")]["scale"] == 60, latest


def test_mysql_stores_the_scale_rolls_it_up_and_the_repeater_reads_it_back(
        mariadb_server) -> None:
    from ravend.repeater_sources import MysqlSource
    from ravend.sinks.mysql import MysqlSink
    from ravend.store import MysqlStore
    from tests.helpers.mysql import mysql_config, query

    database = mariadb_server.new_database("meter_scale")
    cfg = mysql_config(mariadb_server, database)
    t0 = 1_700_000_400
    fragments = [m.CurrentSummationDelivered(DEVICE, meter, t0 + i * 600, 1000 + i * 250, None,
                                             1, 1000) for i in range(3) for meter in (METER, OTHER)]
    fragments += [m.InstantaneousDemand(DEVICE, meter, t0 + 5, 1234, 1, 1000)
                  for meter in (METER, OTHER)]
    readings = [r for f in fragments for r in readings_from(f, t0 + 3000.5, SIXTY)]
    sink = MysqlSink(cfg, start_id="scale")
    sink.open()
    try:
        sink.write(readings, [])
    finally:
        sink.close()
    rows = {(mac, kind, t): (raw, mult, div, factor, value) for mac, kind, t, raw, mult, div,
            factor, value in query(mariadb_server, database,
                                   "SELECT meter_mac, kind, key_time, raw, multiplier, divisor,"
                                   " scale, value FROM readings")}
    assert rows[(METER, "demand", t0 + 5)] == (1234, 1, 1000, Decimal(60), Decimal("74.04"))
    assert rows[(OTHER, "demand", t0 + 5)] == (1234, 1, 1000, Decimal(1), Decimal("1.234"))
    store = MysqlStore(cfg)
    try:
        update_rollups(store, "UTC")
    finally:
        store.close()
    hourly = {mac: (avg, kwh) for mac, avg, kwh in query(
        mariadb_server, database,
        "SELECT meter_mac, demand_avg_kw, delivered_kwh FROM rollup_hourly")}
    assert hourly[OTHER] == (Decimal("1.234"), Decimal("0.5"))
    assert hourly[METER] == (Decimal("74.04"), Decimal("30"))
    source = MysqlSource(cfg)
    try:
        fetched = {r.key: r for _, r in source.fetch(0, 100)}
    finally:
        source.close()
    assert {k: (r.value, r.scale) for k, r in fetched.items()} == {
        r.key: (r.value, r.scale) for r in readings}
