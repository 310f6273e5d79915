"""The test servers of conftest.py work with the real client libraries of the run's stack."""

from __future__ import annotations

import queue
import ssl
import threading

import MySQLdb
import paho.mqtt
import paho.mqtt.client as mqtt
import pymongo
import pytest

from tests.helpers import servers

PAHO_2 = int(paho.mqtt.__version__.split(".")[0]) >= 2
WAIT = 10.0  # seconds any single broker or database answer may take here


# ---------------------------------------------------------------------------------------------
# helpers


def test_free_port_hands_out_distinct_unused_ports():
    ports = {servers.free_port() for _ in range(20)}
    assert len(ports) == 20
    assert not any(servers.port_accepts(servers.LOOPBACK, p, timeout=0.2) for p in ports)


def test_missing_binary_names_the_fix():
    with pytest.raises(servers.MissingDependency, match=r"make deps.*ravend-no-such-pkg"):
        servers.find_binary("ravend-no-such-binary", "ravend-no-such-pkg")


# ---------------------------------------------------------------------------------------------
# MariaDB


def _rows(server, database, query, **kwargs):
    conn = MySQLdb.connect(**server.connect_kwargs(database, **kwargs))
    try:
        cur = conn.cursor()
        cur.execute(query)
        return list(cur.fetchall())
    finally:
        conn.close()


def test_mariadb_create_insert_select_then_stop_start_keeps_rows(mariadb_server):
    db = mariadb_server.new_database("servers")
    conn = MySQLdb.connect(**mariadb_server.connect_kwargs(db))
    cur = conn.cursor()
    cur.execute("CREATE TABLE reading (id INT PRIMARY KEY, demand_w INT NOT NULL) ENGINE=InnoDB")
    cur.executemany("INSERT INTO reading VALUES (%s, %s)", [(1, 250), (2, -40)])
    conn.commit()
    cur.execute("SELECT id, demand_w FROM reading ORDER BY id")
    assert cur.fetchall() == ((1, 250), (2, -40))
    conn.close()

    port = mariadb_server.port
    mariadb_server.stop()
    assert not mariadb_server.running
    assert not servers.port_accepts(mariadb_server.host, port)
    mariadb_server.start()
    assert mariadb_server.port == port
    assert _rows(mariadb_server, db, "SELECT id, demand_w FROM reading ORDER BY id") == [
        (1, 250),
        (2, -40),
    ]


def test_mariadb_kill_keeps_committed_rows(mariadb_server):
    db = mariadb_server.new_database("killed")
    conn = MySQLdb.connect(**mariadb_server.connect_kwargs(db))
    cur = conn.cursor()
    cur.execute("CREATE TABLE t (id INT PRIMARY KEY) ENGINE=InnoDB")
    cur.execute("INSERT INTO t VALUES (7)")
    conn.commit()
    conn.close()
    mariadb_server.kill()
    mariadb_server.start()
    assert _rows(mariadb_server, db, "SELECT id FROM t") == [(7,)]


def test_mariadb_refuses_a_wrong_password(mariadb_server):
    kwargs = mariadb_server.connect_kwargs()
    kwargs["password"] = "not-the-password"
    with pytest.raises(MySQLdb.OperationalError) as excinfo:
        MySQLdb.connect(**kwargs)
    assert excinfo.value.args[0] == 1045  # ER_ACCESS_DENIED_ERROR


def test_mariadb_unix_socket_and_root_account(mariadb_server):
    conn = MySQLdb.connect(
        unix_socket=mariadb_server.unix_socket,
        user=mariadb_server.root_user,
        password=mariadb_server.root_password,
    )
    cur = conn.cursor()
    cur.execute("SELECT CURRENT_USER()")
    assert cur.fetchone()[0] == "root@localhost"
    conn.close()
    with pytest.raises(MySQLdb.OperationalError):
        MySQLdb.connect(unix_socket=mariadb_server.unix_socket, user="root", password="")


