"""Outbound texts: written first, sent by the worker through the one send guard, never twice.

`queue_text` writes a pending Message (unique `origin`, so a retried cadence step or webhook cannot add
it twice) and enqueues the send after commit. `send_messages` claims the rows with a conditional update,
asks the guard (opt-out, textable, quiet hours, caps, length) with its inputs loaded per batch, calls the
provider outside any transaction, a few texts at once, and records the answers (`send_message` is the
same for one text). A worker that dies between the claim and the answer leaves the row `sending`;
the sweep marks it `unknown`, never sending it again blindly: reconciliation looks it up in the
provider's log (gateway/reconcile/doubt.py) and records it as taken, sends it again or fails it for a
person, through `settle_taken`, `send_again` and `give_up` here.
Queueing, the guard's inputs, claiming, recording and settling doubt are one module (about 740 lines)
because the exactly-once promise lives in how they hand rows to each other.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Required, TypedDict, Unpack

from flask import Flask
from sqlalchemy import ColumnElement, and_, case, func, or_, select, tuple_, update
from sqlalchemy.orm import Session, aliased

from gateway import events, runtime
from gateway.database import insert_many_ignoring_conflict, required
from gateway.jobs import Lane, enqueue_after_commit, register_sweeper, take_waiting, takes_waiting
from gateway.leads import ensure_task, follow_up_due, record_event
from gateway.messaging.guard import CAP_PERIOD, GuardDecision, OutboundCheck, check_outbound, count_segments
from gateway.messaging.models import MessageStatusCallback
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
    TrackedNumber,
)
from gateway.phones import mask
from gateway.provider import ERROR_OPTED_OUT, NOT_TEXTABLE_CODES, ProviderError, SentMessage

log = logging.getLogger(__name__)

# Provider calls in flight at once within one batch of texts, per process. Twilio takes about 100 requests
# at once from an account by default and answers more with a 429, which is retried: the default four
# worker processes stay well under it.
PROVIDER_CONCURRENCY = 16
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
AGENT_KINDS = frozenset({"alert", "sign_in_code"})
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
_STATUS_VALUES = frozenset(status.value for status in MessageStatus)
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


def sender_for(session: Session, lead: Lead) -> str | None:
    """The number texts about a lead go out from, so replies come back to the gateway: the tracked number
    the customer reached, else the store's number of that department, else any of the store's numbers."""
    if lead.tracked_number:
        return lead.tracked_number
    # Two columns, not the numbers with their stores: a form's first text and its alert both ask.
    numbers = session.execute(
        select(TrackedNumber.number, TrackedNumber.department)
        .where(TrackedNumber.store_id == lead.store_id, TrackedNumber.active.is_(True))
        .order_by(TrackedNumber.id)
    ).all()
    same = [number for number, department in numbers if department == lead.department]
    chosen = same or [number for number, _ in numbers]
    return chosen[0] if chosen else None


class Text(TypedDict, total=False):
    """What a text to send is made of; `to`, `from_`, `body` and `kind` are required."""

    to: Required[str]
    from_: Required[str]
    body: Required[str]
    kind: Required[str]
    automated: bool
    answers_contact: bool
    lead: Lead | None
    contact: Contact | None
    agent: Agent | None
    store_id: int | None
    origin: str | None
    media_urls: Sequence[str]
    send_after: datetime | None


def queue_text(session: Session, *, now: datetime, enqueue: bool = True, **text: Unpack[Text]) -> Message:
    """Write a text to send. With `origin`, a second call for the same origin returns the first text.

    enqueue=False: the caller sends it itself after the commit (a batch of cadence steps does, without
    one job per text); the due-messages sweep remains the backstop.
    """
    values = text_values(now=now, **text)
    if values["origin"] is not None:
        return queue_texts(session, [values], now, enqueue=enqueue)[values["origin"]]
    message = Message(**values)
    session.add(message)
    session.flush()
    send_after = values["send_after"]
    if enqueue and (send_after is None or send_after <= now):
        enqueue_after_commit(session, send_messages_job, [message.id], lane=Lane.URGENT, batch=True)
    return message


def text_values(*, now: datetime, **text: Unpack[Text]) -> dict[str, Any]:
    """The row of a text to send, for `queue_text` or, with an origin, `queue_texts`."""
    lead, contact, agent = text.get("lead"), text.get("contact"), text.get("agent")
    store_id = text.get("store_id")
    body = text["body"]
    customer = contact.id if contact else (lead.contact_id if lead else None)
    return {
        "lead_id": lead.id if lead else None,
        # A text to one of our agents (an alert, a sign-in code) went to staff, not to the customer.
        "contact_id": None if text["kind"] in AGENT_KINDS else customer,
        "agent_id": agent.id if agent else None,
        "store_id": store_id if store_id is not None else (lead.store_id if lead else None),
        "direction": Direction.OUTBOUND.value,
        "kind": text["kind"],
        "automated": text.get("automated", False),
        "answers_contact": text.get("answers_contact", False),
        "from_number": text["from_"],
        "to_number": text["to"],
        "body": body,
        "segments": count_segments(body).segments,
        "media_urls": list(text.get("media_urls", ())),
        "status": MessageStatus.PENDING.value,
        "send_after": text.get("send_after"),
        "origin": text.get("origin"),
        "created_at": now,
        "updated_at": now,
    }


def queue_texts(
    session: Session, rows: Sequence[dict[str, Any]], now: datetime, *, enqueue: bool = True
) -> dict[str, Message]:
    """Write many texts, each with its unique origin, in one INSERT; a text whose origin exists already is
    not written again. Every origin's text, the first one written, by origin."""
    messages = {m.origin: m for m in insert_many_ignoring_conflict(session, Message, rows, "origin")}
    inserted = set(messages)
    origins = [row["origin"] for row in rows]
    written_before = [origin for origin in origins if origin not in inserted]
    if written_before:
        messages.update(
            (m.origin, m) for m in session.scalars(select(Message).where(Message.origin.in_(written_before)))
        )
    for origin in origins:
        required(messages.get(origin), origin)
    if enqueue:
        due = [
            messages[row["origin"]].id
            for row in rows
            if row["origin"] in inserted and (row["send_after"] is None or row["send_after"] <= now)
        ]
        if due:  # MERGED_BATCH a job (gateway.jobs.merged)
            enqueue_after_commit(session, send_messages_job, due, lane=Lane.URGENT, batch=True)
    return {origin: message for origin, message in messages.items() if origin is not None}


