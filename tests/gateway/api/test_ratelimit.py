"""Requests per minute per API key: 429 with Retry-After and a JSON error; Redis down lets requests through."""

from __future__ import annotations

from datetime import timedelta

import pytest

from tests.support.api import bearer, make_key


@pytest.fixture
def settings(settings):
    return settings.with_changes(api_rate_limit=3)


def test_the_fourth_request_in_a_minute_is_refused(client, db, clock, configured):
    key = make_key(db, clock.now())
    statuses = [client.get("/api/v1/leads", headers=bearer(key)).status_code for _ in range(4)]
    assert statuses == [200, 200, 200, 429]
    refused = client.get("/api/v1/leads", headers=bearer(key))
    assert refused.status_code == 429
    error = refused.get_json()["error"]
    assert error["code"] == "rate_limited"
    retry_after = int(refused.headers["Retry-After"])
    assert 1 <= retry_after <= 60
    assert error["retry_after"] == retry_after

    clock.advance(timedelta(seconds=retry_after))
    assert client.get("/api/v1/leads", headers=bearer(key)).status_code == 200


def test_each_key_has_its_own_budget(client, db, clock, configured):
    first, second = make_key(db, clock.now(), name="a"), make_key(db, clock.now(), name="b")
    for _ in range(3):
        client.get("/api/v1/leads", headers=bearer(first))
    assert client.get("/api/v1/leads", headers=bearer(first)).status_code == 429
    assert client.get("/api/v1/leads", headers=bearer(second)).status_code == 200


def test_unauthenticated_requests_do_not_spend_a_budget(client, db, clock, configured):
    key = make_key(db, clock.now())
    for _ in range(5):
        assert client.get("/api/v1/leads", headers=bearer(key + "x")).status_code == 401
    assert client.get("/api/v1/leads", headers=bearer(key)).status_code == 200


def test_redis_down_allows_requests(app, client, db, clock, configured):
    from redis import Redis

    from gateway.embedded_redis import free_port

    key = make_key(db, clock.now())
    runtime = app.extensions["gateway"]
    runtime.redis = Redis.from_url(f"redis://127.0.0.1:{free_port()}/0", socket_connect_timeout=0.2)
    statuses = [client.get("/api/v1/leads", headers=bearer(key)).status_code for _ in range(5)]
    assert statuses == [200] * 5
