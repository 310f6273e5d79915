"""What a ravend backup is on disk: its name, its manifest, how it is written, and the work
folders a backup or restore run uses beside it.

A backup is a gzip'd tar named ``ravend-<UTC time>.tar.gz`` holding ``manifest.json`` first,
the configuration file, and the database, one file without a write-ahead log. Its manifest says
what the database holds (``Counts``: readings per kind, roll-up rows, key_time range, schema
version) and its checksum; reading a backup back and checking it against the manifest is
ravend.backup_verify, taking one is ravend.backup, rotation ravend.backup_rotation and restoring
ravend.restore.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import gzip
import hashlib
import io
import json
import os
import re
import shutil
import sqlite3
import tarfile
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

from ravend.db.migrations import migrations

#: Backup file names: ravend-20261208T011500Z.tar.gz (UTC; names sort in time order).
PREFIX = "ravend-"
SUFFIX = ".tar.gz"
_NAME = re.compile(r"^ravend-(\d{8}T\d{6}Z)\.tar\.gz$")
_STAMP = "%Y%m%dT%H%M%SZ"
#: Members of the archive.
DB_MEMBER = "ravend.db"
CONF_MEMBER = "ravend.conf"
MANIFEST_MEMBER = "manifest.json"
#: Manifest format; a reader refuses a manifest of a later format.
FORMAT = 1
#: gzip level: 6 packs a ravend store to about a third, at a pace a Pi 3 keeps up with.
GZIP_LEVEL = 6
#: Copy buffer for checksums and extraction.
CHUNK = 1 << 20
#: Work folders (full copies of the store) are made under these prefixes beside their target.
WORK_PREFIXES = (".ravend-backup-", ".ravend-verify-", ".ravend-restore-")
#: A work folder untouched for this long belongs to a run that was killed (SIGKILL, power
#: loss): no backup or restore takes a day.
STALE_SECONDS = 86400


class BackupError(Exception):
    """A backup that cannot be taken, or a file that is no usable backup: one line, the file
    named, for the person who typed the command."""


@dataclass(frozen=True)
class Manifest:
    """What a backup holds, written next to the database in the archive and checked against it
    on every verification."""

    format: int
    ravend_version: str
    schema_version: int
    taken_at: float
    source: str
    readings: dict[str, int]  # per kind
    rollup_hourly: int
    rollup_daily: int
    oldest: int | None  # key_time range of the readings
    newest: int | None
    db_bytes: int
    db_sha256: str

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2, sort_keys=True) + "\n"

    @classmethod
    def from_json(cls, text: str) -> Manifest:
        data = json.loads(text)
        if not isinstance(data, dict):
            raise ValueError("not an object")
        if int(data.get("format", 0)) > FORMAT:
            raise ValueError(f"manifest format {data.get('format')} is newer than this"
                             f" ravend's ({FORMAT})")
        return cls(**{k: data[k] for k in cls.__dataclass_fields__})

    @property
    def total(self) -> int:
        return sum(self.readings.values())


@dataclass(frozen=True)
class Counts:
    """The numbers a manifest promises, as read from a database."""

    schema_version: int
    readings: dict[str, int]
    rollup_hourly: int
    rollup_daily: int
    oldest: int | None
    newest: int | None


# --- reading a database -----------------------------------------------------------------------


def table_names(conn: sqlite3.Connection) -> set[str]:
    """The tables of a database (an old store may lack some)."""
    return {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}


def counts(conn: sqlite3.Connection) -> Counts:
    """Reading counts per kind, roll-up rows, the key_time range and the schema version."""
    from ravend.db.sqlite import schema_version

    tables = table_names(conn)
    per_kind: dict[str, int] = {}
    oldest = newest = None
    if "readings" in tables:
        per_kind = {str(k): int(n) for k, n in conn.execute(
            "SELECT kind, COUNT(*) FROM readings GROUP BY kind ORDER BY kind")}
        oldest, newest = conn.execute("SELECT MIN(key_time), MAX(key_time) FROM readings"
                                      ).fetchone()

    def rows(table: str) -> int:
        if table not in tables:
            return 0
        return int(conn.execute(f"SELECT COUNT(*) FROM {table}").fetchone()[0])

    return Counts(schema_version(conn), per_kind, rows("rollup_hourly"), rows("rollup_daily"),
                  oldest, newest)


def latest_schema() -> int:
    """The SQLite schema version this ravend writes."""
    return migrations("sqlite")[-1].version


# --- files ------------------------------------------------------------------------------------


def sha256(path: Path) -> str:
    """The manifest's checksum of a database file (hex)."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def fsync_dir(path: Path) -> None:
    """Make a rename or unlink in ``path`` durable."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_file(path: Path) -> None:
    """Make a file written by someone else (SQLite) durable."""
    with open(path, "rb+") as handle:
        os.fsync(handle.fileno())


@contextlib.contextmanager
def writing(folder: Path, what: str) -> Iterator[None]:
    """A full or failing disk (ENOSPC, EIO, EFBIG) while writing into ``folder`` is
    BackupError naming the folder: one line, the disk's fault, not the store's or the backup
    file's. PermissionError goes on to the command's own advice (sudo)."""
    try:
        yield
    except PermissionError:
        raise
    except OSError as exc:
        raise BackupError(f"{folder}: cannot {what}: {exc.strerror or exc}") from None


def backup_name(when: dt.datetime) -> str:
    """The file name of a backup taken at ``when``."""
    return PREFIX + when.astimezone(dt.UTC).strftime(_STAMP) + SUFFIX


def taken_at(path: Path) -> dt.datetime | None:
    """The time in a backup's name; None for a file that is not named as a backup."""
    match = _NAME.match(path.name)
    if match is None:
        return None
    return dt.datetime.strptime(match.group(1), _STAMP).replace(tzinfo=dt.UTC)


