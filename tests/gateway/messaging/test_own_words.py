"""Opting out in the customer's own words, end to end: signed webhooks in, the worker, the Twilio fake out.

A clear request opts the phone out exactly as STOP does, and the gateway, not the provider, sends one
confirmation at once; an unclear one pauses automation for a person; a near miss is an ordinary text."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import select

from cadences.models import CadenceEnrolment
from gateway.messaging.guard import opt_out_confirmation
from gateway.models import Lead, LeadEvent, Message, Task
from gateway.simulator import new_sid, play_call
from tests.gateway.messaging.test_inbound import (
    api_key,
    api_send,
    contact,
    count,
    gateway_twilio,
    lead_id,
    text,
    to_customer,
)
from tests.support.config import CUSTOMER, SIMULTANEOUS, SOUTH

__all__ = ["api_key", "gateway_twilio"]  # fixtures shared with test_sms

CONFIRMATION = opt_out_confirmation("North Honda")

pytestmark = pytest.mark.usefixtures("configured")


def post(twilio, sid: str, body: str, url: str = "/webhooks/sms/incoming") -> None:
    response = twilio.post(url, {"MessageSid": sid, "From": CUSTOMER, "To": SIMULTANEOUS, "Body": body})
    assert response.status_code == 200


@pytest.mark.parametrize("body", ["Please stop texting me.", "remove me from your list", "opt out", "STOP PLEASE"])
def test_a_clear_request_opts_out_as_stop_does_and_is_confirmed_once(twilio, db, clock, work, fake_twilio, body):
    text(twilio, body)
    customer = contact(db)
    assert customer.opted_out
    assert customer.opted_out_at == clock.now()
    assert customer.opt_out_number == SIMULTANEOUS
    assert customer.opt_out_source is not None
    assert customer.opt_out_source.startswith("own-words:")
    assert not customer.automation_paused
    # A setting, as STOP is: no lead, no task.
    assert count(db, Lead) == 0
    assert count(db, Task) == 0
    work()
    [confirmation] = to_customer(fake_twilio)
    assert confirmation["Body"] == CONFIRMATION  # no marketing: who we are, that it worked, how to undo it
    assert confirmation["From"] == SIMULTANEOUS
    with db.session() as session:
        reply = session.scalars(select(Message).where(Message.kind == "keyword")).one()
        assert reply.sent_at is not None
        assert reply.sent_at - reply.created_at <= timedelta(minutes=5)


def test_the_confirmation_goes_at_night_at_once(twilio, db, clock, work, fake_twilio):
    clock.set(clock.now().replace(hour=4, minute=30))  # 23:30 in New York
    text(twilio, "stop texting me")
    work()
    assert [m["Body"] for m in to_customer(fake_twilio)] == [CONFIRMATION]


def test_a_replayed_webhook_sends_no_second_confirmation(twilio, db, work, fake_twilio):
    sid = new_sid("SM")
    post(twilio, sid, "please stop texting me")
    post(twilio, sid, "please stop texting me")  # the provider's retry
    post(twilio, sid, "please stop texting me", "/webhooks/sms/fallback")
    work()
    post(twilio, sid, "please stop texting me")  # and once more after the worker ran
    work()
    assert [m["Body"] for m in to_customer(fake_twilio)] == [CONFIRMATION]
    assert count(db, Message, Message.kind == "keyword") == 1


def test_asking_twice_in_other_words_gets_one_confirmation(twilio, db, clock, work, fake_twilio):
    text(twilio, "stop texting me")
    work()
    clock.advance(timedelta(minutes=1))
    text(twilio, "I said remove me from your list!!")
    work()
    assert [m["Body"] for m in to_customer(fake_twilio)] == [CONFIRMATION]
    assert contact(db).opted_out


def test_after_a_stop_the_provider_confirmed_we_do_not_confirm_again(twilio, db, clock, work, fake_twilio):
    text(twilio, "STOP")  # the provider's Advanced Opt-Out answered this one
    clock.advance(timedelta(minutes=1))
    text(twilio, "do not text me")
    work()
    assert to_customer(fake_twilio) == []


def test_when_the_gateway_answers_keywords_a_phrase_still_gets_one_confirmation(gateway_twilio, db, work, fake_twilio):
    sid = new_sid("SM")
    post(gateway_twilio, sid, "unsubscribe me")
    post(gateway_twilio, sid, "unsubscribe me")
    work()
    assert [m["Body"] for m in to_customer(fake_twilio)] == [CONFIRMATION]


@pytest.mark.parametrize("body", ["Alto", "No me envíes más mensajes", "baja por favor"])
def test_a_spanish_request_is_confirmed_in_spanish(twilio, db, work, fake_twilio, body):
    text(twilio, body)
    assert contact(db).opted_out
    work()
    [confirmation] = to_customer(fake_twilio)
    assert confirmation["Body"] == opt_out_confirmation("North Honda", "es")
    assert "START" in confirmation["Body"]


def test_the_opt_out_stops_the_cadence_and_blocks_every_store(
    poster, twilio, db, clock, work, fake_twilio, api_key, client
):
    list(play_call(poster, to=SIMULTANEOUS, caller=CUSTOMER, outcome="no-answer"))
    work()
    assert len(to_customer(fake_twilio)) == 1  # the cadence's first text
    clock.advance(timedelta(minutes=2))
    text(twilio, "Please remove me from your list")
    with db.session() as session:
        [enrolment] = session.scalars(select(CadenceEnrolment))
        assert (enrolment.status, enrolment.stop_reason) == ("stopped", "opt_out")
        events = list(session.scalars(select(LeadEvent).where(LeadEvent.kind == "keyword")))
        assert len(events) == 1
        assert "Please remove me from your list" in events[0].text
    work()
    clock.advance(timedelta(days=2))
    work()
    assert [m["Body"] for m in to_customer(fake_twilio)][1:] == [CONFIRMATION]
    response = api_send(client, api_key, lead_id(db), "Sorry to bother you!")
    assert response.status_code == 409
    assert response.get_json()["error"]["code"] == "opted_out"
    text(twilio, "Do you have a 2024 F-150?", to=SOUTH)
    with db.session() as session:
        assert session.scalars(select(Task).where(Task.kind == "reply")).all()
    work()
    assert len(to_customer(fake_twilio)) == 2


def test_start_after_a_phrase_opts_back_in(twilio, db, clock, work, fake_twilio):
    text(twilio, "stop texting me")
    clock.advance(timedelta(minutes=1))
    text(twilio, "START")
    customer = contact(db)
    assert not customer.opted_out
    assert customer.opt_out_source is None


@pytest.mark.parametrize("body", ["stop texting me so late", "wrong number", "no me envíes mensajes en la noche"])
def test_an_unclear_request_pauses_automation_for_a_person(twilio, db, work, fake_twilio, body):
    text(twilio, body)
    customer = contact(db)
    assert not customer.opted_out
    assert customer.automation_paused
    assert [t.kind for t in _tasks(db)] == ["review"]
    work()
    assert to_customer(fake_twilio) == []


@pytest.mark.parametrize("body", ["Can you stop by Saturday?", "don't stop", "alto means tall?", "cancelar mi cita"])
def test_a_near_miss_is_an_ordinary_text(twilio, db, work, fake_twilio, body):
    text(twilio, body)
    customer = contact(db)
    assert not customer.opted_out
    assert not customer.automation_paused
    assert [t.kind for t in _tasks(db)] == ["reply"]
    work()
    assert to_customer(fake_twilio) == []


def _tasks(db) -> list[Task]:
    with db.session() as session:
        return list(session.scalars(select(Task)))
