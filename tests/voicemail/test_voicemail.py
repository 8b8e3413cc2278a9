"""Voicemail callbacks (signed, idempotent, in any order) and recordings served only to authorised users."""

from __future__ import annotations

import itertools

import pytest
from sqlalchemy import func, select

from gateway.models import Call, LeadEvent, WebhookEvent
from gateway.simulator import new_sid
from tests.gateway.agents.helpers import (
    ALICE,
    DMITRI,
    alert_rows,
    api_key,
    call_ends,
    missed_call,
    nobody_answers,
    only_lead,
    record_action,
    recording,
    ring,
    texts_to,
    transcription,
)
from tests.support.config import CUSTOMER, SIMULTANEOUS
from voicemail.models import Voicemail

HOT_TRANSCRIPT = "Hi, this is Maria. I'd like to test drive the CR-V today and get your best price. Call me back."
AUDIO = b"ID3\x03\x00\x00\x00fake mp3 frames " + bytes(range(256)) * 40


def voicemails(db) -> list[Voicemail]:
    with db.session() as session:
        return list(session.scalars(select(Voicemail)))


def only_voicemail(db) -> Voicemail:
    found = voicemails(db)
    assert len(found) == 1
    return found[0]


def events_of(db, kind: str) -> list[LeadEvent]:
    with db.session() as session:
        return list(session.scalars(select(LeadEvent).where(LeadEvent.kind == kind)))


def only_call(db) -> Call:
    with db.session() as session:
        return session.scalars(select(Call)).one()


# --- the whole path ---------------------------------------------------------------------------------------


@pytest.mark.usefixtures("configured")
def test_voicemail_played_end_to_end_is_attached_scored_and_alerted(poster, db, work, fake_twilio):
    missed_call(poster, outcome="voicemail", transcript=HOT_TRANSCRIPT)
    lead = only_lead(db)
    voicemail = only_voicemail(db)
    assert voicemail.lead_id == lead.id
    assert voicemail.status == "completed"
    assert voicemail.duration == 14
    assert voicemail.transcript == HOT_TRANSCRIPT
    assert voicemail.department_hint == "sales"
    assert set(voicemail.intents) == {"test drive", "price"}
    assert voicemail.time_frames == ["today"]
    codes = {r["code"] for r in lead.priority_reasons}
    assert {"voicemail", "intent", "time_frame", "source"} <= codes
    assert lead.priority >= 76  # hot

    work()
    to_owner = [m["Body"] for m in texts_to(fake_twilio, lead.owner.phone)]
    assert len(to_owner) == 2
    assert to_owner[0].startswith("Voicemail (14s)")
    assert "(202) 555-0199" in to_owner[0]
    assert "I'd like to test drive the CR-V today" in to_owner[1]
    # A hot lead also reaches the department's manager, with the transcript.
    to_manager = [m["Body"] for m in texts_to(fake_twilio, DMITRI)]
    assert any("test drive" in body for body in to_manager)
    assert all(m["From"] == SIMULTANEOUS for m in fake_twilio.messages if m["To"] in {lead.owner.phone, DMITRI})


# --- recording absent, transcription failed ---------------------------------------------------------------


@pytest.mark.usefixtures("configured")
def test_recording_absent_means_no_voicemail_was_left(twilio, db, work, fake_twilio, clock):
    sid = ring(twilio)
    nobody_answers(twilio, sid)
    record_action(twilio, sid, 4)  # the caller stayed silent for four seconds
    assert recording(twilio, sid, status="absent", recording_sid=new_sid("RE")).status_code == 204
    call_ends(twilio, sid)
    call = only_call(db)
    assert call.outcome == "missed"
    assert call.voicemail_seconds == 0
    voicemail = only_voicemail(db)
    assert voicemail.status == "absent"
    assert voicemail.recording_url is None
    lead = only_lead(db)
    assert "voicemail" not in {r["code"] for r in lead.priority_reasons}
    key = api_key(db, clock, None)
    response = twilio.client.get(f"/api/v1/calls/{call.id}/recording", headers={"Authorization": f"Bearer {key}"})
    assert response.status_code == 404
    work()
    bodies = [m["Body"] for m in texts_to(fake_twilio, lead.owner.phone)]
    assert len(bodies) == 1
    assert bodies[0].startswith("Missed call")


