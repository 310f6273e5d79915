"""Commands the host writes to the simulated stick, and the replies a device would give.

The reader thread hands over what the host wrote; ``<Command>`` blocks are cut out of it (they may
arrive split), recorded for the tests, and answered ``reply_delay`` seconds later by the writer
thread, which builds the reply when it is due, so a reply shows the meter state of that moment.
Commands are parsed with a small regex of their own, not ravend's encoder: the simulator stays an
independent reading of the protocol.
"""

from __future__ import annotations

import functools
import heapq
import itertools
import re
import threading
import time
from collections.abc import Callable

from ravend.simulator.fragments import Fragments, parse_hex
from ravend.simulator.meter import DEFAULT_SCHEDULE, PUSH_ORDER, Meter, Out

MAX_COMMAND = 16 * 1024  # a <Command> longer than this is garbage: drop it, as a device would

#: A reply waiting for its time: (monotonic due time, tie-breaking sequence, its builder).
Timed = tuple[float, int, Callable[[], list[Out]]]


class CommandReplies(Fragments):
    """Cuts, records and answers commands, as a part of ``MeterSimulator``."""

    meter_macs: list[str]
    reply_delay: float
    _cv: threading.Condition
    _rec_lock: threading.Lock
    _commands: list[tuple[str, dict[str, str]]]
    _timed: list[Timed]
    _seq: itertools.count[int]
    _paused_until: float

    def _cut_commands(self, buf: bytearray) -> None:
        while True:
            start = buf.find(b"<Command>")
            if start < 0:
                del buf[: max(0, len(buf) - 8)]  # keep a possible split "<Command" prefix
                return
            end = buf.find(b"</Command>", start)
            if end < 0:
                del buf[:start]
                if len(buf) > MAX_COMMAND:
                    del buf[:9]
                return
            body = bytes(buf[start + 9 : end])
            del buf[: end + 10]
            self._on_command(body)

    def _on_command(self, body: bytes) -> None:
        fields: dict[str, str] = {}
        for tag, text in re.findall(rb"<([A-Za-z_][\w.-]*)>([^<]*)</\1>", body):
            fields[tag.decode("latin-1")] = text.decode("latin-1").strip()
        name = fields.pop("Name", "")
        # Scheduled before recorded: a test that sees the command also sees the meter busy
        # until its answer is written (drain() waits for it).
        self._schedule(self.reply_delay, functools.partial(self._answer, name, dict(fields)))
        with self._rec_lock:
            self._commands.append((name, dict(fields)))

    def _schedule(self, delay: float, fn: Callable[[], list[Out]]) -> None:
        with self._cv:
            heapq.heappush(self._timed, (time.monotonic() + delay, next(self._seq), fn))
            self._cv.notify_all()

    def _meter_for(self, f: dict[str, str]) -> Meter:
        mac = f.get("MeterMacId", "").strip().lower()
        for m in self._meters:
            if m.mac == mac:
                return m
        return self._meters[0]

    def _answer(self, name: str, f: dict[str, str]) -> list[Out]:
        """The reply to one command, built when it is due (in the writer thread)."""
        m = self._meter_for(f)
        cmd = name.strip().lower()
        try:
            return self._dispatch(cmd, m, f)
        except ValueError:
            return [(self._warning("Invalid argument"), [])]

    def _dispatch(self, cmd: str, m: Meter, f: dict[str, str]) -> list[Out]:
        # A flat table of if/returns reads more plainly than a dict of lambdas here.
        if cmd == "get_device_info":
            return [(self._device_info(), [])]
        if cmd == "get_connection_status":
            return [(self._connection_status(m), [])]
        if cmd == "initialize":
            if self._p.answers_initialize:
                return [(self._connection_status(m), [])]
            return [(self._warning("Unknown command"), [])]
        if cmd == "restart":
            return self._restart(m)
        if cmd == "factory_reset":
            return []  # recorded by the reader; never acted on
        if cmd == "get_network_info":
            return [(self._network_info(m), [])]
        if cmd == "get_meter_list":
            fields: list[tuple[str, str | bytes]] = [("DeviceMacId", self.device_mac)]
            fields += [("MeterMacId", mac) for mac in self.meter_macs]
            return [(self._frag("MeterList", fields), [])]
        if cmd == "get_meter_info":
            return [(self._meter_info(m), [])]
        if cmd == "set_meter_info":
            for tag, attr in (("NickName", "nick_name"), ("Account", "account")):
                if tag in f:
                    setattr(m, attr, f[tag])
            for tag, attr in (("Auth", "auth"), ("Host", "host")):
                if tag in f:
                    setattr(m, attr, f[tag])
            if "Enabled" in f:
                m.enabled = f["Enabled"].upper() == "Y"
            return [(self._meter_info(m), [])]
        if cmd == "get_time":
            return [(self._time_cluster(m), [])]
        if cmd == "get_message":
            return [(self._message(m), [])]
        if cmd == "confirm_message":
            if parse_hex(f.get("Id") or "0x0") == m.message_id:
                m.message_confirmed = True
            return [(self._message(m), [])]
        if cmd == "get_current_price":
            return [self._price(m, flat=False, change=False)]
        if cmd == "set_current_price":
            price = parse_hex(f["Price"]) if "Price" in f else 0
            digits = parse_hex(f["TrailingDigits"]) if "TrailingDigits" in f else 0
            if not 0 <= price <= 0xFFFFFFFF or not 0 <= digits <= 9:
                raise ValueError("price out of range")
            m.price, m.trailing_digits, m.rate_label = price, digits, b"Set by User"
            return [self._price(m, flat=False, change=False)]
        if cmd == "get_instantaneous_demand":
            return [self._demand(m, flat=False)]
        if cmd == "get_current_summation_delivered":
            return [self._summation(m, flat=False)]
        if cmd == "get_current_period_usage":
            return [self._current_usage(m, flat=False)]
        if cmd == "get_last_period_usage":
            return [self._last_usage(m)]
        if cmd == "close_current_period":
            self._close_period(m, flat=False)
            return [self._current_usage(m, flat=False)]
        if cmd in ("get_schedule", "set_schedule", "set_schedule_default"):
            return self._schedule_command(cmd, m, f)
        if cmd == "set_fast_poll":
            freq = min(max(parse_hex(f.get("Frequency") or "0x04"), 1), 0xFF)
            minutes = min(max(parse_hex(f.get("Duration") or "0x00"), 0), 0x0F)
            m.fast_freq = freq
            m.fast_until = self._sim_now() + minutes * 60
            m.due["demand"] = time.monotonic() + freq / self.speed
            return [self._demand(m, flat=False)]
        if cmd == "get_profile_data":
            return [(self._profile_data(m, f), [])]
        return [(self._warning("Unknown command"), [])]

    def _schedule_command(self, cmd: str, m: Meter, f: dict[str, str]) -> list[Out]:
        event = f.get("Event", "").strip().lower()
        if event and event not in DEFAULT_SCHEDULE:
            raise ValueError(f"unknown event {event}")
        if cmd == "get_schedule":
            events = [event] if event else list(PUSH_ORDER)
            return [(self._schedule_info(m, ev), []) for ev in events]
        targets = [m] if "MeterMacId" in f else self._meters
        now = time.monotonic()
        if cmd == "set_schedule_default":
            for t in targets:
                t.schedule = {ev: [freq, True] for ev, freq in DEFAULT_SCHEDULE.items()}
            return [(self._schedule_info(m, ev), []) for ev in PUSH_ORDER]
        if not event:
            raise ValueError("set_schedule needs Event")
        for t in targets:
            freq, on = t.schedule[event]
            if "Frequency" in f:
                freq = max(parse_hex(f["Frequency"]), 1)
            if "Enabled" in f:
                on = f["Enabled"].strip().upper() == "Y"
            t.schedule[event] = [freq, on]
            t.due[event] = now + int(freq) / self.speed
        return [(self._schedule_info(m, event), [])]

    def _restart(self, m: Meter) -> list[Out]:
        """Answer as a rebooting stick does: a ConnectionStatus cycle, pushes paused meanwhile."""
        cycle = (
            "Initializing",
            "Network Discovery",
            "Joining",
            "Join: Success",
            "Authenticating",
            "Authenticating: Success",
            "Connected",
        )
        step = 0.1
        for i, status in enumerate(cycle[1:], start=1):
            frag = self._connection_status(m, status)
            self._schedule(step * i, functools.partial(_alone, frag))
        self._paused_until = time.monotonic() + step * len(cycle)
        return [(self._connection_status(m, cycle[0]), [])]


def _alone(frag: bytes) -> list[Out]:
    """One fragment with no readings behind it: a reply sent later, on a timer."""
    return [(frag, [])]
