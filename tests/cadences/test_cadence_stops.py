"""Every way a cadence stops (reply, opt-out, human contact, lead status, the API), the reason on the
enrolment and in the lead's timeline; quiet hours; a contact who opts out between scheduling and sending."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import select

from cadences.models import CadenceStep, SkipReason, StepStatus, StopReason
from gateway import events
from gateway.api.keys import create_key
from gateway.leads import set_status
from gateway.models import Contact, Direction, Lead, LeadStatus, Message, MessageStatus, Task, TaskKind, TaskStatus
from gateway.simulator import play_call
from tests.cadences.helpers import FIRST_TEXT, cadence_messages, local, only_lead
from tests.support.config import CUSTOMER, SIMULTANEOUS

pytestmark = pytest.mark.usefixtures("cadence_config")


def customer_texts_back(db, clock, body="Yes, is the Civic still there?"):
    with db.session() as session:
        lead = session.scalars(select(Lead)).one()
        message = Message(
            lead_id=lead.id,
            contact_id=lead.contact_id,
            store_id=lead.store_id,
            direction=Direction.INBOUND.value,
            kind="customer",
            from_number=CUSTOMER,
            to_number=SIMULTANEOUS,
            body=body,
            status=MessageStatus.RECEIVED.value,
            sid="SM" + "a" * 32,
            created_at=clock.now(),
        )
        session.add(message)
        session.flush()
        events.message_received.send(session, lead=lead, message=message, now=clock.now())


def customer_opts_out(db, clock, announce=True):
    with db.session() as session:
        contact = session.scalars(select(Contact).where(Contact.phone == CUSTOMER)).one()
        contact.opted_out = True
        contact.opted_out_at = clock.now()
        contact.opt_out_source = "keyword"
        if announce:
            events.contact_opted_out.send(session, contact=contact, now=clock.now())


def assert_stopped(snapshot, reason, key="missed-call"):
    state = snapshot()
    enrolment = state.enrolment(key)
    assert enrolment.status == "stopped"
    assert enrolment.stop_reason == reason.value
    assert enrolment.active_key is None
    for step in state.steps_of(key):
        assert step.status != StepStatus.SCHEDULED.value
    stops = [e for e in state.events if e.kind == "cadence-stopped" and e.data.get("cadence") == key]
    assert len(stops) == 1
    assert stops[0].data["reason"] == reason.value
    return state


def no_more_texts(work, clock, texts, expected):
    for _ in range(3):
        clock.advance(timedelta(days=1))
        work()
    assert len(texts()) == expected


def test_reply_stops_the_cadence(missed_call, work, texts, clock, db, snapshot):
    missed_call()
    work()
    clock.advance(timedelta(minutes=30))
    customer_texts_back(db, clock)
    state = assert_stopped(snapshot, StopReason.REPLY)
    assert [s.skip_reason for s in state.steps[1:]] == [SkipReason.STOPPED.value] * 2
    no_more_texts(work, clock, texts, 1)


def test_a_text_a_moment_after_the_missed_call_still_gets_the_first_text_once(
    missed_call, work, texts, clock, db, snapshot
):
    """The customer hangs up and texts before a worker sent the first text: the cadence stops (its
    follow-ups are skipped) but the answer to the missed call goes, once."""
    missed_call()
    clock.advance(timedelta(seconds=1))
    customer_texts_back(db, clock, "Call me after 5 please")
    state = assert_stopped(snapshot, StopReason.REPLY)
    assert [s.skip_reason for s in state.steps[1:]] == [SkipReason.STOPPED.value] * 2
    work()
    assert [m["Body"] for m in texts()] == [FIRST_TEXT]
    [first] = cadence_messages(db)
    assert first.status != MessageStatus.REFUSED.value
    work()
    assert snapshot().steps[0].status == StepStatus.SENT.value
    no_more_texts(work, clock, texts, 1)


def test_opt_out_right_after_the_missed_call_withdraws_the_first_text(missed_call, work, texts, clock, db, snapshot):
    missed_call()
    customer_opts_out(db, clock)
    assert_stopped(snapshot, StopReason.OPT_OUT)
    no_more_texts(work, clock, texts, 0)


def test_opt_out_stops_the_cadence(missed_call, work, texts, clock, db, snapshot):
    missed_call()
    work()
    customer_opts_out(db, clock)
    assert_stopped(snapshot, StopReason.OPT_OUT)
    no_more_texts(work, clock, texts, 1)


def test_answered_call_from_the_customer_stops_the_cadence(missed_call, work, texts, clock, snapshot):
    missed_call()
    work()
    clock.advance(timedelta(minutes=20))
    missed_call(outcome="answer")
    work()
    state = assert_stopped(snapshot, StopReason.HUMAN_CONTACT)
    assert state.enrolment().stop_detail == "answered call"
    no_more_texts(work, clock, texts, 1)


def test_a_conversation_recorded_after_a_later_missed_call_leaves_that_calls_follow_up(
    poster, missed_call, work, texts, clock, snapshot, db
):
    """Under load an answered call's end can be processed after the customer's next call, which nobody
    answered: the conversation came first, so the missed call's text, cadence and callback task stand."""
    answered = play_call(poster, to=SIMULTANEOUS, caller=CUSTOMER, outcome="answer")
    for _ in range(3):
        next(answered)  # it rang, the agent pressed 1, they talk
    clock.advance(timedelta(minutes=2))
    missed_call()  # the customer calls again and nobody answers
    clock.advance(timedelta(seconds=30))
    assert list(answered)[-1].endswith("answered 204")  # the first call's end arrives late
    work()
    assert [m["Body"] for m in texts()] == [FIRST_TEXT]
    state = snapshot()
    assert state.enrolment().status == "active"
    with db.session() as session:
        lead = session.scalars(select(Lead)).one()
        assert lead.status == LeadStatus.CONTACTED.value  # somebody did talk to the customer
        assert lead.first_response_at is not None
        [task] = session.scalars(select(Task).where(Task.lead_id == lead.id)).all()
        assert (task.kind, task.status) == (TaskKind.CALLBACK.value, TaskStatus.OPEN.value)
    clock.advance(timedelta(hours=4))
    work()
    assert len(texts()) == 2  # the follow-up goes as well


