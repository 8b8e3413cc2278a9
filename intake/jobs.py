"""RQ entry points for the intake: the ADF records a request or an e-mail stored become leads here.

The request only stored them (one INSERT) and, after its commit, asked for `build_leads_job` on the
urgent lane (`request_build`), so the customer's first text still leaves within a second. The job claims
pending records a few at a time and builds each lead in a transaction of its own, so one record that
cannot be built holds up no other: it is marked failed with the reason and becomes a review task. The
sweep queues the job again for records left pending: Redis down at the commit, a job lost, a worker
killed after its claim.

One builder at a time keeps a burst of documents (a lead site resending a day's leads) from slowing
the intake. A job claims every pending record, not only its request's, and a Redis flag
  says a job is queued or running and will look again before it stops: a request queues a job only
  when the flag is down. A thousand documents in a few seconds cost a few jobs, not a thousand; on
  SQLite a second builder would only wait for the one write lock, and on PostgreSQL the other worker
  processes stay free for texts and calls. The builder never sleeps: a job on the urgent lane that
  paused would hold a process missed callers' first texts need.
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta

from redis import Redis
from sqlalchemy.exc import InterfaceError, OperationalError
from sqlalchemy.orm import Session

from gateway import runtime
from gateway.database import begin_giving_way
from gateway.jobs import Lane, SingleJob, enqueue_after_commit
from intake import services

log = logging.getLogger(__name__)

# Records claimed at once: a worker killed mid-batch leaves at most these for the sweep to hand out again.
CLAIM_BATCH = 5
# Batches one job builds before it makes way (a new job at the back of the lane) for other urgent work.
BATCHES_PER_JOB = 10
# A record stored this long ago and never claimed lost its job (Redis down at the commit): queued again.
REQUEUE_AFTER = timedelta(seconds=5)
# Errors that say the database, not the record, is the trouble: the record is left pending, not failed.
_DATABASE_TROUBLE = (OperationalError, InterfaceError)


def enqueue_build(session: Session) -> None:
    """Queue `build_leads_job` for when this session's transaction commits (the sweep's way)."""
    enqueue_after_commit(session, build_leads_job, lane=Lane.URGENT)


def request_build(redis: Redis, stored: int) -> None:
    """After the commit that stored `stored` new records: queue a build job unless one is queued or
    running (it claims these records too: it looks again after this commit). Redis down: the sweep
    builds them."""
    if stored:
        BUILD.request(redis)


def build_leads_job() -> None:
    """Build the leads of pending intake records until none is left or this job has done its share; then
    the rest goes on in a fresh job at the back of the lane, so that a missed caller's first text queued
    meanwhile is not held behind a whole backlog of leads."""
    current = runtime.current()
    shares = iter(range(BATCHES_PER_JOB))
    BUILD.drain(current.redis, _build_some, lambda: next(shares, None) is not None)


def _build_some() -> bool:
    claimed = _claim()
    _build(claimed)
    return bool(claimed)


# Up while a build job is queued or running; it expires after 30 s, should that job be lost.
BUILD = SingleJob("gateway:intake:build-queued", build_leads_job, Lane.URGENT, seconds=30)


def _claim() -> list[tuple[int, int]]:
    current = runtime.current()
    with current.database.session() as session:
        return services.claim_pending(session, current.clock.now(), CLAIM_BATCH)


def _build(claimed: list[tuple[int, int]]) -> None:
    for record_id, attempt in claimed:
        build_one(record_id, attempt)


def build_one(record_id: int, attempt: int) -> None:
    """One claimed record: its lead in one transaction; if that raises, the record failed (a review task)."""
    current = runtime.current()
    if attempt > services.MAX_ATTEMPTS:
        _fail(record_id, f"not built after {attempt - 1} attempts (the worker stopped or the database failed)")
        return
    try:
        with current.database.session() as session:
            begin_giving_way(session)  # the requests storing the next documents go first
            taken = services.build_record(session, record_id, attempt, current.clock.now())
    except _DATABASE_TROUBLE:
        _release(record_id, attempt)
        raise  # RQ retries the job; the record is still pending
    except Exception as error:
        log.exception("intake record %s could not be built", record_id)
        _fail(record_id, f"{type(error).__name__}: {error}")
        return
    if taken is not None:
        log.debug("intake record %s built into lead %s", record_id, taken.lead.code)


def _fail(record_id: int, reason: str) -> None:
    current = runtime.current()
    try:
        with current.database.session() as session:
            services.fail_record(session, record_id, reason, current.clock.now())
        return
    except _DATABASE_TROUBLE:
        raise  # still pending; the sweep hands it out again once the database is back
    except Exception:
        log.exception("intake record %s: the review task could not be opened", record_id)
    # The review could not be written: at least the record says why, and the log has it.
    with current.database.session() as session:
        services.mark_failed(session, record_id, f"{reason}; and no review task could be opened")


def _release(record_id: int, attempt: int) -> None:
    """Give the claim back, so the retried job takes the record at once (not after the claim timeout)."""
    current = runtime.current()
    try:
        with current.database.session() as session:
            services.release_claim(session, record_id, attempt)
    except _DATABASE_TROUBLE:
        log.warning("intake record %s: claim left to time out (the database is unavailable)", record_id)


def enqueue_pending_builds(session: Session, now: datetime) -> None:
    """Sweeper: a build job when some record waits with no job (lost) or with a dead worker's claim."""
    if services.has_pending(session, now, REQUEUE_AFTER):
        enqueue_build(session)
