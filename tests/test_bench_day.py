"""The peak-day benchmark's reading of what happened (bench/day.py `analyse`): the README's figures come
from it, so its matching of texts and alerts to contacts is tested like the product's code."""

from __future__ import annotations

from bench.day import FIRST_TEXT_MARK, Contact, analyse, national

CUSTOMER = "+12025551480"
OWNER = "+12025550113"


def _call(index: int, outcome: str, started: float, ended: float) -> Contact:
    return Contact(index, CUSTOMER, "call", outcome, started=started, ended=ended, sid=f"CA{index}", duration=index)


def _alert(at: float, head: str) -> dict[str, object]:
    return {"To": OWNER, "Body": f"{head}: {national(CUSTOMER)}, Cars.com, Bench Motors sales.", "t": at, "t_in": at}


def test_overlapping_calls_are_matched_to_what_followed_their_end() -> None:
    # Three calls at once from one customer; the second to start is the first to end.
    contacts = [
        _call(1, "no-answer", started=10.0, ended=16.5),
        _call(2, "hangup", started=10.1, ended=14.4),
        _call(3, "no-answer", started=10.2, ended=15.8),
    ]
    first_text = {"To": CUSTOMER, "Body": f"Hi, this is Bench Motors. {FIRST_TEXT_MARK}!", "t": 14.5, "t_in": 14.5}
    messages = [
        first_text,
        _alert(14.45, "Caller hung up"),
        _alert(15.9, "Missed call"),
        _alert(16.6, "Missed call"),
    ]

    outcome = analyse(contacts, messages, [])

    assert [round(lag, 3) for lag in outcome.first_text] == [0.1]
    assert sorted(round(lag, 3) for lag in outcome.alert_call) == [0.05, 0.1, 0.1]
    assert outcome.alerts_missing == 0
    assert not outcome.missing_first_text
    assert not outcome.double_first_text


def test_an_alert_that_never_came_is_counted_missing() -> None:
    contacts = [_call(1, "no-answer", started=10.0, ended=12.0), _call(2, "voicemail", started=20.0, ended=25.0)]
    messages = [
        {"To": CUSTOMER, "Body": FIRST_TEXT_MARK, "t": 12.2, "t_in": 12.2},
        _alert(12.3, "Missed call"),
    ]

    outcome = analyse(contacts, messages, [])

    assert [round(lag, 3) for lag in outcome.alert_call] == [0.3]
    assert outcome.alerts_missing == 1
