"""The life of a customer call: recorded when it rings, settled exactly once when it ends.

When a call ends nobody answered, the lead (new or joined) gets an owner and a follow-up task, and
`events.contact_unanswered` is announced for the cadence, the alert and the CRM. Exactly once: the
call row is claimed by a conditional update on `processed_at`, which only one request can win.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from flask import current_app
from sqlalchemy import select, update
from sqlalchemy.orm import Session

from gateway import events
from gateway.calls.hotpath import hot_path
from gateway.calls.rows import new_call
from gateway.database import insert_ignoring_conflict, required
from gateway.leads import (
    Origin,
    assign_owner,
    contact_for_phone,
    ensure_task,
    follow_up_due,
    open_or_join_lead,
    record_event,
    record_human_contact,
)
from gateway.models import Agent, Call, CallOutcome, Lead, Store, TaskKind
from gateway.phones import mask

log = logging.getLogger(__name__)

FINAL_STATUSES = frozenset({"completed", "busy", "no-answer", "failed", "canceled"})

# How long a webhook about a call waits for the ring another web process answered to be committed; the
# writers commit within milliseconds, so past this the call was never logged (it rang while the
# database was down, or the process that answered it died) and the webhook handles it as unknown.
RING_LOG_GRACE = 1.0
RING_LOG_POLL = 0.02


# The provider's SHAKEN/STIR verification of the caller ID (Twilio's `StirVerstat` on an incoming call):
# TN-Validation-Passed-A/B/C, No-TN-Validation (nothing to verify: most calls), or a failure,
# TN-Validation-Failed-A/B/C (and a bare TN-Validation-Failed from some carriers). Only a failure
# flags the call: the signature was there and did not hold, so the number shown may be someone else's.
VERSTAT_FAILED = "tn-validation-failed"


def caller_id_failed(verstat: str | None) -> bool:
    """Whether a StirVerstat value says the caller ID failed verification (any case, padding ignored)."""
    return verstat is not None and verstat.strip().lower().startswith(VERSTAT_FAILED)


@dataclass(frozen=True)
class IncomingCall:
    sid: str
    caller: str | None  # E.164, None when withheld
    to: str
    status: str = "ringing"
    caller_id_unverified: bool = False


@dataclass(frozen=True)
class CallEnded:
    """A call's final status. A status callback tells only the status and duration; a call settled from
    the provider's own record (`reconciled`, gateway/reconcile/) also tells when it started and ended."""

    sid: str
    status: str
    duration: int | None
    caller: str | None
    to: str
    caller_id_unverified: bool = False
    started_at: datetime | None = None
    ended_at: datetime | None = None
    reconciled: bool = False


def record_incoming(
    session: Session,
    call: IncomingCall,
    origin: Origin,
    *,
    after_hours: bool,
    steps: list[list[str]],
    now: datetime,
) -> tuple[Call, bool]:
    """Log the ringing call once; a provider retry gets the call as first recorded."""
    values = new_call(
        sid=call.sid,
        store_id=origin.store_id,
        tracked_number_id=origin.tracked_number_id,
        from_number=call.caller,
        to_number=call.to,
        status=call.status,
        now=now,
        after_hours=after_hours,
        ringing_agents=steps,
        voicemail_started=after_hours or not steps,
        caller_id_unverified=call.caller_id_unverified,
    )
    inserted = insert_ignoring_conflict(session, Call, values, ["sid"])
    row = required(session.scalar(select(Call).where(Call.sid == call.sid)), f"call {call.sid}")
    return row, inserted


def get_call(session: Session, sid: str) -> Call | None:
    return session.scalar(select(Call).where(Call.sid == sid))


def accept_call(session: Session, sid: str, agent_id: int, now: datetime) -> bool:
    """The agent pressed 1 (or picked up an unscreened leg): first one wins, the call is answered."""
    result = session.execute(
        update(Call)
        .where(Call.sid == sid, Call.accepted_at.is_(None))
        .values(accepted_at=now, answered_by_id=agent_id)
    )
    return bool(getattr(result, "rowcount", 0))