def backups(folder: Path) -> list[Path]:
    """The (verified) backups in ``folder``, oldest first."""
    try:
        found = [p for p in folder.iterdir() if taken_at(p) is not None and p.is_file()]
    except FileNotFoundError:
        return []
    return sorted(found, key=lambda p: p.name)


def sweep_stale(folder: Path, *, now: float | None = None) -> list[Path]:
    """Remove the work folders in ``folder`` that a killed run left behind (older than
    STALE_SECONDS); the ones removed. Each is a full copy of the store, and nothing else would
    ever remove it."""
    limit = (time.time() if now is None else now) - STALE_SECONDS
    gone: list[Path] = []
    try:
        entries = list(folder.iterdir())
    except OSError:
        return gone
    for entry in entries:
        if not entry.name.startswith(WORK_PREFIXES):
            continue
        with contextlib.suppress(OSError):
            if entry.lstat().st_mtime < limit:
                if entry.is_dir() and not entry.is_symlink():
                    shutil.rmtree(entry)
                else:
                    entry.unlink()
                gone.append(entry)
    return gone


# --- writing one ------------------------------------------------------------------------------


def _add(tar: tarfile.TarFile, name: str, data: bytes | Path, mtime: float) -> None:
    info = tarfile.TarInfo(name)
    info.mtime = int(mtime)
    info.mode = 0o640
    if isinstance(data, Path):
        info.size = data.stat().st_size
        with open(data, "rb") as handle:
            tar.addfile(info, handle)
    else:
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))


def write_archive(path: Path, db: Path, conffile: Path | None, manifest: Manifest) -> None:
    """Write the new file ``path``: manifest, configuration file (when readable) and
    database, fsync'd. It is no backup until it has been verified and renamed."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o640)
    with os.fdopen(fd, "wb") as raw:
        with gzip.GzipFile(fileobj=raw, mode="wb", compresslevel=GZIP_LEVEL,
                           mtime=int(manifest.taken_at)) as packed, \
                tarfile.open(fileobj=packed, mode="w", format=tarfile.PAX_FORMAT) as tar:
            # The manifest first: a reader learns what to expect before the large member.
            _add(tar, MANIFEST_MEMBER, manifest.to_json().encode(), manifest.taken_at)
            if conffile is not None and conffile.is_file():
                with contextlib.suppress(PermissionError):  # the backup still holds the data
                    _add(tar, CONF_MEMBER, conffile.read_bytes(), manifest.taken_at)
            _add(tar, DB_MEMBER, db, manifest.taken_at)
        raw.flush()
        os.fsync(raw.fileno())
