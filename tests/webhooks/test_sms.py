"""The SMS webhooks through signed requests: inbound texts, replays, bad input, status callbacks."""

from __future__ import annotations

import threading
from datetime import timedelta
from typing import Any
from xml.etree import ElementTree

import pytest
from sqlalchemy import func, select

from gateway.app import create_app
from gateway.embedded_redis import free_port
from gateway.messaging.models import MessageStatusCallback
from gateway.models import Contact, Lead, LeadEvent, Message, Task
from gateway.provider import SentMessage, TwilioProvider
from gateway.simulator import new_sid, play_call, sign
from tests.support.config import CUSTOMER, SIMULTANEOUS, SOUTH
from tests.support.webhooks import SignedClient

ACCOUNT = "AC" + "1" * 32
ALICE = "+12025550111"


def text(twilio, body="Is the blue CR-V still there?", sender=CUSTOMER, to=SIMULTANEOUS, sid=None, **extra):
    sid = sid or new_sid("SM")
    params = {
        "AccountSid": ACCOUNT,
        "MessageSid": sid,
        "SmsSid": sid,
        "SmsMessageSid": sid,
        "From": sender,
        "To": to,
        "Body": body,
        "NumMedia": "0",
        "ApiVersion": "2010-04-01",
    }
    params.update(extra)
    return sid, twilio.post("/webhooks/sms/incoming", params)


def status(twilio, sid, value, error_code=None, **extra):
    params = {"AccountSid": ACCOUNT, "MessageSid": sid, "SmsSid": sid, "MessageStatus": value, "SmsStatus": value}
    if error_code is not None:
        params["ErrorCode"] = str(error_code)
    params.update(extra)
    return twilio.post("/webhooks/sms/status", params)


def empty_response(response) -> None:
    assert response.status_code == 200, response.get_data(as_text=True)
    assert response.mimetype == "text/xml"
    root = ElementTree.fromstring(response.get_data(as_text=True))
    assert root.tag == "Response"
    assert list(root) == []


def count(db, model, *where) -> int:
    with db.session() as session:
        return session.scalar(select(func.count()).select_from(model).where(*where)) or 0


def rows(db, model, *where) -> list[Any]:
    with db.session() as session:
        return list(session.scalars(select(model).where(*where).order_by(model.id)))


def contact(db, phone=CUSTOMER) -> Contact:
    with db.session() as session:
        return session.scalars(select(Contact).where(Contact.phone == phone)).one()


# --- signatures and bad input ---------------------------------------------------------------------------


@pytest.mark.usefixtures("configured")
@pytest.mark.parametrize("path", ["/webhooks/sms/incoming", "/webhooks/sms/fallback", "/webhooks/sms/status"])
def test_forged_or_missing_signatures_are_refused_and_nothing_is_stored(twilio, settings, db, path):
    sid = new_sid("SM")
    params = {"MessageSid": sid, "From": CUSTOMER, "To": SIMULTANEOUS, "Body": "STOP", "MessageStatus": "delivered"}
    forged = twilio.post(path, params, signature="bm90IGEgc2lnbmF0dXJl")
    assert forged.status_code == 403
    assert forged.get_json()["error"]["code"] == "invalid_signature"
    assert twilio.unsigned(path, params).status_code == 403
    # A real signature, but for other parameters than the ones sent.
    other = sign(settings.webhook_auth_token, settings.public_base_url + path, {**params, "Body": "START"})
    assert twilio.post(path, params, signature=other).status_code == 403
    # A real signature by another account's token.
    wrong_token = sign("another-token", settings.public_base_url + path, params)
    assert twilio.post(path, params, signature=wrong_token).status_code == 403
    assert count(db, Message) == 0
    assert count(db, Contact) == 0
    assert count(db, MessageStatusCallback) == 0