def check(session: Session, message: Message, now: datetime) -> GuardDecision:
    """The one send guard, fed from the database."""
    return check_many(session, [message], now)[message.id]


@dataclass
class _GuardInputs:
    """What the guard needs to know about a batch of texts, each kind loaded with one query."""

    contacts: dict[int, Contact] = field(default_factory=dict)
    contacts_by_phone: dict[str, Contact] = field(default_factory=dict)
    zones: dict[int, str] = field(default_factory=dict)
    recent: dict[str, list[datetime]] = field(default_factory=dict)
    texted_in: dict[int, datetime] = field(default_factory=dict)
    called_in: dict[str, datetime] = field(default_factory=dict)
    # A lead's last contact from the customer: a call or a text, and also a form or an ADF request.
    reached_out: dict[int, datetime] = field(default_factory=dict)

    def contact_of(self, message: Message) -> Contact | None:
        contact = self.contacts.get(message.contact_id) if message.contact_id else None
        if contact is None and message.kind not in AGENT_KINDS:
            contact = self.contacts_by_phone.get(message.to_number)
        return contact

    def last_customer_contact(self, contact: Contact | None) -> datetime | None:
        if contact is None or contact.phone is None:
            return None
        found = (self.texted_in.get(contact.id), self.called_in.get(contact.phone), self.reached_out.get(contact.id))
        moments = [m for m in found if m is not None]
        return max(moments) if moments else None


