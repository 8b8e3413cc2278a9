"""The ring decision: whom to ring in what order, on duty or not, open or closed."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from gateway.calls.routes import RingAgent, Route
from tracked_numbers.services import agent_by_key, department_open, ring_steps

# Tuesday 24 November 2026, 10:00 in New York.
OPEN = datetime(2026, 11, 24, 15, 0, tzinfo=UTC)
# The same day, 22:00 in New York.
CLOSED = datetime(2026, 11, 25, 3, 0, tzinfo=UTC)
# Schedules as stored: {"mon": [["09:00", "20:00"]], ...}
WEEKDAYS = {day: [["09:00", "20:00"]] for day in ("mon", "tue", "wed", "thu", "fri")}


def agent(key: str, schedule: dict[str, Any] | None = None) -> RingAgent:
    return RingAgent(id=ord(key[0]), key=key, name=key.title(), phone="+12025550111", schedule=schedule)


def route(strategy: str, *agents: RingAgent) -> Route:
    return Route(
        number_id=1, number="+12025550123", store_id=1, store_key="north", store_name="North Honda",
        timezone="America/New_York", main_line="+12025550100", department="sales", hours=WEEKDAYS,
        source="Cars.com", source_weight=0, strategy=strategy, ring=agents, ring_timeout=18, screen=True,
        record=False, cadence_key=None, prompts={},
    )


def no_rotation(_number: int) -> int:
    return 0


def test_simultaneous_rings_everyone_on_duty_at_once():
    plan = route("simultaneous", agent("alice"), agent("ben"), agent("cara", {"tue": [["13:00", "20:00"]]}))
    assert ring_steps(plan, OPEN, "ben", no_rotation) == [["alice", "ben"]]


def test_sequential_rings_the_lead_owner_first_then_the_list_in_order():
    plan = route("sequential", agent("alice"), agent("ben"), agent("cara"))
    assert ring_steps(plan, OPEN, None, no_rotation) == [["alice"], ["ben"], ["cara"]]
    assert ring_steps(plan, OPEN, "cara", no_rotation) == [["cara"], ["alice"], ["ben"]]
    assert ring_steps(plan, OPEN, "someone-else", no_rotation) == [["alice"], ["ben"], ["cara"]]


def test_round_robin_starts_at_the_calls_turn_and_wraps():
    plan = route("round-robin", agent("alice"), agent("ben"), agent("cara"))
    assert ring_steps(plan, OPEN, None, lambda _number: 4) == [["ben"], ["cara"], ["alice"]]
    assert ring_steps(plan, OPEN, "alice", lambda _number: 1) == [["alice"], ["ben"], ["cara"]]


def test_off_duty_agents_are_skipped_and_nobody_on_duty_rings_nobody():
    plan = route("sequential", agent("alice", {"tue": [["13:00", "20:00"]]}), agent("ben"))
    assert ring_steps(plan, OPEN, "alice", no_rotation) == [["ben"]]
    nobody = route("simultaneous", agent("alice", {"wed": [["09:00", "17:00"]]}))
    assert ring_steps(nobody, OPEN, None, no_rotation) == []


def test_the_department_is_open_by_its_hours_in_the_stores_zone():
    plan = route("simultaneous", agent("alice"))
    assert department_open(plan, OPEN)
    assert not department_open(plan, CLOSED)


def test_agents_are_found_by_key_on_the_ring_list_only():
    plan = route("simultaneous", agent("alice"), agent("ben"))
    found = agent_by_key(plan, "ben")
    assert found is not None
    assert found.name == "Ben"
    assert agent_by_key(plan, "zed") is None
