"""The fake Twilio API, driven by the real `twilio` SDK the gateway uses."""

from __future__ import annotations

import base64
import http.client
import json
import re
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit

import pytest
from twilio.base.exceptions import TwilioException, TwilioRestException
from twilio.rest import Client

from tests.fakes.twilio_api import FakeTwilio, segments

ACCOUNT_SID = "AC" + "1234abcd" * 4
AUTH_TOKEN = "s3cret-token"
DEALER = "+12025550100"
CUSTOMER = "+12025550123"
ROOT = Path(__file__).resolve().parents[2]


def make_client(fake: FakeTwilio, account_sid: str = ACCOUNT_SID, auth_token: str = AUTH_TOKEN) -> Client:
    client = Client(account_sid, auth_token)
    client.api.base_url = fake.base_url
    return client


def close(client: Client) -> None:
    client.http_client.session.close()


@pytest.fixture
def fake() -> Iterator[FakeTwilio]:
    with FakeTwilio(account_sid=ACCOUNT_SID, auth_token=AUTH_TOKEN) as running:
        yield running


@pytest.fixture
def client(fake: FakeTwilio) -> Iterator[Client]:
    sdk = make_client(fake)
    yield sdk
    close(sdk)


def raw_request(
    base_url: str, method: str, path: str, auth: tuple[str, str] | None = None, form: str | None = None
) -> tuple[int, dict[str, Any], http.client.HTTPMessage]:
    """A request without the SDK: (status, JSON body, headers)."""
    parts = urlsplit(base_url)
    headers = {"Content-Type": "application/x-www-form-urlencoded"}
    if auth:
        token = base64.b64encode(f"{auth[0]}:{auth[1]}".encode()).decode()
        headers["Authorization"] = f"Basic {token}"
    connection = http.client.HTTPConnection(parts.hostname or "", parts.port, timeout=5)
    try:
        connection.request(method, path, body=form, headers=headers)
        response = connection.getresponse()
        return response.status, json.loads(response.read()), response.headers
    finally:
        connection.close()


# -- messages -------------------------------------------------------------------------------------------


def test_message_create_returns_twilio_resource_and_is_recorded(fake: FakeTwilio, client: Client) -> None:
    message = client.messages.create(
        to=CUSTOMER,
        from_=DEALER,
        body="Hi, this is North Honda. Sorry we missed your call!",
        media_url=["https://cdn.example/a.jpg", "https://cdn.example/b.jpg"],
        status_callback="https://gateway.example/webhooks/sms/status",
    )

    assert re.fullmatch(r"SM[0-9a-f]{32}", message.sid)
    assert message.status == "queued"
    assert message.direction == "outbound-api"
    assert message.to == CUSTOMER
    assert message.from_ == DEALER
    assert message.num_segments == "1"
    assert message.num_media == "2"
    assert message.account_sid == ACCOUNT_SID
    assert message.uri == f"/2010-04-01/Accounts/{ACCOUNT_SID}/Messages/{message.sid}.json"
    assert isinstance(message.date_created, datetime)  # the SDK parsed Twilio's RFC 2822 date
    assert message.date_created.utcoffset().total_seconds() == 0

    (record,) = fake.messages
    assert record["sid"] == message.sid
    assert record["To"] == CUSTOMER
    assert record["From"] == DEALER
    assert record["Body"].startswith("Hi, this is North Honda")
    assert record["MediaUrl"] == ["https://cdn.example/a.jpg", "https://cdn.example/b.jpg"]
    assert record["StatusCallback"] == "https://gateway.example/webhooks/sms/status"
    assert record["created_at"].tzinfo is not None

    fetched = client.messages(message.sid).fetch()
    assert fetched.sid == message.sid
    assert fetched.body == message.body


def test_message_date_created_is_rfc_2822(fake: FakeTwilio) -> None:
    status, body, _ = raw_request(
        fake.base_url,
        "POST",
        f"/2010-04-01/Accounts/{ACCOUNT_SID}/Messages.json",
        (ACCOUNT_SID, AUTH_TOKEN),
        "To=%2B12025550123&From=%2B12025550100&Body=Hello",
    )

    assert status == 201
    rfc_2822 = r"[A-Z][a-z]{2}, \d{2} [A-Z][a-z]{2} \d{4} \d{2}:\d{2}:\d{2} \+0000"
    assert re.fullmatch(rfc_2822, body["date_created"])
    assert body["date_sent"] is None
    assert body["error_code"] is None


def test_messaging_service_send_is_accepted_without_from(fake: FakeTwilio, client: Client) -> None:
    message = client.messages.create(to=CUSTOMER, messaging_service_sid="MG" + "0" * 32, body="Hello")

    assert message.status == "accepted"
    assert message.from_ is None
    assert fake.messages[0]["MessagingServiceSid"] == "MG" + "0" * 32


def test_segments_follow_gsm_7_and_ucs_2_limits() -> None:
    assert segments("a" * 160) == 1
    assert segments("a" * 161) == 2
    assert segments("a" * 306) == 2
    assert segments("a" * 307) == 3
    assert segments("[" * 80) == 1  # extended characters take two septets
    assert segments("[" * 81) == 2
    assert segments("é" * 160) == 1  # é is in the GSM alphabet
    assert segments("🚗" * 35) == 1  # 70 UTF-16 code units
    assert segments("🚗" * 36) == 2
    assert segments("") == 1


def test_long_unicode_body_reports_its_segments(client: Client) -> None:
    message = client.messages.create(to=CUSTOMER, from_=DEALER, body="Your car is ready 🚗 " * 10)
    assert message.num_segments == "4"  # 200 UTF-16 code units in 67-unit segments


