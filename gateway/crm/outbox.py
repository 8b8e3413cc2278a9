"""CRM sync: every lead event becomes an outbox row per CRM destination, delivered by the worker.

The rows are made by subscribers of `gateway.events` and written in the transaction of the change itself,
all of a transaction's in one INSERT just before its commit: the lead and its CRM deliveries commit
together or not at all. Each row holds the body rendered at event
time (ADF/XML or a JSON event), an idempotency key, and its place in a stream (one lead, one
destination) that is delivered strictly in order: a delivery waits while an older one of its stream is
unfinished. gateway/crm/delivery.py sends them; retryable failures back off exponentially (30 s,
1 min, 2 min ... at most 1 h) for 24 h; then, or at once for a refusal, the row is a dead letter, listed
by `gateway crm deadletters` and the API and replayed by `gateway crm replay`. A sweep finds due rows
again, so a flushed Redis loses none.
"""

from __future__ import annotations

import hashlib
import logging
import uuid
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

from flask import Flask, has_app_context
from sqlalchemy import event, func, insert, select, update
from sqlalchemy.orm import Session, SessionTransaction

from gateway import events, runtime, serialize
from gateway.crm.delivery import DEFAULT_CLAIM_TIMEOUT, DELIVERY, RETRY_WINDOW, setting, unblocked
from gateway.crm.formats import (
    ADF_CONTENT_TYPE,
    JSON_CONTENT_TYPE,
    LEAD_CREATED,
    ContactType,
    LeadRecord,
    lead_event_data,
    render_adf,
    render_json_event,
)
from gateway.crm.models import CrmDelivery, DeliveryStatus, DestinationKind, pending
from gateway.jobs import ALIVE_SECONDS, alive, register_sweeper
from gateway.leads import WEB_FORM, Inquiry
from gateway.models import Call, CallOutcome, Lead, Message, Store, Task
from gateway.settings import DEFAULT_PUBLIC_BASE_URL

log = logging.getLogger(__name__)

# The sweep hands a due row to Redis again only if it did not do so this recently.
REQUEUE_AFTER = timedelta(seconds=30)
SWEEP_LIMIT = 1000

LEAD_UPDATED = "lead.updated"
CALL_COMPLETED = "call.completed"
MESSAGE_RECEIVED = "message.received"
MESSAGE_SENT = "message.sent"
VOICEMAIL_TRANSCRIBED = "voicemail.transcribed"
TASK_CREATED = "task.created"
TASK_COMPLETED = "task.completed"
LEAD_RECEIVED = "lead.received"
EVENTS = (
    LEAD_CREATED,
    LEAD_RECEIVED,
    LEAD_UPDATED,
    CALL_COMPLETED,
    MESSAGE_RECEIVED,
    MESSAGE_SENT,
    VOICEMAIL_TRANSCRIBED,
    TASK_CREATED,
    TASK_COMPLETED,
)

# Lead ids created in the session's transaction whose ADF prospect ("new") is not written yet: it goes
# out with the contact that created the lead (the call or the text), so the CRM gets one prospect.
_NEW_LEADS_KEY = "gateway.crm.outbox.new_leads"
# Outbox rows of the session's transaction not written yet (see write_deliveries).
_PENDING_KEY = "gateway.crm.outbox.pending"

_OUTCOME_CONTACT = {
    CallOutcome.ANSWERED.value: ContactType.ANSWERED_CALL.value,
    CallOutcome.MISSED.value: ContactType.MISSED_CALL.value,
    CallOutcome.BUSY.value: ContactType.MISSED_CALL.value,
    CallOutcome.FAILED.value: ContactType.MISSED_CALL.value,
    CallOutcome.RINGING.value: ContactType.MISSED_CALL.value,
    CallOutcome.ABANDONED.value: ContactType.ABANDONED_CALL.value,
    CallOutcome.AFTER_HOURS.value: ContactType.AFTER_HOURS_CALL.value,
    CallOutcome.VOICEMAIL.value: ContactType.VOICEMAIL.value,
    CallOutcome.FORWARDED.value: "forwarded call",
}


