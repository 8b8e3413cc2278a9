"""Outbound texts: written first, sent by the worker through the one send guard, never twice.

`queue_text` writes a pending Message (unique `origin`, so a retried cadence step or webhook cannot add
it twice) and enqueues the send after commit. `send_message` claims the row with a conditional update,
asks the guard (opt-out, textable, quiet hours, caps, length), calls the provider outside any transaction
and records the answer. A worker that dies between the claim and the answer leaves the row `sending`;
the sweep marks it `unknown` and puts it in front of a person instead of sending it again.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from datetime import datetime, timedelta

from flask import Flask
from sqlalchemy import func, or_, select, update
from sqlalchemy.orm import Session

from gateway import compliance, events, runtime
from gateway.database import insert_ignoring_conflict, required
from gateway.jobs import enqueue_after_commit, register_sweeper
from gateway.leads import ensure_task, follow_up_due, record_event
from gateway.models import (
    Agent,
    Call,
    Contact,
    Direction,
    Lead,
    Message,
    MessageStatus,
    Store,
    TaskKind,
)
from gateway.phones import mask
from gateway.provider import ERROR_OPTED_OUT, NOT_TEXTABLE_CODES, ProviderError
from gateway.sms_models import MessageStatusCallback

log = logging.getLogger(__name__)

SEND_JOB = "gateway.messaging.send_messages_job"
SEND_BATCH = 50
MAX_ATTEMPTS = 5
SENT_STATUSES = (
    MessageStatus.QUEUED.value,
    MessageStatus.SENT.value,
    MessageStatus.DELIVERED.value,
    MessageStatus.SANDBOX.value,
    MessageStatus.SENDING.value,
    MessageStatus.UNKNOWN.value,
)
# Kinds that are not texts to a customer: the quiet-hours and cap rules protect customers.
AGENT_KINDS = frozenset({"alert"})
# The gateway's own answers to the customer's STOP/START/HELP: they go at once, even to a contact who
# has just opted out (the confirmation of that STOP), and never count as automated marketing.
KEYWORD_REPLY_KINDS = frozenset({"keyword", "help"})

# How far along a text is, by the provider's word. Callbacks arrive out of order; a status only ever
# replaces a lower one, so a late "sent" never overwrites "delivered". The provider's own "sending"
# is kept as "queued": our "sending" means a worker has claimed the row and is waiting on the API.
PROVIDER_STATUSES: dict[str, MessageStatus] = {
    "accepted": MessageStatus.QUEUED,
    "scheduled": MessageStatus.QUEUED,
    "queued": MessageStatus.QUEUED,
    "sending": MessageStatus.QUEUED,
    "sent": MessageStatus.SENT,
    "failed": MessageStatus.FAILED,
    "undelivered": MessageStatus.UNDELIVERED,
    "canceled": MessageStatus.FAILED,
    "delivered": MessageStatus.DELIVERED,
    "read": MessageStatus.DELIVERED,
}
STATUS_RANK: dict[str, int] = {
    MessageStatus.PENDING.value: 0,
    MessageStatus.SENDING.value: 0,
    MessageStatus.UNKNOWN.value: 0,
    MessageStatus.QUEUED.value: 1,
    MessageStatus.SENT.value: 2,
    MessageStatus.FAILED.value: 3,
    MessageStatus.UNDELIVERED.value: 3,
    MessageStatus.DELIVERED.value: 4,
}


def init_app(app: Flask) -> None:
    register_sweeper("due-messages", enqueue_due_messages)
    register_sweeper("stuck-sends", mark_stuck_sends)


def queue_text(
    session: Session,
    *,
    to: str,
    from_: str,
    body: str,
    kind: str,
    now: datetime,
    automated: bool = False,
    lead: Lead | None = None,
    contact: Contact | None = None,
    agent: Agent | None = None,
    store_id: int | None = None,
    origin: str | None = None,
    media_urls: Sequence[str] = (),
    send_after: datetime | None = None,
    enqueue: bool = True,
) -> Message:
    """Write a text to send. With `origin`, a second call for the same origin returns the first text.

    enqueue=False: the caller sends it itself after the commit (a batch of cadence steps does, without
    one job per text); the due-messages sweep remains the backstop.
    """
    values = {
        "lead_id": lead.id if lead else None,
        "contact_id": contact.id if contact else (lead.contact_id if lead else None),
        "agent_id": agent.id if agent else None,
        "store_id": store_id if store_id is not None else (lead.store_id if lead else None),
        "direction": Direction.OUTBOUND.value,
        "kind": kind,
        "automated": automated,
        "from_number": from_,
        "to_number": to,
        "body": body,
        "segments": compliance.count_segments(body).segments,
        "media_urls": list(media_urls),
        "status": MessageStatus.PENDING.value,
        "send_after": send_after,
        "origin": origin,
        "created_at": now,
        "updated_at": now,
    }
    if origin is not None:
        inserted = insert_ignoring_conflict(session, Message, values, ["origin"])
        message = required(session.scalar(select(Message).where(Message.origin == origin)), origin)
        if not inserted:
            return message
    else:
        message = Message(**values)
        session.add(message)
        session.flush()
    if enqueue and (send_after is None or send_after <= now):
        enqueue_after_commit(session, SEND_JOB, [message.id])
    return message


def check(session: Session, message: Message, now: datetime) -> compliance.GuardDecision:
    """The one send guard, fed from the database."""
    contact = session.get(Contact, message.contact_id) if message.contact_id else None
    if contact is None and message.kind not in AGENT_KINDS:
        contact = session.scalar(select(Contact).where(Contact.phone == message.to_number))
    store = session.get(Store, message.store_id) if message.store_id else None
    zone = store.timezone if store else "America/New_York"
    if message.kind in AGENT_KINDS:
        # Alerts go to our own agents, who asked for them: only the provider's limits apply.
        return compliance.check_outbound(
            compliance.OutboundCheck(
                to_number=message.to_number,
                body=message.body,
                media_count=len(message.media_urls or []),
                now=now,
                fallback_zone=zone,
                opted_out=False,
                textable=True,
                automated=False,
                customer_contacted_at=now,
            )
        )
    decision = _check_customer_text(session, message, contact, zone, now)
    paused = contact is not None and contact.automation_paused and message.automated
    if paused and (decision.allowed or decision.deferred):
        return compliance.GuardDecision(
                False,
                "automation_paused",
                "The customer asked in their own words not to be texted; automated texts to them are "
                "paused until a person reviews the conversation.",
                None,
                decision.segments,
            )
    return decision


def _check_customer_text(
    session: Session, message: Message, contact: Contact | None, zone: str, now: datetime
) -> compliance.GuardDecision:
    recent: list[datetime] = []
    if message.automated:
        recent = [
            at
            for at in session.scalars(
                select(Message.sent_at).where(
                    Message.to_number == message.to_number,
                    Message.automated.is_(True),
                    Message.direction == Direction.OUTBOUND.value,
                    Message.sent_at >= now - compliance.CAP_PERIOD,
                    Message.id != message.id,
                )
            )
            if at is not None
        ]
    return compliance.check_outbound(
        compliance.OutboundCheck(
            to_number=message.to_number,
            body=message.body,
            media_count=len(message.media_urls or []),
            now=now,
            fallback_zone=zone,
            opted_out=bool(contact and contact.opted_out),
            textable=bool(contact is None or contact.textable),
            automated=message.automated,
            automated_sent_last_24h=recent,
            customer_contacted_at=_last_customer_contact(session, contact),
            is_keyword_reply=message.kind in KEYWORD_REPLY_KINDS,
            opted_out_at=contact.opted_out_at if contact else None,
        )
    )


def _last_customer_contact(session: Session, contact: Contact | None) -> datetime | None:
    if contact is None or contact.phone is None:
        return None
    texted = session.scalar(
        select(func.max(Message.created_at)).where(
            Message.contact_id == contact.id, Message.direction == Direction.INBOUND.value
        )
    )
    called = session.scalar(
        select(func.max(Call.started_at)).where(
            Call.from_number == contact.phone, Call.direction == Direction.INBOUND.value
        )
    )
    moments = [m for m in (texted, called) if m is not None]
    return max(moments) if moments else None


def send_messages_job(message_ids: list[int]) -> None:
    for message_id in message_ids:
        send_message(message_id)


def send_message(message_id: int) -> str:
    """Claim, check, send, record. Returns the message's status afterwards."""
    current = runtime.current()
    now = current.clock.now()
    with current.database.session() as session:
        claimed = session.execute(
            update(Message)
            .where(
                Message.id == message_id,
                Message.status == MessageStatus.PENDING.value,
                or_(Message.send_after.is_(None), Message.send_after <= now),
            )
            .values(status=MessageStatus.SENDING.value, claimed_at=now, attempts=Message.attempts + 1)
        )
        if not getattr(claimed, "rowcount", 0):
            return "skipped"
        message = required(session.get(Message, message_id), f"message {message_id}")
        decision = check(session, message, now)
        if not decision.allowed:
            message.refusal_code = decision.code
            message.error_message = decision.reason
            message.claimed_at = None
            if decision.send_after is not None:
                message.status = MessageStatus.PENDING.value
                message.send_after = decision.send_after
            else:
                message.status = MessageStatus.REFUSED.value
            log.info("text %s to %s not sent: %s", message.id, mask(message.to_number), decision.code)
            return message.status
        message.segments = decision.segments.segments
        to, from_, body, media = message.to_number, message.from_number, message.body, message.media_urls
    callback = f"{current.settings.public_base_url}/webhooks/sms/status"
    try:
        sent = current.provider.send_sms(
            to=to, from_=from_, body=body, media_urls=list(media or []), status_callback=callback
        )
    except ProviderError as error:
        return _record_failure(message_id, error, now)
    with current.database.session() as session:
        message = required(session.get(Message, message_id), f"message {message_id}")
        message.sid = sent.sid
        message.status = sent.status if sent.status in {s.value for s in MessageStatus} else "queued"
        message.sent_at = now
        message.error_code = None
        message.error_message = None
        apply_early_callbacks(session, message, now)
        if message.kind not in AGENT_KINDS:
            events.message_sent.send(session, message=message, now=now)
        return message.status


