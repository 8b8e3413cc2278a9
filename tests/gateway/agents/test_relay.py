"""The reply relay: an agent's text reaches the customer of the latest alert, or of `#CODE`."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import select

from gateway import events
from gateway.models import Agent, Contact, Direction, Lead, Message, MessageStatus, Task
from gateway.simulator import new_sid, play_text
from tests.gateway.agents.helpers import ALICE, BEN, alert_rows, missed_call, only_lead, texts_to
from tests.support.config import CUSTOMER, SIMULTANEOUS, UNSCREENED

OTHER_CUSTOMER = "+12025550177"


def agent_texts(app, db, clock, agent_key: str, body: str, to: str = SIMULTANEOUS) -> int:
    """What the SMS webhook does for a text from an agent's phone: log it, announce agent_texted."""
    with app.app_context(), db.session() as session:
        person = session.scalars(select(Agent).where(Agent.key == agent_key)).one()
        message = Message(
            sid=new_sid("SM"),
            agent_id=person.id,
            store_id=person.store_id,
            direction=Direction.INBOUND.value,
            kind="agent",
            from_number=person.phone,
            to_number=to,
            body=body,
            status=MessageStatus.RECEIVED.value,
            created_at=clock.now(),
        )
        session.add(message)
        session.flush()
        events.agent_texted.send(session, agent=person, message=message, now=clock.now())
        return message.id


def relays(db) -> list[Message]:
    with db.session() as session:
        return list(session.scalars(select(Message).where(Message.kind == "relay").order_by(Message.id)))


def lead_of(db, phone: str) -> Lead:
    with db.session() as session:
        return session.scalars(select(Lead).join(Contact).where(Contact.phone == phone)).one()


def open_tasks(db, lead_id: int) -> list[Task]:
    with db.session() as session:
        return list(session.scalars(select(Task).where(Task.lead_id == lead_id, Task.status == "open")))


@pytest.fixture
def alerted(poster, db, configured) -> Lead:
    """A missed call: the owner (alice) got an alert."""
    missed_call(poster)
    lead = only_lead(db)
    assert lead.owner.key == "alice"
    return lead


def test_reply_to_an_alert_reaches_the_customer_from_the_tracked_number(app, db, clock, work, fake_twilio, alerted):
    agent_texts(app, db, clock, "alice", "Hi, this is Alice at North Honda. Is now a good time to call?")
    [relay] = relays(db)
    assert relay.to_number == CUSTOMER
    assert relay.from_number == SIMULTANEOUS
    assert relay.lead_id == alerted.id
    lead = only_lead(db)
    assert lead.first_response_at == clock.now()
    assert lead.status == "contacted"
    assert open_tasks(db, lead.id) == []
    work()
    sent = [m for m in texts_to(fake_twilio, CUSTOMER) if m["Body"].startswith("Hi, this is Alice")]
    assert len(sent) == 1
    assert sent[0]["From"] == SIMULTANEOUS
    # The agent's text stopped the missed-call cadence: its 4-hour follow-up never goes.
    clock.advance(timedelta(hours=5))
    work()
    assert not [m for m in texts_to(fake_twilio, CUSTOMER) if "Still looking?" in m["Body"]]


def test_lead_code_names_the_customer_whatever_the_latest_alert(app, db, clock, poster, work, fake_twilio, alerted):
    missed_call(poster, to=UNSCREENED, caller=OTHER_CUSTOMER)  # the next lead goes to the less busy ben
    other = lead_of(db, OTHER_CUSTOMER)
    assert alert_rows(db, "ben")[-1].lead_id == other.id
    agent_texts(app, db, clock, "ben", f"#{alerted.code.lower()} Your trade-in quote is ready.")
    [relay] = relays(db)
    assert relay.to_number == CUSTOMER
    assert relay.body == "Your trade-in quote is ready."
    assert relay.from_number == SIMULTANEOUS
    assert lead_of(db, CUSTOMER).status == "contacted"
    assert lead_of(db, OTHER_CUSTOMER).status == "new"
    # Without a code, the latest alert decides.
    agent_texts(app, db, clock, "ben", "Thanks for calling! When can you come in?")
    latest = relays(db)[-1]
    assert latest.to_number == OTHER_CUSTOMER
    assert latest.from_number == UNSCREENED
    assert lead_of(db, OTHER_CUSTOMER).status == "contacted"


