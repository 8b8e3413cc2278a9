"""Texts in doubt (gateway/reconcile/doubt.py): a worker stopped between handing texts to the provider and
hearing back. The pass looks each up in the provider's log (the real `twilio` SDK against the local fake):
taken, it is recorded and never sent again; never taken, it goes again through the send guard, unless it is
too old, out of order or unsure, when it fails and a person reviews it."""

from __future__ import annotations

from datetime import timedelta

import pytest
from redis import Redis
from sqlalchemy import select, update

from cadences.models import CadenceStep
from cadences.services import sync_outcomes
from gateway.app import create_app
from gateway.crm.models import CrmDelivery
from gateway.messaging.outbound import mark_stuck_sends
from gateway.metrics import TEXTS_IN_DOUBT, scrape, status_report
from gateway.models import Contact, Lead, LeadEvent, Message, Task
from gateway.provider import TwilioProvider
from gateway.reconcile.doubt import CLOCK_SKEW, RESEND_WITHIN, Doubts, settle_texts_in_doubt
from gateway.reconcile.jobs import run_pass
from gateway.runtime import shutdown
from tests.conftest import ACCOUNT_SID, AUTH_TOKEN
from tests.support.concurrency import at_once
from tests.support.config import BASIC_CONFIG, SIMULTANEOUS

CALLERS = ["+12025550161", "+12025550162", "+12025550163"]
FIRST_TEXT = "Hi, this is North Honda. Sorry we missed your call! How can we help?"
CRM_CONFIG = BASIC_CONFIG.replace(
    "    response_sla: 5m\n",
    '    response_sla: 5m\n    crm:\n      - {type: webhook, url: "http://127.0.0.1:9/leads", secret: "s3cret"}\n',
    1,
)


@pytest.fixture
def app(settings, clock, redis):
    """The gateway with reconciliation on, listing the fake's records in pages of two."""
    provider = TwilioProvider(ACCOUNT_SID, AUTH_TOKEN, settings.twilio_api_base_url, timeout=2, list_page_size=2)
    application = create_app(
        settings.with_changes(reconcile_interval=300), clock=clock, provider=provider,
        redis=Redis.from_url(settings.redis_url or ""),
    )
    yield application
    shutdown(application)


def missed_call(twilio, caller: str, n: int) -> None:
    call = {"CallSid": f"CA{n:032x}", "From": caller, "To": SIMULTANEOUS}
    twilio.post("/webhooks/voice/incoming", {**call, "CallStatus": "ringing"})
    assert twilio.post("/webhooks/voice/status", {**call, "CallStatus": "no-answer"}).status_code == 204


def texts(db, **where) -> list[Message]:
    with db.session() as session:
        query = select(Message).where(Message.direction == "outbound").order_by(Message.id)
        for name, value in where.items():
            query = query.where(getattr(Message, name) == value)
        return list(session.scalars(query))


def owner_phone(db, caller: str) -> str:
    with db.session() as session:
        lead = session.scalars(select(Lead).join(Contact).where(Contact.phone == caller)).one()
        return lead.owner.phone


def claimed_by_a_worker_that_died(db, clock, redis, messages: list[Message]) -> None:
    """What a worker leaves when it is killed after claiming these texts: rows `sending`, its job gone."""
    redis.flushdb()
    with db.session() as session:
        session.execute(
            update(Message)
            .where(Message.id.in_([m.id for m in messages]))
            .values(status="sending", claimed_at=clock.now(), attempts=1)
        )
        session.commit()


def in_doubt(app, db, clock, settings) -> None:
    """The claim times out: the sweep marks the texts unknown, and their cadence steps follow."""
    clock.advance(timedelta(seconds=settings.send_claim_timeout + 1))
    with app.app_context(), db.session() as session:
        mark_stuck_sends(session, clock.now())
        session.commit()
        sync_outcomes(session, clock.now())
        session.commit()


def steps(db) -> dict[str, str]:
    """Each first step's status, by the caller its text goes to."""
    with db.session() as session:
        return {session.get(Message, s.message_id).to_number: s.status
                for s in session.scalars(select(CadenceStep).where(CadenceStep.step_index == 0))}


def one_pass(app):
    with app.app_context():
        return run_pass()


def statuses(db) -> dict[str, str]:
    return {m.to_number: m.status for m in texts(db)}


