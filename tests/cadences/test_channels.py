# ruff: noqa: F811 - pytest fixtures imported from the intake tests are named as parameters
"""E-mail and call steps beside texts: the one-click unsubscribe stops e-mail, not texts; a text reply
stops the e-mail steps; an opt-out of texts leaves the e-mail steps; a stopped cadence sends no e-mail."""

from __future__ import annotations

import re
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import select

from cadences.models import CadenceEnrolment, CadenceStep, EnrolmentStatus, SkipReason, StepStatus
from gateway.models import Contact, LeadEvent
from gateway.simulator import play_text
from tests.intake.conftest import (  # noqa: F401 - the intake's fixtures, shared
    api,
    crm,
    inbox,
    intake_config,
    mails,
    settings,
)
from tests.intake.test_views import form
from tests.support.config import CUSTOMER

EMAIL = "maria.lopez@example.com"
WEB_NUMBER = "+12025550123"  # North Honda's first sales number: the texts' sender

pytestmark = pytest.mark.usefixtures("intake_config")


def customer_texts(fake_twilio: Any) -> list[dict[str, Any]]:
    return [m for m in fake_twilio.messages if m.get("To") == CUSTOMER]


def steps(db: Any) -> list[CadenceStep]:
    with db.session() as session:
        return list(session.scalars(select(CadenceStep).order_by(CadenceStep.step_index)))


def unsubscribe_link(message: Any) -> str:
    header = message["List-Unsubscribe"]
    match = re.fullmatch(r"<https://gateway\.example\.test(/unsubscribe/[^>]+)>", header)
    assert match, header
    return match.group(1)


def test_the_unsubscribe_link_stops_further_email_but_not_texts(
    api: Any, client: Any, work: Any, clock: Any, mails: Any, fake_twilio: Any, db: Any
) -> None:
    assert api.post("/api/v1/leads", json=form()).status_code == 201
    work()
    [first] = mails.messages(EMAIL)
    path = unsubscribe_link(first)

    page = client.get(path)  # a GET (a link preview) changes nothing
    assert page.status_code == 200
    assert b"Unsubscribe" in page.data
    with db.session() as session:
        assert session.scalar(select(Contact).where(Contact.email == EMAIL)).email_opted_out is False

    # RFC 8058: the mail client's one-click POST.
    done = client.post(path, data={"List-Unsubscribe": "One-Click"})
    assert done.status_code == 200
    with db.session() as session:
        contact = session.scalar(select(Contact).where(Contact.email == EMAIL))
        assert contact.email_opted_out is True
        assert contact.opted_out is False  # texts are another matter

    clock.advance(timedelta(minutes=40))
    work()
    assert len(mails.messages(EMAIL)) == 1, "no e-mail after the unsubscribe"
    assert len(customer_texts(fake_twilio)) == 1, "the 10-minute text still went"
    last = steps(db)[-1]
    assert last.status == StepStatus.SKIPPED.value
    assert last.skip_reason == SkipReason.OPTED_OUT.value
    with db.session() as session:
        kinds = {e.kind for e in session.scalars(select(LeadEvent))}
    assert "email-opt-out" in kinds


def test_a_forged_unsubscribe_link_does_nothing(client: Any, api: Any, work: Any, db: Any) -> None:
    api.post("/api/v1/leads", json=form())
    work()
    response = client.post("/unsubscribe/not-a-token", data={"List-Unsubscribe": "One-Click"})
    assert response.status_code == 404
    with db.session() as session:
        assert session.scalar(select(Contact).where(Contact.email == EMAIL)).email_opted_out is False


def test_a_text_reply_stops_the_email_steps(
    api: Any, poster: Any, work: Any, clock: Any, mails: Any, db: Any
) -> None:
    api.post("/api/v1/leads", json=form())
    work()
    assert len(mails.messages(EMAIL)) == 1
    list(play_text(poster, to=WEB_NUMBER, sender=CUSTOMER, body="Can I come by tomorrow?"))
    work()
    with db.session() as session:
        [enrolment] = session.scalars(select(CadenceEnrolment))
        assert enrolment.status == EnrolmentStatus.STOPPED.value
        assert enrolment.stop_reason == "reply"
    clock.advance(timedelta(hours=1))
    work()
    assert len(mails.messages(EMAIL)) == 1
    assert [s.status for s in steps(db)] == ["sent", "skipped", "skipped", "skipped"]


def test_an_sms_opt_out_leaves_the_email_steps(
    api: Any, poster: Any, work: Any, clock: Any, mails: Any, fake_twilio: Any, db: Any
) -> None:
    api.post("/api/v1/leads", json=form())
    work()
    list(play_text(poster, to=WEB_NUMBER, sender=CUSTOMER, body="STOP"))
    work()
    clock.advance(timedelta(hours=1))
    work()
    assert customer_texts(fake_twilio) == []
    assert len(mails.messages(EMAIL)) == 2
    text_step = steps(db)[2]
    assert text_step.skip_reason == SkipReason.OPTED_OUT.value


def test_a_person_reaching_the_customer_stops_every_channel(
    api: Any, work: Any, clock: Any, mails: Any, fake_twilio: Any, db: Any
) -> None:
    lead = api.post("/api/v1/leads", json=form()).json
    work()
    assert api.patch(f"/api/v1/leads/{lead['id']}", json={"status": "contacted"}).status_code == 200
    clock.advance(timedelta(hours=1))
    work()
    assert customer_texts(fake_twilio) == []
    assert len(mails.messages(EMAIL)) == 1

