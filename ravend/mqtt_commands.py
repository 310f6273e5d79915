"""Meter commands over MQTT (`[mqtt] allow_commands`), through the same path as the socket.

Listens on ``<prefix>/<device mac>/cmd/<command>`` for a JSON object of arguments, runs it with
``control.run_command`` (the same validation and device session as ``ravenctl``), and publishes
the answer to ``.../cmd/<command>/result``. Commands run one at a time on a worker thread of
their own, never in paho's network thread, so a slow device reply does not stall the broker
link. A broker that is down is retried with backoff; nothing here touches the readings path.
"""

from __future__ import annotations

import contextlib
import json
import logging
import queue
import threading
from collections.abc import Callable
from typing import Any

from ravend.config import MqttConfig
from ravend.control import request_json, run_command
from ravend.device import DeviceSession
from ravend.mqtt_client import Connection, Message, MqttError, endpoint_from_config
from ravend.runtime.backoff import Backoff

log = logging.getLogger("ravend.mqtt.commands")

#: Commands waiting to run; more than this at once is someone flooding the topic.
MAX_WAITING = 32
#: Largest command payload accepted (arguments are a few small values).
MAX_PAYLOAD = 4096


#: The answer to every command while `[mqtt] allow_commands` is off.
REFUSED = ("commands over MQTT are off: set allow_commands = yes in the [mqtt] section of"
           " /etc/ravend/ravend.conf (the broker's ACLs then decide who may publish here)")


class MqttCommands:
    """``allowed`` False: listen anyway, and answer every command with REFUSED (and one log
    line per command name), so a user who tries sees why nothing happens; nothing is run."""

    def __init__(self, config: MqttConfig, session: DeviceSession, *, retry_min: float = 1.0,
                 retry_max: float = 60.0, allowed: bool = True) -> None:
        self.config = config
        self.session = session
        self.allowed = allowed
        self._refused: set[str] = set()  # command names already logged as refused
        self.retry_min = retry_min
        self.retry_max = retry_max
        self.filter = f"{config.topic_prefix}/+/cmd/+"
        self._waiting: queue.Queue[tuple[str, str, bytes] | None] = queue.Queue(MAX_WAITING)
        self._stop = threading.Event()
        self._conn: Connection | None = None
        self._threads = [threading.Thread(target=self._listen, name="mqtt-cmd", daemon=True),
                         threading.Thread(target=self._work, name="mqtt-cmd-run", daemon=True)]

    def start(self) -> None:
        for thread in self._threads:
            thread.start()

    def parts(self) -> dict[str, Callable[[], None]]:
        """The two loops, by part name, for the service's supervisor to run instead of start()."""
        return {"mqtt-commands": self._listen, "mqtt-commands-run": self._work}

    def stop(self) -> None:
        self._stop.set()
        conn = self._conn
        if conn is not None:
            conn.close()
        with contextlib.suppress(queue.Full):  # a full queue: the worker sees _stop next
            self._waiting.put_nowait(None)

    def _listen(self) -> None:
        backoff = Backoff(self.retry_min, self.retry_max)
        reported = ""
        while not self._stop.is_set():
            try:
                endpoint = endpoint_from_config(self.config, self.config.client_id + "-cmd")
                conn = Connection(endpoint, on_message=self._on_message)
                self._conn = conn
                conn.connect(10)
                conn.subscribe([(self.filter, 1)], 10)
            except (MqttError, OSError) as exc:
                if str(exc) != reported:
                    log.warning("MQTT commands: broker unavailable: %s (retrying)", exc)
                    reported = str(exc)
                self._stop.wait(backoff.next())
                continue
            log.info("MQTT commands: listening on %s", self.filter)
            reported = ""
            backoff.reset()
            why = conn.wait_lost()
            if not self._stop.is_set():
                log.warning("MQTT commands: connection lost: %s", why)
            conn.close()

    def _on_message(self, message: Any) -> None:
        """paho's network thread: only queue the work.

        A retained command is one published some time ago, delivered again at every
        subscription (each start, each reconnect): running it would close a billing period
        or set a price again and again. Only a command sent while we listen is run."""
        parts = message.topic.split("/")
        if len(parts) < 4 or parts[-2] != "cmd":
            return
        if message.retain:
            log.warning("MQTT commands: retained %s ignored (a command must not be retained;"
                        " clear it: mosquitto_pub -r -n -t %s)", message.topic[:200],
                        message.topic[:200])
            return
        try:
            self._waiting.put_nowait((parts[-3], parts[-1], bytes(message.payload)))
        except queue.Full:
            log.warning("MQTT commands: %d waiting already; %s dropped", MAX_WAITING,
                        message.topic)

    def _work(self) -> None:
        while True:
            item = self._waiting.get()
            if item is None or self._stop.is_set():
                return
            device, name, payload = item
            try:
                reply = self._run(device, name, payload)
            except Exception as exc:  # a bug must cost one answer, never this thread
                log.exception("MQTT commands: %s failed unexpectedly: %s", name[:64],
                              type(exc).__name__)
                reply = {"ok": False, "error": f"{name[:64]} failed inside ravend"
                                               f" ({type(exc).__name__}); see its log"}
            topic = f"{self.config.topic_prefix}/{device}/cmd/{name}/result"
            conn = self._conn
            try:
                if conn is None:
                    raise MqttError("not connected")
                conn.publish_all([Message(topic, json.dumps(reply).encode(), 1, False)], 10)
            except MqttError as exc:
                log.warning("MQTT commands: result of %s not delivered: %s", name, exc)

    def _run(self, device: str, name: str, payload: bytes) -> dict[str, Any]:
        if not self.allowed:
            if name not in self._refused and len(self._refused) < MAX_WAITING:
                self._refused.add(name)
                log.warning("MQTT commands: %s refused: [mqtt] allow_commands is off", name[:64])
            return {"ok": False, "error": REFUSED}
        if self.session.device_mac and device.lower() != self.session.device_mac:
            return {"ok": False, "error": f"this ravend serves {self.session.device_mac},"
                                          f" not {device}"}
        if len(payload) > MAX_PAYLOAD:
            return {"ok": False, "error": f"payload longer than {MAX_PAYLOAD} bytes"}
        try:
            args = request_json(payload.decode("utf-8")) if payload.strip() else {}
        except (UnicodeDecodeError, ValueError) as exc:
            return {"ok": False, "error": f"payload is not JSON: {exc}"}
        if not isinstance(args, dict):
            return {"ok": False, "error": "payload must be a JSON object of arguments"}
        return run_command(self.session, name, args, allow_restart=self.config.allow_restart)
