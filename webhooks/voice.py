"""Voice webhooks: the call rings, agents screen it, the Dial ends, the call ends."""

from __future__ import annotations

import logging
import time
from datetime import datetime
from functools import partial

from flask import Blueprint, Flask, Response, current_app, request
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session

from gateway import calls, owners, runtime, web
from gateway.app import on_shutdown, runtime_of
from gateway.calls import IncomingCall
from gateway.hotpath import DatabaseUnavailable, HotPath, RingingCall, RingState, Statements
from gateway.models import Call
from gateway.phones import mask
from tracked_numbers.models import RingStrategy
from tracked_numbers.rotation import Rotation
from tracked_numbers.services import (
    Route,
    RouteCache,
    department_open,
    ring_steps,
)
from webhooks import failsafe, payloads, twiml
from webhooks.signature import provider_webhook

log = logging.getLogger(__name__)

ROUTE_CACHE = "gateway.routes"
HOT_PATH = "gateway.hotpath"
ROTATION = "gateway.rotation"
# Set in the WSGI environ by webhooks/fastpath.py when the database refused this very request.
DATABASE_FAILED = "gateway.database_failed"

# How long a webhook about a call waits for the ring another web process answered to be committed; the
# writers commit within milliseconds, so past this the call was never logged (it rang while the
# database was down, or the process that answered it died) and the webhook handles it as unknown.
RING_LOG_GRACE = 1.0
RING_LOG_POLL = 0.02

blueprint = Blueprint("voice", __name__, url_prefix="/webhooks/voice")


def init_hot_path(app: Flask) -> None:
    """The app's writer for the incoming-call hot path (gateway/hotpath.py) and its round-robin turns
    (tracked_numbers/rotation.py); both connect on first use, in the process that uses them."""
    current = runtime_of(app)
    fast = app.extensions[HOT_PATH] = HotPath(current.database.engine)
    turns = app.extensions[ROTATION] = Rotation(current.redis)
    owners.init_app(app, fast.read)
    on_shutdown(app, fast.close)
    on_shutdown(app, turns.close)


def hot_path(app: Flask) -> HotPath:
    fast: HotPath = app.extensions[HOT_PATH]
    return fast


def rotation(app: Flask) -> Rotation:
    turns: Rotation = app.extensions[ROTATION]
    return turns


def routes(app: Flask | None = None) -> RouteCache:
    """The app's route cache (one per app, so two apps in one process never share routes)."""
    extensions = (app or current_app).extensions
    cache: RouteCache = extensions.setdefault(ROUTE_CACHE, RouteCache())
    return cache


def ring(app: Flask, call: IncomingCall, route: Route, now: datetime) -> str:
    """Log the ringing call and answer its TwiML: the ring plan, or voicemail when closed or nobody is on.

    The call is committed by the hot path's writer a moment after the answer (gateway/hotpath.py).
    Sequential and round-robin plans ring the owner of the caller's open lead first (from the process's
    book of owners, gateway/owners.py, or the database while the book cannot say); a round-robin
    plan starts at the call's turn in its number's rotation (tracked_numbers/rotation.py), or, when
    Redis cannot give one, advances the rotation in the database with the call and waits for that commit.
    Raises SQLAlchemyError or DatabaseUnavailable when the database cannot take the call."""
    after_hours = not department_open(route, now)
    writer = hot_path(app)
    strategy = route.strategy
    turn = None
    if not after_hours and strategy == RingStrategy.ROUND_ROBIN.value:
        turn = rotation(app).turn(route.number_id, call.sid)
    if after_hours or strategy != RingStrategy.ROUND_ROBIN.value or turn is not None:
        owner = None
        if not after_hours and strategy != RingStrategy.SIMULTANEOUS.value and call.caller is not None:
            known, owner = owners.book(app).lookup(route.store_id, call.caller)
            if not known:
                owner = writer.read(partial(_owner, call, route))
        steps = [] if after_hours else ring_steps(route, now, owner, lambda _number: turn or 0)
        ringing = _ringing(call, route, after_hours, steps, now)
        writer.log(lambda db: db.ring_later(ringing), partial(_keep_ringing, app, ringing))
        state = ringing.state
    else:
        # Redis cannot give the turn: the database's rotation, advanced with the call, which waits.

        def log_call(db: Statements) -> RingState:
            steps = ring_steps(route, now, _owner(call, route, db), db.advance_rotation)
            return db.ring(_ringing(call, route, False, steps, now))

        state = writer.write(log_call)
    if log.isEnabledFor(logging.DEBUG):
        log.debug("call %s from %s to %s", call.sid, mask(call.caller), call.to)
    return twiml.for_call(route, state, runtime_of(app).settings.public_base_url)


