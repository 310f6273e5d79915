"""Backups that restore: ``ravenctl backup`` and ``ravenctl restore`` as real processes.

A backup taken while ravend writes flat out holds a consistent store (every reading in it is in
the live store; integrity and counts match its manifest); a restore gives back the same
readings and roll-ups, keeps the store it replaces, migrates an older schema; rotation keeps
what it says; a corrupt, truncated or newer-schema backup is refused in one line, and so is a
restore under a running ravend.
"""

from __future__ import annotations

import datetime as dt
import gzip
import os
import signal
import sqlite3
import subprocess
import sys
import tarfile
import threading
import time
from pathlib import Path

import pytest

from ravend import backup, backup_archive
from ravend.db.migrations import migrations
from ravend.db.sqlite import readonly_uri
from ravend.doctor import check_backup
from ravend.doctor_check import Status
from ravend.simulator import MeterSimulator
from ravend.sinks.sqlite import SqliteSink
from tests.helpers.disk import small_tmpfs
from tests.helpers.process import ROOT, program_env, ravenctl, running_ravend, write_config
from tests.helpers.readings import demand
from tests.helpers.wait import wait_for

READING_KEY = ("meter_mac", "kind", "key_time", "meter_time", "raw", "multiplier", "divisor",
               "value", "unit", "device_mac")


def rows(db: Path, sql: str) -> list[tuple]:
    conn = sqlite3.connect(readonly_uri(db), uri=True, timeout=10)
    try:
        return conn.execute(sql).fetchall()
    finally:
        conn.close()


def readings(db: Path) -> set[tuple]:
    return set(rows(db, f"SELECT {', '.join(READING_KEY)} FROM readings"))


def rollups(db: Path) -> list[tuple]:
    return [*rows(db, "SELECT * FROM rollup_hourly ORDER BY meter_mac, period_start"),
            *rows(db, "SELECT * FROM rollup_daily ORDER BY meter_mac, period_start")]


def count(db: Path) -> int:
    if not db.exists():
        return 0
    try:
        return int(rows(db, "SELECT COUNT(*) FROM readings")[0][0])
    except sqlite3.OperationalError:
        return 0  # not migrated yet


def conf(tmp_path: Path, **backup_keys: str) -> Path:
    """A configuration for stores that no ravend runs on (no device is opened)."""
    path = tmp_path / "ravend.conf"
    keys = {"dir": str(tmp_path / "backups"), **backup_keys}
    path.write_text(f"[service]\nstate_dir = {tmp_path / 'state'}\ncontrol_socket =\n\n"
                    "[retention]\nraw_days = 0\n\n[backup]\n"
                    + "".join(f"{k} = {v}\n" for k, v in keys.items()))
    return path


def store_with_rollups(tmp_path: Path, n: int = 40) -> Path:
    """A store of ``n`` demands ten minutes apart and its hourly and daily roll-ups, made by the
    real ``ravenctl purge`` (which brings the roll-ups up to date)."""
    db = tmp_path / "state" / "ravend.db"
    db.parent.mkdir(parents=True, exist_ok=True)
    sink = SqliteSink(db)
    sink.open()
    sink.write([demand(i, meter_time=demand(0).key_time + 600 * i) for i in range(n)], [])
    sink.close()
    proc = ravenctl("purge", "--config", str(conf(tmp_path)), "--store", "sqlite")
    assert proc.returncode == 0, proc.stderr
    assert rollups(db), "no roll-ups made"
    return db


def take(tmp_path: Path) -> Path:
    proc = ravenctl("backup", "--config", str(conf(tmp_path)))
    assert proc.returncode == 0, proc.stderr
    assert ": verified;" in proc.stdout, proc.stdout
    (found,) = backup.backups(tmp_path / "backups")
    return found


def refused_in_one_line(proc: object) -> str:
    err = proc.stderr  # type: ignore[attr-defined]
    assert proc.returncode != 0, proc.stdout  # type: ignore[attr-defined]
    assert len(err.strip().splitlines()) == 1, err
    assert "Traceback" not in err
    return str(err)


# --- consistency under load -----------------------------------------------------------------


