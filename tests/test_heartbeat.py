"""The companions' systemd messages (ravend.runtime.notify.Heartbeat): WATCHDOG=1 once per
watchdog interval, STATUS= at most every status interval, and how long an idle loop may sleep."""

from __future__ import annotations

import pytest

from ravend.runtime.notify import Heartbeat


class Recorder:
    """A Notifier that keeps what it was told, with the watchdog interval systemd would give."""

    def __init__(self, watchdog: float | None) -> None:
        self.watchdog = watchdog
        self.sent: list[str] = []

    def notify(self, message: str) -> None:
        self.sent.append(message)

    def watchdog_interval(self) -> float | None:
        return self.watchdog


def test_pings_and_status_are_paced_by_their_own_intervals() -> None:
    notifier = Recorder(watchdog=2.0)
    beat = Heartbeat(notifier, status_interval=5.0)  # type: ignore[arg-type]
    lines = iter(["a", "b", "c"])
    assert beat.beat(10.0, lambda: next(lines))
    assert notifier.sent == ["WATCHDOG=1", "STATUS=a"]
    assert not beat.beat(11.0, lambda: next(lines))  # nothing due
    assert not beat.beat(12.0, lambda: next(lines))  # the ping only
    assert notifier.sent == ["WATCHDOG=1", "STATUS=a", "WATCHDOG=1"]
    assert beat.beat(15.0, lambda: next(lines))
    assert notifier.sent[-2:] == ["WATCHDOG=1", "STATUS=b"] and beat.status == "b"
    # News out of turn: the next periodic STATUS= is timed from it.
    beat.send_status("news", 16.0)
    assert beat.until_status(16.0) == 5.0
    assert not beat.beat(20.0, lambda: next(lines))  # 4 s after the news: the ping only
    assert notifier.sent[-2:] == ["STATUS=news", "WATCHDOG=1"]
    assert beat.beat(21.0, lambda: next(lines))
    assert notifier.sent[-1] == "STATUS=c"


def test_an_idle_loop_sleeps_until_the_next_ping_and_without_a_watchdog_as_long_as_it_likes(
) -> None:
    beat = Heartbeat(Recorder(watchdog=2.0), status_interval=5.0)  # type: ignore[arg-type]
    beat.beat(10.0, lambda: "s")
    assert beat.wait(10.5, 60.0) == pytest.approx(1.5)
    assert beat.wait(10.5, 1.0) == 1.0
    quiet = Heartbeat(Recorder(watchdog=None), status_interval=5.0)  # type: ignore[arg-type]
    quiet.beat(10.0, lambda: "s")
    assert quiet.wait(10.5, 60.0) == 60.0
    assert quiet.notifier.sent == ["STATUS=s"]  # type: ignore[attr-defined]
