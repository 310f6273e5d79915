"""The one account of an outage (ravend.runtime.outage) that the sink workers, the repeater and
the MongoDB ingest keep: which failures and recoveries are worth a line, and the retry pace."""

from __future__ import annotations

from dataclasses import dataclass

from ravend.runtime.backoff import Backoff
from ravend.runtime.outage import Outage


@dataclass
class State:
    up: bool = False
    last_error: str = ""


def test_a_failure_is_news_once_and_the_same_one_again_only_waits_longer() -> None:
    state = State(up=True)
    outage = Outage(state, Backoff(1.0, 4.0))
    assert outage.failed("broker: refused")
    assert (state.up, state.last_error, outage.delay) == (False, "broker: refused", 1.0)
    assert not outage.failed("broker: refused")
    assert outage.delay == 2.0
    assert not outage.failed("broker: refused")
    assert not outage.failed("broker: refused")
    assert outage.delay == 4.0  # capped
    # Another error is news, retried at the pace reached so far.
    assert outage.failed("store: locked")
    assert (state.last_error, outage.delay) == ("store: locked", 4.0)


def test_a_recovery_is_news_only_after_a_failure_and_resets_the_pace() -> None:
    state = State()
    outage = Outage(state, Backoff(1.0, 8.0))
    assert not outage.recovered()  # the first success of all: nothing was lost
    assert state.up
    assert not outage.recovered()  # up already
    assert outage.failed("down")
    assert not outage.failed("down")
    assert outage.delay == 2.0
    assert outage.recovered()
    assert (state.up, state.last_error, outage.delay) == (True, "", 1.0)
    assert outage.failed("down")  # news again after the recovery
