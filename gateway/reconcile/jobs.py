"""The reconciliation pass as worker work: started by the sweep every GATEWAY_RECONCILE_INTERVAL seconds.

The sweep runs every couple of seconds in every worker; `start_when_due` takes a Redis key that expires
after the interval, so one pass starts per interval across all workers, and hands the pass to the
default lane: it talks to the provider for a while and must not hold up the sweep. A pass that dies or a
Redis that forgets the key costs at most an extra or a late pass: the pass itself is idempotent.
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta

from flask import Flask, current_app
from redis.exceptions import RedisError
from sqlalchemy.orm import Session

from gateway import runtime
from gateway.jobs import Lane, PendingJob, enqueue, register_sweeper
from gateway.reconcile.services import PassResult, reconcile

log = logging.getLogger(__name__)

PASS_KEY = "gateway:reconcile-pass"  # noqa: S105 - a Redis key, not a secret
_TOLD = "gateway.reconcile.told"


def init_app(app: Flask) -> None:
    register_sweeper("reconcile", start_when_due)


def start_when_due(session: Session, now: datetime) -> None:
    """Sweeper: start a pass if none started within the interval (off with 0, nothing to do in sandbox)."""
    current = runtime.current()
    interval = current.settings.reconcile_interval
    if interval <= 0:
        _say_once("off", "reconciliation with the provider is off (GATEWAY_RECONCILE_INTERVAL=0)")
        return
    if current.provider.sandbox:
        _say_once("sandbox", "sandbox mode: no provider log to reconcile with; reconciliation does nothing")
        return
    try:
        due = current.redis.set(PASS_KEY, now.isoformat(), nx=True, px=max(int(interval * 1000), 1))
    except RedisError:
        return  # the pass goes to a worker through Redis: it waits until Redis is back
    if due:
        enqueue(current.redis, [PendingJob(reconcile_job, lane=Lane.DEFAULT, retry=False)])


def reconcile_job() -> None:
    """One reconciliation pass (RQ entry point)."""
    run_pass()


def run_pass() -> PassResult:
    current = runtime.current()
    if current.provider.sandbox:
        _say_once("sandbox", "sandbox mode: no provider log to reconcile with; reconciliation does nothing")
        return PassResult()
    return reconcile(
        current.database.sessions,
        current.provider,
        current.clock.now(),
        keyword_replies=current.settings.keyword_replies,
        claim_timeout=timedelta(seconds=current.settings.send_claim_timeout),
    )


def _say_once(what: str, message: str) -> None:
    told: set[str] = current_app.extensions.setdefault(_TOLD, set())
    if what not in told:
        told.add(what)
        log.info(message)
