"""Backups of the SQLite store that are known to restore: take, verify, rotate, restore.

An SD card is the usual way a Raspberry Pi loses years of readings, and a backup nobody has
verified is often no backup at all (an empty or truncated file found on the day it is needed).
So a copy counts only once it has been read back from disk: the archive is opened again, the
database in it passes SQLite's integrity check, its checksum and its counts match its manifest;
only then is it renamed into place. A file named like a backup in the backup folder is
therefore a verified one, which is what ``ravenctl doctor`` looks for.

The copy is taken through SQLite's backup API in one step: in WAL mode that is one read
transaction, a consistent snapshot, and ravend's writer is never blocked (stepping page by page
would start over at each of its commits). The archive (tar, gzip) holds the database, the
configuration file and ``manifest.json``. The outboxes are left out: their readings are on their
way to the other stores.

A restore verifies the archive first, refuses while ravend holds its state lock (it holds the
lock itself meanwhile, so ravend cannot start), migrates a copy of an older schema, then puts
the copy in place with one rename, the store it replaces kept as ``<store>.before-restore``.
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
import stat
import tarfile
import tempfile
import time
import zlib
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import IO, Any

from ravend import __version__
from ravend.db.migrations import migrations
from ravend.db.sqlite import readonly_uri
from ravend.statelock import AlreadyRunning, StateLock

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
#: Where the replaced store goes on a restore.
BEFORE_RESTORE = ".before-restore"
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


class StoreRunning(BackupError):
    """ravend holds the state lock: a restore under it would swap the file it writes to."""


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


def _tables(conn: sqlite3.Connection) -> set[str]:
    return {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}


def counts(conn: sqlite3.Connection) -> Counts:
    """Reading counts per kind, roll-up rows, the key_time range and the schema version."""
    from ravend.db.sqlite import schema_version

    tables = _tables(conn)
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


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_file(path: Path) -> None:
    with open(path, "rb+") as handle:
        os.fsync(handle.fileno())


# --- taking one -------------------------------------------------------------------------------


def backup_name(when: dt.datetime) -> str:
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
    _fsync_file(copy)


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
            db_sha256=_sha256(copy))
        final = folder / backup_name(when)
        partial = work / (final.name + ".partial")
        with _writing(folder, "write the backup"):
            _write_archive(partial, copy, conffile, manifest)
        verify(partial)
        os.replace(partial, final)
        _fsync_dir(folder)
        return final, manifest
    finally:
        shutil.rmtree(work, ignore_errors=True)


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


def _write_archive(path: Path, db: Path, conffile: Path | None, manifest: Manifest) -> None:
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


# --- verifying one ----------------------------------------------------------------------------


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


@contextlib.contextmanager
def _writing(folder: Path, what: str) -> Iterator[None]:
    """A full or failing disk (ENOSPC, EIO, EFBIG) while writing into ``folder`` is
    BackupError naming the folder: one line, the disk's fault, not the store's or the backup
    file's. PermissionError goes on to the command's own advice (sudo)."""
    try:
        yield
    except PermissionError:
        raise
    except OSError as exc:
        raise BackupError(f"{folder}: cannot {what}: {exc.strerror or exc}") from None


def _unpack(src: IO[bytes], db: Path, digest: Any) -> None:
    """Write the database member to ``db``, the archive read outside ``_writing`` (a read
    error is the backup file's, and _members says so)."""
    with _writing(db.parent, "unpack the database"):
        out = open(db, "wb")  # noqa: SIM115  (closed below, its errors caught too)
    try:
        while chunk := src.read(CHUNK):
            digest.update(chunk)
            with _writing(db.parent, "unpack the database"):
                out.write(chunk)
        with _writing(db.parent, "unpack the database"):
            out.flush()
            os.fsync(out.fileno())
    finally:
        with _writing(db.parent, "unpack the database"):
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


# --- rotation ---------------------------------------------------------------------------------


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
        _fsync_dir(folder)
    return gone


# --- restoring one ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Restored:
    manifest: Manifest
    store: Path
    kept: Path | None  # the store replaced, under its new name
    migrated: list[int]


def restore(path: Path, store: Path, state_dir: Path) -> Restored:
    """Put the backup at ``path`` in place of the store at ``store``.

    Refused (BackupError, StoreRunning) when the backup does not verify, comes from a newer
    schema, or when ravend holds the state lock. The lock is held until the end, so no ravend
    starts on a half-restored store."""
    lock = StateLock(state_dir)
    try:
        lock.acquire()
    except AlreadyRunning:
        from ravend.statelock import holder

        pid = holder(lock.path)
        raise StoreRunning(f"ravend{f' (pid {pid})' if pid else ''} is running on {state_dir}:"
                           " stop it first (sudo systemctl stop ravend), restore, then start it"
                           " again") from None
    try:
        _give_to_owner_of(lock.path, state_dir)
        return _restore_locked(path, store)
    finally:
        lock.release()


def _restore_locked(path: Path, store: Path) -> Restored:
    from ravend.db.sqlite import connect, migrate

    store.parent.mkdir(parents=True, exist_ok=True)
    sweep_stale(store.parent)
    work = Path(tempfile.mkdtemp(prefix=".ravend-restore-", dir=store.parent))
    try:
        manifest, db, _ = extract(path, work)
        check_schema(path, manifest)
        sequence = _id_sequence(store)
        conn = connect(db)  # WAL mode, as ravend opens it
        try:
            applied = migrate(conn)
            if sequence:
                # Ids are never given twice, across a restore too: the repeater's watermark
                # and the roll-ups' may be past the backup's highest id.
                conn.execute("UPDATE sqlite_sequence SET seq = MAX(seq, ?)"
                             " WHERE name = 'readings'", (sequence,))
            conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchall()
            conn.execute("PRAGMA journal_mode = DELETE").fetchall()
        finally:
            conn.close()
        os.chmod(db, stat.S_IMODE(store.stat().st_mode) if store.exists() else 0o640)
        _fsync_file(db)
        _give_to_owner_of(db, store if store.exists() else store.parent)
        kept = _swap(db, store)
        return Restored(manifest, store, kept, applied)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _id_sequence(store: Path) -> int:
    """The highest reading id the current store ever gave (0 without a store), its write-ahead
    log checkpointed into the file so that the file alone holds every commit."""
    if not store.exists():
        return 0
    conn = sqlite3.connect(str(store), isolation_level=None, timeout=10)
    try:
        busy, log, done = conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
        if busy or log != done:
            # The -wal goes in the swap: a commit still only in it would be lost from
            # .before-restore.
            raise BackupError(f"{store}: a reader (ravend-web, ravend-repeater, a ravenctl"
                              " command) keeps the latest commits out of the file: stop it"
                              " and restore again; nothing was changed")
        if "sqlite_sequence" not in _tables(conn):
            return 0
        row = conn.execute("SELECT seq FROM sqlite_sequence WHERE name = 'readings'").fetchone()
        return int(row[0]) if row else 0
    except sqlite3.Error as exc:
        raise BackupError(f"{store}: the current store does not open ({exc}); move it away"
                          " and restore again") from None
    finally:
        conn.close()


def _swap(new: Path, store: Path) -> Path | None:
    """``new`` becomes ``store`` in one rename; the old store stays as *.before-restore."""
    kept = None
    if store.exists():
        kept = Path(f"{store}{BEFORE_RESTORE}")
        kept.unlink(missing_ok=True)
        os.link(store, kept)  # the store keeps its name until the rename replaces it
    for suffix in ("-wal", "-shm"):  # checkpointed and closed: nothing in them belongs to new
        Path(f"{store}{suffix}").unlink(missing_ok=True)
    os.replace(new, store)
    _fsync_dir(store.parent)
    return kept


def _give_to_owner_of(path: Path, model: Path) -> None:
    """Run as root, a file made for ravend's state belongs to the state's owner (ravend), as
    ravend would have made it: else the service could not open it."""
    if os.geteuid() != 0:
        return
    with contextlib.suppress(OSError):
        st = model.stat()
        os.chown(path, st.st_uid, st.st_gid)
