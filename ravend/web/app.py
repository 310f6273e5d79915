"""The WSGI application: routing, the read-only rule, authentication, security headers, the
static pages and Debian's Chart.js.

Only GET and HEAD exist (anything else: 405): no request changes anything, and meter commands
stay on ravend's control socket. Every answer carries a strict Content-Security-Policy (the
pages have no inline script or style), nosniff, no framing and no referrer.
"""

from __future__ import annotations

import logging
import mimetypes
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

from ravend.db import store_errors
from ravend.web import api
from ravend.web.auth import BasicAuth, TooManyFailures
from ravend.web.stream import Stream, client_gone

log = logging.getLogger("ravend.web")

STATIC = Path(__file__).parent / "static"
#: Debian's libjs-chart.js (Depends of the package).
CHART_JS = Path("/usr/share/javascript/chart.js/chart.min.js")
PAGES = {"/": "index.html", "/index.html": "index.html", "/app.js": "app.js",
         "/style.css": "style.css"}

SECURITY_HEADERS = [
    ("Content-Security-Policy",
     "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:;"
     " connect-src 'self'; object-src 'none'; base-uri 'none'; frame-ancestors 'none';"
     " form-action 'none'"),
    ("X-Content-Type-Options", "nosniff"),
    ("X-Frame-Options", "DENY"),
    ("Referrer-Policy", "no-referrer"),
    ("Cross-Origin-Opener-Policy", "same-origin"),
    ("Cross-Origin-Resource-Policy", "same-origin"),
]
REASONS = {200: "OK", 400: "Bad Request", 401: "Unauthorized", 404: "Not Found",
           405: "Method Not Allowed", 421: "Misdirected Request", 429: "Too Many Requests",
           500: "Internal Server Error", 503: "Service Unavailable"}
#: The names a browser on this machine reaches ravend-web by without a password.
LOOPBACK_HOSTS = frozenset({"localhost", "127.0.0.1", "::1"})


def host_name(header: str) -> str:
    """The host of a Host header: the port aside, lower case, an IPv6 address without its
    brackets, no trailing dot."""
    host = header.strip().lower()
    if host.startswith("["):
        host = host[1:host.find("]")] if "]" in host else host
    elif host.count(":") == 1:
        host = host.split(":", 1)[0]
    return host.rstrip(".")

StartResponse = Callable[..., Any]


class App:
    """ravend-web's WSGI application."""

    def __init__(self, ctx: api.Context, auth: BasicAuth | None = None,
                 chart_js: Path = CHART_JS, listen_host: str = "") -> None:
        self.ctx = ctx
        self.auth = auth
        self.chart_js = chart_js
        self.hosts = LOOPBACK_HOSTS | ({host_name(listen_host)} if listen_host else set())

    def misdirected(self, environ: dict[str, Any]) -> bool:
        """Without a password, only a Host this machine's own names: else a web page whose
        name an attacker re-points at 127.0.0.1 (DNS rebinding) could read the API from the
        visitor's browser. A request without Host (HTTP/1.0, no browser) passes."""
        host = environ.get("HTTP_HOST")
        return self.auth is None and host is not None and host_name(host) not in self.hosts

    def __call__(self, environ: dict[str, Any], start_response: StartResponse
                 ) -> Iterable[bytes]:
        method = environ.get("REQUEST_METHOD", "GET")
        path = environ.get("PATH_INFO", "/") or "/"
        if self.misdirected(environ):
            answer = api.json_answer({"error": "unknown host name: without a password,"
                                      " ravend-web answers only to localhost, 127.0.0.1, [::1]"
                                      " and its listen address"}, 421)
        elif method not in ("GET", "HEAD"):
            answer = api.json_answer({"error": f"{method} is not allowed: ravend-web only"
                                      " reads"}, 405)
            answer.headers.append(("Allow", "GET, HEAD"))
        elif self.auth is not None and (refused := self.refused(environ)) is not None:
            answer = refused
        else:
            answer = self.route(path, environ.get("QUERY_STRING", ""))
        if isinstance(answer.body, Stream):
            # The stream ends when its client has closed, and frees its slot.
            answer.body.watch(client_gone(environ))
        return self.respond(answer, start_response, head=method == "HEAD")

    def refused(self, environ: dict[str, Any]) -> api.Answer | None:
        """None when the request's user and password pass; else 401, or 429 for a client
        address that gave too many wrong ones lately (auth.FailureLimit)."""
        assert self.auth is not None
        try:
            if self.auth.check(environ.get("HTTP_AUTHORIZATION"), environ.get("REMOTE_ADDR", "")):
                return None
        except TooManyFailures as exc:
            answer = api.json_answer({"error": f"{exc}"}, 429)
            answer.headers.append(("Retry-After", str(exc.retry_after)))
            return answer
        answer = api.json_answer({"error": "a user name and password are needed"}, 401)
        answer.headers.append(("WWW-Authenticate",
                               f'Basic realm="{self.auth.realm}", charset="UTF-8"'))
        return answer

    def route(self, path: str, query: str) -> api.Answer:
        handler = api.ROUTES.get(path.rstrip("/") if path != "/" else path)
        if handler is None:
            return self.static(path)
        try:
            params = parse_qs(query, keep_blank_values=True, strict_parsing=False)
            return handler(self.ctx, params)
        except api.BadRequest as exc:
            return api.json_answer({"error": str(exc)}, 400)
        except FileNotFoundError as exc:
            return api.json_answer({"error": str(exc)}, 503)
        except store_errors() as exc:
            self.ctx.stores.drop()
            log.warning("store: %s", exc)
            return api.json_answer({"error": f"the store cannot be read: {exc}"}, 503)

    def static(self, path: str) -> api.Answer:
        if path == "/chart.js":
            file = self.chart_js
        elif path in PAGES:
            file = STATIC / PAGES[path]
        else:
            return api.json_answer({"error": f"no such page: {path}"}, 404)
        try:
            body = file.read_bytes()
        except OSError:
            return api.json_answer({"error": f"{file} is missing (package libjs-chart.js?)"}, 404)
        kind = mimetypes.guess_type(file.name)[0] or "application/octet-stream"
        if kind.startswith("text/") or kind.endswith("javascript"):
            kind += "; charset=utf-8"
        return api.Answer(200, body, kind, [("Cache-Control", "no-cache")])

    def respond(self, answer: api.Answer, start_response: StartResponse, *,
                head: bool) -> Iterable[bytes]:
        headers = [("Content-Type", answer.content_type), *SECURITY_HEADERS, *answer.headers]
        if not any(name == "Cache-Control" for name, _ in headers):
            headers.append(("Cache-Control", "no-store"))
        body = answer.body
        if isinstance(body, bytes):
            headers.append(("Content-Length", str(len(body))))
        start_response(f"{answer.status} {REASONS.get(answer.status, 'Error')}", headers)
        if head:
            if not isinstance(body, bytes):
                close = getattr(body, "close", None)
                if close is not None:
                    close()
            return [b""]
        # A stream is handed over as it is: the server calls its close() at the end.
        return [body] if isinstance(body, bytes) else body

