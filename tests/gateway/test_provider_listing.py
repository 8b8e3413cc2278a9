"""Reading calls and texts back from the provider (gateway/provider.py): the real `twilio` SDK, paging
through the local fake of the REST API on loopback, finds what reached a tracked number without a webhook."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest

from gateway.provider import ProviderCall, ProviderError, ProviderMessage, SandboxProvider, TwilioProvider

TRACKED = "+12025550123"
OTHER_TRACKED = "+12025550124"
CUSTOMER = "+12025550147"
# The last time the gateway is sure it heard everything: 09:00 in New York.
WATERMARK = datetime(2026, 11, 24, 14, 0, tzinfo=UTC)


@pytest.fixture
def provider(fake_twilio) -> TwilioProvider:
    # Pages of two: a handful of records already takes the SDK across several pages.
    return TwilioProvider(
        fake_twilio.account_sid, fake_twilio.auth_token, fake_twilio.base_url, timeout=2, list_page_size=2
    )


def minutes(n: float) -> datetime:
    return WATERMARK + timedelta(minutes=n)


def test_calls_since_the_watermark_come_back_oldest_first_from_every_page(provider, fake_twilio):
    fake_twilio.add_inbound_call(from_=CUSTOMER, to=TRACKED, start_time=minutes(-30))
    fake_twilio.add_inbound_call(from_=CUSTOMER, to=TRACKED, start_time=minutes(-0.1))
    fake_twilio.add_inbound_call(from_=CUSTOMER, to=OTHER_TRACKED, start_time=minutes(5))
    missed = [
        fake_twilio.add_inbound_call(from_=CUSTOMER, to=TRACKED, status="no-answer", start_time=minutes(n))
        for n in (12, 0, 7, 3, 20)  # added out of order, as dropped webhooks come
    ]

    calls = provider.list_calls(TRACKED, WATERMARK)

    # Five calls in pages of two: only the SDK following next_page_uri finds them all.
    assert [call.sid for call in calls] == [missed[1], missed[3], missed[2], missed[0], missed[4]]
    assert [call.start_time for call in calls] == [minutes(n) for n in (0, 3, 7, 12, 20)]
    assert {call.to_number for call in calls} == {TRACKED}


def test_a_listed_call_carries_what_reconciling_needs(provider, fake_twilio):
    sid = fake_twilio.add_inbound_call(
        from_=CUSTOMER, to=TRACKED, sid="CA" + "5" * 32, status="completed", start_time=minutes(1), duration=75
    )

    (call,) = provider.list_calls(TRACKED, WATERMARK)

    assert call == ProviderCall(
        sid=sid,
        from_number=CUSTOMER,
        to_number=TRACKED,
        status="completed",
        direction="inbound",
        start_time=minutes(1),
        end_time=minutes(1) + timedelta(seconds=75),
        duration=75,
    )
    assert call.final


def test_the_watermark_counts_from_the_start_of_its_second(provider, fake_twilio):
    # The API filters in whole seconds: a call in the watermark's own second is listed, earlier ones are not.
    same_second = fake_twilio.add_inbound_call(from_=CUSTOMER, to=TRACKED, start_time=WATERMARK)
    fake_twilio.add_inbound_call(from_=CUSTOMER, to=TRACKED, start_time=WATERMARK - timedelta(seconds=1))

    calls = provider.list_calls(TRACKED, WATERMARK + timedelta(milliseconds=700))

    assert [call.sid for call in calls] == [same_second]


def test_a_watermark_in_another_zone_is_the_same_moment(provider, fake_twilio):
    after = fake_twilio.add_inbound_call(from_=CUSTOMER, to=TRACKED, start_time=minutes(1))
    fake_twilio.add_inbound_call(from_=CUSTOMER, to=TRACKED, start_time=minutes(-1))
    new_york = WATERMARK.astimezone(timezone(timedelta(hours=-5)))

    assert [call.sid for call in provider.list_calls(TRACKED, new_york)] == [after]


def test_a_watermark_without_a_zone_is_refused(provider):
    with pytest.raises(ValueError, match="timezone-aware"):
        provider.list_calls(TRACKED, datetime(2026, 11, 24, 9, 0))  # noqa: DTZ001
    with pytest.raises(ValueError, match="timezone-aware"):
        provider.list_inbound_messages(TRACKED, datetime(2026, 11, 24, 9, 0))  # noqa: DTZ001


def test_texts_since_the_watermark_come_back_oldest_first_from_every_page(provider, fake_twilio):
    fake_twilio.add_inbound_message(from_=CUSTOMER, to=TRACKED, body="old", date_sent=minutes(-5))
    fake_twilio.add_inbound_message(from_=CUSTOMER, to=OTHER_TRACKED, body="elsewhere", date_sent=minutes(2))
    sids = [
        fake_twilio.add_inbound_message(from_=CUSTOMER, to=TRACKED, body=f"text {n}", date_sent=minutes(n))
        for n in (4, 1, 3, 0, 2)
    ]
    picture = fake_twilio.add_inbound_message(
        from_=CUSTOMER, to=TRACKED, body="", date_sent=minutes(9), num_media=1
    )
    # The gateway's own texts go to customers, and one not yet sent has no date_sent: neither is listed.
    provider.send_sms(to=TRACKED, from_=OTHER_TRACKED, body="internal", media_urls=[], status_callback=None)

    texts = provider.list_inbound_messages(TRACKED, WATERMARK)

    assert [text.body for text in texts] == ["text 0", "text 1", "text 2", "text 3", "text 4", ""]
    assert [text.sid for text in texts] == [sids[3], sids[1], sids[4], sids[2], sids[0], picture]
    assert texts[-1] == ProviderMessage(
        sid=picture,
        from_number=CUSTOMER,
        to_number=TRACKED,
        body="",
        direction="inbound",
        date_sent=minutes(9),
        num_media=1,
        status="received",
        date_created=minutes(9),
    )


def test_texts_the_account_sent_to_one_recipient_come_back_oldest_first_with_their_status(provider, fake_twilio):
    later = fake_twilio.add_sent_message(from_=TRACKED, to=CUSTOMER, body="second", date_created=minutes(3),
                                         status="delivered")
    earlier = fake_twilio.add_sent_message(from_=TRACKED, to=CUSTOMER, body="first", date_created=minutes(1),
                                           status="queued")
    fake_twilio.add_sent_message(from_=TRACKED, to=CUSTOMER, body="before", date_created=minutes(-1))
    fake_twilio.add_sent_message(from_=OTHER_TRACKED, to=CUSTOMER, body="other number", date_created=minutes(2))
    fake_twilio.add_inbound_message(from_=CUSTOMER, to=TRACKED, body="their answer", date_sent=minutes(2))

    texts = provider.list_outbound_messages(CUSTOMER, TRACKED, WATERMARK)

    # Across pages of two; the queued one has no date_sent, so only the creation time can find it.
    assert [(t.sid, t.body, t.status) for t in texts] == [(earlier, "first", "queued"),
                                                          (later, "second", "delivered")]
    assert texts[0].date_created == minutes(1)
    assert texts[0].date_sent is None
    assert provider.list_outbound_messages(CUSTOMER, TRACKED, minutes(4)) == []


def test_nothing_since_the_watermark_is_an_empty_list(provider, fake_twilio):
    fake_twilio.add_inbound_call(from_=CUSTOMER, to=TRACKED, start_time=minutes(-1))

    assert provider.list_calls(TRACKED, WATERMARK) == []
    assert provider.list_inbound_messages(TRACKED, WATERMARK) == []


def test_fetch_call_shows_the_status_the_provider_has_now(provider, fake_twilio):
    sid = fake_twilio.add_inbound_call(from_=CUSTOMER, to=TRACKED, status="in-progress", start_time=minutes(1))

    ongoing = provider.fetch_call(sid)
    fake_twilio.set_call_status(sid, "completed", duration=42)
    ended = provider.fetch_call(sid)

    assert ongoing is not None
    assert ended is not None
    assert (ongoing.status, ongoing.final, ongoing.end_time, ongoing.duration) == ("in-progress", False, None, None)
    assert (ended.status, ended.final, ended.duration) == ("completed", True, 42)
    assert ended.end_time == minutes(1) + timedelta(seconds=42)


def test_fetch_call_of_a_call_the_provider_never_had_is_none(provider):
    assert provider.fetch_call("CA" + "0" * 32) is None


def test_a_provider_outage_is_a_retryable_error_not_an_empty_list(provider, fake_twilio):
    fake_twilio.add_inbound_call(from_=CUSTOMER, to=TRACKED, start_time=minutes(1))
    fake_twilio.set_down()

    for read in (
        lambda: provider.list_calls(TRACKED, WATERMARK),
        lambda: provider.list_inbound_messages(TRACKED, WATERMARK),
        lambda: provider.list_outbound_messages(CUSTOMER, TRACKED, WATERMARK),
        lambda: provider.fetch_call("CA" + "0" * 32),
    ):
        with pytest.raises(ProviderError) as raised:
            read()
        assert (raised.value.status, raised.value.code) == (503, 20503)
        assert raised.value.retryable


def test_wrong_credentials_on_a_list_are_not_retryable(fake_twilio):
    wrong = TwilioProvider(fake_twilio.account_sid, "not-the-token", fake_twilio.base_url, timeout=2)

    with pytest.raises(ProviderError) as raised:
        wrong.list_calls(TRACKED, WATERMARK)

    assert (raised.value.status, raised.value.code) == (401, 20003)
    assert not raised.value.retryable


def test_an_api_that_is_not_there_fails_a_list_retryably(fake_twilio):
    from gateway.embedded_redis import free_port

    gone = TwilioProvider(fake_twilio.account_sid, fake_twilio.auth_token, f"http://127.0.0.1:{free_port()}")

    with pytest.raises(ProviderError) as raised:
        gone.list_inbound_messages(TRACKED, WATERMARK)

    assert raised.value.retryable


def test_the_sandbox_has_nothing_to_reconcile():
    sandbox = SandboxProvider()

    assert sandbox.list_calls(TRACKED, WATERMARK) == []
    assert sandbox.list_inbound_messages(TRACKED, WATERMARK) == []
    assert sandbox.list_outbound_messages(CUSTOMER, TRACKED, WATERMARK) == []
    assert sandbox.fetch_call("CA" + "0" * 32) is None
