"""The fault matrix for the parts that need only the meter and SQLite: hostile bytes on
the line, a full disk under the state directory, and a meter clock that makes no sense. Each test
ends with the reading accounting: every reading the simulator wrote complete is stored once.
"""

from __future__ import annotations

import os
import random
import sqlite3
import threading
import time
from pathlib import Path

import pytest

from ravend.protocol.model import METER_EPOCH_OFFSET
from ravend.simulator import MeterSimulator
from tests.helpers.accounting import keys, sent_keys
from tests.helpers.disk import fill
from tests.helpers.process import RavendProcess, running_ravend, stored_rows, write_config
from tests.helpers.readings import fragment
from tests.helpers.wait import wait_for


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


def garbage(rng: random.Random) -> list[bytes]:
    bomb = (b'<!DOCTYPE lolz [<!ENTITY lol "lol"><!ENTITY lol2 "&lol;&lol;&lol;&lol;">]>\r\n'
            b"<InstantaneousDemand>\r\n  <Demand>&lol2;</Demand>\r\n</InstantaneousDemand>\r\n")
    return [
        bytes(rng.getrandbits(8) for _ in range(4096)).replace(b"<", b"("),  # binary burst
        b"\x00" * 2000,  # NULs
        b"<InstantaneousDemand>\r\n  <DeviceMacId>0x00",  # truncated, then a new fragment
        b"<CurrentSummationDelivered>\r\n" + b"  <X>0x1</X>\r\n" * 80_000,  # 1 MB, never closes
        b"<PriceCluster>\r\n  <Price>0xZZZZ</Price>\r\n</PriceCluster>\r\n",  # invalid hex
        b"<FutureThing>\r\n  <Field>1</Field>\r\n</FutureThing>\r\n",  # unknown tag
        bomb,
    ]


def test_garbage_on_the_line_is_survived_and_logged_per_burst(tmp_path: Path) -> None:
    link = str(tmp_path / "stick")
    db = tmp_path / "state" / "ravend.db"
    sim = MeterSimulator("raven", link=link, seed=21, pushes=False, reply_delay=0.01).start()
    ravend = RavendProcess(write_config(tmp_path / "ravend.conf", tmp_path / "state", link),
                           tmp_path / "ravend.log")
    rng = random.Random(3)
    try:
        assert wait_for(lambda: "device opened" in ravend.log(), 20)
        time.sleep(0.5)
        baseline = rss_kib(ravend.proc.pid)
        for burst in garbage(rng):
            sim.send_readings(20, ("demand", "summation_delivered"))
            sim.write_raw(burst)
        sim.send_readings(20, ("demand",))
        assert sim.drain(30)
        want = sent_keys(sim)
        assert wait_for(lambda: set(keys(stored_rows(db))) >= want, 30), ravend.log()
        grown = rss_kib(ravend.proc.pid) - baseline
    finally:
        code, _ = ravend.stop()
        sim.stop()
    log = ravend.log()
    assert code == 0, log
    stored = keys(stored_rows(db))
    assert max(stored.values()) == 1
    assert set(stored) == want
    # One line per burst of bad input at most, never one per byte or per read.
    assert 1 <= log.count("skipped") <= len(garbage(rng)) + 2, log
    assert "Traceback" not in log
    assert grown < 20 * 1024, f"RSS grew by {grown} KiB"


def test_full_disk_is_reported_and_recovers(tmp_path: Path, small_disk: Path) -> None:
    link = str(tmp_path / "stick")
    db = small_disk / "ravend.db"
    sim = MeterSimulator("raven", link=link, seed=22, pushes=False, reply_delay=0.01).start()
    config = write_config(tmp_path / "ravend.conf", small_disk, link,
                          service={"control_socket": ""})
    with running_ravend(config, tmp_path / "ravend.log", then_stop=(sim.stop,)) as ravend:
        assert wait_for(lambda: "device opened" in ravend.log(), 20)
        sim.send_readings(200, ("demand",))
        assert sim.drain(10)
        assert wait_for(lambda: len(stored_rows(db)) >= 200, 20), ravend.log()
        filler = fill(small_disk, 65536)  # the disk completely; the meter keeps talking
        sim.send_readings(300, ("demand",))
        assert sim.drain(10)
        assert wait_for(lambda: "unavailable" in ravend.log(), 20), ravend.log()
        assert ravend.proc.poll() is None, "ravend died on a full disk"
        filler.unlink()  # space returns
        want = sent_keys(sim)
        assert wait_for(lambda: set(keys(stored_rows(db))) >= want, 30), ravend.log()
    log = ravend.log()
    assert "Traceback" not in log
    assert log.count("unavailable") <= 3, log  # reported, not once per reading
    assert max(keys(stored_rows(db)).values()) == 1