@pytest.mark.parametrize(
    ("fields", "code"),
    [
        ({"to": ""}, 21604),
        ({"to": "not-a-number"}, 21211),
        ({"to": "2025550123"}, 21211),  # the gateway sends E.164 only
        ({"to": "+1202555"}, 21211),
        ({"from_": ""}, 21603),
        ({"from_": "+1"}, 21212),
        ({"body": ""}, 21602),
        ({"body": "x" * 1601}, 21617),
    ],
)
def test_message_validation_errors_match_twilio(
    fake: FakeTwilio, client: Client, fields: dict[str, str], code: int
) -> None:
    params = {"to": CUSTOMER, "from_": DEALER, "body": "Hello", **fields}

    with pytest.raises(TwilioRestException) as raised:
        client.messages.create(**params)

    assert raised.value.status == 400
    assert raised.value.code == code
    assert fake.messages == []
    assert [r["code"] for r in fake.rejected] == [code]


def test_body_of_exactly_1600_characters_and_media_without_body_are_accepted(
    fake: FakeTwilio, client: Client
) -> None:
    client.messages.create(to=CUSTOMER, from_=DEALER, body="x" * 1600)
    client.messages.create(to=CUSTOMER, from_=DEALER, media_url=["https://cdn.example/car.jpg"])
    assert len(fake.messages) == 2


def test_unknown_message_sid_is_404(client: Client) -> None:
    with pytest.raises(TwilioRestException) as raised:
        client.messages("SM" + "f" * 32).fetch()
    assert (raised.value.status, raised.value.code) == (404, 20404)


# -- calls --------------------------------------------------------------------------------------------


def test_call_create_returns_twilio_resource_and_is_recorded(fake: FakeTwilio, client: Client) -> None:
    number_sid = fake.add_number(DEALER, "North Honda sales")

    call = client.calls.create(
        to="+12025550111",
        from_=DEALER,
        url="https://gateway.example/webhooks/voice/click-to-call/42",
        status_callback="https://gateway.example/webhooks/voice/status",
        status_callback_event=["initiated", "ringing", "answered", "completed"],
        timeout=18,
    )

    assert re.fullmatch(r"CA[0-9a-f]{32}", call.sid)
    assert call.status == "queued"
    assert call.direction == "outbound-api"
    assert call.to == "+12025550111"
    assert call.from_formatted == "(202) 555-0100"
    assert call.phone_number_sid == number_sid
    assert isinstance(call.date_created, datetime)

    (record,) = fake.calls
    assert record["sid"] == call.sid
    assert record["Url"] == "https://gateway.example/webhooks/voice/click-to-call/42"
    assert record["StatusCallbackEvent"] == ["initiated", "ringing", "answered", "completed"]
    assert record["Timeout"] == "18"

    assert client.calls(call.sid).fetch().status == "queued"


def test_call_accepts_inline_twiml_and_can_be_hung_up(fake: FakeTwilio, client: Client) -> None:
    call = client.calls.create(to=CUSTOMER, from_=DEALER, twiml="<Response><Say>Hi</Say></Response>")

    updated = client.calls(call.sid).update(status="completed")

    assert updated.status == "completed"
    assert fake.calls[0]["Twiml"] == "<Response><Say>Hi</Say></Response>"
    assert [(u["sid"], u["Status"]) for u in fake.call_updates] == [(call.sid, "completed")]


@pytest.mark.parametrize(
    ("fields", "code"),
    [
        ({"to": ""}, 21201),
        ({"from_": ""}, 21213),
        ({"url": None}, 21205),
        ({"url": "not a url"}, 21205),
        ({"to": "12345"}, 21211),
    ],
)
def test_call_validation_errors_match_twilio(
    fake: FakeTwilio, client: Client, fields: dict[str, str | None], code: int
) -> None:
    params = {"to": CUSTOMER, "from_": DEALER, "url": "https://gateway.example/voice", **fields}

    with pytest.raises(TwilioRestException) as raised:
        client.calls.create(**params)

    assert (raised.value.status, raised.value.code) == (400, code)
    assert fake.calls == []


def test_wait_for_calls(fake: FakeTwilio, client: Client) -> None:
    worker = threading.Thread(
        target=client.calls.create, kwargs={"to": CUSTOMER, "from_": DEALER, "url": "https://gw.example/v"}
    )
    worker.start()
    assert len(fake.wait_for_calls(1)) == 1
    worker.join()


# -- listing calls and texts, and seeding what never reached a webhook -----------------------------------

TRACKED = "+12025550150"
OTHER_TRACKED = "+12025550151"
MORNING = datetime(2026, 11, 24, 14, 0, tzinfo=UTC)  # 09:00 in New York


def list_path(kind: str, **query: str) -> str:
    """A list request's path and query; keys like "StartTime>" cannot be Python names, so pass a dict."""
    return f"/2010-04-01/Accounts/{ACCOUNT_SID}/{kind}.json?{urlencode(query)}"


def list_raw(fake: FakeTwilio, kind: str, query: dict[str, str]) -> tuple[int, dict[str, Any]]:
    status, body, _ = raw_request(fake.base_url, "GET", list_path(kind, **query), (ACCOUNT_SID, AUTH_TOKEN))
    return status, body


def test_calls_list_newest_first_by_start_time_whatever_the_order_they_were_added(
    fake: FakeTwilio, client: Client
) -> None:
    middle = fake.add_inbound_call(from_=CUSTOMER, to=TRACKED, start_time=MORNING + timedelta(minutes=5))
    oldest = fake.add_inbound_call(from_=CUSTOMER, to=TRACKED, start_time=MORNING)
    newest = fake.add_inbound_call(from_=CUSTOMER, to=TRACKED, start_time=MORNING + timedelta(minutes=9))

    assert [c.sid for c in client.calls.list()] == [newest, middle, oldest]


