"""``ravend-web``: parses arguments, loads the config, checks who may look, serves the
dashboard (ravend.web)."""

from __future__ import annotations

import argparse
import logging
import sys
from typing import TYPE_CHECKING

from ravend.cli import common
from ravend.config import Config, ConfigError
from ravend.runtime.packages import require

if TYPE_CHECKING:
    from ravend.web.auth import BasicAuth

DESCRIPTION = """\
Serve the dashboard of what ravend stored (Now, Day, Week, Month, Year, Data, Device) and its
read-only JSON API under /api/v1/, from the SQLite store (or MySQL/MariaDB), read-only.
Settings: [web] in the configuration file.
"""

EPILOG = """\
examples:
  ravend-web --check-config
  ravend-web --config ./ravend.conf --state-dir ./state --listen 127.0.0.1:8080
exit status: 0 stopped by SIGTERM/SIGINT, 78 configuration error (also: listening beyond
loopback without a password file or auth = none), 1 other failure.
See ravend-web(8) and ravend.conf(5).
"""


def parser() -> argparse.ArgumentParser:
    return common.parser("ravend-web", DESCRIPTION, EPILOG, overrides=_overrides)


def _overrides(p: argparse.ArgumentParser) -> None:
    common.add_state_dir(p)
    p.add_argument("--listen", metavar="HOST:PORT", help="override [web] listen")


def _configure(args: argparse.Namespace) -> Config:
    config = common.configure(args)
    if not args.listen:
        return config
    from ravend.config import replace
    from ravend.config_values import web_listen

    try:
        return replace(config, web={"listen": web_listen(args.listen)})
    except ValueError as exc:
        raise ConfigError(f"--listen {args.listen!r}: expected {exc}") from None


def _check(config: Config) -> BasicAuth | None:
    """Who may look (the password file read now, so that a bad one is refused at start)."""
    from ravend.web.auth import BasicAuth, policy, read_password_file

    auth = None
    if policy(config.web) == "basic":
        users = read_password_file(config.web.password_file)
        # Only recommended by the package; BasicAuth hashes its unknown users' stand-in now.
        require("bcrypt", "python3-bcrypt", "[web] password_file is set, but ")
        auth = BasicAuth(users)
    require("waitress", "python3-waitress")
    return auth


def _ok(config: Config, auth: BasicAuth | None) -> str:
    return (f"listening on {config.web.listen}, {'password required' if auth else 'no password'};"
            f" reading {config.web.store}")


def _start(config: Config, auth: BasicAuth | None) -> int:
    from ravend.web.api import Context
    from ravend.web.app import App
    from ravend.web.server import serve
    from ravend.web.store import Stores
    from ravend.web.stream import Poller

    stores = Stores(config)
    poller = Poller(stores, config.web.max_streams)
    poller.start()
    try:
        from ravend.config_values import split_listen

        app = App(Context(config, stores, poller), auth,
                  listen_host=split_listen(config.web.listen)[0])
        return serve(app, config.web, poller)
    except OSError as exc:
        logging.getLogger("ravend.web").error("cannot listen on %s: %s", config.web.listen, exc)
        return 1


PROGRAM = common.Program("ravend-web", check=_check, start=_start, ok=_ok, configure=_configure)


def main(argv: list[str] | None = None) -> int:
    return common.run(PROGRAM, parser().parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
