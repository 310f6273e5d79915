"""Cut the device's byte stream into whole top-level XML fragments.

Sans-I/O: feed bytes, get back ``RawFragment`` and ``Discarded`` values; nothing here reads a port
or a clock. The framer survives what real sticks do (PROTOCOL.md, "Stream quirks"): attaching
mid-fragment, NUL and high-bit noise, CRLF, any split or concatenation of reads, and a fragment
that never closes because the device reset while sending it.

A fragment starts at an open tag that is either a known root tag (anywhere) or any tag standing
alone at the end of its line: children are always ``<Tag>text</Tag>`` on one line, so an open tag
followed by a line break can only be a container. It ends at the matching close tag. If another
start appears first, the earlier fragment was cut off and is reported as discarded.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from ravend.protocol.model import Discarded

#: Largest fragment we wait for. Real fragments are under 1 KiB (ProfileData with many intervals
#: about 3 KiB); 16 KiB leaves room for firmware surprises while bounding what noise can pin.
MAX_FRAGMENT_BYTES = 16 * 1024

#: Longest tag name we accept: bounds the tail kept when a read ends inside a start tag.
MAX_TAG_BYTES = 64

#: How much of discarded input a ``Discarded`` value carries, for a useful log line.
PREVIEW_BYTES = 80

ROOT_TAGS: frozenset[str] = frozenset(
    {
        "InstantaneousDemand",
        "CurrentSummationDelivered",
        "ConnectionStatus",
        "DeviceInfo",
        "NetworkInfo",
        "MeterList",
        "MeterInfo",
        "TimeCluster",
        "PriceCluster",
        "BlockPriceDetail",
        "MessageCluster",
        "ScheduleInfo",
        "CurrentPeriodUsage",
        "LastPeriodUsage",
        "ProfileData",
        "Warning",
    }
)

#: Blanks allowed between a container's start tag and its line break (bounded, like the name).
MAX_PAD_BYTES = 16

_KNOWN = b"|".join(t.encode() for t in sorted(ROOT_TAGS, key=len, reverse=True))
# Group 1: a known root tag anywhere. Group 2: any tag alone at the end of its line (a container).
_START = re.compile(
    rb"<(" + _KNOWN + rb")>|<([A-Za-z][A-Za-z0-9_]{0,%d})>[ \t]{0,%d}[\r\n]"
    % (MAX_TAG_BYTES - 1, MAX_PAD_BYTES)
)
#: The longest start match: what to keep, or search again, when a read ends inside one.
_START_SPAN = 1 + MAX_TAG_BYTES + 1 + MAX_PAD_BYTES + 1


@dataclass(frozen=True, slots=True)
class RawFragment:
    """One complete top-level element, bytes exactly as received."""

    tag: str
    raw: bytes


Event = RawFragment | Discarded


def _is_noise(data: bytes | bytearray) -> bool:
    """Whitespace and NULs between fragments are normal line noise, not worth a log line."""
    return not data.strip(b" \t\r\n\x00")


class Framer:
    """Incremental fragment cutter with bounded memory.

    ``feed(data)`` returns every event completed by ``data``; ``feed(b"")`` means end of stream and
    reports a half-received fragment as discarded. After ``reset()`` the framer behaves as new,
    which the device layer does on every (re)open.

    ``feed`` is ``push``, then ``step`` until it needs more input, then ``trim``. A caller that
    can take some fragments itself in one pass (ravend/protocol/decoder.py's StreamDecoder) runs
    those steps on its own: between steps, where ``position`` is a fragment's start (``opened``
    names its tag, or None between fragments), it may read the ``buffer`` from there and
    ``skip_to`` the end of what it took; the framer carries on after it.
    """

    __slots__ = ("_buf", "_close", "_pos", "_scan_from", "_tag")

    def __init__(self) -> None:
        self.reset()

    def __repr__(self) -> str:
        return f"<Framer buffered={self.buffered} in={self._tag!r}>"

    @property
    def buffered(self) -> int:
        """Bytes held for an incomplete fragment or start tag (bounded by MAX_FRAGMENT_BYTES)."""
        return len(self._buf) - self._pos

    @property
    def in_fragment(self) -> bool:
        """A fragment (or its start tag) is half received: an end of stream now would cut it."""
        return self._tag is not None or b"<" in self._buf[self._pos :]

    @property
    def buffer(self) -> bytearray:
        """The bytes held; those before ``position`` are consumed (valid until the next feed)."""
        return self._buf

    @property
    def position(self) -> int:
        """Where the unconsumed bytes start: the start of the ``opened`` fragment, if any."""
        return self._pos

    @property
    def opened(self) -> str | None:
        """The root tag of the fragment started at ``position`` and not yet complete."""
        return self._tag

    def reset(self) -> None:
        self._buf = bytearray()
        self._pos = 0  # bytes before this are consumed (cut away at the end of each feed)
        self._tag: str | None = None  # root tag of the fragment being collected
        self._close = b""
        self._scan_from = 0  # how far the close-tag search already looked (keeps slow input linear)

    def feed(self, data: bytes) -> list[Event]:
        if not data:
            return self.finish()
        self.push(data)
        events: list[Event] = []
        while self.step(events):
            pass
        self.trim()
        return events

    def finish(self) -> list[Event]:
        """End of stream: report what is left unless it is blank, and start anew."""
        events: list[Event] = []
        rest = self._buf[self._pos :]
        if rest and not _is_noise(rest):
            reason = "stream ended inside a fragment" if self._tag else "stream ended in noise"
            events.append(Discarded(reason, len(rest), bytes(rest[:PREVIEW_BYTES])))
        self.reset()
        return events

    def push(self, data: bytes) -> None:
        """Take more input (``step`` then finds what it completes)."""
        self._buf += data

    def skip_to(self, end: int) -> None:
        """The caller took the bytes from ``position`` up to ``end`` (a whole fragment that
        starts there, the one ``opened`` names if any): the framer goes on after them."""
        self._pos = end
        self._tag = None

    def trim(self) -> None:
        """Drop the consumed bytes: once per feed, not once per fragment."""
        if self._pos:
            del self._buf[: self._pos]
            self._scan_from = max(0, self._scan_from - self._pos)
            self._pos = 0

    def _discard(self, events: list[Event], upto: int, reason: str) -> None:
        """Consume the buffer up to absolute position ``upto``, reporting it unless blank."""
        chunk = self._buf[self._pos : upto]
        if chunk and not _is_noise(chunk):
            events.append(Discarded(reason, len(chunk), bytes(chunk[:PREVIEW_BYTES])))
        self._pos = upto

    def step(self, events: list[Event]) -> bool:
        """Make one unit of progress (find a fragment's start, or its end), appending what it
        completes to ``events``; return False when more input is needed."""
        buf = self._buf
        pos = self._pos
        if self._tag is None:
            m = _START.search(buf, pos)
            if m is None:
                # Keep a possible partial start tag at the end; everything before it is noise.
                keep_from = buf.rfind(b"<", max(pos, len(buf) - _START_SPAN))
                upto = keep_from if keep_from >= 0 else len(buf)
                if upto > pos:
                    self._discard(events, upto, "no fragment start (noise or a partial fragment)")
                return False
            start = m.start()
            tag = (m.group(1) or m.group(2)).decode("ascii")
            if start > pos:
                self._discard(events, start, "bytes before a fragment start")
            self._tag = tag
            self._close = b"</" + tag.encode("ascii") + b">"
            self._scan_from = start + len(tag) + 2
            return True

        end = buf.find(self._close, self._scan_from)
        limit = end if end >= 0 else len(buf)
        # A new start before our close tag means this fragment was cut off (device reset).
        restart = _START.search(buf, self._scan_from, limit)
        if restart is not None:
            self._discard(events, restart.start(), f"<{self._tag}> cut off by a new fragment")
            self._tag = None
            return True
        if end < 0:
            if len(buf) - pos > MAX_FRAGMENT_BYTES:
                # Keep a possible partial start tag at the very end: it may begin a good fragment.
                keep_from = buf.rfind(b"<", len(buf) - _START_SPAN)
                upto = keep_from if keep_from > pos else len(buf)
                self._discard(events, upto, f"<{self._tag}> longer than {MAX_FRAGMENT_BYTES} bytes")
                self._tag = None
                return True
            # Resume the searches just before the end: the close tag or a start may straddle reads.
            self._scan_from = max(self._scan_from, len(buf) - _START_SPAN)
            return False
        stop = end + len(self._close)
        events.append(RawFragment(self._tag, bytes(buf[pos:stop])))
        self._pos = stop
        self._tag = None
        return True
