"""The width the XML API gives each numeric child: the one definition every decoding path uses.

A number on the wire is hex text of any length; what a field may hold is set here, once, by its
child tag. The general decoder builds its converters from this table and the fast paths build
their patterns from it, so the two cannot disagree about what is in range. A value that does not
fit its width is a decode error for its fragment: nothing computed from fields (a power of ten,
a Decimal scale, a time) ever sees a number wider than the API allows, so no input costs more
than a few microseconds.

Rule for width: leading zeros are allowed (``0x00000001`` fits 8 bits); what counts is the
value. Text longer than 64 characters has its significant digits counted before it becomes a
number, so that a field of thousands of digits is refused without building the integer; shorter
text is converted (well under a microsecond) and checked by value.

Signed fields are read as two's complement at the width the devices print:

* **Demand** is ZigBee's int24, but devices print negative demand as 8 digits of 32-bit two's
  complement (``0xfffffa36`` = -1482): the width is 32 bits, and a value of at most 6 digits
  with the top bit of 24 set is read as int24 (PROTOCOL.md).
* **Summations and period usage** (SummationDelivered/Received, CurrentUsage, LastUsage,
  BlockPeriodConsumption): the manual says 8 digits, the ZigBee attribute is uint48, devices
  print 16 digits; ravend has always read them as signed 64-bit (net metering makes period
  usage negative), and keeps that width.
"""

from __future__ import annotations

from dataclasses import dataclass

#: ZigBee's Price cluster keeps the trailing digits in a 4-bit nibble: a price cannot use more.
#: (What the stick accepts when ravend *sets* a price is less: control.MAX_TRAILING_DIGITS.)
MAX_TRAILING_DIGITS = 15

#: MAC ids and the extended PAN id are 8 bytes; they stay text (their leading zeros are part of
#: the identity), but longer text is not a MAC.
MAC_DIGITS = 16


@dataclass(frozen=True, slots=True)
class Width:
    """How wide one numeric child is: ``bits`` on the wire, an optional tighter ``limit``."""

    bits: int
    signed: bool = False
    limit: int | None = None  # the largest value that makes sense, when less than the bits allow
    decimal: bool = False  # printed in decimal (Channel, ProfileIntervalPeriod), not hex

    @property
    def wire_max(self) -> int:
        """The largest unsigned value the wire text may hold (before any sign is applied)."""
        top = (1 << self.bits) - 1
        return top if self.limit is None else min(top, self.limit)

    @property
    def digits(self) -> int:
        """Most significant digits a value of this width can have (hex, or decimal)."""
        return len(str(self.wire_max)) if self.decimal else (self.bits + 3) // 4

    def describe(self) -> str:
        kind = ("int" if self.signed else "uint") + str(self.bits)
        return kind if self.limit is None else f"{kind} up to {self.limit}"


_TIME = Width(32)  # seconds since 2000-01-01; 0xffffffff (and 0xffffff) mean "not set"
_SCALE = Width(32)
_WIDE = Width(64, signed=True)
_BYTE = Width(8)

#: Child tag → its width, for every numeric child of every fragment in the decode table.
#: tests/test_field_bounds.py checks that the table covers every numeric field.
FIELD_WIDTHS: dict[str, Width] = {
    # times
    "TimeStamp": _TIME, "UTCTime": _TIME, "LocalTime": _TIME, "StartDate": _TIME,
    "EndDate": _TIME, "StartTime": _TIME, "EndTime": _TIME, "CurrentStart": _TIME,
    # measured values
    "Demand": Width(32, signed=True),
    "SummationDelivered": _WIDE, "SummationReceived": _WIDE, "CurrentUsage": _WIDE,
    "LastUsage": _WIDE, "BlockPeriodConsumption": _WIDE,
    "IntervalData": Width(24),  # 0xFFFFFF = invalid interval
    # scaling and display hints
    "Multiplier": _SCALE, "Divisor": _SCALE,
    "BlockPeriodConsumptionMultiplier": _SCALE, "BlockPeriodConsumptionDivisor": _SCALE,
    "DigitsRight": _BYTE, "DigitsLeft": _BYTE,
    # price
    "Price": Width(32),  # 0xffffffff = no price
    "Currency": Width(16),  # ISO 4217 numeric; 0xffff = not set
    "TrailingDigits": Width(8, limit=MAX_TRAILING_DIGITS),
    "Tier": _BYTE, "NumberOfBlocks": _BYTE,
    # durations: ZigBee's are uint16 minutes, but devices also print 0xffffffff for "not set"
    "Duration": Width(32), "CurrentDuration": Width(32),
    # link and schedule
    "StatusCode": _BYTE, "ShortAddr": Width(16), "LinkStrength": _BYTE,
    "Channel": Width(8, decimal=True), "Frequency": Width(32),
    # profile data
    "Status": _BYTE, "ProfileIntervalPeriod": Width(8, decimal=True),
    "NumberOfPeriodsDelivered": _BYTE,
}