@pytest.mark.usefixtures("configured")
def test_silence_reported_after_the_call_settled_undoes_the_voicemail_outcome(twilio, db):
    sid = ring(twilio)
    nobody_answers(twilio, sid)
    record_action(twilio, sid, 3)
    call_ends(twilio, sid)
    assert only_call(db).outcome == "voicemail"
    recording(twilio, sid, status="absent")
    assert only_call(db).outcome == "missed"
    assert "voicemail" not in {r["code"] for r in only_lead(db).priority_reasons}


@pytest.mark.usefixtures("configured")
def test_failed_transcription_sends_no_transcript_alert_and_keeps_the_recording(twilio, db, work, fake_twilio):
    sid = ring(twilio)
    nobody_answers(twilio, sid)
    record_action(twilio, sid, 20)
    recording(twilio, sid, recording_sid=new_sid("RE"), url=fake_twilio.add_recording(AUDIO), duration=20)
    call_ends(twilio, sid)
    assert transcription(twilio, sid, status="failed").status_code == 204
    voicemail = only_voicemail(db)
    assert voicemail.transcription_status == "failed"
    assert voicemail.transcript is None
    assert voicemail.status == "completed"
    assert len(events_of(db, "voicemail-untranscribed")) == 1
    assert events_of(db, "voicemail-transcript") == []
    work()
    lead = only_lead(db)
    bodies = [m["Body"] for m in texts_to(fake_twilio, lead.owner.phone)]
    assert len(bodies) == 1
    assert bodies[0].startswith("Voicemail (20s)")


# --- order and replays ------------------------------------------------------------------------------------


ORDERS = list(itertools.permutations(["recording", "transcription", "status"]))


@pytest.mark.usefixtures("configured")
@pytest.mark.parametrize("order", ORDERS, ids=["-".join(o) for o in ORDERS])
def test_callbacks_in_any_order_and_replayed_are_handled_once(twilio, db, work, fake_twilio, order):
    sid = ring(twilio)
    nobody_answers(twilio, sid)
    record_action(twilio, sid, 14)
    recording_sid, transcription_sid = new_sid("RE"), new_sid("TR")
    url = fake_twilio.add_recording(AUDIO)
    steps = {
        "recording": lambda: recording(twilio, sid, recording_sid=recording_sid, url=url),
        "transcription": lambda: transcription(
            twilio, sid, text=HOT_TRANSCRIPT, recording_sid=recording_sid, transcription_sid=transcription_sid
        ),
        "status": lambda: call_ends(twilio, sid),
    }
    for name in order:
        assert steps[name]().status_code == 204
        assert steps[name]().status_code == 204  # the provider retried it
    voicemail = only_voicemail(db)
    lead = only_lead(db)
    assert voicemail.lead_id == lead.id
    assert voicemail.recording_sid == recording_sid
    assert voicemail.status == "completed"
    assert voicemail.transcript == HOT_TRANSCRIPT
    assert voicemail.transcript_handled_at is not None
    assert only_call(db).outcome == "voicemail"
    assert len(events_of(db, "voicemail-transcript")) == 1
    assert lead.priority >= 76
    work()
    owner = [m["Body"] for m in texts_to(fake_twilio, lead.owner.phone)]
    assert len(owner) == 2
    assert sum("test drive" in body for body in owner) == 1


@pytest.mark.usefixtures("configured")
def test_forged_voicemail_callbacks_are_refused_and_store_nothing(twilio, db):
    sid = ring(twilio)
    params = {"CallSid": sid, "RecordingStatus": "completed", "RecordingSid": new_sid("RE")}
    forged = twilio.post(f"/webhooks/voicemail/recording?call={sid}", params, signature="Zm9yZ2Vk")
    unsigned = twilio.unsigned(f"/webhooks/voicemail/transcription?call={sid}",
                               {"CallSid": sid, "TranscriptionStatus": "completed", "TranscriptionText": "x"})
    assert forged.status_code == 403
    assert unsigned.status_code == 403
    assert voicemails(db) == []
    with db.session() as session:
        assert session.scalar(select(func.count()).select_from(WebhookEvent)) == 0


@pytest.mark.usefixtures("configured")
@pytest.mark.parametrize(
    ("path", "params", "message"),
    [
        ("recording", {"RecordingStatus": "done"}, "RecordingStatus"),
        ("recording", {"RecordingStatus": "completed", "RecordingSid": "nonsense"}, "RecordingSid"),
        ("transcription", {"TranscriptionStatus": "maybe"}, "TranscriptionStatus"),
    ],
)
def test_malformed_callbacks_get_a_clear_400(twilio, db, path, params, message):
    sid = ring(twilio)
    response = twilio.post(f"/webhooks/voicemail/{path}?call={sid}", {"CallSid": sid, **params})
    assert response.status_code == 400
    assert message in response.get_json()["error"]["message"]
    assert voicemails(db) == []


