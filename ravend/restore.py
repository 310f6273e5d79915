"""Putting a verified backup in place of the SQLite store (``ravenctl restore``).

A restore verifies the archive first (ravend.backup_verify), refuses while ravend holds its
state lock (it holds the lock itself meanwhile, so ravend cannot start), migrates a copy of an
older schema, then puts the copy in place with one rename, the store it replaces kept as
``<store>.before-restore``. Reading ids are never given twice: the copy's id sequence is
carried past the highest id the replaced store ever gave.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import sqlite3
import stat
import tempfile
from dataclasses import dataclass
from pathlib import Path

from ravend.backup_archive import (
    BackupError,
    Manifest,
    fsync_dir,
    fsync_file,
    sweep_stale,
    table_names,
)
from ravend.backup_verify import check_schema, extract
from ravend.statelock import AlreadyRunning, StateLock

#: Where the replaced store goes on a restore.
BEFORE_RESTORE = ".before-restore"


class StoreRunning(BackupError):
    """ravend holds the state lock: a restore under it would swap the file it writes to."""


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
        fsync_file(db)
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
        if "sqlite_sequence" not in table_names(conn):
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
    fsync_dir(store.parent)
    return kept


def _give_to_owner_of(path: Path, model: Path) -> None:
    """Run as root, a file made for ravend's state belongs to the state's owner (ravend), as
    ravend would have made it: else the service could not open it."""
    if os.geteuid() != 0:
        return
    with contextlib.suppress(OSError):
        st = model.stat()
        os.chown(path, st.st_uid, st.st_gid)
