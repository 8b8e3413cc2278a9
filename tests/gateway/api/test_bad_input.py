"""Bad input found by hand gets a 4xx with the JSON error body, never a 500 or a misleading 503.

Each case was a 500 (or a 503 that blamed the database) before query integers, ids, cursors, JSON
bodies and signed claims were read through gateway/web.py.
"""

from __future__ import annotations

import base64
import json
from datetime import timedelta

import pytest
from itsdangerous import URLSafeSerializer
from sqlalchemy import select

from gateway.agents.click_to_call import LINK_SALT
from gateway.leads import Origin, contact_for_phone, open_or_join_lead
from gateway.models import Agent, Lead, Store
from tests.support.api import ApiClient, make_key


@pytest.fixture
def api(client, db, clock, configured):
    return ApiClient(client, make_key(db, clock.now()))


@pytest.fixture
def lead_id(db, clock, configured):
    with db.session() as session:
        store_id = session.scalar(select(Store.id).where(Store.key == "north-honda"))
        contact = contact_for_phone(session, "+12025550188")
        lead, _ = open_or_join_lead(session, contact, Origin(store_id, "sales", "Test", None), clock.now())
        session.commit()
        return lead.id


def _cursor_text(text: str) -> str:
    return base64.urlsafe_b64encode(text.encode()).decode().rstrip("=")


def _is_json_error(response, status: int, code: str | None = None) -> None:
    assert response.status_code == status, response.get_data(as_text=True)
    error = response.get_json()["error"]
    assert set(error) >= {"code", "message"}
    if code is not None:
        assert error["code"] == code
    assert "Traceback" not in response.get_data(as_text=True)


@pytest.mark.parametrize("path", ["/api/v1/leads", "/api/v1/calls", "/api/v1/messages", "/api/v1/tasks",
                                  "/api/v1/crm/deliveries"])
@pytest.mark.parametrize("limit", ["%C2%B2", "%D9%A1%D9%A2", "-1", "0", "201", "1e3", "9" * 40, "%20"])
def test_a_limit_that_is_no_small_whole_number_is_a_400(api, path, limit):
    _is_json_error(api.get(f"{path}?limit={limit}"), 400, "invalid_limit")


@pytest.mark.parametrize("lead", ["99999999999999999999", "9223372036854775808", "2147483648", "%C2%B2", "-1",
                                  "%D9%A1"])
def test_a_lead_id_no_column_can_hold_is_a_400(api, lead):
    _is_json_error(api.get(f"/api/v1/messages?lead={lead}"), 400, "invalid_lead")
    _is_json_error(api.get(f"/api/v1/tasks?lead={lead}"), 400, "invalid_lead")


@pytest.mark.parametrize("path_id", ["9223372036854775808", "99999999999999999999", "2147483648", "%D9%A1%D9%A2"])
def test_a_path_id_no_column_can_hold_is_a_404(api, path_id):
    for path in (f"/api/v1/leads/{path_id}", f"/api/v1/leads/{path_id}/cadences", f"/api/v1/calls/{path_id}/recording"):
        _is_json_error(api.get(path), 404)


@pytest.mark.parametrize("cursor_id", ["1e400", str(10**30), str(2**63), str(-(2**63) - 1), "1.5", "true", "null",
                                       '"7"', "NaN", "Infinity"])
@pytest.mark.parametrize("path", ["/api/v1/messages", "/api/v1/leads", "/api/v1/tasks", "/api/v1/crm/deliveries"])
def test_a_cursor_holding_an_absurd_id_is_a_400(api, path, cursor_id):
    cursor = _cursor_text('{"id":' + cursor_id + "}")
    _is_json_error(api.get(f"{path}?cursor={cursor}"), 400, "invalid_cursor")


@pytest.mark.parametrize(
    "at", ["0001-01-01T00:00:00+05:00", "9999-12-31T23:59:59-05:00", "2026-11-24T10:00:00", "yesterday", 7, None]
)
def test_a_call_cursor_whose_time_no_database_stores_is_a_400_not_a_503(api, at):
    cursor = _cursor_text(json.dumps({"at": at, "id": 1}))
    _is_json_error(api.get(f"/api/v1/calls?since={cursor}"), 400, "invalid_cursor")


