"""`gateway worker` as a process: a stop signal ends it while the Redis it worked for is gone (stopped)
or does not answer (frozen), with one line each and no traceback, alone or as a `--concurrency` pool;
each process keeps its alive key in Redis while it runs.

Nothing here can hang the suite: the worker writes to a file that is read, never a pipe; every wait has
a deadline; the worker's process group and the private Redis are ended in `finally`.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from redis import Redis
from rq.exceptions import StopRequested

from gateway import worker
from gateway.embedded_redis import EmbeddedRedis, free_port
from gateway.jobs import Lane, make_queue
from gateway.settings import Settings, load_settings
from gateway.worker import STOP_GRACE, GatewayWorker
from tests.support.processes import ROOT, wait_for, worker_env

# Generous guards for a busy machine; a worker that needs them has failed its test already.
START_DEADLINE = 120.0
STOP_DEADLINE = 120.0


@pytest.fixture
def private_redis(tmp_path: Path) -> Iterator[EmbeddedRedis]:
    """A Redis server of this test's own, which the test stops or freezes."""
    server = EmbeddedRedis(free_port(), tmp_path / "redis")
    server.start()
    try:
        yield server
    finally:
        if server.process is not None and server.process.poll() is None:
            server.process.send_signal(signal.SIGCONT)
        server.stop()


def _ready(client: Redis, processes: int) -> bool:
    """Every worker process registered and waiting for jobs, and a job scheduler running."""
    names = client.smembers("rq:workers")
    return (
        len(names) == processes
        and all(client.hget(name, "state") == b"idle" for name in names)
        and bool(client.keys("rq:scheduler:*"))
    )


def _outages_noticed(log_path: Path) -> int:
    output = log_path.read_text()
    return output.count("could not connect to Redis") + output.count("redis unavailable")


@pytest.mark.parametrize(
    ("concurrency", "stop_signal", "outage"),
    [
        (1, signal.SIGTERM, "stopped"),
        (2, signal.SIGINT, "stopped"),
        (1, signal.SIGINT, "frozen"),
        (2, signal.SIGTERM, "frozen"),
    ],
)
def test_a_stop_signal_ends_the_worker_while_redis_is_gone_with_one_line_and_no_traceback(
    settings: Settings, private_redis: EmbeddedRedis, tmp_path: Path, concurrency: int,
    stop_signal: signal.Signals, outage: str,
) -> None:
    log_path = tmp_path / "worker.log"
    client = Redis.from_url(private_redis.url, socket_timeout=2)
    assert private_redis.process is not None
    with log_path.open("wb") as log_file:
        worker = subprocess.Popen(
            [sys.executable, "-m", "gateway.cli", "worker", "--concurrency", str(concurrency)],
            cwd=ROOT, env=worker_env(settings, private_redis.url, tmp_path / "instance"),
            stdin=subprocess.DEVNULL, stdout=log_file, stderr=log_file,
            start_new_session=True,  # its own process group, so that `finally` can end the pool's children
        )
    try:
        ready = wait_for(lambda: worker.poll() is not None or _ready(client, concurrency), START_DEADLINE)
        assert worker.poll() is None, log_path.read_text()
        assert ready, log_path.read_text()
        client.close()

        if outage == "stopped":
            private_redis.process.terminate()
            private_redis.process.wait(timeout=30)
            # Each process notices: RQ's own loop retries the connection, or ours does.
            assert wait_for(lambda: _outages_noticed(log_path) >= concurrency, START_DEADLINE), log_path.read_text()
        else:
            # It takes connections (the kernel accepts them) but answers nothing: reads wait.
            private_redis.process.send_signal(signal.SIGSTOP)

        worker.send_signal(stop_signal)
        code = worker.wait(timeout=STOP_DEADLINE)
    finally:
        if worker.poll() is None:
            os.killpg(worker.pid, signal.SIGKILL)
            worker.wait()
    output = log_path.read_text()
    assert code == 0, output
    assert output.count("stopped, redis unavailable") == concurrency, output
    # Each process stopped by itself: none ran out its grace, none was killed by the pool.
    assert "the worker did not stop" not in output
    if concurrency > 1:
        assert "worker processes stopped" in output
        assert f"did not stop within {STOP_GRACE:.0f}s; killed" not in output
    assert "Traceback" not in output, output


