"""One MQTT connection that behaves the same on paho-mqtt 1.6 (Debian 12) and 2.x (PyPI).

What differs between the two and is hidden here: the Client constructor (2.x wants a callback API
version first), the callback signatures (on_connect, on_disconnect, on_publish, on_subscribe),
reason codes (ints on 1.6, ``ReasonCode`` objects with MQTT 5 numbering on 2.x) and how the
connect timeout is set.

``Connection`` is one network connection and nothing more: it never reconnects by itself. paho's
own reconnect would resend whatever it still holds in memory, and for ravend the durable store
(the sink's outbox, the repeater's watermark) must be the only thing that decides what is sent
again. So a caller that sees ``MqttError`` closes the connection, makes a new one when it wants
to retry, and publishes again from its own records. Used by the MQTT sink, ``ravend-repeater``,
and meant for the Mongo ingest service and MQTT commands (``subscribe`` and ``on_message``).
"""

from __future__ import annotations

import contextlib
import logging
import socket
import ssl
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import paho.mqtt as paho_package
import paho.mqtt.client as paho

from ravend.config import MqttConfig
from ravend.config_secrets import read_secret

#: True on paho-mqtt 2.x (it has the callback API versions).
PAHO_2 = hasattr(paho, "CallbackAPIVersion")
PAHO_VERSION: str = getattr(paho_package, "__version__", "?")
#: True when a received QoS 1 message's PUBACK can be held back until ``Connection.ack``: paho
#: 2.x has ``manual_ack``; on paho 1.6, ``_ManualAckClient`` below does the same.
MANUAL_ACK = PAHO_2 or hasattr(paho.Client, "_send_puback")

#: Messages in flight (published, not yet acknowledged) per connection. paho's default of 20
#: caps a QoS 1 stream at 20 messages per round trip; a batch is bounded by its caller anyway.
MAX_INFLIGHT = 1000
#: paho's network thread waits in select() for the socket or for a publish from another thread
#: (paho wakes it through a socket pair), but gives up after 1 s to run its keepalive timer: one
#: wake-up a second on an idle connection. It waits up to a quarter of the keepalive here (15 s
#: at the default 60 s; MQTT allows 1.5 keepalives between packets), never less than 1 s.
LOOP_TIMEOUT_KEEPALIVE_SHARE = 0.25


class MqttError(Exception):
    """The broker could not be reached, refused us, or the connection failed or timed out."""


@dataclass(frozen=True)
class Endpoint:
    """Where and how to connect: everything but what is published."""

    host: str = "localhost"
    port: int = 1883
    client_id: str = ""
    keepalive: int = 60
    username: str = ""
    password: str | None = None
    tls: bool = False
    ca_file: str = ""  # empty: the system's CA certificates
    cert_file: str = ""
    key_file: str = ""
    tls_insecure: bool = False  # True: do not check that the certificate names the host

    def __str__(self) -> str:
        scheme = "mqtts" if self.tls else "mqtt"
        return f"{scheme}://{self.host}:{self.port}"


@dataclass(frozen=True, slots=True)
class Message:
    topic: str
    payload: bytes
    qos: int = 1
    retain: bool = False


def default_client_id(prefix: str = "ravend") -> str:
    """``ravend-<hostname>``: stable across restarts, so a persistent session is found again."""
    host = socket.gethostname().split(".")[0] or "localhost"
    return f"{prefix}-{host}"


def expand_client_id(template: str) -> str:
    """Replace ``%h`` by the short host name (``ravend-%h`` → ``ravend-pi``)."""
    return template.replace("%h", socket.gethostname().split(".")[0] or "localhost")


def tls_context(endpoint: Endpoint) -> ssl.SSLContext:
    """Certificate chain always verified; the host name too unless tls_insecure."""
    try:
        context = ssl.create_default_context(cafile=endpoint.ca_file or None)
        if endpoint.cert_file:
            context.load_cert_chain(endpoint.cert_file, endpoint.key_file or None)
    except (OSError, ssl.SSLError) as exc:
        raise MqttError(f"cannot load TLS files: {exc}") from exc
    context.check_hostname = not endpoint.tls_insecure
    return context


# --- paho 1.6 / 2.x differences ----------------------------------------------------------------


