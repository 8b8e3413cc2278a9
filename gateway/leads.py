"""Contacts, leads and tasks: every contact ends as a lead with an owner and, if unanswered, a task; and
the inquiry, what a customer asked for in writing (a web form, an ADF prospect)."""

from __future__ import annotations

import secrets
from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import event, func, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, SessionTransaction

from gateway import events
from gateway.database import insert_returning_or_none, required
from gateway.hours import is_open, next_opening
from gateway.models import (
    Agent,
    Contact,
    Lead,
    LeadEvent,
    LeadStatus,
    Role,
    Store,
    Task,
    TaskKind,
    TaskStatus,
)

_CODE_ALPHABET = "23456789ABCDEFGHJKMNPQRSTUVWXYZ"
FIRST_RESPONSE_STATUSES = {LeadStatus.NEW.value, LeadStatus.ATTEMPTING_CONTACT.value}


@dataclass(frozen=True)
class Origin:
    """Where a contact came in: the store, department and source of the tracked number it reached."""

    store_id: int
    department: str
    source: str | None
    tracked_number_id: int | None
    tracked_number: str | None = None
    cadence_key: str | None = None
    source_weight: int = 0


# Leads opened in the session's transaction, each with the rows written for it since (its tasks, its
# cadences). Nothing else can refer to such a lead yet, so whether it has an open task or has run a
# cadence is read from these, not queried.
_OPENED_KEY = "gateway.leads.opened"
# Contacts created in the session's transaction: none of them has a lead yet.
_CREATED_CONTACTS_KEY = "gateway.leads.created_contacts"


def opened_here(session: Session, lead: Lead) -> bool:
    """Whether `lead` was opened in the session's current transaction."""
    return lead.id in session.info.get(_OPENED_KEY, {})


def written_here(session: Session, lead: Lead) -> list[Any]:
    """The rows `note_written` kept for a lead opened in this transaction."""
    rows: list[Any] = session.info.get(_OPENED_KEY, {}).get(lead.id, [])
    return rows


def note_written(session: Session, lead: Lead, row: Any) -> None:
    """Keep a row written for the lead, if the lead was opened in this transaction (see `written_here`)."""
    opened: dict[int, list[Any]] = session.info.get(_OPENED_KEY, {})
    if lead.id in opened:
        opened[lead.id].append(row)


@event.listens_for(Session, "after_transaction_end")
def _forget_opened(session: Session, transaction: SessionTransaction) -> None:
    # The transaction's end, or a savepoint's (a lead opened in a savepoint rolled back is gone); not the
    # inner transaction each flush runs in.
    if transaction.parent is None or transaction.nested:
        session.info.pop(_OPENED_KEY, None)
        session.info.pop(_CREATED_CONTACTS_KEY, None)


def new_lead_code() -> str:
    return "".join(secrets.choice(_CODE_ALPHABET) for _ in range(6))


def contact_for_phone(session: Session, phone: str | None) -> Contact:
    """The contact of an E.164 phone (created once, race-free); a fresh one for a withheld caller."""
    if phone is None:
        contact = Contact(phone=None)
        session.add(contact)
        session.flush()
        session.info.setdefault(_CREATED_CONTACTS_KEY, set()).add(contact.id)
        return contact
    existing = session.scalar(select(Contact).where(Contact.phone == phone))
    if existing is not None:
        return existing
    created = insert_returning_or_none(session, Contact, {"phone": phone}, ["phone"])
    if created is not None:
        session.info.setdefault(_CREATED_CONTACTS_KEY, set()).add(created.id)
        return created
    # Inserted by the concurrent transaction the insert waited for.
    return required(session.scalar(select(Contact).where(Contact.phone == phone)), "contact")


