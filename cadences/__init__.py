"""Timed text cadences (DESIGN.md flow 7): definitions from the configuration, enrolment on a missed
call or a lead status, durable exactly-once dispatch of due steps, and the stop rules.

`init_app` subscribes to the core's domain events, registers the sweeps and the API blueprint.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from flask import Flask
from sqlalchemy.orm import Session

from cadences import jobs, services
from cadences.models import Channel, StopReason
from gateway import events
from gateway.dashboard import timeline
from gateway.jobs import register_sweeper
from gateway.leads import Inquiry
from gateway.models import Call, Contact, Lead, Message


def on_contact_unanswered(session: Session, *, lead: Lead, call: Call, now: datetime, **_: Any) -> None:
    services.enrol_after_missed_call(session, lead, call, now)


def on_lead_updated(
    session: Session, *, lead: Lead, changes: dict[str, Any], now: datetime, at: datetime | None = None, **_: Any
) -> None:
    services.lead_changed(session, lead, changes, now, as_of=at)


def on_human_contact(
    session: Session, *, lead: Lead, reason: str, now: datetime, at: datetime | None = None, **_: Any
) -> None:
    services.stop_for_lead(
        session, lead, StopReason.HUMAN_CONTACT, now, reason, keep_appointments=True, started_by=at
    )


def on_message_received(
    session: Session, *, lead: Lead | None = None, message: Message, now: datetime, **_: Any
) -> None:
    contact_id = message.contact_id or (lead.contact_id if lead is not None else None)
    if contact_id is not None:
        services.stop_for_contact(session, contact_id, StopReason.REPLY, now, "the customer texted back")


def on_contact_opted_out(session: Session, *, contact: Contact, now: datetime, **_: Any) -> None:
    # Texts only: a cadence's e-mail and call steps go on; one with nothing else left stops.
    services.opt_out_channel(session, contact.id, Channel.SMS, now, contact.opt_out_source)


def on_lead_received(session: Session, *, lead: Lead, inquiry: Inquiry, now: datetime, **_: Any) -> None:
    services.enrol_after_inquiry(session, lead, inquiry.source, now)


def on_email_received(session: Session, *, contact: Contact, now: datetime, **_: Any) -> None:
    services.stop_for_contact(session, contact.id, StopReason.REPLY, now, "the customer e-mailed back")


def on_message_sent(session: Session, *, message: Message, now: datetime, **_: Any) -> None:
    services.mark_sent(session, message)


def init_app(app: Flask) -> None:
    from cadences import views

    events.contact_unanswered.connect(on_contact_unanswered, weak=False)
    events.lead_updated.connect(on_lead_updated, weak=False)
    events.human_contact.connect(on_human_contact, weak=False)
    events.message_received.connect(on_message_received, weak=False)
    events.contact_opted_out.connect(on_contact_opted_out, weak=False)
    events.message_sent.connect(on_message_sent, weak=False)
    events.lead_received.connect(on_lead_received, weak=False)
    events.email_received.connect(on_email_received, weak=False)
    register_sweeper("cadence-due-steps", jobs.enqueue_due_steps)
    register_sweeper("cadence-step-outcomes", jobs.sync_step_outcomes)
    register_sweeper("cadence-emails", jobs.enqueue_due_emails)
    app.register_blueprint(views.blueprint)
    app.register_blueprint(views.pages)
    app.register_blueprint(views.page_blueprint)
    timeline.add_source(views.timeline_entries)
    views.describe_api()
