"""The one send guard, end to end: texts written, the real worker on the real Redis, the Twilio fake.

Quiet hours, the Florida/Oklahoma/Maryland cap, the reply grace, length and segments, opt-outs and
pauses, provider refusals; and the messages API that puts texts into the same pipeline.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import select

from gateway.api.keys import create_key
from gateway.leads import contact_for_phone
from gateway.messaging.outbound import queue_text
from gateway.models import Contact, Lead, Message
from gateway.simulator import new_sid, play_call
from tests.support.config import CUSTOMER, SIMULTANEOUS

EASTERN = "+12125550147"  # New York
PACIFIC = "+14155550147"  # San Francisco
FLORIDA = "+13055550147"  # Miami: Eastern time, 08:00-20:00 and 3 automated texts a day
CHICAGO = "+13125550147"
NEW_YORK = ZoneInfo("America/New_York")
LOS_ANGELES = ZoneInfo("America/Los_Angeles")


def local(zone: ZoneInfo, day: int, hour: int, minute: int = 0) -> datetime:
    return datetime(2026, 11, day, hour, minute, tzinfo=zone).astimezone(UTC)


# Texts a person writes (as the API and the reply relay mark them): they may answer the customer at once.
PERSON_KINDS = frozenset({"api", "relay"})


def queue(db, clock, to, body="Hi from North Honda!", *, automated=False, kind="api", media=(), **changes) -> int:
    with db.session() as session:
        contact = contact_for_phone(session, to)
        for name, value in changes.items():
            setattr(contact, name, value)
        message = queue_text(
            session, to=to, from_=SIMULTANEOUS, body=body, kind=kind, now=clock.now(), automated=automated,
            contact=contact, media_urls=media, answers_contact=kind in PERSON_KINDS,
        )
        return message.id


def message(db, message_id) -> Message:
    with db.session() as session:
        return session.get(Message, message_id)


def sent_to(fake_twilio, phone) -> list[dict]:
    return [m for m in fake_twilio.messages if m["To"] == phone]


# --- quiet hours, at the edges, through the pipeline ------------------------------------------------------


EDGES = [
    # (number, zone, local hour, minute, sent at once?, next opening (day, hour) when deferred)
    (EASTERN, NEW_YORK, 7, 59, False, (24, 8)),
    (EASTERN, NEW_YORK, 8, 0, True, None),
    (EASTERN, NEW_YORK, 20, 59, True, None),
    (EASTERN, NEW_YORK, 21, 0, False, (25, 8)),
    (PACIFIC, LOS_ANGELES, 7, 59, False, (24, 8)),
    (PACIFIC, LOS_ANGELES, 8, 0, True, None),
    (PACIFIC, LOS_ANGELES, 20, 59, True, None),
    (PACIFIC, LOS_ANGELES, 21, 0, False, (25, 8)),
    (FLORIDA, NEW_YORK, 7, 59, False, (24, 8)),
    (FLORIDA, NEW_YORK, 8, 0, True, None),
    (FLORIDA, NEW_YORK, 19, 59, True, None),
    (FLORIDA, NEW_YORK, 20, 0, False, (25, 8)),
    (FLORIDA, NEW_YORK, 20, 59, False, (25, 8)),
    (FLORIDA, NEW_YORK, 21, 0, False, (25, 8)),
]


@pytest.mark.usefixtures("configured")
@pytest.mark.parametrize(("number", "zone", "hour", "minute", "at_once", "opening"), EDGES)
def test_quiet_hours_in_the_recipients_time(db, clock, work, fake_twilio, number, zone, hour, minute, at_once, opening):
    clock.set(local(zone, 24, hour, minute))
    message_id = queue(db, clock, number, automated=True, kind="cadence")
    work()
    row = message(db, message_id)
    if at_once:
        assert row.status == "queued"
        assert len(sent_to(fake_twilio, number)) == 1
        return
    assert row.status == "pending"
    assert row.refusal_code == "quiet_hours"
    assert row.send_after == local(zone, *opening)
    assert "their time" in row.error_message
    assert sent_to(fake_twilio, number) == []
    # A minute before the opening the sweep leaves it; at the opening it goes.
    clock.set(row.send_after - timedelta(minutes=1))
    work()
    assert sent_to(fake_twilio, number) == []
    clock.set(row.send_after + timedelta(seconds=3))
    work()
    assert len(sent_to(fake_twilio, number)) == 1
    assert message(db, message_id).status == "queued"


@pytest.mark.usefixtures("configured")
def test_a_reply_within_minutes_of_the_customers_text_goes_at_night(twilio, db, clock, work, fake_twilio):
    clock.set(local(NEW_YORK, 24, 22, 0))
    twilio.post(
        "/webhooks/sms/incoming",
        {"MessageSid": new_sid("SM"), "From": EASTERN, "To": SIMULTANEOUS, "Body": "Are you open tomorrow?"},
    )
    clock.advance(timedelta(minutes=4))
    quick = queue(db, clock, EASTERN, "Yes, from 9. See you then!")
    work()
    assert message(db, quick).status == "queued"
    clock.advance(timedelta(minutes=2))  # six minutes after the customer's text
    late = queue(db, clock, EASTERN, "Also, bring your title.")
    work()
    assert message(db, late).refusal_code == "quiet_hours"
    assert [m["Body"] for m in sent_to(fake_twilio, EASTERN)] == ["Yes, from 9. See you then!"]


@pytest.mark.usefixtures("configured")
def test_a_missed_call_at_night_gets_its_text_at_once(poster, db, clock, work, fake_twilio):
    clock.set(local(NEW_YORK, 24, 22, 30))
    list(play_call(poster, to=SIMULTANEOUS, caller=EASTERN, outcome="no-answer"))
    work()
    assert len(sent_to(fake_twilio, EASTERN)) == 1  # answers the customer's own call


# --- the Florida/Oklahoma/Maryland cap --------------------------------------------------------------------


@pytest.mark.usefixtures("configured")
def test_three_automated_texts_a_day_to_florida(db, clock, work, fake_twilio):
    first = local(NEW_YORK, 24, 10)
    for hour in range(3):
        clock.set(first + timedelta(hours=hour))
        queue(db, clock, FLORIDA, f"Automated {hour}", automated=True, kind="cadence")
        queue(db, clock, EASTERN, f"Automated {hour}", automated=True, kind="cadence")
        work()
    clock.set(first + timedelta(hours=3))
    fourth = queue(db, clock, FLORIDA, "Automated 3", automated=True, kind="cadence")
    elsewhere = queue(db, clock, EASTERN, "Automated 3", automated=True, kind="cadence")
    by_a_person = queue(db, clock, FLORIDA, "Alice here, any questions?")
    work()
    row = message(db, fourth)
    assert (row.status, row.refusal_code) == ("pending", "daily_cap")
    assert row.send_after == first + timedelta(hours=24)  # when the first of the three ages out
    assert message(db, elsewhere).status == "queued"
    assert message(db, by_a_person).status == "queued"
    assert len(sent_to(fake_twilio, FLORIDA)) == 4
    clock.set(row.send_after + timedelta(seconds=3))
    work()
    assert message(db, fourth).status == "queued"
    assert [m["Body"] for m in sent_to(fake_twilio, FLORIDA)][-1] == "Automated 3"


# --- bodies: length, segments, empty, media ---------------------------------------------------------------


@pytest.mark.usefixtures("configured")
@pytest.mark.parametrize(
    ("body", "segments"),
    [
        ("See you at 5!", 1),
        ("x" * 160, 1),
        ("x" * 161, 2),
        ("Price: 25k \u20ac" + "x" * 148, 2),  # the euro sign costs two septets
        ("On our way \U0001f697", 1),
        ("\U0001f697" * 35, 1),  # 70 UTF-16 units
        ("\U0001f697" * 36, 2),
        ("\u4f60\u597d" * 35, 1),  # 70 Chinese characters
        ("\u4f60\u597d" * 36, 2),
        ("\u0417\u0434\u0440\u0430\u0432\u0441\u0442\u0432\u0443\u0439\u0442\u0435! " * 6, 2),
        ("x" * 1600, 11),
    ],
)
def test_segments_are_counted_and_stored(db, clock, work, fake_twilio, body, segments):
    message_id = queue(db, clock, EASTERN, body)
    work()
    row = message(db, message_id)
    assert row.status == "queued"
    assert row.segments == segments
    assert sent_to(fake_twilio, EASTERN)[0]["Body"] == body


@pytest.mark.usefixtures("configured")
@pytest.mark.parametrize("body", ["x" * 1601, "\U0001f697" * 801])
def test_bodies_over_1600_are_refused(db, clock, work, fake_twilio, body):
    message_id = queue(db, clock, EASTERN, body)
    work()
    row = message(db, message_id)
    assert (row.status, row.refusal_code) == ("refused", "body_too_long")
    assert "1600" in row.error_message
    assert fake_twilio.messages == []


@pytest.mark.usefixtures("configured")
def test_empty_bodies_are_refused_and_media_only_texts_go(db, clock, work, fake_twilio):
    empty = queue(db, clock, EASTERN, "   ")
    picture = queue(db, clock, CHICAGO, "", media=["https://example.com/cr-v.jpg"])
    work()
    assert message(db, empty).refusal_code == "empty_body"
    assert message(db, empty).status == "refused"
    row = message(db, picture)
    assert (row.status, row.segments) == ("queued", 0)
    [sent] = sent_to(fake_twilio, CHICAGO)
    assert sent["MediaUrl"] == ["https://example.com/cr-v.jpg"]
    assert "Body" not in sent


# --- the customer's state -----------------------------------------------------------------------------------


@pytest.mark.usefixtures("configured")
@pytest.mark.parametrize(
    ("state", "code"),
    [({"opted_out": True}, "opted_out"), ({"textable": False}, "not_textable")],
)
def test_opted_out_and_not_textable_are_refused(db, clock, work, fake_twilio, state, code):
    message_id = queue(db, clock, EASTERN, **state)
    work()
    row = message(db, message_id)
    assert (row.status, row.refusal_code) == ("refused", code)
    assert row.error_message
    assert fake_twilio.messages == []


@pytest.mark.usefixtures("configured")
def test_paused_automation_refuses_automated_texts_only(db, clock, work, fake_twilio):
    automated = queue(db, clock, EASTERN, "Still looking?", automated=True, kind="cadence", automation_paused=True)
    by_a_person = queue(db, clock, EASTERN, "Alice here, sorry for the texts.")
    work()
    assert (message(db, automated).status, message(db, automated).refusal_code) == ("refused", "automation_paused")
    assert message(db, by_a_person).status == "queued"
    assert [m["Body"] for m in sent_to(fake_twilio, EASTERN)] == ["Alice here, sorry for the texts."]


@pytest.mark.usefixtures("configured")
def test_paused_automation_at_night_is_refused_not_deferred(db, clock, work):
    clock.set(local(NEW_YORK, 24, 23))
    automated = queue(db, clock, EASTERN, "Still looking?", automated=True, kind="cadence", automation_paused=True)
    work()
    assert message(db, automated).refusal_code == "automation_paused"
    assert message(db, automated).status == "refused"


@pytest.mark.usefixtures("configured")
@pytest.mark.parametrize(("code", "opted_out", "textable"), [(21610, True, True), (30006, False, False)])
def test_provider_refusals_mark_the_contact_and_block_the_next_text(
    db, clock, work, fake_twilio, code, opted_out, textable
):
    fake_twilio.set_error_for_recipient(EASTERN, code)
    first = queue(db, clock, EASTERN, "Hello")
    work()
    row = message(db, first)
    assert (row.status, row.error_code) == ("failed", code)
    with db.session() as session:
        contact = session.scalars(select(Contact).where(Contact.phone == EASTERN)).one()
        assert (contact.opted_out, contact.textable) == (opted_out, textable)
    second = queue(db, clock, EASTERN, "Hello again")
    work()
    assert message(db, second).refusal_code == ("opted_out" if opted_out else "not_textable")
    assert len(fake_twilio.rejected) == 1  # the API was not asked a second time


@pytest.mark.usefixtures("configured")
def test_a_provider_outage_retries_later_and_never_sends_twice(db, clock, work, fake_twilio):
    fake_twilio.set_down()
    message_id = queue(db, clock, EASTERN, "Hello")
    work()
    row = message(db, message_id)
    assert row.status == "pending"
    assert row.send_after > clock.now()
    fake_twilio.set_down(False)
    clock.set(row.send_after + timedelta(seconds=3))
    work()
    work()
    assert message(db, message_id).status == "queued"
    assert len(sent_to(fake_twilio, EASTERN)) == 1


# --- the messages API -----------------------------------------------------------------------------------------


@pytest.fixture
def keys(db, configured, clock) -> dict[str, str]:
    with db.session() as session:
        _, everything = create_key(session, "group", None, clock.now())
        _, south = create_key(session, "south", ["south-ford"], clock.now())
    return {"all": everything, "south": south}


def auth(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


@pytest.fixture
def lead_id(twilio, db, keys) -> int:
    twilio.post(
        "/webhooks/sms/incoming",
        {"MessageSid": new_sid("SM"), "From": CUSTOMER, "To": SIMULTANEOUS, "Body": "Is the Pilot still there?"},
    )
    with db.session() as session:
        return session.scalars(select(Lead.id)).one()


def test_api_send_goes_through_the_pipeline(client, keys, lead_id, work, fake_twilio):
    response = client.post(f"/api/v1/leads/{lead_id}/messages", json={"body": "Yes! Come by at 5?"},
                           headers=auth(keys["all"]))
    assert response.status_code == 201, response.get_json()
    body = response.get_json()
    assert (body["status"], body["direction"], body["lead_id"]) == ("pending", "outbound", lead_id)
    assert (body["from"], body["to"], body["segments"]) == (SIMULTANEOUS, CUSTOMER, 1)
    work()
    assert [m["Body"] for m in sent_to(fake_twilio, CUSTOMER)] == ["Yes! Come by at 5?"]
    listed = client.get(f"/api/v1/messages?lead={lead_id}", headers=auth(keys["all"])).get_json()
    assert listed["next_cursor"] is None
    conversation = [m for m in listed["items"] if m["kind"] != "alert"]  # the owner's alert is listed too
    assert [(m["direction"], m["status"]) for m in conversation] == [("inbound", "received"), ("outbound", "queued")]
    assert conversation[1]["sid"].startswith("SM")


def test_api_send_at_night_is_deferred_with_202(client, keys, lead_id, clock, work, fake_twilio):
    clock.set(local(NEW_YORK, 24, 23))
    response = client.post(f"/api/v1/leads/{lead_id}/messages", json={"body": "We open at 9."},
                           headers=auth(keys["all"]))
    assert response.status_code == 202
    body = response.get_json()
    assert body["status"] == "pending"
    assert body["refusal_code"] == "quiet_hours"
    assert datetime.fromisoformat(body["send_after"]) == local(NEW_YORK, 25, 8)
    work()
    assert sent_to(fake_twilio, CUSTOMER) == []
    clock.set(local(NEW_YORK, 25, 8) + timedelta(seconds=3))
    work()
    assert [m["Body"] for m in sent_to(fake_twilio, CUSTOMER)] == ["We open at 9."]


def test_api_send_refused_by_the_guard_is_409_with_the_reason(client, keys, lead_id, twilio, clock):
    clock.advance(timedelta(minutes=1))
    twilio.post(
        "/webhooks/sms/incoming", {"MessageSid": new_sid("SM"), "From": CUSTOMER, "To": SIMULTANEOUS, "Body": "stop"}
    )
    response = client.post(f"/api/v1/leads/{lead_id}/messages", json={"body": "Still there?"},
                           headers=auth(keys["all"]))
    assert response.status_code == 409
    error = response.get_json()["error"]
    assert error["code"] == "opted_out"
    assert "opted out" in error["message"]
    too_long = client.post(f"/api/v1/leads/{lead_id}/messages", json={"body": "x" * 1601},
                           headers=auth(keys["all"]))
    assert too_long.status_code == 409


def test_api_send_too_long_is_409(client, keys, lead_id):
    response = client.post(f"/api/v1/leads/{lead_id}/messages", json={"body": "x" * 1601},
                           headers=auth(keys["all"]))
    assert response.status_code == 409
    assert response.get_json()["error"]["code"] == "body_too_long"


@pytest.mark.parametrize(
    "payload", [None, [], {"body": 5}, {"body": ""}, {"body": "hi", "media_urls": ["ftp://x"]}, {"nobody": 1}]
)
def test_api_send_bad_requests_are_400(client, keys, lead_id, db, payload):
    kwargs = {"data": "not json", "content_type": "application/json"} if payload is None else {"json": payload}
    response = client.post(f"/api/v1/leads/{lead_id}/messages", headers=auth(keys["all"]), **kwargs)
    assert response.status_code == 400
    assert "error" in response.get_json()
    with db.session() as session:
        assert session.scalars(select(Message).where(Message.kind == "api")).all() == []


def test_api_keys_of_another_store_see_nothing(client, keys, lead_id):
    response = client.post(f"/api/v1/leads/{lead_id}/messages", json={"body": "hi"}, headers=auth(keys["south"]))
    assert response.status_code == 404
    listed = client.get(f"/api/v1/messages?lead={lead_id}", headers=auth(keys["south"]))
    assert listed.status_code == 404
    everything = client.get("/api/v1/messages", headers=auth(keys["south"])).get_json()
    assert everything["items"] == []
    missing = client.post("/api/v1/leads/999999/messages", json={"body": "hi"}, headers=auth(keys["all"]))
    assert missing.status_code == 404
    assert client.get("/api/v1/messages?lead=abc", headers=auth(keys["all"])).status_code == 400


def test_api_send_with_an_idempotency_key_sends_once(client, keys, lead_id, work, fake_twilio):
    headers = {**auth(keys["all"]), "Idempotency-Key": "crm-msg-42"}
    first = client.post(f"/api/v1/leads/{lead_id}/messages", json={"body": "Once"}, headers=headers)
    second = client.post(f"/api/v1/leads/{lead_id}/messages", json={"body": "Once"}, headers=headers)
    assert (first.status_code, second.status_code) == (201, 201)
    assert first.get_json()["id"] == second.get_json()["id"]
    work()
    assert len(sent_to(fake_twilio, CUSTOMER)) == 1


def test_api_messages_pages_with_a_cursor(client, keys, lead_id):
    for n in range(3):
        client.post(f"/api/v1/leads/{lead_id}/messages", json={"body": f"Text {n}"}, headers=auth(keys["all"]))
    query = f"/api/v1/messages?lead={lead_id}&kind=api&limit=2"
    first = client.get(query, headers=auth(keys["all"])).get_json()
    assert [m["body"] for m in first["items"]] == ["Text 0", "Text 1"]
    second = client.get(f"{query}&cursor={first['next_cursor']}", headers=auth(keys["all"])).get_json()
    assert [m["body"] for m in second["items"]] == ["Text 2"]
    assert second["next_cursor"] is None


def test_openapi_describes_the_messages_endpoints(client):
    document = client.get("/api/v1/openapi.json").get_json()
    assert {"get"} <= set(document["paths"]["/messages"])
    post = document["paths"]["/leads/{id}/messages"]["post"]
    assert {"201", "202", "409"} <= set(post["responses"])
