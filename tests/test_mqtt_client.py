"""mqtt_client.Connection against a real Mosquitto (on whichever paho this run has).

Acknowledgements at every QoS, refusals that say why, TLS with a CA made here (host name checked
unless tls_insecure), the last will on a crash, and failures detected at once or at the timeout.
"""

from __future__ import annotations

import socket
import threading
import time
from pathlib import Path

import pytest

from ravend.mqtt_client import PAHO_2, PAHO_VERSION, Connection, Endpoint, Message, MqttError
from tests.helpers import servers
from tests.helpers.mqtt import Subscriber
from tests.helpers.procfs import thread_wakeups


def endpoint(server, **kw) -> Endpoint:
    return Endpoint(host=server.host, port=kw.pop("port", server.port),
                    client_id=kw.pop("client_id", "test-publisher"), **kw)


def test_paho_version_is_the_one_this_stack_promises() -> None:
    import os

    stack = os.environ.get("RAVEND_TEST_STACK")
    if stack == "debian":
        assert PAHO_VERSION.startswith("1.6") and not PAHO_2
    elif stack == "pypi":
        assert PAHO_2


@pytest.mark.parametrize("qos", [0, 1, 2])
def test_publish_all_returns_once_acknowledged_in_order(mosquitto_server, qos: int) -> None:
    # Mosquitto 2.0.11 (Debian 12) stops forwarding what came in at QoS 2 once more than its
    # 20 in-flight messages wait for one subscriber; ravend publishes at QoS 1 by default.
    count = 300 if qos < 2 else 20
    sub = Subscriber(mosquitto_server.host, mosquitto_server.port, ["t/#"], qos=2).start()
    conn = Connection(endpoint(mosquitto_server))
    conn.connect(5)
    try:
        n = conn.publish_all([Message(f"t/{i % 3}", str(i).encode(), qos)
                              for i in range(count)], 10)
        assert n == count
        assert conn.publish_all([], 1) == 0
    finally:
        conn.close()
    assert sub.wait_for(lambda: len(sub.on("t/.*")) == count, 10)
    sub.stop()
    assert [int(m.payload) for m in sub.on("t/.*")] == list(range(count))


def test_unreachable_broker_fails_at_once() -> None:
    port = servers.free_port()
    started = time.monotonic()
    with pytest.raises(MqttError, match="refused"):
        Connection(Endpoint(host=servers.LOOPBACK, port=port, client_id="x")).connect(5)
    assert time.monotonic() - started < 2


def test_wrong_password_is_refused_with_the_reason(make_mosquitto) -> None:
    broker = make_mosquitto(users={"ravend": "right"})
    with pytest.raises(MqttError, match=r"(?i)refused by the broker: .*(not author|bad user)"):
        Connection(endpoint(broker, username="ravend", password="wrong")).connect(5)
    with pytest.raises(MqttError, match="refused by the broker"):
        Connection(endpoint(broker)).connect(5)  # anonymous
    conn = Connection(endpoint(broker, username="ravend", password="right"))
    conn.connect(5)
    assert conn.publish_all([Message("a", b"1")], 5) == 1
    conn.close()


@pytest.fixture
def tls_broker(make_mosquitto, tmp_path):
    """TLS listener with a proper certificate (tls_port) and one whose certificate names
    another host (attribute wrong_name_port), both signed by the same test CA."""
    wrong = servers.make_test_certificates(tmp_path / "wrong", hostnames=("elsewhere.example",),
                                           ips=())
    port = servers.free_port()
    broker = make_mosquitto(users={"ravend": "s3cret"}, tls=True, extra_config=(
        f"listener {port} {servers.LOOPBACK}\ncafile {wrong.ca_cert}\n"
        f"certfile {wrong.server_cert}\nkeyfile {wrong.server_key}"))
    broker.wrong_name_port = port
    broker.wrong_ca = str(wrong.ca_cert)
    return broker


def test_tls_with_the_test_ca_and_password(tls_broker) -> None:
    ep = endpoint(tls_broker, port=tls_broker.tls_port, tls=True, ca_file=tls_broker.ca_cert,
                  username="ravend", password="s3cret")
    conn = Connection(ep)
    conn.connect(5)
    assert conn.publish_all([Message("secure", b"1", 1)], 5) == 1
    conn.close()


def test_tls_refuses_a_certificate_from_an_unknown_ca(tls_broker) -> None:
    ep = endpoint(tls_broker, port=tls_broker.tls_port, tls=True,  # system CAs only
                  username="ravend", password="s3cret")
    with pytest.raises(MqttError, match="certificate"):
        Connection(ep).connect(5)


