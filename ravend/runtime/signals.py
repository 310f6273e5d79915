"""The signals every ravend program answers the same way: SIGTERM and SIGINT stop it, SIGHUP
reloads it where the program can (``systemctl reload``)."""

from __future__ import annotations

import signal
from collections.abc import Callable
from types import FrameType


def install_signals(on_stop: Callable[[], object],
                    on_reload: Callable[[], object] | None = None) -> None:
    """SIGTERM and SIGINT stop, SIGHUP (if handled) reloads: the same for every service."""

    def stop(signum: int, frame: FrameType | None) -> None:
        on_stop()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    if on_reload is not None:
        def reload(signum: int, frame: FrameType | None) -> None:
            on_reload()

        signal.signal(signal.SIGHUP, reload)
