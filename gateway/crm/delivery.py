"""The outbox emptied: due deliveries claimed in batches and sent concurrently, in order within a stream.

A stream is one lead to one destination; a claim takes only a stream's oldest unfinished delivery and,
for HTTP destinations, the due deliveries right behind it (CHAIN), which one thread sends in order,
releasing the rest unsent when one does not go. So a stream's deliveries arrive in the order they were
written, while different streams go out at once: up to PER_TARGET at a time to one destination,
POOL_SIZE in all, over kept-alive HTTP connections and a few SMTP sessions that carry many messages each
(gateway/crm/transport.py).

A destination that times out or refuses connections is paused: its pending deliveries wait for their
back-off and this process claims none of its new ones until the pause ends, so a hanging CRM costs one
attempt per pause and never holds the other destinations' deliveries or the worker. A batch waits at most
STRAGGLER_WAIT for its slowest attempts; the rest finish in the background and record themselves. A
worker killed mid-batch leaves its claims `delivering`; the outbox's sweep sends them again after the
claim timeout, with the same idempotency key, so receivers drop what they already have.
"""

from __future__ import annotations

import logging
import threading
import time
import weakref
from collections import defaultdict
from collections.abc import Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from prometheus_client import Counter
from sqlalchemy import select, update
from sqlalchemy.orm import Session, aliased

from gateway import runtime
from gateway.crm.models import CrmDelivery, DeliveryStatus, DestinationKind, pending, unfinished
from gateway.crm.transport import AdfEmail, DeliveryError, post_adf, post_json, send_adf_emails
from gateway.database import begin_giving_way
from gateway.jobs import Lane, SingleJob, process_name
from gateway.models import Store
from gateway.runtime import Runtime

log = logging.getLogger(__name__)

CRM_ATTEMPTS = Counter(
    "gateway_crm_attempts_total", "CRM delivery attempts by result and destination kind.", ["result", "kind"]
)

RETRY_WINDOW = timedelta(hours=24)
FIRST_BACKOFF = 30.0
MAX_BACKOFF = 3600.0
# Defaults of the settings read from Settings.extra: the HTTP/SMTP timeout of one attempt, and how long
# a claimed delivery may go unanswered before the sweep decides its worker died and sends it again.
DEFAULT_TIMEOUT = 10.0
DEFAULT_CLAIM_TIMEOUT = 300.0
# Deliveries claimed at once, and attempts in flight from one process: in all, and to one destination.
# A JSON webhook gets every event of every lead (five or six for a missed call). A batch's sends wait
# for each other (claim, send, record, claim again: a few hundred ms a round on a busy machine), so at
# 100 ms an answer 8 at a time fell a minute behind a busy hour's events and 16 half a minute.
BATCH = 200
POOL_SIZE = 72
PER_TARGET = 32
# E-mails to one mail server go over this many sessions at once, each carrying many messages.
SMTP_SESSIONS = 4
# Due deliveries of one HTTP stream sent one after another from one claim, at most this many: a JSON
# webhook gets five or six events from one missed call's transaction, and a claim-send-record round
# each put the last of them seconds behind. A chain holds one of its destination's places.
CHAIN = 8
# A chain starts no further send after this long: its claims are released for the next round instead of
# being held behind a slow destination (so a batch's chains finish within its straggler wait).
CHAIN_SECONDS = 1.0
# How long a batch waits for its slowest attempts before leaving them to finish in the background.
STRAGGLER_WAIT = 2.0
# Outcomes that arrive within this long of each other are recorded in one transaction.
RECORD_EVERY = 0.05
# A job keeps claiming batches while there is due work, for at most this long.
JOB_SECONDS = 5.0


def backoff(attempts: int) -> timedelta:
    """The wait after the `attempts`-th failed attempt: 30 s, 1 min, 2 min, 4 min ... at most 1 h."""
    seconds = FIRST_BACKOFF * 2 ** max(attempts - 1, 0) if attempts < 20 else MAX_BACKOFF
    return timedelta(seconds=min(seconds, MAX_BACKOFF))


def setting(current: Runtime, name: str, default: float) -> float:
    return float(current.settings.extra.get(name, default))


@dataclass(frozen=True)
class Attempt:
    """What a send needs, copied out of the session so no transaction stays open during I/O."""

    id: int
    kind: str
    target: str
    payload: bytes
    idempotency_key: str
    store_name: str
    secret: str | None
    attempts: int
    stream: str = ""


