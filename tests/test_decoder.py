"""Decoder: one fragment → its dataclass, fragments → readings (PROTOCOL.md, "Field encodings").

Fragments are written here as devices print them and fed through ``StreamDecoder`` whole, byte by
byte and in random chunks with trailing bytes; every way must decode to the same values.
"""

from __future__ import annotations

import random
import re
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import pytest

from ravend.protocol import model as m
from ravend.protocol.decoder import StreamDecoder, decode
from ravend.protocol.framer import RawFragment
from ravend.protocol.model import METER_EPOCH_OFFSET, DecodeError, Discarded, Kind
from ravend.protocol.readings import readings_from

EPOCH = METER_EPOCH_OFFSET  # 946684800: 2000-01-01 00:00:00 UTC in Unix seconds
RECEIVED = 1_700_000_000.75  # host receive time handed to readings_from
DEV = "0xd8d5b9000000054e"
METER = "0x00078100011a4c66"
TRAILER = b"<CurrentSummationDelivered>\r\n  <DeviceMacId>0x"


# --- helpers ----------------------------------------------------------------------------------


def wire(text: str, eol: str = "\r\n") -> bytes:
    """Test text as device bytes: LF → ``eol``; characters U+0080..U+00FF become single bytes."""
    return text.replace("\n", eol).encode("latin-1")


def _chunkings(data: bytes) -> dict[str, list[bytes]]:
    ways = {"whole": [data], "bytewise": [data[i : i + 1] for i in range(len(data))]}
    rng = random.Random(len(data))
    chunks, i = [], 0
    tailed = data + TRAILER
    while i < len(tailed):
        n = rng.randint(1, 30)
        chunks.append(tailed[i : i + n])
        i += n
    ways["chunks+trailing"] = chunks
    return ways


def decode_stream(data: bytes) -> list[Any]:
    """Everything StreamDecoder yields for ``data`` then end of stream, checked three ways.

    Decoded values (all but Discarded) must be the same whatever the chunking; the trailing bytes
    of the third way must come out as one half-fragment report at end of stream and nothing else.
    """
    results: dict[str, list[Any]] = {}
    for name, chunks in _chunkings(data).items():
        decoder = StreamDecoder()
        out: list[Any] = []
        for chunk in chunks:
            out += decoder.feed(chunk)
        end = decoder.feed(b"")
        if name == "chunks+trailing":
            assert end[-1:] == [
                Discarded("stream ended inside a fragment", len(TRAILER), TRAILER)
            ]
            end = end[:-1]
        results[name] = out + end
    whole = results["whole"]
    for name, out in results.items():
        assert [o for o in out if not isinstance(o, Discarded)] == [
            o for o in whole if not isinstance(o, Discarded)
        ], name
    return whole


def one(text: str, eol: str = "\r\n") -> Any:
    """The single decoded value of one fragment written in the test."""
    out = decode_stream(wire(text, eol) + eol.encode())
    assert len(out) == 1, out
    return out[0]


def demand_fragment(demand: str = "0x001540", multiplier: str = "0x00000001",
                    divisor: str = "0x000003e8", stamp: str = "0x25117e9f") -> str:
    return f"""<InstantaneousDemand>
  <DeviceMacId>{DEV}</DeviceMacId>
  <MeterMacId>{METER}</MeterMacId>
  <TimeStamp>{stamp}</TimeStamp>
  <Demand>{demand}</Demand>
  <Multiplier>{multiplier}</Multiplier>
  <Divisor>{divisor}</Divisor>
  <DigitsRight>0x03</DigitsRight>
  <DigitsLeft>0x06</DigitsLeft>
  <SuppressLeadingZero>Y</SuppressLeadingZero>
</InstantaneousDemand>"""


def usage_fragment(usage: str, stamp: str = "0x25117e9f") -> str:
    return f"""<CurrentPeriodUsage>
    <DeviceMacId>{DEV}</DeviceMacId>
    <MeterMacId>{METER}</MeterMacId>
    <TimeStamp>{stamp}</TimeStamp>
    <CurrentUsage>{usage}</CurrentUsage>
    <Multiplier>0x00000001</Multiplier>
    <Divisor>0x000003e8</Divisor>
    <DigitsRight>0x03</DigitsRight>
    <DigitsLeft>0x06</DigitsLeft>
    <SuppressLeadingZero>Y</SuppressLeadingZero>
    <StartDate>0x250f0000</StartDate>
</CurrentPeriodUsage>"""


