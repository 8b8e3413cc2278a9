"""Alert texts to agents: a missed call, a customer's text, a voicemail's transcript.

Each alert is queued in the transaction of the event that caused it (so it leaves with it, within a
second, or not at all), goes to the lead's owner from the tracked number the customer reached (the
agent can reply to it: the reply relay), and carries a signed click-to-call link. Hot leads also alert
the department's manager. The priority is recomputed first, on every contact.
"""

from __future__ import annotations

import logging
from datetime import datetime
from typing import Any

from flask import Flask, has_app_context
from sqlalchemy import select
from sqlalchemy.orm import Session

from gateway import events, runtime
from gateway.agents import priority
from gateway.agents.click_to_call import click_to_call_url
from gateway.leads import WEB_FORM, Inquiry
from gateway.messaging.outbound import queue_text, sender_for
from gateway.models import Agent, Call, CallOutcome, Lead, Message, Role, Task
from gateway.phones import national

log = logging.getLogger(__name__)

PREVIEW_CHARACTERS = 80


def init_app(app: Flask) -> None:
    events.contact_unanswered.connect(on_contact_unanswered, weak=False)
    events.message_received.connect(on_message_received, weak=False)
    events.voicemail_transcribed.connect(on_voicemail_transcribed, weak=False)
    events.call_completed.connect(on_call_completed, weak=False)
    events.lead_received.connect(on_lead_received, weak=False)


def send_alert(
    session: Session,
    *,
    lead: Lead | None,
    agent: Agent,
    body: str,
    origin: str,
    now: datetime,
    from_: str | None = None,
) -> Message | None:
    """A text to one of our agents, from a number the agent can reply to; once per origin.

    Agent texts are kind "alert": the customer rules (quiet hours, caps) protect customers, not staff.
    """
    sender = from_ or (sender_for(session, lead) if lead is not None else None)
    if sender is None or not agent.phone:
        log.warning("alert %s not sent: no number to send it from", origin)
        return None
    return queue_text(
        session,
        to=agent.phone,
        from_=sender,
        body=body,
        kind="alert",
        now=now,
        lead=lead,
        agent=agent,
        store_id=lead.store_id if lead is not None else agent.store_id,
        origin=origin[:100],
    )


def managers_of(session: Session, store_id: int, department: str) -> list[Agent]:
    """The department's managers; the store's managers when the department has none."""
    managers = list(
        session.scalars(
            select(Agent)
            .where(Agent.store_id == store_id, Agent.role == Role.MANAGER.value, Agent.active.is_(True))
            .order_by(Agent.id)
        )
    )
    in_department = [m for m in managers if department in (m.departments or [])]
    return in_department or managers


def describe(lead: Lead) -> str:
    """The customer, source, store and department of a lead, for an alert."""
    who = national(lead.contact.phone) if lead.contact.phone else (lead.contact.email or national(None))
    source = lead.source or "no source"
    return f"{who}, {source}, {lead.store.name} {lead.department}"


def _preview(text: str, limit: int = PREVIEW_CHARACTERS) -> str:
    flat = " ".join(text.split())
    if len(flat) <= limit:
        return flat
    return (flat[:limit].rsplit(" ", 1)[0] or flat[:limit]).rstrip(",.;:") + "..."


def _link(lead: Lead, agent: Agent, now: datetime) -> str | None:
    if lead.contact.phone is None:
        return None
    return click_to_call_url(runtime.current().settings, lead, agent, now)


def _band(result: priority.Priority) -> str:
    return f"{result.band.value} priority ({result.score})"


def _recipients(session: Session, lead: Lead, result: priority.Priority) -> list[Agent]:
    """The owner; for a hot lead the department's managers as well."""
    people: list[Agent] = [lead.owner] if lead.owner is not None and lead.owner.active else []
    if result.band == priority.Band.HOT:
        people += [m for m in managers_of(session, lead.store_id, lead.department) if m not in people]
    return people


def missed_call_text(lead: Lead, call: Call, result: priority.Priority, link: str | None) -> str:
    if call.outcome == CallOutcome.VOICEMAIL.value and call.voicemail_seconds:
        head = f"Voicemail ({call.voicemail_seconds}s)"
    elif call.after_hours:
        head = "After-hours call"
    elif call.outcome == CallOutcome.ABANDONED.value:
        head = "Caller hung up"
    else:
        head = "Missed call"
    text = f"{head}: {describe(lead)}. Lead #{lead.code}, {_band(result)}."
    if call.caller_id_unverified:
        text += " Caller ID unverified (failed SHAKEN/STIR): it may be spoofed."
        if not lead.store.text_unverified_callers:
            text += " No automated text was sent."
    if link:
        text += f" Call back: {link} or reply here to text them."
    return text


