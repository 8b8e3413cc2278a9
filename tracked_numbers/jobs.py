"""The daily number health check: each store at most once a day, its managers texted once per new problem.

"A day" is GATEWAY_NUMBER_CHECK_INTERVAL (86,400 seconds; 0 turns the check off). The sweep finds stores
whose last check is that old and queues a check for each (again after
REQUEUE_AFTER if the job was lost); the job claims the store with a conditional update, so however
often it is queued the store is checked once. A problem is remembered by its key
(number_health_problems): only one the store was not told about before sends texts, and one the check
no longer finds is forgotten, so it is news again if it comes back. The provider is asked only when
there are credentials; when it cannot be reached, the configuration's problems are still checked and
the provider's are neither announced nor forgotten.
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta

from sqlalchemy import or_, select, update
from sqlalchemy.orm import Session

from gateway import runtime
from gateway.agents.alerts import send_alert
from gateway.database import insert_ignoring_conflict
from gateway.jobs import enqueue_after_commit
from gateway.models import Agent, Role, Store, TrackedNumber
from gateway.provider import Provider, ProviderError
from tracked_numbers import health
from tracked_numbers.models import HealthRun, KnownProblem

log = logging.getLogger(__name__)

# A check queued and not claimed this long after (Redis flushed, job lost) is queued again.
REQUEUE_AFTER = timedelta(minutes=10)


def _interval() -> timedelta | None:
    seconds = runtime.current().settings.number_check_interval
    return timedelta(seconds=seconds) if seconds > 0 else None


def enqueue_due_checks(session: Session, now: datetime) -> None:
    """Sweeper: a check for each store not checked in the last interval."""
    every = _interval()
    if every is None:
        return
    store_ids = list(session.scalars(select(Store.id).order_by(Store.id)))
    if not store_ids:
        return
    insert_missing_runs(session, store_ids)
    due = list(
        session.scalars(
            select(HealthRun.store_id).where(
                or_(HealthRun.checked_at.is_(None), HealthRun.checked_at <= now - every),
                or_(HealthRun.queued_at.is_(None), HealthRun.queued_at <= now - REQUEUE_AFTER),
            )
        )
    )
    for store_id in due:
        session.execute(update(HealthRun).where(HealthRun.store_id == store_id).values(queued_at=now))
        enqueue_after_commit(session, check_store_job, store_id)


def insert_missing_runs(session: Session, store_ids: list[int]) -> None:
    known = set(session.scalars(select(HealthRun.store_id)))
    for store_id in store_ids:
        if store_id not in known:
            insert_ignoring_conflict(session, HealthRun, {"store_id": store_id, "checked_at": None}, ["store_id"])


def check_store_job(store_id: int) -> None:
    """Check one store, once a day however often it was queued, and tell its managers what is new."""
    current = runtime.current()
    now = current.clock.now()
    every = _interval()
    provider = None if current.provider.sandbox else current.provider
    if every is None:
        return
    with current.database.session() as session:
        if claim(session, store_id, now, every):
            announce(session, store_id, provider, current.settings.public_base_url, now)


def claim(session: Session, store_id: int, now: datetime, every: timedelta) -> bool:
    """The store's check for this interval, for one job only (a conditional update)."""
    claimed = session.execute(
        update(HealthRun)
        .where(
            HealthRun.store_id == store_id,
            or_(HealthRun.checked_at.is_(None), HealthRun.checked_at <= now - every),
        )
        .values(checked_at=now)
    )
    return bool(getattr(claimed, "rowcount", 0))


def announce(
    session: Session, store_id: int, provider: Provider | None, base_url: str, now: datetime
) -> list[health.Problem]:
    """Run the check for one store; text its managers each problem they were not told about. Returns
    the new problems."""
    found = health.configuration_problems(session, [store_id])
    checked = set(health.CONFIGURATION_KINDS)
    if provider is not None:
        try:
            found = health.provider_problems(session, provider, base_url, [store_id]) + found
            checked |= health.PROVIDER_KINDS
        except ProviderError as error:
            log.warning("number health: the provider could not be asked (%s); its checks wait", error)
    keys = {problem.key for problem in found}
    for known in session.scalars(select(KnownProblem).where(KnownProblem.store_id == store_id)):
        if known.kind in checked and known.key not in keys:
            session.delete(known)
    session.flush()
    new = []
    for problem in found:
        values = {
            "key": problem.key, "store_id": store_id, "kind": problem.kind.value, "text": problem.text,
            "first_seen_at": now,
        }
        if insert_ignoring_conflict(session, KnownProblem, values, ["key"]):
            new.append(problem)
    if new:
        _tell_managers(session, store_id, new, now)
    return new


def _tell_managers(session: Session, store_id: int, problems: list[health.Problem], now: datetime) -> None:
    managers = list(
        session.scalars(
            select(Agent)
            .where(Agent.store_id == store_id, Agent.role == Role.MANAGER.value, Agent.active.is_(True))
            .order_by(Agent.id)
        )
    )
    sender = _sender(session, store_id)
    if not managers or sender is None:
        log.warning(
            "number health: %d new problem(s) at store %s and %s to tell",
            len(problems), store_id, "no manager" if not managers else "no number to text from",
        )
        return
    for problem in problems:
        row = session.scalar(select(KnownProblem).where(KnownProblem.key == problem.key))
        for manager in managers:
            send_alert(
                session,
                lead=None,
                agent=manager,
                body=f"Gateway check: {problem.text}",
                # Row ids may come back after a delete (SQLite): the time makes each announcement its own.
                origin=f"health:{row.id if row else problem.key}:{int(now.timestamp())}:{manager.id}",
                now=now,
                from_=sender,
            )


def _sender(session: Session, store_id: int) -> str | None:
    """The store's first active tracked number (a manager's reply reaches the gateway), else any."""
    numbers = list(
        session.scalars(select(TrackedNumber).where(TrackedNumber.active.is_(True)).order_by(TrackedNumber.id))
    )
    own = [n for n in numbers if n.store_id == store_id]
    chosen = own or numbers
    return chosen[0].number if chosen else None