def test_an_inbound_call_looks_like_twilios(fake: FakeTwilio, client: Client) -> None:
    number_sid = fake.add_number(TRACKED)
    sid = fake.add_inbound_call(
        from_=CUSTOMER, to=TRACKED, sid="CA" + "ab" * 16, status="completed", start_time=MORNING, duration=42
    )

    (call,) = client.calls.list()

    assert call.sid == sid == "CA" + "ab" * 16
    # The SDK keeps a call's "from" as `_from` (a message's as `from_`).
    assert (call.direction, call.status, call._from, call.to) == ("inbound", "completed", CUSTOMER, TRACKED)
    assert (call.start_time, call.end_time) == (MORNING, MORNING + timedelta(seconds=42))
    assert call.duration == "42"
    assert call.date_created == MORNING
    assert call.phone_number_sid == number_sid


@pytest.mark.parametrize("status", ["busy", "failed", "no-answer", "canceled"])
def test_a_call_that_did_not_complete_has_no_end_time_or_duration(
    fake: FakeTwilio, client: Client, status: str
) -> None:
    sid = fake.add_inbound_call(from_=CUSTOMER, to=TRACKED, status=status, start_time=MORNING)

    call = client.calls(sid).fetch()

    assert (call.status, call.start_time, call.end_time, call.duration) == (status, MORNING, None, None)


def test_fetch_shows_the_status_a_call_moved_to(fake: FakeTwilio, client: Client) -> None:
    sid = fake.add_inbound_call(from_=CUSTOMER, to=TRACKED, status="ringing", start_time=MORNING)
    assert (client.calls(sid).fetch().status, client.calls(sid).fetch().end_time) == ("ringing", None)

    fake.set_call_status(sid, "in-progress")
    assert client.calls(sid).fetch().status == "in-progress"

    fake.set_call_status(sid, "completed", duration=95)
    call = client.calls(sid).fetch()
    assert (call.status, call.duration) == ("completed", "95")
    assert call.end_time == MORNING + timedelta(seconds=95)


def test_a_created_call_moved_on_gets_a_start_time(fake: FakeTwilio, client: Client) -> None:
    call = client.calls.create(to=CUSTOMER, from_=DEALER, url="https://gateway.example/voice")
    assert call.start_time is None

    fake.set_call_status(call.sid, "no-answer")

    fetched = client.calls(call.sid).fetch()
    assert fetched.status == "no-answer"
    assert fetched.start_time is not None


def test_calls_filter_by_to_from_and_status(fake: FakeTwilio, client: Client) -> None:
    answered = fake.add_inbound_call(from_=CUSTOMER, to=TRACKED, status="completed", start_time=MORNING)
    missed = fake.add_inbound_call(from_=CUSTOMER, to=TRACKED, status="no-answer", start_time=MORNING)
    elsewhere = fake.add_inbound_call(from_="+12025550177", to=OTHER_TRACKED, start_time=MORNING)

    assert {c.sid for c in client.calls.list(to=TRACKED)} == {answered, missed}
    assert {c.sid for c in client.calls.list(from_="+12025550177")} == {elsewhere}
    assert [c.sid for c in client.calls.list(to=TRACKED, status="no-answer")] == [missed]
    assert client.calls.list(to="+12025550199") == []


def test_calls_filter_by_start_time_as_the_sdk_sends_it(fake: FakeTwilio, client: Client) -> None:
    early = fake.add_inbound_call(from_=CUSTOMER, to=TRACKED, start_time=MORNING)
    on_the_dot = fake.add_inbound_call(from_=CUSTOMER, to=TRACKED, start_time=MORNING + timedelta(hours=1))
    late = fake.add_inbound_call(from_=CUSTOMER, to=TRACKED, start_time=MORNING + timedelta(hours=2))
    queued = client.calls.create(to=CUSTOMER, from_=TRACKED, url="https://gateway.example/voice").sid

    watermark = MORNING + timedelta(hours=1)
    after = client.calls.list(to=TRACKED, start_time_after=watermark)
    before = client.calls.list(to=TRACKED, start_time_before=watermark)
    between = client.calls.list(start_time_after=MORNING, start_time_before=MORNING + timedelta(hours=2))

    assert [c.sid for c in after] == [late, on_the_dot]  # "on or after"
    assert [c.sid for c in before] == [early]  # "before"
    assert [c.sid for c in between] == [on_the_dot, early]
    assert queued not in {c.sid for c in client.calls.list(start_time_after=MORNING)}  # no start_time yet
    assert queued in {c.sid for c in client.calls.list()}


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ({"StartTime": "2026-11-24"}, {"nov24_early", "nov24_late"}),
        ({"StartTime": "2026-11-25T01:00:00Z"}, {"nov25"}),  # a moment names its UTC day
        ({"StartTime>": "2026-11-25"}, {"nov25"}),
        ({"StartTime<": "2026-11-24"}, {"nov23"}),  # before the day: the day itself is out
        ({"StartTime>": "Tue, 24 Nov 2026 09:00:00 -0500"}, {"nov24_late", "nov25"}),
        ({"StartTime>": "2026-11-24 14:00:01.000"}, {"nov24_late", "nov25"}),
        ({"StartTime<": "11/24/2026 09:00:00 EST"}, {"nov23", "nov24_early"}),
        ({"EndTime>": "2026-11-25"}, {"nov25"}),
    ],
)
def test_call_time_filters_take_the_formats_of_the_reference(
    fake: FakeTwilio, query: dict[str, str], expected: set[str]
) -> None:
    sids = {
        "nov23": fake.add_inbound_call(from_=CUSTOMER, to=TRACKED, start_time=MORNING - timedelta(days=1)),
        "nov24_early": fake.add_inbound_call(from_=CUSTOMER, to=TRACKED, start_time=MORNING - timedelta(hours=1)),
        "nov24_late": fake.add_inbound_call(from_=CUSTOMER, to=TRACKED, start_time=MORNING + timedelta(hours=3)),
        "nov25": fake.add_inbound_call(from_=CUSTOMER, to=TRACKED, start_time=MORNING + timedelta(days=1)),
    }

    status, body = list_raw(fake, "Calls", query)

    assert status == 200
    assert {sid for sid in (c["sid"] for c in body["calls"])} == {sids[name] for name in expected}