@pytest.mark.usefixtures("configured")
def test_forged_stop_changes_nothing(twilio, db):
    _, response = text(twilio, "STOP")
    assert response.status_code == 200
    forged = twilio.post(
        "/webhooks/sms/incoming",
        {"MessageSid": new_sid("SM"), "From": "+12025550177", "To": SIMULTANEOUS, "Body": "STOP"},
        signature="AAAA",
    )
    assert forged.status_code == 403
    assert count(db, Message) == 1
    assert count(db, Contact) == 1


@pytest.mark.usefixtures("configured")
@pytest.mark.parametrize(
    ("change", "fragment"),
    [
        ({"MessageSid": "", "SmsSid": "", "SmsMessageSid": ""}, "MessageSid is missing"),
        ({"MessageSid": "CA123", "SmsSid": "", "SmsMessageSid": ""}, "not a message SID"),
        ({"From": ""}, "From is missing"),
        ({"From": "not a phone"}, "From is not a phone number"),
        ({"To": ""}, "To is missing"),
        ({"To": "<Response/>"}, "To is not a phone number"),
    ],
)
def test_malformed_texts_get_a_400_json_answer(twilio, db, change, fragment):
    _, response = text(twilio, **change)
    assert response.status_code == 400
    error = response.get_json()["error"]
    assert error["code"] == "bad_request"
    assert fragment in error["message"]
    assert count(db, Message) == 0


@pytest.mark.usefixtures("configured")
def test_a_text_to_a_number_we_do_not_track_is_answered_and_not_stored(twilio, db):
    _, response = text(twilio, to="+12025550999")
    empty_response(response)
    assert count(db, Message) == 0
    assert count(db, Contact) == 0
    assert count(db, Lead) == 0


@pytest.mark.usefixtures("configured")
@pytest.mark.parametrize(
    "body",
    [
        "<Response><Redirect>http://evil.example</Redirect></Response>",
        "'; DROP TABLE messages; --",
        "caf\u00e9 \U0001f697\U0001f4a8 \u4f60\u597d \u0417\u0434\u0440\u0430\u0432\u0441\u0442\u0432\u0443\u0439",
        "nul\x00byte \x01\x02\x7f and \ufffd",
        "&amp; &lt; ]]> <!-- -->",
    ],
)
def test_odd_bodies_are_kept_safely(twilio, db, body):
    sid, response = text(twilio, body)
    empty_response(response)
    message = rows(db, Message, Message.sid == sid)[0]
    assert message.body == body.replace("\x00", "")
    assert message.lead_id is not None


@pytest.mark.usefixtures("configured")
@pytest.mark.parametrize(
    ("body", "num_segments", "stored"),
    [
        ("\U0001f697" * 35, None, 1),  # 70 UTF-16 units: one UCS-2 part
        ("\U0001f697" * 36, None, 2),
        ("\u4f60\u597d" * 36, None, 2),  # 72 Chinese characters
        ("x" * 161, None, 2),
        ("x" * 161, "3", 3),  # the provider's own count wins when it sends one
    ],
)
def test_inbound_segments_are_kept_or_counted(twilio, db, body, num_segments, stored):
    extra = {"NumSegments": num_segments} if num_segments else {}
    sid, response = text(twilio, body, **extra)
    empty_response(response)
    assert rows(db, Message, Message.sid == sid)[0].segments == stored


@pytest.mark.usefixtures("configured")
def test_huge_bodies_are_bounded(twilio, db):
    sid, response = text(twilio, "A" * 800_000)
    empty_response(response)
    assert len(rows(db, Message, Message.sid == sid)[0].body) == 5000
    _, too_big = text(twilio, "A" * 1_100_000)
    assert too_big.status_code == 413
    assert "error" in too_big.get_json()


# --- the happy path ---------------------------------------------------------------------------------------


