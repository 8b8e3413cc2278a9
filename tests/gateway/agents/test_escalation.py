"""Escalation and the leak ledger, with a moved clock and a real worker: overdue tasks alert the manager
once, then move to the next on-duty agent; leads nobody answered in time are marked leaked, with why."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import select

from gateway.models import Contact, Lead, Task
from tests.gateway.agents.helpers import ALICE, DMITRI, api_key, missed_call, only_lead, texts_to
from tests.support.config import BASIC_CONFIG, CUSTOMER, SIMULTANEOUS

OFF_DUTY = '{mon: "07:00-09:00"}'  # on duty Mondays before opening only: off duty on a Tuesday


def only_task(db) -> Task:
    with db.session() as session:
        return session.scalars(select(Task)).one()


def manager_alerts(fake) -> list[str]:
    return [m["Body"] for m in texts_to(fake, DMITRI) if m["Body"].startswith("Overdue")]


@pytest.fixture
def missed(poster, db, configured) -> Lead:
    missed_call(poster)
    lead = only_lead(db)
    assert lead.owner.key == "alice"
    return lead


def test_overdue_task_alerts_the_manager_once_then_moves_to_the_next_agent_on_duty(
    db, clock, work, fake_twilio, missed
):
    task = only_task(db)
    assert task.due_at == clock.now() + timedelta(minutes=5)
    clock.advance(timedelta(minutes=4))
    work()
    assert only_task(db).escalation_level == 0
    assert manager_alerts(fake_twilio) == []

    clock.advance(timedelta(minutes=2))  # one minute past due
    work()
    task = only_task(db)
    assert task.escalation_level == 1
    assert task.owner.key == "alice"
    [alert] = manager_alerts(fake_twilio)
    assert f"#{missed.code}" in alert
    assert "(202) 555-0199" in alert
    assert "Alice Ng" in alert
    assert "/c/" in alert
    assert texts_to(fake_twilio, DMITRI)[0]["From"] == SIMULTANEOUS
    lead = only_lead(db)
    assert lead.leaked_at == clock.now()
    assert lead.leak_reason == "owner did not act"
    work()
    assert len(manager_alerts(fake_twilio)) == 1  # once

    clock.advance(timedelta(minutes=5))  # past due + the store's 5-minute SLA
    work()
    task = only_task(db)
    assert task.escalation_level == 2
    assert task.owner.key in {"ben", "cara"}
    lead = only_lead(db)
    assert lead.owner.key == task.owner.key
    [moved] = [m["Body"] for m in texts_to(fake_twilio, task.owner.phone) if m["Body"].startswith("Reassigned")]
    assert f"#{missed.code}" in moved
    assert "Alice Ng did not respond" in moved
    clock.advance(timedelta(minutes=30))
    work()
    assert only_task(db).owner.key == task.owner.key
    assert len([m for m in texts_to(fake_twilio, task.owner.phone) if m["Body"].startswith("Reassigned")]) == 1


def test_a_lead_answered_in_time_neither_escalates_nor_leaks(db, clock, work, fake_twilio, twilio, missed):
    key = api_key(db, clock, None)
    placed = twilio.client.post(f"/api/v1/leads/{missed.id}/call", headers={"Authorization": f"Bearer {key}"})
    assert placed.status_code == 201
    sid = placed.get_json()["sid"]
    leg = {"CallSid": sid, "From": SIMULTANEOUS, "To": ALICE, "CallStatus": "in-progress"}
    twilio.post(f"/webhooks/click-to-call/accept?call={sid}", {**leg, "Digits": "1"})
    twilio.post(f"/webhooks/click-to-call/dial-complete?call={sid}", {**leg, "DialCallStatus": "completed"})
    clock.advance(timedelta(minutes=30))
    work()
    task = only_task(db)
    assert task.status == "done"
    assert task.escalation_level == 0
    lead = only_lead(db)
    assert lead.leaked_at is None
    assert manager_alerts(fake_twilio) == []


def test_nobody_on_duty_is_the_leak_reason_and_nobody_takes_the_task(poster, db, clock, work, fake_twilio, configure):
    text = BASIC_CONFIG
    for key in ("alice", "ben", "cara", "dmitri"):
        text = text.replace(f"{{key: {key}, ", f"{{key: {key}, schedule: {OFF_DUTY}, ")
    configure(text)
    missed_call(poster)
    lead = only_lead(db)
    clock.advance(timedelta(minutes=6))
    work()
    lead = only_lead(db)
    assert lead.leak_reason == "nobody on duty"
    assert len(manager_alerts(fake_twilio)) == 1
    owner = lead.owner.key
    clock.advance(timedelta(minutes=10))
    work()
    task = only_task(db)
    assert task.escalation_level == 1  # nobody else on duty to move it to
    assert only_lead(db).owner.key == owner


def test_off_duty_agents_are_skipped_when_the_task_moves(poster, db, clock, work, fake_twilio, configure):
    configure(BASIC_CONFIG.replace("{key: ben, ", f"{{key: ben, schedule: {OFF_DUTY}, "))
    missed_call(poster)
    assert only_lead(db).owner.key == "alice"
    clock.advance(timedelta(minutes=11))
    work()
    work()
    task = only_task(db)
    assert task.escalation_level == 2
    assert task.owner.key == "cara"


def test_unreachable_customer_is_the_leak_reason(app, db, clock, work, fake_twilio, twilio, missed):
    with db.session() as session:
        contact = session.scalars(select(Contact).where(Contact.phone == CUSTOMER)).one()
        contact.opted_out = True
        contact.opted_out_at = clock.now()
    key = api_key(db, clock, None)
    placed = twilio.client.post(f"/api/v1/leads/{missed.id}/call", headers={"Authorization": f"Bearer {key}"})
    assert placed.status_code == 201
    sid = placed.get_json()["sid"]
    leg = {"CallSid": sid, "From": SIMULTANEOUS, "To": ALICE, "CallStatus": "in-progress"}
    twilio.post(f"/webhooks/click-to-call/accept?call={sid}", {**leg, "Digits": "1"})
    twilio.post(f"/webhooks/click-to-call/dial-complete?call={sid}", {**leg, "DialCallStatus": "no-answer"})
    clock.advance(timedelta(minutes=6))
    work()
    lead = only_lead(db)
    assert lead.leak_reason == "customer unreachable"
    assert lead.status == "attempting_contact"


def test_after_hours_task_waits_for_the_opening_before_escalating(poster, db, clock, work, fake_twilio, configured):
    clock.set(datetime(2026, 11, 25, 3, 0, tzinfo=UTC))  # Tuesday 22:00 in New York: sales closed
    missed_call(poster)
    task = only_task(db)
    assert task.due_at == datetime(2026, 11, 25, 14, 30, tzinfo=UTC)  # Wednesday 09:00 + 30 min grace
    clock.set(datetime(2026, 11, 25, 14, 0, tzinfo=UTC))
    work()
    assert only_task(db).escalation_level == 0
    assert only_lead(db).leaked_at is None
    clock.set(datetime(2026, 11, 25, 14, 31, tzinfo=UTC))
    work()
    assert only_task(db).escalation_level == 1
    assert only_lead(db).leak_reason == "owner did not act"
    assert len(manager_alerts(fake_twilio)) == 1
