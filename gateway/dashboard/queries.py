"""What the workspace's pages read, scoped to the viewer: an agent their store's leads of their
departments, a manager their store, an API key its stores. Each query is bounded (a page of rows) and
walks an index, so a page stays fast over 100k leads and a million calls."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import and_, case, func, or_, select
from sqlalchemy.orm import Session, aliased, contains_eager, lazyload

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
    rows = [
        (task, task.lead)
        for task in session.scalars(
            _tasks_with_leads()
            .where(Task.status == TaskStatus.OPEN.value, *scope)
            .order_by(Task.due_at)  # the earliest due first: the overdue ones, longest overdue at the top
            .limit(PAGE)
        )
    ]
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


def _tasks_with_leads() -> Any:
    """Tasks with their leads from one join (not a second, eager one), owners from the identity map."""
    return select(Task).join(Task.lead).options(contains_eager(Task.lead), lazyload(Task.owner))


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
    """One thread per lead with texts in the last 30 days: the ones waiting for us first (the longest wait
    at the top), then the newest. The threads are chosen and ordered from the (store, time) index of texts
    alone; only the page's leads and last texts are read."""
    since = now - INBOX_WINDOW
    last_id = func.max(Message.id)
    last_in = func.max(case((Message.direction == Direction.INBOUND.value, Message.id)))
    last_out = func.coalesce(func.max(case((Message.direction == Direction.OUTBOUND.value, Message.id))), 0)
    waiting_since = case((last_in > last_out, last_in))
    chosen = (
        select(
            Message.lead_id.label("lead_id"), last_id.label("last_id"), waiting_since.label("waiting_id"),
        )
        .where(
            Message.created_at >= since, Message.lead_id.is_not(None), Message.kind.in_(CUSTOMER_TEXT_KINDS),
            or_(Message.agent_id.is_(None), Message.direction == Direction.OUTBOUND.value),
        )
        .group_by(Message.lead_id)
        .order_by(waiting_since.asc().nulls_last(), last_id.desc())
        .limit(PAGE)
    )
    if viewer.store_ids is not None:
        chosen = chosen.where(Message.store_id.in_(viewer.store_ids))
    if viewer.departments is not None:
        chosen = chosen.join(Lead, Lead.id == Message.lead_id).where(Lead.department.in_(viewer.departments))
    picked = chosen.subquery()
    waiting_text = aliased(Message)
    rows = session.execute(
        select(Lead, Message, waiting_text.created_at)
        .join(picked, picked.c.lead_id == Lead.id)
        .join(Message, Message.id == picked.c.last_id)
        .outerjoin(waiting_text, waiting_text.id == picked.c.waiting_id)
        .where(*lead_scope(viewer))
        .order_by(picked.c.waiting_id.asc().nulls_last(), picked.c.last_id.desc())
    ).all()
    return [Thread(lead, last, waited is not None, waited) for lead, last, waited in rows]


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
    query = _tasks_with_leads().where(Task.status == TaskStatus.OPEN.value, *lead_scope(viewer))
    if mine_only and viewer.agent_id is not None:
        query = query.where(Task.owner_id == viewer.agent_id)
    return [(t, t.lead) for t in session.scalars(query.order_by(Task.due_at).limit(100))]


def recently_done(session: Session, viewer: Viewer, now: datetime) -> list[tuple[Task, Lead]]:
    query = (
        _tasks_with_leads()
        .where(
            # Through the (status, due_at) index: tasks done in the last day were due in the last week.
            Task.status == TaskStatus.DONE.value, Task.due_at >= now - timedelta(days=7),
            Task.completed_at >= now - timedelta(days=1), *lead_scope(viewer),
        )
        .order_by(Task.completed_at.desc())
        .limit(20)
    )
    return [(t, t.lead) for t in session.scalars(query)]


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
    """A fingerprint that changes when a contact, text or task appears: a few reads of the newest ids, each
    the end of an index, cheap enough to ask every two seconds per open page. Calls and texts are the
    viewer's stores'; tasks and lead events are the group's (a page refreshed for nothing costs less than
    a scoped count on every poll)."""
    call_scope = [Call.store_id.in_(viewer.store_ids)] if viewer.store_ids is not None else []
    text_scope = [Message.store_id.in_(viewer.store_ids)] if viewer.store_ids is not None else []
    calls = session.scalar(select(func.max(Call.id)).where(*call_scope)) or 0
    # A call becomes a lead and a task when it ends: count the recent ones that have.
    settled = session.scalar(
        select(func.count()).select_from(Call).where(Call.id > calls - 50, Call.processed_at.is_not(None), *call_scope)
    )
    texts = session.scalar(select(func.max(Message.id)).where(*text_scope))
    tasks = session.scalar(select(func.max(Task.id)))
    events = session.scalar(select(func.max(LeadEvent.id)))
    return f"{calls}.{settled or 0}.{texts or 0}.{tasks or 0}.{events or 0}"


OPEN_STATUSES = [s.value for s in LeadStatus if s.is_open]
