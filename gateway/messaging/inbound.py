"""Two-way texts: a customer's text becomes a lead with an owner; keywords; status callbacks.

Decisions written down here so they are not rediscovered:

- A text is logged once: `Message.sid` is unique and the row is written with a conflict-tolerant
  insert, so a provider retry or two concurrent deliveries of one MessageSid do the work once.
- A text from an active agent's own phone is not a customer's: it is logged as kind "agent" and
  announced with `events.agent_texted` (the agent loop relays it to the customer).
- Keywords (STOP, START, HELP...) are matched on the whole body by `classify_keyword`.
  They change the contact, which is one per phone for the whole dealer group, so a STOP at one store
  stops texts from every store. A keyword joins the phone's open lead at that store (timeline line,
  `last_contact_at`), but opens no lead, no reply task and no alert: it is a setting, not a question.
  The exception is START/YES/UNSTOP from a contact who was never opted out: that is an answer
  ("Yes, hold the car for me") and is handled as an ordinary text as well.
- `Settings.keyword_replies` says who answers keywords. "provider" (the default, Twilio's Advanced
  Opt-Out on long codes): the provider already confirmed STOP/START and answered HELP, so the gateway
  records and sends nothing, never a second confirmation. "gateway": the gateway answers through the
  send guard (kinds "keyword" and "help", which pass the guard even right after a STOP).
- A clear request in the customer's own words ("please stop texting me", "alto") opts out as STOP does
  and is confirmed once by the gateway (gateway/messaging/own_words.py). A request that is not clear ("stop
  texting me so late", "wrong number") is not a keyword: the contact's automated texts are paused
  (the guard refuses them with `automation_paused`), the owner gets a review task instead of a reply
  task, and the owner is still told of the text.
- Status callbacks are kept in a ledger keyed by (SID, status): a replay changes nothing. A callback
  for a SID no message has yet (the provider answered the send faster than the send job committed)
  stays in the ledger and is applied when the SID is recorded, or by the sweep.
"""

from __future__ import annotations

import logging
import unicodedata
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from flask import Flask
from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from gateway import events
from gateway.database import insert_ignoring_conflict, insert_returning_or_none, required
from gateway.jobs import register_sweeper
from gateway.leads import (
    Origin,
    assign_owner,
    contact_for_phone,
    ensure_task,
    follow_up_due,
    open_or_join_lead,
    record_event,
)
from gateway.messaging import own_words
from gateway.messaging.guard import (
    Keyword,
    classify_keyword,
    count_segments,
    help_text,
    is_plain_revocation,
    opt_in_confirmation,
    opt_out_confirmation,
)
from gateway.messaging.models import MessageStatusCallback
from gateway.messaging.outbound import PROVIDER_STATUSES, apply_early_callbacks, apply_status, queue_text
from gateway.messaging.revocation import classify as classify_revocation
from gateway.models import Agent, Contact, Direction, Lead, Message, MessageStatus, Store, TaskKind
from gateway.phones import mask, national

log = logging.getLogger(__name__)

# What is kept of an inbound body: the provider delivers at most 1,600 characters; anything longer
# came from somewhere else and is kept only as far as a person could read it.
MAX_STORED_BODY = 5000
MAX_MEDIA = 10
# Callbacks for a SID that never turned up (a send that went `unknown`) are dropped after this long;
# applied ones are kept this long to answer replays.
UNMATCHED_CALLBACK_TTL = timedelta(days=7)
APPLIED_CALLBACK_TTL = timedelta(days=30)

KEYWORD_LABELS = {Keyword.OPT_OUT: "STOP", Keyword.OPT_IN: "START", Keyword.HELP: "HELP"}


@dataclass(frozen=True)
class IncomingText:
    sid: str
    sender: str  # E.164
    to: str  # E.164, the tracked number texted
    body: str
    segments: int | None  # NumSegments as the provider counted it
    media_urls: tuple[str, ...] = ()
    # Found in the provider's log, its webhook never came (gateway/reconcile/): sent_at is when the
    # customer sent it, and the response clock starts then.
    sent_at: datetime | None = None
    reconciled: bool = False


@dataclass(frozen=True)
class StatusUpdate:
    sid: str
    status: str  # the provider's MessageStatus, lower case
    error_code: int | None = None


@dataclass(frozen=True)
class Received:
    """What became of an inbound text. `duplicate`: the SID was handled before; nothing was done."""

    duplicate: bool
    message_id: int | None = None
    lead_id: int | None = None
    keyword: Keyword | None = None
    from_agent: bool = False
    revocation: bool = False


def init_app(app: Flask) -> None:
    register_sweeper("early-status-callbacks", apply_waiting_callbacks)


# --- inbound texts --------------------------------------------------------------------------------------


def clean_body(raw: str) -> str:
    """The body as stored: NUL characters removed (PostgreSQL text cannot hold them), length bounded."""
    return raw.replace("\x00", "")[:MAX_STORED_BODY]


