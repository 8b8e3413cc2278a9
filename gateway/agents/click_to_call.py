"""Click-to-call: signed, expiring, single-use links, and the call that rings the agent first.

A link `{PUBLIC_BASE_URL}/c/<token>` shows the lead and a Call button (gateway/agents/views.py) and never
dials on a GET (phones fetch links to preview them); the POST, or `POST /api/v1/leads/{id}/call`, asks the
provider to ring the agent, who must press 1 (webhooks/click_to_call.py) before the customer is dialled
with the tracked number as caller ID. A connected call is the lead's human contact.
"""


import logging
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from itsdangerous import BadSignature, URLSafeSerializer
from sqlalchemy import delete, select, update
from sqlalchemy.orm import Session

from gateway import runtime, web
from gateway.agents.models import ClickToCallUse
from gateway.calls.rows import new_call
from gateway.database import insert_ignoring_conflict, required
from gateway.leads import (
    record_event,
    record_human_contact,
    set_status,
)
from gateway.messaging.outbound import sender_for
from gateway.models import (
    Agent,
    Call,
    CallOutcome,
    Direction,
    Lead,
    LeadStatus,
)
from gateway.provider import ProviderError
from gateway.settings import Settings

log = logging.getLogger(__name__)

LINK_SALT = "click-to-call"
AGENT_RING_SECONDS = 25
CONNECTED = frozenset({"completed", "answered"})


class Outcome:
    """Outcomes of a click-to-call, in Call.outcome."""

    ANSWERED = CallOutcome.ANSWERED.value  # the customer picked up and was connected to the agent
    AGENT_MISSED = "agent_missed"  # the agent did not pick up or did not press 1: nothing was dialled
    NO_ANSWER = "no_answer"
    BUSY = "busy"
    FAILED = "failed"



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
    # Signed claims are bounded like any input (gateway/web.py): a secret that leaked, or a token
    # made by another version, must still never reach the database with an id no column holds.
    try:
        if not isinstance(value, list) or len(value) != 4:
            raise ValueError("not a claim")
        lead_id, agent_id, nonce, expires = value
        if not (web.is_row_id(lead_id) and web.is_row_id(agent_id)):
            raise ValueError("ids out of range")
        if not isinstance(nonce, str) or not 0 < len(nonce) <= 64:
            raise ValueError("no nonce")
        claim = LinkClaim(lead_id, agent_id, nonce, web.epoch_instant(expires, name="expiry"))
    except ValueError:
        raise LinkError(400, "invalid_link", "This call link is not valid.") from None
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
    caller_id = sender_for(session, lead) or lead.store.main_line
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


def hook_url(settings: Settings, path: str) -> str:
    return f"{settings.public_base_url}/webhooks/click-to-call/{path}"


def ring_agent(plan: CallPlan) -> str:
    """Ask the provider to ring the agent (outside any transaction). Returns the call SID."""
    current = runtime.current()
    settings = current.settings
    return current.provider.create_call(
        to=plan.agent_phone,
        from_=plan.caller_id,
        url=hook_url(settings, f"agent?lead={plan.lead_id}&agent={plan.agent_id}"),
        status_callback=hook_url(settings, "status"),
        timeout=AGENT_RING_SECONDS,
    )


def log_call(session: Session, plan: CallPlan, sid: str, now: datetime) -> Call:
    """The click-to-call as a Call row (outbound, kind click_to_call); once per provider SID."""
    values = new_call(
        sid=sid,
        lead_id=plan.lead_id,
        store_id=plan.store_id,
        tracked_number_id=plan.tracked_number_id,
        from_number=plan.caller_id,
        to_number=plan.customer,
        direction=Direction.OUTBOUND.value,
        kind="click_to_call",
        status="queued",
        ringing_agents=[[plan.agent_key]],
        now=now,
    )
    inserted = insert_ignoring_conflict(session, Call, values, ["sid"])
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

