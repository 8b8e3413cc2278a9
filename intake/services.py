"""Leads from forms and ADF: a customer's written request becomes a lead with an owner and a task, and
`events.lead_received` sets the rest going (the cadence's first text and acknowledgement, the owner's
alert, the CRM records).

- A form's lead is made in the transaction that takes the form in (its answer is the lead).
- An ADF document is only stored by the request or the mail that brings it: each prospect one pending
  `intake_records` row, all in one INSERT (`store_adf`). The worker claims pending rows and builds each
  lead in a transaction of its own (`claim_pending`, `build_record`): the same `build_lead` as a form's,
  the same events. A row that cannot be built is marked failed and put behind a review task
  (`fail_record`); nothing is dropped.
- The same request twice changes nothing: a form's `external_id` and an ADF prospect's first `<id>` are
  kept per store in `intake_records` with a unique key, claimed by an insert the database arbitrates.
- A request joins the open lead of its phone at the store (a form after a missed call), else the open
  lead of its e-mail address there, else opens a lead.
- An e-mail to the intake that holds no readable ADF is never dropped: a reply from a customer we know
  is logged on their lead (and stops their cadences); anything else is kept whole behind a review task.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from email import policy
from email.parser import BytesParser
from typing import Any

from sqlalchemy import ColumnElement, and_, exists, func, or_, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from gateway import events
from gateway.database import insert_ignoring_conflict, required
from gateway.leads import (
    ADF,
    Inquiry,
    Origin,
    Vehicle,
    assign_owner,
    contact_for_phone,
    ensure_task,
    follow_up_due,
    open_or_join_lead,
    record_event,
)
from gateway.metrics import Backlog
from gateway.models import Contact, Lead, Store, TaskKind
from gateway.phones import mask
from intake.adf import AdfDocument, Prospect, best_phone, dedupe_key, first_id
from intake.mail import AdfMail, read_mail
from intake.mail import store_keys_for as store_keys_for
from intake.models import IntakeChannel, IntakeMail, IntakeRecord

log = logging.getLogger(__name__)

DEFAULT_DEPARTMENT = "sales"
WEB_SOURCE = "Website"
EMAIL_SOURCE = "E-mail"
PREVIEW = 300
KEY_LENGTH = 300
# A record claimed this long ago and still not built was claimed by a worker that died: taken again.
CLAIM_TIMEOUT = timedelta(minutes=2)
# Claims of one record that may end without a lead (a worker killed, the database failing) before the
# record is marked failed and put in front of a person instead.
MAX_ATTEMPTS = 5


@dataclass(frozen=True)
class Taken:
    """What became of one request: its lead, whether it opened the lead, whether it was a repeat."""

    lead: Lead
    created: bool
    duplicate: bool
    intake_id: int


@dataclass(frozen=True)
class Stored:
    """One ADF prospect as stored: its intake record, its own `<id>`, and whether the store had it
    already (a resend), with that earlier prospect's lead once it is built (`created`: it opened it)."""

    intake_id: int
    external_id: str | None
    duplicate: bool
    lead: Lead | None = None
    created: bool = False


@dataclass
class MailResult:
    """What one e-mail to the intake became."""

    stored: list[Stored] = field(default_factory=list)
    reviews: list[int] = field(default_factory=list)  # intake_mails ids behind review tasks
    replies: list[int] = field(default_factory=list)  # lead ids the mail was a reply to
    stores: list[str] = field(default_factory=list)


def department_for(store: Store, wanted: str | None) -> str:
    """The department named (when the store has it), else sales, else the store's first department."""
    if wanted and wanted in store.hours:
        return wanted
    if DEFAULT_DEPARTMENT in store.hours or not store.hours:
        return DEFAULT_DEPARTMENT
    return next(iter(store.hours))


# --- one request ----------------------------------------------------------------------------------------


