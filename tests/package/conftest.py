"""Figures of the package tests (lintian, exposure, timings), printed at the end of the run.

Tests add lines with the ``report`` fixture; they are printed after the results, whether the
tests passed or not, and kept in out/package-test-report.txt.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest

REPORT_FILE = Path(__file__).resolve().parents[2] / "out" / "package-test-report.txt"
_lines: list[str] = []
_started = time.monotonic()


@pytest.fixture(scope="session")
def report():
    """``report(text)`` adds a line to the figures printed at the end of the run."""
    return _lines.append


def pytest_terminal_summary(terminalreporter):
    if not _lines:
        return
    lines = [*_lines, f"package tests took {time.monotonic() - _started:.0f} s"]
    terminalreporter.section("ravend package")
    for line in lines:
        terminalreporter.write_line(line)
    REPORT_FILE.parent.mkdir(exist_ok=True)
    REPORT_FILE.write_text("".join(f"{line}\n" for line in lines), encoding="utf-8")
