"""Settling a call whose caller ID failed the carrier's SHAKEN/STIR verification (Twilio's StirVerstat):
a lead, a task and the owner's alert, flagged; no automated text unless the store allows it."""

from __future__ import annotations

import pytest
from sqlalchemy import select

from cadences.models import CadenceEnrolment
from gateway.calls.services import caller_id_failed
from gateway.models import Call, Lead, LeadEvent, Message, Task
from gateway.simulator import new_sid
from tests.support.api import ApiClient, make_key
from tests.support.config import BASIC_CONFIG, CUSTOMER, SEQUENTIAL, SIMULTANEOUS

ALLOWING = BASIC_CONFIG.replace(
    "    response_sla: 5m\n", "    response_sla: 5m\n    text_unverified_callers: true\n", 1
)


@pytest.mark.parametrize(
    ("verstat", "failed"),
    [
        ("TN-Validation-Failed-A", True),
        ("TN-Validation-Failed-B", True),
        ("TN-Validation-Failed-C", True),
        ("TN-Validation-Failed", True),
        (" tn-validation-failed-b ", True),
        ("TN-Validation-Passed-A", False),
        ("TN-Validation-Passed-B", False),
        ("TN-Validation-Passed-C", False),
        ("No-TN-Validation", False),
        ("", False),
        (None, False),
        ("Failed", False),
    ],
)
def test_only_a_failed_verification_flags_the_caller(verstat, failed):
    assert caller_id_failed(verstat) is failed


def ring(twilio, verstat: str | None, *, to: str = SIMULTANEOUS) -> str:
    sid = new_sid("CA")
    params = {"CallSid": sid, "From": CUSTOMER, "To": to, "CallStatus": "ringing", "Direction": "inbound"}
    if verstat is not None:
        params["StirVerstat"] = verstat
    response = twilio.post("/webhooks/voice/incoming", params)
    assert response.status_code == 200, response.get_data(as_text=True)
    assert "<Dial" in response.get_data(as_text=True)
    return sid


def ends(twilio, sid: str, *, to: str = SIMULTANEOUS, **extra: str) -> None:
    params = {"CallSid": sid, "From": CUSTOMER, "To": to, "CallStatus": "no-answer", "CallDuration": "0", **extra}
    assert twilio.post("/webhooks/voice/status", params).status_code == 204


def texts_to(fake_twilio, number: str) -> list[dict]:
    return [m for m in fake_twilio.messages if m.get("To") == number]


def test_a_spoofed_caller_gets_a_lead_a_task_and_an_alert_but_no_text(
    configured, twilio, work, db, fake_twilio, client, clock
):
    # Twice: the first ring goes through the Flask view (route not cached), the second below Flask.
    for _ in range(2):
        sid = ring(twilio, "TN-Validation-Failed-B")
        ends(twilio, sid)
    work()
    with db.session() as session:
        calls = list(session.scalars(select(Call).order_by(Call.id)))
        lead = session.scalars(select(Lead)).one()
        assert [c.caller_id_unverified for c in calls] == [True, True]
        assert all(c.outcome == "abandoned" and c.lead_id == lead.id for c in calls)
        assert lead.caller_id_unverified
        task = session.scalars(select(Task)).one()
        assert (task.kind, task.status, task.owner_id) == ("callback", "open", lead.owner_id)
        assert session.scalars(select(CadenceEnrolment)).all() == []
        assert session.scalars(select(Message).where(Message.kind == "cadence")).all() == []
        events = session.scalars(select(LeadEvent).where(LeadEvent.kind == "caller_id_unverified")).all()
        assert len(events) == 2
        assert "no automated text" in events[0].text
        owner_phone = lead.owner.phone
        lead_id = lead.id
    assert texts_to(fake_twilio, CUSTOMER) == []
    alerts = texts_to(fake_twilio, owner_phone)
    assert alerts, "the owner is alerted all the same"
    assert "Caller ID unverified" in alerts[0]["Body"]
    assert "No automated text was sent." in alerts[0]["Body"]

    api = ApiClient(client, make_key(db, clock.now()))
    body = api.get(f"/api/v1/leads/{lead_id}").get_json()
    assert body["caller_id_unverified"] is True
    assert [c["caller_id_unverified"] for c in body["calls"]] == [True, True]
    kinds = [item["event"]["kind"] for item in body["timeline"] if item["type"] == "event"]
    assert "caller_id_unverified" in kinds


def test_a_verified_caller_is_texted_and_not_flagged(configured, twilio, work, db, fake_twilio):
    sid = ring(twilio, "TN-Validation-Passed-A")
    ends(twilio, sid)
    work()
    with db.session() as session:
        assert not session.scalars(select(Call)).one().caller_id_unverified
        assert not session.scalars(select(Lead)).one().caller_id_unverified
    assert len(texts_to(fake_twilio, CUSTOMER)) == 1


def test_a_later_verified_call_clears_the_lead_and_starts_the_cadence(configured, twilio, work, db, fake_twilio):
    ends(twilio, ring(twilio, "TN-Validation-Failed-A"))
    work()
    assert texts_to(fake_twilio, CUSTOMER) == []
    ends(twilio, ring(twilio, "No-TN-Validation"))
    work()
    with db.session() as session:
        assert not session.scalars(select(Lead)).one().caller_id_unverified
    assert len(texts_to(fake_twilio, CUSTOMER)) == 1


def test_a_store_may_text_unverified_callers(configure, twilio, work, db, fake_twilio):
    configure(ALLOWING)
    ends(twilio, ring(twilio, "TN-Validation-Failed-C"))
    work()
    with db.session() as session:
        lead = session.scalars(select(Lead)).one()
        assert lead.caller_id_unverified
        assert lead.store.text_unverified_callers
        owner_phone = lead.owner.phone
    assert len(texts_to(fake_twilio, CUSTOMER)) == 1
    [alert] = texts_to(fake_twilio, owner_phone)
    assert "Caller ID unverified" in alert["Body"]
    assert "No automated text" not in alert["Body"]


def test_the_end_arriving_first_keeps_the_verdict(configured, twilio, work, db, fake_twilio):
    """A call never logged at its ring (the database was down) is logged from its end."""
    ends(twilio, new_sid("CA"), to=SEQUENTIAL, StirVerstat="TN-Validation-Failed-A")
    work()
    with db.session() as session:
        assert session.scalars(select(Call)).one().caller_id_unverified
        assert session.scalars(select(Lead)).one().caller_id_unverified
    assert texts_to(fake_twilio, CUSTOMER) == []


def test_a_ring_logged_later_by_the_failsafe_keeps_the_verdict(configured, app, db, twilio, work, monkeypatch):
    """The database refuses the ring after its answer: the kept ring is logged later, still flagged."""
    from gateway.calls import hotpath
    from gateway.calls.hotpath import Statements

    ring(twilio, None)  # the writer has committed once: later rings are answered before their commit
    writer = hotpath.hot_path(app)
    refuse = writer.engine.dialect.dbapi.OperationalError  # type: ignore[union-attr]
    original = Statements.flush

    def failing(self):
        raise refuse("disk I/O error")

    monkeypatch.setattr(Statements, "flush", failing)
    sid = ring(twilio, "TN-Validation-Failed-A")
    monkeypatch.setattr(Statements, "flush", original)
    work(sweep=False)
    with db.session() as session:
        assert session.scalars(select(Call).where(Call.sid == sid)).one().caller_id_unverified
