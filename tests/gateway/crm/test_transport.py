"""CRM deliveries against real local servers: an http.server CRM and an aiosmtpd mail server."""

from __future__ import annotations

import email
import email.policy
import pickle
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from email.message import EmailMessage, Message
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword
from lxml import etree

from gateway.crm.formats import (
    ADF_DTD_PATH,
    IDEMPOTENCY_HEADER,
    SIGNATURE_HEADER,
    ContactType,
    LeadRecord,
    render_adf,
    render_json_event,
    verify_webhook,
)
from gateway.crm.transport import (
    DeliveryError,
    message_id_for,
    parse_smtp_url,
    post_adf,
    post_json,
    send_adf_email,
)

# ------------------------------------------------------------------------------------ HTTP CRM fake


@dataclass
class Received:
    path: str
    headers: Message
    body: bytes


# path -> (status, response body, extra headers)
ANSWERS: dict[str, tuple[int, bytes, dict[str, str]]] = {
    "/ok": (200, b"accepted", {}),
    "/created": (201, b"", {}),
    "/fail": (500, b"database down", {}),
    "/unavailable": (503, b"", {}),
    "/bad": (400, b"missing <vendor>", {}),
    "/unauthorized": (401, b"", {}),
    "/gone": (404, b"", {}),
    "/timeout": (408, b"", {}),
    "/conflict": (409, b"", {}),
    "/busy": (429, b"slow down", {"Retry-After": "30"}),
    "/moved": (302, b"", {"Location": "/ok"}),
    "/permanent": (308, b"", {"Location": "/ok"}),
}


class CrmServer(ThreadingHTTPServer):
    daemon_threads = False
    block_on_close = True  # server_close() joins the handler threads

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), CrmHandler)
        self.received: list[Received] = []
        self.release = threading.Event()

    def url(self, path: str) -> str:
        host, port = self.server_address[:2]
        return f"http://{host!s}:{port}{path}"


class CrmHandler(BaseHTTPRequestHandler):
    server: CrmServer

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
        self.server.received.append(Received(self.path, self.headers, body))
        path = self.path.partition("?")[0]
        if path == "/slow":
            # Answer only after the client has given up (or the test ends).
            self.server.release.wait(5)
            self.close_connection = True
            return
        status, payload, headers = ANSWERS[path]
        self.send_response(status)
        for name, value in headers.items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def crm() -> Iterator[CrmServer]:
    server = CrmServer()
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05})
    thread.start()
    try:
        yield server
    finally:
        server.release.set()
        server.shutdown()
        server.server_close()
        thread.join()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def make_adf() -> bytes:
    return render_adf(
        LeadRecord(
            lead_id=7,
            lead_code="Q4ZR8",
            event="lead.created",
            contact_type=ContactType.VOICEMAIL,
            request_date=datetime(2025, 6, 1, 14, 30, tzinfo=UTC),
            store_key="north-honda",
            store_name="North Honda",
            store_phone="+12025550100",
            department="sales",
            lead_url="https://gateway.example/leads/7",
            phone="+12025550111",
            first_name="José",
            transcript='Call me back about the "Civic" <today> & tomorrow \U0001f697',
        )
    )


def assert_valid_adf(body: bytes) -> etree._Element:
    dtd = etree.DTD(str(ADF_DTD_PATH))
    root = etree.fromstring(body)
    assert dtd.validate(root), dtd.error_log.filter_from_errors()
    return root


# -------------------------------------------------------------------------------------------- HTTP


def test_post_adf_sends_the_document(crm: CrmServer) -> None:
    body = make_adf()

    post_adf(crm.url("/ok"), body, "delivery-7", timeout=5)

    [request] = crm.received
    assert request.body == body
    assert request.headers["Content-Type"] == "application/xml; charset=utf-8"
    assert request.headers[IDEMPOTENCY_HEADER] == "delivery-7"
    assert request.headers["User-Agent"].startswith("DealerGateway/")
    assert_valid_adf(request.body)