@dataclass(frozen=True)
class Outcome:
    attempt: Attempt
    error: DeliveryError | None
    # False: never sent (its destination was paused while it waited); released as it was.
    sent: bool = True


class _Destinations:
    """This process's view of its destinations: attempts in flight and pauses (in the app's clock)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.in_flight: dict[str, int] = defaultdict(int)
        self.paused_until: dict[str, datetime] = {}

    def paused(self, now: datetime) -> list[str]:
        with self._lock:
            for target in [t for t, until in self.paused_until.items() if until <= now]:
                del self.paused_until[target]
            return list(self.paused_until)

    def is_paused(self, target: str, now: datetime) -> bool:
        with self._lock:
            until = self.paused_until.get(target)
            return until is not None and until > now

    def pause(self, target: str, until: datetime) -> None:
        with self._lock:
            previous = self.paused_until.get(target)
            self.paused_until[target] = until if previous is None else max(previous, until)

    def room(self, target: str) -> int:
        with self._lock:
            return max(0, PER_TARGET - self.in_flight[target])

    def started(self, target: str, count: int = 1) -> None:
        with self._lock:
            self.in_flight[target] += count

    def finished(self, target: str, count: int = 1) -> None:
        with self._lock:
            self.in_flight[target] = max(0, self.in_flight[target] - count)


# One view per app (its database), so two apps in one process never share pauses.
_views: weakref.WeakKeyDictionary[Any, _Destinations] = weakref.WeakKeyDictionary()
_pool_lock = threading.Lock()
_pool: ThreadPoolExecutor | None = None


def _destinations(current: Runtime) -> _Destinations:
    with _pool_lock:
        view = _views.get(current.database)
        if view is None:
            view = _views[current.database] = _Destinations()
        return view


def _executor() -> ThreadPoolExecutor:
    global _pool
    with _pool_lock:
        if _pool is None:
            _pool = ThreadPoolExecutor(max_workers=POOL_SIZE, thread_name_prefix="crm-delivery")
        return _pool


def unblocked() -> Any:
    """No older delivery of the same stream is unfinished (correlated on the row being looked at)."""
    older = aliased(CrmDelivery)
    return ~(
        select(older.id)
        .where(older.stream == CrmDelivery.stream, older.id < CrmDelivery.id, unfinished(older))
        .exists()
    )


def deliver_due_job() -> None:
    """RQ job (crm lane): deliver what is due, batch after batch, for up to JOB_SECONDS; one such job is
    queued or running at a time (`DELIVERY`), however many transactions wrote deliveries meanwhile."""
    current = runtime.current()
    deadline = time.monotonic() + JOB_SECONDS
    DELIVERY.drain(current.redis, lambda: bool(deliver_batch(current)), lambda: time.monotonic() < deadline)


DELIVERY = SingleJob("gateway:crm:delivery-queued", deliver_due_job, Lane.CRM)


def deliver_batch(current: Runtime, only: Sequence[int] | None = None) -> int:
    """Claim up to BATCH due deliveries (or just `only`), send them, record each. Returns how many."""
    attempts = claim(current, only)
    if attempts:
        send_all(current, attempts)
    return len(attempts)


def claim(current: Runtime, only: Sequence[int] | None = None) -> list[Attempt]:
    """Mark due stream heads `delivering`, within each destination's room, each HTTP stream's head with
    the due deliveries right behind it (up to CHAIN, not with `only`); what to send, in stream order."""
    now = current.clock.now()
    destinations = _destinations(current)
    paused = destinations.paused(now)
    with current.database.session() as session:
        begin_giving_way(session)  # deliveries may lag by seconds; webhooks and texts go first
        query = select(CrmDelivery.id, CrmDelivery.target, CrmDelivery.stream, CrmDelivery.kind).where(
            pending(),
            CrmDelivery.next_attempt_at <= now,
            unblocked(),
        )
        if paused:
            query = query.where(CrmDelivery.target.not_in(paused))
        if only is not None:
            query = query.where(CrmDelivery.id.in_(list(only)))
        candidates = session.execute(query.order_by(CrmDelivery.id).limit(BATCH * 4)).all()
        room: dict[str, int] = {}
        chosen: list[int] = []
        chained: dict[str, int] = {}  # an HTTP stream -> its head, which may take followers
        for delivery_id, target, stream, kind in candidates:
            if target not in room:
                room[target] = destinations.room(target)
            if room[target] > 0 and len(chosen) < BATCH:
                room[target] -= 1
                chosen.append(delivery_id)
                if kind in _CHAINED and only is None:
                    chained[stream] = delivery_id
        if not chosen:
            return []
        after = _followers(session, chained, now)
        chosen += list(after)
        # What to send comes back with the claim (no second read of the rows under the write lock).
        claimed = sorted(
            session.execute(
                update(CrmDelivery)
                .where(CrmDelivery.id.in_(chosen), CrmDelivery.status == DeliveryStatus.PENDING.value)
                .values(
                    status=DeliveryStatus.DELIVERING.value,
                    claimed_at=now,
                    claimed_by=process_name(),
                    attempts=CrmDelivery.attempts + 1,
                    updated_at=now,
                )
                .returning(
                    CrmDelivery.id, CrmDelivery.kind, CrmDelivery.target, CrmDelivery.payload,
                    CrmDelivery.idempotency_key, CrmDelivery.store_id, CrmDelivery.attempts, CrmDelivery.stream,
                )
                .execution_options(synchronize_session=False)
            ).all(),
            key=lambda row: int(row.id),
        )
        claimed = _released_behind_gaps(session, claimed, after)
        stores = {s.id: s for s in session.scalars(select(Store).where(Store.id.in_({r.store_id for r in claimed})))}
        attempts = [
            Attempt(
                id=row.id,
                kind=row.kind,
                target=row.target,
                payload=row.payload,
                idempotency_key=row.idempotency_key,
                store_name=stores[row.store_id].name,
                secret=_secret(stores[row.store_id], row.kind, row.target),
                attempts=row.attempts,
                stream=row.stream,
            )
            for row in claimed
        ]
        session.commit()
    return attempts


_CHAINED = (DestinationKind.ADF_HTTP.value, DestinationKind.WEBHOOK.value)


def _followers(session: Session, streams: dict[str, int], now: datetime) -> dict[int, int]:
    """Behind each stream's head (`streams`: stream -> head), the due pending deliveries that follow it
    with none of the stream's unfinished deliveries skipped, at most CHAIN a stream in all: each with
    the delivery it goes after."""
    if not streams:
        return {}
    rows = session.execute(
        select(CrmDelivery.stream, CrmDelivery.id, CrmDelivery.status, CrmDelivery.next_attempt_at)
        .where(CrmDelivery.stream.in_(list(streams)), unfinished())
        .order_by(CrmDelivery.stream, CrmDelivery.id)
    ).all()
    after: dict[int, int] = {}
    last = dict(streams)  # stream -> the chain's last delivery so far
    length: dict[str, int] = defaultdict(lambda: 1)
    ended: set[str] = set()
    for stream, delivery_id, status, due in rows:
        if stream in ended or delivery_id <= streams[stream]:
            continue
        if status != DeliveryStatus.PENDING.value or due > now or length[stream] >= CHAIN:
            ended.add(stream)  # the chain ends where the stream's next delivery cannot go now
            continue
        after[delivery_id] = last[stream]
        last[stream] = delivery_id
        length[stream] += 1
    return after


def _released_behind_gaps(session: Session, claimed: list[Any], after: dict[int, int]) -> list[Any]:
    """A follower goes only right behind the delivery before it, claimed here too: when another worker
    took a stream's head (or a follower) first, what was claimed behind it goes back as it was."""
    kept: set[int] = set()
    keep: list[Any] = []
    release: list[int] = []
    for row in claimed:  # in id order: a delivery's predecessor comes before it
        delivery_id = int(row.id)
        if delivery_id not in after or after[delivery_id] in kept:
            kept.add(delivery_id)
            keep.append(row)
        else:
            release.append(delivery_id)
    if release:
        session.execute(
            update(CrmDelivery)
            .where(CrmDelivery.id.in_(release))
            .values(status=DeliveryStatus.PENDING.value, claimed_at=None, claimed_by=None,
                    attempts=CrmDelivery.attempts - 1)
            .execution_options(synchronize_session=False)
        )
    return keep


