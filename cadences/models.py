"""Cadence enrolments and their steps: every scheduled text is a row with its due time.

Typed SQLAlchemy models only: no session, no Flask. The definitions (steps and triggers) are
`gateway.models.CadenceDefinition`, written by `gateway config apply`.
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum

from sqlalchemy import ForeignKey, Index, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from gateway.database import Base, utcnow


class EnrolmentStatus(StrEnum):
    ACTIVE = "active"
    STOPPED = "stopped"  # a reply, an opt-out, a person reached the customer, the lead moved on...
    COMPLETED = "completed"  # every step was dispatched or skipped


class StepStatus(StrEnum):
    SCHEDULED = "scheduled"  # waiting for due_at
    CLAIMED = "claimed"  # one worker turned it into a text (message_id); its send is under way
    DEFERRED = "deferred"  # the send guard moved the text to the next allowed time (quiet hours, caps)
    SENDING = "sending"  # an e-mail step's SMTP conversation is under way
    SENT = "sent"  # the provider took the text (the mail server took the e-mail; the task was opened)
    SKIPPED = "skipped"  # never sent: see skip_reason (stopped, past_due, refused, failed)
    UNKNOWN = "unknown"  # the worker died mid-send: maybe sent, never resent blindly


class StopReason(StrEnum):
    REPLY = "reply"
    OPT_OUT = "opt_out"
    HUMAN_CONTACT = "human_contact"
    STATUS = "status"  # the lead moved to a status that ends this cadence
    APPOINTMENT_CANCELLED = "appointment_cancelled"
    API = "api"
    REPLACED = "replaced"  # a newer request from the customer (a form, an ADF lead) started its own cadence


class SkipReason(StrEnum):
    STOPPED = "stopped"  # the enrolment stopped before the step was due
    PAST_DUE = "past_due"  # an appointment reminder whose moment had passed: never sent late
    REFUSED = "refused"  # the send guard refused the text (opted out, not textable...)
    FAILED = "failed"  # the provider refused the text (the mail server refused the e-mail)
    NO_CONSENT = "no_consent"  # a text to a lead from a form or ADF that gave no SMS consent
    OPTED_OUT = "opted_out"  # the customer opted out of this step's channel (the others go on)
    NO_ADDRESS = "no_address"  # an e-mail step for a customer with no address, a text with no phone


# How a cadence was started: by a missed call, by a lead from a form or ADF (an inquiry), or by the lead
# status named in its trigger.
TRIGGER_MISSED_CALL = "missed_call"
TRIGGER_INQUIRY = "inquiry"


class Channel(StrEnum):
    SMS = "sms"
    EMAIL = "email"
    CALL = "call"  # a call-attempt task for the owner, announced by the owner's alert


class CadenceEnrolment(Base):
    """One lead going through one cadence."""

    __tablename__ = "cadence_enrolments"

    id: Mapped[int] = mapped_column(primary_key=True)
    lead_id: Mapped[int] = mapped_column(ForeignKey("leads.id"), index=True)
    contact_id: Mapped[int] = mapped_column(ForeignKey("contacts.id"), index=True)
    cadence_key: Mapped[str] = mapped_column(String(64))
    trigger: Mapped[str] = mapped_column(String(32))  # "missed_call" or a lead status
    status: Mapped[str] = mapped_column(String(16), default=EnrolmentStatus.ACTIVE.value)
    # "<lead>:<cadence>" while active, NULL afterwards: never two live copies of one cadence for a
    # lead, enforced by the database even when two triggers race.
    active_key: Mapped[str | None] = mapped_column(String(100), unique=True)
    stop_reason: Mapped[str | None] = mapped_column(String(32))
    stop_detail: Mapped[str | None] = mapped_column(Text)
    from_number: Mapped[str] = mapped_column(String(32))  # the tracked number the texts come from
    started_at: Mapped[datetime] = mapped_column()
    anchor: Mapped[datetime | None] = mapped_column()  # the appointment time relative steps count from
    stopped_at: Mapped[datetime | None] = mapped_column()
    completed_at: Mapped[datetime | None] = mapped_column()
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class CadenceStep(Base):
    """One scheduled text of an enrolment. (enrolment, step_index) is unique: never two copies."""

    __tablename__ = "cadence_steps"
    __table_args__ = (
        UniqueConstraint("enrolment_id", "step_index"),
        Index("ix_cadence_steps_status_due_at", "status", "due_at"),
        Index("ix_cadence_steps_enrolment_status", "enrolment_id", "status"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    enrolment_id: Mapped[int] = mapped_column(ForeignKey("cadence_enrolments.id"))
    step_index: Mapped[int] = mapped_column()
    relative_to: Mapped[str] = mapped_column(String(16), default="start")  # start | appointment
    offset_seconds: Mapped[int] = mapped_column()
    # The template as configured when the lead was enrolled; rendered when the step is dispatched, so
    # {agent} names the owner of that moment.
    template: Mapped[str] = mapped_column(Text)
    channel: Mapped[str] = mapped_column(String(8), default=Channel.SMS.value)
    subject: Mapped[str | None] = mapped_column(Text)  # e-mail steps: the subject template
    attempts: Mapped[int] = mapped_column(default=0)  # e-mail steps: SMTP attempts so far
    last_error: Mapped[str | None] = mapped_column(Text)
    sent_at: Mapped[datetime | None] = mapped_column()
    due_at: Mapped[datetime] = mapped_column()
    status: Mapped[str] = mapped_column(String(16), default=StepStatus.SCHEDULED.value)
    skip_reason: Mapped[str | None] = mapped_column(String(32))
    message_id: Mapped[int | None] = mapped_column(ForeignKey("messages.id"), index=True)
    # When the sweep last handed it to the queue; the sweep leaves it alone for a while after.
    enqueued_at: Mapped[datetime | None] = mapped_column()
    claimed_at: Mapped[datetime | None] = mapped_column()
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