def _guard_inputs(session: Session, messages: Sequence[Message], now: datetime) -> _GuardInputs:
    inputs = _GuardInputs()
    customer = [m for m in messages if m.kind not in AGENT_KINDS]
    contact_ids = {m.contact_id for m in messages if m.contact_id is not None}
    if contact_ids:
        inputs.contacts = {c.id: c for c in session.scalars(select(Contact).where(Contact.id.in_(contact_ids)))}
    orphans = {m.to_number for m in customer if inputs.contacts.get(m.contact_id or 0) is None}
    if orphans:
        inputs.contacts_by_phone = {
            c.phone: c for c in session.scalars(select(Contact).where(Contact.phone.in_(orphans))) if c.phone
        }
    store_ids = {m.store_id for m in messages if m.store_id is not None}
    if store_ids:
        rows = session.execute(select(Store.id, Store.timezone).where(Store.id.in_(store_ids)))
        inputs.zones = {store_id: zone for store_id, zone in rows}
    automated = {m.to_number for m in customer if m.automated}
    if automated:
        for number, sent_at in session.execute(
            select(Message.to_number, Message.sent_at).where(
                Message.to_number.in_(automated),
                Message.automated.is_(True),
                Message.direction == Direction.OUTBOUND.value,
                Message.sent_at >= now - CAP_PERIOD,
                Message.id.not_in([m.id for m in messages]),
            )
        ):
            if sent_at is not None:
                inputs.recent.setdefault(number, []).append(sent_at)
    contacts = [inputs.contact_of(m) for m in customer]
    known = {c.id for c in contacts if c is not None}
    phones = {c.phone for c in contacts if c is not None and c.phone}
    if known:
        inputs.texted_in = _latest(session, Message.contact_id, Message.created_at, known, Message.direction)
        reached = session.execute(
            select(Lead.contact_id, func.max(Lead.last_contact_at))
            .where(Lead.contact_id.in_(known), Lead.last_contact_at.is_not(None))
            .group_by(Lead.contact_id)
        )
        inputs.reached_out = {contact_id: latest for contact_id, latest in reached if latest is not None}
    if phones:
        inputs.called_in = _latest(session, Call.from_number, Call.started_at, phones, Call.direction)
    return inputs


def _latest(session: Session, key: Any, at: Any, keys: set[Any], direction: Any) -> dict[Any, datetime]:
    """The latest inbound `at` of each of `keys` (a customer's last text, their last call)."""
    rows = session.execute(
        select(key, func.max(at)).where(key.in_(keys), direction == Direction.INBOUND.value).group_by(key)
    )
    return {value: latest for value, latest in rows if value is not None and latest is not None}


def check_many(session: Session, messages: Sequence[Message], now: datetime) -> dict[int, GuardDecision]:
    """The send guard for many texts at once: its inputs loaded per batch, its rules applied per text."""
    inputs = _guard_inputs(session, messages, now)
    return {message.id: _decide(message, inputs, now) for message in messages}


def _decide(message: Message, inputs: _GuardInputs, now: datetime) -> GuardDecision:
    zone = inputs.zones.get(message.store_id or 0, "America/New_York")
    if message.kind in AGENT_KINDS:
        # Alerts go to our own agents, who asked for them: only the provider's limits apply.
        return check_outbound(
            OutboundCheck(
                to_number=message.to_number,
                body=message.body,
                media_count=len(message.media_urls or []),
                now=now,
                fallback_zone=zone,
                opted_out=False,
                textable=True,
                automated=False,
                # Quiet hours protect customers: an alert answers the contact that caused it, at any hour.
                customer_contacted_at=now,
                answers_contact=True,
            )
        )
    contact = inputs.contact_of(message)
    decision = check_outbound(
        OutboundCheck(
            to_number=message.to_number,
            body=message.body,
            media_count=len(message.media_urls or []),
            now=now,
            fallback_zone=zone,
            opted_out=bool(contact and contact.opted_out),
            textable=bool(contact is None or contact.textable),
            automated=message.automated,
            automated_sent_last_24h=inputs.recent.get(message.to_number, []) if message.automated else [],
            customer_contacted_at=inputs.last_customer_contact(contact),
            answers_contact=message.answers_contact,
            is_keyword_reply=message.kind in KEYWORD_REPLY_KINDS,
            opted_out_at=contact.opted_out_at if contact else None,
        )
    )
    paused = contact is not None and contact.automation_paused and message.automated
    if paused and (decision.allowed or decision.deferred):
        return GuardDecision(
            False,
            "automation_paused",
            "The customer asked in their own words not to be texted; automated texts to them are "
            "paused until a person reviews the conversation.",
            None,
            decision.segments,
        )
    return decision


