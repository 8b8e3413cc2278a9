"""The voicemail a caller left: the provider's recording and its transcript, one per call."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import ForeignKey, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from gateway.database import Base, utcnow


class RecordingStatus(StrEnum):
    PENDING = "pending"  # the transcript arrived before the recording's own callback
    COMPLETED = "completed"
    ABSENT = "absent"  # silence: the provider kept no recording
    FAILED = "failed"


class Voicemail(Base):
    __tablename__ = "voicemails"

    id: Mapped[int] = mapped_column(primary_key=True)
    call_id: Mapped[int] = mapped_column(ForeignKey("calls.id"), unique=True)
    # Set once the call is settled into a lead (a recording can arrive before that).
    lead_id: Mapped[int | None] = mapped_column(ForeignKey("leads.id"), index=True)
    recording_sid: Mapped[str | None] = mapped_column(String(64), unique=True)
    # The provider's media URL: fetched by the gateway for authorised users, never handed out.
    recording_url: Mapped[str | None] = mapped_column(Text)
    duration: Mapped[int | None] = mapped_column()
    status: Mapped[str] = mapped_column(String(16), default=RecordingStatus.PENDING.value)
    error_code: Mapped[int | None] = mapped_column()
    transcription_sid: Mapped[str | None] = mapped_column(String(64), unique=True)
    transcription_status: Mapped[str | None] = mapped_column(String(16))  # completed | failed
    transcript: Mapped[str | None] = mapped_column(Text)
    department_hint: Mapped[str | None] = mapped_column(String(32))
    intents: Mapped[list[Any]] = mapped_column(default=list)
    time_frames: Mapped[list[Any]] = mapped_column(default=list)
    # Claimed by a conditional update: the transcript is acted on (priority, alert) exactly once.
    transcript_handled_at: Mapped[datetime | None] = mapped_column()
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)
