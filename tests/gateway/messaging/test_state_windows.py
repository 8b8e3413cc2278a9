"""The state windows for automated texts: each state's edges, by day of the week, in the recipient's zone.

The expected hours are written out here again, from the statutes, rather than read from the table, so a
wrong entry in gateway/messaging/state_windows.py fails a test."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

import phonenumbers
import pytest
from phonenumbers import geocoder

from gateway.messaging.guard import (
    OutboundCheck,
    _next_opening,
    check_outbound,
    next_allowed_at,
    recipient_state,
    recipient_zone,
)
from gateway.messaging.state_windows import AREA_CODE_STATES, FEDERAL, STATE_WINDOWS, Window, window_for

NEW_YORK = ZoneInfo("America/New_York")
CHICAGO = ZoneInfo("America/Chicago")
DENVER = ZoneInfo("America/Denver")
LOS_ANGELES = ZoneInfo("America/Los_Angeles")

WEDNESDAY, SATURDAY, SUNDAY = date(2026, 6, 10), date(2026, 6, 13), date(2026, 6, 14)

Day = tuple[int, int] | None  # (opens, closes) in local hours, or closed

# state: (a number there, its zone, weekday hours, Saturday, Sunday)
EXPECTED: dict[str, tuple[str, ZoneInfo, Day, Day, Day]] = {
    "TX": ("+15125550100", CHICAGO, (9, 21), (9, 21), (12, 21)),  # Austin
    "TX-mountain": ("+19155550100", DENVER, (9, 21), (9, 21), (12, 21)),  # El Paso keeps Mountain time
    "UT": ("+18015550100", DENVER, (8, 21), (8, 21), None),
    "MS": ("+16015550100", CHICAGO, (8, 20), (8, 20), None),
    "LA": ("+15045550100", CHICAGO, (8, 20), (8, 20), None),
    "WA": ("+12065550100", LOS_ANGELES, (8, 20), (8, 20), (8, 20)),
    "CT": ("+12035550100", NEW_YORK, (9, 20), (9, 20), (9, 20)),
    "MA": ("+16175550100", NEW_YORK, (8, 20), (8, 20), (8, 20)),
    "NM": ("+15055550100", DENVER, (9, 21), (9, 21), (9, 21)),
    "RI": ("+14015550100", NEW_YORK, (9, 18), (10, 17), None),
    "FL": ("+13055550100", NEW_YORK, (8, 20), (8, 20), (8, 20)),
    "OK": ("+14055550100", CHICAGO, (8, 20), (8, 20), (8, 20)),
    "MD": ("+14105550100", NEW_YORK, (8, 20), (8, 20), (8, 20)),
    "federal": ("+12125550100", NEW_YORK, (8, 21), (8, 21), (8, 21)),  # New York: no stricter rule
}


def _hours(spec: tuple[str, ZoneInfo, Day, Day, Day], day: date) -> Day:
    _, _, weekdays, saturday, sunday = spec
    return {5: saturday, 6: sunday}.get(day.weekday(), weekdays)


def _at(zone: ZoneInfo, day: date, hour: int, minute: int = 0) -> datetime:
    return datetime.combine(day, time(hour, minute), tzinfo=zone).astimezone(UTC)


def _next_opening_after(spec: tuple[str, ZoneInfo, Day, Day, Day], day: date) -> datetime:
    zone = spec[1]
    for offset in range(1, 8):
        later = day + timedelta(days=offset)
        hours = _hours(spec, later)
        if hours is not None:
            return _at(zone, later, hours[0])
    raise AssertionError("never open")


CASES = [(key, day) for key in EXPECTED for day in (WEDNESDAY, SATURDAY, SUNDAY)]


@pytest.mark.parametrize(("key", "day"), CASES, ids=[f"{k}-{d:%a}" for k, d in CASES])
def test_window_edges(key: str, day: date) -> None:
    spec = EXPECTED[key]
    number, zone = spec[0], spec[1]
    hours = _hours(spec, day)
    if hours is None:
        for hour, minute in ((0, 0), (9, 0), (12, 0), (23, 59)):
            assert next_allowed_at(number, _at(zone, day, hour, minute), "UTC") == _next_opening_after(spec, day)
        return
    opens, closes = hours
    assert next_allowed_at(number, _at(zone, day, 0, 0), "UTC") == _at(zone, day, opens)
    assert next_allowed_at(number, _at(zone, day, opens - 1, 59), "UTC") == _at(zone, day, opens)
    assert next_allowed_at(number, _at(zone, day, opens), "UTC") is None
    assert next_allowed_at(number, _at(zone, day, closes - 1, 59), "UTC") is None
    assert next_allowed_at(number, _at(zone, day, closes), "UTC") == _next_opening_after(spec, day)
    assert next_allowed_at(number, _at(zone, day, 23, 59), "UTC") == _next_opening_after(spec, day)


@pytest.mark.parametrize("key", sorted(EXPECTED))
def test_the_number_says_the_state_and_zone(key: str) -> None:
    number, zone = EXPECTED[key][0], EXPECTED[key][1]
    assert recipient_zone(number, "UTC") == zone
    if key != "federal":
        assert recipient_state(number) == key.split("-")[0]


def test_every_state_in_the_table_is_tested_and_has_its_law() -> None:
    assert set(STATE_WINDOWS) == {key for key in EXPECTED if key not in {"federal", "TX-mountain"}}
    assert all(window.law for window in STATE_WINDOWS.values())
    assert set(AREA_CODE_STATES.values()) == set(STATE_WINDOWS)


@pytest.mark.parametrize(("area_code", "state"), sorted(AREA_CODE_STATES.items()))
def test_the_library_agrees_with_the_area_code_table(area_code: str, state: str) -> None:
    for subscriber in ("2345678", "5550123", "4567890"):
        parsed = phonenumbers.parse(f"+1{area_code}{subscriber}")
        description = geocoder.description_for_valid_number(parsed, "en")
        assert description.endswith(", " + state) or _STATE_NAMES[state] in description


_STATE_NAMES = {
    "FL": "Florida", "OK": "Oklahoma", "MD": "Maryland", "TX": "Texas", "UT": "Utah",
    "MS": "Mississippi", "LA": "Louisiana", "WA": "Washington", "CT": "Connecticut",
    "MA": "Massachusetts", "NM": "New Mexico", "RI": "Rhode Island",
}  # fmt: skip


def test_caps_only_in_florida_oklahoma_and_maryland() -> None:
    capped = {state for state, window in STATE_WINDOWS.items() if window.daily_automated_cap is not None}
    assert capped == {"FL", "OK", "MD"}
    assert all(STATE_WINDOWS[state].daily_automated_cap == 3 for state in capped)


# --- texts a person writes ---------------------------------------------------------------------------


def test_a_person_texting_a_texas_number_keeps_the_federal_window() -> None:
    texas = EXPECTED["TX"][0]
    half_past_eight = _at(CHICAGO, WEDNESDAY, 8, 30)
    assert next_allowed_at(texas, half_past_eight, "UTC", automated=False) is None
    assert next_allowed_at(texas, half_past_eight, "UTC") == _at(CHICAGO, WEDNESDAY, 9)
    assert window_for("TX", automated=False) is FEDERAL


@pytest.mark.parametrize("state", ["FL", "OK", "MD"])
def test_florida_oklahoma_and_maryland_hold_a_persons_texts_too(state: str) -> None:
    assert window_for(state, automated=False) is STATE_WINDOWS[state]


def test_unknown_states_and_other_countries_get_the_federal_window() -> None:
    assert window_for(None, automated=True) is FEDERAL
    assert window_for("NY", automated=True) is FEDERAL
    assert next_allowed_at("+447911123456", _at(NEW_YORK, SUNDAY, 8), "America/New_York") is None


# --- the guard's decision -----------------------------------------------------------------------------

BASE = OutboundCheck(
    to_number=EXPECTED["TX"][0],
    body="North Honda: still looking for that truck?",
    media_count=0,
    now=_at(CHICAGO, SUNDAY, 10),
    fallback_zone="America/New_York",
    opted_out=False,
    textable=True,
    automated=True,
)


def test_a_texas_sunday_morning_follow_up_waits_for_noon() -> None:
    decision = check_outbound(BASE)
    assert decision.code == "quiet_hours"
    assert decision.send_after == _at(CHICAGO, SUNDAY, 12)
    assert decision.reason is not None
    assert "on Sundays under Tex. Bus. & Com. Code § 301.051" in decision.reason
    assert "12:00" in decision.reason


def test_a_utah_sunday_follow_up_waits_for_monday() -> None:
    decision = check_outbound(replace(BASE, to_number=EXPECTED["UT"][0], now=_at(DENVER, SUNDAY, 12)))
    assert decision.send_after == _at(DENVER, SUNDAY + timedelta(days=1), 8)
    assert decision.reason is not None
    assert "no automated texts may go on Sundays under Utah Code § 13-25a-103" in decision.reason


def test_the_answer_to_a_texans_sunday_call_still_goes_at_once() -> None:
    now = BASE.now
    decision = check_outbound(replace(BASE, customer_contacted_at=now - timedelta(seconds=30), answers_contact=True))
    assert decision.allowed is True


def test_a_rhode_island_saturday_closes_at_five() -> None:
    decision = check_outbound(replace(BASE, to_number=EXPECTED["RI"][0], now=_at(NEW_YORK, SATURDAY, 17)))
    # Sunday is closed too: Monday 09:00.
    assert decision.send_after == _at(NEW_YORK, SATURDAY + timedelta(days=2), 9)


# --- the table's own checks ---------------------------------------------------------------------------


def test_a_window_needs_seven_days_that_open_before_they_close() -> None:
    with pytest.raises(ValueError, match="7 days"):
        Window(((time(8), time(20)),) * 6)
    with pytest.raises(ValueError, match="open before"):
        Window(((time(20), time(8)),) * 7)


def test_a_window_never_open_is_an_error_not_a_loop() -> None:
    closed = Window((None,) * 7)
    with pytest.raises(ValueError, match="at least one day"):
        _next_opening(NEW_YORK, closed, _at(NEW_YORK, WEDNESDAY, 12))
