"""ravenctl's commands for the meter itself, sent through ravend's control socket.

ravend owns the tty, so these never open the port: they ask the running service, which queues
the command behind its own, matches the reply and answers in plain words. Arguments are checked
here and again in the service before anything reaches the wire.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from ravend.config import Config

EX_FAILED = 1
EX_NOT_RUNNING = 4


def _common(p: argparse.ArgumentParser, config_args: Any) -> None:
    config_args(p)
    p.add_argument("--json", action="store_true", help="print the service's answer as JSON")
    p.add_argument("--socket", type=Path, help="control socket (default: [service]"
                   " control_socket, /run/ravend/control)")


def add_parsers(sub: Any, config_args: Any) -> None:
    """Register device, price, period, schedule, fast-poll, message and refresh."""
    d = sub.add_parser("device", help="ask the stick about itself, or restart it",
                       description="'device info' shows the stick's model, firmware, MAC and"
                       " link (as last reported; --refresh asks it now); 'device restart --yes'"
                       " restarts the stick (ravend reconnects by itself).")
    dsub = d.add_subparsers(dest="action", metavar="ACTION", required=True)
    info = dsub.add_parser("info", help="model, firmware, link")
    _common(info, config_args)
    info.add_argument("--refresh", action="store_true", help="ask the stick now")
    restart = dsub.add_parser("restart", help="restart the stick (needs --yes)")
    _common(restart, config_args)
    restart.add_argument("--yes", action="store_true", help="really restart it")

    pr = sub.add_parser("price", help="set or clear the price the display shows",
                        description="Set the price per kWh the stick uses when the utility"
                        " sends none ('price set 0.1234'), or clear it ('price clear'). The"
                        " device then reports it in a PriceCluster, which ravend stores.")
    psub = pr.add_subparsers(dest="action", metavar="ACTION", required=True)
    pset = psub.add_parser("set", help="set the price per kWh")
    _common(pset, config_args)
    pset.add_argument("amount", help="price per kWh, e.g. 0.1234")
    pset.add_argument("--currency", help="ISO 4217 code (USD or 840); the device keeps its"
                      " own currency, this is checked and reported")
    pset.add_argument("--trailing-digits", type=int, metavar="N",
                      help="decimal places to send (default: as many as AMOUNT has, max 9)")
    pclear = psub.add_parser("clear", help="clear the user-set price")
    _common(pclear, config_args)

    pe = sub.add_parser("period", help="close the current billing period",
                        description="'period close' ends the stick's current billing period:"
                        " its period usage starts again from zero.")
    pesub = pe.add_subparsers(dest="action", metavar="ACTION", required=True)
    _common(pesub.add_parser("close", help="close the current billing period"), config_args)

    sc = sub.add_parser("schedule", help="show or change how often the stick pushes",
                        description="'schedule show' lists each event's push interval;"
                        " 'schedule set EVENT SECONDS|off' changes one (events: time, price,"
                        " demand, summation, message).")
    ssub = sc.add_subparsers(dest="action", metavar="ACTION", required=True)
    _common(ssub.add_parser("show", help="list the push schedule"), config_args)
    sset = ssub.add_parser("set", help="change one event's interval")
    _common(sset, config_args)
    sset.add_argument("event", choices=["time", "price", "demand", "summation", "message"])
    sset.add_argument("seconds", help="interval in seconds (1-65535), or 'off'")

    fp = sub.add_parser("fast-poll", help="demand every few seconds for a while",
                        description="Ask the meter for demand every SECONDS (1-255) for"
                        " MINUTES (0-15), e.g. while watching an appliance.")
    _common(fp, config_args)
    fp.add_argument("seconds", type=int)
    fp.add_argument("minutes", type=int)

    ms = sub.add_parser("message", help="show or confirm the utility's message",
                        description="'message show' prints the utility's current message;"
                        " 'message confirm' confirms it (when it asks for confirmation).")
    msub = ms.add_subparsers(dest="action", metavar="ACTION", required=True)
    _common(msub.add_parser("show", help="print the current message"), config_args)
    mconf = msub.add_parser("confirm", help="confirm the current message")
    _common(mconf, config_args)
    mconf.add_argument("--id", help="message id (default: the current message)")

    rf = sub.add_parser("refresh", help="ask the meter for fresh demand and summation now",
                        description="Ask the meter for fresh readings now; ravend stores them.")
    _common(rf, config_args)


NAMES = {"device", "price", "period", "schedule", "fast-poll", "message", "refresh"}


def request_of(args: argparse.Namespace) -> tuple[str, dict[str, Any]]:
    """The control-socket request for the parsed command line (SystemExit on bad input)."""
    cmd, action = args.command, getattr(args, "action", None)
    if cmd == "device" and action == "info":
        return "device_info", {"refresh": args.refresh}
    if cmd == "device":
        if not args.yes:
            raise SystemExit("ravenctl: restarting the stick needs --yes")
        return "device_restart", {"yes": True}
    if cmd == "price" and action == "set":
        return "price_set", {"amount": args.amount, "currency": args.currency,
                             "trailing_digits": args.trailing_digits}
    if cmd == "price":
        return "price_clear", {}
    if cmd == "period":
        return "period_close", {}
    if cmd == "schedule" and action == "show":
        return "schedule_show", {}
    if cmd == "schedule":
        if args.seconds == "off":
            return "schedule_set", {"event": args.event, "seconds": "off"}
        try:
            seconds = int(args.seconds)
        except ValueError:
            raise SystemExit(f"ravenctl: SECONDS must be a number or 'off', got"
                             f" {args.seconds!r}") from None
        return "schedule_set", {"event": args.event, "seconds": seconds}
    if cmd == "fast-poll":
        return "fast_poll", {"seconds": args.seconds, "minutes": args.minutes}
    if cmd == "message":
        if action == "show":
            return "message_show", {}
        return "message_confirm", {"id": args.id}
    return "refresh", {}


def run(args: argparse.Namespace, config: Config) -> int:
    from ravend.control import BadRequest, parse_currency, parse_price
    from ravend.control_client import call

    name, payload = request_of(args)
    try:  # refuse what the service would refuse, without bothering it
        if name == "price_set":
            parse_currency(payload["currency"])
            parse_price(payload["amount"], payload["trailing_digits"])
    except BadRequest as exc:
        print(f"ravenctl: {exc}", file=sys.stderr)
        return EX_FAILED
    path = args.socket or Path(config.service.control_socket or "/run/ravend/control")
    try:
        reply = call(path, name, payload)
    except FileNotFoundError:
        print(f"ravenctl: ravend is not running (no control socket at {path})", file=sys.stderr)
        return EX_NOT_RUNNING
    except ConnectionRefusedError:
        print(f"ravenctl: ravend is not running ({path} is a stale socket)", file=sys.stderr)
        return EX_NOT_RUNNING
    except PermissionError:
        print(f"ravenctl: not allowed to use {path} (run as root or join group ravend)",
              file=sys.stderr)
        return EX_FAILED
    except (OSError, ValueError) as exc:
        print(f"ravenctl: no answer from ravend on {path}: {exc}", file=sys.stderr)
        return EX_FAILED
    if args.json:
        print(json.dumps(reply, indent=2))
    elif reply.get("ok"):
        print(reply.get("answer", "done"))
    if not reply.get("ok"):
        if not args.json:
            print(f"ravenctl: {reply.get('error', 'failed')}", file=sys.stderr)
        return EX_FAILED
    return 0
