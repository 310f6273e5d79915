"""Captured device output (/work/shared/fixtures) decodes to the values SOURCES.md gives.

Each capture is fed whole, byte by byte, and in random chunks followed by the start of another
fragment; each way must give exactly the same fragments, and then the same readings.
"""

from __future__ import annotations

import os
import random
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from ravend.protocol import model as m
from ravend.protocol.decoder import StreamDecoder
from ravend.protocol.model import METER_EPOCH_OFFSET, Discarded, Kind
from ravend.protocol.readings import readings_from

#: The shared captures; RAVEND_FIXTURES or a tests/fixtures copy (for a package build) wins.
_CANDIDATES = [os.environ.get("RAVEND_FIXTURES", ""), Path(__file__).parent / "fixtures",
               "/work/shared/fixtures"]
FIXTURES = next((Path(c) for c in _CANDIDATES if c and Path(c).is_dir()), Path(_CANDIDATES[-1]))
RECEIVED = 1_713_770_000.25
TRAILER = b"<InstantaneousDemand>\r\n  <DeviceMacId>0xd8d5"


def load(name: str) -> bytes:
    return (FIXTURES / name).read_bytes()


def decoded_three_ways(data: bytes) -> list[Any]:
    """The capture's decoded values; identical whole, byte-wise and in chunks with a trailer."""
    ways = {"whole": [data], "bytewise": [data[i : i + 1] for i in range(len(data))]}
    for seed in (11, 12):
        rng = random.Random(seed)
        tailed, chunks, i = data + TRAILER, [], 0
        while i < len(tailed):
            n = rng.randint(1, 64)
            chunks.append(tailed[i : i + n])
            i += n
        ways[f"chunks{seed}+trailing"] = chunks
    results = {}
    for name, chunks in ways.items():
        decoder = StreamDecoder()
        out: list[Any] = []
        for chunk in chunks:
            out += decoder.feed(chunk)
        end = decoder.feed(b"")
        if "trailing" in name:
            assert end == [Discarded("stream ended inside a fragment", len(TRAILER), TRAILER)]
        else:
            assert end == [], name
        assert not any(isinstance(o, (Discarded, m.DecodeError)) for o in out), (name, out)
        results[name] = out
    for name, out in results.items():
        assert out == results["whole"], name
    return results["whole"]


def wire_time(seconds_since_2000: int) -> int:
    return seconds_since_2000 + 946_684_800


def test_meter_epoch_offset_is_2000_01_01() -> None:
    assert METER_EPOCH_OFFSET == 946_684_800


def test_raven_instantaneous_demand_crlf_is_1_234_kw() -> None:
    data = load("raven-instantaneous-demand.xml")
    assert b"\r\n" in data
    [d] = decoded_three_ways(data)
    assert d == m.InstantaneousDemand(
        device_mac_id="0x00158d00001ab777", meter_mac_id="0x0013500100d8c028",
        time_stamp=wire_time(0x1CC0C525), demand=0x4D2, multiplier=1, divisor=1000,
        digits_right=3, digits_left=15, suppress_leading_zero=True,
    )
    assert d.kw == Decimal("1.234")
    [r] = readings_from(d, RECEIVED)
    assert (r.kind, r.value, r.unit, r.meter_time) == (
        Kind.DEMAND, Decimal("1.234"), "kW", 1_429_080_229,  # 2015-04-15 06:43:49 UTC
    )
    assert (r.meter_mac, r.device_mac, r.raw, r.multiplier, r.divisor, r.received_at) == (
        "0x0013500100d8c028", "0x00158d00001ab777", 1234, 1, 1000, RECEIVED,
    )