def test_mariadb_new_database_is_fresh_and_empty(mariadb_server):
    a = mariadb_server.new_database("fresh")
    b = mariadb_server.new_database("fresh")
    assert a != b
    assert mariadb_server.sql("SHOW TABLES", database=a) == ""
    assert _rows(mariadb_server, b, "SELECT DATABASE()") == [(b,)]


# ---------------------------------------------------------------------------------------------
# Mosquitto (paho-mqtt 1.6 on bookworm, 2.x from PyPI)


def mqtt_client(client_id: str) -> mqtt.Client:
    # paho 2.0 made the callback API version a required first argument; VERSION2 callbacks get
    # reason codes (with .value) where 1.x passed plain ints.
    if PAHO_2:
        return mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id)
    return mqtt.Client(client_id=client_id)


def mqtt_connect(port, client_id, *, username=None, password=None, ca_cert=None):
    """Connect and start the network loop; return (client, CONNACK result as an int)."""
    client = mqtt_client(client_id)
    results: queue.Queue[int] = queue.Queue()

    def on_connect(client, userdata, flags, rc, *properties):  # 1.x: rc int; 2.x: ReasonCode
        results.put(getattr(rc, "value", rc))

    client.on_connect = on_connect
    if username is not None:
        client.username_pw_set(username, password)
    if ca_cert is not None:
        client.tls_set(ca_certs=ca_cert, tls_version=ssl.PROTOCOL_TLS_CLIENT)
    client.connect(servers.LOOPBACK, port, keepalive=30)
    client.loop_start()
    try:
        result = results.get(timeout=WAIT)
    except queue.Empty:
        client.loop_stop()
        raise AssertionError(f"no CONNACK from the broker on port {port}") from None
    return client, result


def mqtt_close(client):
    client.disconnect()
    client.loop_stop()


def subscribe(client, topic) -> queue.Queue:
    """Subscribe at QoS 1, wait for the SUBACK; messages arrive in the returned queue."""
    messages: queue.Queue = queue.Queue()
    subscribed = threading.Event()
    client.on_message = lambda client, userdata, msg: messages.put(msg)
    client.on_subscribe = lambda client, userdata, mid, *granted: subscribed.set()
    client.subscribe(topic, qos=1)
    assert subscribed.wait(WAIT), f"no SUBACK for {topic}"
    return messages


def round_trip(port, topic, payload, **auth):
    sub, rc = mqtt_connect(port, "ravend-test-sub", **auth)
    assert rc == 0
    pub, rc = mqtt_connect(port, "ravend-test-pub", **auth)
    assert rc == 0
    try:
        messages = subscribe(sub, topic)
        info = pub.publish(topic, payload, qos=1)
        info.wait_for_publish(timeout=WAIT)
        assert info.is_published()
        msg = messages.get(timeout=WAIT)
        assert (msg.topic, msg.payload, msg.qos) == (topic, payload, 1)
    finally:
        mqtt_close(pub)
        mqtt_close(sub)


def test_mosquitto_qos1_round_trip(mosquitto_server):
    round_trip(mosquitto_server.port, "ravend/test/demand", b'{"demand_w": 250}')


def test_mosquitto_stop_start_keeps_retained_messages(mosquitto_server):
    pub, rc = mqtt_connect(mosquitto_server.port, "ravend-test-retain")
    assert rc == 0
    pub.publish("ravend/test/last", b"42", qos=1, retain=True).wait_for_publish(timeout=WAIT)
    mqtt_close(pub)

    port = mosquitto_server.port
    mosquitto_server.stop()  # mosquitto writes its persistence file on a clean stop
    assert not servers.port_accepts(mosquitto_server.host, port)
    mosquitto_server.start()
    assert mosquitto_server.port == port

    sub, rc = mqtt_connect(port, "ravend-test-retain-sub")
    try:
        msg = subscribe(sub, "ravend/test/last").get(timeout=WAIT)
        assert (msg.payload, msg.retain) == (b"42", True)
    finally:
        mqtt_close(sub)


