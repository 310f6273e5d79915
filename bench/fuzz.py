"""Random and mutated device input for the framer and decoder: the fuzz rows.

The invariant (STYLE.md, "State the invariant, then fuzz it"): whatever bytes arrive, cut into
whatever chunks, ``StreamDecoder.feed`` returns values (fragments, decode errors, discarded
spans) and raises nothing, and the framer never holds more than ``MAX_FRAGMENT_BYTES``.

A plain seeded generator rather than hypothesis: hypothesis spends about a millisecond per example
on its own bookkeeping, so a million inputs would take the better part of an hour; the property
tests in tests/ shrink failures, this finds them in volume. Inputs are mostly real fragments of
both devices with one to three mutations (bit flips, inserted markup, cut and spliced fragments,
junk field values, renamed tags), some pure noise, some DTDs and entities, and a few fragments
that never close and outgrow the framer's limit. Every input is fed in random chunks (whole,
byte by byte, or cut at random points), and half of them end the stream. A failure is kept with
its seed, index and bytes, so that a test can be written from it.
"""

from __future__ import annotations

import itertools
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from bench.stream import EMU2, RAVEN, MeterStream, fragment
from ravend.protocol import StreamDecoder
from ravend.protocol.framer import MAX_FRAGMENT_BYTES

#: Bytes that mean something to a framer or an XML reader, for insertions.
TOKENS: tuple[bytes, ...] = (
    b"<", b">", b"</", b"/>", b"\r\n", b"\n", b"\r", b"\x00", b"\xff\xfe", b" ", b"\t", b"0x",
    b"&amp;", b"&", b"&#x41;", b"&lt;", b"<!DOCTYPE r [<!ENTITY e 'x'>]>", b"<?xml version='1.0'?>",
    b"<![CDATA[", b"]]>", b"<!-- c -->", b"<InstantaneousDemand>", b"</InstantaneousDemand>",
    b"<PriceCluster>\n", b"</Demand>", b"<Demand>", b"<Foo>\r\n", b"</Foo>", b"&e;",
)

#: Field texts no device should send, for replacing a child's text.
JUNK_VALUES: tuple[bytes, ...] = (
    b"", b"0x", b"-1", b"0x_1", b"+0x1", b"\xff\xff", b"0x" + b"f" * 40, b"Y", b"maybe", b"12",
    b" 0x1 ", b"&#x41;", b"&lt;", b"0xffffffff", b"0x80000000", b"0x800000", b"99999999999",
    b"\x00", b"N", b"0xg1", b"\xe9t\xe9", b"0x0000000000000000000000",
)


def seed_inputs() -> list[bytes]:
    """Real-looking fragments of both devices plus shapes that real streams do not have."""
    pool: list[bytes] = []
    for style, seed in ((RAVEN, 11), (EMU2, 12)):
        day = MeterStream(style, seed).day()
        pool += [next(day) for _ in range(60)]  # start-up replies and a few minutes of pushes
    pool += [
        fragment(RAVEN, "RadioStatistics", [("Counter", "0x10"), ("Note", "reserved")]),
        fragment(EMU2, "Warning", [("Text", "Unknown command")]),
        b"<InstantaneousDemand>\n<Inner>\n<Demand>0x1</Demand>\n</Inner>\n"
        b"</InstantaneousDemand>\n",
        b"<!DOCTYPE r [<!ENTITY e 'x'>]>\n<TimeCluster>\n  <UTCTime>&e;</UTCTime>\n"
        b"</TimeCluster>\n",
        b"<MeterList>\r\n  <DeviceMacId>0x00158d0000000001</DeviceMacId>\r\n"
        b"  <MeterMacId>0x0013500300000001</MeterMacId>\r\n"
        b"  <MeterMacId>0x0013500300000002</MeterMacId>\r\n</MeterList>\r\n",
        b"<InstantaneousDemand/>\n<ProfileData>\n</ProfileData>\n",
    ]
    return pool


def _span(rng: random.Random, data: bytes) -> tuple[int, int]:
    a = rng.randrange(len(data) + 1)
    return a, min(len(data), a + rng.randint(1, 64))


def _flip(rng: random.Random, data: bytes, pool: list[bytes]) -> bytes:
    buf = bytearray(data)
    for _ in range(rng.randint(1, 4)):
        if buf:
            buf[rng.randrange(len(buf))] = rng.randrange(256)
    return bytes(buf)


def _insert(rng: random.Random, data: bytes, pool: list[bytes]) -> bytes:
    at = rng.randrange(len(data) + 1)
    return data[:at] + rng.choice(TOKENS) + data[at:]


def _delete(rng: random.Random, data: bytes, pool: list[bytes]) -> bytes:
    a, b = _span(rng, data)
    return data[:a] + data[b:]


