"""`gateway worker`: RQ workers on Redis, one per lane set, with the sweep that makes the database the
source of truth.

`gateway worker --concurrency N` runs N worker processes and restarts any that dies. The first takes only
the `urgent` lane, the second `urgent` then `default`, the others every lane, most urgent first (see
`lanes_for`): so however long the CRM lane's backlog or however slow a CRM, a missed caller's first text
and the owner's alert always have a process waiting for them. RQ's own WorkerPool gives every worker the
same queues, which cannot promise that; each process here is an ordinary RQ SimpleWorker (no fork per
job: the app, its pools and its connections stay warm between jobs). The last process runs the sweep, so
the urgent-only process spends no time on it, and the processes that take every lane run at a lower CPU
priority (`niced`).
"""

from __future__ import annotations

import contextlib
import inspect
import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from types import FrameType
from typing import Any

from flask import Flask
from redis import ConnectionPool, Redis
from redis.backoff import NoBackoff
from redis.client import Pipeline
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError
from redis.exceptions import TimeoutError as RedisTimeoutError
from redis.retry import Retry
from rq import SimpleWorker
from rq.exceptions import StopRequested
from rq.job import Job
from rq.queue import Queue
from rq.scheduler import RQScheduler
from rq.worker import WorkerStatus
from sqlalchemy.orm import Session

from gateway import logs, runtime
from gateway.database import refresh_statistics
from gateway.jobs import LANES, AliveThread, Lane, SweepThread, make_queue, register_sweeper, run_sweep
from gateway.metrics import JOB_WAIT_SECONDS

log = logging.getLogger(__name__)

# The urgent lane may fall this far behind before a warning is logged (at most one a minute).
URGENT_LAG_WARNING = 1.0
_WARN_EVERY = 60.0
# A worker process that keeps dying is restarted at most this often.
RESTART_PAUSE = 1.0
# On the way out, a Redis command gives up after this long (the blocking dequeue's timeout is minutes).
STOP_TIMEOUT = 5.0
# A worker process not stopped this long after the stop signal (and not running a job) exits anyway;
# `--concurrency N` kills one still running after STOP_GRACE.
WORKER_STOP_GRACE = 20.0
STOP_GRACE = 30.0


def lanes_for(index: int, concurrency: int) -> tuple[Lane, ...]:
    """The lanes of the `index`-th of `concurrency` worker processes, most urgent first."""
    if concurrency <= 1:
        return LANES
    if index == 0:
        return (Lane.URGENT,)
    if index == 1 and concurrency >= 3:
        return (Lane.URGENT, Lane.DEFAULT)
    return LANES


def niced(index: int, concurrency: int) -> bool:
    """Whether the `index`-th process runs at a lower CPU priority: those that take every lane, when
    others keep to the urgent lanes. On a machine short of CPU the web processes and the urgent lane
    come first, and CRM deliveries (which may lag by seconds) wait; an idle machine sees no difference."""
    return concurrency > 1 and lanes_for(index, concurrency) == LANES


NICENESS = 5


def _lower_priority() -> None:
    os.nice(NICENESS)


def sweep_once(app: Flask) -> None:
    with app.app_context():
        current = runtime.current()
        run_sweep(current.database.sessions, current.clock.now())


# SQLite's statistics, sampled again this often by the sweeping process (milliseconds each time).
STATISTICS_EVERY = timedelta(minutes=10)
_statistics_at: dict[str, datetime] = {}


def _refresh_statistics(session: Session, now: datetime) -> None:
    connection = session.connection()
    last = _statistics_at.get(str(connection.engine.url))
    if last is not None and timedelta(0) <= now - last < STATISTICS_EVERY:
        return
    refresh_statistics(connection)
    _statistics_at[str(connection.engine.url)] = now


register_sweeper("sqlite-statistics", _refresh_statistics)