def test_the_processes_that_take_every_lane_give_way_on_a_busy_machine():
    assert [worker.niced(index, 3) for index in range(3)] == [False, False, True]
    assert [worker.niced(index, 2) for index in range(2)] == [False, True]
    assert worker.niced(0, 1) is False  # one process does everything at normal priority


@pytest.mark.parametrize("database", ["", "postgresql://gateway@127.0.0.1/gateway"])
def test_by_default_every_process_takes_urgent_work_first_and_every_lane_is_served(database: str) -> None:
    env = {"DATABASE_URL": database} if database else {}
    count = load_settings(env).workers
    layout = [worker.lanes_for(index, count) for index in range(count)]
    assert all(lanes[0] == Lane.URGENT for lanes in layout)
    # Two processes at normal priority take urgent work, one of them nothing else; CRM work has a process.
    normal = [lanes for index, lanes in enumerate(layout) if not worker.niced(index, count)]
    assert len(normal) >= 2
    assert (Lane.URGENT,) in normal
    assert any(Lane.CRM in lanes for lanes in layout)
    assert any(Lane.DEFAULT in lanes for lanes in normal)
    assert load_settings({**env, "GATEWAY_WORKERS": "2"}).workers == 2


def test_sqlite_gets_a_fourth_worker_process_for_the_time_its_jobs_wait_on_the_write_lock() -> None:
    sqlite = load_settings({}).workers
    postgresql = load_settings({"DATABASE_URL": "postgresql://gateway@127.0.0.1/gateway"}).workers
    assert sqlite == postgresql + 1


class _StopInTheLogLine(logging.Handler):
    """Plays the stop signal landing while RQ writes its "could not connect" line: RQ's handler runs
    inside this write, and the StopRequested it raises is swallowed by the logging module."""

    def __init__(self, worker: GatewayWorker) -> None:
        super().__init__()
        self.worker = worker
        self.lines = 0

    def emit(self, record: logging.LogRecord) -> None:
        self.lines += 1
        try:  # as a stream handler's write does
            if self.lines == 1:
                self.worker.request_stop(signal.SIGTERM, None)
        except Exception:
            self.handleError(record)

    def handleError(self, record: logging.LogRecord) -> None:
        pass  # what logging does with it, without the traceback in the test's output


class _CountedWorker(GatewayWorker):
    """Fails the test instead of retrying for ever: a stop noted must end the loop within a few turns."""

    turns = 0

    def set_state(self, state: str, pipeline: Any = None) -> None:
        self._state = state  # the loop's own step before it turns, which Redis gone would fail first

    def heartbeat(self, timeout: int | None = None, pipeline: Any = None) -> None:
        self.turns += 1
        assert self.turns <= 3, "the dequeue loop went on retrying after the stop"
        super().heartbeat(timeout, pipeline)


def test_a_stop_whose_signal_lands_in_a_log_line_still_ends_the_retrying_dequeue(
    private_redis: EmbeddedRedis,
) -> None:
    connection = Redis.from_url(private_redis.url)
    rq_worker = _CountedWorker([make_queue(connection, Lane.URGENT)], connection=connection, name="t-stop")
    assert private_redis.process is not None
    private_redis.process.terminate()  # gone: every turn of the dequeue loop fails to connect
    private_redis.process.wait(timeout=30)
    rq_worker.max_connection_wait_time = 0.05
    handler = _StopInTheLogLine(rq_worker)
    rq_log = logging.getLogger("rq.worker")
    handlers = {number: signal.getsignal(number) for number in (signal.SIGTERM, signal.SIGINT)}
    rq_log.addHandler(handler)
    try:
        with pytest.raises(StopRequested):
            rq_worker.dequeue_job_and_maintain_ttl(timeout=1)
    finally:
        rq_log.removeHandler(handler)
        for number, previous in handlers.items():
            signal.signal(number, previous)
        connection.close()
    assert handler.lines >= 1
    assert rq_worker.stopping.is_set()


