"""Work for the RQ worker: enqueued after the transaction commits, re-enqueued by a sweep.

The database is the source of truth. A job only carries ids; the row it works on says whether there is
still something to do. Redis can be flushed or down: the sweep finds due rows again and enqueues them.

Work goes to one of three lanes (RQ queues), by urgency, and every worker takes the most urgent first:
`urgent` (what answers a customer's contact now: a missed contact's first text, the owner's alert,
answers to a text or keyword, the reply relay, sign-in codes), `default` (follow-up steps, escalation,
voicemail work, replays, the sweep's catch-up) and `crm` (deliveries). `gateway worker` keeps a process
that takes only urgent work, so a backlog in another lane never delays it (gateway/worker.py).

A batch job function marked `takes_waiting` (the texts' send) has its queued jobs' ids listed in Redis
too, so that the job a worker starts takes the ones queued behind it along (`take_waiting`): one round
trip to the provider serves them all, instead of one job after another each waiting on its own.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any, cast

from redis import Redis
from redis.client import Pipeline
from redis.exceptions import RedisError
from rq import Queue, Retry
from sqlalchemy import event
from sqlalchemy.orm import Session

log = logging.getLogger(__name__)

SESSION_REDIS_KEY = "gateway.redis"
_PENDING_KEY = "gateway.pending_jobs"
_SINGLE_KEY = "gateway.single_jobs"
RETRY = Retry(max=3, interval=[10, 60, 300])


class Lane(StrEnum):
    URGENT = "urgent"
    DEFAULT = "default"
    CRM = "crm"


# Most urgent first: the order a worker that takes several lanes looks in.
LANES = (Lane.URGENT, Lane.DEFAULT, Lane.CRM)


# Ids one job of a batch function takes at most, when a transaction's jobs are merged.
MERGED_BATCH = 50
# A function's waiting ids (`takes_waiting`) nobody took are forgotten after this; their own jobs remain.
WAITING_SECONDS = 3600


@dataclass(frozen=True)
class PendingJob:
    func: Callable[..., Any]  # a module-level function (RQ stores its dotted path), e.g. send_messages_job
    args: tuple[Any, ...] = ()
    job_id: str | None = None
    retry: bool = True
    lane: Lane = Lane.DEFAULT
    batch: bool = False  # the one argument is a list of ids: such jobs of one transaction are merged


def enqueue_after_commit(
    session: Session,
    func: Callable[..., Any],
    *args: Any,
    lane: Lane = Lane.DEFAULT,
    job_id: str | None = None,
    batch: bool = False,
) -> None:
    """Queue a job that is sent to Redis only once this session's transaction has committed.

    batch=True: `func` takes one list of ids, and the transaction's jobs of the same function and lane
    go as one job (a missed call's first text and its owner's alert: one job, sent at once, not two)."""
    job = PendingJob(func, tuple(args), job_id, lane=lane, batch=batch)
    session.info.setdefault(_PENDING_KEY, []).append(job)


def merged(jobs: list[PendingJob]) -> list[PendingJob]:
    """The jobs with each function's batch jobs of one lane merged where the first of them stood, their ids
    in order and once each, MERGED_BATCH ids a job."""
    ids: dict[tuple[Callable[..., Any], Lane], list[Any]] = {}
    order: list[PendingJob | tuple[Callable[..., Any], Lane]] = []
    for job in jobs:
        if not job.batch or job.job_id is not None:
            order.append(job)
            continue
        key = (job.func, job.lane)
        if key not in ids:
            ids[key] = []
            order.append(key)
        ids[key].extend(job.args[0])
    result: list[PendingJob] = []
    for item in order:
        if isinstance(item, PendingJob):
            result.append(item)
            continue
        func, lane = item
        unique = list(dict.fromkeys(ids[item]))
        for start in range(0, len(unique), MERGED_BATCH):
            result.append(PendingJob(func, (unique[start : start + MERGED_BATCH],), lane=lane, batch=True))
    return result


class SingleJob:
    """A job of which at most one is queued or running at a time, for work any one job drains whole (every
    due CRM delivery): a thousand transactions that each write some of it cost a few jobs, not a thousand.

    A Redis flag is up while the job is queued or running. A request (after the commit that wrote the work)
    queues the job only when the flag was down. The job keeps the flag up while it finds work; when it finds
    none it takes the flag down and looks once more, since work committed just before saw the flag up and
    queued nothing. While the job runs in a worker process, the flag names that process: killed there,
    its flag would hold every request off until it expired; the sweep lowers it once the process's alive
    key is gone and queues the job again (`revive`). The flag also expires after `seconds`, should its job
    be lost from the lane; the sweep requests again."""

    def __init__(self, flag: str, func: Callable[[], Any], lane: Lane, seconds: int = 60) -> None:
        self.flag = flag
        self.func = func
        self.lane = lane
        self.seconds = seconds
        _single_jobs[flag] = self  # one job per flag

    def request(self, redis: Redis) -> None:
        """Queue the job unless it is queued or running. Redis down: the sweep requests it later."""
        try:
            first = bool(redis.set(self.flag, _QUEUED, nx=True, ex=self.seconds))
        except RedisError as error:
            log.warning("redis unavailable, %s left for the sweep: %s", self.func.__name__, error)
            return
        if first and not enqueue(redis, [PendingJob(self.func, lane=self.lane)]):
            self.lower(redis)

    def request_after_commit(self, session: Session) -> None:
        """`request` once this session's transaction has committed (once, however often it is asked)."""
        singles: set[SingleJob] = session.info.setdefault(_SINGLE_KEY, set())
        singles.add(self)

    def keep(self, redis: Redis) -> None:
        """The job runs and finds work: the flag stays up, naming this process (and its expiry starts again)."""
        with contextlib.suppress(RedisError):
            redis.set(self.flag, _holder(), ex=self.seconds)

    def lower(self, redis: Redis) -> None:
        with contextlib.suppress(RedisError):  # else it expires
            redis.delete(self.flag)

    def take_over(self, redis: Redis) -> bool:
        """After `lower` and a last look that found work: True if this job goes on with it, False if a
        request queued another job meanwhile (that one goes on)."""
        try:
            return bool(redis.set(self.flag, _holder(), nx=True, ex=self.seconds))
        except RedisError:
            return True

    def again(self, redis: Redis) -> None:
        """The running job made way after its share: a fresh one at the back of the lane, the flag kept up
        (as queued: this process no longer holds it)."""
        with contextlib.suppress(RedisError):
            redis.set(self.flag, _QUEUED, ex=self.seconds)
        if not enqueue(redis, [PendingJob(self.func, lane=self.lane)]):
            self.lower(redis)

    def drain(self, redis: Redis, step: Callable[[], bool], more: Callable[[], bool]) -> None:
        """The job's body: `step` does one share of the work (False when it found none) while `more()`
        says this job may go on; then a fresh job takes the rest, at the back of the lane."""
        self.keep(redis)  # from its first moment the flag names the process running the job
        while more():
            if step():
                self.keep(redis)
                continue
            self.lower(redis)
            if not step():  # the last look: work committed as the flag went down
                return
            if not self.take_over(redis):
                return  # a request queued another job meanwhile: that one goes on
        self.again(redis)

    def revive(self, redis: Redis) -> bool:
        """The worker process named by the flag is dead (its alive key gone): the flag comes down, unless
        it changed meanwhile, and the job is queued again. True when it was."""
        try:
            holder = redis.get(self.flag)
            if holder is None or holder == _QUEUED:
                return False
            name = holder.decode() if isinstance(holder, bytes) else str(holder)
            living = alive(redis, {name})
            if living is None or name in living:
                return False
            if not redis.eval(_DELETE_IF_HOLDER, 1, self.flag, holder):
                return False
        except RedisError:
            return False  # the next sweep looks again
        log.warning("%s: worker %s died running it; queued again", self.func.__name__, name)
        self.request(redis)
        return True


