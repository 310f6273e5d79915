"""``ravenctl doctor``'s look at ravend-web's setup ([web]): who may look, the password file,
and the Debian packages it serves with. Asked only when the file sets something in [web]:
a setup that leaves the dashboard at its defaults has nothing to check."""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

from ravend.config import ConfigError, WebConfig
from ravend.doctor_check import Check, Status
from ravend.plural import plural

if TYPE_CHECKING:
    from ravend.config import Config

CHART_JS = Path("/usr/share/javascript/chart.js/chart.min.js")


def check_web(config: Config, chart_js: Path = CHART_JS) -> Check | None:
    """None while [web] is left at its defaults; else one finding."""
    web = config.web
    if web == WebConfig():
        return None
    from ravend.web.auth import policy, read_password_file

    try:
        rule = policy(web)
        users = read_password_file(web.password_file) if rule == "basic" else {}
    except ConfigError as exc:
        return Check("web", Status.FAIL, str(exc),
                     "fix [web] in the configuration; then: ravend-web --check-config")
    try:
        import waitress  # type: ignore[import-untyped]  # noqa: F401
    except ImportError:
        return Check("web", Status.WARN, "python3-waitress is not installed: ravend-web cannot"
                     " start", "apt install python3-waitress")
    if rule == "basic":
        mode = os.stat(web.password_file).st_mode
        if mode & 0o007:
            return Check("web", Status.WARN, f"{web.password_file} is readable by others (mode"
                         f" {mode & 0o777:04o})", f"chmod o= {web.password_file}")
    if not chart_js.exists():
        return Check("web", Status.WARN, f"{chart_js} is missing: the pages show tables but no"
                     " charts", "apt install libjs-chart.js")
    who = (f"a password for {plural(len(users), 'user')}" if rule == "basic"
           else "no password (loopback)" if web.auth == "auto" else "no password (auth = none)")
    return Check("web", Status.OK, f"ravend-web listens on {web.listen} with {who}")
