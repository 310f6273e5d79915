"""MQTT payloads: the documented example byte for byte, round trips, and refusals by field."""

from __future__ import annotations

import json
from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ravend.protocol.decoder import decode
from ravend.protocol.framer import RawFragment
from ravend.protocol.model import KIND_UNITS, Kind, Reading, scale
from ravend.serialize import fragment_body
from ravend.sinks.base import StateItem
from ravend.sinks.mqtt_payload import (
    PayloadError,
    exact_text,
    iso_millis,
    parse_reading,
    parse_reading_topic,
    reading_dict,
    reading_payload,
    reading_topic,
    state_payload,
    state_topic,
    status_topic,
)

METER = "0x00135003001234ab"
DEVICE = "0xd8d5b9000000054e"

DOCUMENTED = {
    "v": 1, "meter_mac": METER, "device_mac": DEVICE, "kind": "demand",
    "meter_time": "2023-11-14T22:13:20Z", "key_time": 1700000000,
    "received_at": "2023-11-14T22:13:20.512Z", "value": 1.234, "value_exact": "1.234",
    "unit": "kW", "raw": 1234, "multiplier": 1, "divisor": 1000, "scale": "1",
    "clock_flag": None,
}


def demand(raw: int = 1234, *, meter_time: int | None = 1_700_000_000,
           received_at: float = 1_700_000_000.512, multiplier: int = 1,
           divisor: int = 1000) -> Reading:
    return Reading(METER, Kind.DEMAND, meter_time, received_at, raw, multiplier, divisor,
                   scale(raw, multiplier, divisor), "kW", DEVICE)


def test_documented_example_is_what_is_built() -> None:
    assert reading_dict(demand()) == DOCUMENTED
    assert list(reading_dict(demand())) == list(DOCUMENTED)  # documented key order
    assert json.loads(reading_payload(demand())) == DOCUMENTED
    assert reading_topic("ravend", demand()) == f"ravend/{METER}/demand"


def test_documented_example_parses() -> None:
    assert parse_reading(json.dumps(DOCUMENTED)) == demand()


def test_host_timed_reading_has_null_meter_time_and_host_key() -> None:
    r = demand(meter_time=None, received_at=1_700_000_005.9996)
    d = reading_dict(r)
    assert d["meter_time"] is None
    assert d["clock_flag"] == "unset"
    assert d["key_time"] == 1_700_000_005
    assert d["received_at"] == "2023-11-14T22:13:25.999Z"  # truncated, not rounded up
    back = parse_reading(reading_payload(r))
    assert back.key == r.key
    assert back.meter_time is None


@pytest.mark.parametrize(("value", "text"), [
    (Decimal("1.500"), "1.5"), (Decimal(0) / Decimal(1000), "0"), (Decimal("-0.042"), "-0.042"),
    (Decimal(1000), "1000"), (Decimal("1E+3"), "1000"), (Decimal("-0.000"), "0"),
    (Decimal(5) / Decimal(3), "1.666666666666666666666666667"),
    (Decimal(2**64 * (2**32 - 1)), str(2**64 * (2**32 - 1))),  # 30 digits, not rounded
])
def test_value_exact_is_plain_decimal_without_trailing_zeros(value: Decimal, text: str) -> None:
    assert exact_text(value) == text


def test_price_built_two_ways_gives_one_payload() -> None:
    """The decoder scales a price with scaleb, the repeater with scale(): same message."""
    a = Reading(METER, Kind.PRICE, 1_700_000_000, 1_700_000_000.0, 1500, 1, 1000,
                Decimal(1500).scaleb(-3), "USD/kWh", DEVICE)
    b = Reading(METER, Kind.PRICE, 1_700_000_000, 1_700_000_000.0, 1500, 1, 1000,
                scale(1500, 1, 1000), "USD/kWh", DEVICE)
    assert reading_payload(a) == reading_payload(b)
    assert reading_dict(a)["value_exact"] == "1.5"


_KINDS = st.sampled_from(list(Kind))
_TIMES = st.integers(min_value=946_684_800, max_value=4_000_000_000)


@st.composite
def readings(draw: st.DrawFn) -> Reading:
    kind = draw(_KINDS)
    raw = draw(st.integers(min_value=-(2**63), max_value=2**64))
    multiplier = draw(st.integers(min_value=0, max_value=2**32 - 1))
    divisor = draw(st.integers(min_value=0, max_value=2**32 - 1))
    millis = draw(st.integers(min_value=0, max_value=999))
    received = float(f"{draw(_TIMES)}.{millis:03d}")
    meter_time = draw(st.none() | _TIMES)
    unit = KIND_UNITS.get(kind, "USD/kWh")
    device = draw(st.sampled_from(["", DEVICE]))
    return Reading(METER, kind, meter_time, received, raw, multiplier, divisor,
                   scale(raw, multiplier, divisor), unit, device)


@given(readings())
def test_round_trip_keeps_every_field(r: Reading) -> None:
    payload = reading_payload(r)
    back = parse_reading(payload)
    assert back == r  # Decimal compares by value; received_at has millisecond precision here
    assert back.key == r.key
    assert reading_payload(back) == payload


@given(readings(), st.floats(min_value=0, max_value=0.999999))
def test_sub_millisecond_receive_times_keep_the_key(r: Reading, fraction: float) -> None:
    r2 = Reading(r.meter_mac, r.kind, r.meter_time, int(r.received_at) + fraction, r.raw,
                 r.multiplier, r.divisor, r.value, r.unit, r.device_mac)
    assert parse_reading(reading_payload(r2)).key == r2.key