@takes_waiting
def send_messages_job(message_ids: list[int]) -> None:
    """A job's texts, and texts of jobs queued behind it, up to what goes to the provider at once: most of
    a send is the provider's answer on its way back (a few hundred milliseconds from Twilio's API), and one
    job after another would make the hundredth caller of a busy minute wait for the ninety-nine before."""
    waiting = take_waiting(runtime.current().redis, send_messages_job, message_ids,
                           PROVIDER_CONCURRENCY - len(message_ids))
    send_messages(message_ids, along=waiting)


def send_message(message_id: int) -> str:
    """Claim, check, send, record one text. Returns the message's status afterwards."""
    return send_messages([message_id])[message_id]


@dataclass(frozen=True)
class _Outgoing:
    id: int
    to: str
    from_: str
    body: str
    media: list[str]


def send_messages(message_ids: Sequence[int], *, along: Sequence[int] = ()) -> dict[int, str]:
    """Claim, check, send and record many texts: each id's status afterwards ("skipped": not claimed).

    One transaction claims them all (a conditional UPDATE ... RETURNING: of two workers holding the same
    ids, each text goes to one) and runs the guard on inputs loaded per batch; the provider is called for
    the allowed ones a few at once, outside any transaction; one transaction records every answer. A
    customer's second text in the batch waits for the first: it is released and sent after it.
    `along`: texts of other jobs, taken too (after these, oldest first) unless one of these or a text on
    its way to the provider goes to the same recipient: such a text is left to its own job, so that a
    customer's texts keep their order. Texts to our own agents (alerts, sign-in codes) keep their order per
    lead only: an agent's alerts about ten contacts of a busy minute go at once.
    """
    current = runtime.current()
    now = current.clock.now()
    outcome: dict[int, str] = {message_id: "skipped" for message_id in message_ids}
    later: list[int] = []
    outgoing: list[_Outgoing] = []
    claimable: ColumnElement[bool] = Message.id.in_(list(message_ids))
    if along:
        own, in_flight = aliased(Message), aliased(Message)
        in_order = tuple_(*_in_order(Message))
        claimable = or_(claimable, and_(
            Message.id.in_(list(along)),
            in_order.not_in(select(*_in_order(own)).where(own.id.in_(list(message_ids)))),
            in_order.not_in(select(*_in_order(in_flight)).where(in_flight.status == MessageStatus.SENDING.value)),
        ))
    with current.database.session() as session:
        # The claimed rows come back with the claim, as the update left them.
        loaded = {
            m.id: m
            for m in session.scalars(
                update(Message)
                .where(
                    claimable,
                    Message.status == MessageStatus.PENDING.value,
                    or_(Message.send_after.is_(None), Message.send_after <= now),
                )
                .values(status=MessageStatus.SENDING.value, claimed_at=now, attempts=Message.attempts + 1)
                .returning(Message)
                .execution_options(synchronize_session=False, populate_existing=True)
            )
        }
        if not loaded:
            return outcome
        batch: list[Message] = []
        threads: set[tuple[str, int]] = set()
        for message_id in [*dict.fromkeys(message_ids), *sorted(set(along) - set(message_ids))]:
            message = loaded.get(message_id)
            if message is None:
                continue
            thread = _order_key(message)
            if thread in threads:
                # Released, not refused: sent after the recipient's earlier text, in the order given.
                message.status = MessageStatus.PENDING.value
                message.claimed_at = None
                message.attempts -= 1
                later.append(message.id)
                continue
            threads.add(thread)
            batch.append(message)
        decisions = check_many(session, batch, now)
        for message in batch:
            decision = decisions[message.id]
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
                outcome[message.id] = message.status
                continue
            message.segments = decision.segments.segments
            outgoing.append(
                _Outgoing(message.id, message.to_number, message.from_number, message.body,
                          list(message.media_urls or []))
            )
    answers = _call_provider(outgoing)
    if answers:
        outcome.update(_record_answers(answers, now))
    if later:  # the next round: each recipient's next text, all at once
        outcome.update(send_messages(later))
    return outcome