def test_full_disk_and_a_full_queue_drop_the_oldest_counted(tmp_path: Path,
                                                              small_disk: Path) -> None:
    """Disk full, so neither the store nor the outbox can be written, and more readings than
    the in-memory queue holds (queue_size = 100 entries of up to batch_size = 2 readings: the
    worker merges what waits into batches): the oldest are dropped to make room,
    counted, said once when it starts and with the total when the store is back. Accounting:
    stored + dropped = sent, each stored once, the newest kept."""
    import re

    link = str(tmp_path / "stick")
    db = small_disk / "ravend.db"
    sim = MeterSimulator("raven", link=link, seed=25, pushes=False, reply_delay=0.01).start()
    config = write_config(tmp_path / "ravend.conf", small_disk, link,
                          service={"control_socket": "", "queue_size": "100",
                                   "batch_size": "2"})
    filler = small_disk / "filler"
    with running_ravend(config, tmp_path / "ravend.log", then_stop=(sim.stop,)) as ravend:
        assert wait_for(lambda: "device opened" in ravend.log(), 20)
        sim.send_readings(100, ("demand",))
        assert sim.drain(10)
        assert wait_for(lambda: len(stored_rows(db)) >= 100, 20), ravend.log()
        # Keep the disk full: blocks SQLite frees (a rolled-back write, a reset WAL) are
        # taken again at once, so the outbox cannot be written either.
        full = threading.Event()
        done = threading.Event()

        def keep_full() -> None:
            fd = os.open(filler, os.O_WRONLY | os.O_CREAT, 0o600)
            try:
                while not done.is_set():
                    try:
                        os.write(fd, b"\0" * 4096)
                    except OSError:
                        full.set()
                        done.wait(0.005)
            finally:
                os.close(fd)

        filling = threading.Thread(target=keep_full, daemon=True)
        filling.start()
        try:
            assert full.wait(10)
            for _ in range(300):  # paced: many queue entries, whatever the pty's chunking
                sim.send_readings(2, ("demand",))
                time.sleep(0.003)
            assert sim.drain(10)
            assert wait_for(lambda: "dropping the oldest" in ravend.log(), 20), ravend.log()
            assert ravend.proc.poll() is None, "ravend died on a full disk"
        finally:
            done.set()
            filling.join(5)
        filler.unlink()
        total = re.compile(r"(\d+) oldest (?:readings were )?dropped meanwhile")

        def accounted() -> bool:
            dropped = sum(int(n) for n in total.findall(ravend.log()))
            return dropped > 0 and len(stored_rows(db)) + dropped == len(sent_keys(sim))

        assert wait_for(accounted, 30), ravend.log()
    log = ravend.log()
    assert "Traceback" not in log
    assert log.count("dropping the oldest") == 1, log
    dropped = sum(int(n) for n in total.findall(log))
    stored = keys(stored_rows(db))
    sent = sent_keys(sim)
    assert max(stored.values()) == 1
    assert set(stored) <= sent
    assert 0 < dropped == len(sent) - len(stored), (dropped, len(sent), len(stored))
    newest = max(sent, key=lambda key: key[2])
    assert newest in stored


def clock_flags(db: Path) -> dict[tuple, str | None]:
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5)
    try:
        return {(m, k, t): f for m, k, t, f in conn.execute(
            "SELECT meter_mac, kind, meter_time, clock_flag FROM readings")}
    finally:
        conn.close()