@pytest.mark.parametrize("reason", ["connected click-to-call", "agent text"])
def test_an_agent_reaching_the_customer_another_way_stops_the_cadence(
    missed_call, work, texts, clock, db, snapshot, reason
):
    from gateway.leads import record_human_contact
    from gateway.models import Agent

    missed_call()
    work()
    with db.session() as session:
        lead = session.scalars(select(Lead)).one()
        agent = session.scalars(select(Agent).where(Agent.key == "ben")).one()
        record_human_contact(session, lead, agent, reason, clock.now())
    state = assert_stopped(snapshot, StopReason.HUMAN_CONTACT)
    assert state.enrolment().stop_detail == reason
    no_more_texts(work, clock, texts, 1)


def test_lead_moving_to_contacted_or_closed_ends_the_missed_call_cadence(missed_call, work, texts, clock, db, snapshot):
    missed_call()
    work()
    with db.session() as session:
        lead = session.scalars(select(Lead)).one()
        set_status(session, lead, LeadStatus.CLOSED_LOST, clock.now())
    state = assert_stopped(snapshot, StopReason.STATUS)
    assert state.enrolment().stop_detail == "lead status closed_lost"
    no_more_texts(work, clock, texts, 1)


def test_attempting_contact_does_not_end_the_missed_call_cadence(missed_call, work, texts, clock, db, snapshot):
    missed_call()
    work()
    with db.session() as session:
        lead = session.scalars(select(Lead)).one()
        set_status(session, lead, LeadStatus.ATTEMPTING_CONTACT, clock.now())
    assert snapshot().enrolment().status == "active"
    clock.advance(timedelta(hours=4))
    work()
    assert len(texts()) == 2


def test_api_stop_ends_the_cadence_and_shows_in_the_timeline(missed_call, work, texts, clock, db, client, snapshot):
    missed_call()
    work()
    with db.session() as session:
        _, secret = create_key(session, "crm", None, clock.now())
    lead = only_lead(db)
    headers = {"Authorization": f"Bearer {secret}"}
    response = client.post(f"/api/v1/leads/{lead.id}/cadence/stop", headers=headers)
    assert response.status_code == 200, response.get_data(as_text=True)
    body = response.get_json()
    assert [e["cadence"] for e in body["stopped"]] == ["missed-call"]
    assert body["stopped"][0]["stop_reason"] == "api"
    assert_stopped(snapshot, StopReason.API)
    again = client.post(f"/api/v1/leads/{lead.id}/cadence/stop", headers=headers)
    assert again.status_code == 200
    assert again.get_json()["stopped"] == []
    timeline = client.get(f"/api/v1/leads/{lead.id}", headers=headers).get_json()["timeline"]
    events_ = [item["event"] for item in timeline if item["type"] == "event"]
    stops = [event for event in events_ if event["kind"] == "cadence-stopped"]
    assert len(stops) == 1
    assert "api" in stops[0]["text"]
    listed = client.get(f"/api/v1/leads/{lead.id}/cadences", headers=headers).get_json()["items"]
    assert [s["status"] for s in listed[0]["steps"]] == ["sent", "skipped", "skipped"]
    no_more_texts(work, clock, texts, 1)


def test_api_stop_needs_a_key_and_hides_other_stores_leads(missed_call, work, clock, db, client, snapshot):
    missed_call()
    lead = only_lead(db)
    assert client.post(f"/api/v1/leads/{lead.id}/cadence/stop").status_code == 401
    with db.session() as session:
        _, south = create_key(session, "south crm", ["south-ford"], clock.now())
    response = client.post(f"/api/v1/leads/{lead.id}/cadence/stop", headers={"Authorization": f"Bearer {south}"})
    assert response.status_code == 404
    assert snapshot().enrolment().status == "active"
    missing = client.post("/api/v1/leads/999999/cadence/stop", headers={"Authorization": f"Bearer {south}"})
    assert missing.status_code == 404
    assert missing.get_json()["error"]["code"] == "not_found"