def _record_failure(message_id: int, error: ProviderError, now: datetime) -> str:
    current = runtime.current()
    with current.database.session() as session:
        message = required(session.get(Message, message_id), f"message {message_id}")
        message.error_code = error.code
        message.error_message = str(error)
        message.claimed_at = None
        if error.retryable and message.attempts < MAX_ATTEMPTS:
            # The provider could not be reached, was down (5xx) or asked us to slow down (429): it did
            # not take the text, so it waits and is tried again.
            message.status = MessageStatus.PENDING.value
            message.send_after = now + timedelta(seconds=15 * 2 ** message.attempts)
        else:
            message.status = MessageStatus.FAILED.value
            apply_error_code(session, message, error.code, now)
        log.warning("text %s to %s failed: %s", message.id, mask(message.to_number), error)
        return message.status


def apply_error_code(session: Session, message: Message, code: int | None, now: datetime) -> None:
    """What a provider error says about the recipient: 21610 opted out, 30006/21614 not textable."""
    if code is None or message.kind in AGENT_KINDS:
        return
    contact = session.get(Contact, message.contact_id) if message.contact_id else None
    if contact is None:
        contact = session.scalar(select(Contact).where(Contact.phone == message.to_number))
    if contact is None:
        return
    if code == ERROR_OPTED_OUT and not contact.opted_out:
        contact.opted_out = True
        contact.opted_out_at = now
        contact.opt_out_source = f"provider-{code}"
        contact.opt_out_number = message.from_number
        events.contact_opted_out.send(session, contact=contact, now=now)
    elif code in NOT_TEXTABLE_CODES and contact.textable:
        contact.textable = False
        contact.not_textable_reason = f"provider error {code}"


