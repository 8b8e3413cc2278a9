"""The dashboard shows a signed-in person the leads of their key's stores, and nothing without a key."""

from __future__ import annotations

import pytest

from gateway.api.keys import create_key
from gateway.simulator import play_call
from tests.support.config import CUSTOMER, SIMULTANEOUS, SOUTH


@pytest.fixture
def north_key(db, configured, clock) -> str:
    with db.session() as session:
        _, plaintext = create_key(session, "north desk", ["north-honda"], clock.now())
    return plaintext


def test_without_signing_in_it_shows_no_lead_data(client, poster, north_key):
    list(play_call(poster, to=SIMULTANEOUS, caller=CUSTOMER, outcome="no-answer"))
    page = client.get("/").get_data(as_text=True)
    assert "Sign in" in page
    assert "(202) 555-0199" not in page


def test_a_wrong_key_is_refused(client, north_key):
    page = client.post("/sign-in", data={"key": "gw_nope"}).get_data(as_text=True)
    assert "unknown or revoked" in page


def test_signed_in_it_shows_its_stores_leads_tasks_and_calls(client, poster, north_key):
    list(play_call(poster, to=SIMULTANEOUS, caller=CUSTOMER, outcome="no-answer"))
    list(play_call(poster, to=SOUTH, caller="+13125550177", outcome="no-answer"))
    assert client.post("/sign-in", data={"key": north_key}).status_code == 302
    page = client.get("/").get_data(as_text=True)
    assert "(202) 555-0199" in page
    assert "Cars.com" in page
    assert "callback" in page
    assert "missed" in page
    assert "(312) 555-0177" not in page
    client.post("/sign-out")
    assert "Sign in" in client.get("/").get_data(as_text=True)


def test_markup_in_data_is_escaped(client, db, north_key, poster):
    list(play_call(poster, to=SIMULTANEOUS, caller=CUSTOMER, outcome="no-answer"))
    from sqlalchemy import update

    from gateway.models import Lead

    with db.session() as session:
        session.execute(update(Lead).values(source="<script>alert(1)</script>"))
    client.post("/sign-in", data={"key": north_key})
    page = client.get("/").get_data(as_text=True)
    assert "<script>alert(1)</script>" not in page
    assert "&lt;script&gt;" in page