def test_post_json_is_signed_and_verifiable(crm: CrmServer) -> None:
    body = render_json_event("lead.created", {"lead": {"code": "Q4ZR8", "name": "José"}})
    now = int(time.time())

    post_json(crm.url("/created"), body, "s3cret", "delivery-8", timeout=5, now=now)

    [request] = crm.received
    assert request.body == body
    assert request.headers["Content-Type"] == "application/json"
    assert request.headers[IDEMPOTENCY_HEADER] == "delivery-8"
    signature = request.headers[SIGNATURE_HEADER]
    assert signature.startswith(f"t={now},v1=")
    assert verify_webhook("s3cret", request.body, signature, now=now)
    assert not verify_webhook("wrong", request.body, signature, now=now)


def test_post_json_signs_with_the_clock_by_default(crm: CrmServer) -> None:
    post_json(crm.url("/ok"), b"{}", "s3cret", "delivery-9", timeout=5)

    [request] = crm.received
    assert verify_webhook("s3cret", b"{}", request.headers[SIGNATURE_HEADER], now=int(time.time()))


@pytest.mark.parametrize(
    ("path", "status"),
    [("/fail", 500), ("/unavailable", 503), ("/timeout", 408), ("/conflict", 409), ("/busy", 429)],
)
def test_server_trouble_is_retryable(crm: CrmServer, path: str, status: int) -> None:
    with pytest.raises(DeliveryError) as caught:
        post_adf(crm.url(path), b"<adf/>", "k", timeout=5)

    assert caught.value.retryable
    assert caught.value.status == status
    assert f"HTTP {status}" in str(caught.value)


@pytest.mark.parametrize(("path", "status"), [("/bad", 400), ("/unauthorized", 401), ("/gone", 404)])
def test_rejections_are_not_retryable(crm: CrmServer, path: str, status: int) -> None:
    with pytest.raises(DeliveryError) as caught:
        post_json(crm.url(path), b"{}", "s3cret", "k", timeout=5)

    assert not caught.value.retryable
    assert caught.value.status == status


def test_error_names_the_host_and_answer_but_not_the_url_secrets(crm: CrmServer) -> None:
    with pytest.raises(DeliveryError) as caught:
        post_adf(crm.url("/bad?token=TOPSECRET"), b"<adf/>", "k", timeout=5)

    message = str(caught.value)
    assert "127.0.0.1" in message
    assert "missing <vendor>" in message
    assert "TOPSECRET" not in message


@pytest.mark.parametrize("path", ["/moved", "/permanent"])
def test_redirects_are_not_followed(crm: CrmServer, path: str) -> None:
    with pytest.raises(DeliveryError) as caught:
        post_adf(crm.url(path), b"<adf/>", "k", timeout=5)

    assert not caught.value.retryable
    assert "/ok" in str(caught.value)
    assert [r.path for r in crm.received] == [path]  # the lead was not re-sent as a GET elsewhere


def test_timeout_is_retryable(crm: CrmServer) -> None:
    with pytest.raises(DeliveryError) as caught:
        post_adf(crm.url("/slow"), b"<adf/>", "k", timeout=0.3)

    assert caught.value.retryable
    assert "timed out" in str(caught.value)  # gave up; the server's answer (after 5 s) never counted
    assert len(crm.received) == 1


def test_refused_connection_is_retryable() -> None:
    with pytest.raises(DeliveryError) as caught:
        post_json(f"http://127.0.0.1:{free_port()}/hook", b"{}", "s3cret", "k", timeout=2)

    assert caught.value.retryable
    assert caught.value.status is None


@pytest.mark.parametrize("url", ["ftp://crm.example/adf", "file:///etc/passwd", "not a url", "http:///x"])
def test_unusable_urls_are_not_retryable(url: str) -> None:
    with pytest.raises(DeliveryError) as caught:
        post_adf(url, b"<adf/>", "k", timeout=1)

    assert not caught.value.retryable


def test_delivery_error_survives_pickling() -> None:
    error = pickle.loads(pickle.dumps(DeliveryError("CRM down", True, status=503)))  # noqa: S301
    assert (str(error), error.retryable, error.status) == ("CRM down", True, 503)


# -------------------------------------------------------------------------------------------- SMTP