def test_emu2_summation_is_156762_302_kwh_delivered_and_0_received() -> None:
    [s] = decoded_three_ways(load("emu2-summation.xml"))
    assert s == m.CurrentSummationDelivered(
        device_mac_id="0xd8d5b900000113ae", meter_mac_id="0x00078100007a175d",
        time_stamp=wire_time(0x2DB8B898), summation_delivered=0x95800BE, summation_received=0,
        multiplier=1, divisor=1000, digits_right=1, digits_left=6, suppress_leading_zero=True,
    )
    delivered, received = readings_from(s, RECEIVED)
    assert (delivered.kind, delivered.value, delivered.unit, delivered.meter_time) == (
        Kind.SUMMATION_DELIVERED, Decimal("156762.302"), "kWh", 1_713_765_400,
    )
    assert (received.kind, received.value, received.unit, received.meter_time) == (
        Kind.SUMMATION_RECEIVED, Decimal("0"), "kWh", 1_713_765_400,
    )
    assert delivered.raw == 156_762_302


def test_emu2_period_usage_is_23_098_kwh_with_timestamp_unset() -> None:
    usage, _price = decoded_three_ways(load("emu2-period-usage-and-price.xml"))
    assert usage == m.CurrentPeriodUsage(
        device_mac_id="0xd8d5b900000113ae", meter_mac_id="0x00078100007a175d", time_stamp=None,
        current_usage=0x5A3A, multiplier=1, divisor=1000, digits_right=1, digits_left=0,
        suppress_leading_zero=True, start_date=wire_time(0x2DB82AD2),
    )
    [r] = readings_from(usage, RECEIVED)
    assert (r.kind, r.value, r.unit, r.meter_time) == (
        Kind.CURRENT_PERIOD_USAGE, Decimal("23.098"), "kWh", None,
    )
    # Unset meter clock: the reading is kept and keyed by the host's receive second.
    assert r.key == ("0x00078100007a175d", "current_period_usage", int(RECEIVED))


def test_emu2_price_is_0_315_usd_with_start_time_unset() -> None:
    _usage, price = decoded_three_ways(load("emu2-period-usage-and-price.xml"))
    assert price == m.PriceCluster(
        device_mac_id="0xd8d5b900000113ae", meter_mac_id="0x00078100007a175d",
        time_stamp=wire_time(0x2DB8C655), price=0x13B, currency=840, trailing_digits=3,
        tier=1, tier_label=None, rate_label="Set by User", start_time=None, duration=None,
    )
    assert price.amount == Decimal("0.315")
    [r] = readings_from(price, RECEIVED)
    assert (r.kind, r.value, r.unit, r.meter_time) == (
        Kind.PRICE, Decimal("0.315"), "USD/kWh", 1_713_768_917,
    )
    assert (r.raw, r.multiplier, r.divisor) == (315, 1, 1000)


def test_emu2_demand_with_multiplier_3_is_1_434_kw() -> None:
    data = load("emu2-demand-multiplier-3.xml")
    [d] = decoded_three_ways(data)
    assert (d.demand, d.multiplier, d.divisor) == (0x1DE, 3, 1000)
    assert d.kw == Decimal("1.434")
    [r] = readings_from(d, RECEIVED)
    assert (r.kind, r.value, r.unit, r.meter_time, r.meter_mac) == (
        Kind.DEMAND, Decimal("1.434"), "kW", wire_time(0x317FA638), "0x001c6400135bce4c",
    )


@pytest.mark.parametrize(
    "names",
    [
        ["raven-instantaneous-demand.xml", "emu2-summation.xml"],
        ["emu2-period-usage-and-price.xml", "emu2-demand-multiplier-3.xml",
         "raven-instantaneous-demand.xml"],
    ],
)
def test_captures_back_to_back_decode_in_order(names: list[str]) -> None:
    """CRLF and LF captures, indented and column-0 children, concatenated in one stream."""
    expected = [v for name in names for v in decoded_three_ways(load(name))]
    assert decoded_three_ways(b"".join(load(n) for n in names)) == expected


def test_every_capture_yields_exactly_its_readings() -> None:
    kinds = []
    for path in sorted(FIXTURES.glob("*.xml")):
        for frag in decoded_three_ways(path.read_bytes()):
            kinds += [r.kind for r in readings_from(frag, RECEIVED)]
    assert sorted(k.value for k in kinds) == sorted(
        ["demand", "demand", "summation_delivered", "summation_received",
         "current_period_usage", "price"]
    )