def agent_for_phone(session: Session, phone: str, store_id: int) -> Agent | None:
    """The active agent with this mobile number; one of the texted store first when several share it."""
    agents = list(
        session.scalars(
            select(Agent).where(Agent.phone == phone, Agent.active.is_(True)).order_by(Agent.id)
        )
    )
    same_store = [a for a in agents if a.store_id == store_id]
    chosen = same_store or agents
    return chosen[0] if chosen else None


def _log_text(session: Session, text: IncomingText, values: dict[str, Any], now: datetime) -> Message | None:
    """Insert the inbound row once; None when this SID was already logged."""
    body = clean_body(text.body)
    row = {
        "sid": text.sid,
        "direction": Direction.INBOUND.value,
        "from_number": text.sender,
        "to_number": text.to,
        "body": body,
        "segments": text.segments if text.segments is not None else count_segments(body).segments,
        "media_urls": list(text.media_urls),
        "status": MessageStatus.RECEIVED.value,
        "automated": False,
        "reconciled": text.reconciled,
        "created_at": text.sent_at or now,
        "updated_at": now,
        **values,
    }
    return insert_returning_or_none(session, Message, row, ["sid"])


def receive_text(
    session: Session, text: IncomingText, origin: Origin, now: datetime, *, keyword_replies: str = "provider"
) -> Received:
    """Log a text to a tracked number and do what it asks. Never commits."""
    agent = agent_for_phone(session, text.sender, origin.store_id)
    if agent is not None:
        message = _log_text(
            session, text, {"kind": "agent", "agent_id": agent.id, "store_id": origin.store_id}, now
        )
        if message is None:
            return Received(duplicate=True)
        log.info("text %s from agent %s to %s", text.sid, agent.key, text.to)
        events.agent_texted.send(session, agent=agent, message=message, now=now)
        return Received(duplicate=False, message_id=message.id, from_agent=True)

    contact = contact_for_phone(session, text.sender)
    message = _log_text(
        session, text, {"kind": "customer", "contact_id": contact.id, "store_id": origin.store_id}, now
    )
    if message is None:
        return Received(duplicate=True)
    keyword = classify_keyword(message.body)
    answer = keyword == Keyword.OPT_IN and not (contact.opted_out or contact.automation_paused)
    if keyword is not None and not answer:
        lead = apply_keyword(session, contact, message, keyword, origin, now, keyword_replies=keyword_replies)
        return Received(False, message.id, lead.id if lead else None, keyword)
    found = classify_revocation(message.body) if keyword is None else None
    if found is not None and found.clear:
        done = own_words.opt_out(session, contact, message, found, origin, now)
        if done.confirm:  # the provider answers only its own keywords: the one confirmation is ours
            store = required(session.get(Store, origin.store_id), f"store {origin.store_id}")
            queue_text(
                session, to=message.from_number, from_=message.to_number,
                body=opt_out_confirmation(store.name, found.language), kind="keyword", now=now,
                lead=done.lead, contact=contact, store_id=origin.store_id, origin=f"keyword-reply:{message.id}",
            )
        return Received(False, message.id, done.lead.id if done.lead else None, Keyword.OPT_OUT, revocation=True)
    lead, revocation = _customer_text(session, contact, message, origin, now)
    return Received(False, message.id, lead.id, keyword, revocation=revocation)


RECONCILED_TEXT = (
    "The provider never delivered this text's webhook to the gateway; it was found in the provider's "
    "message log."
)


def _customer_text(
    session: Session, contact: Contact, message: Message, origin: Origin, now: datetime
) -> tuple[Lead, bool]:
    """An ordinary text: the lead (joined or new) with an owner and a task, and the event.

    The response clock starts when the customer sent it: now for a webhook, earlier for a text found
    in the provider's log (its row's created_at is the time the provider gives)."""
    sent_at = message.created_at if message.reconciled else now
    lead, created = open_or_join_lead(session, contact, origin, sent_at)
    lead.last_contact_at = sent_at
    message.lead_id = lead.id
    if message.reconciled:
        record_event(
            session, lead, "reconciled", RECONCILED_TEXT, now,
            {"message_id": message.id, "sid": message.sid, "sent_at": sent_at.isoformat()},
        )
    owner = assign_owner(session, lead, now)
    due = follow_up_due(lead.store, lead.department, sent_at)
    revocation = is_plain_revocation(message.body)
    if revocation:
        pause_automation(session, contact, lead, message, now)
        ensure_task(session, lead, TaskKind.REVIEW, owner, due, now)
    else:
        ensure_task(session, lead, TaskKind.REPLY, owner, due, now)
    log.info(
        "text %s from %s to %s: lead %s (%s)",
        message.sid, mask(contact.phone), message.to_number, lead.code, "new" if created else "joined",
    )
    events.message_received.send(session, lead=lead, message=message, now=now)
    return lead, revocation