def test_unknown_keys_are_ignored() -> None:
    assert parse_reading({**DOCUMENTED, "added_in_a_later_version": [1, 2]}) == demand()


@pytest.mark.parametrize(("change", "message"), [
    ({"v": 2}, "v: schema version 2"),
    ({"v": True}, "v: expected int"),
    ({"kind": "voltage"}, "kind: unknown kind 'voltage'"),
    ({"meter_time": "2023-11-14 22:13:20"}, "meter_time: expected a UTC time"),
    ({"received_at": "2023-11-14T22:13:20Z"}, "received_at: expected milliseconds"),
    ({"key_time": 1700000001}, "key_time: 1700000001 does not match"),
    ({"value_exact": "1,234"}, "value_exact: not a decimal number"),
    ({"value_exact": "NaN"}, "value_exact: not a finite number"),
    ({"raw": "1234"}, "raw: expected int"),
    ({"value": "1.234"}, "value: expected"),
    ({"unit": None}, "unit: expected str"),
])
def test_bad_messages_name_the_field(change: dict, message: str) -> None:
    with pytest.raises(PayloadError, match=message):
        parse_reading({**DOCUMENTED, **change})


@pytest.mark.parametrize("missing", sorted(set(DOCUMENTED) - {"clock_flag", "scale"}))
def test_every_documented_field_is_required(missing: str) -> None:
    d = dict(DOCUMENTED)
    del d[missing]
    with pytest.raises(PayloadError, match=f"{missing}: missing"):
        parse_reading(d)


def test_clock_flag_is_derived_so_a_message_without_it_parses_the_same() -> None:
    """Messages from a ravend before clock_flag existed (the repeater may replay them)."""
    d = dict(DOCUMENTED)
    del d["clock_flag"]
    assert parse_reading(d) == parse_reading(DOCUMENTED) == demand()
    far_ahead = {**DOCUMENTED, "meter_time": "2068-01-19T03:14:08Z", "key_time": 3_094_168_448}
    assert reading_dict(parse_reading(far_ahead))["clock_flag"] == "ahead"


@pytest.mark.parametrize("payload", [b"", b"[1]", b"\xff", b"{"])
def test_not_a_json_object_is_refused(payload: bytes) -> None:
    with pytest.raises(PayloadError):
        parse_reading(payload)


def test_topics() -> None:
    assert parse_reading_topic("ravend", f"ravend/{METER}/summation_received") == (
        METER, Kind.SUMMATION_RECEIVED)
    assert parse_reading_topic("home/meter", f"home/meter/{METER}/demand") == (METER, Kind.DEMAND)
    for other in (f"ravend/{DEVICE}/info/DeviceInfo", "ravend/ravend/x/status",
                  f"ravend/{METER}/voltage", f"other/{METER}/demand", "ravend/x/demand"):
        assert parse_reading_topic("ravend", other) is None, other
    assert status_topic("ravend", "ravend-pi") == "ravend/ravend/ravend-pi/status"


def test_state_payload_leaves_out_the_network_keys() -> None:
    item = StateItem(DEVICE, "", "DeviceInfo", 1_700_000_000.25, {
        "device_mac_id": DEVICE, "install_code": "0x0c5c7fd0a6a3a450",
        "link_key": "0x1818e811892f902bd23f0824128b2f33", "fw_version": "2.0.0 (7400)",
        "model_id": "Z106-RAVEn", "extra": []})
    assert state_topic("ravend", item) == f"ravend/{DEVICE}/info/DeviceInfo"
    data = json.loads(state_payload(item))
    assert data == {"v": 1, "device_mac": DEVICE, "meter_mac": None, "tag": "DeviceInfo",
                    "received_at": "2023-11-14T22:13:20.250Z",
                    "body": {"device_mac_id": DEVICE, "fw_version": "2.0.0 (7400)",
                             "model_id": "Z106-RAVEn", "extra": []}}
    assert b"link_key" not in state_payload(item)


def test_state_without_device_goes_under_unknown() -> None:
    item = StateItem("", "", "Warning", 1.0, {"text": "x"})
    assert state_topic("ravend", item) == "ravend/unknown/info/Warning"


def test_iso_millis_never_rounds_into_the_next_second() -> None:
    assert iso_millis(1_700_000_000.9999) == "2023-11-14T22:13:20.999Z"
    assert iso_millis(1_700_000_000.5) == "2023-11-14T22:13:20.500Z"
    assert iso_millis(1_700_000_000) == "2023-11-14T22:13:20.000Z"


@pytest.mark.parametrize("child", ["LinkKey", "linkkey", "Link_Key", "INSTALLCODE", "InstallCode"])
def test_a_secret_child_however_spelt_is_never_published(child: str) -> None:
    """A faulty stick may spell the link key's child otherwise: the decoder keeps an unknown
    child under ``extra``, and that must not carry the secret out either."""
    fragment = decode(RawFragment("DeviceInfo", (
        "<DeviceInfo><DeviceMacId>0xd8d5b90000001234</DeviceMacId>"
        f"<{child}>0x5ec2e7</{child}><FWVersion>2.0.0</FWVersion></DeviceInfo>").encode()))
    item = StateItem("0xd8d5b90000001234", "", "DeviceInfo", 0.0, fragment_body(fragment))
    payload = state_payload(item)
    assert b"5ec2e7" not in payload and b"2.0.0" in payload, payload
