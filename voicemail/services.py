"""Voicemail verbs: take the provider's recording and transcription callbacks in any order, attach them
to the call and its lead, and act on a transcript exactly once.

The callbacks can arrive before the call's own status callback has settled the call into a lead
(`Call.lead_id` is still empty then): the voicemail waits on the call, and `attach_to_lead` finishes
the work when the call is settled.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from gateway import events
from gateway.agents import priority
from gateway.calls.services import get_call, lead_of_call
from gateway.database import insert_ignoring_conflict, required
from gateway.leads import record_event
from gateway.models import Call, CallOutcome, Lead, WebhookEvent
from voicemail.intent import first_words, read_intent
from voicemail.models import RecordingStatus, Voicemail

log = logging.getLogger(__name__)

RECORDING_STATUSES = frozenset(s.value for s in RecordingStatus) - {RecordingStatus.PENDING.value}
TRANSCRIPTION_STATUSES = frozenset({"completed", "failed"})


@dataclass(frozen=True)
class RecordingCallback:
    call_sid: str
    status: str  # completed | absent | failed
    recording_sid: str | None
    recording_url: str | None
    duration: int | None
    error_code: int | None = None


@dataclass(frozen=True)
class TranscriptionCallback:
    call_sid: str
    status: str  # completed | failed
    transcription_sid: str | None
    text: str | None
    recording_sid: str | None = None
    recording_url: str | None = None


def voicemail_of_call(session: Session, call: Call, now: datetime) -> Voicemail:
    """The call's voicemail row, created once whichever callback comes first."""
    insert_ignoring_conflict(
        session,
        Voicemail,
        {
            "call_id": call.id,
            "lead_id": call.lead_id,
            "status": RecordingStatus.PENDING.value,
            "intents": [],
            "time_frames": [],
            "created_at": now,
            "updated_at": now,
        },
        ["call_id"],
    )
    return required(session.scalar(select(Voicemail).where(Voicemail.call_id == call.id)), f"voicemail {call.sid}")


def _first_time(session: Session, key: str, now: datetime) -> bool:
    """The webhook ledger: False when this exact callback was handled before (a provider retry)."""
    return insert_ignoring_conflict(session, WebhookEvent, {"key": key[:200], "received_at": now}, ["key"])


def record_recording(session: Session, callback: RecordingCallback, now: datetime) -> Voicemail | None:
    """The recording status callback. None when the call is unknown or the callback is a replay."""
    call = get_call(session, callback.call_sid)
    if call is None:
        log.warning("recording for unknown call %s", callback.call_sid)
        return None
    key = f"recording:{callback.call_sid}:{callback.recording_sid or '-'}:{callback.status}"
    if not _first_time(session, key, now):
        return None
    voicemail = voicemail_of_call(session, call, now)
    if voicemail.status == RecordingStatus.COMPLETED.value:
        return voicemail  # a late absent/failed callback for another take does not undo a recording
    voicemail.status = callback.status
    voicemail.recording_sid = callback.recording_sid or voicemail.recording_sid
    voicemail.duration = callback.duration
    voicemail.error_code = callback.error_code
    voicemail.updated_at = now
    if callback.status == RecordingStatus.COMPLETED.value:
        voicemail.recording_url = callback.recording_url or voicemail.recording_url
        if callback.duration and not call.voicemail_seconds:
            call.voicemail_seconds = callback.duration
    elif callback.status == RecordingStatus.ABSENT.value:
        # Silence: the caller reached the prompt and said nothing, so no voicemail was left.
        voicemail.recording_url = None
        call.voicemail_seconds = 0
        if call.outcome == CallOutcome.VOICEMAIL.value:
            call.outcome = CallOutcome.MISSED.value
    lead = lead_of_call(session, call)
    if lead is not None:
        voicemail.lead_id = lead.id
        priority.recompute(session, lead, now)
        if callback.status == RecordingStatus.FAILED.value:
            record_event(
                session, lead, "voicemail-failed", "The provider could not keep the voicemail's recording.", now
            )
    return voicemail


