"""Reconciliation (gateway/reconcile/): what the provider's log holds and no webhook told the gateway
becomes what its webhooks would have made. The real `twilio` SDK against the local fake of the REST API;
the fake's seeds are calls and texts whose webhooks were lost."""

from __future__ import annotations

import json
from datetime import timedelta

import pytest
from redis import Redis
from sqlalchemy import func, select

from gateway.app import create_app
from gateway.calls.hotpath import hot_path
from gateway.crm.models import CrmDelivery
from gateway.metrics import RECONCILED
from gateway.models import Call, Contact, Lead, LeadEvent, Message, Task
from gateway.provider import TwilioProvider
from gateway.reconcile.jobs import run_pass
from gateway.reconcile.models import ReconcileMark
from gateway.reconcile.services import SETTLE_AFTER
from gateway.runtime import shutdown
from gateway.simulator import play_call
from tests.conftest import ACCOUNT_SID, AUTH_TOKEN
from tests.support.api import ApiClient, make_key
from tests.support.concurrency import at_once
from tests.support.config import BASIC_CONFIG, CUSTOMER, SEQUENTIAL, SIMULTANEOUS, SOUTH

TEXTER = "+13125550188"
# Pages of two: a handful of records takes the SDK across several pages.
PAGE = 2
CRM_CONFIG = BASIC_CONFIG.replace(
    "    response_sla: 5m\n",
    "    response_sla: 5m\n"
    "    crm:\n"
    '      - {type: webhook, url: "http://127.0.0.1:9/leads", secret: "s3cret"}\n'
    '      - {type: adf-http, url: "http://127.0.0.1:9/adf"}\n',
    1,
)


@pytest.fixture
def app(settings, clock, redis):
    """The gateway with reconciliation on, listing the fake's records in small pages."""
    provider = TwilioProvider(ACCOUNT_SID, AUTH_TOKEN, settings.twilio_api_base_url, timeout=2,
                              list_page_size=PAGE)
    application = create_app(
        settings.with_changes(reconcile_interval=300), clock=clock, provider=provider,
        redis=Redis.from_url(settings.redis_url or ""),
    )
    yield application
    shutdown(application)


@pytest.fixture
def crm_configured(configure):
    configure(CRM_CONFIG)


def one_pass(app):
    with app.app_context():
        return run_pass()


def count(db, model, *where) -> int:
    with db.session() as session:
        return session.scalar(select(func.count()).select_from(model).where(*where)) or 0


def sent_to(fake_twilio, number):
    return [m for m in fake_twilio.messages if m["To"] == number]


def reconciled_total(kind: str) -> float:
    return float(RECONCILED.labels(kind=kind)._value.get())


# --- item 1: calls whose end never came ---------------------------------------------------------------


@pytest.mark.usefixtures("configured")
def test_a_call_whose_status_callback_never_comes_is_settled_from_the_providers_record(
    app, db, twilio, clock, fake_twilio, work
):
    sid = fake_twilio.add_inbound_call(from_=CUSTOMER, to=SIMULTANEOUS, status="ringing", start_time=clock.now())
    twilio.post("/webhooks/voice/incoming", {"CallSid": sid, "From": CUSTOMER, "To": SIMULTANEOUS,
                                             "CallStatus": "ringing"})
    rang_at = clock.now()

    clock.advance(timedelta(minutes=2))
    assert one_pass(app).stuck_calls == 0  # the provider still shows it ringing: wait
    assert count(db, Lead) == 0

    fake_twilio.set_call_status(sid, "no-answer")
    clock.advance(timedelta(minutes=5))
    result = one_pass(app)
    work(sweep=False)

    assert result.stuck_calls == 1
    with db.session() as session:
        call = session.scalars(select(Call)).one()
        assert call.processed_at == clock.now()
        assert call.status == "no-answer"
        assert call.reconciled
        assert call.outcome == "abandoned"  # as the status callback settles a call that rang and ended
        lead = session.scalars(select(Lead)).one()
        assert lead.created_at == rang_at
        task = session.scalars(select(Task)).one()
        assert task.kind == "callback"
        assert task.due_at == rang_at + timedelta(minutes=5)
        owner = lead.owner
        assert owner is not None
    assert len(sent_to(fake_twilio, CUSTOMER)) == 1  # the cadence's first text
    assert len(sent_to(fake_twilio, owner.phone)) == 1  # the owner's alert

    # The status callback turns up after all: nothing is done twice.
    late = twilio.post("/webhooks/voice/status", {"CallSid": sid, "From": CUSTOMER, "To": SIMULTANEOUS,
                                                  "CallStatus": "no-answer"})
    assert late.status_code == 204
    work(sweep=False)
    assert (count(db, Lead), count(db, Task), count(db, Call)) == (1, 1, 1)
    assert len(sent_to(fake_twilio, CUSTOMER)) == 1
    assert len(sent_to(fake_twilio, owner.phone)) == 1


