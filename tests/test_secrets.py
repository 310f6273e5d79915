"""Passwords never printed: whatever characters a password holds (/ @ : % # ? spaces, any
script), the config errors, `--check-config` of ravend and ravend-mongo-ingest and `ravenctl
doctor` leave it out. Hypothesis picks the passwords; the real CLIs print the messages."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ravend.config import ConfigError, load
from ravend.config_secrets import redact_uri
from ravend.mongo_ingest import check
from tests.helpers.config import write

ROOT = Path(__file__).resolve().parent.parent

#: Any printable character, the URI delimiters above all; no line breaks (one value per line).
PASSWORD_CHARS = st.one_of(
    st.sampled_from("/@:%#?& ;=[]+!$'\"\\"),
    st.characters(blacklist_categories=("Cs", "Cc", "Zl", "Zp")),
)
#: The markers keep a short password from matching the rest of a message by chance.
PASSWORDS = st.text(PASSWORD_CHARS, min_size=1, max_size=24).map(lambda t: f"Pw{t}9Q")

#: URIs that hold a password and that something refuses: ravend (the scheme) or pymongo.
BAD_URIS = [
    "mongo://ravend:{pw}@db.example/",
    "mongodb://ravend:{pw}@db.example:27017/?w=banana&journal=maybe",
    "mongodb://ravend:{pw}@db.example:99999/",
    "mongodb://ravend:{pw}@/",
]
SLOW = settings(max_examples=8, deadline=None,
                suppress_health_check=[HealthCheck.function_scoped_fixture])


def run(module: str, *args: str) -> str:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run([sys.executable, "-m", module, *args], capture_output=True,
                          text=True, env=env, cwd=ROOT, timeout=60)
    return done.stdout + done.stderr


def refusal(text: str, path: Path) -> str:
    """What loading and checking the config says (empty when both take it)."""
    path.write_text(text, encoding="utf-8")
    try:
        check(load(path))
    except ConfigError as exc:
        return str(exc)
    return ""


@given(password=PASSWORDS, uri=st.sampled_from(BAD_URIS), user=st.sampled_from(["", "u@x:"]))
@settings(max_examples=300, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
def test_no_config_error_about_a_uri_carries_its_password(tmp_path: Path, password: str,
                                                          uri: str, user: str) -> None:
    value = uri.format(pw=password).replace("ravend:", f"ravend{user}:")
    message = refusal(f"[mongo]\nuri = {value}\n", tmp_path / "ravend.conf")
    assert message, value  # each of these URIs is refused
    assert password not in message, message
    assert password not in redact_uri(value)


@given(password=PASSWORDS)
@SLOW
def test_check_config_of_ravend_and_the_ingest_never_print_a_password(tmp_path: Path,
                                                                      password: str) -> None:
    for uri in BAD_URIS:
        conf = write(tmp_path, f"[mongo]\nuri = {uri.format(pw=password)}\n"
                               f"[mqtt]\npassword = {password}\n"
                               f"[mysql]\npassword = {password}\n")
        for module in ("ravend.cli.ravend", "ravend.cli.mongo_ingest"):
            out = run(module, "--config", str(conf), "--check-config")
            assert "configuration" in out, out  # OK, or the error
            assert password not in out, (module, out)


def test_ravenctl_doctor_names_the_bad_uri_but_not_its_password(tmp_path: Path) -> None:
    password = "s3cr/t@pa:ss%2F#?x é"
    conf = write(tmp_path, f"[mongo]\nuri = mongo://ravend:{password}@db.example/\n")
    out = run("ravend.cli.ravenctl", "doctor", "--config", str(conf))
    assert "[mongo] uri" in out and "mongo://***@db.example/" in out, out
    assert password not in out and "s3cr" not in out and "pa:ss" not in out, out
    ingest = run("ravend.cli.mongo_ingest", "--config", str(write(
        tmp_path, f"[mongo]\nuri = mongodb://ravend:{password}@db.example:99999/\n")),
        "--check-config")
    assert "configuration error" in ingest and "mongodb://***@db.example:99999/" in ingest, \
        ingest
    assert "s3cr" not in ingest and "pa:ss" not in ingest, ingest
    assert redact_uri("mongodb://a:b/c@d@host:1/db?x=y#z") == "mongodb://***@host:1/db"