def _duplicate(rng: random.Random, data: bytes, pool: list[bytes]) -> bytes:
    a, b = _span(rng, data)
    at = rng.randrange(len(data) + 1)
    return data[:at] + data[a:b] + data[at:]


def _truncate(rng: random.Random, data: bytes, pool: list[bytes]) -> bytes:
    cut = rng.randrange(len(data) + 1)
    return data[:cut] if rng.random() < 0.5 else data[cut:]


def _junk_field(rng: random.Random, data: bytes, pool: list[bytes]) -> bytes:
    a = data.find(b">", rng.randrange(len(data) + 1)) + 1
    if a <= 0:
        return data
    b = data.find(b"<", a)
    b = len(data) if b < 0 else b
    return data[:a] + rng.choice(JUNK_VALUES) + data[b:]


def _rename(rng: random.Random, data: bytes, pool: list[bytes]) -> bytes:
    at = data.find(b"<", rng.randrange(len(data) + 1))
    if at < 0:
        return data
    end = data.find(b">", at)
    end = len(data) if end < 0 else end
    name = rng.choice((b"X", b"demand", b"Tag" * rng.randint(1, 40), b"9bad", b"a b", b""))
    return data[: at + 1] + name + data[end:]


def _splice(rng: random.Random, data: bytes, pool: list[bytes]) -> bytes:
    other = rng.choice(pool)
    return data[: rng.randrange(len(data) + 1)] + other[rng.randrange(len(other) + 1) :]


MUTATIONS: tuple[Callable[[random.Random, bytes, list[bytes]], bytes], ...] = (
    _flip, _insert, _delete, _duplicate, _truncate, _junk_field, _rename, _splice,
)


def make_input(rng: random.Random, pool: list[bytes]) -> bytes:
    r = rng.random()
    if r < 0.02:  # a fragment that never closes and outgrows the limit, then a good one
        body = rng.randbytes(rng.randint(MAX_FRAGMENT_BYTES, 3 * MAX_FRAGMENT_BYTES))
        return b"<InstantaneousDemand>\r\n" + body.replace(b"<", b"(") + rng.choice(pool)
    if r < 0.07:
        return rng.randbytes(rng.randint(0, 2000))
    parts = []
    for _ in range(rng.randint(1, 4)):
        p = rng.random()
        if p < 0.4:
            parts.append(rng.choice(pool))
        elif p < 0.9:
            data = rng.choice(pool)
            for _ in range(rng.randint(1, 3)):
                data = rng.choice(MUTATIONS)(rng, data, pool)
            parts.append(data)
        else:
            parts.append(b"".join(rng.choice(TOKENS) for _ in range(rng.randint(1, 12))))
    return b"".join(parts)


def chunks(rng: random.Random, data: bytes) -> list[bytes]:
    """Whole, byte by byte (short inputs), or cut at random points; never an empty chunk."""
    r = rng.random()
    if r < 0.3 or len(data) < 2:
        return [data] if data else []
    if r < 0.35 and len(data) <= 600:
        return [data[i : i + 1] for i in range(len(data))]
    cuts = sorted(set(rng.randrange(1, len(data)) for _ in range(rng.randint(1, 8))))
    bounds = [0, *cuts, len(data)]
    return [data[a:b] for a, b in itertools.pairwise(bounds)]


@dataclass
class FuzzResult:
    inputs: int
    bytes: int
    seconds: float
    escapes: int
    max_buffer: int
    items: int
    examples: list[dict[str, Any]] = field(default_factory=list)


def run(n: int, seed: int = 2024) -> FuzzResult:
    """Feed ``n`` inputs to one StreamDecoder (a fresh one after an escape)."""
    rng = random.Random(seed)
    pool = seed_inputs()
    decoder = StreamDecoder()
    escapes = max_buffer = items = total = 0
    examples: list[dict[str, Any]] = []
    started = time.perf_counter()
    for index in range(n):
        data = make_input(rng, pool)
        total += len(data)
        feeds = chunks(rng, data)
        if rng.random() < 0.5:
            feeds.append(b"")  # end of stream: a half fragment must come out as discarded
        for chunk in feeds:
            try:
                items += len(decoder.feed(chunk))
            except Exception as exc:
                escapes += 1
                if len(examples) < 5:
                    examples.append({"seed": seed, "index": index, "error": repr(exc),
                                     "input_hex": data[:4096].hex()})
                decoder = StreamDecoder()
                break
            # The framer's buffer is private; its bound is the very thing under test.
            max_buffer = max(max_buffer, decoder.framer.buffered)
    return FuzzResult(n, total, time.perf_counter() - started, escapes, max_buffer, items,
                      examples)