class _LagWatch:
    """Notices jobs that waited too long in the urgent lane; logs at most once a minute."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._warned_at = 0.0

    def started(self, job: Job, queue: Queue) -> None:
        enqueued = job.enqueued_at
        if enqueued is None:
            return
        if enqueued.tzinfo is None:
            enqueued = enqueued.replace(tzinfo=UTC)
        waited = (datetime.now(UTC) - enqueued).total_seconds()
        JOB_WAIT_SECONDS.labels(lane=queue.name).observe(waited)
        if queue.name != Lane.URGENT.value or waited <= URGENT_LAG_WARNING:
            return
        with self._lock:
            if time.monotonic() - self._warned_at < _WARN_EVERY:
                return
            self._warned_at = time.monotonic()
        log.warning("the urgent lane is %.1f s behind (job %s waited); add workers or look at the load",
                    waited, job.func_name)


class _RedisOutageInOneLine(logging.Filter):
    """RQ's work loop ends on a Redis error outside its blocking dequeue with "found an unhandled
    exception" and a traceback. A lost connection is an outage, not a bug: its message, in one line."""

    def filter(self, record: logging.LogRecord) -> bool:
        error = record.exc_info[1] if record.exc_info else None
        if isinstance(error, RedisConnectionError | RedisTimeoutError):
            record.msg = f"{record.getMessage()} (redis unavailable: {error})"
            record.args = None
            record.exc_info = None
            record.exc_text = None
        return True


_REDIS_OUTAGE_IN_ONE_LINE = _RedisOutageInOneLine()


class GatewayScheduler(RQScheduler):
    """RQ's scheduler process (due retries and delayed jobs back into their lanes). Redis gone: it ends
    with one line instead of a traceback, and the worker starts another once Redis answers; stopped
    while Redis is gone, it ends quietly (its locks expire by themselves)."""

    stopping = False

    def request_stop(self, signum: int | None = None, frame: FrameType | None = None) -> None:
        self.stopping = True
        super().request_stop(signum, frame)  # type: ignore[no-untyped-call]

    def work(self) -> None:
        try:
            super().work()  # type: ignore[no-untyped-call]
        except RedisError as error:
            if not self.stopping:
                log.warning("the job scheduler stops, redis unavailable (%s); the worker starts it again",
                            error)


