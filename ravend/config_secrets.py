"""Secrets of the configuration: read from files only their owner may read, and kept out of
every message about them.

Passwords and URIs with credentials appear in config errors, `--check-config` output, doctor
lines and driver errors; everything that repeats a configured value goes through here, so a
password is never echoed, whatever characters it holds.
"""

from __future__ import annotations

import os
import re

from ravend.config_error import ConfigError


def read_secret(path: str | os.PathLike[str], where: str = "") -> str:
    """The first line of a secret file that only its owner may read, or ConfigError."""
    label = f"{where}: " if where else ""
    try:
        mode = os.stat(path).st_mode
        if mode & 0o077:
            raise ConfigError(
                f"{label}{path} is accessible by group or others (mode {mode & 0o777:04o}):"
                f" make it readable by the service user only (chmod 600 {path})")
        with open(path, encoding="utf-8") as handle:
            first = handle.readline()
    except FileNotFoundError:
        raise ConfigError(f"{label}{path}: no such file") from None
    except PermissionError:
        raise ConfigError(f"{label}{path}: permission denied (readable by the service user?)"
                          ) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{label}{path}: cannot read: {exc}") from None
    return first.rstrip("\r\n")


#: Keys whose value is a secret or may hold one (a URI's password): never echoed in full.
SECRET_KEYS = frozenset({"password", "uri"})
#: What stands for a secret that was left out.
REDACTED = "***"


def redact_uri(uri: str) -> str:
    """A URI fit for a log line: without its credentials and options, whatever they contain.

    The credentials end at the *last* "@" (a password may hold "@", "/", ":", "?" or "#"
    unescaped), so everything from the scheme up to it goes, before any other splitting."""
    scheme, sep, rest = uri.partition("://")
    if not sep:
        scheme, rest = "", uri
    if "@" in rest:
        rest = REDACTED + "@" + rest.rpartition("@")[2]
    rest = re.split(r"[?#]", rest, maxsplit=1)[0]
    return f"{scheme}{sep}{rest}"


def uri_secrets(uri: str) -> list[str]:
    """The parts of a URI's credentials that must not appear in a message about it: the whole
    user-info and its pieces (split at : / @ ? #), longest first."""
    rest = uri.partition("://")[2] or uri
    if "@" not in rest:
        return []
    userinfo = rest.rpartition("@")[0]
    pieces = {userinfo, *(p for p in re.split(r"[:/@?#]", userinfo) if len(p) >= 3)}
    return sorted(pieces, key=len, reverse=True)


def scrub(message: str, secrets: list[str]) -> str:
    """message with every secret in it replaced by REDACTED (a driver's error may quote part
    of the URI it refused)."""
    for secret in secrets:
        if secret:
            message = message.replace(secret, REDACTED)
    return message


def shown_value(key: str, raw: str) -> str:
    """A refused value as an error message repeats it: secrets redacted."""
    if key == "uri":
        return repr(redact_uri(raw.strip()))
    if key in SECRET_KEYS:
        return REDACTED
    return repr(raw)