def _call_provider(outgoing: list[_Outgoing]) -> dict[int, SentMessage | ProviderError]:
    """Each text to the provider, a few at once: most of a call is waiting on the network."""
    current = runtime.current()
    callback = f"{current.settings.public_base_url}/webhooks/sms/status"

    def send(text: _Outgoing) -> SentMessage | ProviderError:
        try:
            return current.provider.send_sms(
                to=text.to, from_=text.from_, body=text.body, media_urls=text.media, status_callback=callback
            )
        except ProviderError as error:
            return error

    if len(outgoing) <= 1:
        return {text.id: send(text) for text in outgoing}
    return dict(zip([t.id for t in outgoing], _provider_pool().map(send, outgoing), strict=True))


def _order_key(message: Message) -> tuple[str, int]:
    """The key of the texts that go in order, one after the other: a customer's; an agent's about one lead
    (those about different leads go at once). `_in_order` is the same key in SQL."""
    return message.to_number, (message.lead_id or 0) if message.kind in AGENT_KINDS else 0


def _in_order(message: Any) -> tuple[Any, Any]:
    """`_order_key` in SQL, of `message` (Message or an alias of it)."""
    lead = case((message.kind.in_(AGENT_KINDS), func.coalesce(message.lead_id, 0)), else_=0)
    return message.to_number, lead


_pool: tuple[int, ThreadPoolExecutor] | None = None
_pool_lock = threading.Lock()


def _provider_pool() -> ThreadPoolExecutor:
    """The process's threads for provider calls, started once (a forked process starts its own)."""
    global _pool
    with _pool_lock:
        if _pool is None or _pool[0] != os.getpid():
            _pool = (os.getpid(), ThreadPoolExecutor(PROVIDER_CONCURRENCY, thread_name_prefix="provider"))
        return _pool[1]


def _record_answers(answers: dict[int, SentMessage | ProviderError], now: datetime) -> dict[int, str]:
    current = runtime.current()
    outcome: dict[int, str] = {}
    with current.database.session() as session:
        messages = {m.id: m for m in session.scalars(select(Message).where(Message.id.in_(list(answers))))}
        lead_ids = {m.lead_id for m in messages.values() if m.lead_id is not None and m.store_id is not None}
        # Held here, so they stay in the session's identity map: the message_sent subscribers (the CRM's
        # record of the lead: its contact, owner and store, joined to it) find them there instead of
        # one query each. One statement for the batch's leads and their stores.
        leads = list(session.scalars(select(Lead).where(Lead.id.in_(lead_ids)))) if lead_ids else []
        sids = [a.sid for a in answers.values() if isinstance(a, SentMessage)]
        early = set(
            session.scalars(
                select(MessageStatusCallback.sid).where(
                    MessageStatusCallback.sid.in_(sids), MessageStatusCallback.applied_at.is_(None)
                )
            )
        ) if sids else set()
        for message_id, answer in answers.items():
            message = required(messages.get(message_id), f"message {message_id}")
            if isinstance(answer, ProviderError):
                outcome[message_id] = _apply_failure(session, message, answer, now)
                continue
            status = answer.status if answer.status in _STATUS_VALUES else MessageStatus.QUEUED.value
            _taken(session, message, answer.sid, status, now, now, early=answer.sid in early)
            outcome[message_id] = message.status
        del leads
    return outcome


def _taken(
    session: Session, message: Message, sid: str, status: str, sent_at: datetime, now: datetime, *, early: bool
) -> None:
    """The provider took the text: its SID and status, the callbacks that came before them, and the news
    for the CRM and the cadence (not for texts to agents)."""
    message.sid = sid
    message.status = status
    message.sent_at = sent_at
    message.error_code = None
    message.error_message = None
    if early:
        apply_early_callbacks(session, message, now)
    if message.kind not in AGENT_KINDS:
        events.message_sent.send(session, message=message, now=now)


def _apply_failure(session: Session, message: Message, error: ProviderError, now: datetime) -> str:
    message.error_code = error.code
    message.error_message = str(error)
    message.claimed_at = None
    if error.retryable and message.attempts < MAX_ATTEMPTS:
        # The provider could not be reached, was down (5xx) or asked us to slow down (429): it did
        # not take the text, so it waits and is tried again.
        message.status = MessageStatus.PENDING.value
        message.send_after = now + timedelta(seconds=15 * 2**message.attempts)
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
    if ids:  # MERGED_BATCH a job (gateway.jobs.merged)
        enqueue_after_commit(session, send_messages_job, ids, batch=True)
    if ids:
        # Touch them so the next sweep leaves them to the jobs just queued.
        session.execute(update(Message).where(Message.id.in_(ids)).values(updated_at=now))