def receive_inquiry(
    session: Session,
    store: Store,
    inquiry: Inquiry,
    *,
    channel: IntakeChannel,
    key: str | None,
    now: datetime,
) -> Taken:
    """Take one request in (see the module docstring). Does not commit."""
    record: IntakeRecord | None = None
    if key is not None:
        key = key[:KEY_LENGTH]
        record = _record(session, store.id, key)
        if record is not None and record.lead_id is not None:
            return _repeat(session, record)
        if record is None:
            inserted = insert_ignoring_conflict(
                session,
                IntakeRecord,
                {"store_id": store.id, "channel": channel.value, "dedupe_key": key, "created": True,
                 "data": inquiry.as_data(), "received_at": now},
                ["store_id", "dedupe_key"],
            )
            record = required(_record(session, store.id, key), f"intake record {key}")
            if not inserted and record.lead_id is not None:
                return _repeat(session, record)
    if record is None:
        record = IntakeRecord(
            store_id=store.id, channel=channel.value, dedupe_key=None, created=True,
            data=inquiry.as_data(), received_at=now,
        )
        session.add(record)
        session.flush()
    return build_lead(session, store, inquiry, record, now)


def build_lead(session: Session, store: Store, inquiry: Inquiry, record: IntakeRecord, now: datetime) -> Taken:
    """The lead of a stored request: the contact, the lead it opens or joins, the consent, the owner and
    the callback task, the timeline, and `events.lead_received`. Does not commit."""
    contact = _contact(session, inquiry)
    _complete_contact(contact, inquiry, now)
    lead: Lead | None = None
    if inquiry.phone is None or not _has_open_lead(session, contact, store):
        lead = _open_lead_of_email(session, store, inquiry.email)
    if lead is not None:
        lead.last_contact_at = now
        created = False
    else:
        origin = Origin(store_id=store.id, department=inquiry.department, source=inquiry.source, tracked_number_id=None)
        lead, created = open_or_join_lead(session, contact, origin, now)
    record.lead_id = lead.id
    record.created = created
    if inquiry.sms_consent is not None and inquiry.sms_consent.granted and lead.contact.phone:
        consent = _consent_data(inquiry, lead, now)
        lead.contact.sms_consent = consent
        record_event(session, lead, "sms-consent", inquiry.sms_consent.describe(), now, consent)
    owner = assign_owner(session, lead, now)
    ensure_task(session, lead, TaskKind.CALLBACK, owner, follow_up_due(store, lead.department, now), now)
    record_event(session, lead, "inquiry", _summary(inquiry, created), now, inquiry.as_data())
    lead.updated_at = now
    log.info(
        "%s lead %s from %s (%s)", inquiry.channel, lead.code, mask(inquiry.phone),
        "new" if created else "joined",
    )
    events.lead_received.send(session, lead=lead, inquiry=inquiry, intake_id=record.id, created=created, now=now)
    return Taken(lead=lead, created=created, duplicate=False, intake_id=record.id)


def _record(session: Session, store_id: int, key: str) -> IntakeRecord | None:
    return session.scalar(
        select(IntakeRecord).where(IntakeRecord.store_id == store_id, IntakeRecord.dedupe_key == key)
    )


def _repeat(session: Session, record: IntakeRecord) -> Taken:
    lead = required(session.get(Lead, record.lead_id), f"lead {record.lead_id}")
    return Taken(lead=lead, created=record.created, duplicate=True, intake_id=record.id)


def _contact(session: Session, inquiry: Inquiry) -> Contact:
    """The contact of the phone; without one, the first contact with the e-mail address, or a new one."""
    if inquiry.phone is not None:
        return contact_for_phone(session, inquiry.phone)
    if inquiry.email:
        known = session.scalar(
            select(Contact).where(Contact.email == inquiry.email).order_by(Contact.phone.is_(None), Contact.id)
        )
        if known is not None:
            return known
    contact = Contact(phone=None, email=inquiry.email)
    session.add(contact)
    session.flush()
    return contact


def _complete_contact(contact: Contact, inquiry: Inquiry, now: datetime) -> None:
    """What we did not know yet; never overwrite what the customer told us before."""
    if inquiry.first_name and not contact.first_name:
        contact.first_name = inquiry.first_name[:100]
    if inquiry.last_name and not contact.last_name:
        contact.last_name = inquiry.last_name[:100]
    if inquiry.email and not contact.email:
        contact.email = inquiry.email
    contact.updated_at = now


def _has_open_lead(session: Session, contact: Contact, store: Store) -> bool:
    return session.scalar(select(Lead.id).where(Lead.open_key == f"{contact.id}:{store.id}")) is not None