def test_an_inbound_text_looks_like_twilios(fake: FakeTwilio, client: Client) -> None:
    plain = fake.add_inbound_message(from_=CUSTOMER, to=TRACKED, body="Is the Civic still there?",
                                     date_sent=MORNING)
    picture = fake.add_inbound_message(from_=CUSTOMER, to=TRACKED, body="", date_sent=MORNING, num_media=2)

    message = client.messages(plain).fetch()
    assert re.fullmatch(r"SM[0-9a-f]{32}", plain)
    assert (message.direction, message.status) == ("inbound", "received")
    assert (message.from_, message.to, message.body) == (CUSTOMER, TRACKED, "Is the Civic still there?")
    assert message.date_sent == message.date_created == MORNING
    assert re.fullmatch(r"MM[0-9a-f]{32}", picture)
    assert client.messages(picture).fetch().num_media == "2"


def test_messages_list_newest_first_and_filter_by_to_and_date_sent(fake: FakeTwilio, client: Client) -> None:
    second = fake.add_inbound_message(from_=CUSTOMER, to=TRACKED, body="b", date_sent=MORNING + timedelta(minutes=1))
    first = fake.add_inbound_message(from_=CUSTOMER, to=TRACKED, body="a", date_sent=MORNING)
    other = fake.add_inbound_message(from_=CUSTOMER, to=OTHER_TRACKED, body="c", date_sent=MORNING)
    reply = client.messages.create(to=CUSTOMER, from_=TRACKED, body="Yes!").sid  # not sent yet: no date_sent

    assert [m.sid for m in client.messages.list(to=TRACKED)] == [second, first]
    assert [m.sid for m in client.messages.list(from_=TRACKED)] == [reply]
    assert [m.sid for m in client.messages.list(to=TRACKED, date_sent_after=MORNING + timedelta(seconds=30))] == [
        second
    ]
    assert {m.sid for m in client.messages.list(date_sent_after=MORNING)} == {first, second, other}
    # "on and before": the moment named is in
    assert {m.sid for m in client.messages.list(date_sent_before=MORNING)} == {first, other}


def test_date_sent_before_a_day_keeps_that_whole_day(fake: FakeTwilio) -> None:
    that_day = fake.add_inbound_message(from_=CUSTOMER, to=TRACKED, body="late", date_sent=MORNING + timedelta(hours=8))
    next_day = fake.add_inbound_message(from_=CUSTOMER, to=TRACKED, body="next", date_sent=MORNING + timedelta(days=1))

    _, before = list_raw(fake, "Messages", {"DateSent<": "2026-11-24"})
    _, on = list_raw(fake, "Messages", {"DateSent": "2026-11-25"})
    _, after = list_raw(fake, "Messages", {"DateSent>": "Wed, 25 Nov 2026 00:00:00 -0000"})

    assert [m["sid"] for m in before["messages"]] == [that_day]
    assert [m["sid"] for m in on["messages"]] == [next_day]
    assert [m["sid"] for m in after["messages"]] == [next_day]


def test_the_sdk_follows_next_page_uri_across_pages(fake: FakeTwilio, client: Client) -> None:
    sids = [
        fake.add_inbound_call(from_=CUSTOMER, to=TRACKED, start_time=MORNING + timedelta(minutes=n))
        for n in range(7)
    ]
    texts = [
        fake.add_inbound_message(from_=CUSTOMER, to=TRACKED, body=str(n), date_sent=MORNING + timedelta(minutes=n))
        for n in range(5)
    ]

    first = client.calls.page(to=TRACKED, start_time_after=MORNING, page_size=3)
    assert [c.sid for c in first] == sids[:-4:-1]  # one page holds three
    assert first.next_page_url is not None

    listed = client.calls.list(to=TRACKED, start_time_after=MORNING, page_size=3)
    streamed = list(client.messages.stream(to=TRACKED, date_sent_after=MORNING, page_size=2))

    assert [c.sid for c in listed] == sids[::-1]
    assert [m.sid for m in streamed] == texts[::-1]


def test_list_pages_carry_twilios_paging_fields(fake: FakeTwilio) -> None:
    sids = [
        fake.add_inbound_call(from_=CUSTOMER, to=TRACKED, start_time=MORNING + timedelta(minutes=n))
        for n in range(5)
    ][::-1]
    query = {"To": TRACKED, "StartTime>": "2026-11-24", "PageSize": "2"}

    _, first = list_raw(fake, "Calls", query)
    _, second = list_raw(fake, "Calls", dict(parse_qsl(urlsplit(first["next_page_uri"]).query)))
    _, third = list_raw(fake, "Calls", dict(parse_qsl(urlsplit(second["next_page_uri"]).query)))
    _, back = list_raw(fake, "Calls", dict(parse_qsl(urlsplit(third["previous_page_uri"]).query)))

    base = f"/2010-04-01/Accounts/{ACCOUNT_SID}/Calls.json?To=%2B12025550150&StartTime%3E=2026-11-24&PageSize=2"
    assert first["first_page_uri"] == first["uri"] == base + "&Page=0"
    assert first["next_page_uri"] == base + f"&Page=1&PageToken=PA{sids[1]}"
    assert first["previous_page_uri"] is None
    assert (first["page"], first["page_size"], first["start"], first["end"]) == (0, 2, 0, 1)
    assert second["uri"] == first["next_page_uri"]
    assert second["previous_page_uri"] == base + f"&Page=0&PageToken=PB{sids[2]}"
    assert (second["page"], second["start"], second["end"]) == (1, 2, 3)
    assert [c["sid"] for c in first["calls"] + second["calls"] + third["calls"]] == sids
    assert third["next_page_uri"] is None
    assert (third["page"], third["start"], third["end"]) == (2, 4, 4)
    assert [c["sid"] for c in back["calls"]] == sids[2:4]


