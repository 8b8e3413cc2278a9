"""Every web process's book of lead owners (gateway/calls/owners.py): loaded, kept current across processes,
current at once in the process that made a change, and silent (so calls ask the database) without Redis."""

from __future__ import annotations

import time
from xml.etree import ElementTree

import pytest
from sqlalchemy import select

from gateway.calls import owners
from gateway.leads import change_owner, set_status
from gateway.models import Agent, Lead, LeadStatus
from gateway.simulator import new_sid, play_call
from tests.support.config import SEQUENTIAL
from tests.support.unreachable import dead_redis
from tests.support.webhooks import AppPoster, SignedClient

pytestmark = pytest.mark.usefixtures("configured")


def poster_for(app, settings) -> AppPoster:
    return AppPoster(SignedClient(app.test_client(), settings.public_base_url, settings.webhook_auth_token))


def following(book, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not book.lookup(0, "+10000000000")[0]:
        assert time.monotonic() < deadline, "the book never started following"
        time.sleep(0.01)


def eventually(check, timeout: float = 3.0):
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value or time.monotonic() > deadline:
            return value
        time.sleep(0.01)


@pytest.fixture
def books(app, make_app):
    """This process's book and another web process's, both following."""
    here, there = owners.book(app), owners.book(make_app())
    following(here)
    following(there)
    return here, there


def missed_call(app, settings, caller: str) -> Lead:
    list(play_call(poster_for(app, settings), to=SEQUENTIAL, caller=caller, outcome="no-answer"))
    with app.extensions["gateway"].database.session() as session:
        lead = session.scalars(select(Lead).join(Lead.contact).where(Lead.open_key.is_not(None))
                               .order_by(Lead.id.desc())).first()
        assert lead is not None
        assert lead.owner is not None
        return lead


def test_a_book_loads_the_owners_of_leads_that_already_exist(app, make_app, settings):
    lead = missed_call(app, settings, "+12025557301")
    other = owners.book(make_app())
    following(other)
    assert other.lookup(lead.store_id, "+12025557301") == (True, lead.owner.key)
    assert other.lookup(lead.store_id, "+12025557399") == (True, None)


def test_the_process_that_made_the_change_knows_at_once_and_the_others_moments_later(app, books, settings):
    here, there = books
    lead = missed_call(app, settings, "+12025557302")
    assert here.lookup(lead.store_id, "+12025557302") == (True, lead.owner.key)  # no waiting
    assert eventually(lambda: there.lookup(lead.store_id, "+12025557302") == (True, lead.owner.key))


def test_a_closed_lead_leaves_the_book(app, books, settings, db, clock):
    here, there = books
    lead = missed_call(app, settings, "+12025557303")
    with app.app_context(), db.session() as session:
        set_status(session, session.get(Lead, lead.id), LeadStatus.CLOSED_LOST, clock.now())
    assert here.lookup(lead.store_id, "+12025557303") == (True, None)
    assert eventually(lambda: there.lookup(lead.store_id, "+12025557303") == (True, None))


def test_the_owner_rings_first_from_the_book_and_from_the_database_without_redis(app, make_app, settings):
    lead = missed_call(app, settings, "+12025557304")
    owner_phone = lead.owner.phone
    for serving in (app, make_app(redis_url=dead_redis())):
        book = owners.book(serving)
        if serving is app:
            following(book)
        else:
            time.sleep(0.2)
            assert book.lookup(lead.store_id, "+12025557304") == (False, None)  # nothing to follow
        client = SignedClient(serving.test_client(), settings.public_base_url, settings.webhook_auth_token)
        params = {"CallSid": new_sid("CA"), "From": "+12025557304", "To": SEQUENTIAL, "CallStatus": "ringing"}
        root = ElementTree.fromstring(client.post("/webhooks/voice/incoming", params).get_data(as_text=True))
        assert [(n.text or "").strip() for n in root.iter("Number")] == [owner_phone]


def test_a_new_owner_replaces_the_old_one_everywhere(app, books, settings, db, clock):
    here, there = books
    lead = missed_call(app, settings, "+12025557305")
    with app.app_context(), db.session() as session:
        row = session.get(Lead, lead.id)
        other = session.scalars(select(Agent).where(Agent.store_id == row.store_id, Agent.id != row.owner_id)).first()
        change_owner(session, row, other, clock.now())
        new_owner = other.key
    assert new_owner != lead.owner.key
    assert here.lookup(lead.store_id, "+12025557305") == (True, new_owner)
    assert eventually(lambda: there.lookup(lead.store_id, "+12025557305") == (True, new_owner))


def test_a_change_nobody_announced_is_picked_up_by_the_next_reload(app, settings, db, clock, monkeypatch):
    monkeypatch.setattr(owners, "RELOAD_SECONDS", 0.3)
    book = owners.book(app)
    following(book)
    lead = missed_call(app, settings, "+12025557306")
    with db.session() as session:  # no app context: as a command-line tool would change it
        session.get(Lead, lead.id).open_key = None
    assert book.lookup(lead.store_id, "+12025557306") == (True, lead.owner.key)  # not announced
    assert eventually(lambda: book.lookup(lead.store_id, "+12025557306") == (True, None))
