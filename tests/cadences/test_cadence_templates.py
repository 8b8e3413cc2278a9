"""Cadence texts: variables filled in, missing values left out without leaving "Hi ," behind."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from cadences.templates import appointment_time, first_name, render

VALUES = {
    "first_name": "Maria",
    "store": "North Honda",
    "agent": "Alice",
    "source": "Cars.com",
    "tracked_number": "(202) 555-0123",
    "appointment_time": "Tue Nov 24 at 3:30 PM",
}


def test_every_variable_is_filled_in():
    text = "Hi {first_name}, {agent} at {store} ({source}): {appointment_time}. Call {tracked_number}."
    assert render(text, VALUES) == (
        "Hi Maria, Alice at North Honda (Cars.com): Tue Nov 24 at 3:30 PM. Call (202) 555-0123."
    )


@pytest.mark.parametrize(
    ("template", "expected"),
    [
        ("Hi {first_name}, this is {store}.", "Hi, this is North Honda."),
        ("Thanks {first_name}!", "Thanks!"),
        ("Hello, {first_name}!", "Hello!"),
        ("Hello, {first_name}, how can we help?", "Hello, how can we help?"),
        ("Hi {first_name}", "Hi"),
        ("{first_name}, welcome to {store}.", "Welcome to North Honda."),
        ("{agent} from {store} here.", "From North Honda here."),
        ("Great. {agent} will call you. Bye", "Great. Will call you. Bye"),
        ("Hi {first_name} it's {store}", "Hi it's North Honda"),
        ("Hi {first_name} {agent}!", "Hi!"),
        ("Hi {first_name},\n{agent} here at {store}", "Hi,\nHere at North Honda"),
        ("{first_name}", ""),
    ],
)
def test_missing_values_leave_no_dangling_space_or_comma(template, expected):
    values = {**VALUES, "first_name": None, "agent": "  "}
    assert render(template, values) == expected


def test_values_are_not_expanded_again_and_literal_braces_stay():
    values = {**VALUES, "first_name": "{store}"}
    assert render("Hi {first_name} {{VIP}}", values) == "Hi {store} {VIP}"


def test_unpaired_braces_are_sent_as_written_rather_than_failing():
    assert render("Hi {first_name", VALUES) == "Hi {first_name"


@pytest.mark.parametrize(
    ("moment", "zone", "expected"),
    [
        (datetime(2026, 11, 24, 20, 30, tzinfo=UTC), "America/New_York", "Tue Nov 24 at 3:30 PM"),
        (datetime(2026, 11, 24, 15, 5, tzinfo=UTC), "America/Chicago", "Tue Nov 24 at 9:05 AM"),
        (datetime(2026, 11, 25, 5, 0, tzinfo=UTC), "America/New_York", "Wed Nov 25 at 12:00 AM"),
        (datetime(2026, 7, 4, 16, 0, tzinfo=UTC), "America/New_York", "Sat Jul 4 at 12:00 PM"),
    ],
)
def test_appointment_time_reads_in_the_store_time_zone(moment, zone, expected):
    assert appointment_time(moment, zone) == expected


def test_no_appointment_renders_nothing():
    assert appointment_time(None, "America/New_York") is None


def test_agent_is_the_first_name_of_the_owner():
    assert first_name("Alice Ng") == "Alice"
    assert first_name("  ") is None
    assert first_name(None) is None
