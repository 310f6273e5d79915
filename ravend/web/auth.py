"""Who may look: the [web] auth policy and HTTP basic authentication against bcrypt hashes.

Listening beyond loopback shows anyone who reaches the port whether someone is at home, so it
takes a password file, or ``auth = none`` said in so many words; ``policy`` gives the one line
ravend-web refuses to start with otherwise. A bcrypt check costs a quarter of a second by
design, so a password that passed is remembered (as a keyed digest, never in clear) and the
next request of the same browser is not slowed.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import ipaddress
import os
import threading
from typing import TYPE_CHECKING

from ravend.config import ConfigError
from ravend.config_values import split_listen

if TYPE_CHECKING:
    from ravend.config import WebConfig


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False  # a host name: whatever it resolves to, not only this machine


def policy(web: WebConfig) -> str:
    """``none`` or ``basic`` for this [web] section; ConfigError (the refusal) when it
    listens beyond loopback with neither a password file nor ``auth = none``."""
    host, _port = split_listen(web.listen)
    if web.auth == "none":
        return "none"
    if web.auth == "basic" or web.password_file:
        if not web.password_file:
            raise ConfigError("[web] auth = basic needs a password_file")
        return "basic"
    if is_loopback(host):
        return "none"
    raise ConfigError(f"[web] listen = {web.listen} is beyond loopback: set password_file"
                      " (bcrypt hashes, see ravend-web(8)) or, to let anyone look, auth = none")


def read_password_file(path: str) -> dict[str, bytes]:
    """user → bcrypt hash, from ``user:hash`` lines; ConfigError saying what is wrong."""
    try:
        with open(path, encoding="utf-8") as handle:
            lines = handle.read().splitlines()
    except FileNotFoundError:
        raise ConfigError(f"[web] password_file {path}: no such file") from None
    except PermissionError:
        raise ConfigError(f"[web] password_file {path}: permission denied (readable by the"
                          " service user?)") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"[web] password_file {path}: cannot read: {exc}") from None
    users: dict[str, bytes] = {}
    for number, line in enumerate(lines, 1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        user, sep, hashed = line.strip().partition(":")
        if not sep or not user or not hashed.startswith(("$2a$", "$2b$", "$2y$")):
            raise ConfigError(f"[web] password_file {path}:{number}: expected user:bcrypt-hash")
        # htpasswd -B writes $2y$, which python3-bcrypt checks as the same $2b$.
        users[user] = hashed.replace("$2y$", "$2b$", 1).encode()
    if not users:
        raise ConfigError(f"[web] password_file {path}: no user in it")
    return users


class BasicAuth:
    """Checks an Authorization header against the password file's bcrypt hashes."""

    realm = "ravend"

    def __init__(self, users: dict[str, bytes]) -> None:
        self.users = users
        self._key = os.urandom(32)
        self._passed: set[bytes] = set()
        self._lock = threading.Lock()

    def check(self, header: str | None) -> bool:
        if not header or not header.startswith("Basic "):
            return False
        try:
            pair = base64.b64decode(header[6:], validate=True).decode()
            user, sep, password = pair.partition(":")
        except (ValueError, UnicodeDecodeError):
            return False
        hashed = self.users.get(user)
        if not sep or hashed is None:
            return False
        token = hmac.new(self._key, hashed + b"\0" + password.encode(), hashlib.sha256).digest()
        with self._lock:
            if token in self._passed:
                return True
        import bcrypt

        if not bcrypt.checkpw(password.encode(), hashed):
            return False
        with self._lock:
            if len(self._passed) > 1000:
                self._passed.clear()
            self._passed.add(token)
        return True
