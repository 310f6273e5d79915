"""Typed values for everything the RAVEn / EMU-2 XML API sends.

One frozen dataclass per fragment, named after its root tag, fields named after the child tags in
snake_case. Raw integers are kept next to exact scaled values so that nothing the device said is
lost to rounding; a field is Optional only where devices are known to omit it or send "not set".
Unknown child fields are kept in ``extra`` (tag, raw text) so that firmware we have not seen yet
loses nothing.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from decimal import Decimal
from enum import StrEnum

from ravend.protocol.scaling import scale as scale  # offered here too, where readings are defined

#: Meter timestamps count seconds from 2000-01-01 00:00:00 UTC; add this to get Unix time.
METER_EPOCH_OFFSET = 946_684_800
#: 2001-01-01 UTC: a meter time before it comes from a clock reset to the meter's 2000 epoch.
CLOCK_RESET_BEFORE = 978_307_200
#: How far the meter's clock may be off the host's before its time is flagged: a day covers a
#: meter that sends local time as UTC.
CLOCK_SLACK_S = 86_400

Extra = tuple[tuple[str, str], ...]


class Kind(StrEnum):
    """What a stored reading measures; the value is the name used in stores and MQTT topics."""

    DEMAND = "demand"
    SUMMATION_DELIVERED = "summation_delivered"
    SUMMATION_RECEIVED = "summation_received"
    PRICE = "price"
    CURRENT_PERIOD_USAGE = "current_period_usage"
    LAST_PERIOD_USAGE = "last_period_usage"


#: Unit of the scaled value of each kind (price readings carry their currency in ``unit``).
KIND_UNITS: dict[Kind, str] = {
    Kind.DEMAND: "kW",
    Kind.SUMMATION_DELIVERED: "kWh",
    Kind.SUMMATION_RECEIVED: "kWh",
    Kind.CURRENT_PERIOD_USAGE: "kWh",
    Kind.LAST_PERIOD_USAGE: "kWh",
}


@dataclass(frozen=True, slots=True)
class Reading:
    """One measured value, the unit every store, outbox and MQTT message deals in.

    Its identity is ``(meter_mac, kind, key_time)``: the meter's own timestamp when the meter's
    clock is set, else the host's receive time to the second (and ``meter_time`` stays None so the
    reading is recognisably host-timed).
    """

    meter_mac: str
    kind: Kind
    meter_time: int | None  # Unix seconds UTC from the meter, None when the meter sent "not set"
    received_at: float  # Unix seconds UTC on the host
    raw: int  # the signed integer the device sent
    multiplier: int  # as sent (0 is kept; scaling treats it as 1)
    divisor: int  # as sent (0 is kept; scaling treats it as 1)
    value: Decimal  # exact raw * multiplier / divisor * scale
    unit: str
    device_mac: str = ""
    # The [meter <MAC>] scale of the config (a CT meter's ratio), already applied to value;
    # 1 for price and for every meter without one. raw, multiplier and divisor stay as sent.
    scale: Decimal = Decimal(1)

    @property
    def key_time(self) -> int:
        return self.meter_time if self.meter_time is not None else int(self.received_at)

    @property
    def key(self) -> tuple[str, str, int]:
        return (self.meter_mac, self.kind.value, self.key_time)

    @property
    def clock_flag(self) -> str | None:
        """Why the meter time cannot be taken at its word (``unset``, ``epoch``, ``ahead``,
        ``behind``), None when it is plausible. The SQL stores compute the same rule as a
        column (sql/sqlite/003_clock_flag.sql); MQTT messages and Mongo documents carry this."""
        t = self.meter_time
        if t is None:
            return "unset"
        if t < CLOCK_RESET_BEFORE:
            return "epoch"
        if t > self.received_at + CLOCK_SLACK_S:
            return "ahead"
        if t < self.received_at - CLOCK_SLACK_S and self.kind is not Kind.LAST_PERIOD_USAGE:
            return "behind"
        return None


class ConnectionState(StrEnum):
    """Documented ConnectionStatus/NetworkInfo Status texts; unknown text stays a plain str."""

    INITIALIZING = "Initializing"
    NETWORK_DISCOVERY = "Network Discovery"
    JOINING = "Joining"
    JOIN_FAIL = "Join: Fail"
    JOIN_SUCCESS = "Join: Success"
    AUTHENTICATING = "Authenticating"
    AUTHENTICATING_SUCCESS = "Authenticating: Success"
    AUTHENTICATING_FAIL = "Authenticating: Fail"
    CONNECTED = "Connected"
    DISCONNECTED = "Disconnected"
    REJOINING = "Rejoining"


class MeterType(StrEnum):
    ELECTRIC = "electric"
    GAS = "gas"
    WATER = "water"
    OTHER = "other"


class ScheduleEvent(StrEnum):
    TIME = "time"
    PRICE = "price"
    DEMAND = "demand"
    SUMMATION = "summation"
    MESSAGE = "message"
    SCHEDULED_PRICES = "scheduled_prices"
    PROFILE_DATA = "profile_data"


@dataclass(frozen=True, slots=True)
class InstantaneousDemand:
    device_mac_id: str
    meter_mac_id: str
    time_stamp: int | None
    demand: int
    multiplier: int
    divisor: int
    digits_right: int | None = None
    digits_left: int | None = None
    suppress_leading_zero: bool | None = None
    extra: Extra = ()

    @property
    def kw(self) -> Decimal:
        return scale(self.demand, self.multiplier, self.divisor)


@dataclass(frozen=True, slots=True)
class CurrentSummationDelivered:
    device_mac_id: str
    meter_mac_id: str
    time_stamp: int | None
    summation_delivered: int
    summation_received: int | None
    multiplier: int
    divisor: int
    digits_right: int | None = None
    digits_left: int | None = None
    suppress_leading_zero: bool | None = None
    extra: Extra = ()

    @property
    def delivered_kwh(self) -> Decimal:
        return scale(self.summation_delivered, self.multiplier, self.divisor)

    @property
    def received_kwh(self) -> Decimal | None:
        if self.summation_received is None:
            return None
        return scale(self.summation_received, self.multiplier, self.divisor)


@dataclass(frozen=True, slots=True)
class ConnectionStatus:
    device_mac_id: str
    meter_mac_id: str | None
    status: ConnectionState | str
    description: str | None = None
    status_code: int | None = None
    ext_pan_id: str | None = None
    channel: int | None = None
    short_addr: int | None = None
    link_strength: int | None = None
    extra: Extra = ()


@dataclass(frozen=True, slots=True)
class NetworkInfo:
    device_mac_id: str
    coord_mac_id: str | None
    status: ConnectionState | str
    description: str | None = None
    status_code: int | None = None
    ext_pan_id: str | None = None
    channel: int | None = None
    short_addr: int | None = None
    link_strength: int | None = None
    meter_mac_id: str | None = None  # the table reads it as for every fragment; some send it
    extra: Extra = ()


@dataclass(frozen=True, slots=True)
class DeviceInfo:
    device_mac_id: str
    install_code: str | None = None
    link_key: str | None = None
    fw_version: str | None = None
    hw_version: str | None = None
    image_type: str | None = None
    manufacturer: str | None = None
    model_id: str | None = None
    date_code: str | None = None
    extra: Extra = ()


@dataclass(frozen=True, slots=True)
class MeterList:
    device_mac_id: str
    meter_mac_ids: tuple[str, ...]
    extra: Extra = ()


@dataclass(frozen=True, slots=True)
class MeterInfo:
    device_mac_id: str
    meter_mac_id: str
    meter_type: MeterType | str | None = None
    nick_name: str | None = None
    account: str | None = None
    auth: str | None = None
    host: str | None = None
    enabled: bool | None = None
    extra: Extra = ()


@dataclass(frozen=True, slots=True)
class TimeCluster:
    device_mac_id: str
    meter_mac_id: str
    utc_time: int | None  # Unix seconds
    local_time: int | None  # the meter's wall clock, as Unix-like seconds (not UTC)
    extra: Extra = ()


@dataclass(frozen=True, slots=True)
class PriceCluster:
    device_mac_id: str
    meter_mac_id: str
    time_stamp: int | None
    price: int | None  # None when the device sent 0xffffffff (no price)
    currency: int | None  # ISO 4217 numeric, unknown codes kept
    trailing_digits: int
    tier: int | None = None
    tier_label: str | None = None
    rate_label: str | None = None
    start_time: int | None = None
    duration: int | None = None
    extra: Extra = ()

    @property
    def amount(self) -> Decimal | None:
        if self.price is None:
            return None
        return Decimal(self.price).scaleb(-self.trailing_digits)


@dataclass(frozen=True, slots=True)
class BlockPriceDetail:
    device_mac_id: str
    meter_mac_id: str
    time_stamp: int | None
    current_start: int | None = None
    current_duration: int | None = None
    block_period_consumption: int | None = None
    block_period_consumption_multiplier: int | None = None
    block_period_consumption_divisor: int | None = None
    number_of_blocks: int | None = None
    multiplier: int | None = None
    divisor: int | None = None
    currency: int | None = None
    trailing_digits: int | None = None
    extra: Extra = ()


@dataclass(frozen=True, slots=True)
class MessageCluster:
    device_mac_id: str
    meter_mac_id: str
    time_stamp: int | None
    id: str | None = None
    text: str | None = None
    priority: str | None = None
    start_time: int | None = None
    duration: int | None = None
    confirmation_required: bool | None = None
    confirmed: bool | None = None
    queue: str | None = None
    extra: Extra = ()


@dataclass(frozen=True, slots=True)
class ScheduleInfo:
    device_mac_id: str
    meter_mac_id: str | None
    event: ScheduleEvent | str | None
    frequency: int | None  # seconds
    enabled: bool | None
    extra: Extra = ()


@dataclass(frozen=True, slots=True)
class CurrentPeriodUsage:
    device_mac_id: str
    meter_mac_id: str
    time_stamp: int | None
    current_usage: int
    multiplier: int
    divisor: int
    digits_right: int | None = None
    digits_left: int | None = None
    suppress_leading_zero: bool | None = None
    start_date: int | None = None
    extra: Extra = ()

    @property
    def kwh(self) -> Decimal:
        return scale(self.current_usage, self.multiplier, self.divisor)


@dataclass(frozen=True, slots=True)
class LastPeriodUsage:
    device_mac_id: str
    meter_mac_id: str
    last_usage: int
    multiplier: int
    divisor: int
    digits_right: int | None = None
    digits_left: int | None = None
    suppress_leading_zero: bool | None = None
    start_date: int | None = None
    end_date: int | None = None
    extra: Extra = ()

    @property
    def kwh(self) -> Decimal:
        return scale(self.last_usage, self.multiplier, self.divisor)


@dataclass(frozen=True, slots=True)
class ProfileData:
    device_mac_id: str
    meter_mac_id: str
    end_time: int | None
    status: int | None
    profile_interval_period: int | None
    number_of_periods_delivered: int | None
    interval_data: tuple[int | None, ...]  # newest first; None where the device sent 0xFFFFFF
    extra: Extra = ()


@dataclass(frozen=True, slots=True)
class Warning:
    text: str
    extra: Extra = ()


@dataclass(frozen=True, slots=True)
class UnknownFragment:
    """A well-formed fragment whose root tag this version does not know: kept, not dropped."""

    tag: str
    fields: Extra
    raw: bytes


Fragment = (
    InstantaneousDemand
    | CurrentSummationDelivered
    | ConnectionStatus
    | NetworkInfo
    | DeviceInfo
    | MeterList
    | MeterInfo
    | TimeCluster
    | PriceCluster
    | BlockPriceDetail
    | MessageCluster
    | ScheduleInfo
    | CurrentPeriodUsage
    | LastPeriodUsage
    | ProfileData
    | Warning
    | UnknownFragment
)


@dataclass(frozen=True, slots=True)
class DecodeError:
    """A fragment that could not be decoded; the stream goes on. Names fragment, field and text."""

    tag: str
    field: str | None
    reason: str
    # dataclasses.field in full: to a type checker, the attribute above shadows the short name.
    raw: bytes = dataclasses.field(repr=False, default=b"")

    def __str__(self) -> str:
        where = f"{self.tag}.{self.field}" if self.field else self.tag
        return f"cannot decode {where}: {self.reason}"


@dataclass(frozen=True, slots=True)
class Discarded:
    """Bytes the framer threw away while resynchronising (noise, a partial or oversize fragment)."""

    reason: str
    count: int
    preview: bytes = dataclasses.field(repr=False, default=b"")

    def __str__(self) -> str:
        return f"discarded {self.count} bytes: {self.reason}"

