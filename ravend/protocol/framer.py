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
from collections.abc import Callable, Mapping
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

#: An optional shortcut for common fragments: given the buffer and a position where the fragment
#: (after blanks or NULs, which are line noise) may start, return (end position, decoded value)
#: when the complete fragment is there in its usual shape, else None (the general path frames
#: it). The decoder supplies these; the framer only calls them, so that a well-formed demand
#: fragment is scanned once instead of three times.
FastPath = Callable[[bytearray, int], "tuple[int, object] | None"]


def _is_noise(data: bytes | bytearray) -> bool:
    """Whitespace and NULs between fragments are normal line noise, not worth a log line."""
    return not data.strip(b" \t\r\n\x00")


class Framer:
    """Incremental fragment cutter with bounded memory.

    ``feed(data)`` returns every event completed by ``data``; ``feed(b"")`` means end of stream and
    reports a half-received fragment as discarded. After ``reset()`` the framer behaves as new,
    which the device layer does on every (re)open. With fast paths, well-formed common fragments
    come out already decoded instead of as RawFragment.
    """

    __slots__ = ("_buf", "_close", "_fast", "_finish", "_last_fast", "_pos", "_scan_from",
                 "_tag")

    def __init__(self, fast: Mapping[str, FastPath] | None = None,
                 finish: Callable[[RawFragment], object] | None = None) -> None:
        self._fast: Mapping[str, FastPath] = fast or {}
        # What becomes of a fragment framed the general way (the decoder passes `decode`, so
        # that every event comes out in one list, in order, without a second pass).
        self._finish = finish
        # Fragments come in runs of one kind (demand after demand): try the last shortcut
        # that worked before searching for a start tag at all.
        self._last_fast: FastPath | None = None
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

    def reset(self) -> None:
        self._buf = bytearray()
        self._pos = 0  # bytes before this are consumed (cut away at the end of each feed)
        self._tag: str | None = None  # root tag of the fragment being collected
        self._close = b""
        self._scan_from = 0  # how far the close-tag search already looked (keeps slow input linear)

    def feed(self, data: bytes) -> list[Event]:
        events: list[Event] = []
        if not data:
            rest = self._buf[self._pos :]
            if rest and not _is_noise(rest):
                reason = "stream ended inside a fragment" if self._tag else "stream ended in noise"
                events.append(Discarded(reason, len(rest), bytes(rest[:PREVIEW_BYTES])))
            self.reset()
            return events
        self._buf += data
        while True:
            shortcut = self._last_fast
            if shortcut is not None and self._tag is None:
                # The common case, a run of fragments of one kind, without the general machinery.
                done = shortcut(self._buf, self._pos)
                while done is not None:
                    self._pos, value = done
                    events.append(value)  # type: ignore[arg-type]
                    done = shortcut(self._buf, self._pos)
            if not self._step(events):
                break
        if self._pos:  # cut what was consumed once per feed, not once per fragment
            del self._buf[: self._pos]
            self._scan_from = max(0, self._scan_from - self._pos)
            self._pos = 0
        return events

    def _discard(self, events: list[Event], upto: int, reason: str) -> None:
        """Consume the buffer up to absolute position ``upto``, reporting it unless blank."""
        chunk = self._buf[self._pos : upto]
        if chunk and not _is_noise(chunk):
            events.append(Discarded(reason, len(chunk), bytes(chunk[:PREVIEW_BYTES])))
        self._pos = upto

    def _step(self, events: list[Event]) -> bool:
        """Make one unit of progress; return False when more input is needed."""
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
            shortcut = self._fast.get(tag)
            if shortcut is not None:
                done = shortcut(buf, start)
                if done is not None:
                    self._pos, value = done
                    events.append(value)  # type: ignore[arg-type]
                    self._last_fast = shortcut
                    return True
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
        raw = RawFragment(self._tag, bytes(buf[pos:stop]))
        events.append(raw if self._finish is None else self._finish(raw))  # type: ignore[arg-type]
        self._pos = stop
        self._tag = None
        return True