def test_a_backup_taken_during_flat_out_writing_is_consistent(tmp_path: Path) -> None:
    link = str(tmp_path / "stick")
    state = tmp_path / "state"
    db = state / "ravend.db"
    sim = MeterSimulator("raven", link=link, seed=20, pushes=False, record=False,
                         start_time=int(time.time()) - 86400).start()
    config = write_config(tmp_path / "ravend.conf", state, link,
                          backup={"dir": str(tmp_path / "backups")})
    taken: list[Path] = []
    done = threading.Event()

    def feed() -> None:
        """Flat out until both backups are taken: the next batch is queued before the
        simulator runs dry."""
        while not done.is_set():
            if sim.idle():
                sim.send_readings(2000, ("demand", "summation_delivered"))
            time.sleep(0.005)

    feeder = threading.Thread(target=feed, daemon=True)
    with running_ravend(config, tmp_path / "ravend.log", then_stop=(sim.stop,)) as ravend:
        assert wait_for(lambda: "device opened" in ravend.log(), 20), ravend.log()
        feeder.start()
        try:
            for to in ("a", "b"):
                floor = count(db) + 2000
                assert wait_for(lambda f=floor: count(db) > f, 60, interval=0.1), ravend.log()
                proc = ravenctl("backup", "--config", str(config), "--to", str(tmp_path / to),
                                timeout=120)
                assert proc.returncode == 0, proc.stderr
                taken.extend(backup.backups(tmp_path / to))
        finally:
            done.set()
            feeder.join()
        assert sim.drain(60)
        assert wait_for(lambda: count(db) >= sim.sent_count(), 60), ravend.log()
    live = readings(db)
    for path in taken:
        manifest = backup.verify(path)  # integrity, checksum, counts: or BackupError
        work = tmp_path / f"x-{path.parent.name}"
        work.mkdir()
        _, copy, conffile = backup.extract(path, work)
        held = readings(copy)
        assert 0 < len(held) < len(live), "not taken while ravend wrote"
        assert len(held) == manifest.total
        assert held <= live, "the backup holds a reading the store does not"
        assert rows(copy, "PRAGMA integrity_check") == [("ok",)]
        by_kind = dict(rows(copy, "SELECT kind, COUNT(*) FROM readings GROUP BY kind"))
        assert by_kind == manifest.readings
        assert manifest.schema_version == backup.latest_schema()
        assert conffile == config.read_bytes()
        with tarfile.open(path, "r:gz") as tar:
            names = tar.getnames()
        assert not any("outbox" in n for n in names), names


# --- restore --------------------------------------------------------------------------------


def test_a_restore_round_trip_gives_back_the_same_readings_and_rollups(tmp_path: Path) -> None:
    db = store_with_rollups(tmp_path)
    want_readings, want_rollups = readings(db), rollups(db)
    path = take(tmp_path)
    # The store changes after the backup: readings deleted, others added, roll-ups lost.
    conn = sqlite3.connect(db)
    conn.execute("DELETE FROM readings WHERE key_time % 1200 = 0")
    conn.execute("DELETE FROM rollup_daily")
    conn.execute("INSERT INTO readings (meter_mac, kind, key_time, meter_time, received_at,"
                 " device_mac, raw, multiplier, divisor, value, unit) SELECT meter_mac, kind,"
                 " key_time + 10, meter_time + 10, received_at, device_mac, raw, multiplier,"
                 " divisor, value, unit FROM readings")
    conn.commit()
    conn.close()
    changed = readings(db)
    highest_id = rows(db, "SELECT MAX(id) FROM readings")[0][0]
    proc = ravenctl("restore", str(path), "--config", str(conf(tmp_path)))
    assert proc.returncode == 0, proc.stderr
    assert readings(db) == want_readings
    assert rollups(db) == want_rollups
    kept = Path(f"{db}.before-restore")
    assert f"kept as {kept}" in proc.stdout
    assert readings(kept) == changed
    assert rows(db, "PRAGMA integrity_check") == [("ok",)]
    # Ids are never given twice: the next reading gets one past every id the store gave.
    sink = SqliteSink(db)
    sink.open()
    sink.write([demand(10_000)], [])
    sink.close()
    assert rows(db, "SELECT MAX(id) FROM readings")[0][0] == highest_id + 1


