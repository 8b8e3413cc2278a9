"""ADF by e-mail, end to end: `smtplib` to the intake's aiosmtpd server on loopback, the prospects stored
and their leads built by a real worker on the real Redis, a review task for what holds no readable ADF,
refusals at RCPT for addresses no store uses."""

from __future__ import annotations

import smtplib
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from gateway.models import Contact, Lead, LeadEvent, Task, TaskKind
from intake.models import IntakeMail, IntakeRecord
from intake.smtp import IntakeServer, parse_address
from tests.intake.conftest import INTAKE_ADDRESS

SAMPLES = Path(__file__).with_name("samples")

pytestmark = pytest.mark.usefixtures("intake_config")


def send(
    server: IntakeServer, raw: bytes | EmailMessage, to: list[str], sender: str = "leads@cars.example.com"
) -> None:
    with smtplib.SMTP(server.host, server.port, timeout=60) as client:
        if isinstance(raw, EmailMessage):
            client.send_message(raw, from_addr=sender, to_addrs=to)
        else:
            client.sendmail(sender, to, raw)


def adf_mail(document: bytes, to: str, *, attach: bool) -> EmailMessage:
    message = EmailMessage()
    message["From"] = "Lead Site <leads@site.example>"
    message["To"] = to
    message["Subject"] = "New lead"
    if attach:
        message.set_content("A new lead is attached.")
        message.add_attachment(document, maintype="application", subtype="xml", filename="lead.xml")
    else:
        message.set_content(document.decode("utf-8"))
    return message


def rows(db: Any, model: Any) -> list[Any]:
    with db.session() as session:
        return list(session.scalars(select(model).order_by(model.id)))


def test_adf_in_the_body_to_the_store_key_at_any_domain_becomes_a_lead(
    intake_server: IntakeServer, db: Any, work: Any
) -> None:
    send(intake_server, (SAMPLES / "cars_com_body.eml").read_bytes(), ["north-honda@leads.gateway.example.com"])
    [record] = rows(db, IntakeRecord)
    assert record.channel == "adf-email"
    assert record.lead_id is None  # stored before the 250; the worker builds the lead
    work()
    [lead] = rows(db, Lead)
    assert lead.source == "Cars.com"
    with db.session() as session:
        contact = session.get(Contact, lead.contact_id)
        assert contact.email == "dana.whitfield@example.com"
        assert contact.phone == "+12025550187"  # the preferred mobile


def test_adf_by_email_end_to_end_stored_before_the_250_then_built_once_with_alert_and_crm(
    intake_server: IntakeServer, db: Any, work: Any, fake_twilio: Any, crm: Any
) -> None:
    raw = (SAMPLES / "cars_com_body.eml").read_bytes()
    send(intake_server, raw, ["north-honda@leads.gateway.example.com"])
    work()
    [lead] = rows(db, Lead)
    with db.session() as session:
        owner_phone = session.get(Lead, lead.id).owner.phone
    [alert] = [m for m in fake_twilio.messages if m.get("To") == owner_phone]
    assert "Dana" in alert["Body"]
    assert len([r for r in crm.accepted if r.path == "/adf"]) == 1
    [task] = rows(db, Task)
    assert task.kind == TaskKind.CALLBACK.value

    # The lead site sends the same mail again: nothing new, no second alert or CRM record.
    send(intake_server, raw, ["north-honda@leads.gateway.example.com"])
    work()
    assert len(rows(db, IntakeRecord)) == 1
    assert len(rows(db, Lead)) == 1
    assert len([m for m in fake_twilio.messages if m.get("To") == owner_phone]) == 1
    assert len([r for r in crm.accepted if r.path == "/adf"]) == 1


def test_adf_as_an_attachment_to_an_intake_address_becomes_a_lead(
    intake_server: IntakeServer, db: Any, work: Any
) -> None:
    document = (SAMPLES / "autotrader_no_prolog.xml").read_bytes()
    send(intake_server, adf_mail(document, INTAKE_ADDRESS, attach=True), [INTAKE_ADDRESS])
    work()
    [lead] = rows(db, Lead)
    assert lead.store.key == "north-honda"
    with db.session() as session:
        assert session.get(Contact, lead.contact_id).phone == "+13015550174"  # "mobile" before "home"


@pytest.mark.parametrize(
    "name", ["aggregator_two_prospects.xml", "autotrader_no_prolog.xml", "cars_com_used.xml", "spec_style.xml"]
)
def test_each_forgiving_document_by_email(intake_server: IntakeServer, db: Any, work: Any, name: str) -> None:
    document = (SAMPLES / name).read_bytes()
    send(intake_server, adf_mail(document, "north-honda@example.net", attach=False), ["north-honda@example.net"])
    work()
    expected = 2 if name == "aggregator_two_prospects.xml" else 1
    assert len(rows(db, Lead)) == expected
    assert rows(db, IntakeMail) == []


