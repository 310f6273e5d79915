"""Config: defaults, every kind of refusal as one line naming file, line, key and expectation."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from ravend.config import EX_CONFIG, RETRY_SECTIONS, ConfigError, RetryPace, load
from ravend.config_values import duration
from tests.helpers.config import refused, write
from tests.helpers.process import ROOT


def test_missing_file_gives_defaults(tmp_path: Path) -> None:
    config = load(tmp_path / "absent.conf")
    assert config.device.port == "auto"
    assert config.sqlite.enabled is True
    assert config.sqlite_path == Path("/var/lib/ravend/ravend.db")


def test_missing_file_refused_when_required(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="no such file"):
        load(tmp_path / "absent.conf", must_exist=True)


def test_shipped_config_parses_to_the_defaults() -> None:
    """etc/ravend.conf documents every key commented out: it must equal the built-in defaults."""
    shipped = load(ROOT / "etc" / "ravend.conf")
    defaults = load("/nonexistent/ravend.conf")
    assert (shipped.service, shipped.device, shipped.sqlite) == (
        defaults.service, defaults.device, defaults.sqlite)


def test_shipped_config_documents_every_key() -> None:
    import dataclasses

    from ravend.config import SECTIONS
    text = (ROOT / "etc" / "ravend.conf").read_text()
    for section, cls in SECTIONS.items():
        assert f"[{section}]" in text
        for f in dataclasses.fields(cls):
            assert f"#{f.name} = " in text, f"etc/ravend.conf lacks [{section}] {f.name}"


def test_values_parse(tmp_path: Path) -> None:
    path = write(tmp_path, "[device]\nport = socket://pi:3001\nreply_timeout = 2m\n"
                 "[service]\nlog_level = DEBUG\nstate_dir = /srv/r\n[sqlite]\nenabled = off\n")
    config = load(path)
    assert config.device.port == "socket://pi:3001"
    assert config.device.reply_timeout == 120.0
    assert config.service.log_level == "debug"
    assert config.sqlite.enabled is False
    assert config.sqlite_path == Path("/srv/r/ravend.db")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("[device]\nbaud = 9600\n", r"ravend.conf:2: \[device\] baud: unknown key"),
        ("[devices]\nport = x\n", r"ravend.conf:1: \[devices\]: unknown section"),
        ("[device]\nbaudrate = fast\n", r"\[device\] baudrate = 'fast': expected a whole number"),
        ("[device]\nbaudrate = 10\n", r"baudrate = '10': expected a value from 1200 to 4e\+06"),
        ("[device]\nreply_timeout = soon\n", "expected a duration"),
        ("[sqlite]\nenabled = maybe\n", "expected yes or no"),
        ("[service]\nlog_level = loud\n", "expected one of debug, info, warning, error"),
        ("[device]\nreconnect_min = 2m\nreconnect_max = 1m\n", "must not exceed reconnect_max"),
        ("[device]\nport = a\nport = b\n", "option 'port' in section 'device' already exists"),
        ("port = a\n", "File contains no section headers"),
        ("[service]\nmax_meters = 0\n", r"max_meters = '0': expected a value from 1 to 1000"),
        ("[service]\nmax_meters = 1001\n", "expected a value from 1 to 1000"),
        ("[service]\nmax_meters = many\n", "expected a whole number"),
        ("[service]\nretry_min = 2m\nretry_max = 1m\n",
         r"ravend.conf:2: \[service\] retry_min: must not exceed retry_max \(120 > 60\)"),
        ("[mongo]\nretry_min = 2m\n", r"\[mongo\] retry_min: must not exceed \[device\]"
         r" reconnect_max, which applies while retry_max is unset \(120 > 60\)"),
        ("[device]\nreconnect_min = 10\n[repeater]\nretry_max = 5\n",
         r"ravend.conf:4: \[repeater\] retry_max: must not be below \[device\] reconnect_min"),
        ("[repeater]\nretry_min = 0\n", r"retry_min = '0': expected a value from 0.01 to 3600"),
        ("[service]\nretry_max = soon\n", "expected a duration"),
    ],
)
def test_bad_values_refused_in_one_line(tmp_path: Path, text: str, expected: str) -> None:
    path = write(tmp_path, text)
    assert str(path) in refused(path, expected)


def test_retry_pace_defaults_to_the_device_pace(tmp_path: Path) -> None:
    """[service], [repeater] and [mongo] retry at 1 s doubling to 60 s, as the device reopens."""
    for config in (load(tmp_path / "absent.conf"), load(write(tmp_path, "[service]\n"))):
        assert config.retry("device") == RetryPace(1.0, 60.0)
        for section in RETRY_SECTIONS:
            assert config.retry(section) == RetryPace(1.0, 60.0), section


def test_retry_keys_set_each_section_apart_from_the_device(tmp_path: Path) -> None:
    path = write(tmp_path, "[service]\nretry_min = 2s\nretry_max = 2m\n"
                 "[repeater]\nretry_min = 250ms\nretry_max = 5\n"
                 "[mongo]\nretry_min = 3\nretry_max = 1h\n")
    config = load(path)
    assert config.retry("device") == RetryPace(1.0, 60.0)
    assert config.retry("service") == RetryPace(2.0, 120.0)
    assert config.retry("repeater") == RetryPace(0.25, 5.0)
    assert config.retry("mongo") == RetryPace(3.0, 3600.0)


def test_old_device_keys_still_pace_what_the_new_keys_leave_unset(tmp_path: Path) -> None:
    """Before retry_min/retry_max, [device] reconnect_min/max set every retry: a file that sets
    only them keeps that pace for the sinks and the companions; a new key overrides its half."""
    path = write(tmp_path, "[device]\nreconnect_min = 0.1\nreconnect_max = 0.5\n"
                 "[mongo]\nretry_max = 3\n[repeater]\nretry_min = 0.2\n")
    config = load(path)
    assert config.retry("device") == RetryPace(0.1, 0.5)
    assert config.retry("service") == RetryPace(0.1, 0.5)
    assert config.retry("mongo") == RetryPace(0.1, 3.0)
    assert config.retry("repeater") == RetryPace(0.2, 0.5)
    assert config.service.retry_min is None and config.mongo.retry_min is None


def test_duration_units() -> None:
    assert duration("90") == 90
    assert duration("1.5m") == 90
    assert duration("2h") == 7200
    assert duration("7d") == 7 * 86400
    assert duration("250ms") == 0.25
    with pytest.raises(ValueError):
        duration("-3s")


def test_check_config_exit_status_78_with_one_line(tmp_path: Path) -> None:
    path = write(tmp_path, "[device]\nbaudrate = fast\n")
    proc = subprocess.run([sys.executable, "-m", "ravend.cli.ravend", "--config", str(path),
                           "--check-config"], capture_output=True, text=True, cwd=ROOT)
    assert proc.returncode == EX_CONFIG
    assert proc.stderr.count("\n") == 1
    assert "baudrate" in proc.stderr and "Traceback" not in proc.stderr


def test_check_config_ok(tmp_path: Path) -> None:
    path = write(tmp_path, "[device]\nport = /dev/ttyUSB0\n")
    proc = subprocess.run([sys.executable, "-m", "ravend.cli.ravend", "--config", str(path),
                           "--check-config"], capture_output=True, text=True, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr
    assert "configuration OK" in proc.stdout
