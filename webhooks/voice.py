"""Voice webhooks: the call rings, agents screen it, the Dial ends, the call ends."""

from __future__ import annotations

import logging
from datetime import datetime

from flask import Blueprint, Flask, Response, current_app, request
from sqlalchemy.exc import SQLAlchemyError

from gateway import runtime, web
from gateway.calls.failsafe import spool
from gateway.calls.hotpath import DatabaseUnavailable
from gateway.calls.routes import Route, route_cache
from gateway.calls.services import (
    FINAL_STATUSES,
    IncomingCall,
    accept_call,
    advance_dial,
    finish_call,
    logged_call,
    note_voicemail_length,
    start_voicemail,
)
from gateway.database import begin_reading
from gateway.runtime import runtime_of
from tracked_numbers import services as ringing
from webhooks import failsafe, payloads, twiml
from webhooks.signature import provider_webhook

log = logging.getLogger(__name__)

# Set in the WSGI environ by webhooks/fastpath.py when the database refused this very request.
DATABASE_FAILED = "gateway.database_failed"

blueprint = Blueprint("voice", __name__, url_prefix="/webhooks/voice")


def answer_ring(app: Flask, call: IncomingCall, route: Route, now: datetime) -> str:
    """The TwiML for a ringing call: the ring decision (tracked_numbers.services.ring), rendered."""
    state = ringing.ring(app, call, route, now)
    return twiml.for_call(route, state, runtime_of(app).settings.public_base_url)


def _base() -> str:
    return runtime.current().settings.public_base_url


def _bad_request(error: ValueError) -> Response:
    return web.json_error(400, "bad_request", str(error))


@blueprint.post("/incoming")
@provider_webhook
def call_incoming() -> Response:
    """Every call to a tracked number: logged, then rung or sent to voicemail (tracked_numbers.services.ring)."""
    try:
        call = payloads.incoming_call(request.form)
    except ValueError as error:
        return _bad_request(error)
    current = runtime.current()
    now = current.clock.now()
    app = current_app
    if request.environ.get(DATABASE_FAILED):
        # webhooks/fastpath.py just tried: one attempt per call, the provider is waiting.
        return failsafe.forward_call(call.to, dict(request.form), now)
    try:
        known, route = route_cache(app).fresh(call.to)
        if not known:
            with current.database.sessions() as session:
                route = route_cache(app).get(session, call.to)
        if route is None:
            log.error("call %s to %s: not a tracked number", call.sid, call.to)
            return twiml.respond(twiml.unknown_number())
        return twiml.respond(answer_ring(app, call, route, now))
    except (SQLAlchemyError, DatabaseUnavailable):
        log.exception("database unavailable for call %s: forwarding to the main line", call.sid)
        return failsafe.forward_call(call.to, dict(request.form), now)


@blueprint.post("/fallback")
@provider_webhook
def call_fallback() -> Response:
    """VoiceFallbackUrl: the provider could not get an answer from /incoming."""
    now = runtime.current().clock.now()
    try:
        to = payloads.tracked_number(request.form)
    except ValueError as error:
        return _bad_request(error)
    return failsafe.forward_call(to, dict(request.form), now)


@blueprint.post("/screen")
@provider_webhook
def agent_answered() -> Response:
    """The agent's leg was picked up: ask for a key press before the customer is connected."""
    try:
        call_sid = payloads.sid(request.args, "call", "CA")
        step = payloads.step(request.args.get("step"))
    except ValueError as error:
        return _bad_request(error)
    agent_key = request.args.get("agent", "")
    session = web.session()
    begin_reading(session)  # only reads: never waits for, nor holds up, the writers
    call = logged_call(session, call_sid)
    route = route_cache().get(session, call.to_number) if call else None
    if call is None or route is None:
        return twiml.respond(twiml.hangup())
    return twiml.respond(twiml.screen(route, call_sid, agent_key, step, _base()))


@blueprint.post("/connect")
@provider_webhook
def agent_connected() -> Response:
    """An unscreened leg was picked up: that agent has the call."""
    return _accept(require_digit=False)


