"""A configured feature whose Debian package is missing: each program says which package to
install, in one line, and exits 78 (EX_CONFIG, which the units do not restart), before it
touches a port, a store or a broker. The module is made unimportable by a package of the same
name first on PYTHONPATH that raises ImportError, as a missing package does."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers.process import ROOT

EX_CONFIG = 78

CASES = [
    # program module, blocked import, config, package named
    ("ravend.cli.ravend", "paho", "[mqtt]\nenabled = yes\n", "python3-paho-mqtt"),
    ("ravend.cli.repeater", "paho", "[repeater]\nenabled = yes\n", "python3-paho-mqtt"),
    ("ravend.cli.mongo_ingest", "pymongo", "[mongo]\nenabled = yes\n", "python3-pymongo"),
    ("ravend.cli.mongo_ingest", "paho", "[mongo]\nenabled = yes\n", "python3-paho-mqtt"),
]


def run_without(tmp_path: Path, blocked: str, program: str, config: str = "",
                *args: str) -> subprocess.CompletedProcess[str]:
    """``program`` with ``blocked`` unimportable and a config of a state dir, a port and
    ``config``."""
    blocker = tmp_path / "block" / blocked
    blocker.mkdir(parents=True)
    (blocker / "__init__.py").write_text("raise ImportError('blocked by the test')\n")
    conf = tmp_path / "ravend.conf"
    conf.write_text(f"[service]\nstate_dir = {tmp_path / 'state'}\n"
                    f"[device]\nport = {tmp_path / 'stick'}\n" + config)
    env = {**os.environ, "PYTHONPATH": f"{blocker.parent}{os.pathsep}{ROOT}"}
    return subprocess.run([sys.executable, "-m", program, "--config", str(conf), *args],
                          env=env, capture_output=True, text=True, timeout=30)


#: ``--check-config`` checks what the start checks: each package a start refuses to run without.
CHECK_CASES = [
    *CASES,
    ("ravend.cli.ravend", "serial", "", "python3-serial"),
    ("ravend.cli.ravend", "MySQLdb", "[mysql]\nenabled = yes\n", "python3-mysqldb"),
    ("ravend.cli.ravend", "prometheus_client", "[metrics]\nlisten = 127.0.0.1:9105\n",
     "python3-prometheus-client"),
    ("ravend.cli.repeater", "MySQLdb", "[repeater]\nsource = mysql\n", "python3-mysqldb"),
]


def case_ids(cases: list[tuple[str, str, str, str]]) -> list[str]:
    return [f"{c[0].rsplit('.', 1)[1]}-{c[1]}" for c in cases]


@pytest.mark.parametrize(("program", "blocked", "config", "package"), CASES,
                         ids=case_ids(CASES))
def test_missing_package_is_named_in_one_line_with_exit_78(
        tmp_path: Path, program: str, blocked: str, config: str, package: str) -> None:
    proc = run_without(tmp_path, blocked, program, config)
    assert proc.returncode == EX_CONFIG, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, lines
    assert f"apt install {package}" in lines[0]
    state = tmp_path / "state"
    assert not state.exists() or not any(state.iterdir())  # nothing was started


@pytest.mark.parametrize(("program", "blocked", "config", "package"), CHECK_CASES,
                         ids=case_ids(CHECK_CASES))
def test_check_config_refuses_what_the_start_refuses(
        tmp_path: Path, program: str, blocked: str, config: str, package: str) -> None:
    """"configuration OK" must mean the start will not then exit 78."""
    proc = run_without(tmp_path, blocked, program, config, "--check-config")
    assert proc.returncode == EX_CONFIG, (proc.stdout, proc.stderr)
    assert "configuration OK" not in proc.stdout
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, lines
    assert f"apt install {package}" in lines[0]
    start = run_without(tmp_path / "start", blocked, program, config)
    assert start.returncode == EX_CONFIG  # the start refuses the same configuration
    assert f"apt install {package}" in start.stderr


def test_daemon_mode_without_python3_daemon_names_it(tmp_path: Path) -> None:
    proc = run_without(tmp_path, "daemon", "ravend.cli.ravend", "", "--daemon", "--pidfile",
                       str(tmp_path / "ravend.pid"))
    assert proc.returncode != 0
    assert "apt install python3-daemon" in proc.stderr
    assert not (tmp_path / "ravend.pid").exists()


def test_ravend_web_with_a_password_file_names_python3_bcrypt(tmp_path: Path) -> None:
    """python3-bcrypt is only recommended: ravend-web with a password file and without it
    refuses in one line, exit 78 (its check makes the unknown users' stand-in hash), rather
    than a traceback and a restart."""
    secrets = tmp_path / "web.passwd"
    secrets.write_text("anna:$2b$04$" + "a" * 21 + "O" + "a" * 31 + "\n")
    config = f"[web]\npassword_file = {secrets}\n"
    for args in (["--check-config"], []):
        proc = run_without(tmp_path / f"run{len(args)}", "bcrypt", "ravend.cli.web", config,
                           *args)
        assert proc.returncode == EX_CONFIG, (proc.stdout, proc.stderr)
        assert "configuration OK" not in proc.stdout
        lines = proc.stderr.strip().splitlines()
        assert len(lines) == 1, lines
        assert "apt install python3-bcrypt" in lines[0]
