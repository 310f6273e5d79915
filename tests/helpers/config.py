"""Configuration files for the tests: write one, and expect ``load`` to refuse one in one line.

Every refusal ravend gives for a configuration file is a single line naming the file (and line,
key and expectation); the tests of each section check that through ``refused``.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from ravend.config import ConfigError, load


def write(tmp_path: Path, text: str) -> Path:
    """``text`` as ``tmp_path/ravend.conf``, the name refusal messages are checked against."""
    path = tmp_path / "ravend.conf"
    path.write_text(text, encoding="utf-8")
    return path


def refused(path: Path, expected: str) -> str:
    """``load(path)`` raises ConfigError matching the regex ``expected`` in one line; its text."""
    with pytest.raises(ConfigError, match=expected) as info:
        load(path)
    message = str(info.value)
    assert "\n" not in message
    return message
