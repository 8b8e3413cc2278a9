"""What the workspace's pages read, scoped to the viewer: an agent their store's leads of their
departments, a manager their store, an API key its stores. Each query is bounded (a page of rows) and
walks an index, so a page stays fast over 100k leads and a million calls."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import and_, case, func, or_, select
from sqlalchemy.orm import Session

from gateway.dashboard.auth import Viewer
from gateway.dashboard.present import zone_info
from gateway.dashboard.timeline import CUSTOMER_TEXT_KINDS
from gateway.models import (
    Agent,
    Call,
    Contact,
    Direction,
    Lead,
    LeadEvent,
    LeadStatus,
    Message,
    Store,
    Task,
    TaskStatus,
    TrackedNumber,
)
from gateway.phones import InvalidPhone, to_e164

PAGE = 50
INBOX_WINDOW = timedelta(days=30)


def lead_scope(viewer: Viewer) -> list[Any]:
    """The conditions that keep a lead query inside what the viewer may see."""
    conditions: list[Any] = []
    if viewer.store_ids is not None:
        conditions.append(Lead.store_id.in_(viewer.store_ids))
    if viewer.departments is not None:
        conditions.append(Lead.department.in_(viewer.departments))
    return conditions


def can_see(viewer: Viewer, lead: Lead) -> bool:
    if viewer.store_ids is not None and lead.store_id not in viewer.store_ids:
        return False
    return viewer.departments is None or lead.department in viewer.departments


def visible_lead(session: Session, viewer: Viewer, lead_id: int) -> Lead | None:
    lead = session.get(Lead, lead_id) if 0 < lead_id <= 2**31 - 1 else None
    return lead if lead is not None and can_see(viewer, lead) else None


def stores(session: Session, viewer: Viewer) -> list[Store]:
    query = select(Store).order_by(Store.name)
    if viewer.store_ids is not None:
        query = query.where(Store.id.in_(viewer.store_ids))
    return list(session.scalars(query))


def agents(session: Session, viewer: Viewer) -> list[Agent]:
    query = select(Agent).where(Agent.active.is_(True)).order_by(Agent.name)
    if viewer.store_ids is not None:
        query = query.where(Agent.store_id.in_(viewer.store_ids))
    return list(session.scalars(query))


def zone_of(session: Session, viewer: Viewer) -> str:
    if viewer.agent is not None:
        return viewer.agent.store.timezone
    first = stores(session, viewer)
    return first[0].timezone if first else "America/New_York"


# --- today -------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Todo:
    task: Task
    lead: Lead
    overdue: bool
    late_response: bool
    mine: bool


def today(session: Session, viewer: Viewer, now: datetime, zone: str) -> dict[str, Any]:
    """Open tasks of visible leads (each a contact needing action), overdue first, with counts."""
    scope = lead_scope(viewer)
    mine = Task.owner_id == viewer.agent_id if viewer.agent_id is not None else None
    order: list[Any] = [case((Task.due_at < now, 0), else_=1)]
    if mine is not None:
        order.append(case((mine, 0), else_=1))
    order.append(Task.due_at)
    rows = session.execute(
        select(Task, Lead)
        .join(Lead, Lead.id == Task.lead_id)
        .where(Task.status == TaskStatus.OPEN.value, *scope)
        .order_by(*order)
        .limit(PAGE)
    ).all()
    todos = [
        Todo(
            task=task,
            lead=lead,
            overdue=task.due_at < now,
            late_response=task.kind == "reply" and task.due_at < now,
            mine=viewer.agent_id is not None and task.owner_id == viewer.agent_id,
        )
        for task, lead in rows
    ]
    open_count, overdue_count, late_count = session.execute(
        select(
            func.count(),
            func.count(case((Task.due_at < now, 1))),
            func.count(case((and_(Task.kind == "reply", Task.due_at < now), 1))),
        )
        .select_from(Task)
        .join(Lead, Lead.id == Task.lead_id)
        .where(Task.status == TaskStatus.OPEN.value, *scope)
    ).one()
    midnight = _local_midnight(now, zone)
    new_leads = session.scalar(select(func.count()).select_from(Lead).where(Lead.created_at >= midnight, *scope))
    call_scope = [Call.store_id.in_(viewer.store_ids)] if viewer.store_ids is not None else []
    missed_calls = session.scalar(
        select(func.count()).select_from(Call).where(
            Call.started_at >= midnight, Call.direction == Direction.INBOUND.value, Call.kind == "customer",
            Call.outcome.in_(["missed", "abandoned", "voicemail", "after_hours", "busy", "failed"]), *call_scope,
        )
    )
    return {
        "todos": todos,
        "counts": {
            "open": int(open_count or 0),
            "overdue": int(overdue_count or 0),
            "late": int(late_count or 0),
            "new_leads": int(new_leads or 0),
            "missed_calls": int(missed_calls or 0),
        },
    }


def _local_midnight(now: datetime, zone: str) -> datetime:
    local = now.astimezone(zone_info(zone))
    return local.replace(hour=0, minute=0, second=0, microsecond=0)


# --- leads ---------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class LeadFilters:
    q: str = ""
    store: str = ""
    status: str = ""
    owner: str = ""
    source: str = ""
    since: datetime | None = None
    until: datetime | None = None
    before: int | None = None  # the next page starts below this lead id


def search_leads(session: Session, viewer: Viewer, filters: LeadFilters) -> tuple[list[Lead], int | None]:
    query = select(Lead).where(*lead_scope(viewer))
    q = filters.q.strip()
    if q:
        query = query.where(_search_condition(session, q))
    if filters.store:
        query = query.join(Store, Store.id == Lead.store_id).where(Store.key == filters.store)
    if filters.status == "open":
        query = query.where(Lead.open_key.is_not(None))
    elif filters.status:
        query = query.where(Lead.status == filters.status)
    if filters.owner == "me" and viewer.agent_id is not None:
        query = query.where(Lead.owner_id == viewer.agent_id)
    elif filters.owner == "none":
        query = query.where(Lead.owner_id.is_(None))
    elif filters.owner:
        query = query.join(Agent, Agent.id == Lead.owner_id).where(Agent.key == filters.owner)
    if filters.source:
        query = query.where(Lead.source == filters.source)
    if filters.since is not None:
        query = query.where(Lead.created_at >= filters.since)
    if filters.until is not None:
        query = query.where(Lead.created_at < filters.until)
    if filters.before is not None:
        query = query.where(Lead.id < filters.before)
    rows = list(session.scalars(query.order_by(Lead.id.desc()).limit(PAGE + 1)))
    more = len(rows) > PAGE
    rows = rows[:PAGE]
    if viewer.agent_id is not None and filters.before is None:
        # An agent's own leads first, among the newest page.
        rows.sort(key=lambda lead: 0 if lead.owner_id == viewer.agent_id else 1)
    return rows, (min(lead.id for lead in rows) if more and rows else None)


def _search_condition(session: Session, q: str) -> Any:
    conditions: list[Any] = []
    code = q.lstrip("#").strip().upper()
    if code.isalnum() and 3 <= len(code) <= 16:
        conditions.append(Lead.code == code)
    digits = "".join(ch for ch in q if ch.isdigit())
    if len(digits) >= 7:
        try:
            phone = to_e164(q)
        except InvalidPhone:
            phone = None
        if phone is not None:
            conditions.append(Lead.contact_id.in_(select(Contact.id).where(Contact.phone == phone)))
    if not digits and len(q) >= 2:
        pattern = f"{q.lower()[:50]}%"
        conditions.append(
            Lead.contact_id.in_(
                select(Contact.id).where(
                    or_(func.lower(Contact.first_name).like(pattern), func.lower(Contact.last_name).like(pattern))
                )
            )
        )
    return or_(*conditions) if conditions else Lead.id.is_(None)


def sources(session: Session, viewer: Viewer) -> list[str]:
    query = select(TrackedNumber.source).distinct().order_by(TrackedNumber.source)
    if viewer.store_ids is not None:
        query = query.where(TrackedNumber.store_id.in_(viewer.store_ids))
    return [s for s in session.scalars(query) if s]


# --- inbox -------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Thread:
    lead: Lead
    last: Message
    waiting: bool  # the customer's text is the latest word: waiting for us
    waiting_since: datetime | None


def inbox(session: Session, viewer: Viewer, now: datetime) -> list[Thread]:
    """One thread per lead with texts in the last 30 days; the ones waiting for us first, oldest wait first."""
    since = now - INBOX_WINDOW
    store_scope = [Message.store_id.in_(viewer.store_ids)] if viewer.store_ids is not None else []
    latest = (
        select(
            Message.lead_id.label("lead_id"),
            func.max(Message.id).label("last_id"),
            func.max(case((Message.direction == Direction.INBOUND.value, Message.id))).label("last_in"),
            func.max(case((Message.direction == Direction.OUTBOUND.value, Message.id))).label("last_out"),
        )
        .where(
            Message.created_at >= since, Message.lead_id.is_not(None), Message.kind.in_(CUSTOMER_TEXT_KINDS),
            or_(Message.agent_id.is_(None), Message.direction == Direction.OUTBOUND.value), *store_scope,
        )
        .group_by(Message.lead_id)
        .subquery()
    )
    rows = session.execute(
        select(Lead, Message, latest.c.last_in, latest.c.last_out)
        .join(latest, latest.c.lead_id == Lead.id)
        .join(Message, Message.id == latest.c.last_id)
        .where(*lead_scope(viewer))
        .order_by(latest.c.last_id.desc())
        .limit(200)
    ).all()
    waiting_ids = [last_in for _, _, last_in, last_out in rows if last_in and (not last_out or last_in > last_out)]
    waited_at = dict(
        session.execute(select(Message.id, Message.created_at).where(Message.id.in_(waiting_ids))).tuples().all()
    ) if waiting_ids else {}
    threads = [
        Thread(lead, last, bool(last_in and (not last_out or last_in > last_out)), waited_at.get(last_in))
        for lead, last, last_in, last_out in rows
    ]
    threads.sort(key=lambda t: (0, t.waiting_since) if t.waiting and t.waiting_since else (1, now - t.last.created_at))
    return threads[:PAGE]


def conversation(session: Session, lead: Lead, limit: int = 100) -> list[Message]:
    rows = list(
        session.scalars(
            select(Message)
            .where(
                Message.lead_id == lead.id, Message.kind.in_(CUSTOMER_TEXT_KINDS),
                or_(Message.agent_id.is_(None), Message.direction == Direction.OUTBOUND.value),
            )
            .order_by(Message.id.desc())
            .limit(limit)
        )
    )
    return rows[::-1]


# --- tasks and calls ---------------------------------------------------------------------------------------


def open_tasks(session: Session, viewer: Viewer, now: datetime, mine_only: bool) -> list[tuple[Task, Lead]]:
    query = (
        select(Task, Lead)
        .join(Lead, Lead.id == Task.lead_id)
        .where(Task.status == TaskStatus.OPEN.value, *lead_scope(viewer))
    )
    if mine_only and viewer.agent_id is not None:
        query = query.where(Task.owner_id == viewer.agent_id)
    order: list[Any] = []
    if viewer.agent_id is not None and not mine_only:
        order.append(case((Task.owner_id == viewer.agent_id, 0), else_=1))
    return [(t, lead) for t, lead in session.execute(query.order_by(*order, Task.due_at).limit(100)).all()]


def recently_done(session: Session, viewer: Viewer, now: datetime) -> list[tuple[Task, Lead]]:
    query = (
        select(Task, Lead)
        .join(Lead, Lead.id == Task.lead_id)
        .where(Task.status == TaskStatus.DONE.value, Task.completed_at >= now - timedelta(days=1), *lead_scope(viewer))
        .order_by(Task.completed_at.desc())
        .limit(20)
    )
    return [(t, lead) for t, lead in session.execute(query).all()]


@dataclass(frozen=True)
class CallFilters:
    store: str = ""
    outcome: str = ""
    agent: str = ""
    since: datetime | None = None
    until: datetime | None = None
    voicemail: bool = False
    before: datetime | None = None


def call_log(session: Session, viewer: Viewer, filters: CallFilters) -> tuple[list[tuple[Call, Lead | None]], Any]:
    query = (
        select(Call, Lead)
        .outerjoin(Lead, Lead.id == Call.lead_id)
        .where(Call.kind.in_(["customer", "click_to_call"]))
    )
    if viewer.store_ids is not None:
        query = query.where(Call.store_id.in_(viewer.store_ids))
    if viewer.departments is not None:
        query = query.where(or_(Lead.id.is_(None), Lead.department.in_(viewer.departments)))
    if filters.store:
        query = query.where(Call.store_id.in_(select(Store.id).where(Store.key == filters.store)))
    if filters.outcome == "unanswered":
        query = query.where(Call.outcome.in_(["missed", "abandoned", "voicemail", "after_hours", "busy", "failed"]))
    elif filters.outcome:
        query = query.where(Call.outcome == filters.outcome)
    if filters.agent:
        query = query.where(Call.answered_by_id.in_(select(Agent.id).where(Agent.key == filters.agent)))
    if filters.voicemail:
        query = query.where(Call.voicemail_seconds.is_not(None))
    if filters.since is not None:
        query = query.where(Call.started_at >= filters.since)
    if filters.until is not None:
        query = query.where(Call.started_at < filters.until)
    if filters.before is not None:
        query = query.where(Call.started_at < filters.before)
    rows: list[tuple[Call, Lead | None]] = [
        (c, lead) for c, lead in session.execute(query.order_by(Call.started_at.desc()).limit(PAGE + 1)).all()
    ]
    more = len(rows) > PAGE
    rows = rows[:PAGE]
    return rows, (rows[-1][0].started_at if more and rows else None)


# --- live ----------------------------------------------------------------------------------------------------


def live_state(session: Session, viewer: Viewer) -> str:
    """A fingerprint that changes when a contact, text or task the viewer may see appears or changes."""
    store_scope_call = [Call.store_id.in_(viewer.store_ids)] if viewer.store_ids is not None else []
    store_scope_msg = [Message.store_id.in_(viewer.store_ids)] if viewer.store_ids is not None else []
    scope = lead_scope(viewer)
    calls = session.scalar(select(func.max(Call.id)).where(*store_scope_call))
    processed = session.scalar(
        select(func.count()).select_from(Call).where(Call.processed_at.is_not(None), Call.id > (calls or 0) - 50,
                                                     *store_scope_call)
    )
    texts = session.scalar(select(func.max(Message.id)).where(*store_scope_msg))
    tasks = session.scalar(select(func.max(Task.id)).join(Lead, Lead.id == Task.lead_id).where(*scope))
    open_tasks = session.scalar(
        select(func.count()).select_from(Task).join(Lead, Lead.id == Task.lead_id)
        .where(Task.status == TaskStatus.OPEN.value, *scope)
    )
    events = session.scalar(select(func.max(LeadEvent.id)))
    return f"{calls or 0}.{processed or 0}.{texts or 0}.{tasks or 0}.{open_tasks or 0}.{events or 0}"


OPEN_STATUSES = [s.value for s in LeadStatus if s.is_open]
