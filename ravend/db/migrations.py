"""Numbered SQL migrations (sql/<engine>/NNN_name.sql), applied in order, each exactly once.

The files ship inside the package as ``ravend.sql``; in a source checkout they are read from the
top-level ``sql/`` folder, so there is one copy of each.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

_NAME = re.compile(r"^(\d{3})_([a-z0-9_]+)\.sql$")


@dataclass(frozen=True, slots=True)
class Migration:
    version: int
    name: str
    sql: str


def _folder(engine: str) -> Path:
    source_tree = Path(__file__).resolve().parents[2] / "sql" / engine
    if source_tree.is_dir():
        return source_tree
    # Installed, the scripts are package data beside this package (ravend/sql/<engine>); a
    # plain path, as Debian installs files on disk: importlib.resources would cost every
    # daemon's start its import.
    return Path(__file__).resolve().parents[1] / "sql" / engine


def migrations(engine: str) -> list[Migration]:
    found = []
    for path in sorted(_folder(engine).glob("*.sql")):
        match = _NAME.match(path.name)
        if match:
            found.append(Migration(int(match.group(1)), match.group(2), path.read_text("utf-8")))
    versions = [m.version for m in found]
    if not found or versions != list(range(1, len(found) + 1)):
        raise RuntimeError(f"sql/{engine}: migrations must be numbered 001, 002, ... ({versions})")
    return found


def split_statements(sql: str) -> list[str]:
    """Statements of a migration file (no semicolons inside literals in our files)."""
    lines = [ln for ln in sql.splitlines() if not ln.strip().startswith("--")]
    return [s.strip() for s in "\n".join(lines).split(";") if s.strip()]