def apply_status(
    session: Session, message: Message, provider_status: str, error_code: int | None, now: datetime
) -> bool:
    """A status callback's news, applied only when it moves the text forward. True when it did.

    The update is conditional on the status the row has, so two callbacks racing each other cannot
    step back. An error code is acted on (opt-out, not textable) whether or not the status moved.
    """
    target = PROVIDER_STATUSES.get(provider_status)
    if target is None:
        return False
    rank = STATUS_RANK[target.value]
    lower = [status for status, r in STATUS_RANK.items() if r < rank]
    values: dict[str, object] = {"status": target.value, "updated_at": now}
    if error_code is not None:
        values["error_code"] = error_code
    result = session.execute(
        update(Message).where(Message.id == message.id, Message.status.in_(lower)).values(**values)
    )
    moved = bool(getattr(result, "rowcount", 0))
    session.refresh(message)
    if error_code is not None:
        apply_error_code(session, message, error_code, now)
    return moved


def apply_early_callbacks(session: Session, message: Message, now: datetime) -> None:
    """Status callbacks the provider sent before this text's SID was recorded, applied in rank order."""
    if message.sid is None:
        return
    early = list(
        session.scalars(
            select(MessageStatusCallback).where(
                MessageStatusCallback.sid == message.sid, MessageStatusCallback.applied_at.is_(None)
            )
        )
    )
    for callback in sorted(early, key=lambda c: _rank_of(c.status)):
        apply_status(session, message, callback.status, callback.error_code, now)
        callback.applied_at = now


