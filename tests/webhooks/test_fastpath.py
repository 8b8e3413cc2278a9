"""The incoming-call webhook answered below Flask: same answers as the view, and every unusual request
still reaches the view (webhooks/fastpath.py)."""

from __future__ import annotations

from xml.etree import ElementTree

import pytest
from sqlalchemy import func, select

from gateway.calls import hotpath
from gateway.calls.failsafe import write_main_lines
from gateway.calls.hotpath import HotPath
from gateway.database import make_engine
from gateway.models import Call
from gateway.simulator import new_sid, sign
from tests.support.config import CUSTOMER, ROUND_ROBIN, SIMULTANEOUS
from tests.support.unreachable import dead_postgres
from webhooks.fastpath import IncomingCallFastPath


@pytest.fixture
def seen(app):
    """The paths of the requests Flask itself handled (the fast path's never get here)."""
    paths: list[str] = []

    @app.before_request
    def record() -> None:
        from flask import request

        paths.append(request.full_path.rstrip("?"))

    return paths


def ring(twilio, to=SIMULTANEOUS, sid=None, query=""):
    sid = sid or new_sid("CA")
    params = {"CallSid": sid, "From": CUSTOMER, "To": to, "CallStatus": "ringing", "AccountSid": "AC" + "1" * 32}
    return sid, twilio.post("/webhooks/voice/incoming" + query, params)


def calls(db) -> int:
    with db.session() as session:
        return session.scalar(select(func.count()).select_from(Call)) or 0


@pytest.mark.usefixtures("configured")
def test_an_ordinary_ring_is_answered_without_flask_once_its_route_is_cached(app, twilio, db, seen):
    assert isinstance(app.wsgi_app, IncomingCallFastPath)
    _, first = ring(twilio)  # the route is not cached yet: the view loads it
    assert seen == ["/webhooks/voice/incoming"]
    _, second = ring(twilio)
    assert seen == ["/webhooks/voice/incoming"]  # Flask never saw the second
    for response in (first, second):
        assert response.status_code == 200
        assert response.mimetype == "text/xml"
        root = ElementTree.fromstring(response.get_data(as_text=True))
        assert root.findall("./Dial/Number")
    assert second.headers["Content-Length"] == str(len(second.get_data()))
    assert calls(db) == 2


@pytest.mark.usefixtures("configured")
def test_a_retry_gets_the_same_answer_from_the_view_as_from_the_fast_path(twilio, db, seen):
    ring(twilio, to=ROUND_ROBIN)  # warm the route; this call takes the rotation's first turn
    sid, fast = ring(twilio, to=ROUND_ROBIN)
    assert len(seen) == 1
    # A query string sends the same call through Flask's view, as an unusual request would.
    _, viewed = ring(twilio, to=ROUND_ROBIN, sid=sid, query="?retry=1")
    assert len(seen) == 2
    assert viewed.get_data(as_text=True) == fast.get_data(as_text=True)
    _, again = ring(twilio, to=ROUND_ROBIN, sid=sid)
    assert again.get_data(as_text=True) == fast.get_data(as_text=True)
    assert calls(db) == 2


@pytest.mark.usefixtures("configured")
def test_a_forged_signature_on_a_cached_route_still_gets_the_403(twilio, db, seen):
    ring(twilio)
    before = calls(db)
    params = {"CallSid": new_sid("CA"), "From": CUSTOMER, "To": SIMULTANEOUS, "CallStatus": "ringing"}
    forged = twilio.post("/webhooks/voice/incoming", params, signature=sign("another-token", twilio.base_url
                                                                            + "/webhooks/voice/incoming", params))
    assert forged.status_code == 403
    assert forged.get_json()["error"]["code"] == "invalid_signature"
    assert seen[-1] == "/webhooks/voice/incoming"
    assert calls(db) == before


@pytest.mark.usefixtures("configured")
def test_malformed_payloads_go_to_the_view(twilio, db, seen):
    ring(twilio)
    bad = twilio.post("/webhooks/voice/incoming", {"CallSid": "not-a-sid", "From": CUSTOMER, "To": SIMULTANEOUS})
    assert bad.status_code == 400
    assert "CallSid" in bad.get_json()["error"]["message"]
    assert len(seen) == 2


@pytest.mark.usefixtures("configured")
def test_the_database_refusing_the_fast_path_sends_the_caller_to_the_main_line(app, twilio, db, settings, seen,
                                                                                work):
    with db.session() as session:
        write_main_lines(session, settings.instance_dir)
    ring(twilio)  # the route is cached while the database is up
    # From here the hot path's writer talks to a database that is not there.
    app.extensions[hotpath.EXTENSION] = HotPath(make_engine(dead_postgres()))
    sid, response = ring(twilio)
    assert response.status_code == 200
    root = ElementTree.fromstring(response.get_data(as_text=True))
    assert [(n.text or "").strip() for n in root.findall("./Dial")] == ["+12025550100"]
    assert len(seen) == 2  # the view answered with the failsafe, without a second try at the database
    assert calls(db) == 1
    work(sweep=False)  # the webhook was kept as a job: the call is recorded from it
    with db.session() as session:
        call = session.scalars(select(Call).where(Call.sid == sid)).one()
        assert call.kind == "forwarded"
