"""[mysql] and [retention]: the shipped file equals the defaults; values and refusals."""

from __future__ import annotations

from pathlib import Path

import pytest

from ravend.config import MysqlConfig, RetentionConfig, load
from tests.helpers.config import refused, write
from tests.helpers.process import ROOT


def test_shipped_config_gives_the_defaults() -> None:
    shipped = load(ROOT / "etc" / "ravend.conf")
    assert shipped.mysql == MysqlConfig()
    assert shipped.retention == RetentionConfig()
    assert shipped.mysql.enabled is False
    assert shipped.retention.raw_days == 400 and shipped.retention.rollup_days == 0


def test_values_parse(tmp_path: Path) -> None:
    secret = tmp_path / "pw"
    secret.write_text("s3cret\n")
    secret.chmod(0o600)
    config = load(write(tmp_path, f"""
[mysql]
enabled = yes
unix_socket = /run/mysqld/mysqld.sock
password_file = {secret}
ssl_verify_server_cert = no
connect_timeout = 5s
[retention]
raw_days = 30
time_zone = Europe/Berlin
purge_pause = 10ms
max_db_mb = 512.5
"""))
    assert config.mysql.unix_socket == "/run/mysqld/mysqld.sock"
    assert config.mysql.password_file == str(secret)
    assert config.mysql.ssl_verify_server_cert is False
    assert config.mysql.connect_timeout == 5.0
    r = config.retention
    assert (r.raw_days, r.time_zone, r.purge_pause, r.max_db_mb) == (30, "Europe/Berlin", 0.01,
                                                                      512.5)
    assert load(write(tmp_path, "[retention]\ntime_zone = utc\n")).retention.time_zone == "UTC"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("[retention]\ntime_zone = Mars/Olympus\n",
         r"ravend.conf:2: \[retention\] time_zone = 'Mars/Olympus': expected local, UTC or a"
         r" time zone name"),
        ("[retention]\nraw_days = -1\n", r"raw_days = '-1': expected a value from 0"),
        ("[retention]\npurge_chunk = 5\n", r"purge_chunk = '5': expected a value from 10"),
        ("[mysql]\nport = 0\n", r"port = '0': expected a value from 1 to 65535"),
        ("[mysql]\nssl_key = /etc/hostname\n", r"\[mysql\] ssl_key: needs ssl_cert"),
        ("[mysql]\nssl_ca = /nonexistent/ca.pem\n", r"ssl_ca = '/nonexistent/ca.pem': no such"),
        ("[mysql]\npassword_file = /nonexistent/pw\n", r"password_file = '/nonexistent/pw': no"),
        ("[mysql]\nhostname = db\n", r"\[mysql\] hostname: unknown key"),
    ],
)
def test_bad_values_refused_in_one_line(tmp_path: Path, text: str, expected: str) -> None:
    refused(write(tmp_path, text), expected)
