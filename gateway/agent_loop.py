"""The agent loop: click-to-call links and calls, alert texts, the reply relay and escalation.

- Click-to-call: a signed, expiring, single-use link `{PUBLIC_BASE_URL}/c/<token>`. A GET shows the lead
  and a Call button and never dials (phones fetch links to preview them); the POST, or
  `POST /api/v1/leads/{id}/call`, asks the provider to ring the agent, who must press 1 before the
  customer is dialled with the tracked number as caller ID.
- Reply relay: an agent's text to a gateway number goes to the customer of the agent's latest alert, or
  of the lead named by a leading `#CODE`, from the lead's tracked number, through the send guard.
- Escalation: an open task past its due time alerts the department's manager; past a second limit it
  moves to the next on-duty agent. A lead nobody answered within its SLA is marked leaked, with why.
"""

from __future__ import annotations

import logging
import re
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from flask import Blueprint, Flask, Response, has_app_context, render_template, request
from itsdangerous import BadSignature, URLSafeSerializer
from sqlalchemy import delete, select, update
from sqlalchemy.orm import Session
from twilio.twiml.voice_response import VoiceResponse

from gateway import events, runtime, web
from gateway.agent_models import ClickToCallUse
from gateway.database import insert_ignoring_conflict, required
from gateway.jobs import register_sweeper
from gateway.leads import (
    change_owner,
    choose_owner,
    on_duty,
    record_event,
    record_human_contact,
    set_status,
)
from gateway.messaging import queue_text
from gateway.models import (
    Agent,
    Call,
    CallOutcome,
    Contact,
    Direction,
    Lead,
    LeadStatus,
    Message,
    Role,
    Store,
    Task,
    TaskKind,
    TaskStatus,
)
from gateway.phones import mask, national
from gateway.provider import ProviderError
from gateway.settings import Settings
from tracked_numbers.models import TrackedNumber
from webhooks.signature import provider_webhook

log = logging.getLogger(__name__)

LINK_SALT = "click-to-call"
VOICE = "Polly.Joanna"
AGENT_RING_SECONDS = 25
CUSTOMER_RING_SECONDS = 30
ACCEPT_SECONDS = 8
FINAL_STATUSES = frozenset({"completed", "busy", "no-answer", "failed", "canceled"})
CONNECTED = frozenset({"completed", "answered"})
# The tasks escalation watches: follow-ups owed to a customer who reached out.
WATCHED_TASKS = (TaskKind.CALLBACK.value, TaskKind.REPLY.value)
# Leak reasons, for the ledger managers read.
NOBODY_ON_DUTY = "nobody on duty"
OWNER_DID_NOT_ACT = "owner did not act"
CUSTOMER_UNREACHABLE = "customer unreachable"
_CODE = re.compile(r"^\s*#([A-Za-z0-9]{3,16})\b[\s:,.-]*(.*)$", re.DOTALL)


class Outcome:
    """Outcomes of a click-to-call, in Call.outcome."""

    ANSWERED = CallOutcome.ANSWERED.value  # the customer picked up and was connected to the agent
    AGENT_MISSED = "agent_missed"  # the agent did not pick up or did not press 1: nothing was dialled
    NO_ANSWER = "no_answer"
    BUSY = "busy"
    FAILED = "failed"


def init_app(app: Flask) -> None:
    app.register_blueprint(link_blueprint)
    app.register_blueprint(hooks_blueprint)
    events.agent_texted.connect(_agent_texted, weak=False)
    register_sweeper("escalation", escalate)


# --- alert texts ----------------------------------------------------------------------------------------


