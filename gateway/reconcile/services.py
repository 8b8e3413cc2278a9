"""A pass of reconciliation: what the provider logged that no webhook told the gateway, settled as if it had.

Three gaps close here. A call that rang (the gateway logged it) but whose final status callback never came
is fetched from the provider by its SID and, once the provider shows it ended, settled by
`gateway.calls.services.finish_call` exactly as the callback would have settled it. And for each active
tracked number the provider's calls and inbound texts since the number's watermarks (less OVERLAP) are
listed: a call or a text whose SID the gateway never logged goes through the same services its webhooks
would have reached (`record_incoming` + `finish_call`, `receive_text`), marked `reconciled`. And a text a
stopped worker left in doubt is looked up in the provider's log of sent texts (doubt.py): taken, or sent again.

Decisions written down here so they are not rediscovered:

- The provider is asked outside any transaction; each number's findings and its new watermarks are one
  transaction, each stuck call another. SIDs stay the exactly-once key (unique columns, conflict-tolerant
  inserts, `finish_call`'s conditional claim), so two passes at once, or a webhook that arrives after a
  pass, double nothing.
- A call or text that ended less than SETTLE_AFTER ago is left for the next pass (its webhook may be on
  its way), as is an unlogged call still queued, ringing or in progress; the number's watermark stays at
  the earliest such record, so the next pass lists it again.
- The response clock of what a pass finds starts when the customer called or texted (the provider's
  start time or date sent): the lead's created_at and the task's due time count from then.
- The provider down or refusing: logged, the watermarks stay, the next pass tries again. A refusal for
  one number (a 4xx) does not stop the others; an outage (no answer, 5xx, 429) ends the pass.
- A number seen for the first time is listed from when it was added to the gateway, at most
  FIRST_LOOKBACK back: calls it took before it was the gateway's were another system's.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import InstrumentedAttribute, Session, sessionmaker

from gateway.calls.routes import Route, load_route
from gateway.calls.services import CallEnded, IncomingCall, finish_call, record_incoming
from gateway.database import insert_ignoring_conflict, required
from gateway.hours import is_open
from gateway.messaging.inbound import IncomingText, receive_text
from gateway.metrics import RECONCILED
from gateway.models import Call, CallOutcome, Direction, Message, TrackedNumber
from gateway.phones import InvalidPhone, caller_number, mask, to_e164
from gateway.provider import Provider, ProviderCall, ProviderError, ProviderMessage
from gateway.reconcile.doubt import Doubts, settle_texts_in_doubt
from gateway.reconcile.models import ReconcileMark
from gateway.settings import Settings

log = logging.getLogger(__name__)

# Each listing starts this much before the watermark: the provider's log can show a record a little
# after it happened, and the two clocks may disagree.
OVERLAP = timedelta(minutes=10)
# A record that ended more recently than this may still get its webhook: the next pass looks again.
SETTLE_AFTER = timedelta(seconds=60)
FIRST_LOOKBACK = timedelta(days=1)
# A ringing call older than this is not asked about any more (the provider keeps its log, the gateway
# its row; a person can look).
STUCK_LOOKBACK = timedelta(days=2)
STUCK_BATCH = 500
# SIDs are looked up in the database this many at a time.
SID_CHUNK = 500


@dataclass
class PassResult:
    """What one pass did: counts for the log and the tests."""

    numbers: int = 0
    calls: int = 0  # calls the gateway never logged, settled
    texts: int = 0  # texts the gateway never logged, received
    stuck_calls: int = 0  # logged calls whose end came from the provider's record
    waiting: int = 0  # records left for the next pass (not ended, or ended moments ago)
    doubts: Doubts = field(default_factory=Doubts)  # texts a stopped worker left in doubt
    errors: list[str] = field(default_factory=list)


def reconcile(
    sessions: sessionmaker[Session],
    provider: Provider,
    now: datetime,
    *,
    keyword_replies: str = "provider",
    claim_timeout: timedelta = timedelta(seconds=Settings.send_claim_timeout),
) -> PassResult:
    """One pass: settle stuck calls and texts in doubt, then compare each active tracked number's log."""
    result = PassResult()
    if provider.sandbox:
        return result
    if not settle_stuck_calls(sessions, provider, now, result):
        return result  # the provider is unreachable: every number would fail the same way
    result.doubts, reachable = settle_texts_in_doubt(sessions, provider, now, claim_timeout, result.errors)
    if not reachable:
        return result
    with sessions() as session:
        numbers = [
            (row.id, row.number, row.created_at)
            for row in session.execute(
                select(TrackedNumber.id, TrackedNumber.number, TrackedNumber.created_at)
                .where(TrackedNumber.active.is_(True))
                .order_by(TrackedNumber.id)
            )
        ]
    for number_id, number, added_at in numbers:
        if not reconcile_number(sessions, provider, number_id, number, added_at, now, result,
                                keyword_replies=keyword_replies):
            break
    log.info(
        "reconciliation: %d number(s), %d call(s) and %d text(s) found, %d stuck call(s) settled, "
        "texts in doubt: %d taken, %d sent again, %d not sent; %d left for the next pass%s",
        result.numbers, result.calls, result.texts, result.stuck_calls, result.doubts.taken,
        result.doubts.sent_again, result.doubts.not_sent, result.waiting + result.doubts.waiting,
        f", {len(result.errors)} error(s)" if result.errors else "",
    )
    return result


