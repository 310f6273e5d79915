"""ravend-web's HTTP server: waitress (Debian's python3-waitress), with bounded worker threads
and connections, so that a slow or idle client holds one thread at most and never blocks the
others; SIGTERM and SIGINT stop it cleanly (exit status 0).

A clean stop, in order: the signal wakes every live view's stream, which ends its answer (the
last chunk sent by its own worker thread); waitress's loop stops and waits for its workers;
only then are the sockets closed. Closing first would cut those last writes short (tracebacks
about a closed file descriptor)."""

from __future__ import annotations

import logging
import signal
from typing import TYPE_CHECKING, Any

from ravend.runtime.notify import Notifier

if TYPE_CHECKING:
    from ravend.config import WebConfig
    from ravend.web.stream import Poller

log = logging.getLogger("ravend.web")


class SaidAlready(logging.Filter):
    """Drops waitress's "Exception while serving" traceback for a download cut short
    (api.DownloadCut): ravend-web has already said what happened in one line."""

    def filter(self, record: logging.LogRecord) -> bool:
        from ravend.web.api import DownloadCut

        exc = record.exc_info[1] if record.exc_info else None
        return not isinstance(exc, DownloadCut)


#: Seconds the stop waits for the worker threads (a stream ends within a health query's time).
STOP_WAIT = 3


def serve(app: Any, web: WebConfig, streams: Poller | None = None) -> int:
    """Serve ``app`` on [web] listen until SIGTERM or SIGINT; 0 then. ``streams``: the live
    views' poller, told to end them when a signal comes and stopped at the end."""
    from waitress.server import create_server  # type: ignore[import-untyped]

    from ravend.config_values import split_listen

    host, port = split_listen(web.listen)
    logging.getLogger("waitress").addFilter(SaidAlready())
    server = create_server(
        app, host=host, port=port, threads=web.threads,
        connection_limit=web.connection_limit, channel_timeout=int(web.channel_timeout),
        # Small writes (a live view's event) go out at once, not when a buffer fills.
        send_bytes=1, ident="ravend-web", clear_untrusted_proxy_headers=True,
        # Its main loop wakes this often when nothing happens (answers wake it at once).
        asyncore_loop_timeout=5)
    stopping = False

    def stop(signum: int, _frame: Any) -> None:
        nonlocal stopping
        if not stopping:
            stopping = True
            ending = streams.end_streams() if streams is not None else 0
            log.info("ravend-web stopping (%s), ending %d live view%s",
                     signal.Signals(signum).name, ending, "" if ending == 1 else "s")
        # waitress's loop ends on this and waits for its worker threads.
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
        if streams is not None:
            streams.stop()
        server.task_dispatcher.shutdown(timeout=STOP_WAIT)
        server.close()
    return 0