def test_a_cursor_nested_deep_is_a_400(api):
    cursor = _cursor_text("[" * 2000 + "]" * 2000)
    _is_json_error(api.get(f"/api/v1/leads?cursor={cursor}"), 400, "invalid_cursor")


@pytest.mark.parametrize("status", [[], {}, 7, None, True, ["new"]])
def test_a_status_that_is_no_string_is_a_400(api, lead_id, status):
    _is_json_error(api.patch(f"/api/v1/leads/{lead_id}", json={"status": status}), 400, "invalid_status")


DEEP = "[" * 100_000 + "]" * 100_000


@pytest.mark.parametrize("method", ["patch", "post_messages", "post_call", "post_stop"])
@pytest.mark.parametrize("body", [DEEP, '{"body": ' + DEEP + "}", '{"a": "' + "[" * 50 + '", "b": 1e400}', "NaN",
                                  '{"body": "hi", "x": Infinity}'])
def test_a_json_body_nested_deep_or_out_of_range_is_a_400(api, lead_id, method, body):
    paths = {
        "patch": ("patch", f"/api/v1/leads/{lead_id}"),
        "post_messages": ("post", f"/api/v1/leads/{lead_id}/messages"),
        "post_call": ("post", f"/api/v1/leads/{lead_id}/call"),
        "post_stop": ("post", f"/api/v1/leads/{lead_id}/cadence/stop"),
    }
    verb, path = paths[method]
    response = getattr(api, verb)(path, data=body, content_type="application/json")
    _is_json_error(response, 400)


def test_a_json_body_nested_within_the_bound_still_works(api, lead_id):
    # Brackets inside strings do not count toward the depth.
    response = api.post(f"/api/v1/leads/{lead_id}/cadence/stop", json={"note": "[[[{{{" * 40})
    assert response.status_code == 200


def test_a_json_body_too_large_is_a_413(api, lead_id):
    response = api.patch(f"/api/v1/leads/{lead_id}", data='{"status": "' + "x" * 300_000 + '"}',
                         content_type="application/json")
    _is_json_error(response, 413, "body_too_large")


def test_an_appointment_no_database_stores_is_a_400(api, lead_id):
    for value in ("0001-01-01T00:00:00+05:00", "9999-12-31T23:59:59-05:00", "2026-11-27T15:30:00"):
        response = api.patch(f"/api/v1/leads/{lead_id}", json={"appointment_at": value})
        _is_json_error(response, 400, "invalid_appointment_at")


def _token(settings, claim) -> str:
    return URLSafeSerializer(settings.secret_key, salt=LINK_SALT).dumps(claim)


def _agent_id(db) -> int:
    with db.session() as session:
        return session.scalar(select(Agent.id).order_by(Agent.id))


@pytest.mark.parametrize(
    "claim",
    [
        ["LEAD", "AGENT", "nonce-1", 10**20],
        [10**30, "AGENT", "nonce-2", "EXPIRES"],
        ["LEAD", 10**30, "nonce-3", "EXPIRES"],
        ["LEAD", "AGENT", "nonce-4", -(10**20)],
        ["LEAD", "AGENT", "nonce-5", 1.5e9],
        ["LEAD", "AGENT", "", "EXPIRES"],
        ["LEAD", "AGENT", "n" * 65, "EXPIRES"],
        [-1, "AGENT", "nonce-6", "EXPIRES"],
        {"lead": 1},
    ],
)
def test_a_signed_link_holding_absurd_claims_is_an_error_page(client, db, settings, clock, lead_id, claim):
    expires = int((clock.now() + timedelta(hours=1)).timestamp())
    values = {"LEAD": lead_id, "AGENT": _agent_id(db), "EXPIRES": expires}
    if isinstance(claim, list):
        claim = [values.get(v, v) if isinstance(v, str) else v for v in claim]
    token = _token(settings, claim)
    for response in (client.get(f"/c/{token}"), client.post(f"/c/{token}")):
        assert response.status_code == 400
        assert response.mimetype == "text/html"
        assert "not valid" in response.get_data(as_text=True)
    with db.session() as session:
        assert session.get(Lead, lead_id).status == "new"
