"""Parser speed on one core: ravend's decoder and aioraven's parser on the same bytes.

Each parser runs in a process of its own (bench/parse_worker.py says exactly what is timed), both
pinned to the same core, one after the other, on the same stream file cut into 4 KiB chunks; the
best of N runs counts for each, which is the figure least disturbed by whatever else the machine
is doing.
"""

from __future__ import annotations

import json
import subprocess
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.core import DEBIAN_PYTHON, ROOT, Context
from bench.peers import peer_env, peer_python
from bench.processes import debian_env
from bench.stream import mixed_stream

CHUNK = 4096
WORKER = ROOT / "bench" / "parse_worker.py"


@dataclass(frozen=True, slots=True)
class ParseRun:
    parser: str
    fragments: int
    bytes: int
    best_seconds: float
    all_seconds: list[float]

    @property
    def rate(self) -> float:
        return self.fragments / self.best_seconds

    def detail(self) -> dict[str, Any]:
        return {"parser": self.parser, "fragments": self.fragments, "bytes": self.bytes,
                "chunk": CHUNK, "best_s": self.best_seconds, "runs_s": self.all_seconds}


@dataclass(frozen=True, slots=True)
class Stream:
    path: Path
    counts: Counter[str]


def stream(ctx: Context) -> Stream:
    """The mixed RAVEn + EMU-2 stream, written once per bench run."""

    def make() -> Stream:
        data, counts = mixed_stream(ctx.pick(10_000, 40_000))
        path = ctx.work / "mixed-stream.bin"
        path.write_bytes(data)
        return Stream(path, counts)

    return ctx.once("stream", make)


def _run_worker(ctx: Context, python: str, parser: str, env: dict[str, str]) -> ParseRun:
    s = stream(ctx)
    runs = ctx.pick(3, 7)
    done = subprocess.run([python, str(WORKER), parser, str(s.path), "--chunk", str(CHUNK),
                           "--runs", str(runs)],
                          env=env, cwd=ROOT, capture_output=True, text=True, check=False,
                          timeout=600)
    if done.returncode != 0:
        raise RuntimeError(f"{parser} worker failed: {done.stderr.strip()[-400:]}")
    out = json.loads(done.stdout)
    expected = sum(s.counts.values())
    if out["fragments"] != expected:
        raise RuntimeError(f"{parser} saw {out['fragments']} fragments, the stream has {expected}")
    return ParseRun(parser, out["fragments"], out["bytes"], min(out["seconds"]), out["seconds"])


def ravend_decoder(ctx: Context) -> ParseRun:
    return ctx.once("parse:ravend",
                    lambda: _run_worker(ctx, DEBIAN_PYTHON, "ravend", debian_env()))


def ravend_framer(ctx: Context) -> ParseRun:
    return ctx.once("parse:framer",
                    lambda: _run_worker(ctx, DEBIAN_PYTHON, "framer", debian_env()))


def aioraven(ctx: Context) -> ParseRun:
    def measure() -> ParseRun:
        python = peer_python(ctx.log)
        return _run_worker(ctx, str(python), "aioraven", peer_env())

    return ctx.once("parse:aioraven", measure)