def on_contact_unanswered(sender: Session, *, lead: Lead, call: Call, now: datetime, **_: Any) -> None:
    if not has_app_context():
        return
    result = priority.recompute(sender, lead, now)
    for agent in _recipients(sender, lead, result):
        send_alert(
            sender,
            lead=lead,
            agent=agent,
            body=missed_call_text(lead, call, result, _link(lead, agent, now)),
            origin=f"alert:call:{call.id}:{agent.id}",
            now=now,
        )


def on_message_received(sender: Session, *, lead: Lead, message: Message, now: datetime, **_: Any) -> None:
    if not has_app_context():
        return
    # The SMS side announces only texts a person should read (keywords that change settings are not),
    # so a bare "Yes" that answers a question reaches the owner too.
    result = priority.recompute(sender, lead, now)
    words = _preview(message.body or "") or "(picture)"
    for agent in _recipients(sender, lead, result):
        link = _link(lead, agent, now)
        body = f'Text from {describe(lead)}. Lead #{lead.code}, {_band(result)}: "{words}" Reply here to answer.'
        if link:
            body += f" Call: {link}"
        send_alert(sender, lead=lead, agent=agent, body=body, origin=f"alert:text:{message.id}:{agent.id}", now=now)


def on_voicemail_transcribed(
    sender: Session, *, lead: Lead, call: Call, transcript: str, now: datetime, **_: Any
) -> None:
    if not has_app_context():
        return
    result = priority.current(lead)
    for agent in _recipients(sender, lead, result):
        body = (
            f'Voicemail from {national(lead.contact.phone)}, lead #{lead.code} ({result.band.value}): '
            f'"{_preview(transcript)}"'
        )
        send_alert(sender, lead=lead, agent=agent, body=body, origin=f"alert:voicemail:{call.id}:{agent.id}", now=now)


def on_call_completed(sender: Session, *, lead: Lead, call: Call, now: datetime, **_: Any) -> None:
    """Answered calls are contacts too; unanswered ones were scored when their alert went."""
    if not has_app_context():
        return
    try:
        unanswered = CallOutcome(call.outcome).unanswered
    except ValueError:
        unanswered = False
    if not unanswered:
        priority.recompute(sender, lead, now)


def inquiry_text(lead: Lead, inquiry: Inquiry, result: priority.Priority, link: str | None, created: bool) -> str:
    head = "Web lead" if inquiry.channel == WEB_FORM else f"{inquiry.provider or inquiry.source} lead (ADF)"
    if not created:
        head += " (joins an open lead)"
    name = f"{inquiry.name}, " if inquiry.name else ""
    text = f"{head}: {name}{describe(lead)}."
    vehicle = inquiry.vehicle_text()
    if vehicle:
        text += f" {_preview(vehicle, 60)}."
    if inquiry.message:
        text += f' "{_preview(inquiry.message, 60)}"'
    text += f" Lead #{lead.code}, {_band(result)}."
    if link:
        text += f" Call: {link}"
    elif lead.contact.email:
        text += f" E-mail: {lead.contact.email}"
    return text


def on_lead_received(
    sender: Session, *, lead: Lead, inquiry: Inquiry, intake_id: int, created: bool, now: datetime, **_: Any
) -> None:
    if not has_app_context():
        return
    result = priority.recompute(sender, lead, now)
    for agent in _recipients(sender, lead, result):
        send_alert(
            sender,
            lead=lead,
            agent=agent,
            body=inquiry_text(lead, inquiry, result, _link(lead, agent, now), created),
            origin=f"alert:intake:{intake_id}:{agent.id}",
            now=now,
        )


def announce_call_task(session: Session, lead: Lead, task: Task, origin: str, now: datetime) -> Message | None:
    """A cadence's call step: the owner is told to call now, with the click-to-call link."""
    if not has_app_context():
        return None
    agent = task.owner or lead.owner
    if agent is None or not agent.active:
        return None
    link = _link(lead, agent, now)
    body = f"Time to call: {describe(lead)}. Lead #{lead.code}."
    if task.note:
        body += f" {_preview(task.note, 120)}"
    body += f" Call: {link}" if link else " No phone on file: reply by e-mail."
    return send_alert(session, lead=lead, agent=agent, body=body, origin=origin, now=now)