def new_client(client_id: str, *, clean_session: bool = True,
               manual_ack: bool = False) -> paho.Client:
    """A paho Client for MQTT 3.1.1 that never reconnects on its own."""
    kwargs: dict[str, Any] = {"client_id": client_id, "clean_session": clean_session,
                              "protocol": paho.MQTTv311, "reconnect_on_failure": False}
    if PAHO_2:
        # paho 2.x's client module imports the enum without re-exporting it (no __all__);
        # paho 1.6 has none, so it is looked up here, behind PAHO_2, and nowhere else.
        version = paho.CallbackAPIVersion.VERSION2  # type: ignore[attr-defined]
        return _Client(version, manual_ack=manual_ack, **kwargs)
    if manual_ack:
        if not MANUAL_ACK:
            raise ValueError(f"paho-mqtt {PAHO_VERSION} cannot acknowledge messages manually")
        return _ManualAckClient(**kwargs)
    return _Client(**kwargs)


class _Client(paho.Client):
    """paho's Client whose network thread (``loop_start``) blocks in select() for up to
    ``loop_timeout`` instead of 1 s (see LOOP_TIMEOUT_KEEPALIVE_SHARE). Nothing waits for the
    timeout but the keepalive timer: a publish from another thread wakes the thread at once
    (paho's socket pair), and ``Connection.close`` and ``abort`` always end it through the
    socket (DISCONNECT, shutdown) before ``loop_stop`` joins it."""

    loop_timeout = 1.0
    #: Called (network thread) with the reason when the loop ends on an exception.
    on_loop_error: Callable[[str], None] | None = None

    def loop_forever(self, timeout: float = 1.0, *args: Any, **kwargs: Any) -> Any:
        try:
            return super().loop_forever(max(timeout, self.loop_timeout), *args, **kwargs)
        except (ssl.SSLError, OSError) as exc:
            # paho 1.6 lets a TLS alert that comes after the handshake out of its network
            # thread (TLS 1.3: a broker refusing the client's certificate): a lost connection
            # with its reason, not a traceback.
            if self.on_loop_error is not None:
                self.on_loop_error(str(exc) or type(exc).__name__)
            return paho.MQTT_ERR_CONN_LOST


class _ErrorNote:
    """Stands in for paho's logger (``enable_logger`` takes anything with ``log``) to keep its
    last error line: paho 2.x reports a socket or TLS failure to on_disconnect only as
    "Unspecified error", and logs the reason (e.g. the broker requiring a client certificate)."""

    def __init__(self) -> None:
        self.last = ""

    def log(self, level: int, fmt: str, *args: Any) -> None:
        if level >= logging.ERROR:
            self.last = fmt % args if args else fmt

    def take(self) -> str:
        last, self.last = self.last, ""
        return last


class _ManualAckClient(_Client):
    """paho 1.6 with paho 2.x's ``manual_ack``: 1.6 sends a QoS 1 message's PUBACK as soon as
    on_message returns, from ``_handle_publish``, its only call of ``_send_puback``; here that
    call does nothing and ``ack`` sends the PUBACK when the application has kept the message."""

    # Used on paho 1.6 only, whose methods return a plain int; mypy checks against 2.x's
    # stubs, where they return MQTTErrorCode.
    def _send_puback(self, mid: int) -> int:  # type: ignore[override]
        return int(paho.MQTT_ERR_SUCCESS)

    def ack(self, mid: int, qos: int) -> int:  # type: ignore[override]
        if qos == 1:
            return int(paho.Client._send_puback(self, mid))
        return int(paho.MQTT_ERR_SUCCESS)


def _tcp_socket(client: paho.Client) -> socket.socket | None:
    """paho's socket, as what it is on the TCP transport used here (a socket, or an SSL socket,
    which is one): paho declares only its minimal SocketLike protocol, without setsockopt or
    shutdown. None when not connected."""
    sock = client.socket()
    return sock if isinstance(sock, socket.socket) else None


def _tls_hint(endpoint: Endpoint, exc: BaseException | None) -> str:
    """Why a TLS broker may hang up before its CONNACK. With TLS 1.3 the client's side of the
    handshake ends before the broker has checked the client's certificate, so a broker that
    requires one closes the connection, and the client sees an alert, an EOF, or just a lost
    connection. ``exc`` is what connect() raised, None for a connection lost after it."""
    closed = exc is None or isinstance(exc, (ssl.SSLEOFError, ConnectionResetError,
                                             BrokenPipeError))
    if endpoint.tls and not endpoint.cert_file and closed:
        return (" (the broker closed the TLS connection before its CONNACK: if it requires a"
                " client certificate, set [mqtt] cert_file and key_file)")
    return ""