def test_backup_verify_and_restore_in_a_folder_named_with_uri_characters(
        tmp_path: Path) -> None:
    """'#', '?' and '%' in the paths: the copy is verified, counted and restored from the very
    files named, and no stray empty database appears beside them."""
    odd = tmp_path / "My Backups #1 ?%20"
    db = store_with_rollups(odd)
    want_readings, want_rollups = readings(db), rollups(db)
    path = take(odd)
    manifest = backup.verify(path)
    assert manifest.total == len(want_readings) == 40
    proc = ravenctl("restore", str(path), "--config", str(conf(odd)))
    assert proc.returncode == 0, proc.stderr
    assert readings(db) == want_readings
    assert rollups(db) == want_rollups
    assert sorted(p.name for p in tmp_path.iterdir()) == [odd.name]


def test_restore_refuses_while_a_reader_keeps_commits_out_of_the_file(tmp_path: Path) -> None:
    """A reader's old read transaction keeps the checkpoint from copying the last commits into
    the file: the restore is refused, nothing changed, rather than keeping a
    .before-restore copy without them."""
    db = store_with_rollups(tmp_path, n=5)
    path = take(tmp_path)
    reader = sqlite3.connect(db, isolation_level=None)
    writer = sqlite3.connect(db, isolation_level=None)
    try:
        reader.execute("BEGIN")
        reader.execute("SELECT COUNT(*) FROM readings").fetchone()  # holds its snapshot
        writer.execute("DELETE FROM readings WHERE key_time = (SELECT MIN(key_time)"
                       " FROM readings)")
        want = readings(db)
        proc = ravenctl("restore", str(path), "--config", str(conf(tmp_path)), timeout=60)
        assert "reader" in refused_in_one_line(proc)
        assert not Path(f"{db}.before-restore").exists()
        assert [p for p in db.parent.iterdir() if p.name.startswith(".ravend-")] == []
    finally:
        reader.close()
        writer.close()
    assert readings(db) == want and len(want) == 4


def old_store(db: Path, version: int) -> None:
    """A store of schema ``version`` (the migrations up to it, as an older ravend left it),
    with a few readings."""
    conn = sqlite3.connect(db, isolation_level=None)
    conn.execute("CREATE TABLE schema_version (version INTEGER PRIMARY KEY, name TEXT NOT NULL,"
                 " applied_at REAL NOT NULL)")
    for m in migrations("sqlite")[:version]:
        conn.executescript(m.sql)
        conn.execute("INSERT INTO schema_version VALUES (?, ?, 0)", (m.version, m.name))
    for i in range(5):
        r = demand(i)
        conn.execute("INSERT INTO readings (meter_mac, kind, key_time, meter_time, received_at,"
                     " device_mac, raw, multiplier, divisor, value, unit) VALUES"
                     " (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                     (r.meter_mac, r.kind.value, r.key_time, r.meter_time, r.received_at,
                      r.device_mac, r.raw, r.multiplier, r.divisor, float(r.value), r.unit))
    conn.close()


def test_a_backup_of_an_older_schema_is_migrated_on_restore(tmp_path: Path) -> None:
    old = tmp_path / "old.db"
    old_store(old, 4)
    path, manifest = backup.take(old, tmp_path / "backups", None)
    assert manifest.schema_version == 4
    proc = ravenctl("restore", str(path), "--config", str(conf(tmp_path)))
    assert proc.returncode == 0, proc.stderr
    db = tmp_path / "state" / "ravend.db"
    latest = backup.latest_schema()
    assert f"migrated to schema {latest}" in proc.stdout
    assert rows(db, "SELECT MAX(version) FROM schema_version") == [(latest,)]
    assert len(readings(db)) == 5
    assert "before-restore" not in proc.stdout  # there was no store to keep


# --- refusals -------------------------------------------------------------------------------


def repack(src: Path, dest: Path, *, db: Path | None = None, **changes: object) -> Path:
    """The backup at ``src`` written again with another database or manifest values."""
    work = dest.parent / f"unpacked-{dest.name}"
    work.mkdir()
    manifest, copy, _ = backup.extract(src, work)
    db = db or copy
    fields = {**manifest.__dict__, "db_sha256": backup_archive.sha256(db),
              "db_bytes": db.stat().st_size, **changes}
    manifest = backup.Manifest(**fields)  # type: ignore[arg-type]
    backup_archive.write_archive(dest, db, None, manifest)
    return dest