def review_events(db) -> list[tuple[str, str]]:
    with db.session() as session:
        return [(e.kind, e.text) for e in session.scalars(
            select(LeadEvent).where(LeadEvent.kind.in_(("send-unknown", "send-failed"))).order_by(LeadEvent.id))]


def review_tasks(db) -> int:
    with db.session() as session:
        return len(list(session.scalars(select(Task).where(Task.kind == "review"))))


def counted(outcome: str) -> float:
    return float(TEXTS_IN_DOUBT.labels(outcome=outcome)._value.get())


def test_a_text_the_provider_took_is_recorded_and_one_it_never_took_goes_again(
    app, db, twilio, clock, redis, settings, fake_twilio, configure, work
):
    configure(CRM_CONFIG)
    missed_call(twilio, CALLERS[0], 1)
    first_text, alert = texts(db)
    claimed_by_a_worker_that_died(db, clock, redis, [first_text, alert])
    # The provider took the first text (and has delivered it since); the alert's request never reached it.
    taken = fake_twilio.add_sent_message(from_=SIMULTANEOUS, to=CALLERS[0], body=FIRST_TEXT,
                                         date_created=clock.now() + timedelta(seconds=1), status="delivered")
    in_doubt(app, db, clock, settings)
    assert statuses(db) == {CALLERS[0]: "unknown", alert.to_number: "unknown"}
    assert steps(db) == {CALLERS[0]: "unknown"}
    assert review_tasks(db) == 0  # reconciliation is on: it looks first
    current = app.extensions["gateway"]
    assert "texts not confirmed: 0 sending, 2 unknown (the oldest 121.0 s old)" in status_report(current)
    assert 'gateway_unconfirmed_texts{state="unknown"} 2.0' in scrape(current).decode()
    before = counted("taken"), counted("sent_again")

    result = one_pass(app)
    work(sweep=False)  # the worker sends what goes again
    work()  # the next sweep: the cadence step follows its text

    assert (result.doubts.taken, result.doubts.sent_again, result.doubts.not_sent) == (1, 1, 0)
    (first, again) = texts(db)
    assert (first.sid, first.status, first.sent_at) == (taken, "delivered", clock.now() - timedelta(seconds=120))
    assert again.status == "queued"
    assert [m["To"] for m in fake_twilio.messages] == [alert.to_number]  # nothing to the caller a second time
    assert (counted("taken"), counted("sent_again")) == (before[0] + 1, before[1] + 1)
    assert steps(db) == {CALLERS[0]: "sent"}
    with db.session() as session:
        records = [d.event for d in session.scalars(select(CrmDelivery).where(CrmDelivery.kind == "webhook"))]
    assert records.count("message.sent") == 1  # the CRM hears of the text the provider took
    assert review_tasks(db) == 0
    assert "texts not confirmed: 0 sending, 0 unknown" in status_report(current)
    # A second pass finds nothing in doubt.
    assert one_pass(app).doubts.taken == one_pass(app).doubts.sent_again == 0


def test_a_text_sent_again_still_passes_the_send_guard(app, db, twilio, clock, redis, settings, fake_twilio,
                                                       configure, work):
    configure(BASIC_CONFIG)
    missed_call(twilio, CALLERS[0], 1)
    missed_call(twilio, CALLERS[1], 2)
    first_texts = texts(db, kind="cadence")
    claimed_by_a_worker_that_died(db, clock, redis, first_texts)
    work(sweep=False)  # the alerts go
    # Meanwhile the second caller texts STOP.
    stop = {"MessageSid": "SM" + "5" * 32, "From": CALLERS[1], "To": SIMULTANEOUS, "Body": "STOP",
            "NumSegments": "1", "NumMedia": "0"}
    assert twilio.post("/webhooks/sms/incoming", stop).status_code == 200
    in_doubt(app, db, clock, settings)
    assert steps(db) == {CALLERS[0]: "unknown", CALLERS[1]: "unknown"}

    assert one_pass(app).doubts.sent_again == 2
    with db.session() as session:  # the sweep: the steps are claimed again, as their texts go again
        sync_outcomes(session, clock.now())
        session.commit()
    assert steps(db) == {CALLERS[0]: "claimed", CALLERS[1]: "claimed"}
    work(sweep=False)
    work()

    sent = [m["To"] for m in fake_twilio.messages if m["To"] in CALLERS]
    assert sent == [CALLERS[0]]
    by_caller = {m.to_number: m for m in texts(db, kind="cadence")}
    assert by_caller[CALLERS[0]].status == "queued"
    assert (by_caller[CALLERS[1]].status, by_caller[CALLERS[1]].refusal_code) == ("refused", "opted_out")
    assert steps(db) == {CALLERS[0]: "sent", CALLERS[1]: "skipped"}