def init_app(app: Flask) -> None:
    events.lead_created.connect(on_lead_created, weak=False)
    events.lead_updated.connect(on_lead_updated, weak=False)
    events.call_completed.connect(on_call_completed, weak=False)
    events.message_received.connect(on_message_received, weak=False)
    events.message_sent.connect(on_message_sent, weak=False)
    events.voicemail_transcribed.connect(on_voicemail_transcribed, weak=False)
    events.lead_received.connect(on_lead_received, weak=False)
    events.task_created.connect(on_task_created, weak=False)
    events.task_completed.connect(on_task_completed, weak=False)
    register_sweeper("crm-due", enqueue_due_deliveries)
    register_sweeper("crm-stuck", release_stuck_deliveries)


# ----------------------------------------------------------------------------------------- settings


def _setting(name: str, default: float) -> float:
    if not has_app_context():
        return default
    return setting(runtime.current(), name, default)


def _base_url() -> str:
    if not has_app_context():
        return DEFAULT_PUBLIC_BASE_URL
    return runtime.current().settings.public_base_url


# ------------------------------------------------------------------------------------------ records


def lead_record(
    lead: Lead,
    event_name: str,
    contact_type: str,
    now: datetime,
    *,
    call: Call | None = None,
    message: Message | None = None,
    transcript: str | None = None,
) -> LeadRecord:
    """What a CRM is told about `lead` at `now`, from the rows as they are in this transaction."""
    store = lead.store
    contact = lead.contact
    return LeadRecord(
        lead_id=lead.id,
        lead_code=lead.code,
        event=event_name,
        contact_type=contact_type,
        request_date=now,
        store_key=store.key,
        store_name=store.name,
        store_phone=store.main_line,
        department=lead.department,
        lead_url=f"{_base_url()}/leads/{lead.code}",
        phone=contact.phone,
        first_name=contact.first_name,
        last_name=contact.last_name,
        email=contact.email,
        source=lead.source,
        tracked_number=lead.tracked_number,
        call_outcome=call.outcome if call is not None else None,
        call_duration=call.duration if call is not None else None,
        transcript=transcript,
        message_body=message.body if message is not None else None,
        owner_name=lead.owner.name if lead.owner is not None else None,
        status=lead.status,
        priority=lead.priority,
        reconciled=(call is not None and call.reconciled) or (message is not None and message.reconciled),
    )


def _stream(store_id: int, kind: str, target: str, lead_id: int | None) -> str:
    return hashlib.sha256(f"{store_id}|{kind}|{target}|{lead_id}".encode()).hexdigest()[:32]


def _target(destination: dict[str, Any]) -> str | None:
    kind = destination.get("type")
    value = destination.get("to") if kind == DestinationKind.ADF_EMAIL.value else destination.get("url")
    return str(value) if value else None


def write_deliveries(
    session: Session,
    lead: Lead,
    event_name: str,
    now: datetime,
    *,
    data: dict[str, Any] | None,
    adf: LeadRecord | None,
) -> int:
    """One outbox row per destination of the lead's store that takes this event; the send after commit.

    `data` is the JSON event's data (None: no JSON event), `adf` the ADF prospect (None: no ADF). The rows
    are written with the transaction's commit (`write_pending`), every event's in one INSERT, in the order
    the events came, which is stream order. Returns how many rows the event adds.
    """
    store: Store = lead.store
    rows: list[dict[str, Any]] = session.info.setdefault(_PENDING_KEY, [])
    added = 0
    adf_payload: bytes | None = None  # the same document for every ADF destination: rendered once
    for index, destination in enumerate(store.crm or []):
        if not isinstance(destination, dict):
            continue
        kind, target = destination.get("type"), _target(destination)
        if target is None:
            continue
        key = f"crm_{uuid.uuid4().hex}"
        if kind == DestinationKind.WEBHOOK.value and data is not None:
            payload = render_json_event(event_name, data, event_id=key, created_at=now)
            content_type = JSON_CONTENT_TYPE
        elif kind in {DestinationKind.ADF_HTTP.value, DestinationKind.ADF_EMAIL.value} and adf is not None:
            if adf_payload is None:
                adf_payload = render_adf(adf)
            payload = adf_payload
            content_type = ADF_CONTENT_TYPE
        else:
            continue
        rows.append({
            "store_id": store.id,
            "lead_id": lead.id,
            "destination_index": index,
            "kind": kind,
            "target": target[:500],
            "stream": _stream(store.id, str(kind), target, lead.id),
            "event": event_name,
            "content_type": content_type,
            "payload": payload,
            "idempotency_key": key,
            "status": DeliveryStatus.PENDING.value,
            "attempts": 0,
            "next_attempt_at": now,
            "retry_until": now + RETRY_WINDOW,
            "queued_at": now,
            "created_at": now,
            "updated_at": now,
        })
        added += 1
    if added:
        request_delivery(session)
    return added


