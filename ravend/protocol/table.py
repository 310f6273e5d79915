"""The decode table: for each root tag, its dataclass and a converter per child.

Decoding is data, the same for pushed and requested fragments: ravend/protocol/decoder.py applies
an entry to a framed fragment, and ravend/protocol/shortcuts.py builds its one-pass patterns for
common fragments from the same entries. Each entry lists its children in the order devices send
them (PROTOCOL.md); the shortcuts match that order, and the children a fragment cannot do without
(``required``) are the ones a shortcut's pattern does not mark optional.
"""

from __future__ import annotations

from dataclasses import dataclass

from ravend.protocol import model as m
from ravend.protocol.fields import (
    Numeric,
    Reader,
    decimal_int,
    demand_field,
    enum_reader,
    hex_int,
    interval_field,
    mac,
    optional_field,
    price_field,
    signed64,
    text_field,
    time_field,
    yes_no,
)
from ravend.protocol.model import Fragment
from ravend.protocol.widths import FIELD_WIDTHS, Width


@dataclass(frozen=True, slots=True)
class Spec:
    """One root tag: its dataclass, and for each child (wire tag, in the order devices send
    them) the dataclass field it fills and its converter."""

    cls: type[Fragment]
    fields: dict[str, tuple[str, Reader]]
    required: tuple[str, ...]  # dataclass field names a fragment must carry
    repeated: dict[str, str]  # wire tag -> field name collecting a tuple
    widths: dict[str, Width]  # wire tag -> width, for every numeric child

    def layout(self) -> tuple[tuple[str, bool], ...]:
        """The children in the order devices send them, each with whether it may be left out."""
        return tuple((wire, name not in self.required) for wire, (name, _) in self.fields.items())


Converter = Reader | Numeric


Fields = dict[str, tuple[str, Converter]]

_COMMON: Fields = {"DeviceMacId": ("device_mac_id", mac), "MeterMacId": ("meter_mac_id", mac)}
_DISPLAY: Fields = {
    "DigitsRight": ("digits_right", hex_int),
    "DigitsLeft": ("digits_left", hex_int),
    "SuppressLeadingZero": ("suppress_leading_zero", yes_no),
}
_SCALE: Fields = {"Multiplier": ("multiplier", hex_int), "Divisor": ("divisor", hex_int)}
_LINK: Fields = {
    "Status": ("status", enum_reader(m.ConnectionState)),
    "Description": ("description", text_field),
    "StatusCode": ("status_code", hex_int),
    "ExtPanId": ("ext_pan_id", mac),
    "Channel": ("channel", decimal_int),
    "ShortAddr": ("short_addr", hex_int),
    "LinkStrength": ("link_strength", hex_int),
}


def _spec(cls: type, fields: Fields,
          required: tuple[str, ...], repeated: dict[str, str] | None = None) -> Spec:
    """A table entry, its numeric converters made for their widths (FIELD_WIDTHS)."""
    widths = {wire: FIELD_WIDTHS[wire] for wire, (_, conv) in fields.items()
              if isinstance(conv, Numeric)}
    made = {wire: (name, conv.make(widths[wire]) if isinstance(conv, Numeric) else conv)
            for wire, (name, conv) in fields.items()}
    return Spec(cls, made, required, repeated or {}, widths)


