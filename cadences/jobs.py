"""RQ entry points for cadences: step ids in, dispatch, commit. And the sweeps that keep them moving."""

from __future__ import annotations

import logging
from datetime import datetime, timedelta

from sqlalchemy.orm import Session

from cadences import services
from gateway import runtime
from gateway.jobs import enqueue_after_commit

log = logging.getLogger(__name__)

DISPATCH_JOB = "cadences.jobs.dispatch_steps_job"
# Steps per job: one claim, one load and one commit for the lot.
BATCH = 200
# Steps one sweep hands to the queue at most; the next sweep takes the rest.
SWEEP_LIMIT = 20_000
# A step handed to the queue and still scheduled this long after (Redis flushed, job lost) goes again.
REQUEUE_AFTER = timedelta(minutes=2)


def dispatch_steps_job(step_ids: list[int]) -> None:
    current = runtime.current()
    now = current.clock.now()
    with current.database.session() as session:
        done = services.dispatch_steps(session, step_ids, now)
    if done.claimed:
        log.info("cadence steps: %d claimed, %d texts, %d skipped", done.claimed, len(done.texts), done.skipped)


def enqueue_due_steps(session: Session, now: datetime) -> None:
    """Sweeper: due steps go to the queue in batches. The rows, not Redis, remember them."""
    ids = services.due_step_ids(session, now, SWEEP_LIMIT, REQUEUE_AFTER)
    for start in range(0, len(ids), BATCH):
        enqueue_after_commit(session, DISPATCH_JOB, ids[start : start + BATCH])
    if ids:
        services.mark_enqueued(session, ids, now)


def sync_step_outcomes(session: Session, now: datetime) -> None:
    """Sweeper: steps follow their texts (deferred, refused, unknown...)."""
    services.sync_outcomes(session, now)