def summation_fragment(delivered: str, received: str | None = None, extra: str = "") -> str:
    received_line = (f"\n  <SummationReceived>{received}</SummationReceived>"
                     if received is not None else "")
    return f"""<CurrentSummationDelivered>
  <DeviceMacId>{DEV}</DeviceMacId>
  <MeterMacId>{METER}</MeterMacId>
  <TimeStamp>0x25117ea8</TimeStamp>
  <SummationDelivered>{delivered}</SummationDelivered>{received_line}
  <Multiplier>0x00000001</Multiplier>
  <Divisor>0x000003e8</Divisor>{extra}
</CurrentSummationDelivered>"""


def time_cluster(utc: str, local: str) -> str:
    return f"""<TimeCluster>
  <DeviceMacId>{DEV}</DeviceMacId>
  <MeterMacId>{METER}</MeterMacId>
  <UTCTime>{utc}</UTCTime>
  <LocalTime>{local}</LocalTime>
</TimeCluster>"""


def price_fragment(price: str = "0x0000013b", currency: str = "0x0348", digits: str = "0x03",
                   extra: str = "") -> str:
    return f"""<PriceCluster>
  <DeviceMacId>{DEV}</DeviceMacId>
  <MeterMacId>{METER}</MeterMacId>
  <TimeStamp>0x25117e9f</TimeStamp>
  <Price>{price}</Price>
  <Currency>{currency}</Currency>
  <TrailingDigits>{digits}</TrailingDigits>
  <Tier>0x02</Tier>{extra}
</PriceCluster>"""


# --- every fragment type ----------------------------------------------------------------------


def test_instantaneous_demand_decodes_all_fields() -> None:
    d = one(demand_fragment())
    assert d == m.InstantaneousDemand(
        device_mac_id=DEV, meter_mac_id=METER, time_stamp=0x25117E9F + EPOCH, demand=0x1540,
        multiplier=1, divisor=1000, digits_right=3, digits_left=6, suppress_leading_zero=True,
    )
    assert d.kw == Decimal("5.44")
    # PROTOCOL.md's example: 2019-09-15 22:58:39 UTC.
    assert d.time_stamp == datetime(2019, 9, 15, 22, 58, 39, tzinfo=UTC).timestamp()


def test_current_summation_delivered_decodes_with_received() -> None:
    s = one(summation_fragment("0x0000000001f1a2b3", "0x00000000000a1b2c", extra="""
  <DigitsRight>0x01</DigitsRight>
  <DigitsLeft>0x06</DigitsLeft>
  <SuppressLeadingZero>Y</SuppressLeadingZero>"""))
    assert isinstance(s, m.CurrentSummationDelivered)
    assert (s.time_stamp, s.summation_delivered, s.summation_received) == (
        0x25117EA8 + EPOCH, 0x1F1A2B3, 0xA1B2C,
    )
    assert s.delivered_kwh == Decimal("32613.043")
    assert s.received_kwh == Decimal("662.316")


def test_current_summation_delivered_without_received_is_none() -> None:
    s = one(summation_fragment("0x0000000001f1a2b3"))
    assert s.summation_received is None
    assert s.received_kwh is None
    assert [r.kind for r in readings_from(s, RECEIVED)] == [Kind.SUMMATION_DELIVERED]


def connection_status(status: str, description: str = " ") -> str:
    return f"""<ConnectionStatus>
  <DeviceMacId>{DEV}</DeviceMacId>
  <MeterMacId>{METER}</MeterMacId>
  <Status>{status}</Status>
  <Description>{description}</Description>
  <StatusCode>0x00</StatusCode>
  <ExtPanId>0x00078100011A4C66</ExtPanId>
  <Channel>20</Channel>
  <ShortAddr>0xe1b0</ShortAddr>
  <LinkStrength>0x64</LinkStrength>
</ConnectionStatus>"""


def test_connection_status_decodes_all_fields() -> None:
    c = one(connection_status("Connected"))
    assert c == m.ConnectionStatus(
        device_mac_id=DEV, meter_mac_id=METER, status=m.ConnectionState.CONNECTED,
        description="", status_code=0, ext_pan_id="0x00078100011a4c66", channel=20,
        short_addr=0xE1B0, link_strength=100,
    )


@pytest.mark.parametrize("state", list(m.ConnectionState), ids=lambda s: s.value)
def test_connection_status_documented_texts_map_to_the_enum(state: m.ConnectionState) -> None:
    assert one(connection_status(state.value)).status is state


def test_connection_status_initializing_with_dots_is_initializing() -> None:
    assert one(connection_status("Initializing...")).status is m.ConnectionState.INITIALIZING


