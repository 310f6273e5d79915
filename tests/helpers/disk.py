"""A small tmpfs as a disk that fills up (root only, as make check runs)."""

from __future__ import annotations

import contextlib
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest


@contextlib.contextmanager
def small_tmpfs(where: Path, size: str) -> Iterator[Path]:
    """Mount a tmpfs of SIZE (mount(8)'s size=, e.g. 16m) on WHERE, made here, for the block.

    A machine where it cannot be mounted fails the test with the reason: a disk-full test
    that cannot fill a disk must not pass by skipping.
    """
    where.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(where)],
                          capture_output=True, text=True)
    if done.returncode != 0:
        pytest.fail(f"cannot mount a {size} tmpfs for a disk-full test: {done.stderr.strip()}"
                    " (run the suite as root, as make check does)")
    try:
        yield where
    finally:
        subprocess.run(["umount", "-l", str(where)], check=False)


def fill(disk: Path, block: int = 4096) -> Path:
    """Write zeros to ``disk/filler`` until the disk is full; the file (unlink it: space returns).

    The writes are unbuffered, so ENOSPC comes from a write here, not at close."""
    filler = disk / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        while True:
            os.write(fd, b"\0" * block)
    except OSError:
        return filler
    finally:
        os.close(fd)
