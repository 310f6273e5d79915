"""journald priorities: into the journal, each line of ravend, ravend-repeater and
ravend-mongo-ingest starts with its syslog level (``<4>`` a warning), tracebacks line by line;
anywhere else, plain timestamped lines as before.

The programs run for real, their stderr a file whose device:inode is given in JOURNAL_STREAM,
as systemd does for a unit's journal stream (systemd.exec(5)); what they wrote is parsed as
journald parses it (a ``<N>`` prefix per line, sd-daemon(3)).
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from ravend.sinks.sqlite import SqliteSink
from tests.helpers.process import ROOT
from tests.helpers.servers import free_port

#: What journald files a line at: its ``<N>`` prefix, and the level name our format then shows.
PRIORITY_OF_LEVEL = {"CRITICAL": 2, "ERROR": 3, "WARNING": 4, "INFO": 6, "DEBUG": 7}
JOURNAL_LINE = re.compile(r"<(\d)>(CRITICAL|ERROR|WARNING|INFO|DEBUG) \S")
PLAIN_LINE = re.compile(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d (CRITICAL|ERROR|WARNING|INFO|DEBUG) \S")

PROGRAMS = {"ravend": "ravend.cli.ravend", "ravend-repeater": "ravend.cli.repeater",
            "ravend-mongo-ingest": "ravend.cli.mongo_ingest"}


def journal_stream_of(path: Path) -> str:
    st = path.stat()
    return f"{st.st_dev}:{st.st_ino}"


def write_config(tmp_path: Path, log_level: str = "info") -> Path:
    """A stick that is not there (ravend warns), a broker and a MongoDB that refuse (the
    companions run and complain), all named explicitly: nothing here listens."""
    state = tmp_path / "state"
    state.mkdir(exist_ok=True)
    path = tmp_path / "ravend.conf"
    path.write_text(
        f"[service]\nstate_dir = {state}\ncontrol_socket =\nlog_level = {log_level}\n"
        f"[device]\nport = {tmp_path / 'no-stick'}\nreconnect_min = 0.1\nreconnect_max = 0.2\n"
        f"[mqtt]\nhost = 127.0.0.1\nport = {free_port()}\n"
        f"[mongo]\nuri = mongodb://127.0.0.1:{free_port()}/"
        "?serverSelectionTimeoutMS=300&connectTimeoutMS=300\n")
    return path


def run_until(program: str, config: Path, log: Path, wanted: str, journal_stream: str | None,
              timeout: float = 30) -> str:
    """Run ``program`` with stdout and stderr on ``log`` until ``wanted`` is in it, then
    SIGTERM it; returns what it wrote."""
    env = {k: v for k, v in os.environ.items() if k != "JOURNAL_STREAM"}
    env.update(PYTHONPATH=str(ROOT), PYTHONUNBUFFERED="1")
    if journal_stream is not None:
        env["JOURNAL_STREAM"] = journal_stream
    with log.open("ab") as out:
        proc = subprocess.Popen([sys.executable, "-m", PROGRAMS[program], "--config", str(config)],
                                stdout=out, stderr=out, stdin=subprocess.DEVNULL, env=env, cwd=ROOT)
    try:
        deadline = time.monotonic() + timeout
        while wanted not in log.read_text(errors="replace"):
            if proc.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"{program} did not write {wanted!r} (exit {proc.poll()}):\n"
                            f"{log.read_text(errors='replace')}")
            time.sleep(0.05)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(15) == 0, log.read_text(errors="replace")
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    return log.read_text(errors="replace")


def journal_entries(text: str) -> list[tuple[int, str, str]]:
    """(priority, level name, line) per line, as journald reads them; every line must carry a
    prefix that agrees with the level it names (a line without one would be filed at info)."""
    entries = []
    for line in text.splitlines():
        match = JOURNAL_LINE.match(line)
        assert match, f"a line without its syslog prefix: {line!r}\n--- all:\n{text}"
        priority, level = int(match[1]), match[2]
        assert priority == PRIORITY_OF_LEVEL[level], line
        entries.append((priority, level, line))
    return entries


def prepare_repeater(config: Path) -> None:
    """An empty store and a watermark past its newest row: the repeater warns once, with no
    broker needed."""
    db = config.parent / "state" / "ravend.db"
    sink = SqliteSink(db)
    sink.open()
    sink.close()
    watermark = config.parent / "state" / "repeater.watermark"
    watermark.write_text(json.dumps({"last_id": 100, "source": f"sqlite:{db}"}))


#: Per program: what to prepare, the line to wait for, and the priorities it must show.
CASES = {
    "ravend": (None, "device unavailable", {6: "ravend started", 4: "device unavailable"}),
    "ravend-repeater": (prepare_repeater, "past the newest row",
                        {6: "ravend-repeater started", 4: "past the newest row"}),
    "ravend-mongo-ingest": (None, "Connection refused",
                            {6: "ravend-mongo-ingest started", 3: "Connection refused"}),
}


@pytest.mark.parametrize("program", sorted(CASES))
def test_into_the_journal_every_line_carries_its_syslog_priority(tmp_path: Path,
                                                                 program: str) -> None:
    prepare, wanted, expected = CASES[program]
    config = write_config(tmp_path)
    if prepare:
        prepare(config)
    log = tmp_path / "stderr"
    log.touch()
    text = run_until(program, config, log, wanted, journal_stream_of(log))
    entries = journal_entries(text)
    for priority, words in expected.items():
        assert any(p == priority and words in line for p, _, line in entries), (
            f"no <{priority}> line with {words!r}:\n{text}")
    # journald adds the time itself: ours would be there twice.
    assert not any(PLAIN_LINE.search(line) for _, _, line in entries), text


@pytest.mark.parametrize("journal_stream", [None, "another"])
def test_elsewhere_lines_are_plain_and_timestamped(tmp_path: Path, journal_stream) -> None:
    # "another": JOURNAL_STREAM inherited by a process whose stderr was redirected to a file
    # (ravend started from a unit's shell with 2>log): that file is not the journal.
    config = write_config(tmp_path)
    log = tmp_path / "stderr"
    log.touch()
    if journal_stream == "another":
        journal_stream = journal_stream_of(config)
    text = run_until("ravend", config, log, "device unavailable", journal_stream)
    lines = text.splitlines()
    assert lines and all(PLAIN_LINE.match(line) for line in lines), text
    assert any(" WARNING device unavailable" in line for line in lines), text


LEVELS_AND_TRACEBACK = """
import logging, sys
from ravend.runtime.logs import setup_logging
setup_logging("debug")
log = logging.getLogger("ravend")
log.debug("a debug line")
log.info("an info line")
log.warning("a warning line")
log.error("an error line\\nwith a second line")
log.critical("a critical line")
try:
    raise RuntimeError("boom")