class Inbox:
    """aiosmtpd handler: keeps what it accepts; some mailboxes refuse, some are full."""

    def __init__(self) -> None:
        self.envelopes: list[Any] = []
        self.logins: list[tuple[bytes, bytes]] = []

    async def handle_RCPT(
        self, server: Any, session: Any, envelope: Any, address: str, rcpt_options: list[str]
    ) -> str:
        if address.startswith("nobody@"):
            return "550 5.1.1 no such mailbox"
        if address.startswith("full@"):
            return "452 4.2.2 mailbox full"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        self.envelopes.append(envelope)
        return "250 Message accepted"

    def authenticate(
        self, server: Any, session: Any, envelope: Any, mechanism: str, auth_data: Any
    ) -> AuthResult:
        assert isinstance(auth_data, LoginPassword)
        self.logins.append((auth_data.login, auth_data.password))
        # handled=False: let aiosmtpd answer a failure with its 535 reply
        return AuthResult(success=auth_data.password == b"p@ss word", handled=False)


@pytest.fixture
def inbox() -> Iterator[tuple[Inbox, int]]:
    handler = Inbox()
    port = free_port()
    controller = Controller(
        handler,
        hostname="127.0.0.1",
        port=port,
        authenticator=handler.authenticate,
        auth_require_tls=False,
    )
    controller.start()
    try:
        yield handler, port
    finally:
        controller.stop()


def received_message(handler: Inbox) -> EmailMessage:
    [envelope] = handler.envelopes
    message = email.message_from_bytes(envelope.content, policy=email.policy.default)
    assert isinstance(message, EmailMessage)
    return message


def test_adf_email_is_delivered_and_parses(inbox: tuple[Inbox, int]) -> None:
    handler, port = inbox
    body = make_adf()

    send_adf_email(
        f"smtp://127.0.0.1:{port}?from=leads@gateway.example",
        "leads@north-honda.crm.example",
        "North Honda",
        body,
        "delivery-17",
        timeout=5,
    )

    [envelope] = handler.envelopes
    assert envelope.mail_from == "leads@gateway.example"
    assert envelope.rcpt_tos == ["leads@north-honda.crm.example"]
    message = received_message(handler)
    assert message["Subject"] == "ADF lead: North Honda"
    assert message["To"] == "leads@north-honda.crm.example"
    assert message["From"].addresses[0].addr_spec == "leads@gateway.example"
    assert message["Message-ID"] == "<delivery-17@gateway.example>"
    assert message.get_content_type() == "text/plain"
    assert not message.is_multipart()
    text = message.get_content().replace("\r\n", "\n")  # SMTP carries CRLF line ends
    assert text == body.decode("utf-8")
    root = assert_valid_adf(text.encode("utf-8"))
    assert root.findtext("prospect/customer/contact/name") == "José"
    assert '"Civic" <today> & tomorrow \U0001f697' in (root.findtext("prospect/customer/comments") or "")
    assert handler.logins == []


def test_plain_ascii_documents_go_unencoded(inbox: tuple[Inbox, int]) -> None:
    handler, port = inbox
    body = b'<?xml version="1.0" encoding="UTF-8"?>\n<?adf version="1.0"?>\n<adf></adf>\n'

    send_adf_email(f"smtp://127.0.0.1:{port}", "leads@crm.example", "South Ford", body, "k-1", timeout=5)

    message = received_message(handler)
    assert message["Content-Transfer-Encoding"] == "7bit"
    assert b'<?adf version="1.0"?>' in handler.envelopes[0].content
    assert message["Subject"] == "ADF lead: South Ford"


def test_retries_repeat_the_message_id(inbox: tuple[Inbox, int]) -> None:
    handler, port = inbox
    for _ in range(2):
        send_adf_email(
            f"smtp://127.0.0.1:{port}", "leads@crm.example", "North Honda", make_adf(), "lead 17 / crm 3",
            timeout=5,
        )

    ids = [
        email.message_from_bytes(e.content, policy=email.policy.default)["Message-ID"]
        for e in handler.envelopes
    ]
    assert ids[0] == ids[1]
    assert ids[0] == message_id_for("lead 17 / crm 3")
    assert ids[0] != message_id_for("lead 18 / crm 3")