def refusals(tmp_path: Path, good: Path) -> dict[str, tuple[Path, str]]:
    """Bad backups, each with the words its refusal must contain."""
    data = good.read_bytes()
    truncated = tmp_path / "truncated.tar.gz"
    truncated.write_bytes(data[: len(data) // 2])
    flipped = tmp_path / "flipped.tar.gz"
    middle = len(data) // 2
    flipped.write_bytes(data[:middle] + bytes([data[middle] ^ 0xFF]) + data[middle + 1:])
    empty = tmp_path / "empty.tar.gz"
    empty.write_bytes(b"")
    other = tmp_path / "other.tar.gz"
    with tarfile.open(other, "w:gz") as tar:
        tar.add(tmp_path / "ravend.conf", arcname="ravend.conf")
    plain = tmp_path / "plain.tar.gz"
    plain.write_bytes(gzip.compress(b"not a tar"))
    lying = repack(good, tmp_path / "lying.tar.gz", readings={"demand": 1})
    # A database whose checksum matches the manifest but whose pages are damaged.
    work = tmp_path / "damage"
    work.mkdir()
    _, copy, _ = backup.extract(good, work)
    raw = bytearray(copy.read_bytes())
    page = 4096
    raw[2 * page: 3 * page] = b"\xa5" * page
    copy.write_bytes(bytes(raw))
    damaged = repack(good, tmp_path / "damaged.tar.gz", db=copy)
    # A backup from a ravend with a later schema.
    work = tmp_path / "newer"
    work.mkdir()
    _, copy, _ = backup.extract(good, work)
    conn = sqlite3.connect(copy)
    conn.execute("INSERT INTO schema_version VALUES (999, 'future', 0)")
    conn.commit()
    conn.close()
    newer = repack(good, tmp_path / "newer.tar.gz", db=copy, schema_version=999)
    return {
        "truncated": (truncated, "truncated or corrupt"),
        # A damaged deflate stream: gzip's CRC, or the database's checksum, whichever first.
        "flipped": (flipped, "corrupt|checksum"),
        "empty": (empty, "truncated or corrupt"),
        "not ravend's": (other, "not a ravend backup"),
        "not a tar": (plain, "truncated or corrupt"),
        "counts": (lying, "does not hold what its manifest says"),
        "damaged": (damaged, "integrity check"),
        "newer schema": (newer, "newer than this ravend's"),
        "absent": (tmp_path / "absent.tar.gz", "no such file"),
    }


def test_corrupt_truncated_and_newer_schema_backups_are_refused_in_one_line(
        tmp_path: Path) -> None:
    db = store_with_rollups(tmp_path)
    good = take(tmp_path)
    before = db.read_bytes()
    for name, (path, words) in refusals(tmp_path, good).items():
        for check in ((), ("--check",)):
            proc = ravenctl("restore", str(path), *check, "--config", str(conf(tmp_path)))
            err = refused_in_one_line(proc)
            assert any(w in err for w in words.split("|")), (name, err)
            assert str(path) in err, (name, err)
        assert db.read_bytes() == before, f"{name}: the store changed"
        assert not Path(f"{db}.before-restore").exists()
    assert ravenctl("restore", "--check", str(good), "--config",
                    str(conf(tmp_path))).returncode == 0


def test_restore_refuses_while_ravend_runs(tmp_path: Path) -> None:
    link = str(tmp_path / "stick")
    state = tmp_path / "state"
    db = state / "ravend.db"
    sim = MeterSimulator("raven", link=link, seed=4, speed=50, reply_delay=0.02).start()
    config = write_config(tmp_path / "ravend.conf", state, link,
                          backup={"dir": str(tmp_path / "backups")})
    with running_ravend(config, tmp_path / "ravend.log", then_stop=(sim.stop,)) as ravend:
        assert wait_for(lambda: count(db) >= 3, 30), ravend.log()
        proc = ravenctl("backup", "--config", str(config))
        assert proc.returncode == 0, proc.stderr
        (path,) = backup.backups(tmp_path / "backups")
        proc = ravenctl("restore", str(path), "--config", str(config))
        err = refused_in_one_line(proc)
        assert proc.returncode == 75
        assert f"pid {ravend.proc.pid}" in err and "systemctl stop ravend" in err, err
        assert not Path(f"{db}.before-restore").exists()
        assert ravend.proc.poll() is None
    proc = ravenctl("restore", str(path), "--config", str(config))  # stopped: it may
    assert proc.returncode == 0, proc.stderr


def test_backup_of_no_store_says_so(tmp_path: Path) -> None:
    proc = ravenctl("backup", "--config", str(conf(tmp_path)))
    assert proc.returncode == 2
    assert "nothing to back up" in refused_in_one_line(proc)
    assert not (tmp_path / "backups").exists() or not list((tmp_path / "backups").iterdir())


# --- killed runs -----------------------------------------------------------------------------


def test_a_backup_stopped_by_sigterm_leaves_no_copy_behind(tmp_path: Path) -> None:
    """SIGTERM in the middle of writing the archive: the work folder (a full copy of the store)
    goes with the process, and no file looks like a backup."""
    db = store_with_rollups(tmp_path, n=5)
    conn = sqlite3.connect(db, isolation_level=None)
    conn.execute("CREATE TABLE ballast (b BLOB)")  # incompressible: gzip takes its time
    conn.execute("WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 200)"
                 " INSERT INTO ballast SELECT randomblob(1 << 20) FROM n")
    conn.close()
    folder = tmp_path / "backups"
    proc = subprocess.Popen(
        [sys.executable, "-m", "ravend.cli.ravenctl", "backup", "--config", str(conf(tmp_path))],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=program_env(), cwd=ROOT)
    try:
        assert wait_for(lambda: any(folder.glob(".ravend-backup-*/*.partial")), 60,
                        interval=0.02), proc.communicate()
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 128 + signal.SIGTERM, err
    assert "Traceback" not in err
    assert list(folder.iterdir()) == []


def test_a_backup_sweeps_work_folders_that_killed_runs_left(tmp_path: Path) -> None:
    store_with_rollups(tmp_path, n=5)
    folder = tmp_path / "backups"
    folder.mkdir()
    old = time.time() - backup.STALE_SECONDS - 60
    stale = [folder / ".ravend-backup-x1y2z3", folder / ".ravend-verify-a1b2c3"]
    for work in stale:
        work.mkdir()
        (work / "ravend.db").write_bytes(b"a full copy")
        os.utime(work, (old, old))
    fresh = folder / ".ravend-backup-running"  # another run's, still at work
    fresh.mkdir()
    proc = ravenctl("backup", "--config", str(conf(tmp_path)))
    assert proc.returncode == 0, proc.stderr
    assert not any(w.exists() for w in stale)
    assert fresh.exists()
    assert len(backup.backups(folder)) == 1


@pytest.fixture()
def small_disk(tmp_path: Path):
    """A 200 KiB tmpfs (root only): a backup disk that fills up."""
    with small_tmpfs(tmp_path / "small", "200k") as disk:
        yield disk


def test_a_full_backup_disk_is_one_line_and_leaves_nothing(tmp_path: Path,
                                                          small_disk: Path) -> None:
    """The copy of the store fits, the archive beside it does not (ENOSPC): one line naming
    the folder, exit status 1, nothing left with a backup's name or a work folder's."""
    db = store_with_rollups(tmp_path, n=5)
    conn = sqlite3.connect(db, isolation_level=None)
    conn.execute("CREATE TABLE ballast (b BLOB)")  # incompressible
    conn.execute("INSERT INTO ballast VALUES (randomblob(100000))")
    conn.close()
    assert 110_000 < db.stat().st_size < 190_000, db.stat().st_size
    proc = ravenctl("backup", "--config", str(conf(tmp_path)), "--to", str(small_disk))
    err = refused_in_one_line(proc)
    assert proc.returncode == 1
    assert f"{small_disk}: cannot write the backup: No space left on device" in err, err
    assert list(small_disk.iterdir()) == []


# --- rotation -------------------------------------------------------------------------------


def stamp(text: str) -> dt.datetime:
    return dt.datetime.fromisoformat(text).replace(tzinfo=dt.UTC)


def test_rotation_keeps_the_newest_of_each_day_and_week(tmp_path: Path) -> None:
    folder = tmp_path / "backups"
    folder.mkdir()
    # 2026-11-02 is a Monday. Daily at 03:00 for five weeks, and a second copy on 12-06.
    days = [stamp("2026-11-02T03:00:00") + dt.timedelta(days=i) for i in range(35)]
    for when in [*days, stamp("2026-12-06T15:00:00")]:
        (folder / backup.backup_name(when)).write_bytes(b"")
    (folder / "notes.txt").write_text("not a backup: never touched")
    (folder / "ravend-latest.tar.gz").write_bytes(b"")
    gone = backup.rotate(folder, keep_daily=3, keep_weekly=3)
    kept = sorted(p.name for p in backup.backups(folder))
    assert kept == [
        "ravend-20261122T030000Z.tar.gz",  # Sunday of week 47
        "ravend-20261129T030000Z.tar.gz",  # Sunday of week 48
        "ravend-20261204T030000Z.tar.gz",  # the last three days
        "ravend-20261205T030000Z.tar.gz",
        "ravend-20261206T150000Z.tar.gz",  # the newest of 12-06 (and of week 49)
    ]
    assert len(gone) == 36 - 5
    assert (folder / "notes.txt").exists() and (folder / "ravend-latest.tar.gz").exists()
    # Again: nothing more goes. A month without backups deletes nothing either.
    assert backup.rotate(folder, keep_daily=3, keep_weekly=3) == []


def test_rotation_keeps_the_newest_even_with_nothing_else(tmp_path: Path) -> None:
    folder = tmp_path / "backups"
    folder.mkdir()
    for when in ("2026-12-01T01:00:00", "2026-12-01T02:00:00"):
        (folder / backup.backup_name(stamp(when))).write_bytes(b"")
    backup.rotate(folder, keep_daily=1, keep_weekly=0)
    assert [p.name for p in backup.backups(folder)] == ["ravend-20261201T020000Z.tar.gz"]


def test_rotation_never_deletes_the_backup_just_written(tmp_path: Path) -> None:
    """A backup named by a clock not yet set (1970) sorts as the oldest: it stays all the
    same, and a backup with the real time does as well."""
    folder = tmp_path / "backups"
    folder.mkdir()
    for when in ("2026-12-01T03:00:00", "2026-12-02T03:00:00"):
        (folder / backup.backup_name(stamp(when))).write_bytes(b"")
    written = folder / backup.backup_name(stamp("1970-01-01T00:00:42"))
    written.write_bytes(b"")
    gone = backup.rotate(folder, keep_daily=1, keep_weekly=0, written=written)
    assert [p.name for p in gone] == ["ravend-20261201T030000Z.tar.gz"]
    assert sorted(p.name for p in backup.backups(folder)) == [
        written.name, "ravend-20261202T030000Z.tar.gz"]


def test_ravenctl_backup_rotates_as_configured(tmp_path: Path) -> None:
    store_with_rollups(tmp_path, n=5)
    folder = tmp_path / "backups"
    folder.mkdir()
    now = dt.datetime.now(dt.UTC)
    for back in (1, 2, 3, 9):
        (folder / backup.backup_name(now - dt.timedelta(days=back))).write_bytes(b"")
    proc = ravenctl("backup", "--config", str(conf(tmp_path, keep_daily="2", keep_weekly="0")))
    assert proc.returncode == 0, proc.stderr
    assert "rotation removed" in proc.stdout
    kept = backup.backups(folder)
    assert [p.name for p in kept] == [backup.backup_name(now - dt.timedelta(days=1)),
                                      kept[-1].name]
    backup.verify(kept[-1])


# --- doctor ---------------------------------------------------------------------------------


def test_doctor_warns_without_a_verified_backup_newer_than_two_days(tmp_path: Path) -> None:
    folder = tmp_path / "backups"
    assert check_backup(folder).status is Status.WARN  # no folder at all
    folder.mkdir()
    (folder / "ravend-partial.tar.gz.partial").write_bytes(b"")
    none = check_backup(folder)
    assert none.status is Status.WARN and "no verified backup" in none.message
    now = time.time()
    old = dt.datetime.fromtimestamp(now - 3 * 86400, dt.UTC)
    (folder / backup.backup_name(old)).write_bytes(b"")
    stale = check_backup(folder, now=now)
    assert stale.status is Status.WARN and "72 h old" in stale.message, stale
    assert "ravenctl backup" in stale.fix
    fresh = dt.datetime.fromtimestamp(now - 3600, dt.UTC)
    (folder / backup.backup_name(fresh)).write_bytes(b"")
    assert check_backup(folder, now=now).status is Status.OK


@pytest.mark.parametrize("key, value, words", [
    ("dir", "backups", "an absolute path"),
    ("keep_daily", "0", "from 1 to"),
    ("keep_weekly", "-1", "from 0 to"),
])
def test_backup_keys_are_validated(tmp_path: Path, key: str, value: str, words: str) -> None:
    proc = ravenctl("backup", "--config", str(conf(tmp_path, **{key: value})))
    assert proc.returncode == 78
    assert f"[backup] {key}" in proc.stderr and words in proc.stderr, proc.stderr