def open_or_join_lead(
    session: Session, contact: Contact, origin: Origin, now: datetime
) -> tuple[Lead, bool]:
    """The open lead of this phone at this store, or a new one. True when the lead is new."""
    key = f"{contact.id}:{origin.store_id}"
    # A contact created in this transaction has no lead to join.
    lead = (
        None
        if contact.id in session.info.get(_CREATED_CONTACTS_KEY, ())
        else session.scalar(select(Lead).where(Lead.open_key == key))
    )
    if lead is not None:
        lead.last_contact_at = now
        return lead, False
    created = insert_returning_or_none(
        session,
        Lead,
        {
            "code": new_lead_code(),
            "contact_id": contact.id,
            "store_id": origin.store_id,
            "open_key": key,
            "department": origin.department,
            "source": origin.source,
            "tracked_number_id": origin.tracked_number_id,
            "tracked_number": origin.tracked_number,
            "status": LeadStatus.NEW.value,
            "created_at": now,
            "updated_at": now,
            "last_contact_at": now,
        },
        ["open_key"],
    )
    if created is None:  # opened by the concurrent transaction the insert waited for
        return required(session.scalar(select(Lead).where(Lead.open_key == key)), f"open lead {key}"), False
    session.info.setdefault(_OPENED_KEY, {})[created.id] = []
    events.lead_created.send(session, lead=created, now=now)
    return created, True


def on_duty(agent: Agent, store: Store, department: str, now: datetime) -> bool:
    schedule = agent.schedule if agent.schedule is not None else store.hours.get(department)
    return agent.active and is_open(schedule, store.timezone, now)


def _open_task_counts(session: Session, agent_ids: list[int]) -> dict[int, int]:
    if not agent_ids:
        return {}
    rows = session.execute(
        select(Task.owner_id, func.count())
        .where(Task.owner_id.in_(agent_ids), Task.status == TaskStatus.OPEN.value)
        .group_by(Task.owner_id)
    ).all()
    return {owner: count for owner, count in rows if owner is not None}


def choose_owner(
    session: Session,
    store: Store,
    department: str,
    now: datetime,
    preferred: Agent | None = None,
    exclude: set[int] | None = None,
) -> Agent | None:
    """The preferred agent if on duty; else the least-loaded on-duty agent of the department.

    Nobody on duty (after hours): the preferred agent, else the least-loaded agent of the department,
    else any active agent of the store, managers first, so a lead never goes without an owner.
    """
    skip = exclude or set()
    if preferred is not None and preferred.id not in skip and on_duty(preferred, store, department, now):
        return preferred
    agents = [
        a
        for a in session.scalars(
            select(Agent).where(Agent.store_id == store.id, Agent.active.is_(True)).order_by(Agent.id)
        )
        if a.id not in skip
    ]
    in_department = [a for a in agents if department in (a.departments or [])]
    counts = _open_task_counts(session, [a.id for a in in_department])

    def load(agent: Agent) -> tuple[int, int, int]:
        return (0 if agent.role == Role.AGENT.value else 1, counts.get(agent.id, 0), agent.id)

    duty = [a for a in in_department if on_duty(a, store, department, now)]
    if duty:
        return min(duty, key=load)
    if preferred is not None and preferred.active and preferred.id not in skip:
        return preferred
    if in_department:
        return min(in_department, key=load)
    if agents:
        return min(agents, key=lambda a: (0 if a.role == Role.MANAGER.value else 1, a.id))
    return None


def follow_up_due(store: Store, department: str, now: datetime) -> datetime:
    """now + SLA while the department is open; its next opening + grace when closed."""
    schedule = store.hours.get(department)
    if is_open(schedule, store.timezone, now):
        return now + timedelta(seconds=store.response_sla_seconds)
    opening = next_opening(schedule, store.timezone, now)
    if opening is None:
        return now + timedelta(seconds=store.response_sla_seconds)
    return opening + timedelta(seconds=store.after_hours_grace_seconds)


def assign_owner(session: Session, lead: Lead, now: datetime) -> Agent | None:
    """Give the lead an owner if it has none (or its owner left); the lead's owner comes first."""
    preferred = lead.owner if lead.owner is not None and lead.owner.active else None
    owner = choose_owner(session, lead.store, lead.department, now, preferred=preferred)
    if owner is not None and lead.owner_id != owner.id and (lead.owner is None or not lead.owner.active):
        change_owner(session, lead, owner, now)
    return lead.owner if lead.owner is not None else owner


