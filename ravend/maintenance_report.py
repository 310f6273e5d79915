"""What one maintenance run did on one store: the roll-up update and the purge both add to one
``Report``, which the thread logs and ``ravenctl purge`` prints.

It lives apart from the thread (``ravend.maintenance``) so that the roll-up update
(``ravend.rollup_update``) and the purge (``ravend.purge``) can fill it without importing
the thread that runs them.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ravend.plural import plural
from ravend.timetext import iso_utc


@dataclass
class Report:
    """What one maintenance run did (or, dry, would do) on one store."""

    store: str
    rolled_up: int = 0  # new readings taken into the roll-ups
    skipped: int = 0  # of them, left out: their meter time is meaningless (clock_flag)
    hours: int = 0
    days: int = 0
    purged: int = 0  # raw readings deleted (or that would be)
    not_rolled_up: int = 0  # dry run: older than the cutoff but not yet rolled up
    purged_calplug: int = 0
    purged_rollups: int = 0
    chunks: int = 0
    cutoff: int | None = None
    size_before: int | None = None  # SQLite: bytes of the file (live pages in dry runs)
    size_after: int | None = None
    notes: list[str] = field(default_factory=list)

    def lines(self, dry_run: bool = False) -> list[str]:
        verb = "would delete" if dry_run else "deleted"
        out = []
        if self.rolled_up or self.hours:
            out.append(f"{self.store}: rolled up {plural(self.rolled_up, 'new reading')}"
                       f" ({plural(self.hours, 'hour')}, {plural(self.days, 'day')} recomputed)")
        if self.skipped:
            out.append(f"{self.store}: {self.skipped} of them left out of the roll-ups (kept"
                       " raw): their meter time is meaningless (clock_flag epoch/ahead)")
        if self.cutoff is not None and (self.purged or dry_run):
            out.append(f"{self.store}: {verb} {plural(self.purged, 'raw reading')} older than"
                       f" {iso(self.cutoff)}"
                       + (f" in {plural(self.chunks, 'chunk')}" if self.chunks else ""))
        if self.not_rolled_up:
            out.append(f"{self.store}: {self.not_rolled_up} of them are not rolled up yet"
                       " (a purge rolls them up first)")
        if self.purged_calplug:
            calplug = plural(self.purged_calplug, "instantaneous_demand row")
            out.append(f"{self.store}: {verb} {calplug}")
        if self.purged_rollups:
            out.append(f"{self.store}: {verb} {plural(self.purged_rollups, 'roll-up row')}")
        if self.size_before is not None and self.size_after is not None:
            out.append(f"{self.store}: database {mb(self.size_before)} -> {mb(self.size_after)}")
        out.extend(f"{self.store}: {n}" for n in self.notes)
        return out


def iso(t: float) -> str:
    return iso_utc(t)


def mb(n: int) -> str:
    return f"{n / 1e6:.1f} MB"

