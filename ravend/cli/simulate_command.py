"""``ravenctl simulate``: run the meter simulator on a pty until Ctrl-C / SIGTERM.

The simulator takes every argument after ``simulate`` itself (ravenctl's store and config options
mean nothing to it), so ravenctl's own parser only names the command for ``--help`` and
completion; ``main`` parses the rest. ``python -m ravend.simulator`` runs the same ``main``.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import threading
import time
from collections.abc import Callable
from types import FrameType
from typing import Any

# The simulator and the model are imported by the functions that run it: ravenctl imports this
# module for every command (add_parser), and `ravenctl status` must not pay for the simulator.

#: What signal.signal() takes and gives back (typeshed's own alias is private).
SignalHandler = Callable[[int, FrameType | None], Any] | int | signal.Handlers | None

NAME = "simulate"


def add_parser(sub: Any) -> None:
    """Name ``simulate`` in ravenctl's parser; its arguments are this module's (see ``main``)."""
    sim = sub.add_parser(NAME, help="run a simulated RAVEn/EMU-2 on a pty",
                         description="Run the meter simulator; all arguments go to it"
                         " (see 'ravenctl simulate --help').", add_help=False)
    sim.add_argument("args", nargs=argparse.REMAINDER)


def build_parser() -> argparse.ArgumentParser:
    """The simulator's own parser (ravenctl hands it every argument after 'simulate')."""
    from ravend.simulator import QUIRKS

    quirk_help = "\n".join(f"  {name:17} {text}" for name, text in QUIRKS.items())
    parser = argparse.ArgumentParser(
        prog="ravenctl simulate",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description=(
            "Emulate a Rainforest RAVEn (or EMU-2) on a pseudo-terminal, so ravend can be tried\n"
            "without hardware. Prints the port to give ravend, then pushes readings on the\n"
            "device's schedule and answers commands until Ctrl-C / SIGTERM."
        ),
        epilog="quirks (--quirk, repeatable):\n"
        + quirk_help
        + "\n\nexample: ravenctl simulate --speed 10 --quirk nul_noise --quirk duplicates\n"
        "         (then give ravend the printed port)",
    )
    parser.add_argument("--emu2", action="store_true", help="behave like an EMU-2, not a RAVEn")
    parser.add_argument(
        "--link",
        default="./raven-sim",
        metavar="PATH",
        help="symlink to create to the pty; use it as ravend's port (default: %(default)s)",
    )
    parser.add_argument(
        "--speed",
        type=float,
        default=1.0,
        help="run the push schedule and meter clock this many times faster (default: 1)",
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of all values (default: 0)")
    parser.add_argument("--meters", type=int, default=1, help="number of meters (default: 1)")
    parser.add_argument(
        "--quirk",
        action="append",
        default=[],
        choices=sorted(QUIRKS),
        metavar="Q",
        help="add a device quirk (repeatable; list below)",
    )
    parser.add_argument(
        "--count",
        type=int,
        default=0,
        metavar="N",
        help="exit after N demand readings have been written",
    )
    parser.add_argument(
        "--flat-out",
        action="store_true",
        help="write demand readings as fast as the reader takes them, instead of pushing on the "
        "schedule (benchmarks)",
    )
    parser.add_argument(
        "--start-time",
        type=int,
        default=None,
        metavar="UNIX",
        help="the meter clock at start, in Unix seconds (default: now)",
    )
    parser.add_argument(
        "--reply-delay",
        type=float,
        default=0.05,
        metavar="S",
        help="seconds before answering a command (default: %(default)s)",
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    """``ravenctl simulate``: run a simulator until SIGINT/SIGTERM (or --count readings)."""
    from ravend.protocol.model import Kind
    from ravend.simulator import MeterSimulator

    args = build_parser().parse_args(argv)
    if args.speed <= 0 or args.meters < 1 or args.count < 0:
        print(
            "ravenctl simulate: --speed must be > 0, --meters >= 1, --count >= 0", file=sys.stderr
        )
        return 2
    link = os.path.abspath(args.link)
    sim = MeterSimulator(
        "emu2" if args.emu2 else "raven",
        link=link,
        seed=args.seed,
        speed=args.speed,
        meters=args.meters,
        quirks=args.quirk,
        reply_delay=args.reply_delay,
        start_time=int(time.time()) if args.start_time is None else args.start_time,
        pushes=not args.flat_out,
        record=False,
    )
    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    previous: dict[signal.Signals, SignalHandler] = {}
    if threading.current_thread() is threading.main_thread():
        for sig in (signal.SIGINT, signal.SIGTERM):
            previous[sig] = signal.signal(sig, on_signal)
    try:
        try:
            sim.start()
        except FileExistsError as exc:
            print(f"ravenctl simulate: {exc}", file=sys.stderr)
            return 2
        print(
            f"Simulated {sim.model} on {sim.slave_name}: point ravend at port {sim.port}",
            flush=True,
        )
        if args.flat_out:
            sim.send_readings(args.count or sys.maxsize, ("demand",), flat_out=True)

        while not stop.wait(0.05):
            if args.count and sim.sent_count(Kind.DEMAND.value) >= args.count:
                sim.drain(1.0)  # let a reader take the last fragment before the pty goes away
                break
    finally:
        sim.stop()
        for signum, handler in previous.items():
            signal.signal(signum, handler)
    return 0