# --- calls whose end never came ------------------------------------------------------------------------


def settle_stuck_calls(
    sessions: sessionmaker[Session], provider: Provider, now: datetime, result: PassResult
) -> bool:
    """Ask the provider about each call still ringing in the gateway's log a while after it began.

    False when the provider could not be reached (the pass stops there)."""
    with sessions() as session:
        stuck = list(
            session.execute(
                select(Call.sid)
                .where(
                    Call.outcome == CallOutcome.RINGING.value,
                    Call.processed_at.is_(None),
                    Call.kind.in_(("customer", "forwarded")),  # click-to-call legs end in the agent loop
                    Call.direction == Direction.INBOUND.value,
                    Call.started_at < now - SETTLE_AFTER,
                    Call.started_at >= now - STUCK_LOOKBACK,
                )
                .order_by(Call.started_at)
                .limit(STUCK_BATCH)
            ).scalars()
        )
    for sid in stuck:
        try:
            found = provider.fetch_call(sid)
        except ProviderError as error:
            result.errors.append(f"call {sid}: {error}")
            log.warning("reconciliation: could not fetch call %s: %s", sid, error)
            if error.retryable:
                return False
            continue
        if found is None:
            log.warning("reconciliation: the provider has no call %s; it stays ringing", sid)
            continue
        if not found.final:
            result.waiting += 1
            continue
        try:
            with sessions() as session:
                settled = _settle_from_record(session, sid, found, now)
                session.commit()
        except Exception as error:
            log.exception("reconciliation: settling call %s failed; the next pass tries again", sid)
            result.errors.append(f"call {sid}: {error}")
            continue
        if settled:
            result.stuck_calls += 1
            RECONCILED.labels(kind="call").inc()
            log.info("reconciliation: call %s settled from the provider's record (%s)", sid, found.status)
    return True


def _settle_from_record(session: Session, sid: str, found: ProviderCall, now: datetime) -> bool:
    call = session.scalar(select(Call).where(Call.sid == sid))
    if call is None or call.processed_at is not None:
        return False  # its status callback came in the meantime
    route = load_route(session, call.to_number)
    ended = CallEnded(
        sid=sid,
        status=found.status,
        duration=found.duration,
        caller=call.from_number,
        to=call.to_number,
        started_at=call.started_at,
        ended_at=found.end_time or now,
        reconciled=True,
    )
    return finish_call(session, ended, route.origin if route else None, now) is not None


# --- calls and texts the gateway never heard of ----------------------------------------------------------


def reconcile_number(
    sessions: sessionmaker[Session],
    provider: Provider,
    number_id: int,
    number: str,
    added_at: datetime,
    now: datetime,
    result: PassResult,
    *,
    keyword_replies: str = "provider",
) -> bool:
    """List one number's calls and texts at the provider and log what the gateway missed.

    False when the provider could not be reached (the pass stops there); the watermarks stay."""
    first = max(min(added_at, now), now - FIRST_LOOKBACK)
    with sessions() as session:
        mark = session.get(ReconcileMark, number_id)
        calls_from = (mark.calls_through if mark else first) - OVERLAP
        texts_from = (mark.texts_through if mark else first) - OVERLAP
    try:
        calls = provider.list_calls(number, calls_from)
        texts = provider.list_inbound_messages(number, texts_from)
    except ProviderError as error:
        result.errors.append(f"{number}: {error}")
        log.warning("reconciliation: could not list %s at the provider (watermark kept): %s", mask(number), error)
        with sessions() as session:
            _keep_mark(session, number_id, first, now, str(error))
            session.commit()
        return not error.retryable
    result.numbers += 1
    settled_calls = received_texts = 0
    session = sessions()
    try:
        route = load_route(session, number)
        if route is None:
            return True  # retired since the list was read
        calls_through, settled_calls = _log_missing_calls(session, route, calls, now, result)
        texts_through, received_texts = _log_missing_texts(session, route, texts, now, result, keyword_replies)
        _move_mark(session, number_id, calls_through, texts_through, now)
        session.commit()
    except Exception as error:
        session.rollback()
        log.exception("reconciliation of %s failed; its watermark is kept", mask(number))
        result.errors.append(f"{number}: {error}")
        with sessions() as other:
            _keep_mark(other, number_id, first, now, f"{type(error).__name__}: {error}")
            other.commit()
        return True
    finally:
        session.close()
    result.calls += settled_calls
    result.texts += received_texts
    if settled_calls:
        RECONCILED.labels(kind="call").inc(settled_calls)
    if received_texts:
        RECONCILED.labels(kind="message").inc(received_texts)
    return True


