"""Commands: the exact bytes ravend writes, and the arguments it refuses to send."""

from __future__ import annotations

import pytest

from ravend.protocol import model as m
from ravend.protocol.commands import REPLIES, CommandError, build, encode_command
from ravend.protocol.decoder import StreamDecoder
from ravend.protocol.framer import ROOT_TAGS

METER = "0x00135003001234ab"

#: Commands whose only arguments are optional, with no argument given.
NO_ARGUMENTS = sorted(
    n for n in REPLIES if n not in {"set_schedule", "set_current_price", "set_fast_poll",
                                    "confirm_message", "get_profile_data"}
)


def command(*lines: str) -> bytes:
    return ("<Command>\r\n" + "".join(f"  {ln}\r\n" for ln in lines) + "</Command>\r\n").encode()


# --- exact bytes ------------------------------------------------------------------------------


def test_set_current_price_writes_price_and_trailing_digits_in_hex() -> None:
    assert encode_command("set_current_price", {"Price": 315, "TrailingDigits": 3}) == (
        b"<Command>\r\n"
        b"  <Name>set_current_price</Name>\r\n"
        b"  <Price>0x0000013b</Price>\r\n"
        b"  <TrailingDigits>0x03</TrailingDigits>\r\n"
        b"</Command>\r\n"
    )


def test_set_current_price_largest_price_and_digits() -> None:
    assert encode_command("set_current_price", {"Price": 0xFFFFFFFE, "TrailingDigits": 9}) == (
        command("<Name>set_current_price</Name>", "<Price>0xfffffffe</Price>",
                "<TrailingDigits>0x09</TrailingDigits>")
    )


def test_close_current_period_with_meter() -> None:
    assert encode_command("close_current_period", {"MeterMacId": METER}) == command(
        "<Name>close_current_period</Name>", f"<MeterMacId>{METER}</MeterMacId>"
    )


def test_set_schedule_writes_event_frequency_in_hex_and_enabled() -> None:
    assert encode_command(
        "set_schedule", {"Event": "demand", "Frequency": 8, "Enabled": True}
    ) == command(
        "<Name>set_schedule</Name>", "<Event>demand</Event>", "<Frequency>0x0008</Frequency>",
        "<Enabled>Y</Enabled>",
    )


def test_set_schedule_disabled_with_meter_and_largest_frequency() -> None:
    assert encode_command(
        "set_schedule",
        {"MeterMacId": METER, "Event": "summation", "Frequency": 0xFFFF, "Enabled": False},
    ) == command(
        "<Name>set_schedule</Name>", f"<MeterMacId>{METER}</MeterMacId>",
        "<Event>summation</Event>", "<Frequency>0xffff</Frequency>", "<Enabled>N</Enabled>",
    )


def test_set_fast_poll_writes_frequency_and_duration_in_hex() -> None:
    assert encode_command("set_fast_poll", {"Frequency": 4, "Duration": 15}) == command(
        "<Name>set_fast_poll</Name>", "<Frequency>0x0004</Frequency>",
        "<Duration>0x000f</Duration>",
    )


@pytest.mark.parametrize(("refresh", "flag"), [(True, "Y"), (False, "N")])
def test_get_instantaneous_demand_with_meter_and_refresh(refresh: bool, flag: str) -> None:
    assert encode_command(
        "get_instantaneous_demand", {"MeterMacId": "0x00135003001234AB", "Refresh": refresh}
    ) == command(
        "<Name>get_instantaneous_demand</Name>", f"<MeterMacId>{METER}</MeterMacId>",
        f"<Refresh>{flag}</Refresh>",
    )


def test_meter_mac_without_0x_prefix_is_written_with_it() -> None:
    assert build("get_meter_info", {"MeterMacId": " 00135003001234AB "}).fields == (
        ("MeterMacId", METER),
    )


def test_get_profile_data_writes_periods_channel_and_end_time() -> None:
    assert encode_command(
        "get_profile_data",
        {"NumberOfPeriods": 12, "IntervalChannel": "Received", "EndTime": 0x25117E00},
    ) == command(
        "<Name>get_profile_data</Name>", "<NumberOfPeriods>0x0c</NumberOfPeriods>",
        "<IntervalChannel>Received</IntervalChannel>", "<EndTime>0x25117e00</EndTime>",
    )


