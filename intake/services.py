"""Leads from forms and ADF: a customer's written request becomes a lead with an owner and a task, and
`events.lead_received` sets the rest going (the cadence's first text and acknowledgement, the owner's
alert, the CRM records), all in the transaction that takes the request in.

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
from datetime import datetime
from email import policy
from email.parser import BytesParser
from typing import Any

from sqlalchemy import select
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
from gateway.models import Contact, Lead, Store, TaskKind
from gateway.phones import mask
from intake.adf import AdfDocument, Prospect, best_phone, dedupe_key
from intake.mail import AdfMail, read_mail
from intake.mail import store_keys_for as store_keys_for
from intake.models import IntakeChannel, IntakeMail, IntakeRecord

log = logging.getLogger(__name__)

DEFAULT_DEPARTMENT = "sales"
WEB_SOURCE = "Website"
EMAIL_SOURCE = "E-mail"
PREVIEW = 300


@dataclass(frozen=True)
class Taken:
    """What became of one request: its lead, whether it opened the lead, whether it was a repeat."""

    lead: Lead
    created: bool
    duplicate: bool
    intake_id: int


@dataclass
class MailResult:
    """What one e-mail to the intake became."""

    taken: list[Taken] = field(default_factory=list)
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
        key = key[:300]
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
    return session.scalar(
        select(Lead)
        .join(Contact, Contact.id == Lead.contact_id)
        .where(Lead.store_id == store.id, Lead.open_key.is_not(None), Contact.email == email)
        .order_by(Lead.id)
        .limit(1)
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


def receive_adf(
    session: Session, store: Store, document: AdfDocument, channel: IntakeChannel, now: datetime
) -> list[Taken]:
    """One lead per prospect; a prospect whose `<id>` this store has seen changes nothing."""
    taken = []
    for prospect in document.prospects:
        key = dedupe_key(prospect)
        inquiry = inquiry_from_prospect(prospect, store, now)
        taken.append(
            receive_inquiry(
                session, store, inquiry, channel=channel, key=f"adf:{key}" if key else None, now=now
            )
        )
    return taken


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
            result.taken.extend(receive_adf(session, store, document, IntakeChannel.ADF_EMAIL, now))
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