def test_connection_status_unknown_text_is_kept_as_plain_text() -> None:
    status = one(connection_status("Scanning Channels")).status
    assert status == "Scanning Channels"
    assert not isinstance(status, m.ConnectionState)


def test_connection_status_channel_is_decimal_not_hex() -> None:
    c = one(connection_status("Joining").replace("<Channel>20<", "<Channel>11<"))
    assert c.channel == 11  # hex would give 17


def test_connection_status_minimal_fragment_has_none_for_absent_fields() -> None:
    c = one(f"""<ConnectionStatus>
  <DeviceMacId>{DEV}</DeviceMacId>
  <Status>Initializing</Status>
</ConnectionStatus>""")
    assert c == m.ConnectionStatus(DEV, None, m.ConnectionState.INITIALIZING)


def test_network_info_decodes_all_fields() -> None:
    n = one(f"""<NetworkInfo>
  <DeviceMacId>{DEV}</DeviceMacId>
  <CoordMacId>{METER}</CoordMacId>
  <Status>Join: Success</Status>
  <Description>Successfully Joined</Description>
  <StatusCode>0x03</StatusCode>
  <ExtPanId>{METER}</ExtPanId>
  <Channel>11</Channel>
  <ShortAddr>0x2b4c</ShortAddr>
  <LinkStrength>0x50</LinkStrength>
</NetworkInfo>""")
    assert n == m.NetworkInfo(
        device_mac_id=DEV, coord_mac_id=METER, status=m.ConnectionState.JOIN_SUCCESS,
        description="Successfully Joined", status_code=3, ext_pan_id=METER, channel=11,
        short_addr=0x2B4C, link_strength=0x50,
    )


def test_device_info_decodes_text_and_strips_ff_filler() -> None:
    d = one(f"""<DeviceInfo>
  <DeviceMacId>{DEV}</DeviceMacId>
  <InstallCode>0x8ba7f1dee6c4f5cc</InstallCode>
  <LinkKey>0x2b6ad5e29cba3a6bbb1d3e1f7b04a5f6</LinkKey>
  <FWVersion>2.0.0 (7400)</FWVersion>
  <HWVersion>1.2.3</HWVersion>
  <ImageType>0x1301</ImageType>
  <Manufacturer>Rainforest Automation, Inc.</Manufacturer>
  <ModelId>Z105-2-EMU2-LEDD_JM</ModelId>
  <DateCode>2013103023220630\xff\xff\xff\xff</DateCode>
</DeviceInfo>""")
    assert d == m.DeviceInfo(
        device_mac_id=DEV, install_code="0x8ba7f1dee6c4f5cc",
        link_key="0x2b6ad5e29cba3a6bbb1d3e1f7b04a5f6", fw_version="2.0.0 (7400)",
        hw_version="1.2.3", image_type="0x1301", manufacturer="Rainforest Automation, Inc.",
        model_id="Z105-2-EMU2-LEDD_JM", date_code="2013103023220630",
    )


def test_meter_list_keeps_every_repeated_meter_mac_id_in_order() -> None:
    ml = one(f"""<MeterList>
  <DeviceMacId>{DEV}</DeviceMacId>
  <MeterMacId>0x00078100011a4c66</MeterMacId>
  <MeterMacId>0x00135003001234AB</MeterMacId>
  <MeterMacId>0x001c6400135bce4c</MeterMacId>
</MeterList>""")
    assert ml == m.MeterList(
        DEV, ("0x00078100011a4c66", "0x00135003001234ab", "0x001c6400135bce4c")
    )


def test_meter_list_without_meters_is_an_empty_tuple() -> None:
    assert one(f"<MeterList>\n  <DeviceMacId>{DEV}</DeviceMacId>\n</MeterList>") == m.MeterList(
        DEV, ()
    )


def test_meter_info_keeps_unknown_meter_type_0x0000() -> None:
    mi = one(f"""<MeterInfo>
  <DeviceMacId>{DEV}</DeviceMacId>
  <MeterMacId>{METER}</MeterMacId>
  <MeterType>0x0000</MeterType>
  <NickName>House</NickName>
  <Account>12-345</Account>
  <Auth>none</Auth>
  <Host>utility</Host>
  <Enabled>Y</Enabled>
</MeterInfo>""")
    assert mi == m.MeterInfo(DEV, METER, "0x0000", "House", "12-345", "none", "utility", True)
    assert not isinstance(mi.meter_type, m.MeterType)


