"""Ringing: whether the department is open, whom to ring in what order, and the call's answer."""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import datetime
from functools import partial

from flask import Flask

from gateway.calls import failsafe, owners
from gateway.calls.hotpath import RingingCall, RingState, Statements, hot_path
from gateway.calls.routes import RingAgent, Route
from gateway.calls.services import IncomingCall
from gateway.hours import is_open
from gateway.models import RingStrategy
from gateway.phones import mask
from tracked_numbers.rotation import rotation

log = logging.getLogger(__name__)

DEFAULT_GREETING = ""
# A voicemail is a recording: the default prompts say so (several states require every party's consent).
DEFAULT_VOICEMAIL_PROMPT = (
    "Thanks for calling {store}. Sorry we missed you. Your message will be recorded. Please leave your "
    "name, number and how we can help after the tone, and we will call you right back."
)
DEFAULT_CLOSED_PROMPT = (
    "Thanks for calling {store}. We are closed right now. Your message will be recorded. Please leave "
    "your name, number and how we can help after the tone, and we will call you back as soon as we open."
)
# Played to the caller before an agent is bridged on a number with `record: true` (a store's
# `recording_disclosure` replaces it).
DEFAULT_RECORDING_DISCLOSURE = "This call may be recorded for quality and training."
DEFAULT_WHISPER = "Call from {source} for {store} {department}. Press 1 to accept."


def department_open(route: Route, now: datetime) -> bool:
    return is_open(route.hours, route.timezone, now)


def ring_steps(
    route: Route, now: datetime, owner_key: str | None, rotation: Callable[[int], int]
) -> list[list[str]]:
    """The agent keys to ring, step by step: one step for simultaneous, one agent a step otherwise.

    Off-duty agents are skipped. The owner of the caller's open lead rings first. `rotation(number_id)`
    advances a round-robin number's rotation atomically and says where this call starts.
    """
    on_duty = [a for a in route.ring if a.schedule is None or is_open(a.schedule, route.timezone, now)]
    keys = [a.key for a in on_duty]
    if not keys:
        return []
    if route.strategy == RingStrategy.SIMULTANEOUS.value:
        return [keys]
    if route.strategy == RingStrategy.ROUND_ROBIN.value:
        offset = rotation(route.number_id) % len(keys)
        keys = keys[offset:] + keys[:offset]
    if owner_key in keys:
        keys.remove(owner_key)
        keys.insert(0, owner_key)
    return [[k] for k in keys]


def agent_by_key(route: Route, key: str) -> RingAgent | None:
    return next((a for a in route.ring if a.key == key), None)


def ring(app: Flask, call: IncomingCall, route: Route, now: datetime) -> RingState:
    """Log the ringing call and decide its answer: the ring plan, or voicemail when closed or nobody is on.

    The call is committed by the hot path's writer a moment after the answer (gateway/calls/hotpath.py).
    Sequential and round-robin plans ring the owner of the caller's open lead first (from the process's
    book of owners, gateway/calls/owners.py, or the database while the book cannot say); a round-robin
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
    return state


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
        caller_id_unverified=call.caller_id_unverified,
    )


def _keep_ringing(app: Flask, ringing: RingingCall, error: BaseException) -> None:
    """The database refused a call already answered: keep it for the failsafe's replay."""
    log.error("call %s answered but not logged (%s): kept for replay", ringing.sid, error)
    with app.app_context():
        failsafe.spool("ring", failsafe.ring_record(ringing), ringing.now)