@pytest.mark.usefixtures("configured")
def test_a_settled_call_is_not_asked_about_again(app, db, poster, clock, fake_twilio):
    list(play_call(poster, to=SIMULTANEOUS, caller=CUSTOMER, outcome="no-answer"))
    clock.advance(timedelta(minutes=5))
    result = one_pass(app)
    assert (result.stuck_calls, result.calls, result.errors) == (0, 0, [])
    with db.session() as session:
        assert not session.scalars(select(Call)).one().reconciled


# --- item 2: calls and texts the gateway never heard of -----------------------------------------------------


@pytest.mark.usefixtures("crm_configured")
def test_a_call_and_a_text_never_heard_of_become_leads_within_one_pass(
    app, db, client, clock, fake_twilio, work
):
    called_at = clock.now() - timedelta(minutes=4)
    texted_at = clock.now() - timedelta(minutes=3)
    call_sid = fake_twilio.add_inbound_call(from_=CUSTOMER, to=SIMULTANEOUS, status="no-answer",
                                            start_time=called_at)
    text_sid = fake_twilio.add_inbound_message(from_=TEXTER, to=SEQUENTIAL,
                                               body="Is the red F-150 still there?", date_sent=texted_at)
    calls_before, texts_before = reconciled_total("call"), reconciled_total("message")

    work()  # the sweep starts a pass, the worker runs it and sends what it queued

    with db.session() as session:
        call = session.scalars(select(Call)).one()
        assert (call.sid, call.reconciled, call.outcome) == (call_sid, True, "missed")
        assert call.started_at == called_at
        caller_lead = session.get(Lead, call.lead_id)
        assert caller_lead.created_at == called_at  # the response clock starts at the call
        assert caller_lead.source == "Cars.com"
        caller_task = session.scalars(select(Task).where(Task.lead_id == caller_lead.id)).one()
        assert (caller_task.kind, caller_task.due_at) == ("callback", called_at + timedelta(minutes=5))
        caller_owner = caller_lead.owner.phone

        text = session.scalars(select(Message).where(Message.sid == text_sid)).one()
        assert (text.reconciled, text.body, text.created_at) == (True, "Is the red F-150 still there?", texted_at)
        texter_lead = session.get(Lead, text.lead_id)
        assert texter_lead.source == "Website"
        texter_task = session.scalars(select(Task).where(Task.lead_id == texter_lead.id)).one()
        assert (texter_task.kind, texter_task.due_at) == ("reply", texted_at + timedelta(minutes=5))
        texter_owner = texter_lead.owner.phone

        timeline = {
            lead_id: [e.kind for e in session.scalars(select(LeadEvent).where(LeadEvent.lead_id == lead_id))]
            for lead_id in (caller_lead.id, texter_lead.id)
        }
        assert all("reconciled" in kinds for kinds in timeline.values())
        crm = [json.loads(d.payload) for d in session.scalars(select(CrmDelivery)) if d.event == "call.completed"
               and d.kind == "webhook"]
        adf = [d.payload.decode() for d in session.scalars(select(CrmDelivery)) if d.kind == "adf-http"]

    # The text-back to the caller and the alerts to both owners.
    assert [m["Body"] for m in sent_to(fake_twilio, CUSTOMER)] == [
        "Hi, this is North Honda. Sorry we missed your call! How can we help?"
    ]
    assert len(sent_to(fake_twilio, caller_owner)) == 1
    assert len(sent_to(fake_twilio, texter_owner)) == 1

    # Marked as found by reconciliation: the CRM record, the API, the counts.
    assert [c["data"]["contact"]["reconciled"] for c in crm] == [True]
    assert crm[0]["data"]["call"]["reconciled"] is True
    assert any("Found in the provider's log" in body for body in adf)
    api = ApiClient(client, make_key(db, clock.now()))
    clock.advance(timedelta(seconds=3))  # the call log lists calls settled a moment ago
    assert [c["reconciled"] for c in api.get("/api/v1/calls").get_json()["items"]] == [True]
    messages = api.get(f"/api/v1/messages?lead={texter_lead.id}").get_json()["items"]
    assert [m["reconciled"] for m in messages if m["sid"] == text_sid] == [True]
    metrics = api.get("/api/v1/metrics").get_json()
    assert (metrics["reconciled_calls"], metrics["reconciled_messages"]) == (1, 1)
    assert reconciled_total("call") == calls_before + 1
    assert reconciled_total("message") == texts_before + 1