def _open_lead_of_email(session: Session, store: Store, email: str | None) -> Lead | None:
    if not email:
        return None
    # Through the open-lead key ("<contact>:<store>", unique): the contacts with that address by their
    # index, then at most one lead each. A join from leads filtered by store had SQLite (no statistics)
    # walk every lead of the store for each form.
    contact_ids = session.scalars(select(Contact.id).where(Contact.email == email)).all()
    if not contact_ids:
        return None
    return session.scalar(
        select(Lead).where(Lead.open_key.in_([f"{cid}:{store.id}" for cid in contact_ids])).order_by(Lead.id).limit(1)
    )


def _consent_data(inquiry: Inquiry, lead: Lead, now: datetime) -> dict[str, Any]:
    consent = inquiry.sms_consent
    assert consent is not None  # noqa: S101 - checked by the caller
    return {
        "granted": True,
        "text": consent.text,
        "at": (consent.at or now).isoformat(),
        "ip": consent.ip,
        "lead": lead.code,
        "channel": inquiry.channel,
        "recorded_at": now.isoformat(),
    }


def _summary(inquiry: Inquiry, created: bool) -> str:
    who = inquiry.name or inquiry.email or mask(inquiry.phone) or "a customer"
    text = f"{inquiry.channel.capitalize() if inquiry.channel != ADF else ADF} lead from {who} ({inquiry.source})"
    vehicle = inquiry.vehicle_text()
    if vehicle:
        text += f", about {vehicle}"
    if not created:
        text += "; it joined this open lead"
    return text + "."


# --- ADF ------------------------------------------------------------------------------------------------


def inquiry_from_prospect(prospect: Prospect, store: Store, now: datetime) -> Inquiry:
    customer = prospect.customer
    first, last = customer.first_name, customer.last_name
    if not (first or last) and customer.full_name:
        first, _, last_part = customer.full_name.partition(" ")
        last = last_part or None
    provider = prospect.provider.name if prospect.provider is not None else None
    first_id_source = next((source for source, _ in ((i.source, i.value) for i in prospect.ids) if source), None)
    vehicles = tuple(
        Vehicle(
            year=v.year, make=v.make, model=v.model, trim=v.trim, vin=v.vin, stock=v.stock,
            interest=v.interest, status=v.status,
        )
        for v in prospect.vehicles
        if any((v.year, v.make, v.model, v.trim, v.vin, v.stock))
    )
    email = (customer.email or "").strip().lower() or None
    return Inquiry(
        channel=ADF,
        source=(provider or first_id_source or ADF)[:100],
        department=department_for(store, None),
        first_name=first,
        last_name=last,
        phone=best_phone(prospect),
        email=email if email and "@" in email else None,
        message=customer.comments,
        vehicles=vehicles,
        ids=tuple((i.source, i.value) for i in prospect.ids),
        provider=provider,
        received_at=now,
        extra={"request_date": prospect.request_date_text, "status": prospect.status},
    )


def store_adf(
    session: Session, store: Store, document: AdfDocument, channel: IntakeChannel, now: datetime
) -> list[Stored]:
    """Each prospect a pending intake record, in one INSERT that skips the prospects whose `<id>` the
    store has (a resend: it changes nothing and is answered with the earlier record, and its lead once
    built). The worker builds the leads (`build_record`); the caller commits, then asks for that job when
    `count_new` says something new was stored."""
    table: Any = IntakeRecord.__table__
    keys: list[str | None] = []
    rows: list[dict[str, Any]] = []
    for prospect in document.prospects:
        own = dedupe_key(prospect)
        key = f"adf:{own}"[:KEY_LENGTH] if own else None
        keys.append(key)
        if key is not None and key in keys[:-1]:
            continue  # the same prospect twice in one document: stored once
        rows.append({
            "store_id": store.id, "channel": channel.value, "dedupe_key": key, "lead_id": None,
            "created": True, "data": inquiry_from_prospect(prospect, store, now).as_data(),
            "received_at": now, "claimed_at": None, "attempts": 0, "error": None,
        })
    dialect_insert: Any = postgresql.insert if session.get_bind().dialect.name == "postgresql" else sqlite.insert
    # The rows as parameters of one cached statement: SQLAlchemy sends them as one multi-row INSERT
    # ("insertmanyvalues"; a document of more than a few hundred prospects takes one per few hundred).
    inserted = session.execute(
        dialect_insert(table)
        .on_conflict_do_nothing(index_elements=[table.c.store_id, table.c.dedupe_key])
        .returning(table.c.id, table.c.dedupe_key),
        rows,
    ).all()
    new_ids = {key: record_id for record_id, key in inserted if key is not None}
    # Prospects without an <id> are always new. A multi-row INSERT numbers its rows in the order given,
    # so their ids, in order, are theirs in document order.
    keyless = iter(sorted(record_id for record_id, key in inserted if key is None))
    earlier = _earlier_records(session, store.id, [k for k in dict.fromkeys(keys) if k and k not in new_ids])
    stored: list[Stored] = []
    first_use: set[str] = set()
    for prospect, key in zip(document.prospects, keys, strict=True):
        own_id = first_id(prospect)
        external_id = own_id.value if own_id is not None else None
        if key is None:
            stored.append(Stored(intake_id=next(keyless), external_id=external_id, duplicate=False))
        elif key in new_ids and key not in first_use:
            first_use.add(key)
            stored.append(Stored(intake_id=new_ids[key], external_id=external_id, duplicate=False))
        elif key in new_ids:
            stored.append(Stored(intake_id=new_ids[key], external_id=external_id, duplicate=True))
        else:
            record = earlier[key]
            lead = session.get(Lead, record.lead_id) if record.lead_id is not None else None
            stored.append(Stored(
                intake_id=record.id, external_id=external_id, duplicate=True, lead=lead, created=record.created,
            ))
    return stored