def advance_dial(session: Session, call: Call, from_step: int) -> int:
    """Move to the next ring step once, however often the provider retries the Dial action, and not once
    an agent has taken the call. `call` is left as the row is now (the UPDATE returns it; a retry or a
    taken call reads it). Returns its ring step."""
    moved = session.scalars(
        update(Call)
        .where(Call.id == call.id, Call.dial_step == from_step, Call.accepted_at.is_(None))
        .values(dial_step=from_step + 1)
        .returning(Call),
        execution_options={"populate_existing": True},
    ).first()
    if moved is None:
        session.refresh(call)
    return call.dial_step


def start_voicemail(session: Session, call: Call) -> None:
    """The call goes to voicemail; `call` is left as the row is now."""
    session.scalars(
        update(Call).where(Call.id == call.id).values(voicemail_started=True).returning(Call),
        execution_options={"populate_existing": True},
    ).first()


def note_voicemail_length(session: Session, sid: str, seconds: int) -> None:
    session.execute(update(Call).where(Call.sid == sid).values(voicemail_seconds=seconds))


def _outcome(call: Call, status: str) -> CallOutcome:
    if call.accepted_at is not None:
        return CallOutcome.ANSWERED
    if call.kind == "forwarded":
        return CallOutcome.FORWARDED
    if status == "busy":
        return CallOutcome.BUSY
    if status == "failed":
        return CallOutcome.FAILED
    if call.after_hours:
        return CallOutcome.AFTER_HOURS
    if call.voicemail_started and (call.voicemail_seconds or 0) > 0:
        return CallOutcome.VOICEMAIL
    if call.voicemail_started:
        return CallOutcome.MISSED
    return CallOutcome.ABANDONED


def finish_call(
    session: Session, ended: CallEnded, origin: Origin | None, now: datetime, *, loaded: Call | None = None
) -> Call | None:
    """Settle a call that ended. Returns the call when this request did the work, None if done before.
    `loaded`: the call's row, when the caller has just read it (not read again)."""
    known = loaded if loaded is not None and loaded.sid == ended.sid else get_call(session, ended.sid)
    if known is None:
        if origin is None:
            log.error("call %s ended at an unknown number; nothing to settle", ended.sid)
            return None
        # The end arrived first (callbacks out of order, or the call came in while the database was
        # down): log the call from what the end tells.
        values = new_call(
            sid=ended.sid,
            store_id=origin.store_id,
            tracked_number_id=origin.tracked_number_id,
            from_number=ended.caller,
            to_number=ended.to,
            status=ended.status,
            now=now,
            started_at=ended.started_at or now - timedelta(seconds=ended.duration or 0),
            caller_id_unverified=ended.caller_id_unverified,
        )
        insert_ignoring_conflict(session, Call, values, ["sid"])
    settled: dict[str, Any] = {
        "processed_at": now, "ended_at": ended.ended_at or now, "status": ended.status, "duration": ended.duration
    }
    if ended.reconciled:
        settled["reconciled"] = True
    # The row as the update left it comes back with it (and refreshes the one in the session).
    call = session.scalars(
        update(Call)
        .where(Call.sid == ended.sid, Call.processed_at.is_(None))
        .values(**settled)
        .returning(Call),
        execution_options={"populate_existing": True},
    ).first()
    if call is None:
        return None
    if call.kind == "click_to_call":
        return call  # outbound agent calls are settled by the agent loop
    settle_call(session, call, origin, now)
    return call


