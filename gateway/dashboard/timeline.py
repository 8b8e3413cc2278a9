"""A lead's one timeline: calls, texts, tasks, status and owner changes, CRM deliveries, and what the
feature packages add (the voicemail and its player, the cadence with its stop button).

The core cannot import the features, so they contribute: each registers a source with `add_source`
when `create_app` wires it, and the lead page asks every source for its entries.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from gateway.crm.models import CrmDelivery
from gateway.models import Agent, Call, Direction, Lead, LeadEvent, Message, Task

CUSTOMER_TEXT_KINDS = ("customer", "api", "relay", "workspace", "cadence", "help", "keyword")


@dataclass(frozen=True)
class Action:
    """A button on an entry: a POST to `url` (the page adds the CSRF token)."""

    url: str
    label: str


@dataclass(frozen=True)
class Entry:
    at: datetime
    kind: str  # call | voicemail | text-in | text-out | task | change | cadence | crm
    title: str
    body: str = ""
    details: list[str] = field(default_factory=list)
    audio_url: str | None = None
    actions: list[Action] = field(default_factory=list)
    flag: str | None = None  # a word to highlight: overdue, refused, failed...


Source = Callable[[Session, Lead], list[Entry]]
_sources: list[Source] = []


def add_source(source: Source) -> None:
    if source not in _sources:
        _sources.append(source)


def words(code: str | None) -> str:
    """after_hours -> after hours: what a person reads instead of a code."""
    return (code or "").replace("_", " ").replace("-", " ")


def duration_words(seconds: int | None) -> str:
    if seconds is None:
        return ""
    minutes, rest = divmod(int(seconds), 60)
    return f"{minutes} min {rest} s" if minutes else f"{rest} s"


MESSAGE_STATES = {
    "pending": "waiting to send",
    "sending": "sending",
    "unknown": "send not confirmed",
    "queued": "sent",
    "sent": "sent",
    "delivered": "delivered",
    "undelivered": "not delivered",
    "failed": "failed",
    "refused": "not sent",
    "received": "received",
    "sandbox": "recorded (sandbox, not sent)",
}


def message_state(message: Message) -> str:
    if message.status == "pending" and message.send_after is not None:
        return "waiting for the allowed time"
    return MESSAGE_STATES.get(message.status, words(message.status))


def core_entries(session: Session, lead: Lead) -> list[Entry]:
    agents = {a.id: a.name for a in session.scalars(select(Agent).where(Agent.store_id == lead.store_id))}
    entries: list[Entry] = []
    for call in session.scalars(select(Call).where(Call.lead_id == lead.id).order_by(Call.id)):
        who = agents.get(call.answered_by_id or 0)
        details = [f"Outcome: {words(call.outcome)}"]
        if who:
            details.append(f"Answered by {who}")
        if call.duration is not None:
            details.append(f"Length {duration_words(call.duration)}")
        title = "Call to the customer" if call.kind == "click_to_call" else "Call from the customer"
        entries.append(Entry(call.started_at, "call", title, details=details,
                             flag="missed" if call.outcome not in {"answered", "ringing", "forwarded"} else None))
    for message in session.scalars(
        select(Message)
        .where(Message.lead_id == lead.id, Message.kind.in_(CUSTOMER_TEXT_KINDS), Message.agent_id.is_(None)
               | (Message.direction == Direction.OUTBOUND.value))
        .order_by(Message.id)
    ):
        if message.direction == Direction.INBOUND.value:
            entries.append(Entry(message.created_at, "text-in", "Text from the customer", message.body))
            continue
        author = agents.get(message.agent_id or 0)
        label = {"cadence": "Automatic text", "help": "Automatic answer", "keyword": "Automatic answer"}.get(
            message.kind, f"Text from {author}" if author else "Text to the customer"
        )
        state = message_state(message)
        details = [state.capitalize()]
        if message.error_message and message.status in {"refused", "pending", "failed", "undelivered"}:
            details.append(message.error_message)
        entries.append(Entry(message.created_at, "text-out", label, message.body, details,
                             flag=state if message.status in {"refused", "failed", "undelivered"} else None))
    for task in session.scalars(select(Task).where(Task.lead_id == lead.id).order_by(Task.id)):
        owner = agents.get(task.owner_id or 0)
        details = [f"Due {task.due_at.isoformat()}"]
        title = f"Task: {task_words(task.kind)}" + (f" for {owner}" if owner else "")
        state = {"open": "open", "done": "done", "cancelled": "cancelled"}.get(task.status, words(task.status))
        entries.append(Entry(task.created_at, "task", title, details=[f"State: {state}", *details[1:]],
                             flag=None if task.status != "open" else "open"))
    for event in session.scalars(select(LeadEvent).where(LeadEvent.lead_id == lead.id).order_by(LeadEvent.id)):
        if event.kind in TOLD_ELSEWHERE:
            continue
        entries.append(Entry(event.at, "change", change_words(event.text)))
    for delivery in session.scalars(
        select(CrmDelivery).where(CrmDelivery.lead_id == lead.id).order_by(CrmDelivery.id)
    ):
        details = [f"State: {words(delivery.status)}"]
        if delivery.last_error and delivery.status != "delivered":
            details.append(delivery.last_error[:200])
        entries.append(Entry(delivery.created_at, "crm", f"CRM: {words(delivery.event).replace('.', ' ')}"
                             f" to {words(delivery.kind)}", details=details,
                             flag="failed" if delivery.status in {"dead", "failed"} else None))
    return entries


def task_words(kind: str) -> str:
    return {"callback": "call back", "reply": "reply to a text", "review": "review"}.get(kind, words(kind))


# Lead events another entry already tells: the cadence entry (its start, stop and end), the voicemail entry
# (its transcript), the text itself (a reply).
TOLD_ELSEWHERE = frozenset({"cadence-started", "cadence-stopped", "cadence-completed", "voicemail-transcript", "reply"})

STATUS_WORDS = {
    "new": "new",
    "attempting_contact": "trying to reach",
    "contacted": "contacted",
    "appointment_set": "appointment set",
    "appointment_confirmed": "appointment confirmed",
    "no_show": "no show",
    "closed_won": "sold",
    "closed_lost": "lost",
}
_STATUS_CHANGE = re.compile(r"^Status (\w+) -> (\w+)$")


def change_words(text: str) -> str:
    """'Status new -> closed_won' reads as 'Status changed from new to sold'."""
    match = _STATUS_CHANGE.match(text)
    if match is not None:
        old, new = (STATUS_WORDS.get(code, words(code)) for code in match.groups())
        return f"Status changed from {old} to {new}"
    return text.replace("_", " ")


def timeline(session: Session, lead: Lead) -> list[Entry]:
    entries = core_entries(session, lead)
    for source in _sources:
        entries.extend(source(session, lead))
    return sorted(entries, key=lambda e: e.at, reverse=True)