def test_each_worker_process_keeps_an_alive_key_while_it_runs_and_takes_it_away_when_it_stops(
    settings: Settings, private_redis: EmbeddedRedis, tmp_path: Path,
) -> None:
    log_path = tmp_path / "worker.log"
    client = Redis.from_url(private_redis.url, socket_timeout=5)
    with log_path.open("wb") as log_file:
        pool = subprocess.Popen(
            [sys.executable, "-m", "gateway.cli", "worker", "--concurrency", "2"],
            cwd=ROOT, env=worker_env(settings, private_redis.url, tmp_path / "instance"),
            stdin=subprocess.DEVNULL, stdout=log_file, stderr=log_file, start_new_session=True,
        )
    try:
        assert wait_for(lambda: pool.poll() is not None or _ready(client, 2), START_DEADLINE), log_path.read_text()
        keys = client.keys("gateway:alive:*")
        assert len(keys) == 2, keys  # one a process, each named host:pid:start
        assert all(client.ttl(key) > 0 for key in keys)  # they expire unless kept: a killed process's go
        pool.send_signal(signal.SIGTERM)
        assert pool.wait(timeout=STOP_DEADLINE) == 0, log_path.read_text()
    finally:
        if pool.poll() is None:
            os.killpg(pool.pid, signal.SIGKILL)
            pool.wait()
    assert client.keys("gateway:alive:*") == []
    client.close()


class _Listener(threading.Thread):
    """Stands in for redis-py's PubSub thread: reads for ever (a Redis that does not answer) until told."""

    def __init__(self) -> None:
        super().__init__(daemon=True)
        self.told = threading.Event()
        self.release = threading.Event()

    def run(self) -> None:
        self.release.wait(60)


class _ListenerBefore82(_Listener):
    def stop(self) -> None:  # redis-py before 8.2: only asks
        self.told.set()


class _ListenerFrom82(_Listener):
    def stop(self, timeout: float | None = None) -> None:  # redis-py 8.2: asks, then waits for the thread
        self.told.set()
        self.join(timeout)


@pytest.mark.parametrize("listener_class", [_ListenerBefore82, _ListenerFrom82])
def test_a_stop_asks_the_command_listener_to_end_and_waits_for_it_a_bounded_time(listener_class: type) -> None:
    listener = listener_class()
    listener.start()
    try:
        worker._stop_listener(listener, 0.2)  # returns although the thread still reads
        assert listener.told.is_set()
        assert listener.is_alive()
    finally:
        listener.release.set()
        listener.join(5)


def test_the_command_listener_ends_promptly_when_it_read_the_unsubscription_before_it_was_stopped(
    redis_server: EmbeddedRedis,
) -> None:
    """RQ unsubscribes, then stops its listener; a listener that has already read the unsubscription then
    waits a minute for the next subscription (RQ's sleep_time), and redis-py 8.2's stop() waits with it.
    That held a worker's stop past its grace (and its clean-up, the alive key, was skipped)."""
    connection = Redis.from_url(redis_server.url)
    subject = GatewayWorker([make_queue(connection, Lane.URGENT)], connection=connection, name="listener-order")
    subject.subscribe()
    pubsub, listener = subject.pubsub, subject.pubsub_thread
    assert pubsub is not None
    assert listener is not None
    assert wait_for(lambda: pubsub.subscribed, 10)
    pubsub.unsubscribe()  # the order RQ's own unsubscribe() starts with; the listener reads the answer
    assert wait_for(lambda: not pubsub.subscribed, 10)
    time.sleep(0.2)  # and goes back to wait for a subscription
    ended = threading.Event()
    stopper = threading.Thread(target=lambda: (subject.unsubscribe(), ended.set()), daemon=True)
    stopper.start()
    stopper.join(30)  # RQ's order would hold it for the listener's 60 s
    assert ended.is_set()
