"""A naive RAVEn logger, written the way hobby scripts are: the throughput row's peer.

It is what ravend is measured against: what a person writes in an evening with the obvious tools.
pyserial's ``readline()`` (which reads one byte per call), lines gathered until a closing root tag
at column 0, ``xml.etree.ElementTree.fromstring`` on the fragment, and one ``INSERT`` plus
``commit()`` per reading on a default ``sqlite3`` connection (rollback journal, synchronous=FULL:
an fsync per reading). Nothing here is made slow on purpose; nothing is made clever either.

Usage: naive_logger.py PORT DB. Prints "ready" once the port and the table are open; runs until
killed.
"""

from __future__ import annotations

import sqlite3
import sys
import time
import xml.etree.ElementTree as ET

import serial

METER_EPOCH = 946_684_800


def main() -> int:
    port, db = sys.argv[1], sys.argv[2]
    ser = serial.Serial(port, 115200, timeout=1)
    conn = sqlite3.connect(db)
    conn.execute("CREATE TABLE IF NOT EXISTS readings (id INTEGER PRIMARY KEY, meter TEXT,"
                 " time INTEGER, demand_kw REAL, received_at REAL)")
    conn.commit()
    print("ready", flush=True)
    lines: list[bytes] = []
    while True:
        line = ser.readline()
        if not line:
            continue
        lines.append(line)
        if not line.startswith(b"</"):
            continue
        text, lines = b"".join(lines), []
        try:
            root = ET.fromstring(text)
        except ET.ParseError:
            continue
        if root.tag != "InstantaneousDemand":
            continue
        demand = int(root.findtext("Demand", "0"), 16)
        if demand >= 2**31:
            demand -= 2**32
        multiplier = int(root.findtext("Multiplier", "1"), 16) or 1
        divisor = int(root.findtext("Divisor", "1"), 16) or 1
        stamp = int(root.findtext("TimeStamp", "0"), 16) + METER_EPOCH
        conn.execute("INSERT INTO readings (meter, time, demand_kw, received_at)"
                     " VALUES (?, ?, ?, ?)",
                     (root.findtext("MeterMacId"), stamp, demand * multiplier / divisor,
                      time.time()))
        conn.commit()


if __name__ == "__main__":
    sys.exit(main())