def test_a_resent_prospect_by_email_changes_nothing(intake_server: IntakeServer, db: Any, work: Any) -> None:
    raw = (SAMPLES / "cars_com_body.eml").read_bytes()
    send(intake_server, raw, ["north-honda@leads.gateway.example.com"])
    work()
    send(intake_server, raw, ["north-honda@leads.gateway.example.com"])
    work()
    assert len(rows(db, IntakeRecord)) == 1
    assert len(rows(db, Lead)) == 1
    assert len(rows(db, Task)) == 1


def test_a_non_adf_email_becomes_a_review_task_holding_the_message(intake_server: IntakeServer, db: Any) -> None:
    message = EmailMessage()
    message["From"] = "Someone <someone@example.org>"
    message["To"] = INTAKE_ADDRESS
    message["Subject"] = "Question about your hours"
    message.set_content("Are you open on Sunday?")
    send(intake_server, message, [INTAKE_ADDRESS], sender="someone@example.org")
    [kept] = rows(db, IntakeMail)
    assert b"Are you open on Sunday?" in kept.raw
    assert kept.problem == "no ADF/XML lead found in the message"
    [task] = rows(db, Task)
    assert task.kind == TaskKind.REVIEW.value
    assert task.lead_id == kept.lead_id
    assert f"intake mail #{kept.id}" in (task.note or "")
    assert task.owner_id is not None


def test_broken_adf_by_email_becomes_a_review_task_naming_line_and_column(
    intake_server: IntakeServer, db: Any
) -> None:
    broken = b"<?xml version='1.0'?>\n<adf>\n<prospect><customer></prospect>\n</adf>\n"
    send(intake_server, adf_mail(broken, INTAKE_ADDRESS, attach=True), [INTAKE_ADDRESS])
    [kept] = rows(db, IntakeMail)
    assert "line 3" in kept.problem
    [task] = rows(db, Task)
    assert task.kind == TaskKind.REVIEW.value


def test_a_billion_laughs_document_by_email_is_refused_and_kept_for_review(
    intake_server: IntakeServer, db: Any
) -> None:
    document = (SAMPLES / "billion_laughs.xml").read_bytes()
    send(intake_server, adf_mail(document, INTAKE_ADDRESS, attach=True), [INTAKE_ADDRESS])
    [kept] = rows(db, IntakeMail)
    assert "entit" in kept.problem
    assert [lead.source for lead in rows(db, Lead)] == ["E-mail"]


def test_an_address_no_store_uses_is_refused_at_rcpt(intake_server: IntakeServer, db: Any) -> None:
    with pytest.raises(smtplib.SMTPRecipientsRefused) as refused:
        send(intake_server, (SAMPLES / "cars_com_body.eml").read_bytes(), ["nobody@example.com"])
    [(code, _)] = refused.value.recipients.values()
    assert code == 550
    assert rows(db, Lead) == []


def test_an_email_from_a_customer_with_an_open_lead_is_a_reply(
    intake_server: IntakeServer, db: Any, work: Any
) -> None:
    send(intake_server, (SAMPLES / "cars_com_body.eml").read_bytes(), ["north-honda@leads.gateway.example.com"])
    work()
    reply = EmailMessage()
    reply["From"] = "Dana Whitfield <Dana.Whitfield@example.com>"
    reply["To"] = INTAKE_ADDRESS
    reply["Subject"] = "Re: Your request"
    reply.set_content("Thursday after 5 works for me.")
    send(intake_server, reply, [INTAKE_ADDRESS], sender="dana.whitfield@example.com")
    assert len(rows(db, Lead)) == 1
    assert rows(db, IntakeMail) == []
    kinds = {task.kind for task in rows(db, Task)}
    assert TaskKind.REPLY.value in kinds
    assert any(e.kind == "email-received" for e in rows(db, LeadEvent))


def test_the_database_down_answers_451_so_the_sender_retries(app: Any, intake_config: None, make_app: Any) -> None:
    from gateway.embedded_redis import free_port

    broken = make_app(database_url="postgresql+psycopg://nobody@127.0.0.1:9/none")
    server = IntakeServer(broken, "127.0.0.1", free_port())
    server.start()
    try:
        with pytest.raises(smtplib.SMTPRecipientsRefused) as refused:
            send(server, (SAMPLES / "cars_com_body.eml").read_bytes(), ["north-honda@example.com"])
        [(code, _)] = refused.value.recipients.values()
        assert code == 451
    finally:
        server.stop()


def test_parse_address() -> None:
    assert parse_address("127.0.0.1:2525") == ("127.0.0.1", 2525)
    with pytest.raises(ValueError, match="host:port"):
        parse_address("2525")
