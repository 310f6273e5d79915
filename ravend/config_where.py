"""Where in ravend.conf a section or a key is: the first words of each ConfigError about it.

configparser forgets line numbers, so they are found again in the file's text, only when a
message needs one.
"""

from __future__ import annotations

import re
from pathlib import Path


def _line_of(path: str, section: str, key: str | None) -> int | None:
    """configparser forgets line numbers; find the key's line again for the error message."""
    try:
        lines = Path(path).read_text(encoding="utf-8", errors="replace").splitlines()
    except OSError:
        return None
    current = None
    for number_, line in enumerate(lines, 1):
        stripped = line.strip()
        if stripped.startswith("[") and stripped.endswith("]"):
            current = stripped[1:-1].strip().lower()
            if key is None and current == section:
                return number_
        elif current == section and key is not None:
            name = re.split(r"[=:]", stripped, maxsplit=1)[0].strip().lower()
            if name == key and not stripped.startswith(("#", ";")):
                return number_
    return None


def where(path: str, section: str, key: str | None = None) -> str:
    """``path:line: [section] key`` (the line where it is found, the key where given)."""
    line = _line_of(path, section, key)
    loc = f"{path}:{line}" if line else path
    return f"{loc}: [{section}]" + (f" {key}" if key else "")
