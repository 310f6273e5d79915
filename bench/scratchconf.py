"""The ravend.conf of every process the bench starts: each path it holds in the run's scratch.

A config file that leaves a key out gets the packaged default, and those are system paths:
``/run/ravend/control`` (the control socket), ``/var/lib/ravend`` (state, lock, outboxes,
SQLite store) and ``/var/backups/ravend``. A bench run as root would bind or write them, which
a real installed ravend owns and a second bench run would collide on. So no bench process is
given ``/dev/null`` or a hand-written file: ``write(path, scratch, sections)`` renders the
sections a row needs on top of scratch defaults for every path key, which a row may override
with another path of its own (still in its scratch directory).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

#: Sections a row's config text may set keys of; values are written with str().
Sections = Mapping[str, Mapping[str, object]]


def scratch_paths(scratch: Path) -> dict[str, dict[str, object]]:
    """Every key whose default is a system path, pointed into ``scratch``. Relative paths
    ([sqlite] path, [repeater] watermark_file) are under state_dir, so they follow it."""
    return {
        "service": {"state_dir": scratch / "state", "control_socket": scratch / "control"},
        "backup": {"dir": scratch / "backups"},
    }


def text(scratch: Path, sections: Sections | None = None) -> str:
    """The file's text: the scratch defaults, then ``sections`` (whose keys win)."""
    merged = scratch_paths(scratch)
    for name, keys in (sections or {}).items():
        merged.setdefault(name, {}).update(keys)
    return "\n".join(f"[{name}]\n" + "".join(f"{key} = {value}\n" for key, value in keys.items())
                     for name, keys in merged.items())


def write(path: Path, scratch: Path, sections: Sections | None = None) -> Path:
    """Write ``text(scratch, sections)`` to ``path`` (made with its folder); ``path``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text(scratch, sections), encoding="utf-8")
    return path