def _log_missing_calls(
    session: Session, route: Route, calls: list[ProviderCall], now: datetime, result: PassResult
) -> tuple[datetime, int]:
    """Settle each ended call the gateway never logged; the new calls watermark and how many."""
    through = now - SETTLE_AFTER
    inbound = [c for c in calls if c.direction == Direction.INBOUND.value and c.start_time is not None]
    known = _known(session, Call.sid, [c.sid for c in inbound])
    settled = 0
    for found in inbound:
        if found.sid in known:
            continue
        started = required(found.start_time, "start_time")
        if not found.final or (found.end_time or started) > now - SETTLE_AFTER:
            result.waiting += 1
            through = min(through, started)
            continue
        if _settle_unlogged_call(session, route, found, started, now):
            settled += 1
            log.info("reconciliation: call %s from %s to %s was never logged; settled (%s)",
                     found.sid, mask(found.from_number), mask(route.number), found.status)
    return through, settled


def _settle_unlogged_call(
    session: Session, route: Route, found: ProviderCall, started: datetime, now: datetime
) -> bool:
    """The call as its webhooks would have logged it: it rang at `started`, the gateway rang nobody
    (it never answered the call), and it ended as the provider says."""
    caller = caller_number(found.from_number)
    after_hours = not is_open(route.hours, route.timezone, started)
    incoming = IncomingCall(sid=found.sid, caller=caller, to=route.number, status=found.status)
    record_incoming(session, incoming, route.origin, after_hours=after_hours, steps=[], now=started)
    ended = CallEnded(
        sid=found.sid,
        status=found.status,
        duration=found.duration,
        caller=caller,
        to=route.number,
        started_at=started,
        ended_at=found.end_time or started,
        reconciled=True,
    )
    return finish_call(session, ended, route.origin, now) is not None


def _log_missing_texts(
    session: Session,
    route: Route,
    texts: list[ProviderMessage],
    now: datetime,
    result: PassResult,
    keyword_replies: str,
) -> tuple[datetime, int]:
    """Receive each text the gateway never logged; the new texts watermark and how many."""
    through = now - SETTLE_AFTER
    dated = [t for t in texts if t.date_sent is not None]
    known = _known(session, Message.sid, [t.sid for t in dated])
    received = 0
    for found in dated:
        if found.sid in known:
            continue
        sent = required(found.date_sent, "date_sent")
        if sent > now - SETTLE_AFTER:
            result.waiting += 1
            through = min(through, sent)
            continue
        try:
            sender = to_e164(found.from_number)
        except InvalidPhone:
            log.warning("reconciliation: text %s is from %r, not a phone number; skipped", found.sid,
                        mask(found.from_number))
            continue
        text = IncomingText(
            sid=found.sid,
            sender=sender,
            to=route.number,
            body=found.body,
            segments=None,
            sent_at=sent,
            reconciled=True,
        )
        outcome = receive_text(session, text, route.origin, now, keyword_replies=keyword_replies)
        if not outcome.duplicate:
            received += 1
            log.info("reconciliation: text %s from %s to %s was never logged; received",
                     found.sid, mask(sender), mask(route.number))
    return through, received


def _known(session: Session, column: InstrumentedAttribute[Any], sids: list[str]) -> set[str]:
    """Which of these SIDs the gateway has logged."""
    found: set[str] = set()
    for start in range(0, len(sids), SID_CHUNK):
        chunk = sids[start : start + SID_CHUNK]
        found.update(str(sid) for sid in session.scalars(select(column).where(column.in_(chunk))))
    return found


# --- watermarks ------------------------------------------------------------------------------------------


def _move_mark(
    session: Session, number_id: int, calls_through: datetime, texts_through: datetime, now: datetime
) -> None:
    values = {"calls_through": calls_through, "texts_through": texts_through, "checked_at": now,
              "last_error": None}
    if not insert_ignoring_conflict(
        session, ReconcileMark, {"tracked_number_id": number_id, **values}, ["tracked_number_id"]
    ):
        mark = required(session.get(ReconcileMark, number_id, populate_existing=True), "reconcile mark")
        for name, value in values.items():
            setattr(mark, name, value)


def _keep_mark(session: Session, number_id: int, first: datetime, now: datetime, error: str) -> None:
    """Note the failure; the watermarks stay where they were (or where the first pass starts)."""
    if not insert_ignoring_conflict(
        session,
        ReconcileMark,
        {"tracked_number_id": number_id, "calls_through": first, "texts_through": first,
         "checked_at": now, "last_error": error[:500]},
        ["tracked_number_id"],
    ):
        mark = required(session.get(ReconcileMark, number_id, populate_existing=True), "reconcile mark")
        mark.checked_at = now
        mark.last_error = error[:500]


def marks(session: Session, number_ids: Iterable[int]) -> dict[int, ReconcileMark]:
    """The watermarks of these tracked numbers (for `gateway status` and the tests)."""
    ids = list(number_ids)
    return {m.tracked_number_id: m for m in session.scalars(select(ReconcileMark).where(
        ReconcileMark.tracked_number_id.in_(ids)))}
