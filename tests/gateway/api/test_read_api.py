"""The read API over missed calls: keys are hashed and scoped to stores; leads carry calls and tasks."""

from __future__ import annotations

import threading
from datetime import timedelta

import pytest
from sqlalchemy import select, update
from sqlalchemy.exc import OperationalError

from gateway.api.keys import create_key
from gateway.database import begin_reading
from gateway.models import Lead
from gateway.simulator import play_call
from tests.support.config import CUSTOMER, SIMULTANEOUS, SOUTH


@pytest.fixture
def keys(db, configured, clock) -> dict[str, str]:
    with db.session() as session:
        _, everything = create_key(session, "group", None, clock.now())
        _, north = create_key(session, "north", ["north-honda"], clock.now())
        _, south = create_key(session, "south", ["south-ford"], clock.now())
    return {"all": everything, "north": north, "south": south}


def get(client, key, path):
    return client.get(f"/api/v1{path}", headers={"Authorization": f"Bearer {key}"})


@pytest.fixture
def two_stores(keys, poster, clock):
    list(play_call(poster, to=SIMULTANEOUS, caller=CUSTOMER, outcome="no-answer"))
    list(play_call(poster, to=SOUTH, caller="+13125550177", outcome="voicemail"))
    clock.advance(timedelta(seconds=5))  # past the call log's settling horizon


def test_requests_without_a_valid_key_get_401(client, keys):
    for headers in ({}, {"Authorization": "Bearer nope"}, {"Authorization": "Basic abc"}):
        response = client.get("/api/v1/leads", headers=headers)
        assert response.status_code == 401
        assert response.get_json()["error"]["code"] == "unauthorized"


@pytest.mark.usefixtures("two_stores")
def test_a_lead_comes_with_its_calls_tasks_and_timeline(client, keys):
    leads = get(client, keys["all"], f"/leads?phone={CUSTOMER}").get_json()["items"]
    assert len(leads) == 1
    lead = get(client, keys["all"], f"/leads/{leads[0]['id']}").get_json()
    assert lead["phone"] == CUSTOMER
    assert lead["store"] == "north-honda"
    assert lead["source"] == "Cars.com"
    assert lead["status"] == "new"
    assert lead["owner"] in {"alice", "ben", "cara"}
    assert lead["created_at"].endswith("+00:00")
    assert [c["outcome"] for c in lead["calls"]] == ["missed"]
    assert [t["kind"] for t in lead["tasks"]] == ["callback"]
    assert {item["type"] for item in lead["timeline"]} >= {"call", "task"}


@pytest.mark.usefixtures("two_stores")
def test_a_key_for_one_store_never_sees_another(client, keys):
    north = get(client, keys["north"], "/leads").get_json()["items"]
    south = get(client, keys["south"], "/leads").get_json()["items"]
    assert [lead["store"] for lead in north] == ["north-honda"]
    assert [lead["store"] for lead in south] == ["south-ford"]
    assert get(client, keys["south"], f"/leads/{north[0]['id']}").status_code == 404
    assert get(client, keys["north"], f"/leads/{north[0]['id']}").status_code == 200
    assert {t["lead_id"] for t in get(client, keys["south"], "/tasks").get_json()["items"]} == {south[0]["id"]}
    calls = get(client, keys["south"], "/calls").get_json()["items"]
    assert [c["to"] for c in calls] == [SOUTH]
    assert len(get(client, keys["all"], "/calls").get_json()["items"]) == 2


@pytest.mark.usefixtures("two_stores")
def test_filters_and_their_errors(client, keys):
    assert len(get(client, keys["all"], "/leads?store=south-ford").get_json()["items"]) == 1
    assert get(client, keys["all"], "/leads?status=closed_won").get_json()["items"] == []
    bad = get(client, keys["all"], "/leads?status=bogus")
    assert bad.status_code == 400
    assert bad.get_json()["error"]["code"] == "invalid_status"
    assert get(client, keys["all"], "/leads?phone=not-a-phone").status_code == 400
    assert get(client, keys["all"], "/leads?limit=0").status_code == 400
    assert get(client, keys["all"], "/leads?cursor=%%%").status_code == 400
    assert get(client, keys["all"], "/leads/999999").status_code == 404
    assert get(client, keys["all"], "/tasks?status=open&agent=sam").status_code == 200


@pytest.mark.usefixtures("configured")
def test_call_log_cursor_pages_without_skips_or_repeats(client, keys, poster, clock):
    for n in range(7):
        list(play_call(poster, to=SIMULTANEOUS, caller=f"+1202555016{n}", outcome="hangup"))
        clock.advance(timedelta(seconds=1))
    clock.advance(timedelta(seconds=5))
    seen: list[str] = []
    cursor = ""
    for _ in range(10):
        body = get(client, keys["all"], f"/calls?limit=3&since={cursor}").get_json()
        seen += [c["sid"] for c in body["items"]]
        cursor = body["next_cursor"]
        if not body["items"]:
            break
    assert len(seen) == 7
    assert len(set(seen)) == 7
    # The cursor keeps working for what ends later.
    list(play_call(poster, to=SIMULTANEOUS, caller="+12025550170", outcome="hangup"))
    clock.advance(timedelta(seconds=5))
    later = get(client, keys["all"], f"/calls?since={cursor}").get_json()["items"]
    assert len(later) == 1


def test_openapi_is_served_without_a_key(client):
    document = client.get("/api/v1/openapi.json").get_json()
    assert document["openapi"].startswith("3.")
    assert "/leads" in document["paths"]


def test_errors_are_json_never_traces(client):
    response = client.get("/api/v1/no/such/page")
    assert response.status_code == 404
    assert response.get_json()["error"]["code"] == "not_found"
    page = client.get("/no/such/page")  # a person's browser gets a page (tests/gateway/dashboard)
    assert page.status_code == 404
    assert page.mimetype == "text/html"
    response = client.delete("/webhooks/voice/incoming")
    assert response.status_code == 405


@pytest.mark.usefixtures("two_stores")
def test_an_api_read_waits_for_no_writer(client, keys, db):
    """A GET is answered while another process's transaction holds the write lock (on SQLite the one
    writer at a time; on PostgreSQL a row lock), from what was last committed."""
    holding, done = threading.Event(), threading.Event()
    released = []

    def writer() -> None:
        with db.session() as session:
            session.execute(update(Lead).values(status="contacted"))  # takes the write lock
            holding.set()
            done.wait(30)
            released.append(True)
            session.rollback()

    thread = threading.Thread(target=writer)
    thread.start()
    try:
        assert holding.wait(30)
        response = get(client, keys["all"], f"/leads?phone={CUSTOMER}")
        answered_while_held = not released
    finally:
        done.set()
        thread.join()
    assert response.status_code == 200
    assert [lead["status"] for lead in response.get_json()["items"]] == ["new"]  # the last commit's
    assert answered_while_held


def test_a_reader_transaction_refuses_writes_and_its_connection_writes_again_after(db, configured):
    with db.session() as session:
        begin_reading(session)
        assert session.scalars(select(Lead)).all() == []
        if db.dialect == "sqlite":
            with pytest.raises(OperationalError, match="readonly"):
                session.execute(update(Lead).values(status="contacted"))
        session.rollback()
        session.execute(update(Lead).values(status="contacted"))  # a writer again
