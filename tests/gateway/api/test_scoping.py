"""Keys scoped to stores: another store's rows are not found, never listed, never counted."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import select

from gateway.models import Call, Lead, Store, Task
from gateway.simulator import play_call
from tests.support.api import ApiClient, make_key
from tests.support.config import CUSTOMER, SIMULTANEOUS, SOUTH


@pytest.fixture
def stores(client, db, clock, configured, poster):
    list(play_call(poster, to=SIMULTANEOUS, caller=CUSTOMER, outcome="no-answer"))
    list(play_call(poster, to=SOUTH, caller="+13125550177", outcome="hangup"))
    clock.advance(timedelta(seconds=5))
    with db.session() as session:
        south = session.scalar(select(Store.id).where(Store.key == "south-ford"))
        ids = {
            "lead": session.scalar(select(Lead.id).where(Lead.store_id == south)),
            "task": session.scalar(select(Task.id).join(Lead).where(Lead.store_id == south)),
            "call": session.scalar(select(Call.id).where(Call.store_id == south)),
        }
    return ApiClient(client, make_key(db, clock.now(), ["north-honda"])), ids


def test_a_north_key_gets_404_for_south_rows(stores):
    north, south = stores
    for path in (
        f"/api/v1/leads/{south['lead']}",
        f"/api/v1/calls/{south['call']}/recording",
    ):
        response = north.get(path)
        assert response.status_code == 404, path
        assert response.get_json()["error"]["code"] in {"not_found", "no_recording"}
    assert north.patch(f"/api/v1/leads/{south['lead']}", json={"status": "contacted"}).status_code == 404
    assert north.post(f"/api/v1/tasks/{south['task']}/complete").status_code == 404
    assert north.post(f"/api/v1/leads/{south['lead']}/call", json={}).status_code == 404


def test_south_rows_are_never_listed_or_counted(stores):
    north, south = stores
    leads = north.get("/api/v1/leads").get_json()["items"]
    assert leads
    assert {lead["store"] for lead in leads} == {"north-honda"}
    assert south["lead"] not in {lead["id"] for lead in leads}
    calls = north.get("/api/v1/calls").get_json()["items"]
    assert calls
    assert south["call"] not in {call["id"] for call in calls}
    tasks = north.get("/api/v1/tasks").get_json()["items"]
    assert south["task"] not in {task["id"] for task in tasks}
    assert north.get("/api/v1/leads?store=south-ford").get_json()["items"] == []
    metrics = north.get("/api/v1/metrics").get_json()
    assert metrics["leads"]["total"] == 1
    assert north.get("/api/v1/metrics?store=south-ford").status_code == 404
    assert north.get("/api/v1/crm/deliveries?status=pending").status_code == 200
