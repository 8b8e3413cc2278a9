"""Helpers for the agent-loop tests: calls played step by step, voicemail callbacks, API keys, alerts."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select

from gateway.api.keys import create_key
from gateway.database import Database
from gateway.models import Agent, Lead, Message
from gateway.simulator import new_sid, play_call
from tests.support.config import CUSTOMER, SIMULTANEOUS

ALICE = "+12025550111"
BEN = "+12025550112"
CARA = "+12025550113"
DMITRI = "+12025550114"  # the north-honda manager (sales and service)
SAM = "+13125550111"  # south-ford
BASE = "https://gateway.example.test"


def missed_call(poster: Any, *, to: str = SIMULTANEOUS, caller: str = CUSTOMER, outcome: str = "no-answer",
                transcript: str = "") -> str:
    """Play a whole call through the simulator; returns its SID."""
    lines = list(play_call(poster, to=to, caller=caller, outcome=outcome, transcript=transcript))
    return lines[0].split()[1]


def ring(twilio: Any, *, to: str = SIMULTANEOUS, caller: str = CUSTOMER, sid: str | None = None) -> str:
    sid = sid or new_sid("CA")
    response = twilio.post(
        "/webhooks/voice/incoming", {"CallSid": sid, "From": caller, "To": to, "CallStatus": "ringing"}
    )
    assert response.status_code == 200, response.get_data(as_text=True)
    return sid


def nobody_answers(twilio: Any, sid: str, *, to: str = SIMULTANEOUS, caller: str = CUSTOMER) -> None:
    response = twilio.post(
        f"/webhooks/voice/dial-complete?call={sid}&step=0",
        {"CallSid": sid, "From": caller, "To": to, "CallStatus": "in-progress", "DialCallStatus": "no-answer"},
    )
    assert "<Record" in response.get_data(as_text=True)


def record_action(twilio: Any, sid: str, seconds: int, *, to: str = SIMULTANEOUS, caller: str = CUSTOMER) -> None:
    response = twilio.post(
        f"/webhooks/voice/voicemail?call={sid}",
        {"CallSid": sid, "From": caller, "To": to, "RecordingDuration": str(seconds), "Digits": "hangup"},
    )
    assert response.status_code == 200


def call_ends(twilio: Any, sid: str, *, to: str = SIMULTANEOUS, caller: str = CUSTOMER, duration: int = 40) -> Any:
    return twilio.post(
        "/webhooks/voice/status",
        {"CallSid": sid, "From": caller, "To": to, "CallStatus": "completed", "CallDuration": str(duration)},
    )


def recording(twilio: Any, sid: str, *, status: str = "completed", recording_sid: str | None = None,
              url: str | None = None, duration: int = 14) -> Any:
    params = {"CallSid": sid, "AccountSid": "AC" + "1" * 32, "RecordingStatus": status,
              "RecordingDuration": str(duration if status == "completed" else 0), "RecordingChannels": "1",
              "RecordingSource": "RecordVerb"}
    if recording_sid:
        params["RecordingSid"] = recording_sid
    if url:
        params["RecordingUrl"] = url
    return twilio.post(f"/webhooks/voicemail/recording?call={sid}", params)


def transcription(twilio: Any, sid: str, *, text: str = "", status: str = "completed",
                  recording_sid: str | None = None, transcription_sid: str | None = None) -> Any:
    params = {"CallSid": sid, "AccountSid": "AC" + "1" * 32, "TranscriptionStatus": status,
              "TranscriptionSid": transcription_sid or new_sid("TR"), "TranscriptionText": text}
    if recording_sid:
        params["RecordingSid"] = recording_sid
    return twilio.post(f"/webhooks/voicemail/transcription?call={sid}", params)


def api_key(db: Database, clock: Any, stores: list[str] | None) -> str:
    with db.session() as session:
        _, plaintext = create_key(session, "test", stores, clock.now())
    return plaintext


def only_lead(db: Database) -> Lead:
    with db.session() as session:
        return session.scalars(select(Lead)).one()


def agent(db: Database, key: str) -> Agent:
    with db.session() as session:
        return session.scalars(select(Agent).where(Agent.key == key)).one()


def texts_to(fake: Any, phone: str) -> list[dict[str, Any]]:
    """What the provider fake was asked to send to this phone, oldest first."""
    return [m for m in fake.messages if m.get("To") == phone]


def alert_rows(db: Database, agent_key: str | None = None) -> list[Message]:
    with db.session() as session:
        query = select(Message).where(Message.kind == "alert").order_by(Message.id)
        if agent_key is not None:
            query = query.join(Agent, Agent.id == Message.agent_id).where(Agent.key == agent_key)
        return list(session.scalars(query))
