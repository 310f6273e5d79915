"""Who may look: the [web] auth policy and HTTP basic authentication against bcrypt hashes.

Listening beyond loopback shows anyone who reaches the port whether someone is at home, so it
takes a password file, or ``auth = none`` said in so many words; ``policy`` gives the one line
ravend-web refuses to start with otherwise. A bcrypt check costs a quarter of a second by
design, so a password that passed is remembered (as a keyed digest, never in clear) and the
next request of the same browser is not slowed.

That cost must not tell anything either: a user name that is not in the file is checked
against a stand-in hash of the same cost, so it takes as long as a wrong password and names
cannot be probed by timing. And it must not be had for free: ``FailureLimit`` stops a client
address after ``FAILURES`` wrong passwords within ``WINDOW`` seconds (429, Retry-After), without
running bcrypt, so guessing goes at a few words a minute rather than at all the CPU's speed.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import ipaddress
import logging
import math
import os
import re
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from ravend.config import ConfigError
from ravend.config_values import split_listen

if TYPE_CHECKING:
    from ravend.config import WebConfig

log = logging.getLogger("ravend.web")


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


#: A bcrypt hash as bcrypt checks it: its variant, a cost of 4 to 31, 22 characters of salt
#: (16 bytes: the last character one of four) and 31 of hash. Anything else would fail at
#: every login (or at start: ``cost_of``).
_HASH = re.compile(r"\$2[aby]\$(0[4-9]|[12][0-9]|3[01])\$[./A-Za-z0-9]{21}[.Oeu][./A-Za-z0-9]{31}")


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
        if not sep or not user or not _HASH.fullmatch(hashed):
            raise ConfigError(f"[web] password_file {path}:{number}: expected user:bcrypt-hash")
        # htpasswd -B writes $2y$, which python3-bcrypt checks as the same $2b$.
        users[user] = hashed.replace("$2y$", "$2b$", 1).encode()
    if not users:
        raise ConfigError(f"[web] password_file {path}: no user in it")
    return users


#: Wrong passwords a client address may give within WINDOW seconds before it must wait.
FAILURES = 10
WINDOW = 60.0
#: Client addresses the limiter remembers at most (the oldest go first): bounded memory
#: whatever the number of addresses that try.
MAX_CLIENTS = 4096
#: The bytes of a password bcrypt uses (htpasswd -B hashes no more).
BCRYPT_BYTES = 72


class TooManyFailures(Exception):
    """This client gave too many wrong passwords: refused without a check for ``retry_after``
    seconds."""

    def __init__(self, retry_after: int) -> None:
        super().__init__(f"too many wrong passwords: try again in {retry_after} s")
        self.retry_after = retry_after


def client_key(address: str) -> str:
    """What failures are counted by: an IPv4 address; for IPv6 its /64, since a host chooses
    any address of its network at will (counted one by one, each would bring FAILURES more
    guesses); an IPv4 client seen on a dual-stack socket (``::ffff:a.b.c.d``) as IPv4."""
    try:
        ip = ipaddress.ip_address(address.partition("%")[0])  # (a zone: fe80::1%eth0)
    except ValueError:
        return address
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return str(ip.ipv4_mapped)
        return str(ipaddress.IPv6Network((ip, 64), strict=False))
    return str(ip)


class FailureLimit:
    """Wrong passwords per client in a fixed window: the window opens at a client's first
    failure and, while it is open, the FAILURES-th failure shuts the client out until it
    closes. A client is an address, an IPv6 one's /64 (``client_key``). At most
    ``max_clients`` are kept (the oldest window dropped first), so a flood of addresses costs
    bounded memory; a dropped one merely starts afresh."""

    def __init__(self, failures: int = FAILURES, window: float = WINDOW,
                 max_clients: int = MAX_CLIENTS,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.failures = failures
        self.window = window
        self.max_clients = max_clients
        self.clock = clock
        self._clients: dict[str, tuple[float, int]] = {}  # address -> (window start, failures)
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._clients)

    def wait(self, client: str) -> int:
        """Seconds this client must wait before its next check; 0: it may try now."""
        with self._lock:
            return self._left(self.clock(), client_key(client))

    def take(self, client: str) -> tuple[int, bool]:
        """One try for ``client``, counted as a failure before its password is checked, so
        that guesses sent at once (one per server thread) cannot all pass before the first is
        counted; ``give_back`` when it passed. (0, whether it is the last the window allows),
        or (seconds to wait, False) when none is left."""
        now, client = self.clock(), client_key(client)
        with self._lock:
            left = self._left(now, client)
            if left:
                return left, False
            return 0, self._count(now, client) == self.failures

    def give_back(self, client: str) -> None:
        """The try ``take`` counted passed: not a failure after all."""
        client = client_key(client)
        with self._lock:
            entry = self._clients.get(client)
            if entry is None:
                return  # its window ended, or it was dropped
            start, count = entry
            if count > 1:
                self._clients[client] = (start, count - 1)
            else:
                del self._clients[client]

    def _left(self, now: float, client: str) -> int:
        """(Under the lock) seconds ``client`` must wait; 0 when it may try, its window
        forgotten once it has passed."""
        entry = self._clients.get(client)
        if entry is None:
            return 0
        start, count = entry
        if now - start >= self.window:
            del self._clients[client]
            return 0
        return math.ceil(start + self.window - now) if count >= self.failures else 0

    def _count(self, now: float, client: str) -> int:
        """One more failure of ``client`` (under the lock); its failures in the window now."""
        start, count = self._clients.pop(client, (now, 0))
        if now - start >= self.window:
            start, count = now, 0
        if len(self._clients) >= self.max_clients:
            self._expire(now)
        while len(self._clients) >= self.max_clients:
            del self._clients[next(iter(self._clients))]  # the oldest entry
        self._clients[client] = (start, count + 1)  # newest last
        return count + 1

    def _expire(self, now: float) -> None:
        for client in [c for c, (start, _n) in self._clients.items()
                       if now - start >= self.window]:
            del self._clients[client]


_COST = re.compile(rb"^\$2[aby]\$(\d\d)\$")


def cost_of(hashed: bytes) -> int:
    """The work factor (log2 rounds) of a bcrypt hash; 12, bcrypt's default, if unreadable."""
    m = _COST.match(hashed)
    return int(m.group(1)) if m else 12