def change_owner(session: Session, lead: Lead, owner: Agent, now: datetime) -> None:
    old = lead.owner.key if lead.owner is not None else None
    lead.owner_id = owner.id
    lead.owner = owner
    lead.updated_at = now
    record_event(session, lead, "owner", f"Owner set to {owner.name}", now, {"from": old, "to": owner.key})
    events.lead_updated.send(session, lead=lead, changes={"owner": (old, owner.key)}, now=now)


def ensure_task(
    session: Session, lead: Lead, kind: TaskKind, owner: Agent | None, due_at: datetime, now: datetime
) -> Task:
    """The lead's open task of this kind, or a new one: a second missed call does not add a second."""
    if opened_here(session, lead):
        for row in written_here(session, lead):
            if isinstance(row, Task) and row.kind == kind.value and row.status == TaskStatus.OPEN.value:
                return row
    else:
        # The id alone: a task's row brings its lead, owner and their stores joined, and mostly there is none.
        open_id = session.scalar(
            select(Task.id).where(
                Task.lead_id == lead.id, Task.kind == kind.value, Task.status == TaskStatus.OPEN.value
            )
        )
        if open_id is not None:
            return required(session.get(Task, open_id), f"task {open_id}")
    task = Task(
        lead_id=lead.id,
        kind=kind.value,
        owner_id=owner.id if owner else None,
        due_at=due_at,
        status=TaskStatus.OPEN.value,
        created_at=now,
    )
    task.lead = lead
    task.owner = owner
    session.add(task)
    session.flush()
    note_written(session, lead, task)
    events.task_created.send(session, task=task, now=now)
    return task


def complete_tasks(
    session: Session,
    lead: Lead,
    now: datetime,
    by: str,
    kinds: set[str] | None = None,
    created_by: datetime | None = None,
) -> list[Task]:
    """Close the lead's open tasks (of `kinds`; opened by `created_by`): the agent reached the customer."""
    query = select(Task).where(Task.lead_id == lead.id, Task.status == TaskStatus.OPEN.value)
    if kinds is not None:
        query = query.where(Task.kind.in_(kinds))
    if created_by is not None:
        query = query.where(Task.created_at <= created_by)
    done = list(session.scalars(query))
    for task in done:
        task.status = TaskStatus.DONE.value
        task.completed_at = now
        task.completed_by = by
        events.task_completed.send(session, task=task, now=now)
    return done


def record_human_contact(
    session: Session, lead: Lead, agent: Agent | None, reason: str, now: datetime, at: datetime | None = None
) -> None:
    """A person reached the customer: first response, status contacted, tasks closed, cadences stop.

    `at`: when they spoke, when that was before `now` (an answered call's end is recorded as the call
    ends, and under load after later contacts were). What the customer did afterwards (a missed call's
    callback task, its cadence) was not answered by it and stays."""
    changes: dict[str, Any] = {}
    if lead.first_response_at is None:
        lead.first_response_at = now
        changes["first_response_at"] = (None, now.isoformat())
    if lead.status in FIRST_RESPONSE_STATUSES:
        changes["status"] = (lead.status, LeadStatus.CONTACTED.value)
        lead.status = LeadStatus.CONTACTED.value
    if lead.owner_id is None and agent is not None:
        lead.owner_id = agent.id
        lead.owner = agent
        changes["owner"] = (None, agent.key)
    lead.updated_at = now
    by = agent.key if agent is not None else reason
    complete_tasks(
        session, lead, now, by=by, kinds={TaskKind.CALLBACK.value, TaskKind.REPLY.value}, created_by=at
    )
    events.human_contact.send(session, lead=lead, reason=reason, now=now, at=at)
    if changes:
        events.lead_updated.send(session, lead=lead, changes=changes, now=now, at=at)


def record_event(
    session: Session,
    lead: Lead,
    kind: str,
    text: str,
    now: datetime,
    data: dict[str, Any] | None = None,
) -> None:
    session.add(LeadEvent(lead_id=lead.id, kind=kind, text=text, data=data or {}, at=now))