# The flag's value while the job waits in its lane (or runs outside a worker process that keeps itself alive).
_QUEUED = b"1"
_DELETE_IF_HOLDER = """
if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('del', KEYS[1]) end
return 0
"""
_single_jobs: dict[str, SingleJob] = {}


def _holder() -> bytes:
    name = process_name()
    return name.encode() if name else _QUEUED


def revive_single_jobs(session: Session, _now: datetime) -> None:
    """Sweeper: every single job whose flag a dead worker process holds is queued again (`revive`)."""
    redis: Redis | None = session.info.get(SESSION_REDIS_KEY)
    if redis is None:
        return
    for job in list(_single_jobs.values()):
        job.revive(redis)


@event.listens_for(Session, "after_commit")
def _send_pending(session: Session) -> None:
    pending: list[PendingJob] = session.info.pop(_PENDING_KEY, [])
    singles: set[SingleJob] = session.info.pop(_SINGLE_KEY, set())
    redis: Redis | None = session.info.get(SESSION_REDIS_KEY)
    if redis is None:
        return
    if pending:
        enqueue(redis, merged(pending))
    for single in singles:
        single.request(redis)


@event.listens_for(Session, "after_rollback")
def _drop_pending(session: Session) -> None:
    session.info.pop(_PENDING_KEY, None)
    session.info.pop(_SINGLE_KEY, None)


