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
from datetime import datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
from twilio.base.exceptions import TwilioRestException
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
