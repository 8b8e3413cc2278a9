"""Escalation and the leak ledger: overdue follow-ups alert a manager, then move to the next agent.

An open task past its due time alerts the department's managers once; past a second limit it moves to the
next on-duty agent. A lead nobody answered within its SLA is marked leaked, with why.
"""


import logging
from datetime import datetime, timedelta

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from gateway import events, runtime
from gateway.agents.alerts import describe, managers_of, send_alert
from gateway.agents.click_to_call import Outcome, click_to_call_url
from gateway.leads import (
    change_owner,
    choose_owner,
    on_duty,
    record_event,
)
from gateway.models import (
    Agent,
    Call,
    Lead,
    Store,
    Task,
    TaskKind,
    TaskStatus,
)

log = logging.getLogger(__name__)

# The tasks escalation watches: follow-ups owed to a customer who reached out.
WATCHED_TASKS = (TaskKind.CALLBACK.value, TaskKind.REPLY.value)
# Leak reasons, for the ledger managers read.
NOBODY_ON_DUTY = "nobody on duty"
OWNER_DID_NOT_ACT = "owner did not act"
CUSTOMER_UNREACHABLE = "customer unreachable"



def _overdue_tasks(session: Session, now: datetime, level: int, before: datetime) -> list[Task]:
    return list(
        session.scalars(
            select(Task)
            .where(
                Task.status == TaskStatus.OPEN.value,
                Task.kind.in_(WATCHED_TASKS),
                Task.escalation_level == level,
                Task.due_at <= before,
            )
            .order_by(Task.due_at, Task.id)
            .limit(500)
        )
    )


def _set_level(session: Session, task: Task, level: int, now: datetime) -> bool:
    """Claim the step with a conditional update: two sweeps at once escalate once."""
    result = session.execute(
        update(Task)
        .where(Task.id == task.id, Task.escalation_level == level - 1, Task.status == TaskStatus.OPEN.value)
        .values(escalation_level=level, escalated_at=now)
    )
    session.refresh(task)
    return bool(getattr(result, "rowcount", 0))


def _waited(task: Task, now: datetime) -> str:
    minutes = max(1, int((now - task.created_at).total_seconds() // 60))
    return f"{minutes} min" if minutes < 120 else f"{minutes // 60} h"


def escalate_to_manager(session: Session, task: Task, now: datetime) -> bool:
    """Level 1: the task is past due; the department's managers hear of it, once."""
    if not _set_level(session, task, 1, now):
        return False
    lead = task.lead
    owner = task.owner.name if task.owner is not None else "nobody"
    settings = runtime.current().settings
    for manager in managers_of(session, lead.store_id, lead.department):
        link = f" Call: {click_to_call_url(settings, lead, manager, now)}" if lead.contact.phone else ""
        send_alert(
            session,
            lead=lead,
            agent=manager,
            body=f"Overdue: lead #{lead.code}, {describe(lead)}, has waited {_waited(task, now)} "
            f"for {owner}.{link}",
            origin=f"escalation:{task.id}:1:{manager.id}",
            now=now,
        )
    record_event(session, lead, "escalated", f"Follow-up overdue; manager alerted (owner {owner}).", now,
                 {"task_id": task.id, "level": 1})
    return True


def reassign(session: Session, task: Task, now: datetime) -> Agent | None:
    """Level 2: the task moves to the next on-duty agent of the department, who is alerted."""
    lead = task.lead
    store: Store = lead.store
    exclude = {task.owner_id} if task.owner_id is not None else set()
    candidate = choose_owner(session, store, lead.department, now, exclude=exclude)
    if candidate is None or not on_duty(candidate, store, lead.department, now):
        return None  # nobody else on duty: stay at level 1 and try on a later sweep
    if not _set_level(session, task, 2, now):
        return None
    previous = task.owner.name if task.owner is not None else "nobody"
    task.owner_id = candidate.id
    task.owner = candidate
    if lead.owner_id != candidate.id:
        change_owner(session, lead, candidate, now)
    settings = runtime.current().settings
    link = f" Call back: {click_to_call_url(settings, lead, candidate, now)}" if lead.contact.phone else ""
    send_alert(
        session,
        lead=lead,
        agent=candidate,
        body=f"Reassigned to you: lead #{lead.code}, {describe(lead)}; {previous} did not respond.{link} "
        "Or reply here to text them.",
        origin=f"escalation:{task.id}:2:{candidate.id}",
        now=now,
    )
    record_event(session, lead, "escalated", f"Follow-up moved from {previous} to {candidate.name}.", now,
                 {"task_id": task.id, "level": 2})
    return candidate


def leak_reason(session: Session, lead: Lead, at: datetime) -> str:
    """Why nobody reached the customer in time."""
    contact = lead.contact
    if contact.phone is None or contact.opted_out or not contact.textable:
        failed_calls = session.scalar(
            select(Call.id)
            .where(
                Call.lead_id == lead.id,
                Call.kind == "click_to_call",
                Call.outcome.in_([Outcome.NO_ANSWER, Outcome.BUSY, Outcome.FAILED]),
            )
            .limit(1)
        )
        if contact.phone is None or failed_calls is not None:
            return CUSTOMER_UNREACHABLE
    agents = session.scalars(
        select(Agent).where(Agent.store_id == lead.store_id, Agent.active.is_(True))
    )
    staffed = any(
        lead.department in (a.departments or []) and on_duty(a, lead.store, lead.department, at) for a in agents
    )
    if not staffed:
        return NOBODY_ON_DUTY
    return OWNER_DID_NOT_ACT


def mark_leaked(session: Session, lead: Lead, due_at: datetime, now: datetime) -> bool:
    """Record the leak once, with its reason; the lead stays open for whoever picks it up."""
    reason = leak_reason(session, lead, due_at)
    result = session.execute(
        update(Lead)
        .where(Lead.id == lead.id, Lead.leaked_at.is_(None), Lead.first_response_at.is_(None))
        .values(leaked_at=now, leak_reason=reason, updated_at=now)
    )
    if not getattr(result, "rowcount", 0):
        return False
    session.refresh(lead)
    record_event(session, lead, "leaked", f"No human response within the SLA: {reason}.", now, {"reason": reason})
    events.lead_updated.send(session, lead=lead, changes={"leak_reason": (None, reason)}, now=now)
    return True


def escalate(session: Session, now: datetime) -> None:
    """The sweeper: overdue tasks escalate, then move; unanswered leads past their SLA are marked leaked."""
    for task in _overdue_tasks(session, now, 0, now):
        lead = task.lead
        if lead.first_response_at is None and lead.leaked_at is None:
            mark_leaked(session, lead, task.due_at, now)
        escalate_to_manager(session, task, now)
    for task in _overdue_tasks(session, now, 1, now):
        sla = timedelta(seconds=task.lead.store.response_sla_seconds)
        if task.due_at + sla <= now:
            reassign(session, task, now)