@pytest.mark.usefixtures("configured")
def test_a_text_opens_a_lead_with_an_owner_a_reply_task_and_an_alert(twilio, db, clock, work, fake_twilio):
    sid, response = text(twilio, "Hi! Is the blue CR-V still there?", NumSegments="1")
    empty_response(response)
    message = rows(db, Message, Message.sid == sid)[0]
    assert message.direction == "inbound"
    assert message.status == "received"
    assert message.kind == "customer"
    assert message.segments == 1
    assert message.from_number == CUSTOMER
    assert message.to_number == SIMULTANEOUS
    lead = rows(db, Lead)[0]
    assert message.lead_id == lead.id
    assert lead.source == "Cars.com"
    assert lead.tracked_number == SIMULTANEOUS
    assert lead.last_contact_at == clock.now()
    assert lead.owner_id is not None
    task = rows(db, Task)[0]
    assert (task.kind, task.status, task.owner_id) == ("reply", "open", lead.owner_id)
    assert task.due_at == clock.now() + timedelta(minutes=5)  # the store's SLA while open
    work()
    sent = fake_twilio.messages
    owner_phone = next(m["To"] for m in sent)
    assert owner_phone in {"+12025550111", "+12025550112", "+12025550113", "+12025550114"}
    assert any(lead.code in m["Body"] and "blue CR-V" in m["Body"] for m in sent)
    assert all(m["To"] != CUSTOMER for m in sent)  # nothing automatic to the customer


@pytest.mark.usefixtures("configured")
def test_media_only_mms_is_logged_with_its_urls(twilio, db):
    urls = [f"https://api.twilio.com/2010-04-01/Accounts/{ACCOUNT}/Messages/MM1/Media/ME{i}" for i in range(2)]
    sid, response = text(
        twilio, "", sid=new_sid("MM"), NumMedia="2", MediaUrl0=urls[0], MediaUrl1=urls[1],
        MediaContentType0="image/jpeg", MediaContentType1="image/png",
    )
    empty_response(response)
    message = rows(db, Message, Message.sid == sid)[0]
    assert message.body == ""
    assert message.media_urls == urls
    assert message.segments == 0
    assert count(db, Task, Task.kind == "reply") == 1


@pytest.mark.usefixtures("configured")
def test_a_text_joins_the_open_lead_of_a_missed_call(poster, twilio, db, clock):
    list(play_call(poster, to=SIMULTANEOUS, caller=CUSTOMER, outcome="no-answer"))
    clock.advance(timedelta(minutes=2))
    _, response = text(twilio, "Sorry I missed you, call me after 5")
    empty_response(response)
    assert count(db, Lead) == 1
    lead = rows(db, Lead)[0]
    assert lead.last_contact_at == clock.now()
    assert sorted(t.kind for t in rows(db, Task)) == ["callback", "reply"]
    # The same phone texting another store opens that store's lead; the contact stays one.
    _, other = text(twilio, "And do you have F-150s?", to=SOUTH)
    empty_response(other)
    assert count(db, Lead) == 2
    assert count(db, Contact) == 1


@pytest.mark.usefixtures("configured")
def test_a_reply_stops_the_missed_call_cadence(poster, twilio, db, clock, work, fake_twilio):
    list(play_call(poster, to=SIMULTANEOUS, caller=CUSTOMER, outcome="no-answer"))
    work()
    to_customer = [m for m in fake_twilio.messages if m["To"] == CUSTOMER]
    assert len(to_customer) == 1  # the cadence's first text
    clock.advance(timedelta(minutes=10))
    text(twilio, "Yes please call me")
    clock.advance(timedelta(days=2))
    work()
    assert [m for m in fake_twilio.messages if m["To"] == CUSTOMER] == to_customer


@pytest.mark.usefixtures("configured")
def test_a_text_from_an_agents_phone_is_not_a_customer_text(twilio, db):
    sid, response = text(twilio, "On my way", sender=ALICE)
    empty_response(response)
    message = rows(db, Message, Message.sid == sid)[0]
    assert message.kind == "agent"
    assert message.agent_id is not None
    assert message.contact_id is None
    assert count(db, Contact) == 0
    assert count(db, Lead) == 0
    assert count(db, Task) == 0