def count_new(stored: Iterable[Stored]) -> int:
    return sum(1 for item in stored if not item.duplicate)


def _earlier_records(session: Session, store_id: int, keys: list[str]) -> dict[str, IntakeRecord]:
    if not keys:
        return {}
    found = session.scalars(
        select(IntakeRecord).where(IntakeRecord.store_id == store_id, IntakeRecord.dedupe_key.in_(keys))
    )
    return {record.dedupe_key: record for record in found if record.dedupe_key is not None}


# --- building stored records into leads (the worker) ---------------------------------------------------


def _pending(now: datetime) -> ColumnElement[bool]:
    """Not built, not failed, and claimed by nobody (or by a worker that died: claimed too long ago)."""
    return and_(
        IntakeRecord.lead_id.is_(None),
        IntakeRecord.error.is_(None),
        or_(IntakeRecord.claimed_at.is_(None), IntakeRecord.claimed_at <= now - CLAIM_TIMEOUT),
    )


def claim_pending(session: Session, now: datetime, limit: int) -> list[tuple[int, int]]:
    """Up to `limit` pending records for this worker to build, oldest first, as (id, attempt).

    A conditional UPDATE claims them (on PostgreSQL over rows locked with SKIP LOCKED, so concurrent
    workers take different rows without waiting; SQLite has one writer at a time): of two workers, each
    record goes to one. The attempt number is the claim's: `build_record` builds only under it."""
    candidates = select(IntakeRecord.id).where(_pending(now)).order_by(IntakeRecord.id).limit(limit)
    if session.get_bind().dialect.name == "postgresql":
        candidates = candidates.with_for_update(skip_locked=True)
    # A CTE, not `id IN (subquery)`: PostgreSQL may run such a subquery again for each row it updates,
    # and then claims more than `limit` rows.
    claimable = candidates.cte("claimable")
    claimed = session.execute(
        update(IntakeRecord)
        .where(IntakeRecord.id == claimable.c.id, _pending(now))
        .values(claimed_at=now, attempts=IntakeRecord.attempts + 1)
        .returning(IntakeRecord.id, IntakeRecord.attempts)
        .execution_options(synchronize_session=False)
    ).all()
    return sorted((record_id, attempt) for record_id, attempt in claimed)


def backlog(session: Session, now: datetime) -> Backlog:
    """ADF prospects stored and not built yet: waiting for a worker, or being built (claimed)."""
    rows = session.execute(
        select(IntakeRecord.claimed_at.is_not(None), func.count(), func.min(IntakeRecord.received_at))
        .where(IntakeRecord.lead_id.is_(None), IntakeRecord.error.is_(None))
        .group_by(IntakeRecord.claimed_at.is_not(None))
    ).all()
    counts = {"waiting": 0, "building": 0}
    oldest: datetime | None = None
    for claimed, count, first in rows:
        counts["building" if claimed else "waiting"] += int(count)
        if first is not None and (oldest is None or first < oldest):
            oldest = first
    return Backlog(counts, max(0.0, (now - oldest).total_seconds()) if oldest is not None else 0.0)


