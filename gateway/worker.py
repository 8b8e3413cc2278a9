"""`gateway worker`: RQ workers on Redis, with the sweep that makes the database the source of truth."""

from __future__ import annotations

import logging
import os
import signal
import socket
import threading
import time

from flask import Flask
from redis import ConnectionPool, Redis
from redis.exceptions import RedisError
from rq import SimpleWorker

from gateway import runtime
from gateway.jobs import SweepThread, make_queue, run_sweep

log = logging.getLogger(__name__)


def sweep_once(app: Flask) -> None:
    with app.app_context():
        current = runtime.current()
        run_sweep(current.database.sessions, current.clock.now())


def run_worker(app: Flask, *, burst: bool = False, sweep: bool = True) -> None:
    """Work jobs until stopped. Redis down: wait for it and go on (the sweep keeps nothing from losing)."""
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
                    worker = SimpleWorker(
                        [make_queue(connection)], connection=connection, name=f"{name}-{time.time_ns()}"
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


def _listen_for_stop(stopping: threading.Event) -> None:
    """While Redis is away, SIGTERM and SIGINT end the worker. RQ's own handlers would ask the gone
    Redis for the worker's state and raise, which once kept a stopped worker retrying forever."""
    if threading.current_thread() is not threading.main_thread():
        return

    def stop(_signum: int, _frame: object) -> None:
        stopping.set()

    for number in (signal.SIGTERM, signal.SIGINT):
        signal.signal(number, stop)