def _secret(store: Store, kind: str, target: str) -> str | None:
    """The webhook secret as configured now (a rotated secret signs retries), matched by URL."""
    if kind != DestinationKind.WEBHOOK.value:
        return None
    for entry in store.crm or []:
        if not isinstance(entry, dict) or entry.get("type") != kind or not entry.get("secret"):
            continue
        if str(entry.get("url") or "") == target:
            return str(entry["secret"])
    return None


def send_all(current: Runtime, attempts: list[Attempt]) -> None:
    """Send concurrently and record results as they come; stragglers finish and record in the background."""
    pool = _executor()
    futures: list[Future[list[Outcome]]] = []
    by_target: dict[str, list[Attempt]] = defaultdict(list)
    for attempt in attempts:
        by_target[attempt.target].append(attempt)
    destinations = _destinations(current)
    for target, group in by_target.items():
        destinations.started(target, len(group))
        if group[0].kind == DestinationKind.ADF_EMAIL.value:
            emails = [a for a in group if a.kind == DestinationKind.ADF_EMAIL.value]
            for index in range(SMTP_SESSIONS):
                share = emails[index::SMTP_SESSIONS]
                if share:
                    futures.append(pool.submit(_email_session, current, share))
        else:
            chains: dict[str, list[Attempt]] = defaultdict(list)
            for attempt in group:  # in id order: each stream's chain in stream order
                chains[attempt.stream or str(attempt.id)].append(attempt)
            futures.extend(pool.submit(_chain, current, chain) for chain in chains.values())
    pending = set(futures)
    deadline = time.monotonic() + max(STRAGGLER_WAIT, 0.0)
    while pending:
        # Results are recorded a few at a time, not one transaction each: SQLite has one writer.
        done, pending = wait(pending, timeout=max(0.0, deadline - time.monotonic()), return_when=FIRST_COMPLETED)
        if pending:
            more, pending = wait(pending, timeout=min(RECORD_EVERY, max(0.0, deadline - time.monotonic())))
            done |= more
        outcomes = [outcome for future in done for outcome in future.result()]
        if outcomes:
            record(current, outcomes)
        if time.monotonic() >= deadline:
            break
    for future in pending:
        # The job goes on without them: once recorded, the streams they held need another job.
        future.add_done_callback(lambda finished: record(current, finished.result(), follow_up=True))