def has_pending(session: Session, now: datetime, waiting: timedelta) -> bool:
    """A record unclaimed for `waiting` since it was stored (its job lost), or claimed by a dead worker."""
    stale = and_(
        _pending(now),
        or_(IntakeRecord.claimed_at.is_not(None), IntakeRecord.received_at <= now - waiting),
    )
    return bool(session.scalar(select(exists().where(stale))))


def build_record(session: Session, record_id: int, attempt: int, now: datetime) -> Taken | None:
    """Build the lead of a record this worker claimed (`attempt`); None when the claim is no longer
    ours (taken again after CLAIM_TIMEOUT) or the record was built meanwhile. Does not commit."""
    record = session.scalar(
        select(IntakeRecord)
        .where(
            IntakeRecord.id == record_id, IntakeRecord.attempts == attempt,
            IntakeRecord.lead_id.is_(None), IntakeRecord.error.is_(None),
        )
        .with_for_update()  # PostgreSQL: a claim taken again meanwhile waits for this build, then sees it
    )
    if record is None:
        return None
    store = required(session.get(Store, record.store_id), f"store {record.store_id}")
    return build_lead(session, store, Inquiry.from_data(record.data), record, now)


def fail_record(session: Session, record_id: int, reason: str, now: datetime) -> int:
    """A record that could not be built: marked failed with the reason (no longer pending) and put in
    front of a person, a review task on the customer's lead (opened for it when there is none) that
    shows what the prospect said. Returns the task's id. Does not commit."""
    record = required(session.get(IntakeRecord, record_id), f"intake record {record_id}")
    record.error = reason[:4000]
    record.claimed_at = None
    store = required(session.get(Store, record.store_id), f"store {record.store_id}")
    data = record.data if isinstance(record.data, dict) else {}
    phone, email = _text_of(data, "phone"), _text_of(data, "email")
    contact = contact_for_phone(session, phone) if phone else _contact_for_sender(session, email)
    source = (_text_of(data, "source") or ADF)[:100]
    origin = Origin(
        store_id=store.id, department=department_for(store, _text_of(data, "department")), source=source,
        tracked_number_id=None,
    )
    lead, _ = open_or_join_lead(session, contact, origin, now)
    owner = assign_owner(session, lead, now)
    task = ensure_task(session, lead, TaskKind.REVIEW, owner, follow_up_due(store, lead.department, now), now)
    who = " ".join(str(data.get(part) or "") for part in ("first_name", "last_name")).strip()
    task.note = (
        f"An {ADF} request from {source} could not be made into a lead ({reason}). Customer: {who or '?'}, "
        f"{mask(phone) or 'no phone'}, {email or 'no e-mail'}. It is kept as intake record #{record.id}."
    )[:2000]
    record_event(
        session, lead, "intake-failed", f"{ADF} request from {source} kept for review: no lead could be built.", now,
        {"intake_record": record.id, "reason": reason[:1000], "inquiry": data},
    )
    log.error("intake record %s could not be built and is kept for review (task %s): %s", record.id, task.id, reason)
    return task.id


def mark_failed(session: Session, record_id: int, reason: str) -> None:
    """Failed, when not even the review task could be written: the record keeps the reason."""
    session.execute(
        update(IntakeRecord)
        .where(IntakeRecord.id == record_id, IntakeRecord.lead_id.is_(None))
        .values(error=reason[:4000], claimed_at=None)
    )


def release_claim(session: Session, record_id: int, attempt: int) -> None:
    """Give back a claim whose build the database broke off, so the next job takes the record at once."""
    session.execute(
        update(IntakeRecord)
        .where(IntakeRecord.id == record_id, IntakeRecord.attempts == attempt, IntakeRecord.lead_id.is_(None))
        .values(claimed_at=None)
    )


def _text_of(data: dict[str, Any], name: str) -> str | None:
    value = data.get(name)
    return value if isinstance(value, str) and value else None


# --- e-mail ---------------------------------------------------------------------------------------------


def intake_addresses(session: Session) -> tuple[dict[str, str], list[str]]:
    """Every store's intake addresses (address -> store key) and every store key."""
    addresses: dict[str, str] = {}
    keys: list[str] = []
    for key, emails in session.execute(select(Store.key, Store.intake_emails).order_by(Store.id)):
        keys.append(key)
        for address in emails or []:
            addresses.setdefault(str(address).lower(), key)
    return addresses, keys