def set_status(session: Session, lead: Lead, status: LeadStatus, now: datetime) -> None:
    """Move a lead; a closed lead frees its phone for a new lead at that store."""
    old = lead.status
    if old == status.value:
        return
    lead.status = status.value
    lead.updated_at = now
    if not status.is_open:
        lead.open_key = None
        lead.closed_at = now
        session.execute(
            update(Task)
            .where(Task.lead_id == lead.id, Task.status == TaskStatus.OPEN.value)
            .values(status=TaskStatus.CANCELLED.value, completed_at=now, completed_by="lead-closed")
        )
    record_event(session, lead, "status", f"Status {old} -> {status.value}", now)
    events.lead_updated.send(session, lead=lead, changes={"status": (old, status.value)}, now=now)


def complete_task(session: Session, task: Task, by: str, now: datetime) -> bool:
    """Mark an open task done, claimed by a conditional update: two people tapping at once complete it (and
    tell the CRM) once. False when it was not open any more."""
    done = session.execute(
        update(Task)
        .where(Task.id == task.id, Task.status == TaskStatus.OPEN.value)
        .values(status=TaskStatus.DONE.value, completed_at=now, completed_by=by)
        .execution_options(synchronize_session=False)
    )
    if not getattr(done, "rowcount", 0):
        return False
    session.refresh(task)
    events.task_completed.send(session, task=task, now=now)
    return True


class OpenLeadExists(Exception):
    """Reopening a lead whose phone has another open lead at the store (at most one open lead)."""

    def __init__(self, other_id: int | None) -> None:
        super().__init__(f"lead {other_id} is open for this phone at this store")
        self.other_id = other_id


UNCHANGED: Any = object()


def local_words(moment: datetime, zone: str) -> str:
    """Tue 24 Nov 2026, 3:30 pm EST: a time as the store's people read it."""
    local = moment.astimezone(ZoneInfo(zone))
    hour = local.strftime("%I").lstrip("0")
    return f"{local.strftime('%a')} {local.day} {local.strftime('%b %Y')}, {hour}:{local.strftime('%M %p').lower()}" \
        f" {local.strftime('%Z')}"


def update_lead(
    session: Session,
    lead: Lead,
    now: datetime,
    by: str,
    *,
    status: LeadStatus | None = None,
    owner: Agent | None = None,
    appointment: datetime | None = UNCHANGED,
) -> None:
    """Change a lead's status, owner and appointment, each told in its timeline and to the subscribers.
    Raises OpenLeadExists when reopening would make a second open lead for the phone at the store."""
    if status is not None and status.is_open and not LeadStatus(lead.status).is_open:
        _reopen(session, lead)
    if owner is not None and lead.owner_id != owner.id:
        change_owner(session, lead, owner, now)
    if appointment is not UNCHANGED and appointment != lead.appointment_at:
        old = lead.appointment_at
        lead.appointment_at = appointment
        lead.updated_at = now
        text = (
            f"Appointment set for {local_words(appointment, lead.store.timezone)}" if appointment
            else "Appointment cleared"
        )
        record_event(session, lead, "appointment", text, now, {"by": by})
        events.lead_updated.send(
            session,
            lead=lead,
            changes={"appointment_at": (_iso(old), _iso(appointment))},
            now=now,
        )
    if status is not None:
        set_status(session, lead, status, now)


def _iso(moment: datetime | None) -> str | None:
    return moment.isoformat() if moment is not None else None


def _reopen(session: Session, lead: Lead) -> None:
    key = f"{lead.contact_id}:{lead.store_id}"
    other = session.scalar(select(Lead.id).where(Lead.open_key == key, Lead.id != lead.id))
    if other is not None:
        raise OpenLeadExists(other)
    lead.open_key = key
    lead.closed_at = None
    try:
        session.flush()  # the unique open_key decides if another request reopened one meanwhile
    except IntegrityError:
        session.rollback()
        raise OpenLeadExists(None) from None


# --- inquiries: what a customer asked for in writing (a web form, an ADF prospect) -----------------------

WEB_FORM = "web form"
ADF = "ADF"


