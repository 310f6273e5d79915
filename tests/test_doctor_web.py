"""``ravenctl doctor`` on ravend-web's [web] setup: silent while it is left at its defaults,
one line naming what is wrong otherwise (the real ravenctl against real files)."""

from __future__ import annotations

from pathlib import Path

import bcrypt

from tests.test_doctor import conf, doctor


def test_web_at_its_defaults_is_not_checked(tmp_path: Path) -> None:
    _status, lines, out = doctor(conf(tmp_path, "socket://127.0.0.1:9"))
    assert "web" not in lines, out


def test_web_beyond_loopback_without_a_password_file_fails(tmp_path: Path) -> None:
    status, lines, out = doctor(conf(tmp_path, "socket://127.0.0.1:9",
                                     web={"listen": "0.0.0.0:8080"}))
    assert status == 1
    assert lines["web"].startswith("FAIL  web: [web] listen = 0.0.0.0:8080 is beyond"
                                   " loopback"), out


def test_web_with_a_password_file(tmp_path: Path) -> None:
    secrets = tmp_path / "web.passwd"
    hashed = bcrypt.hashpw(b"pass", bcrypt.gensalt(rounds=4)).decode()
    secrets.write_text(f"anna:{hashed}\nbert:{hashed}\n")
    secrets.chmod(0o640)
    _status, lines, out = doctor(conf(tmp_path, "socket://127.0.0.1:9",
                                      web={"listen": "0.0.0.0:8080",
                                           "password_file": str(secrets)}))
    assert lines["web"] == ("OK    web: ravend-web listens on 0.0.0.0:8080 with a password for"
                            " 2 users"), out
    secrets.chmod(0o644)
    _status, lines, out = doctor(conf(tmp_path, "socket://127.0.0.1:9",
                                      web={"listen": "0.0.0.0:8080",
                                           "password_file": str(secrets)}))
    assert lines["web"].startswith("WARN  web: ") and "readable by others" in lines["web"], out
    secrets.write_text("anna:plain-text\n")
    status, lines, out = doctor(conf(tmp_path, "socket://127.0.0.1:9",
                                     web={"password_file": str(secrets)}))
    assert status == 1 and "expected user:bcrypt-hash" in lines["web"], out