def test_confirm_message_writes_the_id() -> None:
    assert encode_command("confirm_message", {"Id": "0x00000003"}) == command(
        "<Name>confirm_message</Name>", "<Id>0x00000003</Id>"
    )


@pytest.mark.parametrize("name", NO_ARGUMENTS)
def test_every_argumentless_command_encodes_just_its_name(name: str) -> None:
    assert encode_command(name) == command(f"<Name>{name}</Name>")
    assert build(name).reply_tag == REPLIES[name]


def test_reply_tags_are_fragment_root_tags() -> None:
    assert {t for t in REPLIES.values() if t is not None} <= ROOT_TAGS
    assert build("get_instantaneous_demand").reply_tag == "InstantaneousDemand"
    assert build("set_schedule", {"Event": "time", "Frequency": 900}).reply_tag is None


def test_encoded_command_is_one_well_formed_flat_element() -> None:
    """Our own framer and decoder read a command back as one element with the fields sent."""
    data = encode_command(
        "set_schedule", {"MeterMacId": METER, "Event": "price", "Frequency": 90, "Enabled": True}
    )
    [frag] = StreamDecoder().feed(data)
    assert isinstance(frag, m.UnknownFragment)
    assert frag.tag == "Command"
    assert frag.fields == (
        ("Name", "set_schedule"), ("MeterMacId", METER), ("Event", "price"),
        ("Frequency", "0x005a"), ("Enabled", "Y"),
    )


# --- refusals ---------------------------------------------------------------------------------


def refused(name: str, args: dict[str, object] | None = None) -> str:
    with pytest.raises(CommandError) as info:
        encode_command(name, args)
    assert isinstance(info.value, ValueError)  # API misuse stays a ValueError for callers
    return str(info.value)


def test_factory_reset_is_never_encoded() -> None:
    assert refused("factory_reset") == "factory_reset is never sent by ravend"


@pytest.mark.parametrize("name", ["get_everything", "GET_TIME", "", "get_time "])
def test_unknown_command_name_is_refused(name: str) -> None:
    assert refused(name) == f"unknown command {name!r}"


@pytest.mark.parametrize("frequency", [-1, 0, 0x10000, 10**9])
def test_schedule_frequency_out_of_range_is_refused(frequency: int) -> None:
    message = refused("set_schedule", {"Event": "demand", "Frequency": frequency})
    assert message == f"Frequency must be between 1 and 65535, got {frequency}"


def test_schedule_frequency_missing_is_refused() -> None:
    assert refused("set_schedule", {"Event": "demand"}) == (
        "Frequency must be a whole number, got None"
    )


@pytest.mark.parametrize("event", ["", "billing", "Demand", "profile_data"])
def test_schedule_unknown_event_is_refused(event: str) -> None:
    message = refused("set_schedule", {"Event": event, "Frequency": 8})
    assert message.startswith("Event must be one of time, price, demand, summation, message")
    assert repr(event) in message


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ({"Price": -1, "TrailingDigits": 3}, "Price must be between 0 and 4294967294, got -1"),
        ({"Price": 0xFFFFFFFF, "TrailingDigits": 3},
         "Price must be between 0 and 4294967294, got 4294967295"),  # means "no price"
        ({"Price": 10**12, "TrailingDigits": 3},
         "Price must be between 0 and 4294967294, got 1000000000000"),
        ({"Price": 315, "TrailingDigits": 10}, "TrailingDigits must be between 0 and 9, got 10"),
        ({"Price": 315, "TrailingDigits": -1}, "TrailingDigits must be between 0 and 9, got -1"),
        ({"Price": 0.315, "TrailingDigits": 0}, "Price must be a whole number, got 0.315"),
        ({"Price": "315", "TrailingDigits": 3}, "Price must be a whole number, got '315'"),
        ({"Price": 315}, "TrailingDigits must be a whole number, got None"),
    ],
)
def test_bad_price_is_refused(args: dict[str, object], message: str) -> None:
    assert refused("set_current_price", args) == message