def write_pending(session: Session) -> int:
    """Write the outbox rows this transaction's events made so far (one INSERT); the commit does it too."""
    rows: list[dict[str, Any]] = session.info.pop(_PENDING_KEY, [])
    if rows:
        session.execute(insert(CrmDelivery), rows)
    return len(rows)


def _json(record: LeadRecord, **extra: Any) -> dict[str, Any]:
    data = lead_event_data(record)
    data.update(extra)
    return data


def _adf_for_contact(
    session: Session, lead: Lead, event_name: str, record: LeadRecord
) -> LeadRecord:
    """The contact that opened the lead in this transaction is the lead's first prospect ("new")."""
    new_leads: set[int] = session.info.get(_NEW_LEADS_KEY, set())
    if lead.id in new_leads:
        new_leads.discard(lead.id)
        return _with_event(record, LEAD_CREATED)
    return record if record.event != LEAD_CREATED else _with_event(record, event_name)


def _with_event(record: LeadRecord, event_name: str) -> LeadRecord:
    values = {name: getattr(record, name) for name in record.__dataclass_fields__}
    values["event"] = event_name
    return LeadRecord(**values)


# ---------------------------------------------------------------------------------------- subscribers


def on_lead_created(session: Session, *, lead: Lead, now: datetime, **_: Any) -> None:
    record = lead_record(lead, LEAD_CREATED, "new lead", now)
    write_deliveries(session, lead, LEAD_CREATED, now, data=_json(record), adf=None)
    session.info.setdefault(_NEW_LEADS_KEY, set()).add(lead.id)


def on_lead_updated(
    session: Session, *, lead: Lead, changes: dict[str, Any], now: datetime, **_: Any
) -> None:
    record = lead_record(lead, LEAD_UPDATED, "lead update", now)
    described: dict[str, Any] = {}
    for name, change in (changes or {}).items():
        old, new = change if isinstance(change, tuple | list) and len(change) == 2 else (None, change)
        described[str(name)] = {"from": _plain(old), "to": _plain(new)}
    write_deliveries(session, lead, LEAD_UPDATED, now, data=_json(record, changes=described), adf=None)


def on_call_completed(session: Session, *, lead: Lead, call: Call, now: datetime, **_: Any) -> None:
    contact_type = _OUTCOME_CONTACT.get(call.outcome, ContactType.MISSED_CALL.value)
    record = lead_record(lead, CALL_COMPLETED, contact_type, now, call=call)
    adf = _adf_for_contact(session, lead, CALL_COMPLETED, record)
    write_deliveries(
        session, lead, CALL_COMPLETED, now, data=_json(record, call=serialize.call(call)), adf=adf
    )


def on_message_received(
    session: Session, *, lead: Lead, message: Message, now: datetime, **_: Any
) -> None:
    record = lead_record(lead, MESSAGE_RECEIVED, ContactType.TEXT.value, now, message=message)
    adf = _adf_for_contact(session, lead, MESSAGE_RECEIVED, record)
    write_deliveries(
        session, lead, MESSAGE_RECEIVED, now, data=_json(record, message=serialize.message(message)), adf=adf
    )


def on_lead_received(
    session: Session, *, lead: Lead, inquiry: Inquiry, intake_id: int, now: datetime, **_: Any
) -> None:
    """A form or ADF lead: ADF `new` (or `resend` when it joined a lead) carrying the vehicle, what the
    customer wrote, the original source and id and the SMS consent; and the JSON event `lead.received`."""
    contact_type = ContactType.WEB_FORM.value if inquiry.channel == WEB_FORM else ContactType.ADF.value
    record = _with_inquiry(lead_record(lead, LEAD_RECEIVED, contact_type, now), inquiry)
    adf = _adf_for_contact(session, lead, LEAD_RECEIVED, record)
    data = _json(record, inquiry=inquiry.as_data(), intake_id=intake_id)
    write_deliveries(session, lead, LEAD_RECEIVED, now, data=data, adf=adf)


