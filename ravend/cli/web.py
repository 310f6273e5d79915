"""``ravend-web``: parses arguments, loads the config, checks who may look, serves the
dashboard (ravend.web)."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from ravend import __version__
from ravend.config import DEFAULT_PATH, ConfigError
from ravend.runtime.config_loader import load_config, refuse
from ravend.runtime.logs import setup_logging

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
    p = argparse.ArgumentParser(prog="ravend-web", description=DESCRIPTION, epilog=EPILOG,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("-c", "--config", default=DEFAULT_PATH, metavar="PATH",
                   help=f"configuration file (default {DEFAULT_PATH})")
    p.add_argument("--check-config", action="store_true",
                   help="validate the configuration, print the result, exit (0 ok, 78 bad)")
    p.add_argument("--state-dir", type=Path, help="override [service] state_dir")
    p.add_argument("--listen", metavar="HOST:PORT", help="override [web] listen")
    p.add_argument("--log-level", choices=["debug", "info", "warning", "error"],
                   help="override [service] log_level")
    p.add_argument("--version", action="version", version=f"ravend-web {__version__}")
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        config = load_config(args.config, state_dir=args.state_dir, log_level=args.log_level)
        if args.listen:
            from ravend.config import replace
            from ravend.config_values import web_listen

            try:
                config = replace(config, web={"listen": web_listen(args.listen)})
            except ValueError as exc:
                raise ConfigError(f"--listen {args.listen!r}: expected {exc}") from None
        from ravend.web.auth import BasicAuth, policy, read_password_file

        auth = None
        if policy(config.web) == "basic":
            auth = BasicAuth(read_password_file(config.web.password_file))
        try:
            import waitress  # type: ignore[import-untyped]  # noqa: F401
        except ImportError:
            raise ConfigError("python3-waitress is not installed"
                              " (apt install python3-waitress)") from None
    except ConfigError as exc:
        return refuse("ravend-web", exc)
    if args.check_config:
        print(f"ravend-web: configuration OK ({config.source}; listening on {config.web.listen},"
              f" {'password required' if auth else 'no password'}; reading {config.web.store})")
        return 0

    setup_logging(config.service.log_level)
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
        return serve(app, config.web, poller.stop)
    except OSError as exc:
        logging.getLogger("ravend.web").error("cannot listen on %s: %s", config.web.listen, exc)
        return 1


if __name__ == "__main__":
    sys.exit(main())
