"""The HTTP server behind [metrics] listen: the standard library's WSGI server, made quiet.

A module of its own so that ``ravend.metrics`` stays cheap to import: wsgiref brings in
http.server, http.client, email and ssl (libssl, and OpenSSL's object table built at import), about
2 MiB of resident memory in a ravend that serves no metrics (bench row ``rss``; the default
configuration has no endpoint). ``MetricsServer.bind`` imports it once an endpoint is bound.
"""

from __future__ import annotations

import logging
import socket
import socketserver
import sys
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer

log = logging.getLogger("ravend.metrics")

#: A scrape that has not sent its request within this time is dropped (its thread ends).
REQUEST_TIMEOUT = 10.0


class QuietHandler(WSGIRequestHandler):
    """One journal line per scrape would drown the lines that matter."""

    timeout = REQUEST_TIMEOUT

    def log_message(self, format: str, *args: object) -> None:
        pass


class ScrapeServer(socketserver.ThreadingMixIn, WSGIServer):
    daemon_threads = True  # a stuck scrape must not hold up the stop
    # Two ravends on one port would split the scrapes between them: let the second fail.
    allow_reuse_port = False

    def __init__(self, address: tuple[Any, ...], family: socket.AddressFamily) -> None:
        self.address_family = family  # read by TCPServer.__init__ when it makes the socket
        super().__init__(address, QuietHandler)

    def server_bind(self) -> None:
        """HTTPServer's bind, without its reverse DNS lookup of the address, which stalls the
        start where DNS is down."""
        socketserver.TCPServer.server_bind(self)
        host, port = self.server_address[:2]
        self.server_name, self.server_port = str(host), int(port)
        self.setup_environ()

    def handle_error(self, request: object, client_address: object) -> None:
        """A scraper that hangs up mid-answer is not ravend's fault: a debug line, not the
        traceback socketserver prints."""
        log.debug("metrics: request from %s failed: %s", client_address, sys.exc_info()[1])
