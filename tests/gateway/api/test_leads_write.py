"""PATCH /leads/{id} and POST /tasks/{id}/complete: validation, events, reopening, store scoping."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from sqlalchemy import event, select

from gateway import events
from gateway.models import Lead, LeadEvent, Task
from gateway.simulator import play_call
from tests.support.api import ApiClient, make_key
from tests.support.config import CUSTOMER, SIMULTANEOUS, SOUTH


@pytest.fixture
def api(client, db, clock, configured):
    return ApiClient(client, make_key(db, clock.now()))


@pytest.fixture
def north_api(client, db, clock, configured):
    return ApiClient(client, make_key(db, clock.now(), ["north-honda"]))


@pytest.fixture
def lead_id(poster, db):
    list(play_call(poster, to=SIMULTANEOUS, caller=CUSTOMER, outcome="no-answer"))
    with db.session() as session:
        return session.scalar(select(Lead.id))


@pytest.fixture
def updates():
    seen = []

    def receiver(session, *, lead, changes, now):
        seen.append((lead.id, dict(changes)))

    events.lead_updated.connect(receiver)
    yield seen
    events.lead_updated.disconnect(receiver)


def test_status_owner_and_appointment_change_together(api, lead_id, updates, db):
    response = api.patch(
        f"/api/v1/leads/{lead_id}",
        json={"status": "appointment_set", "owner": "cara", "appointment_at": "2026-11-27T15:30:00-05:00"},
    )
    assert response.status_code == 200, response.get_json()
    body = response.get_json()
    assert body["status"] == "appointment_set"
    assert body["owner"] == "cara"
    assert body["appointment_at"] == "2026-11-27T20:30:00+00:00"
    changed = {name for _, changes in updates for name in changes}
    assert {"status", "owner", "appointment_at"} <= changed
    appointment = next(c["appointment_at"] for _, c in updates if "appointment_at" in c)
    assert appointment == (None, "2026-11-27T20:30:00+00:00")
    with db.session() as session:
        kinds = set(session.scalars(select(LeadEvent.kind).where(LeadEvent.lead_id == lead_id)))
    assert {"status", "owner", "appointment"} <= kinds


def test_appointment_z_suffix_and_clearing(api, lead_id):
    assert api.patch(f"/api/v1/leads/{lead_id}", json={"appointment_at": "2026-11-27T20:30:00Z"}).status_code == 200
    cleared = api.patch(f"/api/v1/leads/{lead_id}", json={"appointment_at": None})
    assert cleared.status_code == 200
    assert cleared.get_json()["appointment_at"] is None


@pytest.mark.parametrize(
    ("body", "code", "status"),
    [
        ({"status": "won"}, "invalid_status", 400),
        ({"status": 3}, "invalid_status", 400),
        ({"owner": "nobody"}, "unknown_agent", 404),
        ({"owner": "sam"}, "unknown_agent", 404),  # an agent of another store
        ({"owner": ""}, "invalid_owner", 400),
        ({"owner": "  "}, "invalid_owner", 400),
        ({"appointment_at": "2026-11-27T15:30:00"}, "invalid_appointment_at", 400),  # no offset
        ({"appointment_at": "next tuesday"}, "invalid_appointment_at", 400),
        ({"appointment_at": 1700000000}, "invalid_appointment_at", 400),
        ({"priority": 5}, "unknown_field", 400),
        ({}, "empty_patch", 400),
        ([], "invalid_body", 400),
    ],
)
def test_bad_patches_are_refused_and_change_nothing(api, lead_id, db, body, code, status):
    before = api.get(f"/api/v1/leads/{lead_id}").get_json()
    response = api.patch(f"/api/v1/leads/{lead_id}", json={**body, "status": "contacted"} if code in {
        "invalid_owner", "unknown_agent", "invalid_appointment_at"} else body)
    assert response.status_code == status
    assert response.get_json()["error"]["code"] == code
    after = api.get(f"/api/v1/leads/{lead_id}").get_json()
    assert after["status"] == before["status"]
    assert after["owner"] == before["owner"]


def test_body_that_is_not_json_is_a_400(api, lead_id):
    response = api.patch(f"/api/v1/leads/{lead_id}", data="status=closed_won", content_type="text/plain")
    assert response.status_code == 400
    assert response.get_json()["error"]["code"] == "invalid_body"


def test_closing_cancels_tasks_and_reopening_works_when_no_other_lead_is_open(api, lead_id, db):
    assert api.patch(f"/api/v1/leads/{lead_id}", json={"status": "closed_lost"}).status_code == 200
    with db.session() as session:
        statuses = set(session.scalars(select(Task.status).where(Task.lead_id == lead_id)))
        assert statuses == {"cancelled"}
        assert session.get(Lead, lead_id).open_key is None
    reopened = api.patch(f"/api/v1/leads/{lead_id}", json={"status": "attempting_contact"})
    assert reopened.status_code == 200
    with db.session() as session:
        assert session.get(Lead, lead_id).open_key is not None


def test_reopening_is_refused_while_another_lead_of_that_phone_is_open(api, lead_id, poster, db):
    api.patch(f"/api/v1/leads/{lead_id}", json={"status": "closed_won"})
    list(play_call(poster, to=SIMULTANEOUS, caller=CUSTOMER, outcome="no-answer"))  # a new lead
    with db.session() as session:
        assert len(session.scalars(select(Lead.id)).all()) == 2
    response = api.patch(f"/api/v1/leads/{lead_id}", json={"status": "contacted"})
    assert response.status_code == 409
    assert response.get_json()["error"]["code"] == "open_lead_exists"
    assert api.get(f"/api/v1/leads/{lead_id}").get_json()["status"] == "closed_won"


def test_a_key_of_another_store_cannot_patch(client, db, clock, poster, configured):
    list(play_call(poster, to=SOUTH, caller=CUSTOMER, outcome="no-answer"))
    with db.session() as session:
        south_lead = session.scalar(select(Lead.id))
    north = ApiClient(client, make_key(db, clock.now(), ["north-honda"]))
    response = north.patch(f"/api/v1/leads/{south_lead}", json={"status": "closed_won"})
    assert response.status_code == 404
    assert north.get(f"/api/v1/leads/{south_lead}").status_code == 404


def test_unknown_lead_is_404(api):
    response = api.patch("/api/v1/leads/999999", json={"status": "contacted"})
    assert response.status_code == 404
    assert response.get_json()["error"]["code"] == "not_found"


def test_completing_a_task_once(api, lead_id, db, clock):
    tasks = api.get(f"/api/v1/tasks?lead={lead_id}&status=open").get_json()["items"]
    (task,) = tasks
    completed = []

    def receiver(session, *, task, now):
        completed.append(task.id)

    events.task_completed.connect(receiver)
    try:
        first = api.post(f"/api/v1/tasks/{task['id']}/complete")
        second = api.post(f"/api/v1/tasks/{task['id']}/complete")
    finally:
        events.task_completed.disconnect(receiver)
    assert first.status_code == 200
    assert first.get_json()["status"] == "done"
    assert second.status_code == 200
    assert completed == [task["id"]]
    with db.session() as session:
        row = session.get(Task, task["id"])
        assert row.completed_at == clock.now()
        assert row.completed_by.startswith("api:")
    assert api.get(f"/api/v1/tasks?lead={lead_id}&status=open").get_json()["items"] == []


def test_cancelled_task_cannot_be_completed(api, lead_id):
    (task,) = api.get(f"/api/v1/tasks?lead={lead_id}").get_json()["items"]
    api.patch(f"/api/v1/leads/{lead_id}", json={"status": "closed_lost"})
    response = api.post(f"/api/v1/tasks/{task['id']}/complete")
    assert response.status_code == 409
    assert response.get_json()["error"]["code"] == "task_cancelled"


def test_task_of_another_store_is_404(client, db, clock, poster, configured):
    list(play_call(poster, to=SOUTH, caller=CUSTOMER, outcome="no-answer"))
    with db.session() as session:
        task_id = session.scalar(select(Task.id))
    north = ApiClient(client, make_key(db, clock.now(), ["north-honda"]))
    assert north.post(f"/api/v1/tasks/{task_id}/complete").status_code == 404
    assert north.post("/api/v1/tasks/424242/complete").status_code == 404


def test_appointment_parse_keeps_the_instant():
    from gateway.api.leads_write import parse_appointment

    assert parse_appointment("2026-03-08T01:30:00-05:00") == datetime(2026, 3, 8, 6, 30, tzinfo=UTC)


def test_a_write_takes_the_write_lock_once_its_key_check_none(api, lead_id, db):
    """On SQLite the key check reads as a reader; only the change itself begins IMMEDIATE."""
    began: list[str] = []

    def count(_conn, _cursor, statement, *_args):
        if statement.startswith("BEGIN"):
            began.append(statement)

    event.listen(db.engine, "before_cursor_execute", count)
    try:
        response = api.patch(f"/api/v1/leads/{lead_id}", json={"status": "contacted"})
    finally:
        event.remove(db.engine, "before_cursor_execute", count)
    assert response.status_code == 200, response.get_json()
    assert response.get_json()["status"] == "contacted"
    if db.dialect == "sqlite":
        assert began == ["BEGIN", "BEGIN IMMEDIATE"]