def pause_automation(session: Session, contact: Contact, lead: Lead, message: Message, now: datetime) -> None:
    """The customer asked in their own words to stop: no more automated texts until a person looks."""
    if not contact.automation_paused:
        contact.automation_paused = True
        contact.updated_at = now
    record_event(
        session,
        lead,
        "automation-paused",
        "The customer asked not to be texted; automated texts are paused until someone reviews it.",
        now,
        {"message_id": message.id},
    )


def apply_keyword(
    session: Session,
    contact: Contact,
    message: Message,
    keyword: Keyword,
    origin: Origin,
    now: datetime,
    *,
    keyword_replies: str = "provider",
) -> Lead | None:
    """STOP, START or HELP: change the contact for the whole group, note it, answer if it is ours to."""
    lead = session.scalar(select(Lead).where(Lead.open_key == f"{contact.id}:{origin.store_id}"))
    if lead is not None:
        message.lead_id = lead.id
        lead.last_contact_at = now
    store = required(session.get(Store, origin.store_id), f"store {origin.store_id}")
    reply: str | None = None
    if keyword == Keyword.OPT_OUT:
        if not contact.opted_out:
            contact.opted_out = True
            contact.opted_out_at = now
            contact.opt_out_number = message.to_number
            contact.opt_out_source = "keyword:" + _word(message.body)
            contact.updated_at = now
            events.contact_opted_out.send(session, contact=contact, now=now)
        text = f"The customer texted {_word(message.body)}: opted out of texts from every store."
        reply = opt_out_confirmation(store.name)
    elif keyword == Keyword.OPT_IN:
        if contact.opted_out or contact.automation_paused:
            contact.opted_out = False
            contact.opted_out_at = None
            contact.opt_out_number = None
            contact.opt_out_source = None
            contact.automation_paused = False
            contact.updated_at = now
        text = f"The customer texted {_word(message.body)}: opted back in to texts."
        reply = opt_in_confirmation(store.name)
    else:
        text = f"The customer texted {_word(message.body)} and was sent who we are and how to opt out."
        reply = help_text(store.name, national(store.main_line))
    if lead is not None:
        record_event(session, lead, "keyword", text, now, {"keyword": keyword.value, "message_id": message.id})
    log.info("text %s from %s: keyword %s", message.sid, mask(contact.phone), keyword.value)
    if keyword_replies == "gateway":
        queue_text(
            session,
            to=message.from_number,
            from_=message.to_number,
            body=reply,
            kind="help" if keyword == Keyword.HELP else "keyword",
            now=now,
            lead=lead,
            contact=contact,
            store_id=origin.store_id,
            origin=f"keyword-reply:{message.id}",
        )
    return lead


def _word(body: str) -> str:
    """The keyword as the customer wrote it, upper-cased, for the record ("keyword:STOPALL")."""
    words = unicodedata.normalize("NFKC", body).split()
    word = words[0] if len(words) == 1 else body.strip()
    return "".join(ch for ch in word if ch.isalnum()).upper()[:32] or "STOP"


# --- status callbacks ------------------------------------------------------------------------------------


def record_status(session: Session, update: StatusUpdate, now: datetime) -> str:
    """Apply a status callback once. Returns "duplicate", "applied", "stale", "waiting" or "ignored"."""
    inserted = insert_ignoring_conflict(
        session,
        MessageStatusCallback,
        {"sid": update.sid, "status": update.status, "error_code": update.error_code, "received_at": now},
        ["sid", "status"],
    )
    if not inserted:
        return "duplicate"
    callback = required(
        session.scalar(
            select(MessageStatusCallback).where(
                MessageStatusCallback.sid == update.sid, MessageStatusCallback.status == update.status
            )
        ),
        f"callback {update.sid}",
    )
    if update.status not in PROVIDER_STATUSES:
        callback.applied_at = now
        log.info("text %s: status %r ignored", update.sid, update.status)
        return "ignored"
    message = session.scalar(select(Message).where(Message.sid == update.sid))
    if message is None:
        log.info("text %s: status %s arrived before the send was recorded; kept", update.sid, update.status)
        return "waiting"
    moved = apply_status(session, message, update.status, update.error_code, now)
    callback.applied_at = now
    return "applied" if moved else "stale"


def apply_waiting_callbacks(session: Session, now: datetime) -> None:
    """Callbacks kept for a SID that has since been recorded; old ones that never matched are dropped."""
    sids = list(
        session.scalars(
            select(MessageStatusCallback.sid)
            .join(Message, Message.sid == MessageStatusCallback.sid)
            .where(MessageStatusCallback.applied_at.is_(None))
            .distinct()
            .limit(500)
        )
    )
    for sid in sids:
        message = session.scalar(select(Message).where(Message.sid == sid))
        if message is not None:
            apply_early_callbacks(session, message, now)
    session.execute(
        delete(MessageStatusCallback).where(
            MessageStatusCallback.applied_at.is_(None),
            MessageStatusCallback.received_at < now - UNMATCHED_CALLBACK_TTL,
        )
    )
    session.execute(
        delete(MessageStatusCallback).where(MessageStatusCallback.applied_at < now - APPLIED_CALLBACK_TTL)
    )
