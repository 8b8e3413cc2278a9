"""Voicemail: recording and transcription callbacks, the transcript's intent, recordings for users."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from flask import Flask
from sqlalchemy.orm import Session

from gateway import events
from gateway.models import Call, Lead


def init_app(app: Flask) -> None:
    from voicemail import views

    app.register_blueprint(views.blueprint)
    app.register_blueprint(views.api_blueprint)
    events.call_completed.connect(_call_completed, weak=False)


def _call_completed(sender: Session, *, lead: Lead, call: Call, now: datetime, **_: Any) -> None:
    from voicemail.services import attach_to_lead

    attach_to_lead(sender, call, lead, now)
