"""Drills against real servers on loopback: a CRM that is down for most of a day, an SMTP server, a
webhook receiver that checks signatures. The clock is moved step by step; a real RQ worker runs each step.
"""

from __future__ import annotations

import email
import email.policy
import json
from collections import defaultdict
from datetime import timedelta
from io import BytesIO
from typing import Any

import pytest
from aiosmtpd.controller import Controller
from lxml import etree
from sqlalchemy import select

from gateway.crm.formats import ADF_DTD_PATH, IDEMPOTENCY_HEADER
from gateway.crm.models import CrmDelivery
from gateway.embedded_redis import free_port
from gateway.leads import set_status
from gateway.models import Lead, LeadStatus, Store
from gateway.simulator import play_call
from tests.support.config import SEQUENTIAL, SIMULTANEOUS
from tests.support.crm_server import FakeCrm

SECRET = "drill-secret"
TIMEOUT = 0.2
DTD = etree.DTD(str(ADF_DTD_PATH))


@pytest.fixture
def settings(settings, smtp):
    _, port = smtp
    return settings.with_changes(
        smtp_url=f"smtp://127.0.0.1:{port}?from=gateway@dealer.example", extra={"crm_timeout": TIMEOUT}
    )


class Inbox:
    def __init__(self) -> None:
        self.envelopes: list[Any] = []

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        self.envelopes.append(envelope)
        return "250 Message accepted"


@pytest.fixture
def smtp():
    inbox = Inbox()
    port = free_port()
    controller = Controller(inbox, hostname="127.0.0.1", port=port)
    controller.start()
    try:
        yield inbox, port
    finally:
        controller.stop()


@pytest.fixture
def crm_server(clock):
    server = FakeCrm(secret=SECRET, now=lambda: clock.now().timestamp())
    server.slow_seconds = TIMEOUT * 3
    server.start()
    yield server
    server.stop()


def set_crm(db, destinations):
    with db.session() as session:
        store = session.scalar(select(Store).where(Store.key == "north-honda"))
        store.crm = destinations


def rows(db):
    with db.session() as session:
        return list(session.scalars(select(CrmDelivery).order_by(CrmDelivery.id)))


def valid_adf(body: bytes) -> etree._Element:
    root = etree.parse(BytesIO(body), etree.XMLParser(resolve_entities=False, no_network=True)).getroot()
    assert DTD.validate(root), DTD.error_log.filter_from_errors()
    return root