@dataclass(frozen=True, slots=True, kw_only=True)
class Vehicle:
    year: int | None = None
    make: str | None = None
    model: str | None = None
    trim: str | None = None
    vin: str | None = None
    stock: str | None = None
    interest: str = "buy"  # buy | lease | sell | trade-in | test-drive (ADF's words)
    status: str | None = None  # new | used

    def describe(self) -> str:
        """"2024 Honda Civic EX" (what is known of it); the VIN or stock number when nothing else is."""
        words = [str(self.year) if self.year else "", self.make or "", self.model or "", self.trim or ""]
        text = " ".join(word for word in words if word)
        if text:
            return text
        if self.vin:
            return f"VIN {self.vin}"
        return f"stock #{self.stock}" if self.stock else ""


@dataclass(frozen=True, slots=True, kw_only=True)
class SmsConsent:
    """The customer's agreement to be texted, as the form recorded it: the words shown, when, from where."""

    granted: bool
    text: str | None = None
    at: datetime | None = None
    ip: str | None = None

    def describe(self) -> str:
        if not self.granted:
            return "SMS consent: not given"
        parts = [f"given {self.at.isoformat(timespec='seconds')}" if self.at else "given"]
        if self.ip:
            parts.append(f"from {self.ip}")
        text = f"SMS consent: {', '.join(parts)}"
        return f'{text}; text shown: "{self.text}"' if self.text else text


@dataclass(frozen=True, slots=True, kw_only=True)
class Inquiry:
    """One customer's request. `phone` is E.164, `email` lower-case; `ids` are (source, id) pairs the
    sender gave it (a form's external_id, an ADF prospect's <id source=...>)."""

    channel: str  # WEB_FORM | ADF
    source: str
    department: str
    first_name: str | None = None
    last_name: str | None = None
    phone: str | None = None
    email: str | None = None
    message: str | None = None
    vehicles: tuple[Vehicle, ...] = ()
    ids: tuple[tuple[str | None, str], ...] = ()
    provider: str | None = None  # the site that produced an ADF lead (Cars.com, Autotrader...)
    sms_consent: SmsConsent | None = None
    received_at: datetime | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def name(self) -> str | None:
        return " ".join(part for part in (self.first_name, self.last_name) if part) or None

    @property
    def sms_allowed(self) -> bool:
        return self.sms_consent is not None and self.sms_consent.granted

    def vehicle_text(self) -> str:
        return "; ".join(text for text in (v.describe() for v in self.vehicles) if text)

    def as_data(self) -> dict[str, Any]:
        """JSON-ready: for the intake's record, the lead's timeline and the CRM's webhook."""
        data = asdict(self)
        data["vehicles"] = [asdict(v) for v in self.vehicles]
        data["ids"] = [{"source": source, "id": value} for source, value in self.ids]
        if self.sms_consent is not None:
            consent = asdict(self.sms_consent)
            consent["at"] = self.sms_consent.at.isoformat() if self.sms_consent.at else None
            data["sms_consent"] = consent
        data["received_at"] = self.received_at.isoformat() if self.received_at else None
        return data

    @classmethod
    def from_data(cls, data: dict[str, Any]) -> Inquiry:
        """The inquiry `as_data` wrote (an intake record's, built into a lead later by the worker)."""
        consent = data.get("sms_consent")
        return cls(
            channel=data["channel"],
            source=data["source"],
            department=data["department"],
            first_name=data.get("first_name"),
            last_name=data.get("last_name"),
            phone=data.get("phone"),
            email=data.get("email"),
            message=data.get("message"),
            vehicles=tuple(Vehicle(**vehicle) for vehicle in data.get("vehicles") or ()),
            ids=tuple((item.get("source"), item["id"]) for item in data.get("ids") or ()),
            provider=data.get("provider"),
            sms_consent=None if consent is None else SmsConsent(
                granted=bool(consent["granted"]), text=consent.get("text"), at=_moment(consent.get("at")),
                ip=consent.get("ip"),
            ),
            received_at=_moment(data.get("received_at")),
            extra=dict(data.get("extra") or {}),
        )


def _moment(text: str | None) -> datetime | None:
    return datetime.fromisoformat(text) if text else None
