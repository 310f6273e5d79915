"""Backups of the SQLite store that are known to restore: ``ravenctl backup``.

An SD card is the usual way a Raspberry Pi loses years of readings, and a backup nobody has
verified is often no backup at all (an empty or truncated file found on the day it is needed).
So a copy counts only once it has been read back from disk (ravend.backup_verify); only then is
it renamed into place. A file named like a backup in the backup folder is therefore a verified
one, which is what ``ravenctl doctor`` looks for.

The copy is taken through SQLite's backup API in one step: in WAL mode that is one read
transaction, a consistent snapshot, and ravend's writer is never blocked (stepping page by page
would start over at each of its commits). The archive (ravend.backup_archive: tar, gzip) holds
the database, the configuration file and ``manifest.json``. The outboxes are left out: their
readings are on their way to the other stores.

The rest of the job lives beside this module, one part each: the archive's format and names
(ravend.backup_archive), verification (ravend.backup_verify), rotation
(ravend.backup_rotation) and restore (ravend.restore). Their public names are importable from
here too, as ``ravenctl backup`` and ``restore`` use them (ravend.cli.backup_command).
"""

from __future__ import annotations

import datetime as dt
import os
import shutil
import sqlite3
import tempfile
from pathlib import Path

from ravend import __version__
from ravend.backup_archive import (
    DB_MEMBER,
    FORMAT,
    STALE_SECONDS,
    BackupError,
    Counts,
    Manifest,
    backup_name,
    backups,
    counts,
    fsync_dir,
    fsync_file,
    latest_schema,
    sha256,
    sweep_stale,
    taken_at,
    write_archive,
    writing,
)
from ravend.backup_rotation import rotate, to_keep
from ravend.backup_verify import check_schema, extract, verify
from ravend.db.sqlite import readonly_uri
from ravend.restore import Restored, StoreRunning, restore

__all__ = [
    "STALE_SECONDS", "BackupError", "Counts", "Manifest", "Restored", "StoreRunning",
    "backup_name", "backups", "check_schema", "counts", "extract", "latest_schema", "restore",
    "rotate", "snapshot", "take", "taken_at", "to_keep", "verify",
]


def snapshot(source: Path, copy: Path) -> None:
    """A consistent copy of the store at ``source`` in the new file ``copy``, as one file (no
    write-ahead log), while ravend goes on writing."""
    from ravend.db.sqlite import connect_existing

    src = connect_existing(source, readonly=True)
    try:
        dst = sqlite3.connect(str(copy), isolation_level=None)
        try:
            src.backup(dst)  # pages=-1: all at once, one read transaction
            dst.execute("PRAGMA journal_mode = DELETE").fetchall()
        finally:
            dst.close()
    finally:
        src.close()
    fsync_file(copy)


def take(source: Path, folder: Path, conffile: Path | None, *,
         now: dt.datetime | None = None) -> tuple[Path, Manifest]:
    """Back the store at ``source`` up into ``folder``; the verified archive and its manifest.

    Everything is written under a temporary name in ``folder`` and fsync'd; the archive is then
    verified from disk and only then renamed to its final name (and the folder fsync'd). A
    failure at any point leaves no file that looks like a backup."""
    when = now or dt.datetime.now(dt.UTC)
    folder.mkdir(parents=True, exist_ok=True)
    sweep_stale(folder)
    work = Path(tempfile.mkdtemp(prefix=".ravend-backup-", dir=folder))
    try:
        copy = work / DB_MEMBER
        try:
            snapshot(source, copy)
        except sqlite3.Error as exc:
            raise BackupError(f"{source}: cannot copy the store: {exc}") from None
        conn = sqlite3.connect(readonly_uri(copy), uri=True)
        try:
            found = counts(conn)
        finally:
            conn.close()
        manifest = Manifest(
            format=FORMAT, ravend_version=__version__, schema_version=found.schema_version,
            taken_at=when.timestamp(), source=str(source), readings=found.readings,
            rollup_hourly=found.rollup_hourly, rollup_daily=found.rollup_daily,
            oldest=found.oldest, newest=found.newest, db_bytes=copy.stat().st_size,
            db_sha256=sha256(copy))
        final = folder / backup_name(when)
        partial = work / (final.name + ".partial")
        with writing(folder, "write the backup"):
            write_archive(partial, copy, conffile, manifest)
        verify(partial)
        os.replace(partial, final)
        fsync_dir(folder)
        return final, manifest
    finally:
        shutil.rmtree(work, ignore_errors=True)