def enqueue(redis: Redis, jobs: list[PendingJob]) -> bool:
    """Send jobs to their lanes in one round trip. False when Redis is unreachable: the sweep will catch up."""
    try:
        with redis.pipeline() as pipe:
            for lane in LANES:
                batch = [job for job in jobs if job.lane == lane]
                if batch:
                    make_queue(redis, lane).enqueue_many([_prepared(job) for job in batch], pipeline=pipe)
                    for job in batch:
                        _note_waiting(pipe, job)
            pipe.execute()
        return True
    except RedisError as error:
        log.warning("redis unavailable, %d job(s) left for the sweep: %s", len(jobs), error)
        return False


def _prepared(job: PendingJob) -> Any:
    return Queue.prepare_data(
        job.func,
        args=job.args,
        job_id=job.job_id,
        retry=RETRY if job.retry else None,
        result_ttl=60,
        failure_ttl=7 * 24 * 3600,
    )


# --- batch jobs that take the waiting ones' ids along --------------------------------------------------

_takes_waiting: set[str] = set()


def _name(func: Callable[..., Any]) -> str:
    return f"{func.__module__}.{func.__qualname__}"


def takes_waiting(func: Callable[..., Any]) -> Callable[..., Any]:
    """Mark a batch job function whose jobs may take along the ids of its jobs still queued (`take_waiting`).

    For work that mostly waits on the network (a text to the provider): a worker that starts one such job
    does the queued ones' work in the same round trip, instead of one job after another. Each id stays in
    its own job too, so nothing depends on the list: a job that finds its ids done does nothing."""
    _takes_waiting.add(_name(func))
    return func


def _waiting_key(func: Callable[..., Any]) -> str:
    return f"gateway:waiting:{_name(func)}"


def _note_waiting(pipe: Pipeline, job: PendingJob) -> None:
    if job.batch and _name(job.func) in _takes_waiting and job.args and job.args[0]:
        key = _waiting_key(job.func)
        now = time.time()
        pipe.zadd(key, {str(item): now for item in job.args[0]}, nx=True)
        pipe.expire(key, WAITING_SECONDS)


def take_waiting(redis: Redis, func: Callable[..., Any], own: list[int], count: int) -> list[int]:
    """Up to `count` ids of `func`'s queued jobs, oldest first, other than `own`, which are crossed off. None
    when no own id was listed still: another job took this one's along, so this one has nothing to wait
    on, and leaves the queue fast. Redis down: none (each job still has its own)."""
    key = _waiting_key(func)
    try:
        if not own or not redis.zrem(key, *[str(item) for item in own]) or count <= 0:
            return []
        popped = cast(list[tuple[bytes, float]], redis.zpopmin(key, count))
    except RedisError as error:
        log.warning("redis unavailable, the job takes no waiting work along: %s", error)
        return []
    return [int(member) for member, _score in popped]