def test_meter_info_known_meter_type_maps_to_the_enum() -> None:
    mi = one(f"""<MeterInfo>
  <DeviceMacId>{DEV}</DeviceMacId>
  <MeterMacId>{METER}</MeterMacId>
  <MeterType>electric</MeterType>
  <Enabled>N</Enabled>
</MeterInfo>""")
    assert mi.meter_type is m.MeterType.ELECTRIC
    assert mi.enabled is False


def test_time_cluster_converts_both_clocks_from_the_2000_epoch() -> None:
    t = one(time_cluster("0x25117e9f", "0x2510f1ff"))
    assert t == m.TimeCluster(DEV, METER, 0x25117E9F + EPOCH, 0x2510F1FF + EPOCH)
    assert t.utc_time - t.local_time == 10 * 3600


def test_time_cluster_with_unset_clock_is_none() -> None:
    t = one(time_cluster("0xffffffff", "0xffffffff"))
    assert (t.utc_time, t.local_time) == (None, None)


def test_price_cluster_decodes_labels_start_time_and_duration() -> None:
    p = one(price_fragment(extra="""
  <TierLabel>Off Peak</TierLabel>
  <RateLabel>Block 1</RateLabel>
  <StartTime>0x25117e00</StartTime>
  <Duration>0x003c</Duration>"""))
    assert p == m.PriceCluster(
        device_mac_id=DEV, meter_mac_id=METER, time_stamp=0x25117E9F + EPOCH, price=315,
        currency=840, trailing_digits=3, tier=2, tier_label="Off Peak", rate_label="Block 1",
        start_time=0x25117E00 + EPOCH, duration=60,
    )
    assert p.amount == Decimal("0.315")


def test_price_cluster_price_all_f_is_no_price_and_no_reading() -> None:
    p = one(price_fragment(price="0xffffffff", extra="\n  <Duration>0xffff</Duration>"))
    assert p.price is None
    assert p.amount is None
    assert p.duration is None
    assert readings_from(p, RECEIVED) == []


def test_price_cluster_price_0xffff_is_a_real_price() -> None:
    """Only the 32-bit 0xffffffff means "no price"; 65535 at 3 digits is 65.535 (yen, say)."""
    p = one(price_fragment(price="0x0000ffff", currency="0x0188"))
    assert p.price == 0xFFFF
    [r] = readings_from(p, RECEIVED)
    assert r.value == Decimal("65.535")
    assert r.unit == "392/kWh"


def test_price_cluster_unknown_currency_998_is_kept_as_a_number() -> None:
    p = one(price_fragment(currency="0x03e6"))
    assert p.currency == 998
    assert readings_from(p, RECEIVED)[0].unit == "998/kWh"


def test_block_price_detail_decodes_all_fields() -> None:
    b = one(f"""<BlockPriceDetail>
  <DeviceMacId>{DEV}</DeviceMacId>
  <MeterMacId>{METER}</MeterMacId>
  <TimeStamp>0x25117e9f</TimeStamp>
  <CurrentStart>0x25100000</CurrentStart>
  <CurrentDuration>0x05a0</CurrentDuration>
  <BlockPeriodConsumption>0x0000000000231c38</BlockPeriodConsumption>
  <BlockPeriodConsumptionMultiplier>0x00000001</BlockPeriodConsumptionMultiplier>
  <BlockPeriodConsumptionDivisor>0x000003e8</BlockPeriodConsumptionDivisor>
  <NumberOfBlocks>0x02</NumberOfBlocks>
  <Multiplier>0x00000001</Multiplier>
  <Divisor>0x000003e8</Divisor>
  <Currency>0x0348</Currency>
  <TrailingDigits>0x03</TrailingDigits>
</BlockPriceDetail>""")
    assert b == m.BlockPriceDetail(
        device_mac_id=DEV, meter_mac_id=METER, time_stamp=0x25117E9F + EPOCH,
        current_start=0x25100000 + EPOCH, current_duration=1440,
        block_period_consumption=2300984, block_period_consumption_multiplier=1,
        block_period_consumption_divisor=1000, number_of_blocks=2, multiplier=1, divisor=1000,
        currency=840, trailing_digits=3,
    )
    assert readings_from(b, RECEIVED) == []