def settle_call(session: Session, call: Call, origin: Origin | None, now: datetime) -> None:
    """Lead, owner, outcome; for an unanswered call a follow-up task and the unanswered event."""
    if call.store_id is None:
        return
    store = required(session.get(Store, call.store_id), f"store {call.store_id}")
    outcome = _outcome(call, call.status)
    call.outcome = outcome.value
    if origin is None or origin.store_id != store.id:
        origin = _fallback_origin(call, store)
    # The response clock starts when the customer called. A status callback arrives as the call ends;
    # a call settled late from the provider's record counts from when it really started.
    contacted_at = call.started_at if call.reconciled else now
    # The call's outcome and its lead go in one UPDATE: finding the contact and the lead needs neither.
    with session.no_autoflush:
        contact = contact_for_phone(session, call.from_number)
        lead, _ = open_or_join_lead(session, contact, origin, contacted_at)
    call.lead_id = lead.id
    _note_verification(session, store, lead, call, now)
    owner = assign_owner(session, lead, now)
    log.info(
        "call %s from %s ended: %s (lead %s)", call.sid, mask(call.from_number), outcome.value, lead.code
    )
    if call.reconciled:
        record_event(
            session, lead, "reconciled", _RECONCILED_CALL, now,
            {"call_id": call.id, "sid": call.sid, "started_at": call.started_at.isoformat()},
        )
    if outcome == CallOutcome.ANSWERED:
        agent = session.get(Agent, call.answered_by_id) if call.answered_by_id else None
        # The conversation began when the agent took the call (or, unscreened, when the call began).
        record_human_contact(session, lead, agent, "answered call", now, at=call.accepted_at or call.started_at)
    elif outcome == CallOutcome.FORWARDED:
        ensure_task(session, lead, TaskKind.REVIEW, owner, follow_up_due(store, lead.department, now), now)
        record_event(
            session, lead, "forwarded",
            "The call was forwarded to the main line while the gateway's database was down.", now,
        )
    else:
        ensure_task(
            session, lead, TaskKind.CALLBACK, owner, follow_up_due(store, lead.department, contacted_at), now
        )
        events.contact_unanswered.send(session, lead=lead, call=call, now=now)
    events.call_completed.send(session, lead=lead, call=call, now=now)


def _note_verification(session: Session, store: Store, lead: Lead, call: Call, now: datetime) -> None:
    """The lead carries its latest call's verdict; a failed verification goes in its timeline."""
    if lead.caller_id_unverified != call.caller_id_unverified:
        lead.caller_id_unverified = call.caller_id_unverified
    if not call.caller_id_unverified:
        return
    consequence = (
        "automated texts still go (the store allows it)"
        if store.text_unverified_callers
        else "no automated text goes to it, since the number may belong to someone else"
    )
    record_event(
        session, lead, "caller_id_unverified",
        f"The caller ID failed the carrier's SHAKEN/STIR verification: {consequence}.",
        now, {"call": call.sid, "texts": store.text_unverified_callers},
    )


def texts_allowed(store: Store, call: Call) -> bool:
    """Whether automated texts may follow this call: not to a caller ID that failed verification,
    unless the store has chosen to (`text_unverified_callers: true`)."""
    return not call.caller_id_unverified or store.text_unverified_callers
_RECONCILED_CALL = (
    "The provider never told the gateway how this call ended (its webhooks were lost or the gateway was "
    "unreachable); it was settled from the provider's call log."
)


def _fallback_origin(call: Call, store: Store) -> Origin:
    """The tracked number is gone from the configuration: keep the call in its store's first department."""
    department = next(iter(store.hours), "sales")
    return Origin(store_id=store.id, department=department, source=None, tracked_number_id=None)


def lead_of_call(session: Session, call: Call) -> Lead | None:
    return session.get(Lead, call.lead_id) if call.lead_id else None


def logged_call(session: Session, sid: str) -> Call | None:
    """The call's row for a webhook about a call in progress or ended.

    A ring answered moments ago may still be on its way to the database, from this process's writer
    (flushed here) or another's (waited for, up to RING_LOG_GRACE). None when there is no such call."""
    call = get_call(session, sid)
    if call is not None:
        return call
    deadline = time.monotonic() + RING_LOG_GRACE
    session.rollback()  # hold no snapshot or lock while the writers commit
    hot_path(current_app).flush()
    while True:
        call = get_call(session, sid)
        if call is not None or time.monotonic() >= deadline:
            return call
        session.rollback()
        time.sleep(RING_LOG_POLL)
