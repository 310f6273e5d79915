"""Rotation of the backups in a folder: the newest of each recent day and ISO week are kept.

Only files named as ravend backups are ever deleted (ravend.backup_archive's names), never the
one just written, and the days and weeks counted are those that have a backup, so a spell
without backups deletes nothing.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from ravend.backup_archive import backups, fsync_dir, taken_at


def to_keep(found: Iterable[Path], keep_daily: int, keep_weekly: int) -> set[Path]:
    """The backups rotation keeps: the newest of each of the ``keep_daily`` latest days that
    have one, and the newest of each of the ``keep_weekly`` latest ISO weeks that have one (the
    days and weeks are those of the backups, in UTC, not the calendar's: a month without
    backups deletes nothing). The newest backup is always kept."""
    dated: list[tuple[dt.datetime, Path]] = sorted(
        ((when, p) for p in found if (when := taken_at(p)) is not None), reverse=True)
    keep: set[Path] = set()
    if dated:
        keep.add(dated[0][1])
    for period, limit in (("day", keep_daily), ("week", keep_weekly)):
        seen: list[Any] = []
        for when, path in dated:
            key = when.date() if period == "day" else when.isocalendar()[:2]
            if key in seen:
                continue
            if len(seen) >= limit:
                break
            seen.append(key)
            keep.add(path)
    return keep


def rotate(folder: Path, keep_daily: int, keep_weekly: int, *,
           written: Path | None = None) -> list[Path]:
    """Delete the backups in ``folder`` that rotation does not keep; the ones deleted.
    Files not named as ravend backups are never touched, and neither is ``written``, the
    backup just taken: named by a wrong clock (1970, at boot before the time is set), it
    would otherwise sort as the oldest and go at once."""
    found = backups(folder)
    keep = to_keep(found, keep_daily, keep_weekly)
    if written is not None:
        keep.add(written)
    gone = [p for p in found if p not in keep]
    for path in gone:
        path.unlink(missing_ok=True)
    if gone:
        fsync_dir(folder)
    return gone
