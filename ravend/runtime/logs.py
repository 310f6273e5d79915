"""Log lines on stderr, which journald files at their own priority.

Every ravend program logs through ``setup_logging``: plain timestamped lines on a terminal or
in a file; into the journal, each line prefixed with its syslog priority and without the time.

A service's stderr under systemd is a stream to journald, which stores every line at the
stream's default priority (info) unless the line starts with a syslog level prefix such as
``<4>`` (sd-daemon(3); journald reads them, SyslogLevelPrefix=yes being the default). Without
the prefix ``journalctl -p warning`` shows nothing of ours. The prefix is written only when
stderr really is the journal: systemd sets JOURNAL_STREAM to the stream's ``device:inode``
(systemd.exec(5)), and a child whose stderr was redirected elsewhere inherits the variable,
so the numbers are compared with stderr's own.
"""

from __future__ import annotations

import logging
import os
import sys
from typing import IO

#: Syslog priorities (syslog(3)) of the logging levels; levels in between take the next lower
#: (more severe) one at or below them, e.g. a custom level 35 is a warning.
SYSLOG_PRIORITY = {
    logging.CRITICAL: 2,  # LOG_CRIT
    logging.ERROR: 3,  # LOG_ERR
    logging.WARNING: 4,  # LOG_WARNING
    logging.INFO: 6,  # LOG_INFO
    logging.DEBUG: 7,  # LOG_DEBUG
}


def syslog_priority(levelno: int) -> int:
    """The syslog priority of a logging level: the one of the nearest named level not above it
    (a level above CRITICAL is critical, one below DEBUG is debug)."""
    for level in sorted(SYSLOG_PRIORITY, reverse=True):
        if levelno >= level:
            return SYSLOG_PRIORITY[level]
    return SYSLOG_PRIORITY[logging.DEBUG]


def stream_is_journal(stream: IO[str], environ: dict[str, str] | None = None) -> bool:
    """Whether ``stream`` is the journal stream systemd named in JOURNAL_STREAM."""
    value = (os.environ if environ is None else environ).get("JOURNAL_STREAM", "")
    device, _, inode = value.partition(":")
    try:
        st = os.fstat(stream.fileno())
        return (int(device), int(inode)) == (st.st_dev, st.st_ino)
    except (ValueError, OSError, AttributeError):
        # No or a malformed variable, or a stream without a file descriptor (a test's StringIO).
        return False


class JournalFormatter(logging.Formatter):
    """``<priority>`` before every line of a record, continuation lines (a traceback) too:
    journald files each line as an entry of its own, and one without the prefix at info."""

    def format(self, record: logging.LogRecord) -> str:
        prefix = f"<{syslog_priority(record.levelno)}>"
        return "\n".join(prefix + line for line in super().format(record).split("\n"))


def setup_logging(level: str) -> None:
    """Plain lines on stderr. Into the journal without the time, which journald adds, and with
    each line's syslog priority, which journald files it at."""
    handler = logging.StreamHandler(sys.stderr)
    if stream_is_journal(sys.stderr):
        handler.setFormatter(JournalFormatter("%(levelname)s %(message)s"))
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s",
                                               "%Y-%m-%d %H:%M:%S"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