def test_mosquitto_kill_then_start(mosquitto_server):
    mosquitto_server.kill()
    assert not mosquitto_server.running
    assert not servers.port_accepts(mosquitto_server.host, mosquitto_server.port)
    mosquitto_server.start()
    round_trip(mosquitto_server.port, "ravend/test/after-kill", b"up")


def test_mosquitto_tls_and_password(make_mosquitto):
    broker = make_mosquitto(users={"ravend": "mqtt-secret", "other": "x"}, tls=True)
    assert broker.tls_port and broker.ca_cert

    good = {"username": "ravend", "password": "mqtt-secret", "ca_cert": broker.ca_cert}
    round_trip(broker.tls_port, "ravend/test/tls", b"secure", **good)

    client, rc = mqtt_connect(broker.tls_port, "ravend-test-wrong", **{**good, "password": "no"})
    mqtt_close(client)
    assert rc != 0, "the broker accepted a wrong password"

    client, rc = mqtt_connect(broker.tls_port, "ravend-test-anon", ca_cert=broker.ca_cert)
    mqtt_close(client)
    assert rc != 0, "the broker accepted an anonymous client"

    # the plain listener asks for the same password
    client, rc = mqtt_connect(broker.port, "ravend-test-plain", username="ravend", password="no")
    mqtt_close(client)
    assert rc != 0
    round_trip(broker.port, "ravend/test/plain", b"ok", username="ravend", password="mqtt-secret")


def test_mosquitto_tls_refuses_a_client_that_does_not_trust_the_ca(make_mosquitto):
    broker = make_mosquitto(tls=True)
    client = mqtt_client("ravend-test-untrusting")
    client.tls_set(tls_version=ssl.PROTOCOL_TLS_CLIENT)  # system CAs only
    with pytest.raises(ssl.SSLError):
        client.connect(servers.LOOPBACK, broker.tls_port, keepalive=30)


def test_mosquitto_start_waits_for_a_listener_from_extra_config(make_mosquitto):
    extra = servers.free_port()
    broker = make_mosquitto(extra_config=f"listener {extra} {servers.LOOPBACK}")
    assert broker._ports() == [broker.port, extra]
    assert servers.port_accepts(servers.LOOPBACK, extra, timeout=0.5)  # no wait of its own


# ---------------------------------------------------------------------------------------------
# SecantusDB (pymongo 3.11 on bookworm, 4.x from PyPI)


def _mongo(server):
    return pymongo.MongoClient(server.uri, serverSelectionTimeoutMS=int(WAIT * 1000))


def test_secantus_insert_find_then_restart_keeps_documents(mongo_server):
    client = _mongo(mongo_server)
    readings = client.ravend_servers_test.readings
    readings.delete_many({})
    readings.insert_many([{"_id": 1, "demand_w": 250}, {"_id": 2, "demand_w": -40}])
    assert list(readings.find({}, sort=[("_id", 1)])) == [
        {"_id": 1, "demand_w": 250},
        {"_id": 2, "demand_w": -40},
    ]
    client.close()

    port = mongo_server.port
    mongo_server.stop()
    assert not servers.port_accepts(mongo_server.host, port)
    mongo_server.start()

    client = _mongo(mongo_server)
    try:
        assert client.ravend_servers_test.readings.count_documents({}) == 2
    finally:
        client.close()


def test_secantus_sync_on_commit_survives_kill(make_mongo):
    server = make_mongo(sync_on_commit=True)
    client = _mongo(server)
    client.db.c.insert_one({"_id": "kept"})
    client.close()
    server.kill()
    server.start()
    client = _mongo(server)
    try:
        assert client.db.c.find_one({"_id": "kept"}) == {"_id": "kept"}
    finally:
        client.close()