def _with_inquiry(record: LeadRecord, inquiry: Inquiry) -> LeadRecord:
    values = {name: getattr(record, name) for name in record.__dataclass_fields__}
    values.update(
        source=inquiry.source,
        vehicles=tuple(
            {"year": v.year, "make": v.make, "model": v.model, "trim": v.trim, "vin": v.vin, "stock": v.stock,
             "interest": v.interest, "status": v.status}
            for v in inquiry.vehicles
        ),
        original_ids=inquiry.ids,
        customer_comments=inquiry.message,
        sms_consent=inquiry.sms_consent.describe() if inquiry.sms_consent is not None else None,
        email=record.email or inquiry.email,
    )
    return LeadRecord(**values)


def on_message_sent(session: Session, *, message: Message, now: datetime, **_: Any) -> None:
    if message.lead_id is None or message.store_id is None:
        return  # not about a lead (a text to an agent): nothing a CRM tracks
    store = session.get(Store, message.store_id)
    if store is None or not store.crm:
        return  # the store sends its CRM nothing: no record to build for every text
    lead = session.get(Lead, message.lead_id)
    if lead is None:
        return
    record = lead_record(lead, MESSAGE_SENT, "outbound text", now, message=message)
    write_deliveries(
        session, lead, MESSAGE_SENT, now, data=_json(record, message=serialize.message(message)), adf=None
    )


def on_voicemail_transcribed(
    session: Session, *, lead: Lead, call: Call, transcript: str, now: datetime, **_: Any
) -> None:
    record = lead_record(
        lead, VOICEMAIL_TRANSCRIBED, ContactType.VOICEMAIL.value, now, call=call, transcript=transcript
    )
    adf = _adf_for_contact(session, lead, VOICEMAIL_TRANSCRIBED, record)
    data = _json(record, call=serialize.call(call), transcript=transcript)
    write_deliveries(session, lead, VOICEMAIL_TRANSCRIBED, now, data=data, adf=adf)


def _on_task(session: Session, task: Task, event_name: str, now: datetime) -> None:
    lead = task.lead if task.lead is not None else session.get(Lead, task.lead_id)
    if lead is None:
        return
    record = lead_record(lead, event_name, "task", now)
    write_deliveries(session, lead, event_name, now, data=_json(record, task=serialize.task(task)), adf=None)


def on_task_created(session: Session, *, task: Task, now: datetime, **_: Any) -> None:
    _on_task(session, task, TASK_CREATED, now)


def on_task_completed(session: Session, *, task: Task, now: datetime, **_: Any) -> None:
    _on_task(session, task, TASK_COMPLETED, now)


def _plain(value: Any) -> Any:
    if value is None or isinstance(value, str | int | float | bool | datetime):
        return value
    return str(value)


@event.listens_for(Session, "before_commit")
def _before_commit(session: Session) -> None:
    _new_leads_without_contact(session)
    write_pending(session)


def _new_leads_without_contact(session: Session) -> None:
    """A lead opened with no call or text in the same transaction still reaches ADF CRMs, as `new`."""
    pending: set[int] = session.info.pop(_NEW_LEADS_KEY, set())
    for lead_id in sorted(pending):
        lead = session.get(Lead, lead_id)
        if lead is None:
            continue
        now = lead.created_at
        record = lead_record(lead, LEAD_CREATED, "new lead", now)
        write_deliveries(session, lead, LEAD_CREATED, now, data=None, adf=record)


@event.listens_for(Session, "after_rollback")
def _forget_new_leads(session: Session) -> None:
    session.info.pop(_NEW_LEADS_KEY, None)


@event.listens_for(Session, "after_transaction_end")
def _forget_unwritten(session: Session, transaction: SessionTransaction) -> None:
    """Rows of a transaction that ended without its commit (rolled back, or the session closed) go too."""
    if transaction.parent is None:
        session.info.pop(_PENDING_KEY, None)


# ------------------------------------------------------------------------------------------- delivery

def request_delivery(session: Session) -> None:
    """Once this transaction commits, a worker delivers what is due (gateway/crm/delivery.py)."""
    DELIVERY.request_after_commit(session)


# ---------------------------------------------------------------------------------------------- sweeps


def enqueue_due_deliveries(session: Session, now: datetime) -> None:
    """Due deliveries at the head of their stream that Redis does not hold (lost, or deferred) go back."""
    ids = list(
        session.scalars(
            select(CrmDelivery.id)
            .where(
                pending(),
                CrmDelivery.next_attempt_at <= now,
                (CrmDelivery.queued_at.is_(None)) | (CrmDelivery.queued_at <= now - REQUEUE_AFTER)
                | (CrmDelivery.queued_at < CrmDelivery.next_attempt_at),
                unblocked(),
            )
            .order_by(CrmDelivery.id)
            .limit(SWEEP_LIMIT)
        )
    )
    if not ids:
        return
    request_delivery(session)
    session.execute(
        update(CrmDelivery)
        .where(CrmDelivery.id.in_(ids))
        .values(queued_at=now)
        .execution_options(synchronize_session=False)
    )