@pytest.mark.usefixtures("configured")
def test_callback_for_an_unknown_call_is_accepted_and_ignored(twilio, db):
    sid = new_sid("CA")
    assert recording(twilio, sid, recording_sid=new_sid("RE"), url="https://api.twilio.com/x").status_code == 204
    assert voicemails(db) == []


# --- the recording, through the gateway only ----------------------------------------------------------------


@pytest.fixture
def recorded_call(twilio, db, fake_twilio) -> int:
    sid = ring(twilio)
    nobody_answers(twilio, sid)
    record_action(twilio, sid, 14)
    recording(twilio, sid, recording_sid=new_sid("RE"), url=fake_twilio.add_recording(AUDIO))
    call_ends(twilio, sid)
    return only_call(db).id


@pytest.mark.usefixtures("configured")
def test_recording_needs_an_api_key(client, recorded_call):
    response = client.get(f"/api/v1/calls/{recorded_call}/recording")
    assert response.status_code == 401
    assert response.get_json()["error"]["code"] == "unauthorized"
    wrong = client.get(f"/api/v1/calls/{recorded_call}/recording", headers={"Authorization": "Bearer gw_nope_x"})
    assert wrong.status_code == 401


@pytest.mark.usefixtures("configured")
def test_recording_of_another_store_is_not_found(client, db, clock, recorded_call):
    key = api_key(db, clock, ["south-ford"])
    response = client.get(f"/api/v1/calls/{recorded_call}/recording", headers={"Authorization": f"Bearer {key}"})
    assert response.status_code == 404
    assert response.get_json()["error"]["code"] == "not_found"


@pytest.mark.usefixtures("configured")
@pytest.mark.parametrize("stores", [["north-honda"], None], ids=["store-key", "group-key"])
def test_recording_is_streamed_by_the_gateway_to_an_authorised_key(client, db, clock, recorded_call, stores):
    key = api_key(db, clock, stores)
    response = client.get(f"/api/v1/calls/{recorded_call}/recording", headers={"Authorization": f"Bearer {key}"})
    assert response.status_code == 200
    assert response.mimetype == "audio/mpeg"
    assert response.data == AUDIO
    assert "Location" not in response.headers
    assert "127.0.0.1" not in str(response.headers)
    assert response.headers["Cache-Control"] == "private, no-store"


@pytest.mark.usefixtures("configured")
def test_recording_gone_from_the_provider_is_a_404(client, db, clock, twilio):
    sid = ring(twilio)
    nobody_answers(twilio, sid)
    record_action(twilio, sid, 14)
    missing = f"https://api.twilio.com/2010-04-01/Accounts/{'AC' + '1' * 32}/Recordings/{new_sid('RE')}"
    recording(twilio, sid, recording_sid=new_sid("RE"), url=missing)
    call_ends(twilio, sid)
    key = api_key(db, clock, None)
    response = client.get(f"/api/v1/calls/{only_call(db).id}/recording", headers={"Authorization": f"Bearer {key}"})
    assert response.status_code == 404


@pytest.mark.usefixtures("configured")
def test_recording_url_of_another_account_is_never_fetched(client, db, clock, twilio):
    sid = ring(twilio)
    nobody_answers(twilio, sid)
    record_action(twilio, sid, 14)
    recording(twilio, sid, recording_sid=new_sid("RE"), url="https://evil.example/2010-04-01/Accounts/AC"
              + "9" * 32 + "/Recordings/RE" + "a" * 32)
    call_ends(twilio, sid)
    key = api_key(db, clock, None)
    response = client.get(f"/api/v1/calls/{only_call(db).id}/recording", headers={"Authorization": f"Bearer {key}"})
    assert response.status_code == 404


@pytest.mark.usefixtures("configured")
def test_unknown_call_recording_is_not_found(client, db, clock):
    key = api_key(db, clock, None)
    response = client.get("/api/v1/calls/999999/recording", headers={"Authorization": f"Bearer {key}"})
    assert response.status_code == 404


def test_alert_rows_are_addressed_to_agents_not_the_customer(poster, db, configured):
    missed_call(poster)
    alerts = alert_rows(db)
    assert alerts
    assert all(a.contact_id is None and a.agent_id is not None for a in alerts)
    assert {a.to_number for a in alerts} <= {ALICE, "+12025550112", "+12025550113", DMITRI}
    assert CUSTOMER not in {a.to_number for a in alerts}
