"""Encode host → device commands as the bytes to write, refusing anything malformed.

Pure: returns bytes; ``device.py`` writes them. Validation happens here so that a bad argument,
whether it came from ravenctl, the control socket or MQTT, never reaches the wire.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

#: Every command the devices understand, with the root tag of the reply we match it by
#: (None: the device answers nothing specific). ``factory_reset`` is deliberately absent:
#: ravend never sends it.
REPLIES: dict[str, str | None] = {
    "initialize": None,
    "restart": None,
    "get_connection_status": "ConnectionStatus",
    "get_device_info": "DeviceInfo",
    "get_schedule": "ScheduleInfo",
    "set_schedule": None,
    "set_schedule_default": None,
    "get_meter_list": "MeterList",
    "get_meter_info": "MeterInfo",
    "set_meter_info": None,
    "get_network_info": "NetworkInfo",
    "get_time": "TimeCluster",
    "get_message": "MessageCluster",
    "confirm_message": None,
    "get_current_price": "PriceCluster",
    "set_current_price": None,
    "get_instantaneous_demand": "InstantaneousDemand",
    "get_current_summation_delivered": "CurrentSummationDelivered",
    "get_current_period_usage": "CurrentPeriodUsage",
    "get_last_period_usage": "LastPeriodUsage",
    "close_current_period": None,
    "set_fast_poll": None,
    "get_profile_data": "ProfileData",
}

SCHEDULE_EVENTS = ("time", "price", "demand", "summation", "message")

#: Largest values the fields take on the wire (schedule Frequency is 16-bit seconds, Price
#: 32-bit, TrailingDigits one byte; fast poll is limited by the device to 255 s for 15 min).
MAX_U16 = 0xFFFF
MAX_FAST_POLL_SECONDS = 0xFF
MAX_FAST_POLL_MINUTES = 0x0F
MAX_U32 = 0xFFFFFFFE  # 0xffffffff means "no price"


class CommandError(ValueError):
    """A command or argument that must not be sent; the message says what is wrong."""


@dataclass(frozen=True, slots=True)
class Command:
    name: str
    fields: tuple[tuple[str, str], ...] = ()

    @property
    def reply_tag(self) -> str | None:
        return REPLIES[self.name]

    def encode(self) -> bytes:
        lines = ["<Command>", f"  <Name>{self.name}</Name>"]
        lines += [f"  <{tag}>{text}</{tag}>" for tag, text in self.fields]
        lines.append("</Command>\r\n")
        return "\r\n".join(lines).encode("ascii")


def _hex(value: int, width: int) -> str:
    return f"0x{value:0{width}x}"


def _int_in(name: str, value: object, low: int, high: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise CommandError(f"{name} must be a whole number, got {value!r}")
    if not low <= value <= high:
        raise CommandError(f"{name} must be between {low} and {high}, got {value}")
    return value


def _flag(name: str, value: object) -> str:
    # Truthiness would turn the string "N" into Y: take only a real bool.
    if not isinstance(value, bool):
        raise CommandError(f"{name} must be True or False, got {value!r}")
    return "Y" if value else "N"


def _mac(value: object) -> str:
    if not isinstance(value, str):  # str(int) could pass as 16 "hex" digits
        raise CommandError(f"MeterMacId must be 16 hex digits, got {value!r}")
    text = value.strip().lower()
    digits = text[2:] if text.startswith("0x") else text
    if len(digits) != 16 or any(c not in "0123456789abcdef" for c in digits):
        raise CommandError(f"MeterMacId must be 16 hex digits, got {value!r}")
    return "0x" + digits


def build(name: str, args: Mapping[str, object] | None = None) -> Command:
    """Validate a command and its arguments (wire names, Python values) into a Command."""
    args = dict(args or {})
    if name == "factory_reset":
        raise CommandError("factory_reset is never sent by ravend")
    if name not in REPLIES:
        raise CommandError(f"unknown command {name!r}")
    fields: list[tuple[str, str]] = []
    meter = args.pop("MeterMacId", None)
    if meter is not None:
        fields.append(("MeterMacId", _mac(meter)))
    if name == "get_schedule" and "Event" in args:
        event = str(args.pop("Event"))
        if event not in SCHEDULE_EVENTS:
            raise CommandError(f"Event must be one of {', '.join(SCHEDULE_EVENTS)}, got {event!r}")
        fields.append(("Event", event))
    if name == "set_schedule":
        event = str(args.pop("Event", ""))
        if event not in SCHEDULE_EVENTS:
            raise CommandError(f"Event must be one of {', '.join(SCHEDULE_EVENTS)}, got {event!r}")
        freq = _int_in("Frequency", args.pop("Frequency", None), 1, MAX_U16)
        enabled = _flag("Enabled", args.pop("Enabled", True))
        fields += [("Event", event), ("Frequency", _hex(freq, 4)), ("Enabled", enabled)]
    elif name == "set_current_price":
        trailing = _int_in("TrailingDigits", args.pop("TrailingDigits", None), 0, 9)
        price = _int_in("Price", args.pop("Price", None), 0, MAX_U32)
        fields += [("Price", _hex(price, 8)), ("TrailingDigits", _hex(trailing, 2))]
    elif name == "set_fast_poll":
        # RAVEn XML API: Frequency in seconds (1-255), Duration in minutes (0-15).
        freq = _int_in("Frequency", args.pop("Frequency", None), 1, MAX_FAST_POLL_SECONDS)
        duration = _int_in("Duration", args.pop("Duration", None), 0, MAX_FAST_POLL_MINUTES)
        fields += [("Frequency", _hex(freq, 4)), ("Duration", _hex(duration, 4))]
    elif name == "confirm_message":
        msg_id = str(args.pop("Id", "")).strip()
        if not msg_id:
            raise CommandError("confirm_message needs the message Id")
        # Message ids are hex; anything else could carry markup onto the wire.
        digits = msg_id[2:] if msg_id[:2].lower() == "0x" else msg_id
        if not digits or len(digits) > 8 or any(c not in "0123456789abcdefABCDEF" for c in digits):
            raise CommandError(f"Id must be a hex message id, got {msg_id!r}")
        fields.append(("Id", msg_id))
    elif name == "get_profile_data":
        periods = _int_in("NumberOfPeriods", args.pop("NumberOfPeriods", None), 1, 12)
        channel = str(args.pop("IntervalChannel", "Delivered"))
        if channel not in ("Delivered", "Received"):
            raise CommandError(f"IntervalChannel must be Delivered or Received, got {channel!r}")
        fields += [("NumberOfPeriods", _hex(periods, 2)), ("IntervalChannel", channel)]
        end = args.pop("EndTime", None)
        if end is not None:
            fields.append(("EndTime", _hex(_int_in("EndTime", end, 0, 0xFFFFFFFE), 8)))
    if "Refresh" in args:
        fields.append(("Refresh", _flag("Refresh", args.pop("Refresh"))))
    if args:
        raise CommandError(f"{name} takes no argument {', '.join(sorted(args))}")
    return Command(name, tuple(fields))


def encode_command(name: str, args: Mapping[str, object] | None = None) -> bytes:
    return build(name, args).encode()