@pytest.mark.parametrize(
    "mac",
    ["0x001350030012", "0x00135003001234abcd", "0x00135003001234ag", "", "0x",
     "0x0013 5003001234ab", "<Name>restart</Name>", 1234567890123456],
)
def test_bad_meter_mac_is_refused(mac: object) -> None:
    assert refused("get_time", {"MeterMacId": mac}) == (
        f"MeterMacId must be 16 hex digits, got {mac!r}"
    )


def test_meter_mac_none_means_no_meter() -> None:
    assert build("get_time", {"MeterMacId": None}).fields == ()


def test_stray_argument_is_refused_and_named() -> None:
    assert refused("get_time", {"Price": 5}) == "get_time takes no argument Price"
    assert refused("set_fast_poll", {"Frequency": 4, "Duration": 1, "Event": "x", "Zz": 1}) == (
        "set_fast_poll takes no argument Event, Zz"
    )


@pytest.mark.parametrize(
    ("name", "args", "field"),
    [
        ("set_schedule", {"Event": "demand", "Frequency": True}, "Frequency"),
        ("set_current_price", {"Price": True, "TrailingDigits": 0}, "Price"),
        ("set_current_price", {"Price": 5, "TrailingDigits": False}, "TrailingDigits"),
        ("set_fast_poll", {"Frequency": 4, "Duration": True}, "Duration"),
        ("get_profile_data", {"NumberOfPeriods": True}, "NumberOfPeriods"),
    ],
)
def test_bool_passed_as_int_is_refused(name: str, args: dict[str, object], field: str) -> None:
    value = args[field]
    assert refused(name, args) == f"{field} must be a whole number, got {value!r}"


@pytest.mark.parametrize("value", ["N", "Y", "no", 0, 1, None])
def test_refresh_and_enabled_must_be_bools_not_truthy_values(value: object) -> None:
    # "N" used to be written as <Refresh>Y</Refresh>: any truthy value meant yes.
    assert refused("get_instantaneous_demand", {"Refresh": value}) == (
        f"Refresh must be True or False, got {value!r}"
    )
    assert refused("set_schedule", {"Event": "demand", "Frequency": 8, "Enabled": value}) == (
        f"Enabled must be True or False, got {value!r}"
    )


@pytest.mark.parametrize(
    ("frequency", "duration"), [(0, 1), (-4, 1), (4, -1), (0x100, 1), (4, 16), (0x10000, 1)]
)
def test_fast_poll_out_of_range_is_refused(frequency: int, duration: int) -> None:
    message = refused("set_fast_poll", {"Frequency": frequency, "Duration": duration})
    assert message.startswith(("Frequency must be between", "Duration must be between"))
    assert str(frequency if "Frequency" in message else duration) in message


def test_confirm_message_without_id_is_refused() -> None:
    assert refused("confirm_message") == "confirm_message needs the message Id"
    assert refused("confirm_message", {"Id": "  "}) == "confirm_message needs the message Id"


@pytest.mark.parametrize(
    "msg_id", ["</Id><Name>factory_reset</Name><Id>", "0x1 & 2", "caf\u00e9", "0x123456789"]
)
def test_confirm_message_id_that_is_not_hex_is_refused(msg_id: str) -> None:
    assert refused("confirm_message", {"Id": msg_id}) == (
        f"Id must be a hex message id, got {msg_id!r}"
    )


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ({"NumberOfPeriods": 0}, "NumberOfPeriods must be between 1 and 12, got 0"),
        ({"NumberOfPeriods": 13}, "NumberOfPeriods must be between 1 and 12, got 13"),
        ({"NumberOfPeriods": 2, "IntervalChannel": "Both"},
         "IntervalChannel must be Delivered or Received, got 'Both'"),
        ({"NumberOfPeriods": 2, "EndTime": -1}, "EndTime must be between 0 and 4294967294, got -1"),
    ],
)
def test_bad_profile_data_request_is_refused(args: dict[str, object], message: str) -> None:
    assert refused("get_profile_data", args) == message


def test_refusal_does_not_mutate_the_callers_arguments() -> None:
    args: dict[str, object] = {"Event": "demand", "Frequency": 0}
    refused("set_schedule", args)
    assert args == {"Event": "demand", "Frequency": 0}
