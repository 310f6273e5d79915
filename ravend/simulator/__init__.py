"""A RAVEn / EMU-2 meter stick emulated on a pseudo-terminal, for tests, benchmarks and demos.

ravend has to be exercised without hardware, and a test that compares what ravend stored with what
the "meter" said is only honest if the meter side is an independent generator. So this package
never imports ravend's framer or decoder: it formats the XML fragments itself, byte for byte the
way the devices do (RAVEn: two-space indent and CRLF; EMU-2: four spaces and LF), and keeps a
thread-safe record of every reading whose last byte reached the wire and of every command the host
wrote.

Values come from ``random.Random(seed)`` alone: the same seed and the same sequence of calls give
the same bytes (push timing, and so the interleaving of pushes, follows the real clock).

Layout, one job a module: ``stick`` (``MeterSimulator``: the public API and the writer thread),
``port`` (pty, symlink, unplug and replug), ``replies`` (commands in, replies out), ``fragments``
(the XML text of each fragment) and ``meter`` (meter state, quirks and clocks). The command line,
``ravenctl simulate``, is ravend.cli.simulate_command.
"""

from ravend.simulator.meter import PERSONALITIES, QUIRKS, SentReading
from ravend.simulator.stick import MeterSimulator

__all__ = ["PERSONALITIES", "QUIRKS", "MeterSimulator", "SentReading"]
