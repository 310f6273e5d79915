"""The optional Debian packages a configured feature needs: one missing is a configuration
error (exit 78, which the units do not restart) whose one line names the package to install,
found before the program touches a port, a store or a broker."""

from __future__ import annotations

import importlib

from ravend.config import ConfigError


def require(module: str, package: str, why: str = "") -> None:
    """Import ``module`` (its Debian package ``package``), or refuse: ConfigError saying what to
    apt install, after ``why`` (what asked for it, where that is not plain)."""
    try:
        importlib.import_module(module)
    except ImportError:
        raise ConfigError(f"{why}{package} is not installed (apt install {package})") from None
