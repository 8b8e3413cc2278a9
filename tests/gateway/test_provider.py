"""The SDK's transport (gateway/provider.py): the real `twilio` SDK over pooled connections, against
the local fake of the REST API and a recording proxy on loopback."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import ClassVar

import pytest

from gateway.provider import ProviderError, TwilioProvider

CUSTOMER = "+12025550147"
SENDER = "+12025550123"


@pytest.fixture
def provider(fake_twilio) -> TwilioProvider:
    return TwilioProvider(fake_twilio.account_sid, fake_twilio.auth_token, fake_twilio.base_url, timeout=2)


def test_a_text_with_media_reaches_the_provider_as_the_sdk_encodes_it(provider, fake_twilio):
    sent = provider.send_sms(to=CUSTOMER, from_=SENDER, body="Ünïcode & spaces + 1 🚗",
                             media_urls=["https://example.test/a.jpg", "https://example.test/b.jpg"],
                             status_callback="https://gateway.example.test/webhooks/sms/status")
    assert sent.sid.startswith("SM")
    [record] = fake_twilio.messages
    assert record["Body"] == "Ünïcode & spaces + 1 🚗"
    assert record["MediaUrl"] == ["https://example.test/a.jpg", "https://example.test/b.jpg"]
    assert record["StatusCallback"] == "https://gateway.example.test/webhooks/sms/status"


def test_calls_send_list_parameters_as_repeated_fields(provider, fake_twilio):
    provider.create_call(to=CUSTOMER, from_=SENDER, url="https://gateway.example.test/twiml",
                         status_callback="https://gateway.example.test/status", timeout=20)
    [record] = fake_twilio.calls
    assert record["StatusCallbackEvent"] == ["completed"]


def test_wrong_credentials_are_the_providers_error_not_a_crash(fake_twilio):
    wrong = TwilioProvider(fake_twilio.account_sid, "not-the-token", fake_twilio.base_url)
    with pytest.raises(ProviderError) as raised:
        wrong.send_sms(to=CUSTOMER, from_=SENDER, body="Hi", media_urls=[], status_callback=None)
    assert raised.value.status == 401
    assert raised.value.code == 20003
    assert not raised.value.retryable


def test_an_api_that_is_not_there_is_a_retryable_error(fake_twilio):
    from gateway.embedded_redis import free_port

    gone = TwilioProvider(fake_twilio.account_sid, fake_twilio.auth_token, f"http://127.0.0.1:{free_port()}")
    with pytest.raises(ProviderError) as raised:
        gone.send_sms(to=CUSTOMER, from_=SENDER, body="Hi", media_urls=[], status_callback=None)
    assert raised.value.retryable


def test_a_slow_api_times_out_as_a_retryable_error(fake_twilio):
    fake_twilio.set_latency(1.5)
    slow = TwilioProvider(fake_twilio.account_sid, fake_twilio.auth_token, fake_twilio.base_url, timeout=0.3)
    with pytest.raises(ProviderError) as raised:
        slow.send_sms(to=CUSTOMER, from_=SENDER, body="Hi", media_urls=[], status_callback=None)
    assert raised.value.retryable


class _RecordingProxy(BaseHTTPRequestHandler):
    seen: ClassVar[list[str]] = []

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length", "0")))
        type(self).seen.append(self.requestline)
        body = json.dumps({"sid": "SM" + "f" * 32, "status": "queued"}).encode()
        self.send_response(201)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


def test_the_environments_proxy_is_used(fake_twilio, monkeypatch):
    proxy = ThreadingHTTPServer(("127.0.0.1", 0), _RecordingProxy)
    threading.Thread(target=proxy.serve_forever, daemon=True).start()
    try:
        monkeypatch.setenv("HTTP_PROXY", f"http://127.0.0.1:{proxy.server_address[1]}")
        monkeypatch.delenv("NO_PROXY", raising=False)
        monkeypatch.delenv("no_proxy", raising=False)
        proxied = TwilioProvider(fake_twilio.account_sid, fake_twilio.auth_token, fake_twilio.base_url)
        sent = proxied.send_sms(to=CUSTOMER, from_=SENDER, body="Hi", media_urls=[], status_callback=None)
        assert sent.sid == "SM" + "f" * 32
        # A proxy is asked for the absolute URL of the API.
        assert _RecordingProxy.seen == [f"POST {fake_twilio.base_url}/2010-04-01/Accounts/"
                                        f"{fake_twilio.account_sid}/Messages.json HTTP/1.1"]
        assert fake_twilio.messages == []
    finally:
        proxy.shutdown()
        proxy.server_close()