class BasicAuth:
    """Checks an Authorization header against the password file's bcrypt hashes."""

    realm = "ravend"

    def __init__(self, users: dict[str, bytes], limit: FailureLimit | None = None) -> None:
        import bcrypt

        self.users = users
        self.limit = FailureLimit() if limit is None else limit  # (an empty one is falsy)
        self._key = os.urandom(32)
        self._passed: set[bytes] = set()
        self._lock = threading.Lock()
        # What an unknown user name is checked against: a hash of a random password that no
        # one knows, as costly as the dearest hash of the file.
        rounds = max(cost_of(h) for h in users.values()) if users else 12
        self._stand_in = bcrypt.hashpw(os.urandom(16).hex().encode(),
                                       bcrypt.gensalt(rounds=rounds))

    def check(self, header: str | None, client: str = "") -> bool:
        """Whether the header carries a user and password of the file; TooManyFailures when
        ``client`` (its address) must wait first. A password that passed before is accepted
        even then: the limit is on guesses, not on the household's browsers behind the same
        address."""
        if not header or not header.startswith("Basic "):
            return False
        try:
            pair = base64.b64decode(header[6:], validate=True).decode()
            user, sep, password = pair.partition(":")
        except (ValueError, UnicodeDecodeError):
            return False
        if not sep:
            return False
        known = self.users.get(user)
        hashed = self._stand_in if known is None else known
        token = hmac.new(self._key, hashed + b"\0" + password.encode(), hashlib.sha256).digest()
        with self._lock:
            if known is not None and token in self._passed:
                return True
        wait, last = self.limit.take(client)
        if wait:
            raise TooManyFailures(wait)
        # Checked for an unknown name too, against the stand-in: the same cost either way.
        if not self._bcrypt_check(password.encode(), hashed) or known is None:
            if last:
                log.warning("%s: %d wrong passwords within %.0f s: refused for a while (429)",
                            client or "a client", self.limit.failures, self.limit.window)
            return False
        self.limit.give_back(client)
        with self._lock:
            if len(self._passed) > 1000:
                self._passed.clear()
            self._passed.add(token)
        return True

    @staticmethod
    def _bcrypt_check(password: bytes, hashed: bytes) -> bool:
        """bcrypt's check as htpasswd -B hashed: by the first 72 bytes (bcrypt 5 raises on a
        longer password, python3-bcrypt cuts it). A NUL, which no hash can hold (and which
        python3-bcrypt raises on), is a wrong password, not a 500."""
        import bcrypt

        if b"\0" in password:
            return False
        return bool(bcrypt.checkpw(password[:BCRYPT_BYTES], hashed))
