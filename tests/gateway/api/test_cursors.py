"""Cursors never skip or repeat a row while other transactions insert rows as the client pages."""

from __future__ import annotations

import threading
from datetime import timedelta

from sqlalchemy import select

from gateway.leads import Origin, contact_for_phone, open_or_join_lead
from gateway.models import Call, Lead, Store
from gateway.simulator import new_sid
from tests.support.api import ApiClient, make_key


def _store_id(db) -> int:
    with db.session() as session:
        return session.scalar(select(Store.id).where(Store.key == "north-honda"))


def _insert_call(db, store_id, clock):
    with db.session() as session:
        moment = clock.now()
        session.add(
            Call(
                sid=new_sid("CA"), store_id=store_id, from_number="+12025550100", to_number="+12025550123",
                outcome="missed", status="completed", started_at=moment, ended_at=moment, processed_at=moment,
            )
        )


def _insert_lead(db, store_id, clock, n):
    with db.session() as session:
        contact = contact_for_phone(session, f"+1202555{n:04d}")
        open_or_join_lead(session, contact, Origin(store_id, "sales", "Test", None), clock.now())


def _page_all(api, first_path, next_path, advance=None):
    seen, path = [], first_path
    for _ in range(200):
        body = api.get(path).get_json()
        seen += [item["id"] for item in body["items"]]
        if advance is not None:
            advance()
        cursor = body["next_cursor"]
        if not body["items"] or cursor is None:
            return seen, cursor
        path = next_path(cursor)
    raise AssertionError("paging did not end")


def test_call_log_cursor_while_calls_are_inserted(client, db, clock, configured):
    store_id = _store_id(db)
    for _ in range(25):
        _insert_call(db, store_id, clock)
        clock.advance(timedelta(milliseconds=300))
    api = ApiClient(client, make_key(db, clock.now()))
    stop = threading.Event()

    def writer():
        # A bounded stream, interleaved with the pages, so the reader can catch up and finish.
        for _ in range(40):
            if stop.is_set():
                return
            _insert_call(db, store_id, clock)
            stop.wait(0.005)

    thread = threading.Thread(target=writer)
    thread.start()
    try:
        seen, cursor = _page_all(
            api, "/api/v1/calls?limit=4", lambda c: f"/api/v1/calls?limit=4&since={c}",
            # Time moves slower than the API's two-second settling horizon per page, so only a writer
            # stalled between reading the clock and committing for several pages could fall behind it.
            advance=lambda: clock.advance(timedelta(milliseconds=250)),
        )
    finally:
        stop.set()
        thread.join()
    # Everything inserted has settled by now: the poll from the last cursor brings the rest.
    clock.advance(timedelta(seconds=5))
    rest, _ = _page_all(api, f"/api/v1/calls?limit=50&since={cursor}", lambda c: f"/api/v1/calls?limit=50&since={c}")
    everything = seen + rest
    assert len(everything) == len(set(everything)), "a call was listed twice"
    with db.session() as session:
        all_ids = set(session.scalars(select(Call.id)))
    assert set(everything) == all_ids, "a call was skipped"
    assert len(all_ids) > 25, "no call was inserted while the client paged"


def test_lead_list_cursor_while_leads_are_inserted(client, db, clock, configured):
    store_id = _store_id(db)
    for n in range(23):
        _insert_lead(db, store_id, clock, n)
    with db.session() as session:
        before = set(session.scalars(select(Lead.id)))
    api = ApiClient(client, make_key(db, clock.now()))
    stop = threading.Event()
    counter = iter(range(100, 10000))

    def writer():
        while not stop.is_set():
            _insert_lead(db, store_id, clock, next(counter))

    thread = threading.Thread(target=writer)
    thread.start()
    try:
        seen, _ = _page_all(api, "/api/v1/leads?limit=5", lambda c: f"/api/v1/leads?limit=5&cursor={c}")
    finally:
        stop.set()
        thread.join()
    assert len(seen) == len(set(seen)), "a lead was listed twice"
    assert before <= set(seen), "a lead that existed before paging was skipped"
    assert seen == sorted(seen, reverse=True)


def test_tampered_cursors_are_a_400(client, db, clock, configured):
    api = ApiClient(client, make_key(db, clock.now()))
    from gateway.api import encode_cursor

    for path in (
        "/api/v1/leads?cursor=%%%",
        "/api/v1/leads?cursor=" + encode_cursor({"id": "x"}),
        "/api/v1/tasks?cursor=" + encode_cursor({"id": -1}),
        "/api/v1/calls?since=" + encode_cursor({"at": "yesterday", "id": 1}),
        "/api/v1/crm/deliveries?cursor=" + encode_cursor({"id": [1]}),
    ):
        response = api.get(path)
        assert response.status_code == 400, path
        assert response.get_json()["error"]["code"] == "invalid_cursor"