def test_meter_clock_nonsense_is_stored_once_flagged_never_a_crash(tmp_path: Path) -> None:
    """Odd meter times are stored once each, on the meter's time (an unset clock on the host's
    receive second), and `clock_flag` says where the time is meaningless: `epoch` (the meter's
    clock counts from 2000-01-01 and was reset: the wire cannot say 1970), `ahead` / `behind`
    (more than a day off the host's clock), `unset`. A meter an hour off, or stepping back a
    little (the clock_backwards quirk), keeps meaningful times: no flag. Duplicates: once."""
    link = str(tmp_path / "stick")
    db = tmp_path / "state" / "ravend.db"
    sim = MeterSimulator("emu2", link=link, seed=23, pushes=False, reply_delay=0.01,
                         start_time=int(time.time()) - 600,  # a meter whose clock is right
                         quirks=("duplicates", "clock_backwards")).start()
    ravend = RavendProcess(write_config(tmp_path / "ravend.conf", tmp_path / "state", link),
                           tmp_path / "ravend.log")
    meter, device = "0x0013500300aabbcc", "0xd8d5b90000001234"
    now = int(time.time()) - METER_EPOCH_OFFSET
    odd = {  # wire TimeStamp → (what must be stored as meter_time, its clock_flag)
        0x00000000: (METER_EPOCH_OFFSET, "epoch"),  # the meter thinks it is 2000-01-01
        0x00100000: (0x00100000 + METER_EPOCH_OFFSET, "epoch"),  # 2000-01-13: reset, running
        0x7FFFFFF0: (0x7FFFFFF0 + METER_EPOCH_OFFSET, "ahead"),  # 2068: far future
        now + 2 * 86400: (now + 2 * 86400 + METER_EPOCH_OFFSET, "ahead"),  # two days ahead
        now + 3600: (now + 3600 + METER_EPOCH_OFFSET, None),  # an hour ahead: plausible
        now - 3600: (now - 3600 + METER_EPOCH_OFFSET, None),  # an hour behind: plausible
        now - 86400 * 365: (now - 86400 * 365 + METER_EPOCH_OFFSET, "behind"),  # a year back
    }
    try:
        assert wait_for(lambda: "device opened" in ravend.log(), 20)
        sim.send_readings(100, ("demand", "summation_delivered"))
        for stamp in odd:
            sim.write_raw(fragment(meter, device, stamp, 1000) * 2)  # each one twice
        sim.write_raw(fragment(meter, device, 0xFFFFFFFF, 500))  # unset clock
        assert sim.drain(10)
        want = sent_keys(sim) | {(meter, "demand", t) for t, _ in odd.values()}
        assert wait_for(lambda: set(keys(stored_rows(db))) >= want, 20), ravend.log()
        assert wait_for(lambda: any(t is None for _, _, t, *_ in stored_rows(db)), 10)
    finally:
        code, _ = ravend.stop()
        sim.stop()
    rows = stored_rows(db)
    stored = keys(rows)
    assert code == 0
    assert "Traceback" not in ravend.log()
    assert max(stored.values()) == 1
    assert set(stored) - {k for k in stored if k[2] is None} == want
    assert next(r for r in rows if r[2] is None)[3] == 500  # host-timed, kept
    flags = clock_flags(db)
    assert flags[(meter, "demand", None)] == "unset"
    assert {t: flags[(meter, "demand", t)] for t, _ in odd.values()} == dict(odd.values())
    assert {flags[k] for k in sent_keys(sim)} == {None}  # the simulated meter's own times


def fd_count(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def demand_span(db: Path) -> tuple[int, int, int | None, int | None]:
    """COUNT, COUNT(DISTINCT), MIN and MAX of the stored demand keys (O(log n) MAX by index)."""
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5)
    try:
        return conn.execute("SELECT COUNT(*), COUNT(DISTINCT key_time), MIN(key_time),"
                            " MAX(key_time) FROM readings WHERE kind = 'demand'").fetchone()
    finally:
        conn.close()


def newest_demand(db: Path) -> int:
    if not db.exists():
        return -1
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5)
    try:
        found = conn.execute("SELECT MAX(key_time) FROM readings").fetchone()[0]
    except sqlite3.OperationalError:
        return -1  # not migrated yet
    finally:
        conn.close()
    return -1 if found is None else int(found)


#: Open fds may not grow at all between the checkpoints (bench/rows.py: fds).
FDS_GROWTH = 0
#: SQLite bytes per stored reading, indexes and roll-ups included (doc/sql.md).
BYTES_PER_READING = 150


