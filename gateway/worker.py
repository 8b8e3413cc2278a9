"""`gateway worker`: RQ workers on Redis, one per lane set, with the sweep that makes the database the
source of truth.

`gateway worker --concurrency N` runs N worker processes and restarts any that dies. The first takes only
the `urgent` lane, the second `urgent` then `default`, the others every lane, most urgent first (see
`lanes_for`): so however long the CRM lane's backlog or however slow a CRM, a missed caller's first text
and the owner's alert always have a process waiting for them. RQ's own WorkerPool gives every worker the
same queues, which cannot promise that; each process here is an ordinary RQ SimpleWorker (no fork per
job: the app, its pools and its connections stay warm between jobs).
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from flask import Flask
from redis import ConnectionPool, Redis
from redis.exceptions import RedisError
from rq import SimpleWorker
from rq.job import Job
from rq.queue import Queue

from gateway import runtime
from gateway.jobs import LANES, Lane, SweepThread, make_queue, run_sweep
from gateway.metrics import JOB_WAIT_SECONDS

log = logging.getLogger(__name__)

# The urgent lane may fall this far behind before a warning is logged (at most one a minute).
URGENT_LAG_WARNING = 1.0
_WARN_EVERY = 60.0
# A worker process that keeps dying is restarted at most this often.
RESTART_PAUSE = 1.0
DEFAULT_CONCURRENCY = 3


def lanes_for(index: int, concurrency: int) -> tuple[Lane, ...]:
    """The lanes of the `index`-th of `concurrency` worker processes, most urgent first."""
    if concurrency <= 1:
        return LANES
    if index == 0:
        return (Lane.URGENT,)
    if index == 1 and concurrency >= 3:
        return (Lane.URGENT, Lane.DEFAULT)
    return LANES


def sweep_once(app: Flask) -> None:
    with app.app_context():
        current = runtime.current()
        run_sweep(current.database.sessions, current.clock.now())


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


class GatewayWorker(SimpleWorker):
    """An RQ SimpleWorker that notes how long each job waited in its lane."""

    lag_watch = _LagWatch()

    def execute_job(self, job: Job, queue: Queue) -> Any:
        self.lag_watch.started(job, queue)
        return super().execute_job(job, queue)


def run_worker(
    app: Flask, *, lanes: Sequence[Lane] = LANES, burst: bool = False, sweep: bool = True
) -> None:
    """Work jobs of `lanes` until stopped. Redis down: wait for it and go on (the sweep loses nothing)."""
    name = f"gateway-{socket.gethostname()}-{os.getpid()}"
    with app.app_context():
        current = runtime.current()
        # The worker blocks on Redis for new jobs: its connection must not time out a blocking read.
        connection = Redis(
            connection_pool=ConnectionPool(
                **{**current.redis.connection_pool.connection_kwargs, "socket_timeout": None}
            )
        )
        sweeper = None
        if sweep:
            sweeper = SweepThread(
                lambda: sweep_once(app), current.redis, current.settings.sweep_interval, name
            )
            sweeper.start()
        stopping = threading.Event()
        try:
            delay = 0.5
            while not stopping.is_set():
                worker: SimpleWorker | None = None
                try:
                    worker = GatewayWorker(
                        [make_queue(connection, lane) for lane in lanes],
                        connection=connection,
                        name=f"{name}-{time.time_ns()}",
                    )
                    worker.work(burst=burst, with_scheduler=not burst, logging_level="WARNING")
                    return
                except RedisError as error:
                    if burst:
                        raise
                    if getattr(worker, "_shutdown_requested_date", None) is not None:
                        log.warning("redis unavailable while stopping (%s); the worker exits", error)
                        return
                    _listen_for_stop(stopping)
                    log.warning("redis unavailable (%s); retrying in %.1fs", error, delay)
                    stopping.wait(delay)
                    delay = min(delay * 2, 10.0)
        finally:
            if sweeper is not None:
                sweeper.stop()


def run_pool(concurrency: int, env: dict[str, str] | None = None) -> int:
    """`gateway worker --concurrency N`: N worker processes (`lanes_for`), each restarted if it dies,
    until SIGTERM or SIGINT, which are passed on; returns once every process has stopped."""
    stopping = threading.Event()
    children: dict[int, subprocess.Popen[bytes]] = {}

    def start(index: int) -> subprocess.Popen[bytes]:
        lanes = ",".join(lane.value for lane in lanes_for(index, concurrency))
        command = [sys.executable, "-m", "gateway.cli", "worker", "--lanes", lanes]
        if index != 0:
            command.append("--no-sweep")
        return subprocess.Popen(command, env=env)  # noqa: S603 - our own interpreter and module

    def stop(signum: int, _frame: object) -> None:
        stopping.set()
        for child in children.values():
            if child.poll() is None:
                child.send_signal(signum)

    previous = {sig: signal.signal(sig, stop) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        for index in range(concurrency):
            children[index] = start(index)
        while not stopping.wait(0.5):
            for index, child in list(children.items()):
                if child.poll() is not None and not stopping.is_set():
                    log.warning("worker process %s (lanes %s) exited with %s; restarting",
                                child.pid, ",".join(lanes_for(index, concurrency)), child.returncode)
                    time.sleep(RESTART_PAUSE)
                    children[index] = start(index)
    finally:
        for child in children.values():
            try:
                child.wait(timeout=30)
            except subprocess.TimeoutExpired:
                child.kill()
                child.wait()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    return 0


def _listen_for_stop(stopping: threading.Event) -> None:
    """While Redis is away, SIGTERM and SIGINT end the worker. RQ's own handlers would ask the gone
    Redis for the worker's state and raise, which once kept a stopped worker retrying forever."""
    if threading.current_thread() is not threading.main_thread():
        return

    def stop(_signum: int, _frame: object) -> None:
        stopping.set()

    for number in (signal.SIGTERM, signal.SIGINT):
        signal.signal(number, stop)
