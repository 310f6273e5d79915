"""Reading a ravend backup back, all of it, before anyone relies on it.

A backup counts only once it has been read back from disk: the archive opens to its end, the
database in it passes SQLite's integrity check, and its checksum and counts match its manifest.
``take`` (ravend.backup) verifies each archive before it gets a backup's name, ``restore``
(ravend.restore) before it replaces the store, ``ravenctl restore --check`` on demand. Every
refusal is one ``BackupError`` line that names the file.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import sqlite3
import tarfile
import tempfile
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

from ravend.backup_archive import (
    CHUNK,
    CONF_MEMBER,
    DB_MEMBER,
    MANIFEST_MEMBER,
    BackupError,
    Counts,
    Manifest,
    counts,
    latest_schema,
    writing,
)
from ravend.db.sqlite import readonly_uri


@contextlib.contextmanager
def _members(path: Path) -> Iterator[tarfile.TarFile]:
    try:
        with tarfile.open(path, mode="r:gz") as tar:
            yield tar
    except FileNotFoundError:
        raise BackupError(f"{path}: no such file") from None
    except PermissionError:
        raise BackupError(f"{path}: permission denied (run it with sudo)") from None
    except (tarfile.TarError, EOFError, OSError, ValueError, zlib.error) as exc:
        what = str(exc) or type(exc).__name__
        raise BackupError(f"{path}: not a complete ravend backup, truncated or corrupt ({what})"
                          ) from None


def _read(tar: tarfile.TarFile, path: Path, member: tarfile.TarInfo) -> IO[bytes]:
    handle = tar.extractfile(member) if member.isfile() else None
    if handle is None:
        raise BackupError(f"{path}: not a ravend backup ({member.name} is not a file)")
    return handle


def extract(path: Path, into: Path) -> tuple[Manifest, Path, bytes | None]:
    """The manifest, the database (written as ``into``/ravend.db) and the configuration file of
    the backup at ``path``, read through once, in order; the database is checked against the
    manifest."""
    manifest = None
    conf = None
    db = into / DB_MEMBER
    digest = hashlib.sha256()
    with _members(path) as tar:
        for member in tar:
            if member.name == MANIFEST_MEMBER:
                try:
                    manifest = Manifest.from_json(_read(tar, path, member).read().decode())
                except (ValueError, TypeError, KeyError) as exc:
                    raise BackupError(f"{path}: unreadable manifest ({exc})") from None
            elif member.name == CONF_MEMBER:
                conf = _read(tar, path, member).read()
            elif member.name == DB_MEMBER:
                with _read(tar, path, member) as src:
                    _unpack(src, db, digest)
    if manifest is None or not db.exists():
        missing = MANIFEST_MEMBER if manifest is None else DB_MEMBER
        raise BackupError(f"{path}: not a ravend backup (no {missing} in it)")
    if digest.hexdigest() != manifest.db_sha256:
        raise BackupError(f"{path}: the database does not match its manifest's checksum")
    _check_database(path, db, manifest)
    return manifest, db, conf


def _unpack(src: IO[bytes], db: Path, digest: Any) -> None:
    """Write the database member to ``db``, the archive read outside ``writing`` (a read
    error is the backup file's, and _members says so)."""
    with writing(db.parent, "unpack the database"):
        out = open(db, "wb")  # noqa: SIM115  (closed below, its errors caught too)
    try:
        while chunk := src.read(CHUNK):
            digest.update(chunk)
            with writing(db.parent, "unpack the database"):
                out.write(chunk)
        with writing(db.parent, "unpack the database"):
            out.flush()
            os.fsync(out.fileno())
    finally:
        with writing(db.parent, "unpack the database"):
            out.close()


def _check_database(path: Path, db: Path, manifest: Manifest) -> None:
    conn = sqlite3.connect(readonly_uri(db), uri=True)
    try:
        result = [r[0] for r in conn.execute("PRAGMA integrity_check")]
        if result != ["ok"]:
            raise BackupError(f"{path}: the database fails its integrity check: {result[0]}")
        found = counts(conn)
    except sqlite3.Error as exc:
        raise BackupError(f"{path}: the database fails its integrity check ({exc})") from None
    finally:
        conn.close()
    promised = Counts(manifest.schema_version, manifest.readings, manifest.rollup_hourly,
                      manifest.rollup_daily, manifest.oldest, manifest.newest)
    if found != promised:
        raise BackupError(f"{path}: the database does not hold what its manifest says"
                          f" ({found.readings} readings, not {manifest.readings})")


def verify(path: Path) -> Manifest:
    """Read the whole backup back: checksum, integrity check and counts against the manifest.
    BackupError (one line) when any of them fails."""
    with tempfile.TemporaryDirectory(prefix=".ravend-verify-", dir=_scratch(path)) as work:
        manifest, _, _ = extract(path, Path(work))
    return manifest


def check_schema(path: Path, manifest: Manifest) -> None:
    """Refuse a backup this ravend cannot run on: one of a later schema (it knows no way back)."""
    if manifest.schema_version > latest_schema():
        raise BackupError(f"{path}: schema version {manifest.schema_version} is newer than"
                          f" this ravend's ({latest_schema()}): restore it with ravend"
                          f" {manifest.ravend_version} or later")


def _scratch(path: Path) -> str | None:
    """Where to unpack for a check: next to the file when it may be written to (the backup
    disk has the room), else the system's temporary folder."""
    folder = path.resolve().parent
    return str(folder) if os.access(folder, os.W_OK | os.X_OK) else None
