"""CRM dead letters through the API: listed by status, scoped to the key's stores, replayed once."""

from __future__ import annotations

import pytest
from sqlalchemy import select

from gateway.crm.models import CrmDelivery
from gateway.models import Store
from gateway.simulator import play_call
from tests.support.api import ApiClient, make_key
from tests.support.config import SIMULTANEOUS, SOUTH
from tests.support.crm_server import FakeCrm


@pytest.fixture
def crm_server():
    with FakeCrm() as server:
        yield server


@pytest.fixture
def dead(db, configured, poster, work, crm_server):
    with db.session() as session:
        for store in session.scalars(select(Store)):
            store.crm = [{"type": "adf-http", "url": crm_server.url("/adf?token=s3cret")}]
    crm_server.mode = "reject"
    list(play_call(poster, to=SIMULTANEOUS, caller="+12025550181", outcome="no-answer"))
    list(play_call(poster, to=SOUTH, caller="+13125550182", outcome="no-answer"))
    work()
    with db.session() as session:
        return {row.store_id: row.id for row in session.scalars(select(CrmDelivery))}


def test_dead_letters_are_listed_and_replayed(client, db, clock, dead, crm_server, work):
    api = ApiClient(client, make_key(db, clock.now()))
    listed = api.get("/api/v1/crm/deliveries?status=dead").get_json()
    assert len(listed["items"]) == 2
    item = listed["items"][0]
    assert item["status"] == "dead"
    assert item["destination"]["type"] == "adf-http"
    assert "token" not in item["destination"]["target"]  # no secrets from the URL
    assert "HTTP 400" in item["last_error"]
    assert api.get("/api/v1/crm/deliveries").get_json()["items"] == listed["items"]  # dead by default

    crm_server.mode = "ok"
    replayed = api.post(f"/api/v1/crm/deliveries/{item['id']}/replay")
    assert replayed.status_code == 200
    assert replayed.get_json()["status"] == "pending"
    again = api.post(f"/api/v1/crm/deliveries/{item['id']}/replay")
    assert again.status_code == 409
    assert again.get_json()["error"]["code"] == "not_dead"
    work()
    assert [d["id"] for d in api.get("/api/v1/crm/deliveries?status=delivered").get_json()["items"]] == [item["id"]]
    assert crm_server.accepted_keys() == [item["idempotency_key"]]


def test_a_store_key_sees_and_replays_only_its_store(client, db, clock, dead):
    north = ApiClient(client, make_key(db, clock.now(), ["north-honda"]))
    with db.session() as session:
        north_id = session.scalar(select(Store.id).where(Store.key == "north-honda"))
    items = north.get("/api/v1/crm/deliveries").get_json()["items"]
    assert [i["id"] for i in items] == [dead[north_id]]
    south_delivery = next(v for k, v in dead.items() if k != north_id)
    assert north.post(f"/api/v1/crm/deliveries/{south_delivery}/replay").status_code == 404
    assert north.post("/api/v1/crm/deliveries/999999/replay").status_code == 404


def test_paging_and_bad_status(client, db, clock, dead):
    api = ApiClient(client, make_key(db, clock.now()))
    first = api.get("/api/v1/crm/deliveries?limit=1").get_json()
    second = api.get(f"/api/v1/crm/deliveries?limit=1&cursor={first['next_cursor']}").get_json()
    assert first["items"][0]["id"] < second["items"][0]["id"]
    assert second["next_cursor"] is None
    bad = api.get("/api/v1/crm/deliveries?status=lost")
    assert bad.status_code == 400
    assert bad.get_json()["error"]["code"] == "invalid_status"
