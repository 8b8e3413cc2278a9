"""Shared pieces of the cadence tests: a dealer group with appointment and no-show cadences, and short
ways to read enrolments, steps and texts."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from zoneinfo import ZoneInfo

from sqlalchemy import select

from cadences.models import CadenceEnrolment, CadenceStep
from gateway.database import Database
from gateway.models import Lead, LeadEvent, Message
from tests.support.config import BASIC_CONFIG

APPOINTMENT_CADENCES = """
  - key: appointment
    trigger: {status: appointment_set}
    steps:
      - {after: 0s, text: "Hi {first_name}, you're booked at {store} for {appointment_time}. Reply C to confirm."}
      - {after: -24h, relative_to: appointment, text: "Reminder: {store} tomorrow, {appointment_time}."}
      - {after: -2h, relative_to: appointment, text: "See you soon {first_name}! {store}, {appointment_time}."}
  - key: no-show
    trigger: {status: no_show}
    steps:
      - {after: 1h, text: "We missed you at {store} today. Want to pick a new time? Call {tracked_number}."}
"""
CADENCE_CONFIG = BASIC_CONFIG.replace("cadences:\n", "cadences:" + APPOINTMENT_CADENCES, 1)

FIRST_TEXT = "Hi, this is North Honda. Sorry we missed your call! How can we help?"


@dataclass
class Snapshot:
    enrolments: list[CadenceEnrolment]
    steps: list[CadenceStep]
    events: list[LeadEvent]

    def statuses(self) -> list[str]:
        return [step.status for step in self.steps]

    def enrolment(self, key: str = "missed-call") -> CadenceEnrolment:
        found = [e for e in self.enrolments if e.cadence_key == key]
        assert len(found) == 1, found
        return found[0]

    def steps_of(self, key: str) -> list[CadenceStep]:
        ids = {e.id for e in self.enrolments if e.cadence_key == key}
        return [s for s in self.steps if s.enrolment_id in ids]


def only_lead(db: Database) -> Lead:
    with db.session() as session:
        return session.scalars(select(Lead)).one()


def cadence_messages(db: Database) -> list[Message]:
    with db.session() as session:
        return list(session.scalars(select(Message).where(Message.kind == "cadence").order_by(Message.id)))


def local(year: int, month: int, day: int, hour: int, minute: int = 0) -> datetime:
    return datetime(year, month, day, hour, minute, tzinfo=ZoneInfo("America/New_York"))


def read_snapshot(db: Database) -> Snapshot:
    with db.session() as session:
        return Snapshot(
            list(session.scalars(select(CadenceEnrolment).order_by(CadenceEnrolment.id))),
            list(session.scalars(select(CadenceStep).order_by(CadenceStep.enrolment_id, CadenceStep.step_index))),
            list(session.scalars(select(LeadEvent).order_by(LeadEvent.id))),
        )