def test_a_text_in_doubt_too_old_overtaken_or_unsure_fails_and_goes_to_a_person(
    app, db, twilio, clock, redis, settings, fake_twilio, configure, work
):
    configure(BASIC_CONFIG)
    for n, caller in enumerate(CALLERS):
        missed_call(twilio, caller, n)
    first_texts = {m.to_number: m for m in texts(db, kind="cadence")}
    claimed_by_a_worker_that_died(db, clock, redis, list(first_texts.values()))
    claimed_at = clock.now()
    # The provider has a text to the second caller at that moment, with another body: not this one, surely?
    fake_twilio.add_sent_message(from_=SIMULTANEOUS, to=CALLERS[1], body="Your service appointment is at 9",
                                 date_created=claimed_at + timedelta(seconds=2))
    # ... and one to the third caller well before the claim, which is not this text either.
    fake_twilio.add_sent_message(from_=SIMULTANEOUS, to=CALLERS[2], body=FIRST_TEXT,
                                 date_created=claimed_at - CLOCK_SKEW - timedelta(seconds=5))
    in_doubt(app, db, clock, settings)
    # An agent texted the third caller since: the first text would now arrive after the agent's.
    with db.session() as session:
        later = Message(direction="outbound", kind="api", from_number=SIMULTANEOUS, to_number=CALLERS[2],
                        body="Hi, Alice here", status="delivered", sid="SM" + "7" * 32, sent_at=clock.now(),
                        created_at=clock.now(), updated_at=clock.now())
        session.add(later)
        session.commit()

    result = one_pass(app)

    assert (result.doubts.taken, result.doubts.sent_again, result.doubts.not_sent) == (0, 1, 2)
    caller_texts = {m.to_number: m for m in texts(db, kind="cadence")}
    assert caller_texts[CALLERS[1]].status == caller_texts[CALLERS[2]].status == "failed"
    assert "does not match" in caller_texts[CALLERS[1]].error_message
    assert "later text" in caller_texts[CALLERS[2]].error_message
    assert [kind for kind, _ in review_events(db)] == ["send-failed", "send-failed"]
    assert review_tasks(db) == 2
    work(sweep=False)
    assert statuses(db)[CALLERS[0]] == "queued"  # sent again: nothing stands in its way
    assert [m["To"] for m in fake_twilio.messages if m["To"] in CALLERS] == [CALLERS[0]]


def test_an_alert_in_doubt_about_a_lead_handled_since_is_not_sent(
    app, db, twilio, clock, redis, settings, fake_twilio, configure
):
    configure(BASIC_CONFIG)
    missed_call(twilio, CALLERS[0], 1)
    missed_call(twilio, CALLERS[1], 2)
    alerts = texts(db, kind="alert")
    claimed_by_a_worker_that_died(db, clock, redis, alerts)
    with db.session() as session:  # an agent called the first caller back: the callback task is done
        task = session.scalars(select(Task).join(Lead).join(Contact).where(Contact.phone == CALLERS[0])).one()
        task.status, task.completed_at = "done", clock.now()
        session.commit()
    in_doubt(app, db, clock, settings)

    result = one_pass(app)

    assert (result.doubts.sent_again, result.doubts.not_sent) == (1, 1)
    by_lead = {m.lead_id: m for m in texts(db, kind="alert")}
    with db.session() as session:
        lead_of = {session.scalars(select(Lead).join(Contact).where(Contact.phone == caller)).one().id: caller
                   for caller in CALLERS[:2]}
    outcome = {lead_of[lead_id]: (m.status, m.error_message) for lead_id, m in by_lead.items()}
    assert outcome[CALLERS[0]][0] == "failed"
    assert "not needed" in outcome[CALLERS[0]][1]
    assert outcome[CALLERS[1]][0] == "pending"  # on its way again
    assert review_tasks(db) == 0  # an alert's failure is nothing for the customer's owner to review