def test_unknown_code_gets_a_help_text_and_relays_nothing(app, db, clock, work, fake_twilio, alerted):
    agent_texts(app, db, clock, "alice", "#ZZZZZZ hello there")
    assert relays(db) == []
    work()
    [answer] = [m for m in texts_to(fake_twilio, ALICE) if "No lead #ZZZZZZ" in m["Body"]]
    assert answer["From"] == SIMULTANEOUS
    assert only_lead(db).first_response_at is None


def test_agent_without_any_alert_or_code_gets_a_help_text(app, db, clock, work, fake_twilio, configured):
    agent_texts(app, db, clock, "ben", "hello?")
    assert relays(db) == []
    work()
    [answer] = texts_to(fake_twilio, BEN)
    assert "#" in answer["Body"]
    assert "reply to one of their alerts" in answer["Body"]


def test_a_lead_of_another_store_cannot_be_named(app, db, clock, poster, work, configured):
    from tests.support.config import SOUTH

    missed_call(poster, to=SOUTH, caller=OTHER_CUSTOMER)
    south = lead_of(db, OTHER_CUSTOMER)
    agent_texts(app, db, clock, "alice", f"#{south.code} hi")
    assert relays(db) == []


def test_opted_out_customer_is_not_texted_and_the_agent_is_told(app, db, clock, work, fake_twilio, alerted):
    with db.session() as session:
        contact = session.scalars(select(Contact).where(Contact.phone == CUSTOMER)).one()
        contact.opted_out = True
        contact.opted_out_at = clock.now()
    agent_texts(app, db, clock, "alice", "Hi, following up on your call")
    work()
    [relay] = relays(db)
    assert relay.status == MessageStatus.REFUSED.value
    assert relay.refusal_code == "opted_out"
    assert not [m for m in texts_to(fake_twilio, CUSTOMER) if "following up" in m["Body"]]
    notices = [m["Body"] for m in texts_to(fake_twilio, ALICE) if m["Body"].startswith("Not sent")]
    assert len(notices) == 1
    assert "opted out" in notices[0]
    lead = only_lead(db)
    assert lead.first_response_at is None
    assert len(open_tasks(db, lead.id)) == 1


def test_the_same_agent_text_is_relayed_once(app, db, clock, alerted):
    message_id = agent_texts(app, db, clock, "alice", "On my way to call you")
    with app.app_context(), db.session() as session:
        person = session.scalars(select(Agent).where(Agent.key == "alice")).one()
        message = session.get(Message, message_id)
        events.agent_texted.send(session, agent=person, message=message, now=clock.now())
    assert len(relays(db)) == 1


# --- through the inbound SMS webhook, once it is there --------------------------------------------------------


def _sms_webhook(app) -> None:
    if not any(rule.rule == "/webhooks/sms/incoming" for rule in app.url_map.iter_rules()):
        pytest.skip("the inbound SMS webhook (webhooks/sms.py) is not in this build yet")


def test_agent_text_through_the_webhook_is_relayed(app, poster, db, work, fake_twilio, alerted):
    _sms_webhook(app)
    list(play_text(poster, to=SIMULTANEOUS, sender=ALICE, body="Alice here, calling you in 5 minutes"))
    [relay] = relays(db)
    assert relay.to_number == CUSTOMER
    assert relay.from_number == SIMULTANEOUS
    assert only_lead(db).status == "contacted"


def test_unknown_phone_texting_the_alert_number_is_relayed_nowhere(app, poster, db, work, fake_twilio, alerted):
    _sms_webhook(app)
    list(play_text(poster, to=SIMULTANEOUS, sender="+12025550188", body="#" + alerted.code + " hi"))
    assert relays(db) == []
    work()
    assert not [m for m in texts_to(fake_twilio, CUSTOMER) if m["Body"] == "hi"]