MESSAGE = f"""<MessageCluster>
  <DeviceMacId>{DEV}</DeviceMacId>
  <MeterMacId>{METER}</MeterMacId>
  <TimeStamp>0x25117e9f</TimeStamp>
  <Id>0x00000003</Id>
  <Text>Caf\xe9 &amp; &lt;b&gt;peak&lt;/b&gt; pricing 5&#8211;8 pm\xff\xff\xff\xff</Text>
  <Priority>High</Priority>
  <StartTime>0x25117e00</StartTime>
  <Duration>0xffff</Duration>
  <ConfirmationRequired>Y</ConfirmationRequired>
  <Confirmed>N</Confirmed>
  <Queue>Active</Queue>
</MessageCluster>"""


def test_message_cluster_unescapes_html_decodes_cp1252_and_strips_ff_filler() -> None:
    msg = one(MESSAGE)
    assert b"\xe9" in wire(MESSAGE) and b"\xff\xff" in wire(MESSAGE)  # single raw bytes
    assert msg == m.MessageCluster(
        device_mac_id=DEV, meter_mac_id=METER, time_stamp=0x25117E9F + EPOCH, id="0x00000003",
        text="Caf\u00e9 & <b>peak</b> pricing 5\u20138 pm", priority="High",
        start_time=0x25117E00 + EPOCH, duration=None, confirmation_required=True,
        confirmed=False, queue="Active",
    )


def test_message_text_uses_cp1252_and_keeps_its_undefined_bytes() -> None:
    raw = (f"<MessageCluster>\r\n  <DeviceMacId>{DEV}</DeviceMacId>\r\n"
           f"  <MeterMacId>{METER}</MeterMacId>\r\n  <TimeStamp>0x25117e9f</TimeStamp>\r\n"
           ).encode() + b"  <Text>\x80 5 \x93ok\x94 \x81</Text>\r\n</MessageCluster>\r\n"
    [msg] = decode_stream(raw)
    assert msg.text == "\u20ac 5 \u201cok\u201d \x81"  # cp1252 € “ ”, 0x81 kept as U+0081


def test_schedule_info_maps_event_and_frequency() -> None:
    s = one(f"""<ScheduleInfo>
  <DeviceMacId>{DEV}</DeviceMacId>
  <MeterMacId>{METER}</MeterMacId>
  <Event>demand</Event>
  <Frequency>0x0008</Frequency>
  <Enabled>Y</Enabled>
</ScheduleInfo>""")
    assert s == m.ScheduleInfo(DEV, METER, m.ScheduleEvent.DEMAND, 8, True)


def test_schedule_info_unknown_event_kept_and_meter_optional() -> None:
    s = one(f"""<ScheduleInfo>
  <DeviceMacId>{DEV}</DeviceMacId>
  <Event>billing_period</Event>
  <Frequency>0x00f0</Frequency>
  <Enabled>N</Enabled>
</ScheduleInfo>""")
    assert s == m.ScheduleInfo(DEV, None, "billing_period", 240, False)
    assert not isinstance(s.event, m.ScheduleEvent)


def test_current_period_usage_decodes_all_fields() -> None:
    u = one(usage_fragment("0x0000000000005a3a"))
    assert u == m.CurrentPeriodUsage(
        device_mac_id=DEV, meter_mac_id=METER, time_stamp=0x25117E9F + EPOCH,
        current_usage=23098, multiplier=1, divisor=1000, digits_right=3, digits_left=6,
        suppress_leading_zero=True, start_date=0x250F0000 + EPOCH,
    )
    assert u.kwh == Decimal("23.098")


def test_last_period_usage_decodes_and_its_reading_is_timed_by_end_date() -> None:
    u = one(f"""<LastPeriodUsage>
  <DeviceMacId>{DEV}</DeviceMacId>
  <MeterMacId>{METER}</MeterMacId>
  <LastUsage>0x0000000000011d28</LastUsage>
  <Multiplier>0x00000001</Multiplier>
  <Divisor>0x000003e8</Divisor>
  <DigitsRight>0x03</DigitsRight>
  <DigitsLeft>0x06</DigitsLeft>
  <SuppressLeadingZero>Y</SuppressLeadingZero>
  <StartDate>0x250f0000</StartDate>
  <EndDate>0x2510517f</EndDate>
</LastPeriodUsage>""")
    assert u == m.LastPeriodUsage(
        device_mac_id=DEV, meter_mac_id=METER, last_usage=73000, multiplier=1, divisor=1000,
        digits_right=3, digits_left=6, suppress_leading_zero=True,
        start_date=0x250F0000 + EPOCH, end_date=0x2510517F + EPOCH,
    )
    [r] = readings_from(u, RECEIVED)
    assert (r.kind, r.value, r.unit, r.meter_time) == (
        Kind.LAST_PERIOD_USAGE, Decimal("73"), "kWh", 0x2510517F + EPOCH,
    )