def set_connect_timeout(client: paho.Client, seconds: float) -> None:
    if isinstance(getattr(type(client), "connect_timeout", None), property):
        client.connect_timeout = seconds  # 2.x
    else:
        client._connect_timeout = seconds  # 1.6 has the attribute but no setter


def _reason(code: Any) -> tuple[bool, str]:
    """(failed, text) of a CONNACK, SUBACK or DISCONNECT reason on either version."""
    if hasattr(code, "is_failure"):  # 2.x ReasonCode
        return bool(code.is_failure), str(code)
    value = int(code)
    return value != 0, paho.connack_string(value) if value else "success"


def bind_callbacks(
    client: paho.Client,
    *,
    on_connect: Callable[[bool, str, bool], None] | None = None,
    on_disconnect: Callable[[str], None] | None = None,
    on_publish: Callable[[int], None] | None = None,
    on_subscribe: Callable[[int, list[int]], None] | None = None,
    on_message: Callable[[paho.MQTTMessage], None] | None = None,
) -> None:
    """Attach callbacks with one signature for both paho versions.

    on_connect(ok, reason, session_present); on_disconnect(reason); on_publish(mid);
    on_subscribe(mid, granted QoS per topic, 128 = refused); on_message(message).
    """
    if on_connect is not None:
        if PAHO_2:
            def connect2(c: Any, u: Any, flags: Any, rc: Any, props: Any = None) -> None:
                failed, text = _reason(rc)
                on_connect(not failed, text, bool(getattr(flags, "session_present", False)))
            client.on_connect = connect2
        else:
            def connect1(c: Any, u: Any, flags: dict[str, Any], rc: int) -> None:
                failed, text = _reason(rc)
                on_connect(not failed, text, bool(flags.get("session present", 0)))
            client.on_connect = connect1
    if on_disconnect is not None:
        if PAHO_2:
            def disconnect2(c: Any, u: Any, flags: Any, rc: Any, props: Any = None) -> None:
                on_disconnect(str(rc))
            client.on_disconnect = disconnect2
        else:
            def disconnect1(c: Any, u: Any, rc: int) -> None:
                on_disconnect(paho.error_string(rc) if rc else "disconnected")
            client.on_disconnect = disconnect1
    if on_publish is not None:
        if PAHO_2:
            def publish2(c: Any, u: Any, mid: int, rc: Any = None, props: Any = None) -> None:
                on_publish(mid)
            client.on_publish = publish2
        else:
            def publish1(c: Any, u: Any, mid: int) -> None:
                on_publish(mid)
            client.on_publish = publish1
    if on_subscribe is not None:
        if PAHO_2:
            def subscribe2(c: Any, u: Any, mid: int, codes: Any, props: Any = None) -> None:
                on_subscribe(mid, [128 if _reason(x)[0] else int(x.value) for x in codes])
            client.on_subscribe = subscribe2
        else:
            def subscribe1(c: Any, u: Any, mid: int, granted: Sequence[int]) -> None:
                on_subscribe(mid, [int(g) for g in granted])
            client.on_subscribe = subscribe1
    if on_message is not None:
        client.on_message = lambda c, u, msg: on_message(msg)


# --- one connection ----------------------------------------------------------------------------


