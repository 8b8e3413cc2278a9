"""Alert texts: the owner hears of a missed contact within a second, from the tracked number, with the
caller, source, store, department, lead code and a click-to-call link; hot leads reach the manager."""

from __future__ import annotations

import re
from datetime import UTC, datetime

import pytest
from sqlalchemy import select

from gateway import events
from gateway.models import Direction, Lead, Message, MessageStatus
from gateway.simulator import new_sid, play_text
from tests.gateway.agents.helpers import (
    ALICE,
    BASE,
    BEN,
    DMITRI,
    alert_rows,
    call_ends,
    missed_call,
    only_lead,
    ring,
    texts_to,
)
from tests.support.config import BASIC_CONFIG, CUSTOMER, SIMULTANEOUS

OFF_DUTY = '{mon: "07:00-09:00"}'  # Monday mornings only: off duty on a Tuesday


@pytest.mark.usefixtures("configured")
def test_missed_call_alert_reaches_the_owner_with_everything_needed_to_call_back(
    poster, db, work, fake_twilio, client
):
    missed_call(poster)
    lead = only_lead(db)
    # Queued in the transaction that settled the call: it leaves as soon as a worker picks it up.
    [row] = alert_rows(db)
    assert row.status == MessageStatus.PENDING.value
    assert row.agent_id == lead.owner_id
    work()
    [alert] = texts_to(fake_twilio, lead.owner.phone)
    body = alert["Body"]
    assert alert["From"] == SIMULTANEOUS  # the agent can reply to it
    assert body.startswith("Missed call: (202) 555-0199, Cars.com, North Honda sales.")
    assert f"Lead #{lead.code}" in body
    link = re.search(rf"{re.escape(BASE)}/c/\S+", body).group(0)
    page = client.get(link.removeprefix(BASE))
    assert page.status_code == 200
    assert lead.code in page.get_data(as_text=True)
    assert fake_twilio.calls == []
    with db.session() as session:
        assert session.scalars(select(Message).where(Message.kind == "alert")).one().status == "queued"


@pytest.mark.usefixtures("configured")
def test_replayed_status_callback_sends_no_second_alert(twilio, db, work, fake_twilio):
    sid = ring(twilio)
    call_ends(twilio, sid)
    call_ends(twilio, sid)
    work()
    lead = only_lead(db)
    assert len(texts_to(fake_twilio, lead.owner.phone)) == 1


def test_off_duty_agents_are_skipped_when_the_owner_is_chosen(poster, db, work, fake_twilio, configure):
    configure(BASIC_CONFIG.replace("{key: alice, ", f"{{key: alice, schedule: {OFF_DUTY}, "))
    missed_call(poster)
    lead = only_lead(db)
    assert lead.owner.key == "ben"
    work()
    assert texts_to(fake_twilio, ALICE) == []
    [alert] = texts_to(fake_twilio, BEN)
    assert f"#{lead.code}" in alert["Body"]


def test_hot_lead_also_alerts_the_department_manager(poster, db, work, fake_twilio, configure):
    configure(BASIC_CONFIG.replace("source: Cars.com,", "source: Cars.com, source_weight: 40,"))
    missed_call(poster)  # 10 + 40: medium
    missed_call(poster)  # a second contact this week: high
    work()
    assert texts_to(fake_twilio, DMITRI) == []
    missed_call(poster, outcome="voicemail")  # a third contact and a voicemail: hot
    lead = only_lead(db)
    assert lead.priority >= 76
    work()
    [to_manager] = texts_to(fake_twilio, DMITRI)
    assert f"#{lead.code}" in to_manager["Body"]
    assert "hot priority" in to_manager["Body"]
    assert to_manager["From"] == SIMULTANEOUS
    assert len(texts_to(fake_twilio, lead.owner.phone)) == 3


@pytest.mark.usefixtures("configured")
def test_withheld_caller_alert_has_no_link(poster, db, work, fake_twilio):
    missed_call(poster, caller="anonymous")
    lead = only_lead(db)
    work()
    [alert] = texts_to(fake_twilio, lead.owner.phone)
    assert "withheld number" in alert["Body"]
    assert "/c/" not in alert["Body"]


def customer_texts(app, db, clock, lead_id: int, body: str) -> None:
    """What the inbound SMS webhook announces for a customer's text."""
    with app.app_context(), db.session() as session:
        lead = session.get(Lead, lead_id)
        message = Message(
            sid=new_sid("SM"),
            lead_id=lead.id,
            contact_id=lead.contact_id,
            store_id=lead.store_id,
            direction=Direction.INBOUND.value,
            kind="customer",
            from_number=CUSTOMER,
            to_number=SIMULTANEOUS,
            body=body,
            status=MessageStatus.RECEIVED.value,
            created_at=clock.now(),
        )
        session.add(message)
        session.flush()
        events.message_received.send(session, lead=lead, message=message, now=clock.now())


@pytest.mark.usefixtures("configured")
def test_customer_text_alerts_the_owner_with_its_first_words(app, poster, db, clock, work, fake_twilio):
    missed_call(poster)
    lead = only_lead(db)
    customer_texts(app, db, clock, lead.id, "Hi! Is the blue 2024 Civic Sport still available? I can come by after 5.")
    customer_texts(app, db, clock, lead.id, "Yes")  # an answer to a question, not a setting
    work()
    bodies = [m["Body"] for m in texts_to(fake_twilio, lead.owner.phone)]
    assert len(bodies) == 3
    assert ': "Yes" Reply here to answer.' in bodies[2]
    assert bodies[1].startswith("Text from (202) 555-0199, Cars.com, North Honda sales.")
    assert '"Hi! Is the blue 2024 Civic Sport still available?' in bodies[1]
    assert "Reply here to answer." in bodies[1]
    assert only_lead(db).priority_reasons[0]["code"] == "contact"


def test_customer_text_through_the_webhook_alerts_the_owner(app, poster, db, work, fake_twilio, configured):
    if not any(rule.rule == "/webhooks/sms/incoming" for rule in app.url_map.iter_rules()):
        pytest.skip("the inbound SMS webhook (webhooks/sms.py) is not in this build yet")
    list(play_text(poster, to=SIMULTANEOUS, sender=CUSTOMER, body="Do you have the Pilot in black?"))
    lead = only_lead(db)
    work()
    assert any("Pilot in black" in m["Body"] for m in texts_to(fake_twilio, lead.owner.phone))


@pytest.mark.usefixtures("configured")
def test_an_after_hours_missed_call_alerts_the_owner_at_once(poster, db, work, fake_twilio, clock):
    """Quiet hours protect customers, not staff: at 03:00 the owner still hears of the missed call."""
    clock.set(datetime(2026, 11, 25, 8, 0, tzinfo=UTC))  # 03:00 in New York
    missed_call(poster)
    work()
    lead = only_lead(db)
    [alert] = texts_to(fake_twilio, lead.owner.phone)
    assert f"Lead #{lead.code}" in alert["Body"]
