"""Voicemail: recordings and transcripts attached to calls and leads, the transcript's intent, recordings
for users (the provider's callbacks arrive through webhooks/voicemail.py)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from flask import Flask
from sqlalchemy.orm import Session

from gateway import events
from gateway.dashboard import timeline
from gateway.models import Call, Lead
from voicemail import views
from voicemail.services import attach_to_lead


def init_app(app: Flask) -> None:
    app.register_blueprint(views.api_blueprint)
    app.register_blueprint(views.page_blueprint)
    timeline.add_source(views.timeline_entries)
    events.call_completed.connect(on_call_completed, weak=False)


def on_call_completed(sender: Session, *, lead: Lead, call: Call, now: datetime, **_: Any) -> None:
    attach_to_lead(sender, call, lead, now)
