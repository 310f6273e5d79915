"""Time one parser on a stream file, pinned to one core; prints one JSON object.

Run as a script by bench/parsing.py, once with Debian's interpreter for ravend and once with the
bench venv's interpreter (the same /usr/bin/python3 binary, made a venv so that aioraven and its
dependencies come from PyPI, pinned) for aioraven. Each gets a process of its own so that neither
warms the other's caches or shares its heap, and both see the same bytes cut into the same 4 KiB
chunks, made before the clock starts.

What is timed, per run, from the first chunk to the end of stream:

* ravend: ``StreamDecoder().feed(chunk)`` for every chunk, then ``feed(b"")``: the framer cuts
  fragments out of the bytes and the decoder turns each into its typed dataclass (hex to int,
  sign extension, meter time to Unix time, enums, cp1252 text). This is the whole wire-to-value
  path of the service, without the device thread and the sinks.
* aioraven 0.7.1: ``RAVEnReaderProtocol.data_received(chunk)`` for every chunk, then
  ``eof_received()``, with a real ``RAVEnReader`` behind it: this is what its serial and TCP
  transports call. The protocol feeds the bytes into one ``xml.etree.ElementTree.XMLPullParser``
  (expat, in C) under a synthetic ``<root>`` that stays open, so every element stays in memory
  for the life of the connection. Every element that ends (each fragment, and each of its
  children too) goes to ``RAVEnReader.feed_element``, which makes a dict of the element's child
  tags to their text and hands it to a waiter (none here: that is the fate of a pushed
  fragment). It converts no field: numbers stay hex text; aioraven converts only the replies to
  its own commands, in device.py. So it does less work per fragment than ravend, and the ratio
  is on the conservative side.
* framer (information only): ravend's ``Framer().feed`` alone, to show how the time splits
  between cutting fragments out and decoding them.

Neither parser is asked to survive noise here (both get well-formed fragments); the fuzz row
covers that for ravend. An untimed pass first checks that both see every fragment.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import sys
import time
from collections.abc import Callable

#: (timed run over the chunks, untimed count of the fragments it sees)
Runner = tuple[Callable[[list[bytes]], None], Callable[[list[bytes]], int]]


def ravend_runner() -> Runner:
    from ravend.protocol import Discarded, StreamDecoder
    from ravend.protocol.model import DecodeError

    def run(chunks: list[bytes]) -> None:
        decoder = StreamDecoder()
        feed = decoder.feed
        for chunk in chunks:
            feed(chunk)
        feed(b"")

    def count(chunks: list[bytes]) -> int:
        decoder = StreamDecoder()
        items = [item for chunk in [*chunks, b""] for item in decoder.feed(chunk)]
        bad = [i for i in items if isinstance(i, DecodeError | Discarded)]
        if bad:
            raise SystemExit(f"ravend did not decode the stream cleanly: {bad[0]!r}")
        return len(items)

    return run, count


def framer_runner() -> Runner:
    """ravend's framer alone: where the decoder's time goes, for whoever tunes it."""
    from ravend.protocol import Framer, RawFragment

    def run(chunks: list[bytes]) -> None:
        framer = Framer()
        feed = framer.feed
        for chunk in chunks:
            feed(chunk)
        feed(b"")

    def count(chunks: list[bytes]) -> int:
        framer = Framer()
        items = [item for chunk in [*chunks, b""] for item in framer.feed(chunk)]
        return sum(isinstance(i, RawFragment) for i in items)

    return run, count


def aioraven_runner() -> Runner:
    import asyncio
    from xml.etree.ElementTree import Element

    from aioraven.protocols import RAVEnReaderProtocol
    from aioraven.reader import RAVEnReader

    loop = asyncio.new_event_loop()  # futures need a loop; it never runs

    def protocol(reader: RAVEnReader) -> RAVEnReaderProtocol:
        proto = RAVEnReaderProtocol(reader, loop)
        proto.connection_made(None)  # no transport: it only resets its parser
        return proto

    def run(chunks: list[bytes]) -> None:
        proto = protocol(RAVEnReader(loop))
        data_received = proto.data_received
        for chunk in chunks:
            data_received(chunk)
        proto.eof_received()

    # RAVEnReader is Any to mypy: aioraven is in the peer venv (bench/peers.py), not the lint one.
    class CountingReader(RAVEnReader):  # type: ignore[misc]
        fragments = 0

        def feed_element(self, data: Element) -> None:
            # Every element's end reaches feed_element, children too; a fragment has children.
            self.fragments += len(data) > 0
            super().feed_element(data)

        def set_exception(self, exc: Exception) -> None:
            raise SystemExit(f"aioraven did not parse the stream cleanly: {exc!r}")

    def count(chunks: list[bytes]) -> int:
        reader = CountingReader(loop)
        proto = protocol(reader)
        for chunk in chunks:
            proto.data_received(chunk)
        proto.eof_received()
        return reader.fragments

    return run, count


RUNNERS = {"ravend": ravend_runner, "framer": framer_runner, "aioraven": aioraven_runner}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("parser", choices=sorted(RUNNERS))
    p.add_argument("stream", help="file holding the device bytes")
    p.add_argument("--chunk", type=int, default=4096, help="bytes per feed (default 4096)")
    p.add_argument("--runs", type=int, default=5, help="timed runs; the best counts")
    p.add_argument("--cpu", type=int, default=None, help="core to pin to (default: the last)")
    args = p.parse_args()

    cpu = args.cpu if args.cpu is not None else max(os.sched_getaffinity(0))
    os.sched_setaffinity(0, {cpu})
    with open(args.stream, "rb") as f:
        data = f.read()
    chunks = [data[i : i + args.chunk] for i in range(0, len(data), args.chunk)]
    run, count = RUNNERS[args.parser]()
    fragments = count(chunks)
    times = []
    for _ in range(args.runs):
        gc.collect()
        start = time.perf_counter()
        run(chunks)
        times.append(time.perf_counter() - start)
    json.dump({"parser": args.parser, "fragments": fragments, "bytes": len(data), "cpu": cpu,
               "python": sys.version.split()[0], "executable": sys.executable,
               "seconds": times}, sys.stdout)
    return 0


if __name__ == "__main__":
    sys.exit(main())