def reply_number(session: Session, lead: Lead) -> str | None:
    """The number alerts about this lead come from: the tracked number the customer reached."""
    if lead.tracked_number:
        return lead.tracked_number
    numbers = list(
        session.scalars(
            select(TrackedNumber)
            .where(TrackedNumber.store_id == lead.store_id, TrackedNumber.active.is_(True))
            .order_by(TrackedNumber.id)
        )
    )
    same = [n for n in numbers if n.department == lead.department]
    chosen = same or numbers
    return chosen[0].number if chosen else None


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
    sender = from_ or (reply_number(session, lead) if lead is not None else None)
    if sender is None or not agent.phone:
        log.warning("alert %s not sent: no number to send it from", origin)
        return None
    message = queue_text(
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
    message.contact_id = None  # it went to our agent, not to the customer
    return message


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
    who = national(lead.contact.phone)
    source = lead.source or "no source"
    return f"{who}, {source}, {lead.store.name} {lead.department}"


# --- click-to-call links --------------------------------------------------------------------------------


class LinkError(Exception):
    """A link that cannot start a call; `status` is the HTTP status of the page that says why."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message


@dataclass(frozen=True)
class LinkClaim:
    lead_id: int
    agent_id: int
    nonce: str
    expires_at: datetime


def _serializer(settings: Settings) -> URLSafeSerializer:
    return URLSafeSerializer(settings.secret_key, salt=LINK_SALT)


def make_token(settings: Settings, lead_id: int, agent_id: int, now: datetime) -> str:
    expires = int((now + timedelta(seconds=settings.click_to_call_ttl)).timestamp())
    token: str = _serializer(settings).dumps([lead_id, agent_id, secrets.token_urlsafe(9), expires])
    return token


def click_to_call_url(settings: Settings, lead: Lead, agent: Agent, now: datetime) -> str:
    return f"{settings.public_base_url}/c/{make_token(settings, lead.id, agent.id, now)}"


def read_token(settings: Settings, token: str, now: datetime) -> LinkClaim:
    """The link's claim if it is ours and not expired. LinkError (400 tampered, 410 expired) otherwise."""
    try:
        value: Any = _serializer(settings).loads(token[:500])
    except BadSignature:
        raise LinkError(400, "invalid_link", "This call link is not valid. Was it cut short or changed?") from None
    if (
        not isinstance(value, list)
        or len(value) != 4
        or not all(isinstance(v, int) and not isinstance(v, bool) for v in (value[0], value[1], value[3]))
        or not isinstance(value[2], str)
    ):
        raise LinkError(400, "invalid_link", "This call link is not valid.")
    claim = LinkClaim(value[0], value[1], value[2], datetime.fromtimestamp(value[3], UTC))
    if now >= claim.expires_at:
        raise LinkError(410, "expired_link", "This call link has expired. Open the lead from a newer alert.")
    return claim


def link_is_used(session: Session, claim: LinkClaim) -> bool:
    return session.scalar(select(ClickToCallUse.id).where(ClickToCallUse.nonce == claim.nonce)) is not None


def claim_link(session: Session, claim: LinkClaim, now: datetime) -> bool:
    """Mark the link used; False when it already was (two taps, or a second device)."""
    return insert_ignoring_conflict(
        session,
        ClickToCallUse,
        {"nonce": claim.nonce, "lead_id": claim.lead_id, "agent_id": claim.agent_id, "used_at": now},
        ["nonce"],
    )


def release_link(session: Session, claim: LinkClaim) -> None:
    """The provider refused the call: the link may be tried again."""
    session.execute(delete(ClickToCallUse).where(ClickToCallUse.nonce == claim.nonce))


# --- click-to-call calls --------------------------------------------------------------------------------


@dataclass(frozen=True)
class CallPlan:
    lead_id: int
    agent_id: int
    agent_key: str
    store_id: int
    tracked_number_id: int | None
    agent_phone: str
    customer: str
    caller_id: str


def plan_call(session: Session, lead: Lead, agent: Agent) -> CallPlan:
    """Check that this agent may call this lead's customer now. LinkError says why not."""
    if not agent.active:
        raise LinkError(403, "agent_inactive", "This agent can no longer place calls.")
    if agent.store_id != lead.store_id:
        raise LinkError(403, "other_store", "This agent does not work at the lead's store.")
    if lead.open_key is None or not LeadStatus(lead.status).is_open:
        raise LinkError(409, "lead_closed", "This lead is closed.")
    phone = lead.contact.phone
    if phone is None:
        raise LinkError(409, "withheld", "The customer withheld their number, so they cannot be called back.")
    caller_id = reply_number(session, lead) or lead.store.main_line
    return CallPlan(
        lead_id=lead.id,
        agent_id=agent.id,
        agent_key=agent.key,
        store_id=lead.store_id,
        tracked_number_id=lead.tracked_number_id,
        agent_phone=agent.phone,
        customer=phone,
        caller_id=caller_id,
    )


def _hook(settings: Settings, path: str) -> str:
    return f"{settings.public_base_url}/webhooks/click-to-call/{path}"


def ring_agent(plan: CallPlan) -> str:
    """Ask the provider to ring the agent (outside any transaction). Returns the call SID."""
    current = runtime.current()
    settings = current.settings
    return current.provider.create_call(
        to=plan.agent_phone,
        from_=plan.caller_id,
        url=_hook(settings, f"agent?lead={plan.lead_id}&agent={plan.agent_id}"),
        status_callback=_hook(settings, "status"),
        timeout=AGENT_RING_SECONDS,
    )


def log_call(session: Session, plan: CallPlan, sid: str, now: datetime) -> Call:
    """The click-to-call as a Call row (outbound, kind click_to_call); once per provider SID."""
    inserted = insert_ignoring_conflict(
        session,
        Call,
        {
            "sid": sid,
            "lead_id": plan.lead_id,
            "store_id": plan.store_id,
            "tracked_number_id": plan.tracked_number_id,
            "from_number": plan.caller_id,
            "to_number": plan.customer,
            "direction": Direction.OUTBOUND.value,
            "kind": "click_to_call",
            "status": "queued",
            "outcome": CallOutcome.RINGING.value,
            "ringing_agents": [[plan.agent_key]],
            "started_at": now,
            "created_at": now,
        },
        ["sid"],
    )
    call = required(session.scalar(select(Call).where(Call.sid == sid)), f"call {sid}")
    if inserted:
        lead = required(session.get(Lead, plan.lead_id), f"lead {plan.lead_id}")
        agent = required(session.get(Agent, plan.agent_id), f"agent {plan.agent_id}")
        record_event(session, lead, "click-to-call", f"Click-to-call: ringing {agent.name}.", now, {"call_id": call.id})
    return call


def call_customer(session: Session, lead: Lead, agent: Agent, now: datetime, claim: LinkClaim | None = None) -> Call:
    """Ring the agent for this lead. Commits (the link claim first, then the call), as a view does:
    no transaction stays open while the provider is asked. LinkError when it cannot be placed."""
    plan = plan_call(session, lead, agent)
    if claim is not None and not claim_link(session, claim, now):
        session.rollback()
        raise LinkError(410, "used_link", "This call link was already used. Open the lead from a newer alert.")
    session.commit()
    try:
        sid = ring_agent(plan)
    except ProviderError as error:
        log.warning("click-to-call for lead %s failed: %s", plan.lead_id, error)
        if claim is not None:
            release_link(session, claim)
            session.commit()
        raise LinkError(502, "provider_error", "The call could not be placed right now. Try again.") from None
    call = log_call(session, plan, sid, now)
    if claim is not None:
        session.execute(update(ClickToCallUse).where(ClickToCallUse.nonce == claim.nonce).values(call_id=call.id))
    session.commit()
    log.info("click-to-call %s: ringing agent %s for lead %s", sid, plan.agent_id, plan.lead_id)
    return call


def _spell(code: str) -> str:
    return " ".join(code)


def agent_leg(call: Call, lead: Lead, settings: Settings) -> VoiceResponse:
    """What the agent hears: who it is, and press 1 to dial; no key (a voicemail picked up): hang up."""
    response = VoiceResponse()
    gather = response.gather(
        num_digits=1,
        timeout=ACCEPT_SECONDS,
        action=_hook(settings, f"accept?call={call.sid}"),
        method="POST",
    )
    customer = national(lead.contact.phone)
    gather.say(
        f"Call back for lead {_spell(lead.code)}: {customer}, from {lead.source or 'your dealership'}. "
        "Press 1 to call the customer now.",
        voice=VOICE,
    )
    response.hangup()
    return response


def bridge(call: Call, settings: Settings) -> VoiceResponse:
    """The agent pressed 1: dial the customer with the tracked number as caller ID."""
    response = VoiceResponse()
    response.say("Connecting you now.", voice=VOICE)
    dial = response.dial(
        caller_id=call.from_number,
        action=_hook(settings, f"dial-complete?call={call.sid}"),
        method="POST",
        timeout=CUSTOMER_RING_SECONDS,
        answer_on_bridge=True,
    )
    dial.number(call.to_number)
    return response


def hangup(message: str | None = None) -> VoiceResponse:
    response = VoiceResponse()
    if message:
        response.say(message, voice=VOICE)
    response.hangup()
    return response


def accept(session: Session, call: Call, now: datetime) -> bool:
    """The agent pressed 1: first press wins (a provider retry does not dial twice)."""
    agent = _agent_of(session, call)
    result = session.execute(
        update(Call)
        .where(Call.id == call.id, Call.accepted_at.is_(None), Call.processed_at.is_(None))
        .values(accepted_at=now, answered_by_id=agent.id if agent else None, status="in-progress")
    )
    session.refresh(call)
    return bool(getattr(result, "rowcount", 0))


def _agent_of(session: Session, call: Call) -> Agent | None:
    """The agent a click-to-call rings (the one key of its one ring step)."""
    steps: list[Any] = call.ringing_agents or []
    if not steps or not steps[0]:
        return None
    return session.scalar(select(Agent).where(Agent.key == str(steps[0][0])))


def _claim_end(session: Session, call: Call, now: datetime) -> bool:
    result = session.execute(
        update(Call).where(Call.id == call.id, Call.processed_at.is_(None)).values(processed_at=now)
    )
    session.refresh(call)
    return bool(getattr(result, "rowcount", 0))


def finish_dial(session: Session, call: Call, dial_status: str, duration: int | None, now: datetime) -> bool:
    """The customer leg ended: connected -> human contact; otherwise the attempt is on the timeline."""
    if not _claim_end(session, call, now):
        return False
    lead = session.get(Lead, call.lead_id) if call.lead_id else None
    agent = session.get(Agent, call.answered_by_id) if call.answered_by_id else None
    connected = dial_status in CONNECTED
    call.outcome = (
        Outcome.ANSWERED
        if connected
        else {"busy": Outcome.BUSY, "failed": Outcome.FAILED}.get(dial_status, Outcome.NO_ANSWER)
    )
    if call.duration is None:
        call.duration = duration
    if lead is None:
        return True
    name = agent.name if agent is not None else "An agent"
    if connected:
        record_event(session, lead, "click-to-call", f"Click-to-call: {name} talked with the customer.", now)
        record_human_contact(session, lead, agent, "click-to-call", now)
    else:
        record_event(
            session,
            lead,
            "click-to-call",
            f"Click-to-call: {name} called; the customer did not answer ({dial_status}).",
            now,
            {"call_id": call.id, "outcome": call.outcome},
        )
        if lead.status == LeadStatus.NEW.value:
            set_status(session, lead, LeadStatus.ATTEMPTING_CONTACT, now)
    return True


def finish_call(session: Session, call: Call, status: str, duration: int | None, now: datetime) -> None:
    """The agent's call ended. If the customer was never dialled, that is the outcome."""
    call.status = status[:16]
    call.ended_at = now
    call.duration = duration if duration is not None else call.duration
    if call.accepted_at is None:
        if not _claim_end(session, call, now):
            return
        call.outcome = Outcome.AGENT_MISSED
        lead = session.get(Lead, call.lead_id) if call.lead_id else None
        agent = _agent_of(session, call)
        if lead is not None:
            record_event(
                session,
                lead,
                "click-to-call",
                f"Click-to-call: {agent.name if agent else 'the agent'} did not accept; nobody was dialled.",
                now,
                {"call_id": call.id, "outcome": call.outcome},
            )
    elif call.processed_at is None:
        # The agent pressed 1 but the Dial never reported back (the agent hung up first).
        finish_dial(session, call, "no-answer", duration, now)


# --- the reply relay ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RelayTarget:
    lead: Lead | None
    body: str
    by_code: bool
    code: str | None = None


def relay_target(session: Session, agent: Agent, body: str) -> RelayTarget:
    """`#CODE text` names the lead; otherwise the lead of the agent's latest alert."""
    match = _CODE.match(body)
    if match is not None:
        code = match.group(1).upper()
        lead = session.scalar(select(Lead).where(Lead.code == code, Lead.store_id == agent.store_id))
        return RelayTarget(lead, match.group(2).strip(), True, code)
    lead_id = session.scalar(
        select(Message.lead_id)
        .where(Message.agent_id == agent.id, Message.kind == "alert", Message.lead_id.is_not(None))
        .order_by(Message.created_at.desc(), Message.id.desc())
        .limit(1)
    )
    lead = session.get(Lead, lead_id) if lead_id is not None else None
    return RelayTarget(lead, body.strip(), False)


HELP_TO_AGENT = (
    "To text a customer, reply to one of their alerts, or start with the lead code, e.g. "
    "#K7Q2M Thanks for calling, are you free at 3?"
)


def relay(session: Session, agent: Agent, message: Message, now: datetime) -> Message | None:
    """Send an agent's text on to the customer. Returns the relayed text, None when not relayed."""
    target = relay_target(session, agent, message.body or "")
    origin = f"relay:{message.id}"
    notice_from = message.to_number
    if target.lead is None:
        body = (
            f"No lead #{target.code} at your store. {HELP_TO_AGENT}" if target.by_code else HELP_TO_AGENT
        )
        send_alert(session, lead=None, agent=agent, body=body, origin=f"relay-help:{message.id}", now=now,
                   from_=notice_from)
        return None
    lead = target.lead
    if not target.body and not message.media_urls:
        send_alert(session, lead=lead, agent=agent, body=f"Nothing to send to lead #{lead.code}. {HELP_TO_AGENT}",
                   origin=f"relay-help:{message.id}", now=now, from_=notice_from)
        return None
    contact: Contact = lead.contact
    if contact.phone is None:
        send_alert(session, lead=lead, agent=agent, body=f"Lead #{lead.code} withheld their number; no texts.",
                   origin=f"relay-notice:{message.id}", now=now, from_=notice_from)
        return None
    sender = reply_number(session, lead) or message.to_number
    relayed = queue_text(
        session,
        to=contact.phone,
        from_=sender,
        body=target.body,
        kind="relay",
        answers_contact=True,  # a person wrote it
        now=now,
        lead=lead,
        agent=agent,
        origin=origin,
        media_urls=list(message.media_urls or []),
    )
    if contact.opted_out or not contact.textable:
        # The send guard will refuse it (and log why); the agent hears now, not never.
        why = "opted out of texts" if contact.opted_out else "cannot receive texts"
        send_alert(
            session,
            lead=lead,
            agent=agent,
            body=f"Not sent: lead #{lead.code} ({national(contact.phone)}) {why}. Call them instead.",
            origin=f"relay-notice:{message.id}",
            now=now,
            from_=notice_from,
        )
        return relayed
    record_event(
        session, lead, "relay", f"{agent.name} texted the customer.", now, {"message_id": relayed.id}
    )
    record_human_contact(session, lead, agent, "agent text", now)
    log.info("relayed text of agent %s to %s (lead %s)", agent.key, mask(contact.phone), lead.code)
    return relayed


def _agent_texted(sender: Session, *, agent: Agent, message: Message, now: datetime, **_: Any) -> None:
    if not has_app_context():
        return
    relay(sender, agent, message, now)


# --- escalation and the leak ledger ---------------------------------------------------------------------


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


# --- HTTP: the link page and the provider's webhooks for the agent's call --------------------------------

link_blueprint = Blueprint("click_to_call", __name__)
hooks_blueprint = Blueprint("click_to_call_hooks", __name__, url_prefix="/webhooks/click-to-call")


def _page(status: int, **context: Any) -> Response:
    response = Response(render_template("click_to_call.html", **context), status=status, mimetype="text/html")
    response.headers["Cache-Control"] = "no-store"
    response.headers["Referrer-Policy"] = "no-referrer"
    response.headers["X-Robots-Tag"] = "noindex"
    return response


def _error_page(error: LinkError) -> Response:
    return _page(error.status, state="error", error=error)


def _link_subject(session: Session, claim: LinkClaim) -> tuple[Lead, Agent]:
    lead = session.get(Lead, claim.lead_id)
    agent = session.get(Agent, claim.agent_id)
    if lead is None or agent is None:
        raise LinkError(400, "invalid_link", "This call link is not valid.")
    return lead, agent


def _summary(lead: Lead) -> dict[str, Any]:
    reasons = [str(r.get("text", "")) for r in (lead.priority_reasons or []) if isinstance(r, dict)]
    return {
        "code": lead.code,
        "phone": national(lead.contact.phone),
        "source": lead.source or "unknown",
        "store": lead.store.name,
        "department": lead.department,
        "status": lead.status.replace("_", " "),
        "priority": lead.priority,
        "reasons": reasons,
    }


@link_blueprint.route("/c/<token>", methods=["GET", "HEAD"])
def link_page(token: str) -> Response:
    """Show the lead and a Call button. Never dials: phones and chat apps fetch links to preview them."""
    now = runtime.current().clock.now()
    session = web.session()
    try:
        claim = read_token(runtime.current().settings, token, now)
        lead, agent = _link_subject(session, claim)
        plan_call(session, lead, agent)
        if link_is_used(session, claim):
            raise LinkError(410, "used_link", "This call link was already used. Open the lead from a newer alert.")
    except LinkError as error:
        return _error_page(error)
    return _page(200, state="ready", lead=_summary(lead), agent=agent.name, action=request.path)


@link_blueprint.post("/c/<token>")
def link_call(token: str) -> Response:
    """The Call button: ring the agent's phone; the customer is dialled once the agent presses 1."""
    now = runtime.current().clock.now()
    session = web.session()
    try:
        claim = read_token(runtime.current().settings, token, now)
        lead, agent = _link_subject(session, claim)
        summary = _summary(lead)
        call_customer(session, lead, agent, now, claim)
    except LinkError as error:
        return _error_page(error)
    return _page(200, state="calling", lead=summary, agent=agent.name, agent_phone=national(agent.phone))


def _form_sid(name: str = "CallSid") -> str | None:
    value = (request.form.get(name) or "").strip()
    return value if value.startswith("CA") and 10 <= len(value) <= 66 and value.isalnum() else None


def _query_sid() -> str | None:
    value = (request.args.get("call") or "").strip()
    return value if value.startswith("CA") and 10 <= len(value) <= 66 and value.isalnum() else None


def _twiml(response: VoiceResponse) -> Response:
    return Response(str(response), status=200, mimetype="text/xml")


def _call_by_sid(session: Session, sid: str | None) -> Call | None:
    if sid is None:
        return None
    return session.scalar(select(Call).where(Call.sid == sid, Call.kind == "click_to_call"))


@hooks_blueprint.post("/agent")
@provider_webhook
def agent_answered() -> Response:
    """The agent picked up (or the agent's voicemail did): say who it is and wait for a 1."""
    current = runtime.current()
    session = web.session()
    sid = _form_sid()
    call = _call_by_sid(session, sid)
    if call is None and sid is not None:
        # The provider can ask for the TwiML before the request that placed the call has logged it.
        lead_raw, agent_raw = request.args.get("lead", ""), request.args.get("agent", "")
        lead = session.get(Lead, int(lead_raw)) if lead_raw.isdigit() else None
        agent = session.get(Agent, int(agent_raw)) if agent_raw.isdigit() else None
        if lead is not None and agent is not None:
            try:
                call = log_call(session, plan_call(session, lead, agent), sid, current.clock.now())
                session.commit()
            except LinkError:
                call = None
    if call is None or call.processed_at is not None or call.lead_id is None:
        return _twiml(hangup())
    lead_row = required(session.get(Lead, call.lead_id), f"lead {call.lead_id}")
    return _twiml(agent_leg(call, lead_row, current.settings))


@hooks_blueprint.post("/accept")
@provider_webhook
def agent_pressed() -> Response:
    current = runtime.current()
    session = web.session()
    call = _call_by_sid(session, _query_sid())
    if call is None:
        return _twiml(hangup())
    if (request.form.get("Digits") or "").strip() != "1":
        return _twiml(hangup("Nothing was dialled. Goodbye."))
    accept(session, call, current.clock.now())
    session.commit()
    if call.processed_at is not None:
        return _twiml(hangup())
    return _twiml(bridge(call, current.settings))


def _seconds(name: str) -> int | None:
    raw = (request.form.get(name) or "").strip()
    return int(raw) if raw.isdigit() and len(raw) < 7 else None


@hooks_blueprint.post("/dial-complete")
@provider_webhook
def customer_leg_ended() -> Response:
    current = runtime.current()
    session = web.session()
    call = _call_by_sid(session, _query_sid())
    if call is None:
        return _twiml(hangup())
    status = (request.form.get("DialCallStatus") or "").strip()[:16] or "no-answer"
    finish_dial(session, call, status, _seconds("DialCallDuration"), current.clock.now())
    session.commit()
    if status in CONNECTED:
        return _twiml(hangup())
    return _twiml(hangup("The customer did not answer. Goodbye."))


@hooks_blueprint.post("/status")
@provider_webhook
def call_status() -> Response:
    status = (request.form.get("CallStatus") or "").strip()
    if status not in FINAL_STATUSES:
        return Response(status=204)
    session = web.session()
    call = _call_by_sid(session, _form_sid())
    if call is None:
        return Response(status=204)
    finish_call(session, call, status, _seconds("CallDuration"), runtime.current().clock.now())
    session.commit()
    return Response(status=204)