@pytest.mark.parametrize(("marks", "rss_growth_kib"), [
    # The sink queue (up to 10,000 readings in memory) fills to a different height in each
    # flat-out segment: up to 2 MiB of noise over a short run. 5 MiB over 40,000 readings still
    # catches a leak of 130 bytes per reading.
    pytest.param((20_000, 40_000, 60_000), 5 * 1024, id="60k"),
    # The benchmark's protocol and target (bench/throughput.py, bench/rows.py: rss-growth).
    pytest.param(tuple(range(100_000, 1_000_001, 100_000)), 1024, id="1M",
                 marks=pytest.mark.slow),
])
def test_long_run_keeps_memory_and_open_files_flat(tmp_path: Path, marks: tuple[int, ...],
                                                   rss_growth_kib: int) -> None:
    """Readings flat out through the real ravend into SQLite, in segments; after each one, once
    ravend has committed the last reading, its RSS and open fds are read from /proc. Between
    the first checkpoint (queues, caches and the allocator warmed up) and the last, neither may
    grow beyond its bound (for 1M: the benchmark's targets). Roll-ups run every 2 s, and each
    checkpoint waits until they have caught up, so the maintenance thread is compared in the
    same state too. The store ends at the size doc/sql.md predicts. The 1M variant is the
    matrix's long run (`make bench` measures the same in its rss and fds rows). Accounting: the
    demand keys are the simulator's flat-out stamps start..start+n-1, so COUNT = COUNT(DISTINCT) = n
    with that MIN and MAX means each sent reading is stored exactly once."""
    link = str(tmp_path / "stick")
    db = tmp_path / "state" / "ravend.db"
    start = int(time.time()) - 12 * 86400  # 1M readings 1 s apart end about now
    sim = MeterSimulator("raven", link=link, seed=24, pushes=False, record=False,
                         start_time=start).start()
    conf = write_config(tmp_path / "ravend.conf", tmp_path / "state", link,
                        retention={"rollup_interval": "2s"})
    ravend = RavendProcess(conf, tmp_path / "ravend.log")
    checkpoints: list[tuple[int, int, int]] = []
    progress = None
    try:
        assert wait_for(lambda: "device opened" in ravend.log(), 20), ravend.log()
        from bench.processes import Store

        progress = Store(db)  # the bench's own look at roll-up progress
        sent = 0
        for mark in marks:
            sim.send_readings(mark - sent)
            assert wait_for(lambda m=mark: newest_demand(db) >= start + m - 1,
                            60 + (mark - sent) / 500, interval=0.2), ravend.log()
            sent = mark
            assert wait_for(progress.rolled_up, 60, interval=0.2), ravend.log()
            time.sleep(1.0)  # the worker goes idle, the allocator settles
            assert ravend.proc.poll() is None, ravend.log()
            checkpoints.append((mark, rss_kib(ravend.proc.pid), fd_count(ravend.proc.pid)))
    finally:
        if progress is not None:
            progress.close()
        code, _ = ravend.stop(30)
        sim.stop()
    log = ravend.log()
    assert code == 0, log
    assert "Traceback" not in log
    n = marks[-1]
    assert sim.sent_count("demand") == n
    assert demand_span(db) == (n, n, start, start + n - 1)
    (first, rss0, fds0), (last, rss1, fds1) = checkpoints[0], checkpoints[-1]
    growth = (f"from {first:,} to {last:,} readings: RSS {rss0} -> {rss1} KiB,"
              f" open fds {fds0} -> {fds1}; RSS (KiB) at each: {checkpoints}")
    assert rss1 - rss0 <= rss_growth_kib and fds1 - fds0 <= FDS_GROWTH, growth
    # The store's size as predicted (doc/sql.md: about 150 bytes per reading with its indexes).
    size = sum(p.stat().st_size for p in (db, Path(f"{db}-wal")) if p.exists())
    assert 0.75 * BYTES_PER_READING * n <= size <= 1.25 * BYTES_PER_READING * n + 2**20, \
        f"{size:,} bytes for {n:,} readings"


@pytest.mark.parametrize("n", [
    pytest.param(20_000, id="20k"),
    pytest.param(1_000_000, id="1M", marks=pytest.mark.slow),
])
def test_fuzzed_device_input_never_escapes_and_the_buffer_stays_bounded(n: int) -> None:
    """The benchmark's fuzzer (bench/fuzz.py: mutated real fragments of both devices, noise,
    DTDs, fragments that never close, fed in random chunks): no exception escapes the decoder
    and the framer never holds more than MAX_FRAGMENT_BYTES. Accounting: every input was fed."""
    from bench import fuzz
    from ravend.protocol.framer import MAX_FRAGMENT_BYTES

    result = fuzz.run(n)
    assert result.inputs == n and result.items > n  # fed, and decoded to something
    assert result.escapes == 0, result.examples
    assert 0 < result.max_buffer <= MAX_FRAGMENT_BYTES
