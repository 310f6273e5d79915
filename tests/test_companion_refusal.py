"""The companions refuse to start when nobody configured them, and keep working for those who did.

An unconfigured ravend-repeater or ravend-mongo-ingest used to start, show active and log
connection errors for localhost forever. Now the real programs exit 78 (EX_CONFIG, which their
units do not restart on) with one line naming the setting to make; configuration files written
before ``enabled`` existed, which configured the companion through its other keys, still run.
"""

from __future__ import annotations

import configparser
import subprocess
from pathlib import Path

import pytest

from tests.helpers.config import write
from tests.helpers.process import ROOT, run_program

PROGRAMS = {"repeater": "ravend.cli.repeater", "mongo": "ravend.cli.mongo_ingest"}
UNITS = {"repeater": "ravend-repeater.service", "mongo": "ravend-mongo-ingest.service"}


def run(section: str, conf: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return run_program(PROGRAMS[section], "--config", str(conf), *args)


def shipped_config(tmp_path: Path) -> Path:
    """etc/ravend.conf as the package installs it, with its state under tmp_path."""
    state = tmp_path / "state"
    state.mkdir()
    text = (ROOT / "etc/ravend.conf").read_text(encoding="utf-8")
    conf = tmp_path / "ravend.conf"
    conf.write_text(text.replace("\n#state_dir = /var/lib/ravend\n", f"\nstate_dir = {state}\n"))
    return conf


@pytest.mark.parametrize("section", ["repeater", "mongo"])
def test_unconfigured_companion_exits_78_in_one_line_naming_the_setting(
        tmp_path: Path, section: str) -> None:
    conf = shipped_config(tmp_path)
    for args in ((), ("--check-config",)):  # starting, and checking what starting checks
        done = run(section, conf, *args)
        assert done.returncode == 78, done
        assert done.stderr.count("\n") == 1, done.stderr
        assert f"set [{section}] enabled = yes in {conf}" in done.stderr, done.stderr
        assert "Traceback" not in done.stderr and done.stdout == "", done
    # systemd does not restart on 78: the unit stays failed instead of looping.
    unit = configparser.ConfigParser(strict=False, interpolation=None)
    unit.read(ROOT / "systemd" / UNITS[section], encoding="utf-8")
    assert unit["Service"]["Restart"] == "on-failure"
    assert "78" in unit["Service"]["RestartPreventExitStatus"].split()


@pytest.mark.parametrize(("section", "text"), [
    ("repeater", "[repeater]\nenabled = yes\n"),
    # Files from before `enabled`: a broker of their own, or any [repeater] key.
    ("repeater", "[mqtt]\nhost = broker.example.net\n"),
    ("repeater", "[repeater]\nstart = newest\n"),
    ("mongo", "[mongo]\nenabled = yes\n"),
    ("mongo", "[mongo]\nuri = mongodb://db.example.net/\n"),
    ("mongo", "[mongo]\ndatabase = meters\n"),
])
def test_configured_companion_passes_its_check(tmp_path: Path, section: str, text: str) -> None:
    conf = write(tmp_path, f"[service]\nstate_dir = {tmp_path}\n{text}")
    done = run(section, conf, "--check-config")
    assert done.returncode == 0 and "configuration OK" in done.stdout, done


@pytest.mark.parametrize(("section", "text"), [
    ("repeater", "[mqtt]\nhost = broker.example.net\n[repeater]\nenabled = no\n"),
    ("repeater", "[mqtt]\nhost = localhost\n"),  # the shipped default, spelled out
    ("mongo", "[mongo]\nuri = mongodb://db.example.net/\nenabled = no\n"),
])
def test_companion_switched_off_or_left_at_localhost_is_refused(
        tmp_path: Path, section: str, text: str) -> None:
    conf = write(tmp_path, f"[service]\nstate_dir = {tmp_path}\n{text}")
    done = run(section, conf, "--check-config")
    assert done.returncode == 78 and f"[{section}] enabled = yes" in done.stderr, done
