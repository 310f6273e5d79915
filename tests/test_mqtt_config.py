"""[mqtt] and [repeater]: defaults, the shipped file, refusals, and the wiring into the service."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from ravend.config import ConfigError, load
from ravend.config_secrets import read_secret
from tests.helpers.config import refused, write
from tests.helpers.process import ROOT


def test_shipped_file_equals_the_defaults() -> None:
    shipped = load(ROOT / "etc" / "ravend.conf")
    defaults = load("/nonexistent/ravend.conf")
    assert shipped.mqtt == defaults.mqtt
    assert shipped.repeater == defaults.repeater


def test_defaults() -> None:
    c = load("/nonexistent/ravend.conf")
    assert c.mqtt.enabled is False
    assert (c.mqtt.host, c.mqtt.port, c.mqtt.qos, c.mqtt.topic_prefix) == (
        "localhost", 1883, 1, "ravend")
    assert c.mqtt.retain_state and c.mqtt.discovery and not c.mqtt.tls_insecure
    assert c.mqtt.client_id == "ravend-%h"
    assert c.repeater.source == "sqlite"
    assert c.repeater.watermark_file == Path("repeater.watermark")


def test_values_parse(tmp_path: Path) -> None:
    c = load(write(tmp_path, "[mqtt]\nenabled = yes\nhost = broker.lan\nport = 8883\n"
                   "qos = 0\ntopic_prefix = home/meter\npublish_timeout = 500ms\n"
                   "spool_max_mb = 2.5\n[repeater]\nsource = MySQL\nbatch_size = 1000\n"
                   "start = newest\n"))
    assert (c.mqtt.host, c.mqtt.port, c.mqtt.qos, c.mqtt.topic_prefix) == (
        "broker.lan", 8883, 0, "home/meter")
    assert c.mqtt.publish_timeout == 0.5 and c.mqtt.spool_max_mb == 2.5
    assert (c.repeater.source, c.repeater.batch_size, c.repeater.start) == (
        "mysql", 1000, "newest")


@pytest.mark.parametrize(("text", "expected"), [
    ("[mqtt]\nqos = 3\n", r"\[mqtt\] qos = '3': expected a value from 0 to 2"),
    ("[mqtt]\ntopic_prefix = ravend/#\n", "expected a topic"),
    ("[mqtt]\ntopic_prefix = /ravend\n", "expected a topic"),
    ("[mqtt]\ndiscovery_prefix = ha/+\n", "expected a topic"),
    ("[mqtt]\nclient_id = my ravend\n", "expected a client id"),
    ("[mqtt]\nport = 0\n", "expected a value from 1 to 65535"),
    ("[mqtt]\npassword = a\npassword_file = /x\n", "set password or password_file, not both"),
    ("[mqtt]\ntls = yes\nkey_file = /etc/hostname\n", "key_file: needs cert_file"),
    ("[mqtt]\nca_file = /etc/hostname\n", "ca_file: set, but tls = no"),
    ("[mqtt]\ntls = yes\nca_file = /nonexistent/ca.pem\n", "ca_file = '/nonexistent/ca.pem':"
                                                           " no such file"),
    ("[mqtt]\npassword_file = /nonexistent/secret\n", "/nonexistent/secret: no such file"),
    ("[repeater]\nsource = postgres\n", "expected one of sqlite, mysql"),
    ("[repeater]\nbatch_size = 0\n", "expected a value from 1 to 10000"),
])
def test_bad_values_refused_in_one_line(tmp_path: Path, text: str, expected: str) -> None:
    refused(write(tmp_path, text), expected)


@pytest.mark.parametrize("mode", [0o640, 0o604, 0o644, 0o660])
def test_password_file_readable_by_others_is_refused(tmp_path: Path, mode: int) -> None:
    secret = tmp_path / "mqtt.secret"
    secret.write_text("hunter2\n")
    os.chmod(secret, mode)
    path = write(tmp_path, f"[mqtt]\npassword_file = {secret}\n")
    with pytest.raises(ConfigError, match=rf"\[mqtt\] password_file: {secret} is accessible by"
                                          rf" group or others \(mode 0{mode:o}\): .*chmod 600"):
        load(path)


@pytest.mark.parametrize("mode", [0o600, 0o400])
def test_password_file_of_the_owner_only_is_read(tmp_path: Path, mode: int) -> None:
    secret = tmp_path / "mqtt.secret"
    secret.write_text("hunter2\nignored second line\n")
    os.chmod(secret, mode)
    load(write(tmp_path, f"[mqtt]\npassword_file = {secret}\n"))
    assert read_secret(secret) == "hunter2"


def test_check_config_names_the_password_file_problem(tmp_path: Path) -> None:
    secret = tmp_path / "mqtt.secret"
    secret.write_text("x\n")
    os.chmod(secret, 0o644)
    path = write(tmp_path, f"[mqtt]\nenabled = yes\npassword_file = {secret}\n")
    for module in ("ravend.cli.ravend", "ravend.cli.repeater"):
        proc = subprocess.run([sys.executable, "-m", module, "--config", str(path),
                               "--check-config"], capture_output=True, text=True, cwd=ROOT)
        assert proc.returncode == 78, proc.stderr
        assert "chmod 600" in proc.stderr and "Traceback" not in proc.stderr
        assert proc.stderr.count("\n") == 1


def test_spool_max_mb_reaches_the_mqtt_outbox(tmp_path: Path) -> None:
    from ravend.service import Service

    path = write(tmp_path, f"[service]\nstate_dir = {tmp_path}\n[sqlite]\nenabled = no\n"
                           "[mqtt]\nenabled = yes\nspool_max_mb = 7\n")
    service = Service(load(path))
    (worker,) = service.workers
    assert worker.name == "mqtt"
    assert worker.outbox.max_rows == int(7 * 1024 * 1024 / 400)
    worker.outbox.close()


def test_repeater_check_config_ok(tmp_path: Path) -> None:
    path = write(tmp_path, f"[service]\nstate_dir = {tmp_path}\n[repeater]\nenabled = yes\n")
    proc = subprocess.run([sys.executable, "-m", "ravend.cli.repeater", "--config", str(path),
                           "--check-config"], capture_output=True, text=True, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr
    assert "configuration OK" in proc.stdout and f"sqlite:{tmp_path}/ravend.db" in proc.stdout