@pytest.mark.usefixtures("configured")
def test_webhooks_arriving_after_reconciliation_double_nothing(app, db, twilio, clock, fake_twilio, work):
    call_sid = fake_twilio.add_inbound_call(from_=CUSTOMER, to=SIMULTANEOUS, status="no-answer",
                                            start_time=clock.now() - timedelta(minutes=4))
    text_sid = fake_twilio.add_inbound_message(from_=TEXTER, to=SOUTH, body="Still open?",
                                               date_sent=clock.now() - timedelta(minutes=3))
    work()
    before = (count(db, Lead), count(db, Task), count(db, Call), count(db, Message), len(fake_twilio.messages))
    assert before[:3] == (2, 2, 1)

    # The lost webhooks arrive at last, and a second pass runs: the SIDs were logged once.
    call = {"CallSid": call_sid, "From": CUSTOMER, "To": SIMULTANEOUS}
    twilio.post("/webhooks/voice/incoming", {**call, "CallStatus": "ringing"})
    assert twilio.post("/webhooks/voice/status", {**call, "CallStatus": "no-answer"}).status_code == 204
    sms = {"MessageSid": text_sid, "SmsSid": text_sid, "From": TEXTER, "To": SOUTH, "Body": "Still open?",
           "NumSegments": "1", "NumMedia": "0"}
    assert twilio.post("/webhooks/sms/incoming", sms).status_code == 200
    clock.advance(timedelta(minutes=1))
    second = one_pass(app)
    work(sweep=False)

    assert (second.calls, second.texts) == (0, 0)
    after = (count(db, Lead), count(db, Task), count(db, Call), count(db, Message), len(fake_twilio.messages))
    assert after == before


@pytest.mark.usefixtures("configured")
def test_listings_are_read_across_several_pages(app, db, clock, fake_twilio, work):
    callers = [f"+1202555{n:04d}" for n in range(1300, 1305)]
    for minutes, caller in enumerate(callers):
        fake_twilio.add_inbound_call(from_=caller, to=SIMULTANEOUS, status="busy",
                                     start_time=clock.now() - timedelta(minutes=9 - minutes))
    texters = [f"+1312555{n:04d}" for n in range(1400, 1403)]
    for minutes, texter in enumerate(texters):
        fake_twilio.add_inbound_message(from_=texter, to=SIMULTANEOUS, body="Hello",
                                        date_sent=clock.now() - timedelta(minutes=8 - minutes))

    result = one_pass(app)
    work(sweep=False)

    assert (result.calls, result.texts) == (5, 3)  # pages of 2: three pages of calls, two of texts
    with db.session() as session:
        phones = {lead.contact.phone for lead in session.scalars(select(Lead))}
        assert phones == set(callers) | set(texters)
        assert {c.outcome for c in session.scalars(select(Call))} == {"busy"}
    assert {m["To"] for m in fake_twilio.messages} >= set(callers)  # each busy caller got the text-back


@pytest.mark.usefixtures("configured")
def test_a_call_still_in_progress_waits_and_holds_the_watermark(app, db, clock, fake_twilio, work):
    started = clock.now() - timedelta(minutes=3)
    sid = fake_twilio.add_inbound_call(from_=CUSTOMER, to=SIMULTANEOUS, status="in-progress", start_time=started)

    first = one_pass(app)
    assert (first.calls, first.waiting) == (0, 1)
    assert count(db, Call) == 0
    with db.session() as session:
        held = [m for m in session.scalars(select(ReconcileMark)) if m.calls_through == started]
        assert len(held) == 1  # the number it rang holds its watermark at the call's start

    fake_twilio.set_call_status(sid, "completed", duration=20)
    clock.advance(timedelta(minutes=30))  # past the overlap: only the held watermark finds it again
    second = one_pass(app)
    work(sweep=False)
    assert second.calls == 1
    with db.session() as session:
        call = session.scalars(select(Call)).one()
        assert (call.sid, call.reconciled, call.duration) == (sid, True, 20)


@pytest.mark.usefixtures("configured")
def test_a_call_that_ended_moments_ago_is_left_for_its_webhook(app, db, clock, fake_twilio):
    fake_twilio.add_inbound_call(from_=CUSTOMER, to=SIMULTANEOUS, status="no-answer",
                                 start_time=clock.now() - SETTLE_AFTER / 2)
    result = one_pass(app)
    assert (result.calls, result.waiting) == (0, 1)
    assert count(db, Call) == 0