def stores_for(session: Session, recipients: Iterable[str]) -> list[Store]:
    """The stores some recipient names: an intake address, or <store-key>@ any domain."""
    addresses, keys = intake_addresses(session)
    named = store_keys_for(list(recipients), addresses, known_stores=keys)
    if not named:
        return []
    rows = {s.key: s for s in session.scalars(select(Store).where(Store.key.in_(named)))}
    return [rows[key] for key in named if key in rows]


def receive_mail(session: Session, raw: bytes, recipients: Sequence[str], now: datetime) -> MailResult:
    """An e-mail the intake SMTP server accepted for `recipients` (the envelope's). Does not commit."""
    parsed = read_mail(raw)
    result = MailResult()
    stores = stores_for(session, recipients) or stores_for(session, parsed.recipients)
    result.stores = [store.key for store in stores]
    for store in stores:
        for document in parsed.documents:
            result.stored.extend(store_adf(session, store, document, IntakeChannel.ADF_EMAIL, now))
        if parsed.errors or not parsed.documents:
            _unread_mail(session, store, parsed, raw, now, result)
    return result


def _unread_mail(
    session: Session, store: Store, parsed: AdfMail, raw: bytes, now: datetime, result: MailResult
) -> None:
    """No ADF in it, or broken ADF: a customer's reply goes on their lead; anything else is kept for a person."""
    sender = (parsed.sender or "").strip().lower() or None
    if not parsed.errors and sender:
        lead = _open_lead_of_email(session, store, sender)
        if lead is not None:
            _reply(session, lead, parsed, raw, now)
            result.replies.append(lead.id)
            return
    if parsed.errors:
        problem = "; ".join(error.describe() for error in parsed.errors)
    else:
        problem = "no ADF/XML lead found in the message"
    contact = _contact_for_sender(session, sender)
    origin = Origin(
        store_id=store.id, department=department_for(store, None), source=EMAIL_SOURCE, tracked_number_id=None
    )
    lead, _ = open_or_join_lead(session, contact, origin, now)
    kept = IntakeMail(
        store_id=store.id, lead_id=lead.id, sender=(parsed.sender or "")[:320] or None,
        subject=parsed.subject, message_id=(parsed.message_id or "")[:998] or None,
        problem=problem[:4000], raw=raw, received_at=now,
    )
    session.add(kept)
    session.flush()
    owner = assign_owner(session, lead, now)
    task = ensure_task(session, lead, TaskKind.REVIEW, owner, follow_up_due(store, lead.department, now), now)
    task.note = (
        f"An e-mail to the lead intake could not be read as a lead ({problem}). From: {parsed.sender or '?'}; "
        f"subject: {parsed.subject or '(none)'}. The message is kept as intake mail #{kept.id}."
    )[:2000]
    record_event(
        session, lead, "intake-mail",
        f"E-mail kept for review: {parsed.subject or '(no subject)'} ({problem}).", now,
        {"intake_mail": kept.id, "sender": parsed.sender, "subject": parsed.subject, "problem": problem,
         "preview": body_text(raw)[:PREVIEW]},
    )
    result.reviews.append(kept.id)


def _contact_for_sender(session: Session, sender: str | None) -> Contact:
    if sender:
        known = session.scalar(select(Contact).where(Contact.email == sender).order_by(Contact.id))
        if known is not None:
            return known
    contact = Contact(phone=None, email=sender)
    session.add(contact)
    session.flush()
    return contact


def _reply(session: Session, lead: Lead, parsed: AdfMail, raw: bytes, now: datetime) -> None:
    text = body_text(raw)
    record_event(
        session, lead, "email-received", f"E-mail from the customer: {parsed.subject or '(no subject)'}", now,
        {"sender": parsed.sender, "subject": parsed.subject, "body": text[:2000]},
    )
    lead.last_contact_at = now
    owner = assign_owner(session, lead, now)
    ensure_task(session, lead, TaskKind.REPLY, owner, follow_up_due(lead.store, lead.department, now), now)
    events.email_received.send(session, lead=lead, contact=lead.contact, subject=parsed.subject, now=now)


def body_text(raw: bytes) -> str:
    """The plain-text body of an e-mail (its first text/plain part), for a preview; "" when there is none."""
    try:
        message = BytesParser(policy=policy.default).parsebytes(raw)
        part = message.get_body(preferencelist=("plain",))
        content = part.get_content() if part is not None else ""
    except (ValueError, LookupError, TypeError, AttributeError):
        return ""
    return content if isinstance(content, str) else ""

