"""Cadences started by a lead status: appointment reminders counted back from the appointment time,
moved with it, skipped when past, stopped when it is cancelled; the no-show recovery cadence."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import select

from cadences.models import SkipReason, StepStatus, StopReason
from gateway import events
from gateway.leads import set_status
from gateway.models import Lead, LeadStatus
from tests.cadences.helpers import local

pytestmark = pytest.mark.usefixtures("cadence_config")

THURSDAY_3_30 = local(2026, 11, 26, 15, 30)


def book(db, clock, at, status=LeadStatus.APPOINTMENT_SET):
    with db.session() as session:
        lead = session.scalars(select(Lead)).one()
        lead.appointment_at = at
        set_status(session, lead, status, clock.now())


def move(db, clock, at):
    with db.session() as session:
        lead = session.scalars(select(Lead)).one()
        old = lead.appointment_at
        lead.appointment_at = at
        changes = {"appointment_at": (old.isoformat() if old else None, at.isoformat() if at else None)}
        events.lead_updated.send(session, lead=lead, changes=changes, now=clock.now())


def bodies(texts):
    return [m["Body"] for m in texts()]


@pytest.fixture
def booked_lead(missed_call, work, db, clock, texts):
    missed_call()
    work()
    assert len(texts()) == 1
    book(db, clock, THURSDAY_3_30)
    work()


def test_booking_stops_the_missed_call_cadence_and_confirms_at_once(booked_lead, texts, snapshot):
    sent = bodies(texts)
    assert sent[1] == "Hi, you're booked at North Honda for Thu Nov 26 at 3:30 PM. Reply C to confirm."
    state = snapshot()
    assert state.enrolment("missed-call").stop_reason == StopReason.STATUS.value
    enrolment = state.enrolment("appointment")
    assert enrolment.anchor == THURSDAY_3_30
    assert [s.due_at for s in state.steps_of("appointment")][1:] == [
        local(2026, 11, 25, 15, 30),
        local(2026, 11, 26, 13, 30),
    ]


def test_reminders_go_relative_to_the_appointment(booked_lead, work, clock, texts, snapshot):
    clock.set(local(2026, 11, 25, 15, 29))
    work()
    assert len(texts()) == 2
    clock.set(local(2026, 11, 25, 15, 30))
    work()
    assert bodies(texts)[2] == "Reminder: North Honda tomorrow, Thu Nov 26 at 3:30 PM."
    clock.set(local(2026, 11, 26, 13, 30))
    work()
    assert bodies(texts)[3] == "See you soon! North Honda, Thu Nov 26 at 3:30 PM."
    work()
    state = snapshot()
    assert [s.status for s in state.steps_of("appointment")] == ["sent", "sent", "sent"]
    assert state.enrolment("appointment").status == "completed"


def test_reminders_already_past_when_booked_are_skipped_not_sent_late(missed_call, work, db, clock, texts, snapshot):
    missed_call()
    work()
    book(db, clock, clock.now() + timedelta(hours=3))  # today 13:00: the day-before reminder is past
    work()
    state = snapshot()
    steps = state.steps_of("appointment")
    assert steps[1].status == StepStatus.SKIPPED.value
    assert steps[1].skip_reason == SkipReason.PAST_DUE.value
    assert steps[2].status == StepStatus.SCHEDULED.value
    clock.advance(timedelta(hours=1))
    work()
    assert bodies(texts)[-1] == "See you soon! North Honda, Tue Nov 24 at 1:00 PM."
    assert len(texts()) == 3


def test_a_reminder_still_unsent_when_the_appointment_begins_is_skipped(booked_lead, work, clock, texts, snapshot):
    clock.set(THURSDAY_3_30 + timedelta(minutes=5))  # the worker was down through both reminders
    work()
    assert len(texts()) == 2
    steps = snapshot().steps_of("appointment")
    assert [s.skip_reason for s in steps[1:]] == [SkipReason.PAST_DUE.value] * 2


def test_a_moved_appointment_moves_the_reminders(booked_lead, work, db, clock, texts, snapshot):
    friday_11 = local(2026, 11, 27, 11, 0)
    move(db, clock, friday_11)
    state = snapshot()
    assert state.enrolment("appointment").anchor == friday_11
    assert [s.due_at for s in state.steps_of("appointment")][1:] == [
        local(2026, 11, 26, 11, 0),
        local(2026, 11, 27, 9, 0),
    ]
    assert any(e.kind == "cadence-rescheduled" for e in state.events)
    clock.set(local(2026, 11, 25, 15, 30))  # the old day-before time
    work()
    assert len(texts()) == 2
    clock.set(local(2026, 11, 26, 11, 0))
    work()
    assert bodies(texts)[2] == "Reminder: North Honda tomorrow, Fri Nov 27 at 11:00 AM."
    clock.set(local(2026, 11, 27, 9, 0))
    work()
    assert bodies(texts)[3] == "See you soon! North Honda, Fri Nov 27 at 11:00 AM."
    assert len(texts()) == 4


def test_moving_the_appointment_closer_skips_what_is_past_and_moving_it_back_restores_it(
    booked_lead, work, db, clock, texts, snapshot
):
    move(db, clock, clock.now() + timedelta(hours=1))
    steps = snapshot().steps_of("appointment")
    assert [s.skip_reason for s in steps[1:]] == [SkipReason.PAST_DUE.value] * 2
    move(db, clock, THURSDAY_3_30)
    steps = snapshot().steps_of("appointment")
    assert [s.status for s in steps[1:]] == [StepStatus.SCHEDULED.value] * 2
    clock.set(local(2026, 11, 25, 15, 30))
    work()
    assert len(texts()) == 3


def test_a_cleared_appointment_stops_the_reminders(booked_lead, work, db, clock, texts, snapshot):
    move(db, clock, None)
    state = snapshot()
    enrolment = state.enrolment("appointment")
    assert enrolment.status == "stopped"
    assert enrolment.stop_reason == StopReason.APPOINTMENT_CANCELLED.value
    assert [e.data["reason"] for e in state.events if e.kind == "cadence-stopped"][-1] == "appointment_cancelled"
    clock.set(THURSDAY_3_30)
    work()
    assert len(texts()) == 2


def test_leaving_the_appointment_statuses_cancels_and_confirming_does_not(
    booked_lead, work, db, clock, texts, snapshot
):
    with db.session() as session:
        lead = session.scalars(select(Lead)).one()
        set_status(session, lead, LeadStatus.APPOINTMENT_CONFIRMED, clock.now())
    assert snapshot().enrolment("appointment").status == "active"
    with db.session() as session:
        lead = session.scalars(select(Lead)).one()
        set_status(session, lead, LeadStatus.CONTACTED, clock.now())
    enrolment = snapshot().enrolment("appointment")
    assert enrolment.stop_reason == StopReason.APPOINTMENT_CANCELLED.value
    clock.set(THURSDAY_3_30)
    work()
    assert len(texts()) == 2


def test_human_contact_keeps_appointment_reminders(booked_lead, missed_call, work, clock, texts, snapshot):
    missed_call(outcome="answer")  # the customer calls and talks to an agent
    work()
    assert snapshot().enrolment("appointment").status == "active"
    clock.set(local(2026, 11, 25, 15, 30))
    work()
    assert len(texts()) == 3


def test_no_show_stops_the_reminders_and_starts_recovery(booked_lead, work, db, clock, texts, snapshot):
    clock.set(THURSDAY_3_30 + timedelta(hours=1))
    work()
    with db.session() as session:
        lead = session.scalars(select(Lead)).one()
        set_status(session, lead, LeadStatus.NO_SHOW, clock.now())
    state = snapshot()
    assert state.enrolment("appointment").status in {"stopped", "completed"}
    assert state.enrolment("no-show").status == "active"
    count = len(texts())
    clock.advance(timedelta(hours=1))
    work()
    assert len(texts()) == count + 1
    assert bodies(texts)[-1] == "We missed you at North Honda today. Want to pick a new time? Call (202) 555-0123."


def test_booking_without_a_time_waits_then_starts_when_the_time_is_set(missed_call, work, db, clock, texts, snapshot):
    missed_call()
    work()
    book(db, clock, None)
    work()
    state = snapshot()
    assert [e.cadence_key for e in state.enrolments] == ["missed-call"]
    assert any(e.kind == "cadence-waiting" for e in state.events)
    move(db, clock, THURSDAY_3_30)
    work()
    assert snapshot().enrolment("appointment").anchor == THURSDAY_3_30
    assert bodies(texts)[-1].endswith("for Thu Nov 26 at 3:30 PM. Reply C to confirm.")