@pytest.mark.usefixtures("configured")
def test_a_withheld_caller_found_by_reconciliation_gets_a_lead_and_no_text(app, db, clock, fake_twilio, work):
    fake_twilio.add_inbound_call(from_="anonymous", to=SIMULTANEOUS, status="no-answer",
                                 start_time=clock.now() - timedelta(minutes=4))
    assert one_pass(app).calls == 1
    work(sweep=False)
    with db.session() as session:
        lead = session.scalars(select(Lead)).one()
        assert lead.contact.phone is None
        owner = lead.owner.phone
    assert {m["To"] for m in fake_twilio.messages} == {owner}  # the alert, no text to anybody else


@pytest.mark.usefixtures("configured")
def test_a_stop_found_by_reconciliation_opts_the_phone_out(app, db, clock, fake_twilio):
    fake_twilio.add_inbound_message(from_=CUSTOMER, to=SIMULTANEOUS, body="STOP",
                                    date_sent=clock.now() - timedelta(minutes=2))
    assert one_pass(app).texts == 1
    with db.session() as session:
        message = session.scalars(select(Message)).one()
        assert message.reconciled
        assert session.scalars(select(Contact)).one().opted_out


@pytest.mark.usefixtures("configured")
def test_calls_the_gateway_logged_are_left_alone(app, db, twilio, clock, fake_twilio):
    sid = fake_twilio.add_inbound_call(from_=CUSTOMER, to=SIMULTANEOUS, status="completed", duration=30,
                                       start_time=clock.now() - timedelta(minutes=3))
    call = {"CallSid": sid, "From": CUSTOMER, "To": SIMULTANEOUS}
    twilio.post("/webhooks/voice/incoming", {**call, "CallStatus": "ringing"})
    twilio.post("/webhooks/voice/status", {**call, "CallStatus": "completed", "CallDuration": "30"})
    hot_path(app).flush()
    assert one_pass(app).calls == 0
    with db.session() as session:
        assert not session.scalars(select(Call)).one().reconciled


# --- failures ---------------------------------------------------------------------------------------------


@pytest.mark.usefixtures("configured")
def test_a_provider_outage_keeps_the_watermark_and_the_next_pass_catches_up(app, db, clock, fake_twilio):
    one_pass(app)
    with db.session() as session:
        marks = {m.tracked_number_id: m.calls_through for m in session.scalars(select(ReconcileMark))}
    assert len(marks) == 5

    fake_twilio.set_down(True)
    clock.advance(timedelta(minutes=30))
    missed_at = clock.now() - timedelta(minutes=20)  # while the provider was down, 10 minutes past the overlap
    down = one_pass(app)
    assert down.errors
    assert (down.calls, down.texts) == (0, 0)
    with db.session() as session:
        rows = list(session.scalars(select(ReconcileMark)))
        assert {m.tracked_number_id: m.calls_through for m in rows} == marks
        assert [m.last_error is not None for m in rows].count(True) == 1  # the outage ended the pass

    fake_twilio.set_down(False)
    fake_twilio.add_inbound_call(from_=CUSTOMER, to=SIMULTANEOUS, status="no-answer", start_time=missed_at)
    back = one_pass(app)
    assert (back.calls, back.errors) == (1, [])
    with db.session() as session:
        assert all(m.last_error is None for m in session.scalars(select(ReconcileMark)))


@pytest.mark.usefixtures("configured")
def test_two_passes_at_once_settle_each_call_once(app, db, clock, fake_twilio, work):
    for n in range(4):
        fake_twilio.add_inbound_call(from_=f"+1202555{1500 + n:04d}", to=SIMULTANEOUS, status="no-answer",
                                     start_time=clock.now() - timedelta(minutes=5 - n))
    results = at_once(app, run_pass, run_pass)
    work(sweep=False)
    assert sum(r.calls for r in results) == 4
    assert (count(db, Call), count(db, Lead), count(db, Task)) == (4, 4, 4)
    assert len([m for m in fake_twilio.messages if m["To"].startswith("+1202555150")]) == 4


@pytest.mark.usefixtures("configured")
def test_a_stuck_call_waits_out_a_provider_outage(app, db, twilio, clock, fake_twilio):
    sid = fake_twilio.add_inbound_call(from_=CUSTOMER, to=SIMULTANEOUS, status="no-answer", start_time=clock.now())
    twilio.post("/webhooks/voice/incoming", {"CallSid": sid, "From": CUSTOMER, "To": SIMULTANEOUS,
                                             "CallStatus": "ringing"})
    clock.advance(timedelta(minutes=3))
    fake_twilio.set_down(True)
    down = one_pass(app)
    assert (down.stuck_calls, down.numbers) == (0, 0)  # the outage ended the pass before any listing
    assert down.errors
    with db.session() as session:
        assert session.scalars(select(Call)).one().processed_at is None

    fake_twilio.set_down(False)
    assert one_pass(app).stuck_calls == 1
    assert count(db, Lead) == 1
