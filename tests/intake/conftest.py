"""Fixtures for the intake end to end: an outbound SMTP server (the customers' inboxes), a CRM on
loopback, an API key for North Honda, the intake's own SMTP server, and the example lead cadence."""

from __future__ import annotations

import email
import email.policy
from collections.abc import Callable, Iterator
from email.message import EmailMessage
from typing import Any

import pytest
from aiosmtpd.controller import Controller
from sqlalchemy import select

from gateway.database import Database
from gateway.embedded_redis import free_port
from gateway.models import Store
from intake.smtp import IntakeServer
from tests.support.api import ApiClient, make_key
from tests.support.config import BASIC_CONFIG
from tests.support.crm_server import FakeCrm

SECRET = "intake-secret"
STORE_EMAIL = "hello@north-honda.example"
INTAKE_ADDRESS = "leads@north-honda.example"

WEB_CADENCE = """
  - key: web-lead
    steps:
      - {after: 0s, channel: email, subject: "Your request to {store}",
         text: "Hi {first_name},\\n\\nThanks for asking {store}. {agent} will call you in a few minutes."}
      - {after: 5m, channel: call, text: "Call {first_name} about the web lead"}
      - {after: 10m, text: "Hi {first_name}, {agent} from {store}. We tried to reach you; reply with a good time."}
      - {after: 30m, channel: email, subject: "The details you asked for",
         text: "Hi {first_name},\\n\\nHere are the details from {store}."}
"""

# North Honda names a cadence for web leads; South Ford names none (the built-in first text and e-mail).
INTAKE_CONFIG = BASIC_CONFIG.replace(
    "    response_sla: 5m\n",
    "    response_sla: 5m\n"
    f"    email_from: {STORE_EMAIL}\n"
    f"    intake_emails: [{INTAKE_ADDRESS}]\n"
    "    lead_cadences: {Website: web-lead, default: web-lead}\n",
    1,
).replace("cadences:\n", "cadences:\n" + WEB_CADENCE.lstrip("\n"), 1)


class Inbox:
    """aiosmtpd handler: what the gateway e-mailed."""

    def __init__(self) -> None:
        self.envelopes: list[Any] = []

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        self.envelopes.append(envelope)
        return "250 Message accepted"

    def messages(self, to: str | None = None) -> list[EmailMessage]:
        found = []
        for envelope in self.envelopes:
            if to is None or to in envelope.rcpt_tos:
                found.append(email.message_from_bytes(envelope.content, policy=email.policy.default))
        return found  # type: ignore[return-value]


@pytest.fixture
def inbox() -> Iterator[tuple[Inbox, int]]:
    handler = Inbox()
    port = free_port()
    controller = Controller(handler, hostname="127.0.0.1", port=port)
    controller.start()
    try:
        yield handler, port
    finally:
        controller.stop()


@pytest.fixture
def settings(settings: Any, inbox: tuple[Inbox, int]) -> Any:
    _, port = inbox
    return settings.with_changes(smtp_url=f"smtp://127.0.0.1:{port}", extra={"crm_timeout": 2.0})


@pytest.fixture
def mails(inbox: tuple[Inbox, int]) -> Inbox:
    return inbox[0]


@pytest.fixture
def crm(clock: Any) -> Iterator[FakeCrm]:
    server = FakeCrm(secret=SECRET, now=lambda: clock.now().timestamp())
    server.start()
    yield server
    server.stop()


@pytest.fixture
def intake_config(configure: Callable[[str], list[str]], db: Database, crm: FakeCrm) -> None:
    configure(INTAKE_CONFIG)
    with db.session() as session:
        for store in session.scalars(select(Store)):
            store.crm = [
                {"type": "adf-http", "url": crm.url("/adf")},
                {"type": "webhook", "url": crm.url("/hooks"), "secret": SECRET},
            ]


@pytest.fixture
def api(client: Any, db: Database, clock: Any, intake_config: None) -> ApiClient:
    return ApiClient(client, make_key(db, clock.now(), ["north-honda"]))


@pytest.fixture
def intake_server(app: Any, intake_config: None) -> Iterator[IntakeServer]:
    server = IntakeServer(app, "127.0.0.1", free_port())
    server.start()
    try:
        yield server
    finally:
        server.stop()
