"""The app's error answers: JSON with a code, the headers HTTP requires, 503 only for a database that is
not there."""

from __future__ import annotations

import pytest
from sqlalchemy.exc import DataError, IntegrityError, OperationalError, StatementError

from tests.support.unreachable import dead_postgres


def _raise(error: Exception):
    def view():
        raise error

    return view


@pytest.mark.parametrize(
    ("error", "status", "code"),
    [
        (OperationalError("SELECT 1", {}, Exception("connection refused")), 503, "database_unavailable"),
        (DataError("SELECT 1", {}, Exception("value out of range")), 400, "invalid_value"),
        (StatementError("bind", "SELECT 1", {}, OverflowError("date value out of range")), 400, "invalid_value"),
        (IntegrityError("INSERT", {}, Exception("duplicate key")), 500, "internal_error"),
    ],
)
def test_only_a_database_that_cannot_be_reached_is_a_503(app, error, status, code):
    app.add_url_rule(f"/api/v1/boom-{code}", f"boom_{code}", _raise(error))  # a page path gets a page
    response = app.test_client().get(f"/api/v1/boom-{code}")
    assert response.status_code == status
    assert response.get_json()["error"]["code"] == code
    assert "Traceback" not in response.get_data(as_text=True)
    assert "duplicate key" not in response.get_data(as_text=True)


def test_a_database_that_is_not_there_is_a_503(make_app):
    app = make_app(database_url=dead_postgres())
    response = app.test_client().get("/api/v1/leads", headers={"Authorization": "Bearer gw_nothing"})
    assert response.status_code == 503
    assert response.get_json()["error"]["code"] == "database_unavailable"


@pytest.mark.parametrize(("method", "path"), [("put", "/api/v1/leads/1"), ("delete", "/api/v1/calls"),
                                              ("get", "/webhooks/voice/incoming"), ("post", "/healthz")])
def test_a_405_says_which_methods_are_allowed(client, method, path):
    response = getattr(client, method)(path)
    assert response.status_code == 405
    assert response.headers["Allow"]
    assert response.get_json()["error"]["code"] == "method_not_allowed"