def make_queue(redis: Redis, lane: Lane = Lane.DEFAULT) -> Queue:
    return Queue(lane.value, connection=redis)


# --- the sweep ------------------------------------------------------------------------------------------

Sweeper = Callable[[Session, datetime], None]
_sweepers: dict[str, Sweeper] = {}


def register_sweeper(name: str, sweeper: Sweeper) -> None:
    """A sweeper looks for due, unfinished rows and calls enqueue_after_commit for them."""
    _sweepers[name] = sweeper


register_sweeper("single-jobs", revive_single_jobs)


def sweepers() -> dict[str, Sweeper]:
    return dict(_sweepers)


def run_sweep(sessions: Callable[[], Session], now: datetime) -> None:
    """Every sweeper in its own transaction, so one failing does not stop the others."""
    for name, sweeper in sweepers().items():
        session = sessions()
        try:
            sweeper(session, now)
            session.commit()
        except Exception:
            session.rollback()
            log.exception("sweeper %s failed", name)
        finally:
            session.close()


class SweepThread(threading.Thread):
    """Runs the sweep every `interval` seconds; one sweep at a time across all workers (a Redis lock)."""

    def __init__(self, run: Callable[[], None], redis: Redis, interval: float, name: str) -> None:
        super().__init__(name="gateway-sweep", daemon=True)
        self._run = run
        self._redis = redis
        self._interval = interval
        self._owner = name
        self._stop_event = threading.Event()

    def stop(self) -> None:
        self._stop_event.set()

    def run(self) -> None:
        while not self._stop_event.is_set():
            try:
                got = self._redis.set(
                    "gateway:sweep-lock", self._owner, nx=True, px=max(int(self._interval * 900), 100)
                )
            except RedisError:
                got = True  # Redis down: sweep anyway; the rows are the guard against doubles
            if got:
                try:
                    self._run()
                except Exception:
                    log.exception("sweep failed")
            self._stop_event.wait(self._interval)


# --- which worker process holds a claim, and whether it is still alive ------------------------------------

# A worker process keeps `gateway:alive:<its name>` in Redis, set again every third of this; killed, its
# key is gone this long after. Work it had claimed can then be handed out again at once, instead of
# after a claim timeout sized for the slowest honest attempt.
ALIVE_SECONDS = 15
_ALIVE_KEY = "gateway:alive:"
_process_name: str | None = None


def process_name() -> str | None:
    """This worker process's name while it keeps itself alive (`AliveThread`); None elsewhere."""
    return _process_name


def alive(redis: Redis, names: set[str]) -> set[str] | None:
    """The names among `names` whose process is alive; None when Redis cannot say."""
    ordered = sorted(names)
    if not ordered:
        return set()
    try:
        present = redis.mget([f"{_ALIVE_KEY}{name}" for name in ordered])
    except RedisError:
        return None
    return {name for name, value in zip(ordered, present, strict=True) if value is not None}


class AliveThread(threading.Thread):
    """Keeps this process's alive key in Redis until stopped (then removes it). Redis down: tries again
    at the next beat; meanwhile others cannot tell and wait for the claim timeouts."""

    def __init__(self, redis: Redis, name: str) -> None:
        super().__init__(name="gateway-alive", daemon=True)
        self._redis = redis
        self._key = f"{_ALIVE_KEY}{name}"
        self._name = name
        self._stop_event = threading.Event()

    def start(self) -> None:
        global _process_name
        self._beat()  # before the first claim
        _process_name = self._name
        super().start()

    def stop(self) -> None:
        global _process_name
        self._stop_event.set()
        _process_name = None
        with contextlib.suppress(RedisError):
            self._redis.delete(self._key)

    def run(self) -> None:
        while not self._stop_event.wait(ALIVE_SECONDS / 3):
            self._beat()

    def _beat(self) -> None:
        with contextlib.suppress(RedisError):
            self._redis.set(self._key, "1", ex=ALIVE_SECONDS)