class GatewayWorker(SimpleWorker):
    """An RQ SimpleWorker that notes how long each job waited in its lane, and that stops on SIGTERM
    or SIGINT whether or not Redis answers.

    RQ's own stop asks Redis to note the stop when a job is running and, on the way out, waits on
    Redis with the long read timeout meant for its blocking dequeue; `stopping` is also set, so that
    `run_worker` does not start the worker again and a stop that came before RQ's signal handlers were
    in place is not lost.
    """

    lag_watch = _LagWatch()
    # RQ's dequeue retries a lost connection with a growing pause, up to a minute by default: a Redis
    # back is noticed within this, and a stop whose signal came mid-log-line (below) is kept waiting
    # no longer than this.
    max_connection_wait_time = 5.0

    def __init__(self, *args: Any, stopping: threading.Event | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.stopping = stopping if stopping is not None else threading.Event()

    def execute_job(self, job: Job, queue: Queue) -> Any:
        self.lag_watch.started(job, queue)
        return super().execute_job(job, queue)

    def request_stop(self, signum: int, frame: FrameType | None) -> None:
        """RQ's handler of the first SIGTERM or SIGINT: idle, stop now; busy, after the current job."""
        self.stopping.set()
        super().request_stop(signum, frame)  # type: ignore[no-untyped-call]

    def heartbeat(self, timeout: int | None = None, pipeline: Pipeline | None = None) -> None:
        # First thing in each turn of RQ's dequeue loop, which retries a lost connection for ever. The
        # StopRequested RQ's handler raises is lost if the signal lands inside code that swallows errors
        # (a log handler other than ours: `logs.let_through` covers the gateway's), so a stop noted then
        # still ends the loop here.
        try:
            super().heartbeat(timeout, pipeline)
        except RedisError:
            if self.stopping.is_set():
                raise StopRequested from None
            raise

    def check_for_suspension(self, burst: bool) -> None:
        # First thing in each turn of RQ's loop: a stop noted while the worker was starting ends it here.
        if self.stopping.is_set():
            raise StopRequested
        super().check_for_suspension(burst)

    def set_shutdown_requested_date(self) -> None:
        # Called from RQ's signal handler while a job runs: a Redis error here would be raised inside
        # the job. The date only informs `rq info`; the worker stops after the job all the same.
        try:
            super().set_shutdown_requested_date()  # type: ignore[no-untyped-call]
        except RedisError as error:
            log.warning("redis unavailable (%s); the worker stops after the current job", error)

    def _start_scheduler(
        self, burst: bool = False, logging_level: str | None = "INFO", *args: Any, **kwargs: Any
    ) -> None:
        # RQ's step, with GatewayScheduler on a connection whose reads time out (the scheduler never
        # blocks on purpose, so a Redis that stopped answering must not hold it, nor the stop that
        # waits for it). RQ has no setting for the scheduler class; rq is pinned below 4 for this.
        if burst:
            super()._start_scheduler(burst, logging_level, *args, **kwargs)
            return
        pool_kwargs = self.connection.connection_pool.connection_kwargs
        self.scheduler = GatewayScheduler(
            self.queues,
            connection=Redis(connection_pool=ConnectionPool(**{**pool_kwargs, "socket_timeout": STOP_TIMEOUT})),
            logging_level=logging_level if logging_level is not None else self.log.level,
            serializer=self.serializer,
        )
        self.scheduler.acquire_locks(auto_start=True)  # type: ignore[no-untyped-call]

    def stop_scheduler(self) -> None:
        # RQ's sends SIGTERM and waits as long as the scheduler takes; one held by a Redis that takes
        # connections but does not answer is killed instead (its locks expire by themselves).
        process = self.scheduler._process if self.scheduler is not None else None
        if process is None or process.pid is None:
            return
        process.terminate()
        process.join(STOP_TIMEOUT)
        if process.is_alive():
            log.warning("the job scheduler (pid %s) did not stop within %.0fs; killed", process.pid, STOP_TIMEOUT)
            process.kill()
            process.join()

    def unsubscribe(self) -> None:
        """RQ's end of its command listener, in an order that cannot hold a stop for a minute.

        RQ unsubscribes, then stops the listener thread. A listener that reads the unsubscription before
        it is stopped waits for the next subscription for RQ's whole `sleep_time` (60 s), and from
        redis-py 8.2 that `stop()` waits for it: the stop outlived its grace and the process ended
        without its clean-up (its alive key stayed). Here the listener is told to end first, then the
        unsubscription's answer wakes it, and it is waited for a bounded time."""
        thread = self.pubsub_thread
        if thread is None or self.pubsub is None:
            return
        _stop_listener(thread, 0)
        with contextlib.suppress(RedisError):
            self.pubsub.unsubscribe()
        thread.join(timeout=STOP_LISTENER_WAIT)
        with contextlib.suppress(RedisError):
            self.pubsub.close()

    def teardown(self) -> None:
        # The way out (stop the scheduler, record the worker's end) must not wait on a Redis that does
        # not answer: it runs on a connection with a short read timeout instead of the dequeue's, and
        # no retries.
        kwargs = self.connection.connection_pool.connection_kwargs
        self.connection = Redis(
            connection_pool=ConnectionPool(**{**kwargs, "socket_timeout": STOP_TIMEOUT, "retry": Retry(NoBackoff(), 0)})
        )
        try:
            super().teardown()  # type: ignore[no-untyped-call]
        except RedisError:
            # RQ's teardown stops at the failed record and leaves its command listener running.
            if self.pubsub_thread is not None:
                _stop_listener(self.pubsub_thread, STOP_LISTENER_WAIT)
            raise
        finally:
            self.connection.connection_pool.disconnect()


# How long a stop waits for RQ's command listener to end; one reading from a Redis that does not answer
# would never end, and is left behind (a daemon thread).
STOP_LISTENER_WAIT = 1.0


def _stop_listener(thread: Any, timeout: float) -> None:
    """Ask redis-py's PubSub thread to end, and wait for it `timeout` seconds at most. From redis-py 8.2
    its `stop()` itself waits, for as long as the thread takes unless given a timeout; before, `stop()`
    only asked."""
    if "timeout" in inspect.signature(thread.stop).parameters:
        thread.stop(timeout=timeout)
    else:
        thread.stop()
        thread.join(timeout=timeout)


class _StopDeadline(threading.Thread):
    """Once a stop is asked for, the worker has `WORKER_STOP_GRACE` seconds to end unless a job is
    running (RQ lets it finish). Past that, the process ends here with one line, its scheduler
    killed first. What can hold a stop so long is a Redis that takes connections but does not answer
    while the worker starts (RQ's reads wait minutes for its blocking dequeue)."""

    def __init__(self, stopping: threading.Event) -> None:
        super().__init__(name="gateway-stop-deadline", daemon=True)
        self.stopping = stopping
        self.finished = threading.Event()
        self.worker: GatewayWorker | None = None

    def run(self) -> None:
        self.stopping.wait()
        while not self.finished.wait(WORKER_STOP_GRACE):
            worker = self.worker
            if worker is not None and worker.get_state() == WorkerStatus.BUSY:
                continue
            log.warning("the worker did not stop within %.0fs of the stop signal (redis not answering); "
                        "it exits now", WORKER_STOP_GRACE)
            process = worker.scheduler._process if worker is not None and worker.scheduler else None
            if process is not None and process.pid is not None:
                process.kill()
            os._exit(1)


def run_worker(
    app: Flask, *, lanes: Sequence[Lane] = LANES, burst: bool = False, sweep: bool = True
) -> None:
    """Work jobs of `lanes` until SIGTERM or SIGINT. Redis down: wait for it and go on (the sweep loses
    nothing). A stop ends the worker whether or not Redis answers, with one line (not in burst mode)."""
    name = f"gateway-{socket.gethostname()}-{os.getpid()}"
    logging.getLogger("rq.worker").addFilter(_REDIS_OUTAGE_IN_ONE_LINE)
    logs.let_through(StopRequested)
    stopping = threading.Event()
    # RQ's handlers are in place only while its loop runs: ours note a stop at every other moment.
    previous = _listen_for_stop(stopping)
    deadline = _StopDeadline(stopping)
    if not burst:
        deadline.start()
    with app.app_context():
        current = runtime.current()
        # Claims this process takes carry its name; killed, its key expires and they are handed out again.
        alive = None if burst else AliveThread(
            current.redis, f"{socket.gethostname()[:40]}:{os.getpid()}:{time.time_ns() // 1_000_000}"
        )
        if alive is not None:
            alive.start()
        sweeper = None
        if sweep:
            sweeper = SweepThread(
                lambda: sweep_once(app), current.redis, current.settings.sweep_interval, name
            )
            sweeper.start()
        outage: RedisError | None = None
        try:
            delay = 0.5
            while not stopping.is_set():
                # A connection per attempt: the worker blocks on Redis for new jobs, so its reads must
                # not time out before the blocking dequeue does (RQ sets that); its teardown shortens them.
                connection = Redis(
                    connection_pool=ConnectionPool(
                        **{**current.redis.connection_pool.connection_kwargs, "socket_timeout": None}
                    )
                )
                try:
                    worker = GatewayWorker(
                        [make_queue(connection, lane) for lane in lanes],
                        connection=connection,
                        name=f"{name}-{time.time_ns()}",
                        stopping=stopping,
                    )
                    deadline.worker = worker
                    worker.work(burst=burst, with_scheduler=not burst, logging_level="WARNING")
                    if burst:
                        return
                    outage = None
                    if not stopping.is_set():
                        log.warning("the RQ work loop ended unasked; starting it again in %.1fs", delay)
                except RedisError as error:
                    if burst:
                        raise
                    outage = error
                    if not stopping.is_set():
                        log.warning("redis unavailable (%s); retrying in %.1fs", error, delay)
                finally:
                    # Not the connection of RQ's command listener, which may still be on its way out.
                    connection.connection_pool.disconnect(inuse_connections=False)
                if stopping.is_set():
                    break
                _listen_for_stop(stopping)  # RQ's handlers belong to the worker that ended
                stopping.wait(delay)
                delay = min(delay * 2, 10.0)
            if outage is None:
                log.info("worker %s stopped", name)
            else:
                log.warning("worker %s stopped, redis unavailable (%s)", name, outage)
        finally:
            deadline.finished.set()
            if sweeper is not None:
                sweeper.stop()
            if alive is not None:
                alive.stop()
            _restore(previous)


def run_pool(concurrency: int, env: dict[str, str] | None = None) -> int:
    """`gateway worker --concurrency N`: N worker processes (`lanes_for`), each restarted if it dies,
    until SIGTERM or SIGINT, which are passed on; returns once every process has stopped. A process
    that has not stopped `STOP_GRACE` seconds later (a job that will not end, a Redis that holds it)
    is killed, with a line that says so."""
    stopping = threading.Event()
    children: dict[int, subprocess.Popen[bytes]] = {}

    def start(index: int) -> subprocess.Popen[bytes]:
        lanes = ",".join(lane.value for lane in lanes_for(index, concurrency))
        command = [sys.executable, "-m", "gateway.cli", "worker", "--lanes", lanes]
        if index != concurrency - 1:
            command.append("--no-sweep")
        return subprocess.Popen(  # noqa: S603 - our own interpreter and module
            command, env=env, preexec_fn=_lower_priority if niced(index, concurrency) else None
        )

    def stop(signum: int, _frame: object) -> None:
        stopping.set()
        for child in children.values():
            if child.poll() is None:
                child.send_signal(signum)

    previous = {sig: signal.signal(sig, stop) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        for index in range(concurrency):
            if stopping.is_set():
                break
            children[index] = start(index)
        while not stopping.wait(0.5):
            for index, child in list(children.items()):
                if child.poll() is not None and not stopping.is_set():
                    log.warning("worker process %s (lanes %s) exited with %s; restarting",
                                child.pid, ",".join(lanes_for(index, concurrency)), child.returncode)
                    time.sleep(RESTART_PAUSE)
                    children[index] = start(index)
    finally:
        deadline = time.monotonic() + STOP_GRACE
        for index, child in children.items():
            try:
                child.wait(timeout=max(deadline - time.monotonic(), 0))
            except subprocess.TimeoutExpired:
                log.warning("worker process %s (lanes %s) did not stop within %.0fs; killed", child.pid,
                            ",".join(lanes_for(index, concurrency)), STOP_GRACE)
                child.kill()
                child.wait()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    log.info("worker processes stopped")
    return 0


_Handlers = dict[int, Callable[[int, FrameType | None], Any] | int | None]


def _listen_for_stop(stopping: threading.Event) -> _Handlers:
    """SIGTERM and SIGINT set `stopping` (RQ's handlers take over while its loop runs). Returns the
    handlers they replace."""
    if threading.current_thread() is not threading.main_thread():
        return {}

    def stop(_signum: int, _frame: FrameType | None) -> None:
        stopping.set()

    return {number: signal.signal(number, stop) for number in (signal.SIGTERM, signal.SIGINT)}


def _restore(handlers: _Handlers) -> None:
    for number, handler in handlers.items():
        signal.signal(number, handler)