def test_a_page_token_holds_its_place_when_newer_calls_arrive(fake: FakeTwilio, client: Client) -> None:
    sids = [
        fake.add_inbound_call(from_=CUSTOMER, to=TRACKED, start_time=MORNING + timedelta(minutes=n))
        for n in range(4)
    ][::-1]

    first = client.calls.page(page_size=2)
    fake.add_inbound_call(from_=CUSTOMER, to=TRACKED, start_time=MORNING + timedelta(hours=1))
    second = first.next_page()

    assert [c.sid for c in first] + [c.sid for c in second] == sids


def test_page_size_defaults_to_50_and_goes_up_to_1000(fake: FakeTwilio) -> None:
    for n in range(51):
        fake.add_inbound_message(from_=CUSTOMER, to=TRACKED, body=str(n), date_sent=MORNING + timedelta(seconds=n))

    _, default = list_raw(fake, "Messages", {})
    _, largest = list_raw(fake, "Messages", {"PageSize": "1000"})

    assert (len(default["messages"]), default["page_size"]) == (50, 50)
    assert default["next_page_uri"] is not None
    assert (len(largest["messages"]), largest["page_size"], largest["next_page_uri"]) == (51, 1000, None)


@pytest.mark.parametrize(
    ("kind", "query"),
    [
        ("Calls", {"PageSize": "0"}),
        ("Calls", {"PageSize": "1001"}),
        ("Messages", {"PageSize": "ten"}),
        ("Messages", {"Page": "-1"}),
        ("Calls", {"PageToken": "PACA" + "0" * 32}),  # no such record
        ("Calls", {"PageToken": "XX"}),
        ("Calls", {"Status": "answered"}),
        ("Calls", {"StartTime>": "yesterday"}),
        ("Calls", {"StartTime<": "2026-13-01"}),
        ("Calls", {"StartTime": "11/24/2026 09:00:00 CET"}),
        ("Messages", {"DateSent>": "24/11/2026"}),
        ("Messages", {"DateSent<": "2026-02-30"}),
    ],
)
def test_bad_list_parameters_get_twilios_400(fake: FakeTwilio, kind: str, query: dict[str, str]) -> None:
    status, body = list_raw(fake, kind, query)

    assert status == 400
    assert (body["status"], body["code"]) == (400, 20001)
    assert body["more_info"] == "https://www.twilio.com/docs/errors/20001"
    assert body["message"]


def test_the_sdk_raises_on_a_refused_list(client: Client) -> None:
    # A list page that is not 200 is the SDK's TwilioException("Unable to fetch page", response).
    with pytest.raises(TwilioException) as raised:
        client.calls.list(status="answered")

    assert raised.value.args[1].status_code == 400


def test_seeds_refuse_what_twilio_would_never_show(fake: FakeTwilio) -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        fake.add_inbound_call(from_=CUSTOMER, to=TRACKED, start_time=datetime(2026, 11, 24, 9))  # noqa: DTZ001
    with pytest.raises(ValueError, match="SID"):
        fake.add_inbound_call(from_=CUSTOMER, to=TRACKED, sid="SM" + "0" * 32)
    with pytest.raises(ValueError, match="status"):
        fake.add_inbound_call(from_=CUSTOMER, to=TRACKED, status="answered")
    with pytest.raises(ValueError, match="duration"):
        fake.add_inbound_call(from_=CUSTOMER, to=TRACKED, status="busy", duration=3)
    with pytest.raises(ValueError, match=r"E\.164"):
        fake.add_inbound_message(from_=CUSTOMER, to="12025550150", body="hi")
    sid = fake.add_inbound_message(from_=CUSTOMER, to=TRACKED, body="hi")
    with pytest.raises(ValueError, match="already exists"):
        fake.add_inbound_message(from_=CUSTOMER, to=TRACKED, body="again", sid=sid)
    with pytest.raises(KeyError):
        fake.set_call_status("CA" + "0" * 32, "completed")


def test_a_sent_text_whose_answer_was_lost_looks_like_one_the_api_took(fake: FakeTwilio, client: Client) -> None:
    queued = fake.add_sent_message(from_=TRACKED, to=CUSTOMER, body="Sorry we missed you", date_created=MORNING,
                                   status="queued")
    delivered = fake.add_sent_message(from_=TRACKED, to=CUSTOMER, body="Still there?",
                                      date_created=MORNING + timedelta(minutes=1), status="delivered")

    first, second = client.messages(queued).fetch(), client.messages(delivered).fetch()
    assert (first.direction, first.status, first.date_created, first.date_sent) == (
        "outbound-api", "queued", MORNING, None)
    assert (second.status, second.date_sent) == ("delivered", MORNING + timedelta(minutes=1))
    assert [m.sid for m in client.messages.list(to=CUSTOMER, from_=TRACKED)] == [delivered, queued]
    assert fake.messages == []  # seeded, not requested
    with pytest.raises(ValueError, match="status"):
        fake.add_sent_message(from_=TRACKED, to=CUSTOMER, body="x", status="received")
    with pytest.raises(ValueError, match=r"E\.164"):
        fake.add_sent_message(from_=TRACKED, to="12025550150", body="x")
    status, body, _ = raw_request(fake.base_url, "POST", "/_fake/sent_message", form=urlencode(
        {"From": TRACKED, "To": CUSTOMER, "Body": "over HTTP", "DateCreated": "2026-11-24T14:05:00Z"}))
    assert status == 201
    assert client.messages(body["sid"]).fetch().status == "sent"
    status, body, _ = raw_request(fake.base_url, "POST", "/_fake/sent_message", form=urlencode(
        {"From": TRACKED, "To": CUSTOMER, "Status": "lost"}))
    assert (status, body["code"]) == (400, 20001)