def test_profile_data_keeps_repeated_intervals_newest_first_with_invalid_as_none() -> None:
    p = one(f"""<ProfileData>
  <DeviceMacId>{DEV}</DeviceMacId>
  <MeterMacId>{METER}</MeterMacId>
  <EndTime>0x25117e00</EndTime>
  <Status>0x00</Status>
  <ProfileIntervalPeriod>3</ProfileIntervalPeriod>
  <NumberOfPeriodsDelivered>0x04</NumberOfPeriodsDelivered>
  <IntervalData>0x0001f4</IntervalData>
  <IntervalData>0xFFFFFF</IntervalData>
  <IntervalData>0x0000c8</IntervalData>
  <IntervalData>0x000000</IntervalData>
</ProfileData>""")
    assert p == m.ProfileData(
        device_mac_id=DEV, meter_mac_id=METER, end_time=0x25117E00 + EPOCH, status=0,
        profile_interval_period=3, number_of_periods_delivered=4,
        interval_data=(500, None, 200, 0),
    )
    assert readings_from(p, RECEIVED) == []


def test_warning_keeps_its_text() -> None:
    w = one("<Warning>\n  <Text>Unknown command</Text>\n</Warning>")
    assert w == m.Warning("Unknown command")
    assert readings_from(w, RECEIVED) == []


# --- field encodings --------------------------------------------------------------------------


def test_timestamp_zero_is_2000_01_01_utc_not_1970() -> None:
    d = one(demand_fragment(stamp="0x00000000"))
    assert d.time_stamp == 946_684_800
    assert d.time_stamp == datetime(2000, 1, 1, tzinfo=UTC).timestamp()


@pytest.mark.parametrize("unset", ["0xffffffff", "0xffffff", "0xFFFFFFFF"])
def test_unset_timestamp_is_none_and_the_reading_is_kept_host_timed(unset: str) -> None:
    d = one(demand_fragment(stamp=unset))
    assert d.time_stamp is None
    [r] = readings_from(d, RECEIVED)
    assert r.meter_time is None
    assert r.received_at == RECEIVED
    assert r.key == (METER, "demand", int(RECEIVED))


@pytest.mark.parametrize(
    ("text", "raw", "kw"),
    [
        ("0xfffffa36", -1482, "-1.482"),  # 32-bit two's complement: exporting solar
        ("0xfffa36", -1482, "-1.482"),  # the same as a 6-digit int24
        ("0x800000", -8388608, "-8388.608"),  # int24 minimum
        ("0x7fffff", 8388607, "8388.607"),  # int24 maximum stays positive
        ("0x00800000", 8388608, "8388.608"),  # 8 digits: only >= 2^31 is negative
        ("0x7fffffff", 2**31 - 1, "2147483.647"),
        ("0x80000000", -(2**31), "-2147483.648"),
        ("0x000000", 0, "0"),
    ],
)
def test_demand_sign_follows_the_width_sent(text: str, raw: int, kw: str) -> None:
    d = one(demand_fragment(demand=text))
    assert d.demand == raw
    assert d.kw == Decimal(kw)
    [r] = readings_from(d, RECEIVED)
    assert (r.raw, r.value) == (raw, Decimal(kw))


def test_summation_beyond_32_bits_is_kept_exactly() -> None:
    s = one(summation_fragment("0x0000123456789abc", "0x0000000100000001"))
    assert s.summation_delivered == 0x123456789ABC == 20015998343868
    assert s.summation_received == 2**32 + 1  # truncating to 32 bits would give 1
    assert s.delivered_kwh == Decimal("20015998343.868")
    delivered, received = readings_from(s, RECEIVED)
    assert delivered.value == Decimal("20015998343.868")
    assert received.value == Decimal("4294967.297")


def test_negative_64_bit_period_usage_is_signed() -> None:
    u = one(usage_fragment("0xfffffffffffff830"))
    assert u.current_usage == -2000
    assert u.kwh == Decimal("-2")
    assert readings_from(u, RECEIVED)[0].value == Decimal("-2.000")


@pytest.mark.parametrize(
    ("multiplier", "divisor", "kw"),
    [
        ("0x00000000", "0x00000000", "1234"),
        ("0x00000000", "0x000003e8", "1.234"),
        ("0x00000002", "0x00000000", "2468"),
        ("0x00000003", "0x000003e8", "3.702"),
    ],
)
def test_multiplier_and_divisor_zero_mean_one_and_raw_values_are_kept(
    multiplier: str, divisor: str, kw: str
) -> None:
    d = one(demand_fragment(demand="0x0004d2", multiplier=multiplier, divisor=divisor))
    assert (d.multiplier, d.divisor) == (int(multiplier, 16), int(divisor, 16))
    assert d.kw == Decimal(kw)
    [r] = readings_from(d, RECEIVED)
    assert (r.raw, r.multiplier, r.divisor, r.value) == (
        1234, int(multiplier, 16), int(divisor, 16), Decimal(kw),
    )