# --- replays ------------------------------------------------------------------------------------------


@pytest.mark.usefixtures("configured")
def test_a_replayed_text_is_handled_once(twilio, db, work, fake_twilio):
    sid, first = text(twilio)
    _, second = text(twilio, sid=sid)
    fallback = twilio.post(
        "/webhooks/sms/fallback",
        {"MessageSid": sid, "From": CUSTOMER, "To": SIMULTANEOUS, "Body": "Is the blue CR-V still there?",
         "ErrorCode": "11200", "ErrorUrl": "https://gateway.example.test/webhooks/sms/incoming"},
    )
    for response in (first, second, fallback):
        empty_response(response)
    assert count(db, Message, Message.direction == "inbound") == 1
    assert count(db, Task) == 1
    work()
    alerts = len(fake_twilio.messages)
    _, third = text(twilio, sid=sid)
    empty_response(third)
    work()
    assert len(fake_twilio.messages) == alerts


@pytest.mark.usefixtures("configured")
def test_the_fallback_url_takes_a_text_the_primary_never_saw(twilio, db):
    sid = new_sid("SM")
    response = twilio.post(
        "/webhooks/sms/fallback",
        {"MessageSid": sid, "From": CUSTOMER, "To": SIMULTANEOUS, "Body": "hello?", "ErrorCode": "11205"},
    )
    empty_response(response)
    assert count(db, Message, Message.sid == sid) == 1
    assert count(db, Task, Task.kind == "reply") == 1


