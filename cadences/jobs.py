"""RQ entry points for cadences: step ids in, dispatch, commit. And the sweeps that keep them moving."""

from __future__ import annotations

import logging
from datetime import datetime, timedelta

from redis import Redis
from redis.exceptions import RedisError
from sqlalchemy.orm import Session

from cadences import services
from gateway import runtime
from gateway.jobs import SESSION_REDIS_KEY, Lane, enqueue_after_commit, make_queue
from gateway.messaging.outbound import send_messages

log = logging.getLogger(__name__)

# Steps per job: one claim, one load and one commit for the lot, then their sends.
BATCH = 500
# Texts claimed for sending at once: a worker killed while the provider answers leaves at most these
# marked unknown for a person to check, instead of the whole job's.
SEND_CHUNK = 250
# Steps one sweep hands to the queue at most; the next sweep takes the rest.
SWEEP_LIMIT = 5_000
# Jobs waiting in the queue above which the sweep adds no more steps: texts are written only as fast
# as they can be sent, so none waits long enough for the due-messages sweep to queue it a second time.
MAX_WAITING_JOBS = 8
# A step handed to the queue and still scheduled this long after (Redis flushed, job lost) goes again.
REQUEUE_AFTER = timedelta(minutes=2)


def dispatch_steps_job(step_ids: list[int]) -> None:
    """Claim the due steps, write their texts and commit; then send those texts here, through the
    messaging pipeline's claim and send guard (a worker that dies before sending leaves them pending for
    the due-messages sweep)."""
    current = runtime.current()
    now = current.clock.now()
    with current.database.session() as session:
        done = services.dispatch_steps(session, step_ids, now, enqueue=False)
    if done.claimed:
        log.info("cadence steps: %d claimed, %d texts, %d skipped", done.claimed, len(done.texts), done.skipped)
    send_texts(done.by_recipient())


def send_texts(groups: list[list[int]]) -> None:
    """The texts through `send_messages` (its claim, the guard, the provider), SEND_CHUNK at a time:
    texts to different customers go to the provider a few at once; a customer's texts go one after the
    other, in due order (each group is one customer's, in that order, and stays in one chunk)."""
    chunk: list[int] = []
    for group in groups:
        if chunk and len(chunk) + len(group) > SEND_CHUNK:
            send_messages(chunk)
            chunk = []
        chunk.extend(group)
    if chunk:
        send_messages(chunk)


def _queue_is_full(session: Session) -> bool:
    redis: Redis | None = session.info.get(SESSION_REDIS_KEY)
    if redis is None:
        return False
    try:
        return int(make_queue(redis, Lane.DEFAULT).count) > MAX_WAITING_JOBS
    except RedisError:
        return False  # the enqueue after commit will notice and leave the steps to a later sweep


def enqueue_due_steps(session: Session, now: datetime) -> None:
    """Sweeper: due steps go to the queue in batches. The rows, not Redis, remember them."""
    if _queue_is_full(session):
        return
    ids = services.due_step_ids(session, now, SWEEP_LIMIT, REQUEUE_AFTER)
    for start in range(0, len(ids), BATCH):
        enqueue_after_commit(session, dispatch_steps_job, ids[start : start + BATCH])
    if ids:
        services.mark_enqueued(session, ids, now)


def sync_step_outcomes(session: Session, now: datetime) -> None:
    """Sweeper: steps follow their texts (deferred, refused, unknown...)."""
    services.sync_outcomes(session, now)