def record_transcription(session: Session, callback: TranscriptionCallback, now: datetime) -> Voicemail | None:
    """The transcription callback. None when the call is unknown or the callback is a replay."""
    call = get_call(session, callback.call_sid)
    if call is None:
        log.warning("transcription for unknown call %s", callback.call_sid)
        return None
    key = f"transcription:{callback.call_sid}:{callback.transcription_sid or '-'}:{callback.status}"
    if not _first_time(session, key, now):
        return None
    voicemail = voicemail_of_call(session, call, now)
    if voicemail.transcription_status == "completed":
        return voicemail
    voicemail.transcription_sid = callback.transcription_sid or voicemail.transcription_sid
    voicemail.transcription_status = callback.status
    text = (callback.text or "").strip()
    voicemail.transcript = text if callback.status == "completed" and text else None
    if voicemail.recording_sid is None and callback.recording_sid:
        voicemail.recording_sid = callback.recording_sid
    if voicemail.recording_url is None and callback.recording_url and voicemail.status != RecordingStatus.ABSENT:
        voicemail.recording_url = callback.recording_url
    voicemail.updated_at = now
    lead = lead_of_call(session, call)
    if lead is not None:
        voicemail.lead_id = lead.id
        handle_transcript(session, voicemail, call, lead, now)
    return voicemail


def attach_to_lead(session: Session, call: Call, lead: Lead, now: datetime) -> None:
    """The call was settled into a lead: a voicemail that came first joins it, its transcript is used."""
    voicemail = session.scalar(select(Voicemail).where(Voicemail.call_id == call.id))
    if voicemail is None:
        return
    voicemail.lead_id = lead.id
    if voicemail.transcription_status is not None:
        handle_transcript(session, voicemail, call, lead, now)


def handle_transcript(session: Session, voicemail: Voicemail, call: Call, lead: Lead, now: datetime) -> bool:
    """Intent, department hint, priority, the timeline and the voicemail_transcribed event, once."""
    claimed = session.execute(
        update(Voicemail)
        .where(Voicemail.id == voicemail.id, Voicemail.transcript_handled_at.is_(None))
        .values(transcript_handled_at=now)
    )
    if not getattr(claimed, "rowcount", 0):
        return False
    session.refresh(voicemail)
    if voicemail.transcription_status != "completed" or not voicemail.transcript:
        record_event(
            session,
            lead,
            "voicemail-untranscribed",
            "The voicemail could not be transcribed; listen to the recording.",
            now,
        )
        return True
    intent = read_intent(voicemail.transcript)
    voicemail.department_hint = intent.department
    voicemail.intents = list(intent.intents)
    voicemail.time_frames = list(intent.time_frames)
    record_event(
        session,
        lead,
        "voicemail-transcript",
        f'Voicemail: "{first_words(voicemail.transcript, 300)}"',
        now,
        {
            "call_id": call.id,
            "department_hint": intent.department,
            "intents": list(intent.intents),
            "time_frames": list(intent.time_frames),
        },
    )
    if intent.department is not None and intent.department != lead.department:
        record_event(
            session,
            lead,
            "department-hint",
            f"The voicemail sounds like a {intent.department} matter (the lead is in {lead.department}).",
            now,
            {"department": intent.department},
        )
    priority.recompute(session, lead, now, intents=intent.intents, time_frames=intent.time_frames)
    events.voicemail_transcribed.send(session, lead=lead, call=call, transcript=voicemail.transcript, now=now)
    return True


def playable(voicemail: Voicemail | None) -> bool:
    """A recording the gateway can fetch for a user."""
    return (
        voicemail is not None
        and voicemail.recording_url is not None
        and voicemail.status not in {RecordingStatus.ABSENT.value, RecordingStatus.FAILED.value}
    )


def voicemail_of(session: Session, call_id: int) -> Voicemail | None:
    return session.scalar(select(Voicemail).where(Voicemail.call_id == call_id))
