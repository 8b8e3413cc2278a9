"""Database down: callers still reach the main line and the call is logged later. Redis down: webhooks
still succeed and the work runs when Redis returns."""

from __future__ import annotations

from datetime import timedelta
from xml.etree import ElementTree

import pytest
from sqlalchemy import func, select

from gateway.calls.failsafe import write_main_lines
from gateway.models import Call, Lead, Task
from gateway.simulator import new_sid, play_call
from tests.support.config import CUSTOMER, SIMULTANEOUS
from tests.support.unreachable import dead_postgres, dead_redis
from tests.support.webhooks import AppPoster, SignedClient


@pytest.fixture
def main_lines(configured, db, settings):
    with db.session() as session:
        write_main_lines(session, settings.instance_dir)


def signed(app, settings) -> SignedClient:
    return SignedClient(app.test_client(), settings.public_base_url, settings.webhook_auth_token)


def counts(db) -> tuple[int, int, int]:
    with db.session() as session:
        return tuple(  # type: ignore[return-value]
            session.scalar(select(func.count()).select_from(model)) or 0 for model in (Call, Lead, Task)
        )


@pytest.mark.usefixtures("main_lines")
def test_database_down_forwards_the_caller_to_the_main_line_and_logs_the_call_later(
    settings, make_app, db, work
):
    broken = make_app(database_url=dead_postgres())
    client = signed(broken, settings)
    sid = new_sid("CA")
    params = {"CallSid": sid, "From": CUSTOMER, "To": SIMULTANEOUS, "CallStatus": "ringing"}
    response = client.post("/webhooks/voice/incoming", params)
    assert response.status_code == 200
    root = ElementTree.fromstring(response.get_data(as_text=True))
    assert (root.findtext("Dial") or "").strip() == "+12025550100"

    ended = client.post("/webhooks/voice/status", {**params, "CallStatus": "completed", "CallDuration": "95"})
    assert ended.status_code == 204
    assert counts(db) == (0, 0, 0)

    work(sweep=False)  # the spooled webhooks replay as RQ jobs once the database answers
    with db.session() as session:
        call = session.scalars(select(Call)).one()
        assert call.sid == sid
        assert call.outcome == "forwarded"
        assert call.duration == 95
        lead = session.scalars(select(Lead)).one()
        assert lead.contact.phone == CUSTOMER
        task = session.scalars(select(Task)).one()
        assert task.kind == "review"
        assert lead.owner_id is not None


@pytest.mark.usefixtures("main_lines")
def test_database_and_redis_down_spool_to_disk_and_the_sweep_replays(settings, make_app, db, work):
    broken = make_app(database_url=dead_postgres(), redis_url=dead_redis())
    client = signed(broken, settings)
    sid = new_sid("CA")
    params = {"CallSid": sid, "From": CUSTOMER, "To": SIMULTANEOUS, "CallStatus": "ringing"}
    response = client.post("/webhooks/voice/incoming", params)
    assert "+12025550100" in response.get_data(as_text=True)
    client.post("/webhooks/voice/status", {**params, "CallStatus": "completed", "CallDuration": "40"})
    spooled = list(settings.spool_dir.glob("*.json"))
    assert len(spooled) == 2

    work()  # the sweep finds the spool
    assert list(settings.spool_dir.glob("*.json")) == []
    assert counts(db) == (1, 1, 1)
    work()  # replaying again doubles nothing
    assert counts(db) == (1, 1, 1)


def test_database_down_with_no_known_main_line_still_answers_twiml(settings, make_app):
    broken = make_app(database_url=dead_postgres())
    params = {"CallSid": new_sid("CA"), "From": CUSTOMER, "To": SIMULTANEOUS, "CallStatus": "ringing"}
    response = signed(broken, settings).post("/webhooks/voice/incoming", params)
    assert response.status_code == 200
    assert "<Say" in response.get_data(as_text=True)


@pytest.mark.usefixtures("main_lines")
def test_fallback_url_forwards_to_the_main_line(twilio):
    params = {"CallSid": new_sid("CA"), "From": CUSTOMER, "To": SIMULTANEOUS, "ErrorCode": "11200"}
    response = twilio.post("/webhooks/voice/fallback", params)
    assert response.status_code == 200
    assert "+12025550100" in response.get_data(as_text=True)


@pytest.mark.usefixtures("configured")
def test_redis_down_webhooks_succeed_and_the_work_runs_when_it_returns(
    settings, make_app, clock, db, work, fake_twilio
):
    no_redis = make_app(redis_url=dead_redis())
    lines = list(play_call(AppPoster(signed(no_redis, settings)), to=SIMULTANEOUS, caller=CUSTOMER,
                           outcome="no-answer"))
    assert "answered 200" in lines[0]
    assert "answered 204" in lines[-1]
    assert counts(db) == (1, 1, 1)
    from gateway.models import Message

    with db.session() as session:
        waiting = session.scalar(select(func.count()).select_from(Message).where(Message.status == "pending"))
    clock.advance(timedelta(seconds=5))
    work()  # Redis is back: the sweep enqueues what the webhook could not
    with db.session() as session:
        still = session.scalar(select(func.count()).select_from(Message).where(Message.status == "pending"))
    assert still == 0
    assert len(fake_twilio.messages) == waiting