def test_upper_case_hex_is_accepted_and_macs_are_lower_cased() -> None:
    text = demand_fragment(demand="0X0004D2", divisor="0x000003E8").replace(
        DEV, DEV.upper().replace("0X", "0x")
    )
    d = one(text)
    assert (d.demand, d.divisor) == (1234, 1000)
    assert d.device_mac_id == DEV


def test_lf_line_endings_decode_like_crlf() -> None:
    assert one(demand_fragment(), eol="\n") == one(demand_fragment(), eol="\r\n")


def test_unknown_child_field_is_kept_in_extra() -> None:
    text = demand_fragment().replace(
        "  <Multiplier>", "  <FutureField>abc 1</FutureField>\n  <Port>0x01</Port>\n  <Multiplier>"
    )
    d = one(text)
    assert d.extra == (("FutureField", "abc 1"), ("Port", "0x01"))
    assert d.kw == Decimal("5.44")


def test_unknown_root_tag_becomes_unknown_fragment_with_fields_and_raw() -> None:
    text = """<FirmwareNotice>
  <DeviceMacId>0xd8d5b9000000054e</DeviceMacId>
  <Version>2.0.4</Version>
  <Version>2.0.5</Version>
</FirmwareNotice>"""
    u = one(text)
    assert u == m.UnknownFragment(
        "FirmwareNotice",
        (("DeviceMacId", "0xd8d5b9000000054e"), ("Version", "2.0.4"), ("Version", "2.0.5")),
        wire(text),
    )
    assert readings_from(u, RECEIVED) == []


@pytest.mark.parametrize(
    "bad",
    ["0x00zz40", "-0x0005", "+0x000005", "0x00_540", "0x", "", "12 34", "0x1540 kW", "&lol9;"],
)
def test_bad_hex_is_a_decode_error_naming_fragment_field_and_text(bad: str) -> None:
    err = one(demand_fragment(demand=bad))
    assert isinstance(err, DecodeError)
    assert (err.tag, err.field) == ("InstantaneousDemand", "Demand")
    assert repr(bad) in err.reason
    assert str(err) == f"cannot decode InstantaneousDemand.Demand: {err.reason}"
    assert err.raw == wire(demand_fragment(demand=bad))


def test_stream_goes_on_after_a_decode_error() -> None:
    stream = (wire(demand_fragment(demand="0x00zz40")) + b"\r\n"
              + wire(demand_fragment(demand="0x000064")) + b"\r\n")
    err, good = decode_stream(stream)
    assert isinstance(err, DecodeError) and err.field == "Demand"
    assert isinstance(good, m.InstantaneousDemand) and good.demand == 100


@pytest.mark.parametrize(
    ("child", "text"),
    [
        ("SuppressLeadingZero", "Yes"),
        ("DeviceMacId", "0xd8d5b9zz0000054e"),
        ("TimeStamp", "yesterday"),
        ("Multiplier", "-1"),
    ],
)
def test_bad_field_of_any_converter_names_the_field(child: str, text: str) -> None:
    frag = re.sub(f"<{child}>[^<]*</{child}>", f"<{child}>{text}</{child}>", demand_fragment())
    err = one(frag)
    assert isinstance(err, DecodeError)
    assert (err.tag, err.field) == ("InstantaneousDemand", child)
    assert repr(text) in err.reason


@pytest.mark.parametrize("bad", ["twenty", "-5", "1_1", "\xb9\xb2"])
def test_bad_decimal_channel_is_a_decode_error(bad: str) -> None:
    err = one(connection_status("Connected").replace("<Channel>20<", f"<Channel>{bad}<"))
    assert isinstance(err, DecodeError)
    assert (err.tag, err.field) == ("ConnectionStatus", "Channel")


@pytest.mark.parametrize("child", ["Demand", "TimeStamp", "MeterMacId", "Divisor"])
def test_missing_required_field_is_a_decode_error_naming_it(child: str) -> None:
    lines = [ln for ln in demand_fragment().split("\n") if f"<{child}>" not in ln]
    err = one("\n".join(lines))
    assert err == DecodeError("InstantaneousDemand", child, "missing", wire("\n".join(lines)))
    assert str(err) == f"cannot decode InstantaneousDemand.{child}: missing"


