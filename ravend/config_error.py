"""The one error of a configuration that cannot be used, and the exit status that says so.

Apart from ravend.config so that what the config's modules share (ravend.config_secrets reads
secret files and refuses them with it) raises the same error without an import circle; every
other module imports it from ravend.config.
"""

from __future__ import annotations

#: sysexits.h's EX_CONFIG: systemd units do not restart a service that exits with it.
EX_CONFIG = 78


class ConfigError(Exception):
    """The configuration cannot be used; ``str()`` is the one line to log."""

    exit_status = EX_CONFIG