def test_tls_checks_the_host_name_unless_insecure(tls_broker) -> None:
    ep = endpoint(tls_broker, port=tls_broker.wrong_name_port, tls=True,
                  ca_file=tls_broker.wrong_ca, username="ravend", password="s3cret")
    with pytest.raises(MqttError, match=r"(?i)hostname|host name|match"):
        Connection(ep).connect(5)
    insecure = Endpoint(**{**ep.__dict__, "tls_insecure": True})
    conn = Connection(insecure)
    conn.connect(5)  # the chain is still verified, only the name is not
    conn.close()


def test_last_will_on_crash_not_on_clean_close(mosquitto_server) -> None:
    sub = Subscriber(mosquitto_server.host, mosquitto_server.port, ["status/#"]).start()
    will = Message("status/a", b"offline", 1, True)
    crash = Connection(endpoint(mosquitto_server, client_id="a"), will=will)
    crash.connect(5)
    crash.publish_all([Message("status/a", b"online", 1, True)], 5)
    crash.close(clean=False)
    assert sub.wait_for(lambda: [m.payload for m in sub.on("status/a")] == [b"online",
                                                                           b"offline"], 5)
    clean = Connection(endpoint(mosquitto_server, client_id="b"),
                       will=Message("status/b", b"offline", 1, True))
    clean.connect(5)
    clean.publish_all([Message("status/b", b"online", 1, True)], 5)
    clean.close()
    time.sleep(0.5)
    sub.stop()
    assert [m.payload for m in sub.on("status/b")] == [b"online"]


def test_broker_death_is_noticed_during_the_wait(mosquitto_server) -> None:
    conn = Connection(endpoint(mosquitto_server))
    conn.connect(5)
    mosquitto_server.kill()
    started = time.monotonic()
    with pytest.raises(MqttError):
        for _ in range(50):  # the first publishes may still fit in the socket buffer
            conn.publish_all([Message("x", b"1" * 1000, 1)] * 100, 20)
    assert time.monotonic() - started < 5
    assert not conn.connected
    conn.close()


class SilentBroker:
    """Accepts a connection, answers CONNECT with CONNACK, then never acknowledges anything."""

    def __init__(self) -> None:
        self.sock = socket.create_server((servers.LOOPBACK, 0))
        self.port = self.sock.getsockname()[1]
        self.received = 0
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        conn, _ = self.sock.accept()
        with conn:
            conn.recv(4096)  # CONNECT
            conn.sendall(b"\x20\x02\x00\x00")  # CONNACK, accepted
            while data := conn.recv(65536):
                self.received += len(data)

    def close(self) -> None:
        self._thread.join(5)
        self.sock.close()


def test_missing_acknowledgements_time_out() -> None:
    silent = SilentBroker()
    conn = Connection(Endpoint(host=servers.LOOPBACK, port=silent.port, client_id="x"))
    conn.connect(5)
    started = time.monotonic()
    with pytest.raises(MqttError, match=r"2 of 2 messages not acknowledged within 0\.5 s"):
        conn.publish_all([Message("a", b"1", 1), Message("b", b"2", 1)], 0.5)
    assert 0.5 <= time.monotonic() - started < 2
    conn.close(clean=False)
    silent.close()


def test_no_connack_times_out() -> None:
    server = socket.create_server((servers.LOOPBACK, 0))
    try:
        ep = Endpoint(host=servers.LOOPBACK, port=server.getsockname()[1], client_id="x")
        with pytest.raises(MqttError, match=r"no CONNACK within 0\.5 s"):
            Connection(ep).connect(0.5)
        server.accept()[0].close()  # the connection waiting in the backlog
    finally:
        server.close()


def test_subscribe_reports_granted_qos(mosquitto_server) -> None:
    conn = Connection(endpoint(mosquitto_server))
    conn.connect(5)
    assert conn.subscribe([("a/#", 1), ("b", 2), ("c", 0)], 5) == [1, 2, 0]
    conn.close()


@pytest.mark.parametrize("clean", [True, False])
def test_idle_network_thread_sleeps_and_close_still_ends_it_at_once(mosquitto_server,
                                                                     clean: bool) -> None:
    # keepalive 60 s: paho's thread waits up to 15 s in select() instead of waking every second.
    conn = Connection(endpoint(mosquitto_server, keepalive=60))
    conn.connect(5)
    thread = conn._client._thread
    before = thread_wakeups(thread.native_id)
    time.sleep(2.5)
    assert thread_wakeups(thread.native_id) - before <= 1
    conn.publish_all([Message("t/idle", b"1", 1)], 5)  # a publish wakes it without the timer
    started = time.monotonic()
    conn.close(clean=clean)
    assert time.monotonic() - started < 1.0
    assert not thread.is_alive()