def test_a_text_in_doubt_for_longer_than_it_is_worth_is_not_sent(
    app, db, twilio, clock, redis, settings, fake_twilio, configure
):
    configure(BASIC_CONFIG)
    missed_call(twilio, CALLERS[0], 1)
    claimed_by_a_worker_that_died(db, clock, redis, texts(db))
    in_doubt(app, db, clock, settings)
    fake_twilio.set_down()
    kept = one_pass(app)
    assert kept.errors
    assert kept.doubts.not_sent == 0
    assert set(statuses(db).values()) == {"unknown"}  # the provider down: they stay in doubt

    fake_twilio.set_down(False)
    clock.advance(RESEND_WITHIN)
    result = one_pass(app)

    assert result.doubts.not_sent == 2
    assert set(statuses(db).values()) == {"failed"}
    assert all("too long ago" in m.error_message for m in texts(db))
    assert review_tasks(db) == 1  # the caller's lead; the agent's alert needs no task of its own
    assert fake_twilio.messages == []


def test_a_text_in_doubt_waits_while_another_to_the_same_person_is_on_its_way(
    app, db, twilio, clock, redis, settings, fake_twilio, configure
):
    configure(BASIC_CONFIG)
    missed_call(twilio, CALLERS[0], 1)
    first_text = texts(db, kind="cadence")[0]
    claimed_by_a_worker_that_died(db, clock, redis, [first_text])
    in_doubt(app, db, clock, settings)
    with db.session() as session:  # another worker is sending the caller a text, in the same words, right now
        busy = Message(direction="outbound", kind="api", from_number=SIMULTANEOUS, to_number=CALLERS[0],
                       body=FIRST_TEXT, status="sending", claimed_at=clock.now(), created_at=clock.now(),
                       updated_at=clock.now())
        session.add(busy)
        session.commit()
        busy_id = busy.id
    # Its record is at the provider already, its SID on no row yet: it must not pass for the text in doubt.
    busy_sid = fake_twilio.add_sent_message(from_=SIMULTANEOUS, to=CALLERS[0], body=FIRST_TEXT,
                                            date_created=clock.now())

    assert one_pass(app).doubts.waiting == 1
    assert texts(db, id=first_text.id)[0].status == "unknown"

    with db.session() as session:  # its answer comes back
        session.execute(update(Message).where(Message.id == busy_id).values(
            status="queued", sid=busy_sid, sent_at=clock.now()))
        session.commit()
    result = one_pass(app)

    assert (result.doubts.taken, result.doubts.not_sent) == (0, 1)  # sent now, it would come after that one
    assert [m.id for m in texts(db, sid=busy_sid)] == [busy_id]


def test_two_passes_at_once_settle_each_text_once(app, db, twilio, clock, redis, settings, fake_twilio,
                                                  configure, work):
    configure(BASIC_CONFIG)
    for n, caller in enumerate(CALLERS):
        missed_call(twilio, caller, n)
    claimed_by_a_worker_that_died(db, clock, redis, texts(db))
    in_doubt(app, db, clock, settings)
    current = app.extensions["gateway"]

    def settle() -> Doubts:
        return settle_texts_in_doubt(current.database.sessions, current.provider, clock.now(),
                                     timedelta(seconds=settings.send_claim_timeout), [])[0]

    results = at_once(app, settle, settle)
    work(sweep=False)

    assert sum(r.sent_again for r in results) == len(texts(db)) == 6
    assert sorted(m["To"] for m in fake_twilio.messages) == sorted(m.to_number for m in texts(db))


def test_without_reconciliation_a_text_in_doubt_goes_to_a_person_at_once(
    db, twilio, clock, redis, settings, configure, make_app
):
    configure(BASIC_CONFIG)
    missed_call(twilio, CALLERS[0], 1)
    claimed_by_a_worker_that_died(db, clock, redis, texts(db))
    clock.advance(timedelta(seconds=settings.send_claim_timeout + 1))

    with make_app(reconcile_interval=0).app_context(), db.session() as session:
        mark_stuck_sends(session, clock.now())
        session.commit()

    assert set(statuses(db).values()) == {"unknown"}
    assert [kind for kind, _ in review_events(db)] == ["send-unknown"]  # the caller's text; not the alert
    assert review_tasks(db) == 1