def _chain(current: Runtime, chain: list[Attempt]) -> list[Outcome]:
    """One stream's deliveries in order; the first that does not go, or CHAIN_SECONDS spent, releases
    those behind it unsent."""
    outcomes: list[Outcome] = []
    deadline = time.monotonic() + CHAIN_SECONDS
    for index, attempt in enumerate(chain):
        [outcome] = _one(current, attempt)
        outcomes.append(outcome)
        if outcome.error is not None or not outcome.sent or time.monotonic() > deadline:
            outcomes.extend(Outcome(rest, None, sent=False) for rest in chain[index + 1:])
            break
    return outcomes


def _one(current: Runtime, attempt: Attempt) -> list[Outcome]:
    if _destinations(current).is_paused(attempt.target, current.clock.now()):
        return [Outcome(attempt, None, sent=False)]
    try:
        _send(current, attempt)
    except DeliveryError as error:
        return [_failed(current, attempt, error)]
    return [Outcome(attempt, None)]


def _email_session(current: Runtime, attempts: list[Attempt]) -> list[Outcome]:
    """Many ADF e-mails over one SMTP session; the session's failure fails the ones not yet sent."""
    smtp_url = current.settings.smtp_url
    if not smtp_url:
        error = DeliveryError("SMTP_URL is not set, so ADF e-mail cannot be sent; set it and replay", False)
        return [Outcome(a, error) for a in attempts]
    timeout = setting(current, "crm_timeout", DEFAULT_TIMEOUT)
    emails = [AdfEmail(a.target, a.store_name, a.payload, a.idempotency_key) for a in attempts]
    results = send_adf_emails(smtp_url, emails, timeout)
    return [
        _failed(current, attempt, error) if error is not None else Outcome(attempt, None)
        for attempt, error in zip(attempts, results, strict=True)
    ]


def _failed(current: Runtime, attempt: Attempt, error: DeliveryError) -> Outcome:
    if error.retryable and error.status is None:
        # Not an answer but no answer (timeout, refused, reset): the destination itself is in trouble.
        _destinations(current).pause(attempt.target, current.clock.now() + backoff(attempt.attempts))
    return Outcome(attempt, error)


def _send(current: Runtime, attempt: Attempt) -> None:
    timeout = setting(current, "crm_timeout", DEFAULT_TIMEOUT)
    if attempt.kind == DestinationKind.ADF_HTTP.value:
        post_adf(attempt.target, attempt.payload, attempt.idempotency_key, timeout)
    elif attempt.kind == DestinationKind.WEBHOOK.value:
        if attempt.secret is None:
            raise DeliveryError("the webhook destination (or its secret) is no longer configured", False)
        post_json(
            attempt.target, attempt.payload, attempt.secret, attempt.idempotency_key, timeout,
            now=int(current.clock.now().timestamp()),
        )
    else:
        raise DeliveryError(f"unknown CRM destination type {attempt.kind!r}", False)