def test_a_crm_down_for_most_of_a_day_gets_everything_once_and_in_order(
    configured, db, poster, work, clock, crm_server, settings
):
    set_crm(
        db,
        [
            {"type": "adf-http", "url": crm_server.url("/adf")},
            {"type": "webhook", "url": crm_server.url("/hooks"), "secret": SECRET},
        ],
    )
    start = clock.now()
    step = timedelta(minutes=30)
    recovery = start + timedelta(hours=22)
    calls = {
        0: ("+12025550181", SIMULTANEOUS, "no-answer"),
        4: ("+12025550182", SEQUENTIAL, "hangup"),
        18: ("+12025550181", SEQUENTIAL, "no-answer"),  # joins the open lead: a "resend" prospect
        30: ("+12025550183", SIMULTANEOUS, "no-answer"),  # 01:00 in New York: after hours
    }
    errors_seen: set[str] = set()
    crm_server.mode = "error"
    for n in range(int((recovery - start) / step)):
        elapsed = clock.now() - start
        if elapsed == timedelta(hours=8):
            crm_server.mode = "slow"
        if elapsed == timedelta(hours=14):
            crm_server.stop()  # connections refused from now on
        if n in calls:
            caller, to, outcome = calls[n]
            list(play_call(poster, to=to, caller=caller, outcome=outcome))
        if n == 34:
            with db.session() as session:
                lead = session.scalar(select(Lead).order_by(Lead.id))
                set_status(session, lead, LeadStatus.APPOINTMENT_SET, clock.now())
        work()
        errors_seen |= {r.last_error.split(": ", 1)[1][:8] for r in rows(db) if r.last_error}
        clock.advance(step)

    assert not crm_server.accepted
    assert {r.status for r in rows(db)} == {"pending"}
    assert {"HTTP 500", "timed ou", "connecti"} <= errors_seen

    clock.set(recovery)
    # The short timeout kept the slow hours quick. Back up, the CRM gets a real one: a send that timed out
    # while a busy machine made the CRM take 0.2 s would reach it twice (it drops the copy by its key).
    settings.extra["crm_timeout"] = 5.0
    crm_server.mode = "ok"
    crm_server.start()  # the same port again
    for _ in range(40):
        work()
        if all(r.status == "delivered" for r in rows(db)):
            break
        clock.advance(timedelta(minutes=5))

    delivered = rows(db)
    assert {r.status for r in delivered} == {"delivered"}
    assert all(r.delivered_at >= recovery for r in delivered)
    # Every delivery arrived, none twice.
    keys = crm_server.accepted_keys()
    assert len(keys) == len(set(keys))
    assert sorted(keys) == sorted(r.idempotency_key for r in delivered)
    assert not crm_server.duplicates
    assert crm_server.bad_signatures == 0
    # In order per lead and destination.
    by_key = {r.idempotency_key: r for r in delivered}
    streams: dict[tuple[str, int | None], list[int]] = defaultdict(list)
    for request in crm_server.accepted:
        row = by_key[request.key]
        streams[(request.path, row.lead_id)].append(row.id)
    assert len({lead for _, lead in streams}) == 3
    for ids in streams.values():
        assert ids == sorted(ids)
    # The ADF prospects: one "new" per lead, the second call of the first lead a "resend".
    prospects = [valid_adf(r.body) for r in crm_server.accepted if r.path == "/adf"]
    statuses = [p.find("prospect").get("status") for p in prospects]
    assert statuses.count("new") == 3
    assert statuses.count("resend") == 1
    services = {p.findtext("prospect/provider/service") for p in prospects}
    assert {"missed call", "abandoned call", "after-hours call"} <= services
    updates = [json.loads(r.body) for r in crm_server.accepted if r.path == "/hooks"]
    assert any(
        u["type"] == "lead.updated" and u["data"].get("changes", {}).get("status", {}).get("to") == "appointment_set"
        for u in updates
    )


def test_adf_by_email_reaches_a_real_smtp_server(configured, db, poster, work, smtp):
    inbox, _ = smtp
    set_crm(db, [{"type": "adf-email", "to": "leads@north-honda.crm.example"}])
    list(play_call(poster, to=SIMULTANEOUS, caller="+12025550184", outcome="no-answer"))
    work()
    (row,) = rows(db)
    assert row.status == "delivered", row.last_error
    (envelope,) = inbox.envelopes
    assert envelope.rcpt_tos == ["leads@north-honda.crm.example"]
    assert envelope.mail_from == "gateway@dealer.example"
    message = email.message_from_bytes(envelope.content, policy=email.policy.default)
    assert "North Honda" in message["Subject"]
    assert message.get_content_type() == "text/plain"
    assert row.idempotency_key in message["Message-ID"]
    root = valid_adf(message.get_content().encode("utf-8"))
    assert root.findtext("prospect/vendor/vendorname") == "North Honda"
    assert root.findtext("prospect/provider/service") == "missed call"


def test_a_receiver_verifies_the_webhook_signature(configured, db, poster, work, crm_server):
    set_crm(db, [{"type": "webhook", "url": crm_server.url("/hooks"), "secret": SECRET}])
    list(play_call(poster, to=SIMULTANEOUS, caller="+12025550185", outcome="no-answer"))
    work()
    assert crm_server.accepted
    assert crm_server.bad_signatures == 0
    for request in crm_server.accepted:
        event = json.loads(request.body)
        assert request.headers[IDEMPOTENCY_HEADER] == event["id"]


def test_a_receiver_with_another_secret_refuses_and_the_delivery_is_a_dead_letter(
    configured, db, poster, work, crm_server
):
    set_crm(db, [{"type": "webhook", "url": crm_server.url("/hooks"), "secret": "not-" + SECRET}])
    list(play_call(poster, to=SIMULTANEOUS, caller="+12025550186", outcome="no-answer"))
    work()
    assert not crm_server.accepted
    assert crm_server.bad_signatures >= 1
    first = rows(db)[0]
    assert first.status == "dead"
    assert "HTTP 401" in first.last_error
