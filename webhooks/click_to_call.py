"""Click-to-call's provider webhooks: the agent's leg (press 1), the customer's leg, the call's end.

The call itself is placed by gateway/agents/click_to_call.py; this module answers the provider's
questions about it with TwiML and records what the answers say.
"""

from __future__ import annotations

from flask import Blueprint, Response, request
from sqlalchemy import select
from sqlalchemy.orm import Session
from twilio.twiml.voice_response import VoiceResponse

from gateway import runtime, web
from gateway.agents.click_to_call import (
    CONNECTED,
    LinkError,
    accept,
    finish_call,
    finish_dial,
    hook_url,
    log_call,
    plan_call,
)
from gateway.calls.services import FINAL_STATUSES
from gateway.database import required
from gateway.models import Agent, Call, Lead
from gateway.phones import national
from gateway.settings import Settings
from webhooks import payloads, twiml
from webhooks.signature import provider_webhook

CUSTOMER_RING_SECONDS = 30
ACCEPT_SECONDS = 8

blueprint = Blueprint("click_to_call_hooks", __name__, url_prefix="/webhooks/click-to-call")


def _spell(code: str) -> str:
    return " ".join(code)


def agent_leg(call: Call, lead: Lead, settings: Settings) -> VoiceResponse:
    """What the agent hears: who it is, and press 1 to dial; no key (a voicemail picked up): hang up."""
    response = VoiceResponse()
    gather = response.gather(
        num_digits=1,
        timeout=ACCEPT_SECONDS,
        action=hook_url(settings, f"accept?call={call.sid}"),
        method="POST",
    )
    customer = national(lead.contact.phone)
    gather.say(
        f"Call back for lead {_spell(lead.code)}: {customer}, from {lead.source or 'your dealership'}. "
        "Press 1 to call the customer now.",
        voice=twiml.VOICE,
    )
    response.hangup()
    return response


def bridge(call: Call, settings: Settings) -> VoiceResponse:
    """The agent pressed 1: dial the customer with the tracked number as caller ID."""
    response = VoiceResponse()
    response.say("Connecting you now.", voice=twiml.VOICE)
    dial = response.dial(
        caller_id=call.from_number,
        action=hook_url(settings, f"dial-complete?call={call.sid}"),
        method="POST",
        timeout=CUSTOMER_RING_SECONDS,
        answer_on_bridge=True,
    )
    dial.number(call.to_number)
    return response


def hangup(message: str | None = None) -> VoiceResponse:
    response = VoiceResponse()
    if message:
        response.say(message, voice=twiml.VOICE)
    response.hangup()
    return response


def _call_by_sid(session: Session, sid: str | None) -> Call | None:
    if sid is None:
        return None
    return session.scalar(select(Call).where(Call.sid == sid, Call.kind == "click_to_call"))


@blueprint.post("/agent")
@provider_webhook
def agent_answered() -> Response:
    """The agent picked up (or the agent's voicemail did): say who it is and wait for a 1."""
    current = runtime.current()
    session = web.session()
    sid = payloads.sid_or_none(request.form, "CallSid", "CA")
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
        return twiml.respond(twiml.hangup())
    lead_row = required(session.get(Lead, call.lead_id), f"lead {call.lead_id}")
    return twiml.respond(agent_leg(call, lead_row, current.settings))


@blueprint.post("/accept")
@provider_webhook
def agent_pressed() -> Response:
    current = runtime.current()
    session = web.session()
    call = _call_by_sid(session, payloads.sid_or_none(request.args, "call", "CA"))
    if call is None:
        return twiml.respond(twiml.hangup())
    if (request.form.get("Digits") or "").strip() != "1":
        return twiml.respond(twiml.hangup("Nothing was dialled. Goodbye."))
    accept(session, call, current.clock.now())
    session.commit()
    if call.processed_at is not None:
        return twiml.respond(twiml.hangup())
    return twiml.respond(bridge(call, current.settings))


def _seconds(name: str) -> int | None:
    raw = (request.form.get(name) or "").strip()
    return int(raw) if raw.isdigit() and len(raw) < 7 else None


@blueprint.post("/dial-complete")
@provider_webhook
def customer_leg_ended() -> Response:
    current = runtime.current()
    session = web.session()
    call = _call_by_sid(session, payloads.sid_or_none(request.args, "call", "CA"))
    if call is None:
        return twiml.respond(twiml.hangup())
    status = (request.form.get("DialCallStatus") or "").strip()[:16] or "no-answer"
    finish_dial(session, call, status, _seconds("DialCallDuration"), current.clock.now())
    session.commit()
    if status in CONNECTED:
        return twiml.respond(twiml.hangup())
    return twiml.respond(twiml.hangup("The customer did not answer. Goodbye."))


@blueprint.post("/status")
@provider_webhook
def call_status() -> Response:
    status = (request.form.get("CallStatus") or "").strip()
    if status not in FINAL_STATUSES:
        return Response(status=204)
    session = web.session()
    call = _call_by_sid(session, payloads.sid_or_none(request.form, "CallSid", "CA"))
    if call is None:
        return Response(status=204)
    finish_call(session, call, status, _seconds("CallDuration"), runtime.current().clock.now())
    session.commit()
    return Response(status=204)
