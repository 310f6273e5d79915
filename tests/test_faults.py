"""The fault matrix (issue 7) for the parts that need only the meter and SQLite: hostile bytes on
the line, a full disk under the state directory, and a meter clock that makes no sense. Each test
ends with the reading accounting: every reading the simulator wrote complete is stored once.
"""

from __future__ import annotations

import os
import random
import subprocess
import time
from collections import Counter
from pathlib import Path

import pytest

from ravend.protocol.model import METER_EPOCH_OFFSET
from ravend.simulator import MeterSimulator
from ravend_process import RavendProcess, stored_rows, wait_for, write_config


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


def keys(rows: list[tuple]) -> Counter:
    return Counter((m, k, t) for m, k, t, *_ in rows)


def sent_keys(sim: MeterSimulator) -> set[tuple]:
    return {(s.meter_mac, s.kind, s.meter_time) for s in sim.sent_readings()}


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


@pytest.fixture()
def small_disk(tmp_path: Path):
    """A 2 MB tmpfs as the state directory: a disk that fills up (needs root)."""
    mount = tmp_path / "state"
    mount.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(mount)],
                          capture_output=True, text=True)
    if done.returncode != 0:
        pytest.fail(f"cannot mount a small tmpfs for the disk-full test: {done.stderr.strip()}"
                    " (run the suite as root, as make check does)")
    yield mount
    subprocess.run(["umount", "-l", str(mount)], check=False)


def test_full_disk_is_reported_and_recovers(tmp_path: Path, small_disk: Path) -> None:
    link = str(tmp_path / "stick")
    db = small_disk / "ravend.db"
    sim = MeterSimulator("raven", link=link, seed=22, pushes=False, reply_delay=0.01).start()
    config = write_config(tmp_path / "ravend.conf", small_disk, link,
                          service={"control_socket": ""})
    ravend = RavendProcess(config, tmp_path / "ravend.log")
    filler = small_disk / "filler"
    try:
        assert wait_for(lambda: "device opened" in ravend.log(), 20)
        sim.send_readings(200, ("demand",))
        assert sim.drain(10)
        assert wait_for(lambda: len(stored_rows(db)) >= 200, 20), ravend.log()
        # Fill the disk completely, then keep the meter talking.
        fd = os.open(filler, os.O_WRONLY | os.O_CREAT, 0o600)
        try:
            while True:
                os.write(fd, b"\0" * 65536)  # unbuffered: ENOSPC comes here, not at close
        except OSError:
            pass
        finally:
            os.close(fd)
        sim.send_readings(300, ("demand",))
        assert sim.drain(10)
        assert wait_for(lambda: "unavailable" in ravend.log(), 20), ravend.log()
        assert ravend.proc.poll() is None, "ravend died on a full disk"
        filler.unlink()  # space returns
        want = sent_keys(sim)
        assert wait_for(lambda: set(keys(stored_rows(db))) >= want, 30), ravend.log()
    finally:
        code, _ = ravend.stop()
        sim.stop()
    log = ravend.log()
    assert code == 0, log
    assert "Traceback" not in log
    assert log.count("unavailable") <= 3, log  # reported, not once per reading
    assert max(keys(stored_rows(db)).values()) == 1


def fragment(meter: str, device: str, stamp: int, demand: int) -> bytes:
    return (f"<InstantaneousDemand>\r\n  <DeviceMacId>{device}</DeviceMacId>\r\n"
            f"  <MeterMacId>{meter}</MeterMacId>\r\n  <TimeStamp>0x{stamp:08x}</TimeStamp>\r\n"
            f"  <Demand>0x{demand:06x}</Demand>\r\n  <Multiplier>0x00000001</Multiplier>\r\n"
            "  <Divisor>0x000003e8</Divisor>\r\n</InstantaneousDemand>\r\n").encode()


def test_meter_clock_nonsense_is_stored_once_never_a_crash(tmp_path: Path) -> None:
    link = str(tmp_path / "stick")
    db = tmp_path / "state" / "ravend.db"
    sim = MeterSimulator("emu2", link=link, seed=23, pushes=False, reply_delay=0.01,
                         quirks=("duplicates", "clock_backwards")).start()
    ravend = RavendProcess(write_config(tmp_path / "ravend.conf", tmp_path / "state", link),
                           tmp_path / "ravend.log")
    meter, device = "0x0013500300aabbcc", "0xd8d5b90000001234"
    now = int(time.time()) - METER_EPOCH_OFFSET
    odd = {  # wire TimeStamp → what must be stored as meter_time
        0x00000000: METER_EPOCH_OFFSET,  # the meter thinks it is 2000-01-01
        0x7FFFFFF0: 0x7FFFFFF0 + METER_EPOCH_OFFSET,  # 2068: far future
        now - 3600: now - 3600 + METER_EPOCH_OFFSET,  # an hour behind
        now - 86400 * 365: now - 86400 * 365 + METER_EPOCH_OFFSET,  # a year back
    }
    try:
        assert wait_for(lambda: "device opened" in ravend.log(), 20)
        sim.send_readings(100, ("demand", "summation_delivered"))
        for stamp in odd:
            sim.write_raw(fragment(meter, device, stamp, 1000) * 2)  # each one twice
        sim.write_raw(fragment(meter, device, 0xFFFFFFFF, 500))  # unset clock
        assert sim.drain(10)
        want = sent_keys(sim) | {(meter, "demand", t) for t in odd.values()}
        assert wait_for(lambda: set(keys(stored_rows(db))) >= want, 20), ravend.log()
        assert wait_for(lambda: any(t is None for _, _, t, *_ in stored_rows(db)), 10)
    finally:
        code, _ = ravend.stop()
        sim.stop()
    rows = stored_rows(db)
    stored = keys(rows)
    assert code == 0
    assert max(stored.values()) == 1
    assert set(stored) - {k for k in stored if k[2] is None} == want
    assert next(r for r in rows if r[2] is None)[3] == 500  # host-timed, kept
    assert os.path.getsize(db) > 0