TABLE: dict[str, Spec] = {
    "InstantaneousDemand": _spec(
        m.InstantaneousDemand,
        {**_COMMON, "TimeStamp": ("time_stamp", time_field), "Demand": ("demand", demand_field),
         **_SCALE, **_DISPLAY},
        ("device_mac_id", "meter_mac_id", "time_stamp", "demand", "multiplier", "divisor"),
    ),
    "CurrentSummationDelivered": _spec(
        m.CurrentSummationDelivered,
        {**_COMMON, "TimeStamp": ("time_stamp", time_field),
         "SummationDelivered": ("summation_delivered", signed64),
         "SummationReceived": ("summation_received", signed64), **_SCALE, **_DISPLAY},
        ("device_mac_id", "meter_mac_id", "time_stamp", "summation_delivered", "multiplier",
         "divisor"),
    ),
    "ConnectionStatus": _spec(m.ConnectionStatus, {**_COMMON, **_LINK}, ("device_mac_id",)),
    "NetworkInfo": _spec(
        m.NetworkInfo, {**_COMMON, "CoordMacId": ("coord_mac_id", mac), **_LINK},
        ("device_mac_id",),
    ),
    "DeviceInfo": _spec(
        m.DeviceInfo,
        {"DeviceMacId": ("device_mac_id", mac), "InstallCode": ("install_code", text_field),
         "LinkKey": ("link_key", text_field), "FWVersion": ("fw_version", text_field),
         "HWVersion": ("hw_version", text_field), "ImageType": ("image_type", text_field),
         "Manufacturer": ("manufacturer", text_field), "ModelId": ("model_id", text_field),
         "DateCode": ("date_code", text_field)},
        ("device_mac_id",),
    ),
    "MeterList": _spec(
        m.MeterList, {"DeviceMacId": ("device_mac_id", mac), "MeterMacId": ("meter_mac_ids", mac)},
        ("device_mac_id",), {"MeterMacId": "meter_mac_ids"},
    ),
    "MeterInfo": _spec(
        m.MeterInfo,
        {**_COMMON, "MeterType": ("meter_type", enum_reader(m.MeterType)),
         "NickName": ("nick_name", text_field), "Account": ("account", text_field),
         "Auth": ("auth", text_field), "Host": ("host", text_field),
         "Enabled": ("enabled", yes_no)},
        ("device_mac_id", "meter_mac_id"),
    ),
    "TimeCluster": _spec(
        m.TimeCluster,
        {**_COMMON, "UTCTime": ("utc_time", time_field), "LocalTime": ("local_time", time_field)},
        ("device_mac_id", "meter_mac_id", "utc_time", "local_time"),
    ),
    "PriceCluster": _spec(
        m.PriceCluster,
        {**_COMMON, "TimeStamp": ("time_stamp", time_field), "Price": ("price", price_field),
         "Currency": ("currency", optional_field), "TrailingDigits": ("trailing_digits", hex_int),
         "Tier": ("tier", hex_int), "TierLabel": ("tier_label", text_field),
         "StartTime": ("start_time", time_field), "Duration": ("duration", optional_field),
         "RateLabel": ("rate_label", text_field)},
        ("device_mac_id", "meter_mac_id", "time_stamp", "price", "trailing_digits"),
    ),
    "BlockPriceDetail": _spec(
        m.BlockPriceDetail,
        {**_COMMON, "TimeStamp": ("time_stamp", time_field),
         "CurrentStart": ("current_start", time_field),
         "CurrentDuration": ("current_duration", optional_field),
         "BlockPeriodConsumption": ("block_period_consumption", signed64),
         "BlockPeriodConsumptionMultiplier": ("block_period_consumption_multiplier", hex_int),
         "BlockPeriodConsumptionDivisor": ("block_period_consumption_divisor", hex_int),
         "NumberOfBlocks": ("number_of_blocks", hex_int), **_SCALE,
         "Currency": ("currency", optional_field), "TrailingDigits": ("trailing_digits", hex_int)},
        ("device_mac_id", "meter_mac_id", "time_stamp"),
    ),
    "MessageCluster": _spec(
        m.MessageCluster,
        {**_COMMON, "TimeStamp": ("time_stamp", time_field), "Id": ("id", text_field),
         "Text": ("text", text_field), "Priority": ("priority", text_field),
         "StartTime": ("start_time", time_field), "Duration": ("duration", optional_field),
         "ConfirmationRequired": ("confirmation_required", yes_no),
         "Confirmed": ("confirmed", yes_no), "Queue": ("queue", text_field)},
        ("device_mac_id", "meter_mac_id", "time_stamp"),
    ),
    "ScheduleInfo": _spec(
        m.ScheduleInfo,
        {**_COMMON, "Event": ("event", enum_reader(m.ScheduleEvent)),
         "Frequency": ("frequency", hex_int), "Enabled": ("enabled", yes_no)},
        ("device_mac_id", "event", "frequency", "enabled"),
    ),
    "CurrentPeriodUsage": _spec(
        m.CurrentPeriodUsage,
        {**_COMMON, "TimeStamp": ("time_stamp", time_field),
         "CurrentUsage": ("current_usage", signed64), **_SCALE, **_DISPLAY,
         "StartDate": ("start_date", time_field)},
        ("device_mac_id", "meter_mac_id", "time_stamp", "current_usage", "multiplier", "divisor"),
    ),
    "LastPeriodUsage": _spec(
        m.LastPeriodUsage,
        {**_COMMON, "LastUsage": ("last_usage", signed64), **_SCALE, **_DISPLAY,
         "StartDate": ("start_date", time_field), "EndDate": ("end_date", time_field)},
        ("device_mac_id", "meter_mac_id", "last_usage", "multiplier", "divisor"),
    ),
    "ProfileData": _spec(
        m.ProfileData,
        {**_COMMON, "EndTime": ("end_time", time_field), "Status": ("status", hex_int),
         "ProfileIntervalPeriod": ("profile_interval_period", decimal_int),
         "NumberOfPeriodsDelivered": ("number_of_periods_delivered", hex_int),
         "IntervalData": ("interval_data", interval_field)},
        ("device_mac_id", "meter_mac_id", "end_time", "status", "profile_interval_period",
         "number_of_periods_delivered"),
        {"IntervalData": "interval_data"},
    ),
    "Warning": _spec(m.Warning, {"Text": ("text", text_field)}, ("text",)),
}

#: Optional fields whose dataclass has no default and must be passed explicitly.
NONE_DEFAULTS: dict[str, tuple[str, ...]] = {
    "ConnectionStatus": ("meter_mac_id", "status"),
    "NetworkInfo": ("coord_mac_id", "status"),
    "CurrentSummationDelivered": ("summation_received",),
    "PriceCluster": ("currency",),
    "ScheduleInfo": ("meter_mac_id",),
}