class Connection:
    """One connection to the broker, with paho's network thread; see the module docstring.

    Thread-safe for one publisher thread plus paho's network thread. ``on_message`` runs in the
    network thread.
    """

    def __init__(self, endpoint: Endpoint, *, will: Message | None = None,
                 clean_session: bool = True,
                 on_message: Callable[[paho.MQTTMessage], None] | None = None,
                 manual_ack: bool = False,
                 on_lost: Callable[[str], None] | None = None) -> None:
        self.endpoint = endpoint
        # Called (network thread) when the broker connection ends, for a caller that blocks
        # on something else than this connection and must not poll ``connected``.
        self._on_lost = on_lost
        self._client = new_client(endpoint.client_id, clean_session=clean_session,
                                  manual_ack=manual_ack)
        self._cond = threading.Condition()
        self._connected = False
        self._lost: str | None = None  # why the connection ended, once it has
        self._acked: set[int] = set()  # acknowledged mids nobody has waited for yet
        self._awaiting: set[int] = set()  # mids publish_all waits for: wake it on the last
        self._subacks: dict[int, list[int]] = {}
        self.session_present = False
        bind_callbacks(self._client, on_connect=self._on_connect,
                       on_disconnect=self._on_disconnect, on_publish=self._on_publish,
                       on_subscribe=self._on_subscribe, on_message=on_message)
        self._client.max_inflight_messages_set(MAX_INFLIGHT)
        if isinstance(self._client, _Client):
            self._client.loop_timeout = max(1.0, endpoint.keepalive
                                            * LOOP_TIMEOUT_KEEPALIVE_SHARE)
            self._client.on_loop_error = self._on_disconnect
        self._errors = _ErrorNote()
        # paho calls only .log() on its logger: the stand-in is duck-typed, not a Logger.
        self._client.enable_logger(self._errors)  # type: ignore[arg-type]
        if endpoint.username:
            self._client.username_pw_set(endpoint.username, endpoint.password)
        if will is not None:
            self._client.will_set(will.topic, will.payload, will.qos, will.retain)
        if endpoint.tls:
            self._client.tls_set_context(tls_context(endpoint))

    def __repr__(self) -> str:
        state = "up" if self.connected else f"down ({self._lost or 'not connected'})"
        return f"<Connection {self.endpoint} {self.endpoint.client_id} {state}>"

    @property
    def connected(self) -> bool:
        return self._connected and self._lost is None

    # callbacks (network thread)
    def _on_connect(self, ok: bool, reason: str, session_present: bool) -> None:
        with self._cond:
            if ok:
                self._connected = True
                self.session_present = session_present
            else:
                self._lost = f"refused by the broker: {reason}"
            self._cond.notify_all()

    def _on_disconnect(self, reason: str) -> None:
        noted = self._errors.take()
        if noted and noted not in reason:
            reason = f"{reason}: {noted}"
        with self._cond:
            if self._lost is None:
                self._lost = f"connection lost ({reason})"
            self._cond.notify_all()
            lost = self._lost
        if self._on_lost is not None:
            self._on_lost(lost)

    def _on_publish(self, mid: int) -> None:
        with self._cond:
            if mid in self._awaiting:
                self._awaiting.discard(mid)
                if not self._awaiting:
                    self._cond.notify_all()  # one wake-up per batch, not one per message
            else:
                self._acked.add(mid)  # acknowledged before publish_all started to wait

    def _on_subscribe(self, mid: int, granted: list[int]) -> None:
        with self._cond:
            self._subacks[mid] = granted
            self._cond.notify_all()

    # caller side
    def connect(self, timeout: float) -> None:
        """Connect and wait for the broker's CONNACK; MqttError says why it failed."""
        ep = self.endpoint
        set_connect_timeout(self._client, timeout)
        try:
            self._client.connect(ep.host, ep.port, ep.keepalive)
        except ssl.SSLCertVerificationError as exc:
            raise MqttError(f"{ep}: TLS certificate not accepted: {exc.verify_message}") from exc
        except (OSError, ValueError) as exc:  # refused, unreachable, DNS, TLS, timeout
            raise MqttError(f"{ep}: {exc or type(exc).__name__}{_tls_hint(ep, exc)}") from exc
        sock = _tcp_socket(self._client)
        if sock is not None:
            with contextlib.suppress(OSError):
                # Small packets (one reading, a PUBACK) go out at once, not after a delayed ACK.
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._client.loop_start()
        deadline = time.monotonic() + timeout
        with self._cond:
            while not self._connected and self._lost is None:
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                self._cond.wait(left)
            failure = self._lost if not self._connected else None
        if failure or not self._connected:
            self.close(clean=False)
            if failure and failure.startswith("connection lost"):
                failure += _tls_hint(ep, None)
            raise MqttError(f"{ep}: {failure or f'no CONNACK within {timeout:g} s'}")

    def _publish(self, message: Message) -> int:
        """Hand one message to paho; returns its mid (acknowledged when ``acked`` says so)."""
        if self._lost is not None:
            raise MqttError(self._lost)
        try:
            info = self._client.publish(message.topic, message.payload, message.qos,
                                        message.retain)
        except ValueError as exc:  # a topic paho refuses
            raise MqttError(f"cannot publish to {message.topic!r}: {exc}") from exc
        if info.rc != paho.MQTT_ERR_SUCCESS:
            # paho can report a dead socket here before its disconnect callback has run: the
            # connection is gone either way, so say so now rather than look connected.
            error = f"publish failed: {paho.error_string(info.rc)}"
            with self._cond:
                if self._lost is None:
                    self._lost = error
                self._cond.notify_all()
            raise MqttError(error)
        return int(info.mid)

    def publish_all(self, messages: Iterable[Message], timeout: float) -> int:
        """Publish and wait until the broker acknowledged every one (QoS 0: until written).

        Raises MqttError when the connection fails or ``timeout`` passes first; what was not
        acknowledged must then be published again on a new connection. Returns the count.
        """
        deadline = time.monotonic() + timeout
        mids = [self._publish(m) for m in messages]
        if not mids:
            return 0
        with self._cond:
            pending = self._awaiting
            pending.update(mids)
            pending -= self._acked
            self._acked.difference_update(mids)
            try:
                while pending:
                    if self._lost is not None:
                        raise MqttError(f"{self._lost}; {len(pending)} of {len(mids)} messages"
                                        " not acknowledged")
                    left = deadline - time.monotonic()
                    if left <= 0:
                        raise MqttError(f"{len(pending)} of {len(mids)} messages not"
                                        f" acknowledged within {timeout:g} s")
                    self._cond.wait(left)
            finally:
                pending.clear()
        return len(mids)

    def subscribe(self, topics: Sequence[tuple[str, int]], timeout: float) -> list[int]:
        """Subscribe and wait for the SUBACK; returns the granted QoS per topic (128: refused)."""
        try:
            rc, mid = self._client.subscribe(list(topics))
        except ValueError as exc:
            raise MqttError(f"cannot subscribe to {topics!r}: {exc}") from exc
        if rc != paho.MQTT_ERR_SUCCESS:
            raise MqttError(f"subscribe failed: {paho.error_string(rc)}")
        deadline = time.monotonic() + timeout
        with self._cond:
            while mid not in self._subacks:
                if self._lost is not None:
                    raise MqttError(self._lost)
                left = deadline - time.monotonic()
                if left <= 0:
                    raise MqttError(f"no SUBACK within {timeout:g} s")
                self._cond.wait(left)
            return self._subacks.pop(mid)

    def ack(self, mid: int, qos: int) -> None:
        """PUBACK a received message now (``manual_ack=True`` connections). A
        message that came on an earlier connection cannot be acknowledged on this one: its
        mid may now name another message; the broker sends it again instead."""
        if self._lost is None and qos > 0:
            self._client.ack(mid, qos)

    def abort(self) -> None:
        """Cut the connection at once, from any thread, even while paho's thread is inside
        ``on_message``: nothing more is sent on it (not the PUBACK of the message being
        handled) and nothing more is read. ``close()`` must follow, to end paho's thread."""
        with self._cond:
            if self._lost is None:
                self._lost = "aborted"
            self._cond.notify_all()
        with contextlib.suppress(Exception):
            sock = _tcp_socket(self._client)
            if sock is not None:
                sock.shutdown(socket.SHUT_RDWR)

    def wait_lost(self, timeout: float | None = None) -> str | None:
        """Block until the connection ends (or timeout); returns why, or None if still up."""
        with self._cond:
            self._cond.wait_for(lambda: self._lost is not None, timeout)
            return self._lost

    def close(self, *, clean: bool = True) -> None:
        """End the connection and paho's thread; never raises. clean=False: like a crash."""
        with self._cond:
            was_up = self._connected and self._lost is None
            if self._lost is None:
                self._lost = "closed"
            self._cond.notify_all()
        with contextlib.suppress(Exception):
            if clean and was_up:
                self._client.disconnect()
            else:
                sock = _tcp_socket(self._client)
                if sock is not None:
                    # No DISCONNECT: the broker sends the will. shutdown (not close) lets paho's
                    # thread see the end of the stream instead of a closed descriptor.
                    sock.shutdown(socket.SHUT_RDWR)
        with contextlib.suppress(Exception):
            self._client.loop_stop()
        with contextlib.suppress(Exception):
            left = self._client.socket()
            if left is not None:
                left.close()  # paho's thread has stopped: nobody else uses it now
        self._connected = False


def endpoint_from_config(cfg: MqttConfig, client_id: str | None = None) -> Endpoint:
    """The [mqtt] broker settings; the password file is read (and checked) now, at each call,
    so a rotated password is picked up by the next connection. Raises ConfigError."""
    password: str | None = cfg.password or None
    if cfg.password_file:
        password = read_secret(cfg.password_file, "[mqtt] password_file")
    return Endpoint(
        host=cfg.host, port=cfg.port, client_id=expand_client_id(client_id or cfg.client_id),
        keepalive=int(cfg.keepalive), username=cfg.username, password=password, tls=cfg.tls,
        ca_file=cfg.ca_file, cert_file=cfg.cert_file, key_file=cfg.key_file,
        tls_insecure=cfg.tls_insecure,
    )