def _rank_of(provider_status: str) -> int:
    target = PROVIDER_STATUSES.get(provider_status)
    return STATUS_RANK[target.value] if target is not None else -1


def enqueue_due_messages(session: Session, now: datetime) -> None:
    """Pending texts whose time has come (deferred ones, or ones Redis lost) go back to the queue."""
    ids = list(
        session.scalars(
            select(Message.id)
            .where(
                Message.status == MessageStatus.PENDING.value,
                or_(Message.send_after.is_(None), Message.send_after <= now),
                Message.updated_at <= now - timedelta(seconds=2),
            )
            .order_by(Message.id)
            .limit(5000)
        )
    )
    for start in range(0, len(ids), SEND_BATCH):
        enqueue_after_commit(session, SEND_JOB, ids[start : start + SEND_BATCH])
    if ids:
        # Touch them so the next sweep leaves them to the jobs just queued.
        session.execute(update(Message).where(Message.id.in_(ids)).values(updated_at=now))


def mark_stuck_sends(session: Session, now: datetime) -> None:
    """A send claimed long ago with no answer: the worker died mid-send. Never resend blindly."""
    timeout = runtime.current().settings.send_claim_timeout
    stuck = list(
        session.scalars(
            select(Message).where(
                Message.status == MessageStatus.SENDING.value,
                Message.claimed_at <= now - timedelta(seconds=timeout),
            )
        )
    )
    for message in stuck:
        message.status = MessageStatus.UNKNOWN.value
        message.error_message = (
            "The worker stopped before the provider answered; it may or may not have been sent."
        )
        lead = session.get(Lead, message.lead_id) if message.lead_id else None
        if lead is not None and message.kind not in AGENT_KINDS:
            record_event(session, lead, "send-unknown", f"Text {message.id} may not have been sent.", now)
            due = follow_up_due(lead.store, lead.department, now)
            ensure_task(session, lead, TaskKind.REVIEW, lead.owner, due, now)
        log.warning("text %s marked unknown after a stuck send", message.id)