def _owner(call: IncomingCall, route: Route, db: Statements) -> str | None:
    """The key of the agent who owns the caller's open lead at this store: they ring first."""
    return db.owner_of_open_lead(call.caller, route.store_id)


def _ringing(call: IncomingCall, route: Route, after_hours: bool, steps: list[list[str]], now: datetime) -> RingingCall:
    return RingingCall(
        sid=call.sid,
        caller=call.caller,
        to=call.to,
        status=call.status,
        store_id=route.store_id,
        tracked_number_id=route.number_id,
        after_hours=after_hours,
        steps=steps,
        now=now,
    )


def _keep_ringing(app: Flask, ringing: RingingCall, error: BaseException) -> None:
    """The database refused a call already answered: keep it for the failsafe's replay."""
    log.error("call %s answered but not logged (%s): kept for replay", ringing.sid, error)
    with app.app_context():
        failsafe.spool("ring", failsafe.ring_record(ringing), ringing.now)


def logged_call(session: Session, sid: str) -> Call | None:
    """The call's row for a webhook about a call in progress or ended.

    A ring answered moments ago may still be on its way to the database, from this process's writer
    (flushed here) or another's (waited for, up to RING_LOG_GRACE). None when there is no such call."""
    call = calls.get_call(session, sid)
    if call is not None:
        return call
    deadline = time.monotonic() + RING_LOG_GRACE
    session.rollback()  # hold no snapshot or lock while the writers commit
    hot_path(current_app).flush()
    while True:
        call = calls.get_call(session, sid)
        if call is not None or time.monotonic() >= deadline:
            return call
        session.rollback()
        time.sleep(RING_LOG_POLL)


def _base() -> str:
    return runtime.current().settings.public_base_url


def _bad_request(error: ValueError) -> Response:
    return web.json_error(400, "bad_request", str(error))


@blueprint.post("/incoming")
@provider_webhook
def call_incoming() -> Response:
    """Every call to a tracked number: logged, then rung or sent to voicemail (gateway/hotpath.py)."""
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
        known, route = routes(app).fresh(call.to)
        if not known:
            with current.database.sessions() as session:
                route = routes(app).get(session, call.to)
        if route is None:
            log.error("call %s to %s: not a tracked number", call.sid, call.to)
            return twiml.respond(twiml.unknown_number())
        return twiml.respond(ring(app, call, route, now))
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
    call = logged_call(session, call_sid)
    route = routes().get(session, call.to_number) if call else None
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
    call = logged_call(session, call_sid)
    route = routes().get(session, call.to_number) if call else None
    agent = None
    if route is not None:
        agent = next((a for a in route.ring if a.key == request.args.get("agent")), None)
    if call is None or agent is None:
        return twiml.respond(twiml.hangup())
    now = runtime.current().clock.now()
    won = calls.accept_call(session, call_sid, agent.id, now)
    session.commit()
    if not won and call.answered_by_id != agent.id:
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
    call = logged_call(session, call_sid)
    if call is None:
        return twiml.respond(twiml.hangup())
    session.refresh(call)
    if call.accepted_at is not None:
        return twiml.respond(twiml.hangup())
    if (request.form.get("CallStatus") or "") in {"completed", "canceled"}:
        return twiml.respond(twiml.hangup())  # the caller hung up while it rang
    route = routes().get(session, call.to_number)
    if route is None:
        return twiml.respond(twiml.hangup())
    calls.advance_dial(session, call, step)
    if call.dial_step >= len(call.ringing_agents or []):
        calls.start_voicemail(session, call)
        session.refresh(call)
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
    calls.note_voicemail_length(session, call_sid, seconds)
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
    if ended.status not in calls.FINAL_STATUSES:
        return Response(status=204)
    now = runtime.current().clock.now()
    try:
        session = web.session()
        logged_call(session, ended.sid)
        route = routes().get(session, ended.to)
        calls.finish_call(session, ended, route.origin if route else None, now)
        session.commit()
    except SQLAlchemyError:
        log.exception("database unavailable for the end of call %s: kept for replay", ended.sid)
        web.session().rollback()
        failsafe.spool("status", dict(request.form), now)
    return Response(status=204)