def record(current: Runtime, outcomes: list[Outcome], *, follow_up: bool = False) -> None:
    """Each outcome on its row; a paused destination's waiting deliveries move to the end of the pause.
    `follow_up`: queue another job for the streams these deliveries held (a straggler's, recorded late)."""
    now = current.clock.now()
    destinations = _destinations(current)
    try:
        with current.database.session() as session:
            begin_giving_way(session)
            delivered = [o.attempt.id for o in outcomes if o.sent and o.error is None]
            if delivered:
                _record_delivered(session, delivered, now)
            for outcome in outcomes:
                if not outcome.sent:
                    _release(session, outcome.attempt.id, now)
                elif outcome.error is not None:
                    _record_failure(session, outcome.attempt.id, outcome.error, now)
            for target in {o.attempt.target for o in outcomes if o.error is not None and o.error.status is None}:
                if destinations.is_paused(target, now):
                    _defer_target(session, target, now)
            session.commit()
    except Exception:
        log.exception("crm deliveries %s: outcome not recorded; the sweep will send them again",
                      [o.attempt.id for o in outcomes])
        raise
    finally:
        for outcome in outcomes:
            destinations.finished(outcome.attempt.target)
    if follow_up:
        DELIVERY.request(current.redis)


def _record_delivered(session: Session, ids: list[int], now: datetime) -> None:
    """The common outcome, for many rows in one statement (without loading them: the write lock is short)."""
    kinds = session.scalars(
        update(CrmDelivery)
        .where(CrmDelivery.id.in_(ids), CrmDelivery.status == DeliveryStatus.DELIVERING.value)
        .values(
            status=DeliveryStatus.DELIVERED.value,
            delivered_at=now,
            last_error=None,
            claimed_at=None,
            claimed_by=None,
            updated_at=now,
        )
        .returning(CrmDelivery.kind)
        .execution_options(synchronize_session=False)
    ).all()
    for kind in kinds:
        CRM_ATTEMPTS.labels(result="delivered", kind=kind).inc()


def _claimed_row(session: Session, delivery_id: int, now: datetime) -> CrmDelivery | None:
    """The delivery's row, still `delivering` (else None: settled meanwhile), its claim given up."""
    row = session.get(CrmDelivery, delivery_id)
    if row is None or row.status != DeliveryStatus.DELIVERING.value:
        return None
    row.claimed_at = None
    row.claimed_by = None
    row.updated_at = now
    return row


def _release(session: Session, delivery_id: int, now: datetime) -> None:
    """An attempt that never went (its destination paused, or its chain stopped): back as it was."""
    row = _claimed_row(session, delivery_id, now)
    if row is None:
        return
    row.status = DeliveryStatus.PENDING.value
    row.attempts = max(0, row.attempts - 1)
    row.next_attempt_at = max(row.next_attempt_at, now)


def _record_failure(session: Session, delivery_id: int, error: DeliveryError, now: datetime) -> None:
    """An attempt that failed: retried after its back-off, or a dead letter."""
    row = _claimed_row(session, delivery_id, now)
    if row is None:
        return
    row.last_error = str(error)[:2000]
    if error.retryable and now < row.retry_until:
        row.status = DeliveryStatus.PENDING.value
        row.next_attempt_at = min(now + backoff(row.attempts), row.retry_until)
        CRM_ATTEMPTS.labels(result="retry", kind=row.kind).inc()
    else:
        row.status = DeliveryStatus.DEAD.value
        CRM_ATTEMPTS.labels(result="dead", kind=row.kind).inc()
    log.warning("crm delivery %s (%s, attempt %s) failed: %s -> %s", row.id, row.kind, row.attempts, error, row.status)


def _defer_target(session: Session, target: str, now: datetime) -> None:
    """Every pending delivery to a paused destination waits with it (at least the first back-off)."""
    until = now + backoff(1)
    session.execute(
        update(CrmDelivery)
        .where(
            CrmDelivery.target == target,
            pending(),
            CrmDelivery.next_attempt_at < until,
        )
        .values(next_attempt_at=until)
        .execution_options(synchronize_session=False)
    )
