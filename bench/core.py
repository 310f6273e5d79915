"""The bench's frame: rows and their targets, the registry, the table, the machine header.

A row is one figure with a unit and a target. Rows are plain functions registered in order with
``@row``; several rows often read figures of one expensive run (ravend's flat-out run feeds the
throughput, CPU and memory rows), so such runs are memoised on the ``Context`` with ``ctx.once``
and every row stays a small function of its own. Adding a row is: write a function that takes
the context and returns a ``Result``, decorate it, done.
"""

from __future__ import annotations

import datetime as dt
import json
import math
import operator
import os
import platform
import shutil
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, TypeVar

ROOT = Path(__file__).resolve().parent.parent
#: ravend runs on Debian's interpreter with Debian's python3-* packages, as the package does.
DEBIAN_PYTHON = "/usr/bin/python3"

T = TypeVar("T")

_OPS: dict[str, Callable[[float, float], bool]] = {
    ">=": operator.ge,
    "<=": operator.le,
    "==": operator.eq,
}


@dataclass(frozen=True, slots=True)
class Target:
    """``figure OP bound``; ``None`` as a row's target means the row is for information."""

    op: str
    bound: float

    def met(self, value: float) -> bool:
        return _OPS[self.op](value, self.bound)

    def __str__(self) -> str:
        return f"{self.op} {_fmt(self.bound)}"


@dataclass(slots=True)
class Result:
    """What a row function returns: the figure and anything worth keeping in the JSON."""

    value: float | None
    display: str | None = None  # how to print the figure when a plain number says too little
    detail: dict[str, Any] = field(default_factory=dict)
    what: str | None = None  # the row's label, when it depends on the run (sizes, versions)


RowFn = Callable[["Context"], Result]


@dataclass(frozen=True, slots=True)
class RowSpec:
    key: str
    what: str
    unit: str
    target: Target | None
    fn: RowFn


@dataclass(slots=True)
class Outcome:
    key: str
    what: str
    value: float | None
    display: str
    unit: str
    target: str
    status: str  # pass, FAIL, info, ERROR
    seconds: float
    detail: dict[str, Any]


#: Every row, in the order the table prints them (registration order).
ROWS: list[RowSpec] = []


def row(key: str, what: str, unit: str, target: Target | None) -> Callable[[RowFn], RowFn]:
    """Register a row function under ``key`` (used by ``--only``)."""

    def register(fn: RowFn) -> RowFn:
        if any(r.key == key for r in ROWS):
            raise ValueError(f"duplicate bench row {key!r}")
        ROWS.append(RowSpec(key, what, unit, target, fn))
        return fn

    return register


@dataclass
class Context:
    """Run-wide settings and the memo of shared measurements."""

    quick: bool
    work: Path  # scratch directory, removed at the end
    log: Callable[[str], None]
    memo: dict[str, Any] = field(default_factory=dict)

    def pick(self, quick: T, full: T) -> T:
        """The quick or the full variant of a size."""
        return quick if self.quick else full

    def once(self, key: str, fn: Callable[[], T]) -> T:
        """Run ``fn`` the first time ``key`` is asked for; later rows reuse its result (or its
        exception, so a failed shared run fails each of its rows without running again)."""
        if key not in self.memo:
            try:
                self.memo[key] = (True, fn())
            except Exception as exc:
                self.memo[key] = (False, exc)
        ok, value = self.memo[key]
        if not ok:
            raise value
        return value  # type: ignore[no-any-return]


def _fmt(value: float) -> str:
    if not math.isfinite(value):
        return str(value)
    if value == int(value) and abs(value) >= 1:
        return f"{int(value):,}"
    if abs(value) >= 100:
        return f"{value:,.0f}"
    if abs(value) >= 10:
        return f"{value:.1f}"
    return f"{value:.3g}"


def run_rows(ctx: Context, only: set[str] | None) -> list[Outcome]:
    outcomes = []
    reported: set[int] = set()  # a shared run's failure is logged in full once
    for spec in ROWS:
        if only and spec.key not in only:
            continue
        ctx.log(f"row {spec.key}: {spec.what}")
        started = time.monotonic()
        try:
            result = spec.fn(ctx)
        except Exception as exc:
            if id(exc) not in reported:
                reported.add(id(exc))
                ctx.log("".join(traceback.format_exception(exc)).rstrip())
            outcomes.append(Outcome(spec.key, spec.what, None, "error (see log)", spec.unit,
                                    str(spec.target or "-"), "ERROR",
                                    time.monotonic() - started, {"error": repr(exc)}))
            continue
        if result.value is None or spec.target is None:
            status = "info"
        else:
            status = "pass" if spec.target.met(result.value) else "FAIL"
        display = result.display or ("-" if result.value is None else _fmt(result.value))
        outcomes.append(Outcome(spec.key, result.what or spec.what, result.value, display,
                                spec.unit, str(spec.target or "-"), status,
                                time.monotonic() - started, result.detail))
    return outcomes


# --- machine ----------------------------------------------------------------------------------


def machine() -> dict[str, Any]:
    """What the figures depend on: CPU, cores, kernel, interpreter, load when we started."""
    model = "unknown"
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return {
        "cpu": model,
        "cores": os.cpu_count(),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "python_executable": sys.executable,
        "date": dt.datetime.now().astimezone().isoformat(timespec="seconds"),
        "load_at_start": [round(x, 2) for x in os.getloadavg()],
    }


def header(m: dict[str, Any], quick: bool) -> str:
    return (f"ravend bench ({'quick' if quick else 'full'}) on {m['cpu']}, {m['cores']} cores,"
            f" Linux {m['kernel']}, Python {m['python']}, {m['date']}"
            f" (load {' '.join(str(x) for x in m['load_at_start'])})")


def table(outcomes: list[Outcome]) -> str:
    heads = ("what", "figure", "unit", "target", "result")
    rows = [(o.what, o.display, o.unit, o.target, o.status) for o in outcomes]
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h)
              for i, h in enumerate(heads)]

    def line(cells: tuple[str, ...]) -> str:
        what, figure, unit, target, status = cells
        return "  ".join([what.ljust(widths[0]), figure.rjust(widths[1]), unit.ljust(widths[2]),
                          target.ljust(widths[3]), status]).rstrip()

    rule = "  ".join("-" * w for w in widths)
    return "\n".join([line(heads), rule, *(line(r) for r in rows)])


def save(path: Path, m: dict[str, Any], quick: bool, outcomes: list[Outcome]) -> None:
    doc = {"machine": m, "quick": quick, "rows": [asdict(o) for o in outcomes]}
    path.write_text(json.dumps(doc, indent=2, default=str) + "\n", encoding="utf-8")


def scratch() -> Path:
    """A private directory on the same filesystem as a real state directory (not tmpfs)."""
    base = Path("/var/tmp") if Path("/var/tmp").is_dir() else None
    return Path(tempfile.mkdtemp(prefix="ravend-bench-", dir=base))


def remove(path: Path) -> None:
    shutil.rmtree(path, ignore_errors=True)