def test_api_stop_refuses_a_malformed_body(missed_call, clock, db, client, snapshot):
    missed_call()
    lead = only_lead(db)
    with db.session() as session:
        _, secret = create_key(session, "crm", None, clock.now())
    headers = {"Authorization": f"Bearer {secret}"}
    response = client.post(f"/api/v1/leads/{lead.id}/cadence/stop", json=["x"], headers=headers)
    assert response.status_code == 400
    response = client.post(f"/api/v1/leads/{lead.id}/cadence/stop", json={"cadence": 7}, headers=headers)
    assert response.status_code == 400
    assert snapshot().enrolment().status == "active"
    other = client.post(f"/api/v1/leads/{lead.id}/cadence/stop", json={"cadence": "no-show"}, headers=headers)
    assert other.get_json()["stopped"] == []
    assert snapshot().enrolment().status == "active"


def test_follow_up_due_in_quiet_hours_waits_for_the_morning(missed_call, work, texts, clock, snapshot, db):
    clock.set(local(2026, 11, 24, 18, 30))  # Tuesday 18:30 in New York: the store is open
    missed_call()
    work()
    assert [m["Body"] for m in texts()] == [FIRST_TEXT]
    clock.advance(timedelta(hours=4))  # 22:30: the 4h step is due, but it is quiet hours for the customer
    work()
    assert len(texts()) == 1
    work()  # the next sweep notes what the guard did
    state = snapshot()
    assert state.steps[1].status == StepStatus.DEFERRED.value
    [_, deferred] = cadence_messages(db)[:2]
    assert deferred.refusal_code == "quiet_hours"
    assert deferred.send_after == local(2026, 11, 25, 8, 0)
    clock.set(local(2026, 11, 25, 7, 59))
    work()
    assert len(texts()) == 1
    clock.set(local(2026, 11, 25, 8, 0))
    work()
    assert len(texts()) == 2
    work()
    assert snapshot().steps[1].status == StepStatus.SENT.value
    assert len(texts()) == 2


def test_reply_while_a_text_waits_for_the_morning_withdraws_it(missed_call, work, texts, clock, snapshot, db):
    clock.set(local(2026, 11, 24, 18, 30))
    missed_call()
    work()
    clock.advance(timedelta(hours=4))
    work()
    work()
    assert snapshot().steps[1].status == StepStatus.DEFERRED.value
    clock.set(local(2026, 11, 25, 7, 0))
    customer_texts_back(db, clock)
    state = assert_stopped(snapshot, StopReason.REPLY)
    assert state.steps[1].status == StepStatus.SKIPPED.value
    withdrawn = cadence_messages(db)[1]
    assert withdrawn.status == MessageStatus.REFUSED.value
    assert withdrawn.refusal_code == "cadence_stopped"
    no_more_texts(work, clock, texts, 1)


def test_contact_opted_out_between_scheduling_and_sending_is_refused_by_the_guard(
    missed_call, work, texts, clock, app, snapshot, db
):
    """The text is written; the opt-out lands (by a path that announces nothing) before the send."""
    from cadences import services

    missed_call()
    work()
    clock.advance(timedelta(hours=4))
    step_id = snapshot().steps[1].id
    with db.session() as session:  # claimed and written, its send job queued
        services.dispatch_steps(session, [step_id], clock.now())
    customer_opts_out(db, clock, announce=False)
    work()
    work()  # the next sweep notes what the guard did
    assert len(texts()) == 1
    message = cadence_messages(db)[1]
    assert message.status == MessageStatus.REFUSED.value
    assert message.refusal_code == "opted_out"
    with db.session() as session:
        step = session.get(CadenceStep, step_id)
        assert step.status == StepStatus.SKIPPED.value
        assert step.skip_reason == SkipReason.REFUSED.value


def test_contact_opting_out_after_the_step_was_queued_stops_it_before_it_is_written(
    missed_call, work, texts, clock, app, snapshot, db
):
    from gateway.worker import sweep_once

    missed_call()
    work()
    clock.advance(timedelta(hours=4))
    sweep_once(app)  # the due step is in the queue
    customer_opts_out(db, clock)
    work()
    assert len(texts()) == 1
    assert len(cadence_messages(db)) == 1, "the stop won: the step was never turned into a text"
    assert_stopped(snapshot, StopReason.OPT_OUT)


def test_opted_out_contact_is_not_enrolled(missed_call, work, texts, clock, db, snapshot):
    missed_call(outcome="answer")  # the contact exists, no cadence
    customer_opts_out(db, clock)
    missed_call()
    work()
    assert texts() == []
    assert snapshot().enrolments == []


def test_the_cadence_routes_are_described_in_the_openapi_document(client):
    document = client.get("/api/v1/openapi.json").get_json()
    assert "post" in document["paths"]["/leads/{id}/cadence/stop"]
    assert "get" in document["paths"]["/leads/{id}/cadences"]
    assert "CadenceEnrolment" in document["components"]["schemas"]