@pytest.mark.usefixtures("configured")
def test_concurrent_deliveries_of_one_text_are_handled_once(app, settings, db):
    sid = new_sid("SM")
    barrier = threading.Barrier(6)
    codes: list[int] = []

    def post() -> None:
        client = SignedClient(app.test_client(), settings.public_base_url, settings.webhook_auth_token)
        barrier.wait()
        codes.append(text(client, "not interested, stop", sid=sid)[1].status_code)

    threads = [threading.Thread(target=post) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert codes == [200] * 6
    assert count(db, Message, Message.direction == "inbound") == 1
    assert count(db, Lead) == 1
    assert count(db, Task) == 1
    assert count(db, LeadEvent, LeadEvent.kind == "automation-paused") == 1


@pytest.mark.usefixtures("configured")
def test_concurrent_deliveries_of_an_opt_out_in_own_words_confirm_it_once(app, settings, db, work, fake_twilio):
    sid = new_sid("SM")
    barrier = threading.Barrier(6)
    codes: list[int] = []

    def post() -> None:
        client = SignedClient(app.test_client(), settings.public_base_url, settings.webhook_auth_token)
        barrier.wait()
        codes.append(text(client, "STOP PLEASE", sid=sid)[1].status_code)

    threads = [threading.Thread(target=post) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert codes == [200] * 6
    assert count(db, Message, Message.direction == "inbound") == 1
    assert count(db, Message, Message.kind == "keyword") == 1
    work()
    assert len([m for m in fake_twilio.messages if m["To"] == CUSTOMER]) == 1


# --- Redis down -------------------------------------------------------------------------------------------


@pytest.mark.usefixtures("configured")
def test_redis_down_the_text_is_kept_and_the_reply_goes_when_a_worker_runs(
    make_app, settings, db, clock, work, fake_twilio
):
    broken = make_app(redis_url=f"redis://127.0.0.1:{free_port()}/0", keyword_replies="gateway")
    client = SignedClient(broken.test_client(), settings.public_base_url, settings.webhook_auth_token)
    sid, response = text(client, "HELP")
    empty_response(response)
    assert count(db, Message, Message.sid == sid) == 1
    reply = rows(db, Message, Message.direction == "outbound")[0]
    assert (reply.status, reply.kind, reply.to_number) == ("pending", "help", CUSTOMER)
    assert fake_twilio.messages == []
    clock.advance(timedelta(seconds=5))
    work()
    sent = [m for m in fake_twilio.messages if m["To"] == CUSTOMER]
    assert len(sent) == 1
    assert "North Honda" in sent[0]["Body"]


# --- status callbacks ---------------------------------------------------------------------------------------


def _send_to_customer(twilio, db, work, fake_twilio, clock, phone=CUSTOMER) -> Message:
    """A customer texts; the owner answers through the API path's service (an API-kind text)."""
    from gateway.messaging.outbound import queue_text

    text(twilio, "Call me?", sender=phone)
    with db.session() as session:
        lead = session.scalars(select(Lead).join(Contact).where(Contact.phone == phone)).one()
        message = queue_text(
            session, to=phone, from_=SIMULTANEOUS, body="Sure, 5pm works?", kind="api", now=clock.now(), lead=lead
        )
        message_id = message.id
    work()
    with db.session() as session:
        return session.get(Message, message_id)


@pytest.mark.usefixtures("configured")
def test_status_callbacks_move_a_text_forward_only(twilio, db, work, fake_twilio, clock):
    message = _send_to_customer(twilio, db, work, fake_twilio, clock)
    assert message.status == "queued"
    assert message.sid is not None
    assert status(twilio, message.sid, "delivered").status_code == 204
    assert status(twilio, message.sid, "sent").status_code == 204  # late, out of order
    assert status(twilio, message.sid, "queued").status_code == 204
    assert rows(db, Message, Message.id == message.id)[0].status == "delivered"
    # Replays change nothing and are answered like the first.
    assert status(twilio, message.sid, "delivered").status_code == 204
    assert count(db, MessageStatusCallback, MessageStatusCallback.sid == message.sid) == 3


@pytest.mark.usefixtures("configured")
def test_bad_status_callbacks_get_400(twilio, db):
    assert status(twilio, "", "sent").status_code == 400
    assert status(twilio, new_sid("SM"), "").status_code == 400
    assert status(twilio, new_sid("SM"), "<x>").status_code == 400
    assert status(twilio, new_sid("SM"), "failed", error_code="abc").status_code == 400
    assert count(db, MessageStatusCallback) == 0


@pytest.mark.usefixtures("configured")
def test_21610_in_a_status_callback_opts_the_customer_out(twilio, db, work, fake_twilio, clock):
    message = _send_to_customer(twilio, db, work, fake_twilio, clock)
    assert status(twilio, message.sid, "failed", error_code=21610).status_code == 204
    stored = rows(db, Message, Message.id == message.id)[0]
    assert (stored.status, stored.error_code) == ("failed", 21610)
    customer = contact(db)
    assert customer.opted_out
    assert customer.opt_out_source == "provider-21610"
    assert customer.opt_out_number == SIMULTANEOUS


@pytest.mark.usefixtures("configured")
@pytest.mark.parametrize("code", [30006, 21614])
def test_landline_errors_in_a_status_callback_mark_the_number_not_textable(twilio, db, work, fake_twilio, clock, code):
    message = _send_to_customer(twilio, db, work, fake_twilio, clock)
    assert status(twilio, message.sid, "undelivered", error_code=code).status_code == 204
    assert rows(db, Message, Message.id == message.id)[0].status == "undelivered"
    customer = contact(db)
    assert not customer.textable
    assert not customer.opted_out


@pytest.mark.usefixtures("configured")
def test_a_callback_before_the_send_is_recorded_is_applied_when_it_is(
    settings, clock, redis, db, twilio, fake_twilio, work
):
    """The provider calls back while the send job still waits on the API's answer."""

    class FastCallbacks(TwilioProvider):
        def send_sms(self, **kwargs: Any) -> SentMessage:
            sent = super().send_sms(**kwargs)
            answers.append(status(twilio, sent.sid, "sent").status_code)
            answers.append(status(twilio, sent.sid, "delivered").status_code)
            return sent

    answers: list[int] = []
    provider = FastCallbacks(ACCOUNT, settings.twilio_auth_token or "", fake_twilio.base_url)
    fast = create_app(settings, clock=clock, redis=redis, provider=provider)
    try:
        fast_client = SignedClient(fast.test_client(), settings.public_base_url, settings.webhook_auth_token)
        message = _send_to_customer(fast_client, db, lambda: work_on(fast), fake_twilio, clock)
    finally:
        fast.extensions["gateway"].database.dispose()
    assert answers  # the customer's text, and the owner's alert the same way
    assert set(answers) == {204}
    assert message.status == "delivered"
    assert count(db, MessageStatusCallback, MessageStatusCallback.applied_at.is_(None)) == 0


def work_on(app) -> None:
    from gateway.worker import run_worker, sweep_once

    sweep_once(app)
    run_worker(app, burst=True, sweep=False)


@pytest.mark.usefixtures("configured")
def test_the_sweep_applies_a_callback_that_raced_the_send(twilio, db, clock, work):
    sid = new_sid("SM")
    assert status(twilio, sid, "delivered").status_code == 204
    with db.session() as session:
        waiting = session.scalars(select(MessageStatusCallback)).one()
        assert waiting.applied_at is None
    # The send recorded this SID without seeing the callback (both committed at the same moment).
    from gateway.messaging.outbound import queue_text

    with db.session() as session:
        message = queue_text(session, to=CUSTOMER, from_=SIMULTANEOUS, body="hi", kind="api", now=clock.now())
        message.status = "queued"
        message.sid = sid
        message_id = message.id
    work()
    assert rows(db, Message, Message.id == message_id)[0].status == "delivered"
    assert count(db, MessageStatusCallback, MessageStatusCallback.applied_at.is_(None)) == 0


@pytest.mark.usefixtures("configured")
def test_a_send_the_api_rejects_with_21610_is_logged_failed_and_opts_out(twilio, db, work, fake_twilio, clock):
    fake_twilio.set_error_for_recipient(CUSTOMER, 21610)
    message = _send_to_customer(twilio, db, work, fake_twilio, clock)
    assert (message.status, message.error_code) == ("failed", 21610)
    assert message.sid is None
    customer = contact(db)
    assert customer.opted_out
    assert customer.opt_out_source == "provider-21610"
    assert fake_twilio.rejected  # the API was asked and said no; nothing crashed


# --- database down ------------------------------------------------------------------------------------------


def dead_postgres() -> str:
    return f"postgresql+psycopg://postgres@127.0.0.1:{free_port()}/gone?connect_timeout=1"


@pytest.mark.usefixtures("configured")
@pytest.mark.parametrize("redis_up", [True, False])
def test_database_down_the_text_is_kept_and_handled_when_it_is_back(
    make_app, settings, db, clock, work, fake_twilio, redis_up
):
    changes = {"database_url": dead_postgres()}
    if not redis_up:
        changes["redis_url"] = f"redis://127.0.0.1:{free_port()}/0"
    broken = make_app(**changes)
    client = SignedClient(broken.test_client(), settings.public_base_url, settings.webhook_auth_token)
    arrived = clock.now()
    sid, response = text(client, "Can I come by at 6?")
    empty_response(response)
    _, replayed = text(client, "Can I come by at 6?", sid=sid)  # the provider's retry, also kept
    empty_response(replayed)
    spooled = list((settings.instance_dir / "spool").glob("*.json"))
    assert len(spooled) == (0 if redis_up else 2)
    assert count(db, Message) == 0
    clock.advance(timedelta(minutes=3))
    work()
    [message] = rows(db, Message, Message.direction == "inbound")
    assert (message.sid, message.body, message.created_at) == (sid, "Can I come by at 6?", arrived)
    assert count(db, Lead) == 1
    [task] = rows(db, Task)
    assert task.due_at == arrived + timedelta(minutes=5)
    assert list((settings.instance_dir / "spool").glob("*.json")) == []
