"""The core mail sender against a real aiosmtpd server on loopback."""

from __future__ import annotations

import email
import email.policy
from collections.abc import Iterator
from typing import Any

import pytest
from aiosmtpd.controller import Controller

from gateway.embedded_redis import free_port
from gateway.mail import Email, MailError, message_id_for, send_email, send_emails


class Server:
    def __init__(self) -> None:
        self.envelopes: list[Any] = []
        self.sessions: set[int] = set()

    async def handle_RCPT(self, server: Any, session: Any, envelope: Any, address: str, options: Any) -> str:
        if address.startswith("full@"):
            return "452 4.2.2 Mailbox full"
        if address.startswith("nobody@"):
            return "550 5.1.1 No such user"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        self.envelopes.append(envelope)
        self.sessions.add(id(session))
        return "250 OK"


@pytest.fixture
def smtp() -> Iterator[tuple[Server, str]]:
    handler = Server()
    port = free_port()
    controller = Controller(handler, hostname="127.0.0.1", port=port)
    controller.start()
    try:
        yield handler, f"smtp://127.0.0.1:{port}"
    finally:
        controller.stop()


def note(to: str, key: str = "k1", **changes: Any) -> Email:
    values: dict[str, Any] = {
        "sender": "sales@store.example", "to": to, "subject": "Hello\r\nBcc: evil@example.com", "text": "Hi there",
        "key": key, "sender_name": "North Honda", "html": "<p>Hi there</p>",
        "unsubscribe_url": "https://gw.example/unsubscribe/abc",
    }
    values.update(changes)
    return Email(**values)


def test_text_and_html_with_one_click_unsubscribe_and_no_header_injection(smtp: tuple[Server, str]) -> None:
    server, url = smtp
    send_email(url, note("maria@example.com"), timeout=5)
    [envelope] = server.envelopes
    message = email.message_from_bytes(envelope.content, policy=email.policy.default)
    assert message["List-Unsubscribe"] == "<https://gw.example/unsubscribe/abc>"
    assert message["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    assert message["Bcc"] is None
    assert message["Subject"] == "Hello Bcc: evil@example.com"
    assert message["Message-ID"] == message_id_for("k1", "sales@store.example")
    assert message.get_body(("plain",)).get_content().strip() == "Hi there"
    assert message.get_body(("html",)).get_content().strip() == "<p>Hi there</p>"


def test_many_in_one_conversation_each_with_its_own_answer(smtp: tuple[Server, str]) -> None:
    server, url = smtp
    answers = send_emails(
        url,
        [note("a@example.com", "1"), note("full@example.com", "2"), note("nobody@example.com", "3"),
         note("not an address", "4"), note("b@example.com", "5")],
        timeout=5,
    )
    assert answers[0] is None
    assert answers[4] is None
    assert isinstance(answers[1], MailError)
    assert answers[1].retryable
    assert isinstance(answers[2], MailError)
    assert not answers[2].retryable
    assert isinstance(answers[3], MailError)
    assert not answers[3].retryable
    assert len(server.envelopes) == 2
    assert len(server.sessions) == 1


def test_a_server_that_is_down_is_retryable_for_every_message() -> None:
    answers = send_emails(f"smtp://127.0.0.1:{free_port()}", [note("a@example.com"), note("b@example.com")], 2)
    assert all(isinstance(a, MailError) and a.retryable for a in answers)


def test_a_bad_smtp_url_is_not_retryable() -> None:
    with pytest.raises(MailError) as caught:
        send_email("http://mail.example", note("a@example.com"), 2)
    assert not caught.value.retryable