def _client_certificate(certs: servers.TlsFiles, directory: Path) -> tuple[Path, Path]:
    """A client key and certificate (clientAuth) signed by the test CA, with openssl."""
    openssl = servers.find_binary("openssl", "openssl")
    key, csr, cert, ext = (directory / n for n in ("client.key", "client.csr", "client.crt",
                                                   "client.ext"))
    servers.run_checked([openssl, "req", "-new", "-newkey", "ec", "-pkeyopt",
                         "ec_paramgen_curve:prime256v1", "-nodes", "-keyout", str(key),
                         "-out", str(csr), "-subj", "/CN=ravend-client"], "openssl (client key)")
    ext.write_text("basicConstraints=critical,CA:FALSE\n"
                   "keyUsage=critical,digitalSignature\nextendedKeyUsage=clientAuth\n")
    servers.run_checked([openssl, "x509", "-req", "-in", str(csr), "-days", "7", "-CA",
                         str(certs.ca_cert), "-CAkey", str(certs.ca_key), "-CAcreateserial",
                         "-extfile", str(ext), "-out", str(cert)], "openssl (client certificate)")
    return cert, key


def test_tls_client_certificate_is_presented_and_required(make_mosquitto, tmp_path) -> None:
    """A listener that requires a client certificate from the test CA: ravend's cert_file and
    key_file get it in; without them the broker refuses the handshake."""
    certs = servers.make_test_certificates(tmp_path / "pki")
    cert, key = _client_certificate(certs, tmp_path / "pki")
    port = servers.free_port()
    broker = make_mosquitto(extra_config=(
        f"listener {port} {servers.LOOPBACK}\ncafile {certs.ca_cert}\n"
        f"certfile {certs.server_cert}\nkeyfile {certs.server_key}\n"
        "require_certificate true\nuse_identity_as_username true"))
    ep = endpoint(broker, port=port, tls=True, ca_file=str(certs.ca_cert),
                  cert_file=str(cert), key_file=str(key))
    conn = Connection(ep)
    conn.connect(5)
    assert conn.publish_all([Message("mutual", b"1", 1)], 5) == 1
    conn.close()
    without = endpoint(broker, port=port, tls=True, ca_file=str(certs.ca_cert))
    failures: list[BaseException] = []
    previous = threading.excepthook
    threading.excepthook = lambda args: failures.append(args.exc_value)  # type: ignore[assignment]
    try:
        started = time.monotonic()
        # The reason, as far as the stack knows it: the TLS alert (certificate required), or,
        # when the broker's close wins the race with its alert (TLS 1.3), an EOF, which the
        # message explains; paho 2.x logs its socket error, which the message then carries.
        with pytest.raises(MqttError, match=r"(?i)certificate|failed to receive on socket"):
            Connection(without).connect(5)
        assert time.monotonic() - started < 4  # said at once, not after the CONNACK timeout
    finally:
        threading.excepthook = previous
    assert not failures, failures  # no traceback from paho's network thread


def test_a_tls_broker_that_hangs_up_after_the_handshake_is_explained(tmp_path) -> None:
    """What a client without a certificate often sees from a broker that requires one (TLS 1.3:
    the broker's close can beat its alert): a bare EOF, which the error then explains."""
    import ssl

    certs = servers.make_test_certificates(tmp_path / "pki")
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(str(certs.server_cert), str(certs.server_key))
    listener = socket.create_server((servers.LOOPBACK, 0))
    port = listener.getsockname()[1]

    def hang_up_after_handshake() -> None:
        conn, _ = listener.accept()
        with context.wrap_socket(conn, server_side=True) as tls:
            tls.recv(1)  # the client's CONNECT has started to arrive: close without a word
        listener.close()

    server = threading.Thread(target=hang_up_after_handshake, daemon=True)
    server.start()
    ep = Endpoint(host=servers.LOOPBACK, port=port, client_id="no-cert", tls=True,
                  ca_file=str(certs.ca_cert))
    with pytest.raises(MqttError) as failure:
        Connection(ep).connect(5)
    server.join(5)
    assert "cert_file" in str(failure.value), failure.value
