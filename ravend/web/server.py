"""ravend-web's HTTP server: waitress (Debian's python3-waitress), with bounded worker threads
and connections, so that a slow or idle client holds one thread at most and never blocks the
others; SIGTERM and SIGINT stop it cleanly (exit status 0)."""

from __future__ import annotations

import logging
import signal
from typing import TYPE_CHECKING, Any

from ravend.runtime.notify import Notifier

if TYPE_CHECKING:
    from ravend.config import WebConfig

log = logging.getLogger("ravend.web")


def serve(app: Any, web: WebConfig, on_stop: Any = None) -> int:
    """Serve ``app`` on [web] listen until SIGTERM or SIGINT; 0 then."""
    from waitress.server import create_server  # type: ignore[import-untyped]

    from ravend.config_values import split_listen

    host, port = split_listen(web.listen)
    server = create_server(
        app, host=host, port=port, threads=web.threads,
        connection_limit=web.connection_limit, channel_timeout=int(web.channel_timeout),
        # Small writes (a live view's event) go out at once, not when a buffer fills.
        send_bytes=1, ident="ravend-web", clear_untrusted_proxy_headers=True,
        # Its main loop wakes this often when nothing happens (answers wake it at once).
        asyncore_loop_timeout=5)

    def stop(signum: int, _frame: Any) -> None:
        raise SystemExit(0)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    log.info("ravend-web listening on http://%s/ (%d threads, %d connections at most)",
             web.listen, web.threads, web.connection_limit)
    notifier = Notifier()
    notifier.notify("READY=1")
    try:
        server.run()
    except SystemExit:
        pass
    finally:
        notifier.notify("STOPPING=1")
        if on_stop is not None:
            on_stop()
        server.close()
        server.task_dispatcher.shutdown(timeout=2)
    return 0
