"""Bytes to typed fragments: the general decoder, and the stream decoder that frames and decodes.

Pure: bytes in, values out. ``decode`` applies the decode table (ravend/protocol/table.py) to one
framed fragment, the same way for pushed and requested fragments. The children of every fragment
in the API are flat ``<Tag>text</Tag>`` lines, so a regular expression reads them faster and with
less surprise than a general XML parser; anything that is not that shape (a DTD, an entity
declaration, a processing instruction, nested markup) is refused as a decode error rather than
interpreted: nothing from a serial line gets entity expansion.

``StreamDecoder`` turns the device's byte stream into fragments, decode errors and discarded
input, in order. The framer (ravend/protocol/framer.py) cuts the stream into fragments; for the
common fragments the stream decoder first tries a shortcut (ravend/protocol/shortcuts.py) that
frames and decodes one in a single pass, and lets the framer go on after it.
"""

from __future__ import annotations

import re
from typing import Any

from ravend.protocol import model as m
from ravend.protocol.fields import FieldError, cp1252
from ravend.protocol.framer import Event, Framer, RawFragment
from ravend.protocol.model import DecodeError, Discarded, Fragment
from ravend.protocol.shortcuts import SHORTCUTS, Shortcut
from ravend.protocol.table import NONE_DEFAULTS, TABLE

_CHILD = re.compile(r"<([A-Za-z][A-Za-z0-9_]*)>([^<]*)</\1>")
_OPEN = re.compile(r"\A\s*<([A-Za-z][A-Za-z0-9_]*)>")
_BLANK = " \t\r\n\x00"
#: A body made only of flat children and blanks (one pass, nothing built).
_FLAT_BODY = re.compile(r"(?:[ \t\r\n\x00]*<([A-Za-z][A-Za-z0-9_]*)>[^<]*</\1>)*[ \t\r\n\x00]*")

#: What the stream decoder returns, in stream order.
Decoded = Fragment | DecodeError | Discarded


def _children(tag: str, raw: bytes) -> list[tuple[str, str]] | DecodeError:
    """The (tag, text) pairs of a flat fragment, or why it is not one."""
    if b"<!" in raw or b"<?" in raw:
        return DecodeError(tag, None, "markup declarations (DTD/entity) are refused", raw)
    # One decode of the whole fragment: labels are cp1252, everything else is ASCII.
    text = cp1252(raw)
    opened = _OPEN.match(text)
    body_start = opened.end() if opened else 0
    body_end = text.rfind("</")
    children: list[tuple[str, str]] = _CHILD.findall(text, body_start, body_end)
    # Whatever the children do not cover must be blank, or the fragment is not what we think.
    if _FLAT_BODY.fullmatch(text, body_start, body_end) is None:
        rest = _CHILD.sub("", text[body_start:body_end]).strip(_BLANK)
        return DecodeError(tag, None, f"unexpected content {rest[:40]!r}", raw)
    return children


def decode(fragment: RawFragment) -> Fragment | DecodeError:
    """Decode one framed fragment. Never raises for anything a device can send."""
    tag, raw = fragment.tag, fragment.raw
    children = _children(tag, raw)
    if isinstance(children, DecodeError):
        return children
    spec = TABLE.get(tag)
    if spec is None:
        return m.UnknownFragment(tag, tuple(children), raw)
    values: dict[str, Any] = {name: None for name in NONE_DEFAULTS.get(tag, ())}
    for name in spec.repeated.values():
        values[name] = []
    extra: list[tuple[str, str]] = []
    fields = spec.fields
    for child_tag, text in children:
        entry = fields.get(child_tag)
        if entry is None:
            extra.append((child_tag, text))
            continue
        name, convert = entry
        try:
            value = convert(text)
        except FieldError as exc:
            return DecodeError(tag, child_tag, str(exc), raw)
        if child_tag in spec.repeated:
            values[name].append(value)
        else:
            values[name] = value
    for name in spec.required:
        if name not in values:
            wire = next((t for t, (n, _) in fields.items() if n == name), name)
            return DecodeError(tag, wire, "missing", raw)
    for name in spec.repeated.values():
        values[name] = tuple(values[name])
    if extra:
        values["extra"] = tuple(extra)
    return spec.cls(**values)


class StreamDecoder:
    """Framer and decoder together: bytes in, fragments and diagnostics out.

    ``fast=False`` leaves the shortcuts out: every fragment is framed and decoded the general
    way (the tests compare the two).
    """

    __slots__ = ("_last", "_shortcuts", "framer")

    def __init__(self, *, fast: bool = True) -> None:
        self.framer = Framer()
        self._shortcuts: dict[str, Shortcut] = SHORTCUTS if fast else {}
        # Fragments come in runs of one kind (demand after demand): between fragments, try the
        # last shortcut that worked before the framer searches for a start tag at all.
        self._last: Shortcut | None = None

    def reset(self) -> None:
        self.framer.reset()

    def feed(self, data: bytes) -> list[Decoded]:
        """Everything ``data`` completes; ``feed(b"")`` is the end of the stream."""
        framer = self.framer
        if not data:
            return self._finish(framer.finish())
        framer.push(data)
        buf = framer.buffer
        out: list[Decoded] = []
        events: list[Event] = []  # what a framer step completes
        shortcuts = self._shortcuts
        last = self._last
        # A fragment left incomplete by the last feed had its shortcut tried when it began: the
        # framer collects it (trying again on every feed would make slow input quadratic).
        more = framer.opened is None or framer.step(events)
        while more:
            if events:
                out += self._finish(events)
                events.clear()
            # Where the framer stands between fragments, or at the start of one it has just
            # found, a shortcut may take whole fragments: the one for that fragment's tag, else
            # the last one that worked.
            tag = framer.opened
            shortcut = last if tag is None else shortcuts.get(tag)
            if shortcut is not None:
                pos = framer.position
                done = shortcut(buf, pos)
                if done is not None:
                    while done is not None:
                        pos, value = done
                        out.append(value)
                        done = shortcut(buf, pos)
                    framer.skip_to(pos)
                    last = shortcut
            more = framer.step(events)
        if events:
            out += self._finish(events)
            events.clear()
        self._last = last
        framer.trim()
        return out

    def _finish(self, events: list[Event]) -> list[Decoded]:
        """What framer events become: a fragment is decoded (by its shortcut when it has one
        and fits it, as a fragment that spanned two feeds often does), a discard stays as it is.
        """
        out: list[Decoded] = []
        for event in events:
            if isinstance(event, RawFragment):
                shortcut = self._shortcuts.get(event.tag)
                done = None if shortcut is None else shortcut(event.raw, 0)
                out.append(decode(event) if done is None else done[1])
            else:
                out.append(event)
        return out
