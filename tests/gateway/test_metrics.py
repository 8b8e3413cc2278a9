"""Lag you can see: /readyz, /metrics (one process and several gunicorn processes), gateway status."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
import urllib.request
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from rq import Queue

from gateway.embedded_redis import free_port
from gateway.jobs import Lane, make_queue
from gateway.messaging.outbound import send_messages_job
from gateway.simulator import HttpPoster, play_call
from tests.support.config import CUSTOMER, SIMULTANEOUS
from tests.support.unreachable import dead_redis

ROOT = Path(__file__).resolve().parents[2]


def test_readyz_is_ready_with_the_database_and_redis_up_and_no_urgent_backlog(client):
    response = client.get("/readyz")
    assert response.status_code == 200
    body = response.get_json()
    assert body["status"] == "ready"
    assert body["checks"]["database"]["ok"]
    assert body["checks"]["redis"]["ok"]
    assert body["checks"]["urgent_lane"]["depth"] == 0
    assert client.get("/healthz").status_code == 200


def test_readyz_says_redis_is_down(make_app):
    app = make_app(redis_url=dead_redis())
    response = app.test_client().get("/readyz")
    assert response.status_code == 503
    body = response.get_json()
    assert body["status"] == "not ready"
    assert body["checks"]["redis"] == {"ok": False, "error": "Redis does not answer: ConnectionError"}
    assert body["checks"]["database"]["ok"]
    assert app.test_client().get("/healthz").status_code == 200  # alive all the same


def test_readyz_goes_503_with_an_urgent_backlog_and_back_to_200_once_worked(client, redis, work):
    queue = make_queue(redis, Lane.URGENT)
    job = queue.enqueue_many([Queue.prepare_data(send_messages_job, args=([],))])[0]
    waited = datetime.now(UTC) - timedelta(seconds=12)
    redis.hset(job.key, "enqueued_at", waited.strftime("%Y-%m-%dT%H:%M:%S.%fZ"))

    response = client.get("/readyz")
    assert response.status_code == 503
    lane = response.get_json()["checks"]["urgent_lane"]
    assert lane["ok"] is False
    assert lane["depth"] == 1
    assert lane["oldest_seconds"] >= 11
    assert "waited" in lane["error"]

    work(sweep=False)
    assert client.get("/readyz").status_code == 200


def test_metrics_needs_the_token_when_one_is_set(make_app):
    app = make_app(metrics_token="s3cret-metrics")
    client = app.test_client()
    assert client.get("/metrics").status_code == 401
    assert client.get("/metrics", headers={"Authorization": "Bearer wrong"}).status_code == 401
    response = client.get("/metrics", headers={"Authorization": "Bearer s3cret-metrics"})
    assert response.status_code == 200
    assert b"gateway_lane_depth" in response.data


@pytest.mark.usefixtures("configured")
def test_metrics_show_lanes_webhooks_and_the_outbox(client, poster):
    list(play_call(poster, to=SIMULTANEOUS, caller=CUSTOMER, outcome="no-answer"))
    text = client.get("/metrics").get_data(as_text=True)
    assert 'gateway_lane_depth{lane="urgent"}' in text
    assert 'gateway_lane_oldest_seconds{lane="crm"}' in text
    assert re.search(r'gateway_webhook_seconds_count\{endpoint="/webhooks/voice/status"\} [1-9]', text)
    assert "gateway_failsafe_spool_files 0.0" in text


def _metric(text: str, name: str) -> float:
    return sum(float(value) for value in re.findall(rf"^{re.escape(name)} (\S+)$", text, re.M))


@pytest.mark.usefixtures("configured")
def test_metrics_sum_every_gunicorn_process(settings, tmp_path, redis_server):
    """Two gunicorn processes count into one folder; GET /metrics answers with their sum."""
    port = free_port()
    metrics_dir = tmp_path / "metrics"
    metrics_dir.mkdir()
    env = {
        **os.environ,
        "DATABASE_URL": settings.database_url,
        "REDIS_URL": redis_server.url,
        "PUBLIC_BASE_URL": f"http://127.0.0.1:{port}",
        "SECRET_KEY": "test-secret-key",
        "GATEWAY_INSTANCE_DIR": str(tmp_path / "instance"),
        "PROMETHEUS_MULTIPROC_DIR": str(metrics_dir),
    }
    for name in ("TWILIO_ACCOUNT_SID", "TWILIO_AUTH_TOKEN"):
        env.pop(name, None)
    server = subprocess.Popen(
        [sys.executable, "-m", "gunicorn", "--bind", f"127.0.0.1:{port}", "--workers", "2", "wsgi:app"],
        cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                with urllib.request.urlopen(base + "/healthz", timeout=2):  # noqa: S310 - loopback
                    break
            except OSError:
                assert time.monotonic() < deadline, "gunicorn did not start"
                time.sleep(0.2)
        poster = HttpPoster(base, "test-secret-key")
        calls = 12
        for n in range(calls):
            list(play_call(poster, to=SIMULTANEOUS, caller=f"+120255502{n:02d}", outcome="no-answer"))
        with urllib.request.urlopen(base + "/metrics", timeout=10) as response:  # noqa: S310 - loopback
            text = response.read().decode()
        answered = _metric(text, 'gateway_webhook_seconds_count{endpoint="/webhooks/voice/status"}')
        assert answered == calls  # every status callback, whichever process answered it
        assert len({p.name.rsplit("_", 1)[-1] for p in metrics_dir.glob("*.db")}) >= 2  # two processes wrote
        assert 'gateway_lane_depth{lane="urgent"}' in text
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=30)