@blueprint.post("/screen-result")
@provider_webhook
def agent_screened() -> Response:
    return _accept(require_digit=True)


def _accept(*, require_digit: bool) -> Response:
    try:
        call_sid = payloads.sid(request.args, "call", "CA")
    except ValueError as error:
        return _bad_request(error)
    if require_digit and (request.form.get("Digits") or "").strip() != "1":
        return twiml.respond(twiml.hangup())
    session = web.session()
    begin_reading(session)  # the lookups as a reader; the accept below is the one write
    call = logged_call(session, call_sid)
    route = route_cache().get(session, call.to_number) if call else None
    agent = None
    if route is not None:
        agent = next((a for a in route.ring if a.key == request.args.get("agent")), None)
    if call is None or agent is None:
        return twiml.respond(twiml.hangup())
    session.rollback()  # end the reading; the conditional UPDATE decides, as a writer: first one wins
    now = runtime.current().clock.now()
    won = accept_call(session, call_sid, agent.id, now)
    # Lost: who has it, read again in this transaction (the rollback expired the row).
    taken_by = agent.id if won else call.answered_by_id
    session.commit()
    if not won and taken_by != agent.id:
        return twiml.respond(twiml.hangup("Another agent has taken this call."))
    return twiml.respond(twiml.connected())


@blueprint.post("/dial-complete")
@provider_webhook
def dial_complete() -> Response:
    """The Dial ended: answered calls hang up, otherwise ring the next step or take a voicemail."""
    try:
        call_sid = payloads.sid(request.args, "call", "CA")
        step = payloads.step(request.args.get("step"))
    except ValueError as error:
        return _bad_request(error)
    session = web.session()
    # Most ends of a Dial only read (an agent took the call, or the caller hung up): as a reader, they
    # neither wait for the writers nor hold them up.
    begin_reading(session)
    call = logged_call(session, call_sid)  # read in this request's transaction: as the row is now
    if call is None:
        return twiml.respond(twiml.hangup())
    if call.accepted_at is not None:
        return twiml.respond(twiml.hangup())
    if (request.form.get("CallStatus") or "") in {"completed", "canceled"}:
        return twiml.respond(twiml.hangup())  # the caller hung up while it rang
    route = route_cache().get(session, call.to_number)
    if route is None:
        return twiml.respond(twiml.hangup())
    session.rollback()  # the next step is decided as a writer, from the call as it is now
    advance_dial(session, call, step)  # not if an agent took the call meanwhile
    if call.accepted_at is not None:
        session.commit()
        return twiml.respond(twiml.hangup())
    if call.dial_step >= len(call.ringing_agents or []):
        start_voicemail(session, call)
    session.commit()
    return twiml.respond(twiml.for_call(route, call, _base()))


@blueprint.post("/voicemail")
@provider_webhook
def voicemail_done() -> Response:
    """The Record verb finished: note the length so the call's outcome says whether one was left."""
    try:
        call_sid = payloads.sid(request.args, "call", "CA")
    except ValueError as error:
        return _bad_request(error)
    raw = (request.form.get("RecordingDuration") or "").strip()
    seconds = int(raw) if raw.isdigit() else 0
    session = web.session()
    logged_call(session, call_sid)
    note_voicemail_length(session, call_sid, seconds)
    session.commit()
    return twiml.respond(twiml.hangup("Thank you. We will call you back soon. Goodbye."))


@blueprint.post("/status")
@provider_webhook
def call_status() -> Response:
    """The call's status callback; the final one settles the call exactly once."""
    try:
        ended = payloads.call_ended(request.form)
    except ValueError as error:
        return _bad_request(error)
    if ended.status not in FINAL_STATUSES:
        return Response(status=204)
    now = runtime.current().clock.now()
    try:
        session = web.session()
        call = logged_call(session, ended.sid)
        route = route_cache().get(session, ended.to)
        finish_call(session, ended, route.origin if route else None, now, loaded=call)
        session.commit()
    except SQLAlchemyError:
        log.exception("database unavailable for the end of call %s: kept for replay", ended.sid)
        web.session().rollback()
        spool("status", dict(request.form), now)
    return Response(status=204)