except RuntimeError:
    log.exception("a failure")
"""


def test_multi_line_records_and_tracebacks_carry_the_prefix_on_every_line(tmp_path: Path):
    log = tmp_path / "stderr"
    log.touch()
    env = {**os.environ, "PYTHONPATH": str(ROOT), "JOURNAL_STREAM": journal_stream_of(log)}
    with log.open("ab") as out:
        subprocess.run([sys.executable, "-c", LEVELS_AND_TRACEBACK], stdout=out, stderr=out,
                       env=env, cwd=ROOT, check=True, timeout=30)
    lines = log.read_text().splitlines()
    assert all(line[:1] == "<" for line in lines), lines
    by_text = {line[3:]: int(line[1]) for line in lines}
    assert by_text["DEBUG a debug line"] == 7
    assert by_text["INFO an info line"] == 6
    assert by_text["WARNING a warning line"] == 4
    assert by_text["ERROR an error line"] == 3
    assert by_text["with a second line"] == 3
    assert by_text["CRITICAL a critical line"] == 2
    # The traceback: the message, "Traceback ...", its frames and the exception, all at error.
    start = lines.index("<3>ERROR a failure")
    traceback = lines[start:]
    assert traceback[1] == "<3>Traceback (most recent call last):", traceback
    assert traceback[-1] == "<3>RuntimeError: boom", traceback
    assert all(line.startswith("<3>") for line in traceback), traceback
