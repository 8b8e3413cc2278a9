"""`gateway worker` as a process: a stop signal ends it, even while the Redis it worked for is gone."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from redis import Redis

from gateway.embedded_redis import EmbeddedRedis, free_port

ROOT = Path(__file__).resolve().parents[2]


def _read_until(stream, needle: str) -> str:
    seen = ""
    while needle not in seen:
        line = stream.readline()
        assert line, seen
        seen += line
    return seen


@pytest.mark.parametrize("stop_signal", [signal.SIGTERM, signal.SIGINT])
def test_a_worker_whose_redis_is_gone_stops_on_a_signal_instead_of_retrying_forever(
    settings, tmp_path, stop_signal
):
    redis_server = EmbeddedRedis(free_port(), tmp_path / "redis")
    redis_server.start()
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("TWILIO_", "GATEWAY_"))},
        "DATABASE_URL": settings.database_url,
        "REDIS_URL": redis_server.url,
        "SECRET_KEY": settings.secret_key,
        "GATEWAY_INSTANCE_DIR": str(tmp_path / "instance"),
        "GATEWAY_SWEEP_INTERVAL": "0.2",
    }
    worker = subprocess.Popen(
        [sys.executable, "-m", "gateway.cli", "worker", "--concurrency", "1"], cwd=ROOT, env=env,
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )
    try:
        client = Redis.from_url(redis_server.url)
        # Registered with RQ: the worker is in its loop.
        for _ in range(600):
            if client.smembers("rq:workers") or worker.poll() is not None:
                break
            time.sleep(0.1)
        assert client.smembers("rq:workers")
        redis_server.stop()
        assert worker.stderr is not None
        _read_until(worker.stderr, "redis unavailable")
        worker.send_signal(stop_signal)
        code = worker.wait(timeout=60)
    finally:
        if worker.poll() is None:
            worker.kill()
            worker.wait()
        rest = worker.stderr.read() if worker.stderr is not None else ""
        if worker.stderr is not None:
            worker.stderr.close()
        redis_server.stop()
    assert code == 0, rest
    assert "Traceback" not in rest