def mark_stuck_sends(session: Session, now: datetime) -> None:
    """A send claimed long ago with no answer: the worker died mid-send. Never resent blindly: with
    reconciliation on, its pass looks the text up in the provider's log (`settle_taken`, `send_again`,
    `give_up`); without, a person reviews it at once."""
    current = runtime.current()
    timeout = current.settings.send_claim_timeout
    looked_up = current.settings.reconcile_interval > 0 and not current.provider.sandbox
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
        if not looked_up:
            _for_review(session, message, "send-unknown", f"Text {message.id} may not have been sent.", now)
        log.warning("text %s marked unknown after a stuck send", message.id)


def _for_review(session: Session, message: Message, kind: str, what: str, now: datetime) -> None:
    """A line in the lead's timeline and a review task for its owner (texts to customers only)."""
    lead = session.get(Lead, message.lead_id) if message.lead_id else None
    if lead is not None and message.kind not in AGENT_KINDS:
        record_event(session, lead, kind, what, now)
        ensure_task(session, lead, TaskKind.REVIEW, lead.owner, follow_up_due(lead.store, lead.department, now), now)


# --- texts in doubt, settled against the provider's log (gateway/reconcile/doubt.py decides which) -------


def settle_taken(
    session: Session, message: Message, sid: str, provider_status: str, error_code: int | None,
    created_at: datetime, now: datetime,
) -> bool:
    """The provider's log shows it took this text in doubt: recorded as its answer would have recorded it,
    with the status the log has now. False when the text was not in doubt any more."""
    if not _leave_doubt(session, message, MessageStatus.QUEUED):
        return False
    _taken(session, message, sid, MessageStatus.QUEUED.value, created_at, now, early=True)
    apply_status(session, message, provider_status, error_code, now)
    log.info("text %s in doubt was taken by the provider (%s, %s)", message.id, sid, provider_status)
    return True


def send_again(session: Session, message: Message, now: datetime) -> bool:
    """The provider never took this text in doubt: it waits to be sent again, through the send guard (an
    opt-out, a person's reply or quiet hours since still hold it back). False when it was not in doubt."""
    if not _leave_doubt(session, message, MessageStatus.PENDING):
        return False
    message.claimed_at = None
    message.send_after = None
    message.error_message = None
    enqueue_after_commit(session, send_messages_job, [message.id], lane=Lane.URGENT, batch=True)
    log.info("text %s in doubt never reached the provider; sent again", message.id)
    return True


def later_text_gone(session: Session, message: Message) -> bool:
    """Whether a later text in this one's order (`_order_key`) has gone to the provider, or may have."""
    gone = or_(Message.sent_at.is_not(None), Message.status == MessageStatus.UNKNOWN.value)
    return session.scalar(
        select(Message.id)
        .where(
            Message.to_number == message.to_number,
            Message.direction == Direction.OUTBOUND.value,
            Message.id > message.id,
            tuple_(*_in_order(Message)) == _order_key(message),
            gone,
        )
        .limit(1)
    ) is not None


def give_up(session: Session, message: Message, reason: str, now: datetime) -> bool:
    """A text in doubt that is not sent again: failed, with the reason, and a review task for its lead."""
    if not _leave_doubt(session, message, MessageStatus.FAILED):
        return False
    message.error_message = reason[:500]
    _for_review(session, message, "send-failed", f"Text {message.id} was not sent: {reason}", now)
    log.warning("text %s in doubt not sent again: %s", message.id, reason)
    return True


def _leave_doubt(session: Session, message: Message, to: MessageStatus) -> bool:
    """Move the text out of `unknown`, conditionally: two passes at once settle it once."""
    moved = session.execute(
        update(Message)
        .where(Message.id == message.id, Message.status == MessageStatus.UNKNOWN.value)
        .values(status=to.value)
        .execution_options(synchronize_session=False)
    )
    if not getattr(moved, "rowcount", 0):
        return False
    session.refresh(message)
    return True