def test_a_refused_status_change_leaves_the_call_as_it_was(fake: FakeTwilio, client: Client) -> None:
    sid = fake.add_inbound_call(from_=CUSTOMER, to=TRACKED, status="in-progress", start_time=MORNING)

    with pytest.raises(ValueError, match="duration"):
        fake.set_call_status(sid, "no-answer", duration=-1)

    assert client.calls(sid).fetch().status == "in-progress"


def test_seeded_records_are_api_resources_not_creates_and_reset_forgets_them(
    fake: FakeTwilio, client: Client
) -> None:
    fake.add_inbound_call(from_=CUSTOMER, to=TRACKED)
    fake.add_inbound_message(from_=CUSTOMER, to=TRACKED, body="hi")

    assert (fake.calls, fake.messages) == ([], [])
    assert len(client.calls.list()) == len(client.messages.list()) == 1
    fake.reset()
    assert client.calls.list() == client.messages.list() == []


def test_seeds_and_status_changes_over_the_http_controls(fake: FakeTwilio, client: Client) -> None:
    def control(action: str, form: dict[str, str]) -> tuple[int, dict[str, Any]]:
        status, body, _ = raw_request(fake.base_url, "POST", f"/_fake/{action}", form=urlencode(form))
        return status, body

    status, call = control("inbound_call", {"From": CUSTOMER, "To": TRACKED, "Status": "ringing",
                                            "StartTime": "2026-11-24T14:00:00Z"})
    assert status == 201
    status, text = control("inbound_message", {"From": CUSTOMER, "To": TRACKED, "Body": "Still for sale?",
                                               "DateSent": "Tue, 24 Nov 2026 14:01:00 +0000", "NumMedia": "1"})
    assert status == 201
    assert control("call_status", {"Sid": call["sid"], "Status": "completed", "Duration": "31"})[0] == 200

    fetched = client.calls(call["sid"]).fetch()
    assert (fetched.direction, fetched.status, fetched.duration) == ("inbound", "completed", "31")
    assert fetched.start_time == MORNING
    (message,) = client.messages.list(to=TRACKED, date_sent_after=MORNING)
    assert (message.sid, message.body, message.num_media) == (text["sid"], "Still for sale?", "1")

    assert control("call_status", {"Sid": "CA" + "0" * 32, "Status": "completed"})[0] == 404
    status, error = control("inbound_call", {"From": CUSTOMER, "To": TRACKED, "StartTime": "soon"})
    assert (status, error["code"]) == (400, 20001)
    assert control("inbound_call", {"From": CUSTOMER, "To": TRACKED, "Status": "busy", "Duration": "4"})[0] == 400
    assert control("inbound_message", {"To": TRACKED, "Body": "no sender"})[0] == 400


# -- incoming phone numbers -------------------------------------------------------------------------


def test_numbers_list_and_stream_follow_every_page(fake: FakeTwilio, client: Client) -> None:
    sids = [fake.add_number(f"+1202555{line:04d}") for line in range(150, 157)]

    listed = client.incoming_phone_numbers.list(page_size=3)
    streamed = list(client.incoming_phone_numbers.stream(page_size=2))
    limited = client.incoming_phone_numbers.list(limit=5, page_size=2)

    assert [n.sid for n in listed] == sids
    assert [n.sid for n in streamed] == sids
    assert [n.sid for n in limited] == sids[:5]


def test_numbers_pages_carry_next_and_previous_links(fake: FakeTwilio, client: Client) -> None:
    sids = [fake.add_number(f"+1202555{line:04d}") for line in range(150, 157)]

    first = client.incoming_phone_numbers.page(page_size=3)
    second = first.next_page()
    third = second.next_page()

    assert [n.sid for n in first] == sids[0:3]
    assert [n.sid for n in second] == sids[3:6]
    assert [n.sid for n in third] == sids[6:7]
    assert third.next_page() is None
    assert [n.sid for n in third.previous_page()] == sids[3:6]


def test_numbers_filter_by_phone_number(fake: FakeTwilio, client: Client) -> None:
    fake.add_number("+12025550150")
    wanted = fake.add_number("+12025550151", "Cars.com line")

    found = client.incoming_phone_numbers.list(phone_number="+12025550151")

    assert [(n.sid, n.friendly_name) for n in found] == [(wanted, "Cars.com line")]
    assert client.incoming_phone_numbers.list(phone_number="+13125550100") == []


def test_number_update_sets_urls_and_methods(fake: FakeTwilio, client: Client) -> None:
    sid = fake.add_number(DEALER)
    assert fake.numbers[sid]["friendly_name"] == "(202) 555-0100"

    updated = client.incoming_phone_numbers(sid).update(
        voice_url="https://gateway.example/webhooks/voice",
        voice_method="POST",
        voice_fallback_url="https://gateway.example/webhooks/voice/fallback",
        voice_fallback_method="POST",
        sms_url="https://gateway.example/webhooks/sms",
        sms_method="post",
        sms_fallback_url="https://gateway.example/webhooks/sms/fallback",
        sms_fallback_method="GET",
        status_callback="https://gateway.example/webhooks/voice/status",
        status_callback_method="POST",
    )

    assert updated.voice_url == "https://gateway.example/webhooks/voice"
    assert updated.sms_method == "POST"
    stored = fake.numbers[sid]
    assert stored["voice_fallback_url"] == "https://gateway.example/webhooks/voice/fallback"
    assert stored["sms_url"] == "https://gateway.example/webhooks/sms"
    assert stored["sms_fallback_method"] == "GET"
    assert stored["status_callback"] == "https://gateway.example/webhooks/voice/status"
    assert client.incoming_phone_numbers(sid).fetch().sms_fallback_url.endswith("/sms/fallback")