def test_missing_price_is_a_decode_error_not_no_price() -> None:
    text = price_fragment().replace("  <Price>0x0000013b</Price>\n", "")
    err = one(text)
    assert isinstance(err, DecodeError) and err.field == "Price"


# --- hostile input ----------------------------------------------------------------------------

BILLION_LAUGHS = demand_fragment(demand="&lol9;").replace("<InstantaneousDemand>\n", """\
<InstantaneousDemand>
<!DOCTYPE lolz [
 <!ENTITY lol "lol">
 <!ENTITY lol1 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">
 <!ENTITY lol2 "&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;">
 <!ENTITY lol3 "&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;">
 <!ENTITY lol9 "&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;">
]>
""", 1)


def test_billion_laughs_inside_a_fragment_is_refused_without_expansion() -> None:
    stream = wire(BILLION_LAUGHS) + b"\r\n" + wire(demand_fragment()) + b"\r\n"
    err, good = decode_stream(stream)
    assert err == DecodeError(
        "InstantaneousDemand", None, "markup declarations (DTD/entity) are refused",
        wire(BILLION_LAUGHS),
    )
    assert good == one(demand_fragment())  # and the stream goes on


@pytest.mark.parametrize(
    "inserted",
    [
        '<!ENTITY x "0x000001">',
        '<?xml version="1.0"?>',
        "<!-- a comment -->",
        "<![CDATA[0x001540]]>",
    ],
)
def test_markup_declarations_inside_a_fragment_are_decode_errors(inserted: str) -> None:
    err = one(demand_fragment().replace("  <Demand>", f"  {inserted}\n  <Demand>"))
    assert isinstance(err, DecodeError)
    assert (err.tag, err.field) == ("InstantaneousDemand", None)
    assert "refused" in err.reason


def test_nested_markup_in_a_child_is_a_decode_error() -> None:
    err = one(demand_fragment(demand="<b>0x001540</b>"))
    assert isinstance(err, DecodeError)
    assert err.tag == "InstantaneousDemand"
    assert "unexpected content" in err.reason


def test_undeclared_entity_in_text_is_kept_literally() -> None:
    w = one("<Warning>\n  <Text>&lol9; &amp;lt;</Text>\n</Warning>")
    assert w.text == "&lol9; &lt;"  # one level of HTML unescaping, no entity expansion


def test_decode_never_raises_for_a_malformed_raw_fragment() -> None:
    for raw in (b"", b"garbage", b"<InstantaneousDemand>", b"\xff\xfe<<>>",
                b"<InstantaneousDemand></InstantaneousDemand>"):
        out = decode(RawFragment("InstantaneousDemand", raw))
        assert isinstance(out, DecodeError), raw


# --- readings ---------------------------------------------------------------------------------


def test_demand_reading_carries_identity_raw_values_and_both_times() -> None:
    [r] = readings_from(one(demand_fragment()), RECEIVED)
    assert r == m.Reading(
        meter_mac=METER, kind=Kind.DEMAND, meter_time=0x25117E9F + EPOCH, received_at=RECEIVED,
        raw=0x1540, multiplier=1, divisor=1000, value=Decimal("5.44"), unit="kW",
        device_mac=DEV,
    )
    assert r.key == (METER, "demand", 0x25117E9F + EPOCH)
    assert isinstance(r.value, Decimal)


def test_repeated_fragment_gives_readings_with_the_same_key() -> None:
    """Quirk 5: the store keeps one; the decoder gives the same identity both times."""
    data = wire(demand_fragment()) + b"\r\n"
    first, second = decode_stream(data + data)
    assert first == second
    assert readings_from(first, RECEIVED)[0].key == readings_from(second, RECEIVED + 9)[0].key


def test_state_fragments_carry_no_readings() -> None:
    for frag in (
        one(connection_status("Connected")),
        one(f"<MeterList>\n  <DeviceMacId>{DEV}</DeviceMacId>\n</MeterList>"),
        one(MESSAGE),
    ):
        assert readings_from(frag, RECEIVED) == []


def test_stream_decoder_reset_forgets_a_half_fragment() -> None:
    decoder = StreamDecoder()
    assert decoder.feed(wire(demand_fragment())[:120]) == []
    decoder.reset()
    out = decoder.feed(wire(price_fragment()) + b"\r\n")
    assert [type(o) for o in out] == [m.PriceCluster]
