"""The number health check's configuration problems, defined precisely (tracked_numbers/health.py)."""

from __future__ import annotations

from sqlalchemy import select

from gateway.models import Agent, Contact
from tests.support.config import BASIC_CONFIG
from tracked_numbers.health import Kind, configuration_problems

NEVER_OPEN = BASIC_CONFIG.replace(
    'service: {mon: "07:30-18:00"', 'parts: {mon: closed}\n      service: {mon: "07:30-18:00"', 1
)
PARTS_NUMBER = '  - {number: "+12025550127", store: north-honda, department: parts, source: Parts, ring: [alice]}\n'


def problems(db) -> list[tuple[Kind, str]]:
    with db.session() as session:
        return [(p.kind, p.key) for p in configuration_problems(session)]


def test_the_test_dealer_group_is_healthy(configured, db):
    assert problems(db) == []


def test_an_agent_the_provider_refused_or_who_opted_out_gets_no_alerts(configured, db):
    with db.session() as session:
        session.add(Contact(phone="+12025550111", textable=False, not_textable_reason="provider error 30006"))
        session.add(Contact(phone="+12025550112", opted_out=True))
    assert problems(db) == [(Kind.AGENT, "agent:alice"), (Kind.AGENT, "agent:ben")]
    with db.session() as session:
        found = {p.key: p.text for p in configuration_problems(session)}
    assert "marked not textable (provider error 30006)" in found["agent:alice"]
    assert "opted out" in found["agent:ben"]


def test_an_inactive_agent_is_not_checked_and_an_empty_ring_list_is(configured, db):
    with db.session() as session:
        session.add(Contact(phone="+12025550111", opted_out=True))
        session.scalars(select(Agent).where(Agent.key == "alice")).one().active = False
    assert problems(db) == [(Kind.RING, "ring:+12025550126")]  # alice alone rang it


def test_a_never_open_department_is_a_problem_only_with_nobody_of_it_to_call_back(configure, db):
    configure(NEVER_OPEN + PARTS_NUMBER)
    assert problems(db) == [(Kind.DEPARTMENT, "department:north-honda:parts")]
    configure(NEVER_OPEN.replace("departments: [sales], role: agent}", "departments: [sales, parts], role: agent}", 1)
              + PARTS_NUMBER)
    assert problems(db) == []


def test_a_closed_department_no_number_routes_to_is_not_a_problem(configure, db):
    configure(NEVER_OPEN)
    assert problems(db) == []