def test_number_update_rejects_a_bad_method_and_an_unknown_sid(fake: FakeTwilio, client: Client) -> None:
    sid = fake.add_number(DEALER)

    with pytest.raises(TwilioRestException) as bad_method:
        client.incoming_phone_numbers(sid).update(voice_method="PUT")
    with pytest.raises(TwilioRestException) as unknown:
        client.incoming_phone_numbers("PN" + "0" * 32).update(voice_url="https://gateway.example/v")

    assert bad_method.value.status == 400
    assert fake.numbers[sid]["voice_method"] == "POST"
    assert (unknown.value.status, unknown.value.code) == (404, 20404)


def test_add_number_refuses_what_is_not_e164(fake: FakeTwilio) -> None:
    with pytest.raises(ValueError, match=r"E\.164"):
        fake.add_number("202-555-0100")


# -- auth and routing -------------------------------------------------------------------------------


def test_bad_credentials_raise_20003(fake: FakeTwilio) -> None:
    wrong = make_client(fake, auth_token="not-the-token")
    try:
        with pytest.raises(TwilioRestException) as raised:
            wrong.messages.create(to=CUSTOMER, from_=DEALER, body="Hello")
    finally:
        close(wrong)

    assert (raised.value.status, raised.value.code) == (401, 20003)
    assert fake.messages == []


def test_missing_credentials_get_twilio_401_body(fake: FakeTwilio) -> None:
    status, body, headers = raw_request(
        fake.base_url, "GET", f"/2010-04-01/Accounts/{ACCOUNT_SID}/Messages.json"
    )

    assert status == 401
    assert body == {
        "code": 20003,
        "message": "Authenticate",
        "more_info": "https://www.twilio.com/docs/errors/20003",
        "status": 401,
    }
    assert headers["WWW-Authenticate"].startswith("Basic")


def test_another_account_in_the_path_is_404(fake: FakeTwilio, client: Client) -> None:
    with pytest.raises(TwilioRestException) as raised:
        client.api.v2010.accounts("AC" + "9" * 32).messages.create(to=CUSTOMER, from_=DEALER, body="Hi")

    assert (raised.value.status, raised.value.code) == (404, 20404)
    assert fake.messages == []


def test_unknown_paths_and_methods_answer_json(fake: FakeTwilio) -> None:
    auth = (ACCOUNT_SID, AUTH_TOKEN)
    status, body, _ = raw_request(
        fake.base_url, "GET", f"/2010-04-01/Accounts/{ACCOUNT_SID}/Queues.json", auth
    )
    assert (status, body["code"], body["status"]) == (404, 20404, 404)

    status, body, _ = raw_request(fake.base_url, "GET", "/favicon.ico", auth)
    assert (status, body["code"]) == (404, 20404)

    status, body, _ = raw_request(
        fake.base_url, "DELETE", f"/2010-04-01/Accounts/{ACCOUNT_SID}/Messages.json", auth
    )
    assert (status, body["code"]) == (405, 20004)


# -- failure injection ------------------------------------------------------------------------------


def test_error_for_a_recipient_raises_its_code(fake: FakeTwilio, client: Client) -> None:
    opted_out, landline = "+12025550188", "+12025550199"
    fake.set_error_for_recipient(opted_out, 21610)
    fake.set_error_for_recipient(landline, 21614, message="'To' number is not a valid mobile number")

    with pytest.raises(TwilioRestException) as stopped:
        client.messages.create(to=opted_out, from_=DEALER, body="Hello")
    with pytest.raises(TwilioRestException) as not_mobile:
        client.messages.create(to=landline, from_=DEALER, body="Hello")
    client.messages.create(to=CUSTOMER, from_=DEALER, body="Hello")
    client.calls.create(to=opted_out, from_=DEALER, url="https://gateway.example/voice")

    assert (stopped.value.status, stopped.value.code) == (400, 21610)
    assert "unsubscribed" in stopped.value.msg
    assert not_mobile.value.code == 21614
    assert [m["To"] for m in fake.messages] == [CUSTOMER]
    assert [(r["To"], r["code"]) for r in fake.rejected] == [(opted_out, 21610), (landline, 21614)]
    assert len(fake.calls) == 1  # recipient errors are for texts unless kind="calls"


def test_fail_next_fails_that_many_creates_then_recovers(fake: FakeTwilio, client: Client) -> None:
    fake.fail_next("messages", 500, 20500, "Internal Server Error", count=2)
    fake.fail_next("calls", 429, 20429)

    codes = []
    for _ in range(3):
        try:
            client.messages.create(to=CUSTOMER, from_=DEALER, body="Hello")
            codes.append(201)
        except TwilioRestException as error:
            codes.append(error.code)
    with pytest.raises(TwilioRestException) as throttled:
        client.calls.create(to=CUSTOMER, from_=DEALER, url="https://gateway.example/voice")

    assert codes == [20500, 20500, 201]
    assert (throttled.value.status, throttled.value.code) == (429, 20429)
    assert len(fake.messages) == 1