def release_stuck_deliveries(session: Session, now: datetime) -> None:
    """A delivery whose worker died before the CRM answered: send it again (receivers dedupe by its key).

    The worker is known dead when the process that claimed it no longer keeps its alive key in Redis
    (`jobs.alive`), a few seconds after a kill; otherwise (Redis down, a claim taken outside `gateway
    worker`) when the claim is older than the claim timeout, long enough for the slowest honest attempt."""
    timeout = timedelta(seconds=_setting("crm_claim_timeout", DEFAULT_CLAIM_TIMEOUT))
    claimed = list(
        session.scalars(
            select(CrmDelivery).where(
                CrmDelivery.status == DeliveryStatus.DELIVERING.value,
                CrmDelivery.claimed_at <= now - timedelta(seconds=ALIVE_SECONDS),
            )
        )
    )
    expired = {row.id for row in claimed if row.claimed_at is not None and row.claimed_at <= now - timeout}
    owners = {row.claimed_by for row in claimed if row.claimed_by and row.id not in expired}
    living = alive(runtime.current().redis, owners) if owners else set()
    dead = owners - living if living is not None else set()
    stuck = [row for row in claimed if row.id in expired or row.claimed_by in dead]
    for row in stuck:
        row.claimed_at = None
        row.claimed_by = None
        row.updated_at = now
        row.last_error = "the worker stopped before the CRM answered; sending again with the same key"
        if now < row.retry_until:
            row.status = DeliveryStatus.PENDING.value
            row.next_attempt_at = now
            row.queued_at = now
            request_delivery(session)
        else:
            row.status = DeliveryStatus.DEAD.value
        log.warning("crm delivery %s was stuck delivering -> %s", row.id, row.status)


# ------------------------------------------------------------------------------------ dead letters


def dead_letters(
    session: Session,
    store_ids: set[int] | None = None,
    *,
    status: str = DeliveryStatus.DEAD.value,
    after_id: int = 0,
    limit: int = 100,
) -> list[CrmDelivery]:
    """Deliveries in `status` (dead letters by default), oldest first."""
    query = select(CrmDelivery).where(CrmDelivery.status == status, CrmDelivery.id > after_id)
    if store_ids is not None:
        query = query.where(CrmDelivery.store_id.in_(store_ids))
    return list(session.scalars(query.order_by(CrmDelivery.id).limit(limit)))


class NotDead(ValueError):
    """Only a dead letter can be replayed."""


def replay(session: Session, ids: Sequence[int] | None, now: datetime) -> list[CrmDelivery]:
    """Give dead letters a fresh 24 h window and send them again (same body, same idempotency key).

    `ids` None: every dead letter. Raises NotDead (nothing changed) when one of `ids` is not dead,
    LookupError when one does not exist.
    """
    if ids is None:
        rows = list(
            session.scalars(
                select(CrmDelivery).where(CrmDelivery.status == DeliveryStatus.DEAD.value).order_by(CrmDelivery.id)
            )
        )
    else:
        rows = []
        for delivery_id in ids:
            row = session.get(CrmDelivery, delivery_id)
            if row is None:
                raise LookupError(f"no CRM delivery {delivery_id}")
            if row.status != DeliveryStatus.DEAD.value:
                raise NotDead(f"CRM delivery {delivery_id} is {row.status}, not dead")
            rows.append(row)
    for row in rows:
        row.status = DeliveryStatus.PENDING.value
        row.attempts = 0
        row.next_attempt_at = now
        row.retry_until = now + RETRY_WINDOW
        row.queued_at = now
        row.updated_at = now
    if rows:
        request_delivery(session)
    session.flush()
    return rows


def counts_by_status(session: Session, store_ids: set[int] | None = None) -> dict[str, int]:
    query = select(CrmDelivery.status, func.count()).group_by(CrmDelivery.status)
    if store_ids is not None:
        query = query.where(CrmDelivery.store_id.in_(store_ids))
    return {status: count for status, count in session.execute(query).all()}