def test_store_name_cannot_inject_headers(inbox: tuple[Inbox, int]) -> None:
    handler, port = inbox

    send_adf_email(
        f"smtp://127.0.0.1:{port}", "leads@crm.example", "North\r\nBcc: evil@example.com\x00 Honda",
        make_adf(), "k-2", timeout=5,
    )

    message = received_message(handler)
    assert message["Bcc"] is None
    assert message["Subject"] == "ADF lead: North Bcc: evil@example.com Honda"
    assert handler.envelopes[0].rcpt_tos == ["leads@crm.example"]


def test_login_from_the_url(inbox: tuple[Inbox, int]) -> None:
    handler, port = inbox

    send_adf_email(
        f"smtp://gateway%40dealer.example:p%40ss%20word@127.0.0.1:{port}", "leads@crm.example",
        "North Honda", make_adf(), "k-3", timeout=5,
    )

    assert handler.logins == [(b"gateway@dealer.example", b"p@ss word")]
    assert handler.envelopes[0].mail_from == "gateway@dealer.example"


def test_wrong_password_is_not_retryable(inbox: tuple[Inbox, int]) -> None:
    handler, port = inbox
    with pytest.raises(DeliveryError) as caught:
        send_adf_email(
            f"smtp://user:wrong@127.0.0.1:{port}", "leads@crm.example", "North Honda", make_adf(), "k",
            timeout=5,
        )

    assert not caught.value.retryable
    assert caught.value.status == 535
    assert handler.envelopes == []


def test_unknown_mailbox_is_not_retryable_and_full_mailbox_is(inbox: tuple[Inbox, int]) -> None:
    handler, port = inbox
    url = f"smtp://127.0.0.1:{port}"

    with pytest.raises(DeliveryError) as refused:
        send_adf_email(url, "nobody@crm.example", "North Honda", make_adf(), "k", timeout=5)
    with pytest.raises(DeliveryError) as full:
        send_adf_email(url, "full@crm.example", "North Honda", make_adf(), "k", timeout=5)

    assert (refused.value.retryable, refused.value.status) == (False, 550)
    assert "no such mailbox" in str(refused.value)
    assert (full.value.retryable, full.value.status) == (True, 452)
    assert handler.envelopes == []


def test_starttls_on_a_server_without_it_is_not_retryable(inbox: tuple[Inbox, int]) -> None:
    handler, port = inbox
    with pytest.raises(DeliveryError) as caught:
        send_adf_email(
            f"smtp+starttls://127.0.0.1:{port}", "leads@crm.example", "North Honda", make_adf(), "k",
            timeout=5,
        )

    assert not caught.value.retryable
    assert handler.envelopes == []


def test_refused_smtp_connection_is_retryable() -> None:
    with pytest.raises(DeliveryError) as caught:
        send_adf_email(
            f"smtp://127.0.0.1:{free_port()}", "leads@crm.example", "North Honda", make_adf(), "k",
            timeout=2,
        )

    assert caught.value.retryable


def test_silent_smtp_server_times_out_as_retryable() -> None:
    # Accepts the connection but never sends its greeting.
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        port = listener.getsockname()[1]
        with pytest.raises(DeliveryError) as caught:
            send_adf_email(
                f"smtp://127.0.0.1:{port}", "leads@crm.example", "North Honda", make_adf(), "k",
                timeout=0.3,
            )

    assert caught.value.retryable
    assert "timed out" in str(caught.value)


@pytest.mark.parametrize(
    ("url", "to"),
    [
        ("http://127.0.0.1:25", "leads@crm.example"),
        ("smtp://", "leads@crm.example"),
        ("smtp://127.0.0.1:notaport", "leads@crm.example"),
        ("smtp://127.0.0.1:2525", ""),
        ("smtp://127.0.0.1:2525", "leads@crm.example\r\nBcc: x@y"),
    ],
)
def test_bad_configuration_is_not_retryable(url: str, to: str) -> None:
    with pytest.raises(DeliveryError) as caught:
        send_adf_email(url, to, "North Honda", b"<adf/>", "k", timeout=1)

    assert not caught.value.retryable


def test_parse_smtp_url_defaults() -> None:
    assert parse_smtp_url("smtp://mail.example").port == 25
    assert parse_smtp_url("smtps://mail.example").port == 465
    target = parse_smtp_url("smtp+starttls://u:p@mail.example?from=a@b.example")
    assert (target.port, target.username, target.password, target.sender) == (587, "u", "p", "a@b.example")