def test_fail_next_on_numbers_breaks_the_next_number_request(fake: FakeTwilio, client: Client) -> None:
    sid = fake.add_number(DEALER)
    fake.fail_next("numbers", 503, 20503)

    with pytest.raises(TwilioRestException) as raised:
        client.incoming_phone_numbers(sid).update(voice_url="https://gateway.example/voice")

    assert raised.value.status == 503
    assert client.incoming_phone_numbers(sid).update(voice_url="https://gateway.example/voice").voice_url


def test_fail_next_refuses_an_unknown_kind(fake: FakeTwilio) -> None:
    with pytest.raises(ValueError, match="kind"):
        fake.fail_next("faxes", 500, 20500, "nope")


def test_down_answers_503_until_back_up(fake: FakeTwilio, client: Client) -> None:
    fake.set_down(True)
    with pytest.raises(TwilioRestException) as raised:
        client.messages.create(to=CUSTOMER, from_=DEALER, body="Hello")
    fake.set_down(False)
    client.messages.create(to=CUSTOMER, from_=DEALER, body="Hello")

    assert (raised.value.status, raised.value.code) == (503, 20503)
    assert len(fake.messages) == 1


def test_latency_delays_each_answer(fake: FakeTwilio, client: Client) -> None:
    fake.set_latency(0.2)
    started = time.monotonic()
    client.messages.create(to=CUSTOMER, from_=DEALER, body="Hello")
    assert time.monotonic() - started >= 0.2  # a floor the sleep guarantees, not a speed claim


def test_reset_forgets_messages_and_injected_failures_but_keeps_numbers(
    fake: FakeTwilio, client: Client
) -> None:
    sid = fake.add_number(DEALER)
    client.messages.create(to=CUSTOMER, from_=DEALER, body="Hello")
    client.calls.create(to=CUSTOMER, from_=DEALER, url="https://gateway.example/voice")
    fake.set_error_for_recipient(CUSTOMER, 21610)
    fake.fail_next("calls", 500, 20500, "boom")
    fake.set_down(True)

    fake.reset()

    assert (fake.messages, fake.calls, fake.rejected) == ([], [], [])
    client.messages.create(to=CUSTOMER, from_=DEALER, body="Hello again")
    client.calls.create(to=CUSTOMER, from_=DEALER, url="https://gateway.example/voice")
    assert list(fake.numbers) == [sid]


# -- waiting and concurrency -------------------------------------------------------------------------


def test_wait_for_messages_blocks_until_they_arrive(fake: FakeTwilio, client: Client) -> None:
    def send_later() -> None:
        time.sleep(0.05)
        for n in range(3):
            client.messages.create(to=CUSTOMER, from_=DEALER, body=f"text {n}")

    sender = threading.Thread(target=send_later)
    sender.start()
    try:
        records = fake.wait_for_messages(3, timeout=10)
    finally:
        sender.join()

    assert [r["Body"] for r in records] == ["text 0", "text 1", "text 2"]


def test_wait_for_messages_times_out(fake: FakeTwilio) -> None:
    with pytest.raises(TimeoutError, match="got 0"):
        fake.wait_for_messages(1, timeout=0.05)


def test_fifty_threads_create_fifty_distinct_messages(fake: FakeTwilio) -> None:
    threads, barrier = 50, threading.Barrier(50)
    returned: list[str] = []
    errors: list[BaseException] = []
    lock = threading.Lock()

    def send(n: int) -> None:
        sdk = make_client(fake)
        try:
            barrier.wait(timeout=10)
            sid = sdk.messages.create(to=CUSTOMER, from_=DEALER, body=f"lead {n}").sid
            with lock:
                returned.append(sid)
        except BaseException as error:  # reported below, in the test's own thread
            with lock:
                errors.append(error)
        finally:
            close(sdk)

    workers = [threading.Thread(target=send, args=(n,)) for n in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()

    assert errors == []
    recorded = fake.wait_for_messages(threads)
    assert len({r["sid"] for r in recorded}) == threads
    assert sorted(r["sid"] for r in recorded) == sorted(returned)
    assert sorted(r["Body"] for r in recorded) == sorted(f"lead {n}" for n in range(threads))


def test_two_thousand_creates_through_the_sdk(fake: FakeTwilio, client: Client) -> None:
    started = time.perf_counter()
    for n in range(2000):
        client.messages.create(to=CUSTOMER, from_=DEALER, body=f"cadence step {n}")
    elapsed = time.perf_counter() - started

    assert len({r["sid"] for r in fake.messages}) == 2000
    print(f"\nfake Twilio: 2000 SDK message creates, one thread, {2000 / elapsed:.0f}/s")


# -- as a separate process -----------------------------------------------------------------------------


def test_runs_as_a_process_and_prints_its_base_url() -> None:
    command = [
        sys.executable,
        "-m",
        "tests.fakes.twilio_api",
        "--port",
        "0",
        "--account-sid",
        ACCOUNT_SID,
        "--auth-token",
        AUTH_TOKEN,
        "--number",
        DEALER,
    ]
    with subprocess.Popen(command, cwd=ROOT, stdout=subprocess.PIPE, text=True) as process:
        try:
            assert process.stdout is not None
            base_url = process.stdout.readline().strip()
            assert re.fullmatch(r"http://127\.0\.0\.1:\d+", base_url)

            sdk = Client(ACCOUNT_SID, AUTH_TOKEN)
            sdk.api.base_url = base_url
            try:
                message = sdk.messages.create(to=CUSTOMER, from_=DEALER, body="From another process")
                (number,) = sdk.incoming_phone_numbers.list()
            finally:
                close(sdk)
            _, seen, _ = raw_request(base_url, "GET", "/_fake/messages")
        finally:
            process.terminate()
        assert process.wait(timeout=10) == 0

    assert number.phone_number == DEALER
    assert seen["total"] == 1
    assert seen["items"][0]["sid"] == message.sid
    assert datetime.fromisoformat(seen["items"][0]["created_at"]).tzinfo is not None
