"""User commands for the meter, shared by the control socket, ravenctl and MQTT commands.

ravend is the only owner of the tty, so every command a user sends goes through the device
session: it is queued behind the session's own commands, spaced like them, and its reply matched
by root tag. ``run_command`` validates the arguments completely before anything reaches the wire
and returns a plain JSON-ready answer; ``ControlServer`` serves it on a Unix socket with one JSON
object per line each way:

    → {"command": "price_set", "args": {"amount": "0.1234"}}
    ← {"ok": true, "answer": "...plain words...", "data": {...}}
    ← {"ok": false, "error": "one line saying what is wrong"}
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import socket
import stat
import threading
import time
from collections.abc import Callable
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any

from ravend.control_client import call  # noqa: F401 - the client, importable from here too
from ravend.device import CommandFailed, DeviceSession
from ravend.protocol import model as m
from ravend.protocol.commands import SCHEDULE_EVENTS, CommandError
from ravend.protocol.readings import CURRENCY_CODES
from ravend.serialize import fragment_body
from ravend.sinks.mqtt_payload import without_secrets

log = logging.getLogger("ravend.control")

#: Longest request line accepted: commands are tiny; this bounds what a client can make us hold.
MAX_REQUEST_BYTES = 4096
#: Longest wait to send a reply to a client (a slow reader).
CLIENT_TIMEOUT = 30.0
#: A client that has not sent its whole request line within this many seconds is dropped.
REQUEST_TIMEOUT = 5.0
#: Clients served at once by default ([service] control_clients).
MAX_CLIENTS = 8
#: Largest number of digits after the decimal point the device accepts for a price.
MAX_TRAILING_DIGITS = 9
#: Longest price text looked at: a price the device can hold is a dozen characters.
MAX_PRICE_TEXT = 64
#: Characters of a refused argument repeated in the refusal: enough to recognise it.
SHOWN_CHARS = 40

ISO_BY_NAME = {name: code for code, name in CURRENCY_CODES.items()}


class BadRequest(ValueError):
    """Arguments that must not be sent; the message is the one line the user sees."""


def _shown(value: object) -> str:
    """A refused argument as the refusal repeats it: its repr, cut short."""
    text = repr(value)
    return text if len(text) <= SHOWN_CHARS else text[:SHOWN_CHARS] + "..."


def _plain(fragment: m.Fragment | None) -> dict[str, Any]:
    """A reply's fields for an answer, without the stick's secrets (as on the state topics)."""
    if fragment is None:
        return {}
    body = without_secrets(fragment_body(fragment))
    return {k: v for k, v in body.items() if v not in (None, [], ()) and k != "raw"}


def request_json(text: str) -> Any:
    """A request's JSON, or ValueError: json.loads raises RecursionError (not a ValueError) for
    input nested thousands deep, which a request line or MQTT payload can carry within its
    size cap; a bad request must cost a refusal, never the thread that reads it."""
    try:
        return json.loads(text)
    except RecursionError:
        raise ValueError("nested too deeply") from None


def parse_price(amount: object, trailing_digits: int | None = None) -> tuple[int, int]:
    """'0.1234' → (1234, 4): the integer Price and TrailingDigits the device wants.

    The exponent is bounded before anything is computed from it: Decimal('1e1000000') is cheap
    to parse but overflows (or takes seconds) once scaled or turned into an int."""
    if isinstance(amount, bool) or not isinstance(amount, (str, int, float)):
        raise BadRequest(f"price {_shown(amount)} is not a number")
    text = str(amount).strip()
    if len(text) > MAX_PRICE_TEXT:
        raise BadRequest(f"price {_shown(amount)} is not a price the device can hold")
    try:
        value = Decimal(text)
    except InvalidOperation:
        raise BadRequest(f"price {_shown(amount)} is not a number") from None
    if not value.is_finite() or value < 0:
        raise BadRequest(f"price {_shown(amount)} must be a positive amount")
    if value.adjusted() >= 10:  # 10 digits before the point: more than 0xFFFFFFFF
        raise BadRequest(f"price {_shown(amount)} is too large for the device")
    exponent = value.as_tuple().exponent
    assert isinstance(exponent, int)
    digits = max(0, -exponent)
    if trailing_digits is not None:
        if not 0 <= trailing_digits <= MAX_TRAILING_DIGITS:
            raise BadRequest(f"trailing digits must be 0 to {MAX_TRAILING_DIGITS}")
        if digits > trailing_digits:
            raise BadRequest(f"price {text} has more than {trailing_digits} decimal places")
        digits = trailing_digits
    if digits > MAX_TRAILING_DIGITS:
        raise BadRequest(f"price {text} has too many decimal places (at most"
                         f" {MAX_TRAILING_DIGITS})")
    price = int(value.scaleb(digits))
    if price >= 0xFFFFFFFF:
        raise BadRequest(f"price {text} is too large for the device")
    return price, digits


def parse_currency(code: object) -> int | None:
    if code in (None, ""):
        return None
    if not isinstance(code, (str, int)) or isinstance(code, bool):
        raise BadRequest(f"currency {_shown(code)}: use an ISO 4217 code such as USD or 840")
    text = str(code).strip().upper()[:8]
    if text.isascii() and text.isdigit() and 0 < int(text) < 1000:
        return int(text)
    if text in ISO_BY_NAME:
        return ISO_BY_NAME[text]
    raise BadRequest(f"currency {_shown(code)}: use an ISO 4217 code such as USD or 840")


def _int_arg(args: dict[str, Any], name: str, low: int, high: int) -> int:
    value = args.get(name)
    if isinstance(value, bool) or not isinstance(value, int):
        raise BadRequest(f"{name} must be a whole number, got {_shown(value)}")
    if not low <= value <= high:
        raise BadRequest(f"{name} must be from {low} to {high}, got {value}")
    return value


Handler = Callable[[DeviceSession, dict[str, Any]], dict[str, Any]]


def _device_info(session: DeviceSession, args: dict[str, Any]) -> dict[str, Any]:
    if args.get("refresh") not in (None, True, False):
        raise BadRequest(f"refresh must be true or false, got {_shown(args.get('refresh'))}")
    if args.get("refresh") or "DeviceInfo" not in session.latest:
        info = session.request("get_device_info")
        status = session.request("get_connection_status")
    else:
        info = session.latest.get("DeviceInfo")
        status = session.latest.get("ConnectionStatus")
    data: dict[str, Any] = {"device": _plain(info), "connection": _plain(status),
            "model": session.stats.model, "port": session.stats.port}
    d, c = data["device"], data["connection"]
    answer = (f"{d.get('model_id', '?')} {session.stats.model} {d.get('device_mac_id', '')}"
              f" firmware {d.get('fw_version', '?')} on {session.stats.port};"
              f" {c.get('status', 'status unknown')}, link {c.get('link_strength', '?')}%")
    return {"answer": answer, "data": data}


def _price_set(session: DeviceSession, args: dict[str, Any]) -> dict[str, Any]:
    currency = parse_currency(args.get("currency"))
    trailing = args.get("trailing_digits")
    if trailing is not None and (isinstance(trailing, bool) or not isinstance(trailing, int)):
        raise BadRequest(f"trailing digits must be a whole number, got {_shown(trailing)}")
    price, digits = parse_price(args.get("amount", ""), trailing)
    session.request("set_current_price", {"Price": price, "TrailingDigits": digits})
    reply = session.request("get_current_price")
    shown = _plain(reply)
    name = CURRENCY_CODES.get(currency, "") if currency else ""
    answer = f"price set to {Decimal(price).scaleb(-digits)} {name}".rstrip()
    if isinstance(reply, m.PriceCluster) and reply.price is not None and (
        reply.price, reply.trailing_digits) != (price, digits):
        answer += f" (but the device now reports {reply.amount})"
    return {"answer": answer, "data": {"price": price, "trailing_digits": digits,
                                       "currency": currency, "device": shown}}


def _price_clear(session: DeviceSession, args: dict[str, Any]) -> dict[str, Any]:
    session.request("set_current_price", {"Price": 0, "TrailingDigits": 0})
    return {"answer": "user-set price cleared", "data": {}}


def _period_close(session: DeviceSession, args: dict[str, Any]) -> dict[str, Any]:
    session.request("close_current_period")
    return {"answer": "billing period closed", "data": {}}


def _schedule_show(session: DeviceSession, args: dict[str, Any]) -> dict[str, Any]:
    rows = []
    for event in SCHEDULE_EVENTS:
        reply = session.request("get_schedule", {"Event": event})
        if isinstance(reply, m.ScheduleInfo):
            rows.append({"event": str(reply.event), "seconds": reply.frequency,
                         "enabled": reply.enabled})
    lines = [f"{r['event']:<10} every {r['seconds']}s" + ("" if r["enabled"] else " (off)")
             for r in rows]
    return {"answer": "\n".join(lines) or "the device reported no schedule",
            "data": {"schedule": rows}}


def _schedule_set(session: DeviceSession, args: dict[str, Any]) -> dict[str, Any]:
    event = args.get("event")
    if event not in SCHEDULE_EVENTS:
        raise BadRequest(f"event must be one of {', '.join(SCHEDULE_EVENTS)}, got"
                         f" {_shown(event)}")
    if args.get("seconds") == "off":
        session.request("set_schedule", {"Event": event, "Frequency": 1, "Enabled": False})
        return {"answer": f"{event} pushes switched off", "data": {}}
    seconds = _int_arg(args, "seconds", 1, 0xFFFF)
    session.request("set_schedule", {"Event": event, "Frequency": seconds, "Enabled": True})
    return {"answer": f"{event} pushed every {seconds}s", "data": {}}


def _fast_poll(session: DeviceSession, args: dict[str, Any]) -> dict[str, Any]:
    seconds = _int_arg(args, "seconds", 1, 0xFF)
    minutes = _int_arg(args, "minutes", 0, 0x0F)
    session.request("set_fast_poll", {"Frequency": seconds, "Duration": minutes})
    return {"answer": f"fast poll: demand every {seconds}s for {minutes} min", "data": {}}


def _message_show(session: DeviceSession, args: dict[str, Any]) -> dict[str, Any]:
    reply = session.request("get_message")
    data = _plain(reply)
    text = data.get("text") or "(no message)"
    flag = " [needs confirmation]" if data.get("confirmation_required") and not data.get(
        "confirmed") else ""
    return {"answer": f"message {data.get('id', '-')}: {text}{flag}", "data": data}


def _message_confirm(session: DeviceSession, args: dict[str, Any]) -> dict[str, Any]:
    msg_id = args.get("id")
    if msg_id is not None and (isinstance(msg_id, bool) or not isinstance(msg_id, (str, int))):
        raise BadRequest(f"id must be a hex message id, got {_shown(msg_id)}")
    if isinstance(msg_id, str) and len(msg_id) > SHOWN_CHARS:
        raise BadRequest(f"id must be a hex message id, got {_shown(msg_id)}")
    if not msg_id:
        reply = session.request("get_message")
        if not isinstance(reply, m.MessageCluster) or not reply.id:
            raise BadRequest("there is no message to confirm")
        msg_id = reply.id
    try:
        session.request("confirm_message", {"Id": str(msg_id)})
    except CommandError as exc:
        raise BadRequest(str(exc)) from None
    return {"answer": f"message {msg_id} confirmed", "data": {"id": msg_id}}


def _device_restart(session: DeviceSession, args: dict[str, Any]) -> dict[str, Any]:
    if args.get("yes") is not True:
        raise BadRequest("restarting the stick needs confirmation (--yes)")
    session.request("restart")
    return {"answer": "the stick is restarting; ravend reconnects by itself", "data": {}}


def _refresh(session: DeviceSession, args: dict[str, Any]) -> dict[str, Any]:
    demand = session.request("get_instantaneous_demand", {"Refresh": True})
    session.request("get_current_summation_delivered", {"Refresh": True})
    kw = demand.kw if isinstance(demand, m.InstantaneousDemand) else None
    return {"answer": f"readings refreshed (demand {kw} kW)", "data": {"demand_kw": str(kw)}}


COMMANDS: dict[str, Handler] = {
    "device_info": _device_info,
    "price_set": _price_set,
    "price_clear": _price_clear,
    "period_close": _period_close,
    "schedule_show": _schedule_show,
    "schedule_set": _schedule_set,
    "fast_poll": _fast_poll,
    "message_show": _message_show,
    "message_confirm": _message_confirm,
    "device_restart": _device_restart,
    "refresh": _refresh,
}


#: The arguments each command takes; any other name is refused (a typo must not pass unseen).
ARGUMENTS: dict[str, frozenset[str]] = {
    "device_info": frozenset({"refresh"}),
    "price_set": frozenset({"amount", "currency", "trailing_digits"}),
    "schedule_set": frozenset({"event", "seconds"}),
    "fast_poll": frozenset({"seconds", "minutes"}),
    "message_confirm": frozenset({"id"}),
    "device_restart": frozenset({"yes"}),
}


def _check_names(name: str, args: dict[str, Any]) -> None:
    known = ARGUMENTS.get(name, frozenset())
    stray = sorted((_shown(k) for k in args if k not in known), key=len)
    if stray:
        takes = f"it takes {', '.join(sorted(known))}" if known else "it takes none"
        raise BadRequest(f"{name}: unknown argument {stray[0]} ({takes})")


def run_command(session: DeviceSession, name: str, args: dict[str, Any] | None,
                *, allow_restart: bool = True) -> dict[str, Any]:
    """Validate and run one user command; never raises for user or device trouble."""
    handler = COMMANDS.get(name)
    if handler is None:
        return {"ok": False, "error": f"unknown command {_shown(name)}"
                                      f" (known: {', '.join(COMMANDS)})"}
    if name == "device_restart" and not allow_restart:
        return {"ok": False, "error": "restart is not allowed here (allow_restart = false)"}
    if args is not None and not isinstance(args, dict):
        return {"ok": False, "error": "args must be a JSON object"}
    try:
        _check_names(name, args or {})
        result = handler(session, dict(args or {}))
    except (BadRequest, CommandError) as exc:
        return {"ok": False, "error": str(exc)}
    except CommandFailed as exc:
        return {"ok": False, "error": str(exc)}
    except Exception as exc:  # a bug must cost one answer, never the thread serving commands
        log.exception("command %s failed unexpectedly: %s", name, type(exc).__name__)
        return {"ok": False, "error": f"{name} failed inside ravend ({type(exc).__name__});"
                                      " see its log"}
    log.info("command %s: %s", name, result["answer"].splitlines()[0])
    return {"ok": True, **result}


class ControlServer:
    """The Unix socket: one accept loop (a supervised part: ``serve``), and a short-lived
    thread per client, at most ``max_clients`` at once. A client over the cap gets one line
    saying so and is closed, with no thread of its own; a client that has not sent its request
    line within ``request_timeout`` seconds is dropped, so silent clients cannot hold the slots.
    ``health`` (a callable returning a JSON-ready dict) answers the ``health`` command."""

    def __init__(self, path: Path, session: DeviceSession, *, mode: int = 0o660,
                 max_clients: int = MAX_CLIENTS, request_timeout: float = REQUEST_TIMEOUT,
                 health: Callable[[], dict[str, Any]] | None = None) -> None:
        self.path = path
        self.session = session
        self.mode = mode
        self.max_clients = max_clients
        self.request_timeout = request_timeout
        self.health = health
        self._sock: socket.socket | None = None
        self._thread: threading.Thread | None = None
        self._slots = threading.BoundedSemaphore(max_clients)
        self.refused = 0  # clients turned away at the cap
        self.error = ""  # why bind() failed, for the supervisor's health

    def bind(self) -> bool:
        """Listen on the socket; False (logged) when it cannot be had."""
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._remove_stale()
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            sock.bind(str(self.path))
            os.chmod(self.path, self.mode)
            sock.listen(max(8, self.max_clients))
        except OSError as exc:
            self.error = str(exc)
            log.warning("control socket %s not available (%s); ravenctl device commands will"
                        " not work", self.path, exc)
            return False
        self._sock = sock
        log.info("control socket on %s", self.path)
        return True

    def start(self) -> None:
        """Bind and accept in a thread of its own (without a supervisor)."""
        if self.bind():
            self._thread = threading.Thread(target=self.serve, name="control", daemon=True)
            self._thread.start()

    def _remove_stale(self) -> None:
        """A socket file left by a killed ravend: nobody answers on it, so it can go."""
        try:
            st = os.lstat(self.path)
        except FileNotFoundError:
            return
        if not stat.S_ISSOCK(st.st_mode):
            raise OSError(f"{self.path} exists and is not a socket")
        probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            probe.connect(str(self.path))
        except OSError:
            os.unlink(self.path)
        else:
            raise OSError(f"another ravend is answering on {self.path}")
        finally:
            probe.close()

    def stop(self) -> None:
        sock, self._sock = self._sock, None
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()
            with contextlib.suppress(OSError):
                os.unlink(self.path)

    def serve(self) -> None:
        """The accept loop; returns when stopped. An accept that fails otherwise (out of
        descriptors...) raises, for the supervisor to log and restart it."""
        while True:
            sock = self._sock
            if sock is None:
                return
            try:
                client, _ = sock.accept()
            except OSError:
                if self._sock is None:
                    return  # stop() closed it
                raise
            if not self._slots.acquire(blocking=False):
                self._refuse(client)
                continue
            try:
                threading.Thread(target=self._serve_and_release, args=(client,),
                                 name="control-client", daemon=True).start()
            except BaseException:
                self._slots.release()
                client.close()
                raise

    def _refuse(self, client: socket.socket) -> None:
        self.refused += 1
        if self.refused == 1 or self.refused % 1000 == 0:
            log.warning("control socket: %d clients already connected; refusing more (%d"
                        " refused so far)", self.max_clients, self.refused)
        with client, contextlib.suppress(OSError):
            client.setblocking(False)  # one line into the socket buffer; never wait on it
            client.send(json.dumps({"ok": False, "error": f"ravend is busy: {self.max_clients}"
                                    " clients already connected; try again"}).encode() + b"\n")

    def _serve_and_release(self, client: socket.socket) -> None:
        try:
            self._serve(client)
        finally:
            self._slots.release()

    def _serve(self, client: socket.socket) -> None:
        with client:
            try:
                line = _read_line(client, self.request_timeout)
                request = request_json(line)
                if not isinstance(request, dict) or not isinstance(request.get("command"), str):
                    raise ValueError("expected {\"command\": NAME, \"args\": {...}}")
                if request["command"] == "health" and self.health is not None:
                    reply = {"ok": True, "answer": "health", "data": self.health()}
                else:
                    reply = run_command(self.session, request["command"], request.get("args"))
            except (ValueError, UnicodeDecodeError) as exc:
                reply = {"ok": False, "error": f"bad request: {exc}"}
            except OSError:
                return  # timed out (silent client) or hung up
            client.settimeout(CLIENT_TIMEOUT)
            with contextlib.suppress(OSError):
                client.sendall(json.dumps(reply).encode() + b"\n")


def _read_line(sock: socket.socket, timeout: float = CLIENT_TIMEOUT) -> str:
    """The request line, which must arrive whole within ``timeout`` (TimeoutError if not)."""
    deadline = time.monotonic() + timeout
    data = bytearray()
    while b"\n" not in data:
        left = deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError(f"no request within {timeout:g}s")
        sock.settimeout(left)
        chunk = sock.recv(1024)
        if not chunk:
            break
        data += chunk
        if len(data) > MAX_REQUEST_BYTES:
            raise ValueError(f"request longer than {MAX_REQUEST_BYTES} bytes")
    return data.split(b"\n", 1)[0].decode("utf-8")
