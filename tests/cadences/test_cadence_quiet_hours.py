"""Quiet hours for a cadence started by a call at night: the first step answers the call at once, every
later step waits for the recipient's window, however soon after the call it falls due."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from cadences.models import StepStatus
from tests.cadences.helpers import cadence_messages
from tests.support.config import BASIC_CONFIG, SOUTH, store_hours

CHICAGO = ZoneInfo("America/Chicago")
CALLER = "+13125550199"  # Chicago, IL
QUICK = """
  - key: quick
    steps:
      - {after: 0s, text: "Hi, this is {store}. Sorry we missed your call!"}
      - {after: 3s, text: "Second: {store} here."}
      - {after: 6s, text: "Third: {store} again."}
"""


def chicago(hour: int, minute: int = 0) -> datetime:
    return datetime(2026, 11, 24, hour, minute, tzinfo=CHICAGO)  # a Tuesday


@pytest.fixture
def quick_cadence(configure: Callable[[str], list[str]]) -> None:
    config = BASIC_CONFIG.replace("cadences:\n", "cadences:" + QUICK, 1)
    config = config.replace("record: false, cadence: missed-call}\n", "record: false, cadence: quick}\n")
    configure(store_hours(config, "open"))


@pytest.mark.usefixtures("quick_cadence")
def test_night_call_gets_one_text_and_the_follow_ups_wait_for_eight(missed_call, work, texts, clock, snapshot, db):
    clock.set(chicago(6, 10))
    missed_call(to=SOUTH, caller=CALLER)
    work()
    clock.advance(timedelta(seconds=3))
    work()
    clock.advance(timedelta(seconds=3))
    work()
    work()  # the next sweep records what the guard decided
    assert [m["Body"] for m in texts(CALLER)] == ["Hi, this is South Ford. Sorry we missed your call!"]
    first, second, third = cadence_messages(db)
    assert first.answers_contact is True
    assert (second.answers_contact, third.answers_contact) == (False, False)
    for deferred in (second, third):
        assert deferred.refusal_code == "quiet_hours"
        assert deferred.send_after == chicago(8, 0)
    assert snapshot().statuses() == [StepStatus.SENT.value, StepStatus.DEFERRED.value, StepStatus.DEFERRED.value]

    clock.set(chicago(7, 59))
    work()
    assert len(texts(CALLER)) == 1
    clock.set(chicago(8, 0))
    work()
    work()
    assert [m["Body"] for m in texts(CALLER)] == [
        "Hi, this is South Ford. Sorry we missed your call!",
        "Second: South Ford here.",
        "Third: South Ford again.",
    ]


@pytest.mark.usefixtures("quick_cadence")
def test_by_day_the_steps_go_at_their_offsets(missed_call, work, texts, clock):
    clock.set(chicago(10, 0))
    missed_call(to=SOUTH, caller=CALLER)
    work()
    clock.advance(timedelta(seconds=3))
    work()
    clock.advance(timedelta(seconds=3))
    work()
    assert len(texts(CALLER)) == 3
