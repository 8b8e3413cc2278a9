"""The shared models: store, agent, tracked number, contact, lead, task, call, message, API key, ledgers.

Typed SQLAlchemy models only: no session, no Flask. Times are timezone-aware UTC.
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import ForeignKey, Index, String, Text, UniqueConstraint, false, text
from sqlalchemy.orm import Mapped, mapped_column, relationship

from gateway.database import Base, utcnow


class Role(StrEnum):
    AGENT = "agent"
    MANAGER = "manager"


class LeadStatus(StrEnum):
    NEW = "new"
    ATTEMPTING_CONTACT = "attempting_contact"
    CONTACTED = "contacted"
    APPOINTMENT_SET = "appointment_set"
    APPOINTMENT_CONFIRMED = "appointment_confirmed"
    NO_SHOW = "no_show"
    CLOSED_WON = "closed_won"
    CLOSED_LOST = "closed_lost"

    @property
    def is_open(self) -> bool:
        return self not in {LeadStatus.CLOSED_WON, LeadStatus.CLOSED_LOST}


class TaskStatus(StrEnum):
    OPEN = "open"
    DONE = "done"
    CANCELLED = "cancelled"


class TaskKind(StrEnum):
    CALLBACK = "callback"  # a missed or abandoned call
    REPLY = "reply"  # an inbound text
    REVIEW = "review"  # something a person must look at (plain-language opt-out, unknown outcome)
    CALL = "call"  # a call attempt a cadence asks the owner to make, due at the step's time


class CallOutcome(StrEnum):
    RINGING = "ringing"
    ANSWERED = "answered"
    MISSED = "missed"  # rang out, nobody accepted, no voicemail
    ABANDONED = "abandoned"  # caller hung up while it was ringing
    VOICEMAIL = "voicemail"
    AFTER_HOURS = "after_hours"
    BUSY = "busy"
    FAILED = "failed"
    # The database was down when the call came in: it was forwarded to the store's main line,
    # so whether a person answered is not known. It still becomes a lead with a review task.
    FORWARDED = "forwarded"

    @property
    def unanswered(self) -> bool:
        return self not in {CallOutcome.RINGING, CallOutcome.ANSWERED, CallOutcome.FORWARDED}


class Direction(StrEnum):
    INBOUND = "inbound"
    OUTBOUND = "outbound"


class MessageStatus(StrEnum):
    PENDING = "pending"  # durable, waiting for the worker (or for its send_after time)
    SENDING = "sending"  # claimed by a worker; the provider has not answered yet
    UNKNOWN = "unknown"  # claimed and never answered (worker died): never resent blindly
    QUEUED = "queued"  # accepted by the provider
    SENT = "sent"
    DELIVERED = "delivered"
    UNDELIVERED = "undelivered"
    FAILED = "failed"
    REFUSED = "refused"  # the send guard said no
    RECEIVED = "received"  # inbound
    SANDBOX = "sandbox"  # recorded, not sent (no Twilio credentials)


class RingStrategy(StrEnum):
    SIMULTANEOUS = "simultaneous"
    SEQUENTIAL = "sequential"
    ROUND_ROBIN = "round-robin"


class Store(Base):
    __tablename__ = "stores"

    id: Mapped[int] = mapped_column(primary_key=True)
    key: Mapped[str] = mapped_column(String(64), unique=True)
    name: Mapped[str] = mapped_column(String(200))
    timezone: Mapped[str] = mapped_column(String(64))
    main_line: Mapped[str] = mapped_column(String(20))
    # {"sales": {"mon": [["09:00", "20:00"]], "sun": []}, ...}
    hours: Mapped[dict[str, Any]] = mapped_column(default=dict)
    response_sla_seconds: Mapped[int] = mapped_column(default=300)
    after_hours_grace_seconds: Mapped[int] = mapped_column(default=1800)
    # [{"type": "adf-http", "url": ...}, ...]
    crm: Mapped[list[Any]] = mapped_column(default=list)
    # Automated texts to a caller whose caller ID failed SHAKEN/STIR verification (off: it may be spoofed).
    text_unverified_callers: Mapped[bool] = mapped_column(default=False, server_default=false())
    # Played to the caller before an agent is bridged on a recorded number; None: the default wording.
    recording_disclosure: Mapped[str | None] = mapped_column(Text)
    # Addresses whose mail is this store's ADF intake (besides <store-key>@any domain), lower-cased.
    intake_emails: Mapped[list[Any]] = mapped_column(default=list)
    # The From of e-mail to customers (cadence e-mail steps, the acknowledgement of a web lead).
    email_from: Mapped[str | None] = mapped_column(String(254))
    # Lead source -> cadence key for leads from forms and ADF; "default" for any other source.
    lead_cadences: Mapped[dict[str, Any]] = mapped_column(default=dict)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)


class Agent(Base):
    __tablename__ = "agents"

    id: Mapped[int] = mapped_column(primary_key=True)
    key: Mapped[str] = mapped_column(String(64), unique=True)
    name: Mapped[str] = mapped_column(String(200))
    phone: Mapped[str] = mapped_column(String(20))
    email: Mapped[str | None] = mapped_column(String(254))
    store_id: Mapped[int] = mapped_column(ForeignKey("stores.id"))
    departments: Mapped[list[Any]] = mapped_column(default=list)
    role: Mapped[str] = mapped_column(String(16), default=Role.AGENT.value)
    # Like Store.hours but one schedule: {"mon": [["09:00", "17:00"]], ...}; None = the department hours.
    schedule: Mapped[dict[str, Any] | None] = mapped_column(default=None)
    active: Mapped[bool] = mapped_column(default=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)

    store: Mapped[Store] = relationship(lazy="joined")


class TrackedNumber(Base):
    __tablename__ = "tracked_numbers"

    id: Mapped[int] = mapped_column(primary_key=True)
    number: Mapped[str] = mapped_column(String(20), unique=True)
    store_id: Mapped[int] = mapped_column(ForeignKey("stores.id"))
    department: Mapped[str] = mapped_column(String(32))
    source: Mapped[str] = mapped_column(String(100))
    source_weight: Mapped[int] = mapped_column(default=0)
    ring: Mapped[list[Any]] = mapped_column(default=list)  # agent keys, in order
    strategy: Mapped[str] = mapped_column(String(16), default=RingStrategy.SIMULTANEOUS.value)
    ring_timeout_seconds: Mapped[int] = mapped_column(default=18)
    screen: Mapped[bool] = mapped_column(default=True)
    record: Mapped[bool] = mapped_column(default=False)
    cadence_key: Mapped[str | None] = mapped_column(String(64))
    prompts: Mapped[dict[str, Any]] = mapped_column(default=dict)  # greeting, voicemail, whisper
    round_robin_next: Mapped[int] = mapped_column(default=0)
    provider_sid: Mapped[str | None] = mapped_column(String(64))
    # False once the number leaves the configuration file; its calls and leads keep pointing at it.
    active: Mapped[bool] = mapped_column(default=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)

    store: Mapped[Store] = relationship(lazy="joined")


class Contact(Base):
    """One per customer phone for the whole dealer group: opt-out lives here, so one STOP stops all."""

    __tablename__ = "contacts"

    id: Mapped[int] = mapped_column(primary_key=True)
    # E.164; None for a withheld caller (each withheld call gets a contact of its own).
    phone: Mapped[str | None] = mapped_column(String(20), unique=True)
    first_name: Mapped[str | None] = mapped_column(String(100))
    last_name: Mapped[str | None] = mapped_column(String(100))
    opted_out: Mapped[bool] = mapped_column(default=False)
    opted_out_at: Mapped[datetime | None] = mapped_column()
    opt_out_number: Mapped[str | None] = mapped_column(String(20))  # the tracked number it was sent to
    opt_out_source: Mapped[str | None] = mapped_column(String(64))  # keyword, provider-21610, ...
    textable: Mapped[bool] = mapped_column(default=True)
    not_textable_reason: Mapped[str | None] = mapped_column(String(200))
    automation_paused: Mapped[bool] = mapped_column(default=False)
    # Lower-cased; not unique: one person may reach us from two phones with one address.
    email: Mapped[str | None] = mapped_column(String(254), index=True)
    # E-mail opt-out (the one-click unsubscribe), kept apart from the SMS opt-out above.
    email_opted_out: Mapped[bool] = mapped_column(default=False)
    email_opted_out_at: Mapped[datetime | None] = mapped_column()
    # The SMS consent a form recorded: {"granted", "text", "at", "ip", "lead", "recorded_at"}; None: none given.
    sms_consent: Mapped[dict[str, Any] | None] = mapped_column(default=None)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)

    @property
    def sms_consented(self) -> bool:
        return bool(self.sms_consent and self.sms_consent.get("granted"))


class Lead(Base):
    __tablename__ = "leads"
    __table_args__ = (
        Index("ix_leads_store_status", "store_id", "status"),
        # GET /api/v1/metrics: one store's leads in a time window (migration 0005).
        Index(
            "ix_leads_store_created", "store_id", "created_at",
            postgresql_include=["status", "source", "first_response_at", "leaked_at"],
        ),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    code: Mapped[str] = mapped_column(String(16), unique=True)  # short, human, e.g. "K7Q2M"
    contact_id: Mapped[int] = mapped_column(ForeignKey("contacts.id"), index=True)
    store_id: Mapped[int] = mapped_column(ForeignKey("stores.id"))
    # "<contact>:<store>" while the lead is open, NULL once closed: at most one open lead per phone
    # per store, enforced by the database even when two calls race.
    open_key: Mapped[str | None] = mapped_column(String(64), unique=True)
    department: Mapped[str] = mapped_column(String(32))
    source: Mapped[str | None] = mapped_column(String(100))
    tracked_number_id: Mapped[int | None] = mapped_column(ForeignKey("tracked_numbers.id"))
    # The number the customer reached, E.164: texts to the customer go out from it.
    tracked_number: Mapped[str | None] = mapped_column(String(20))
    status: Mapped[str] = mapped_column(String(32), default=LeadStatus.NEW.value)
    owner_id: Mapped[int | None] = mapped_column(ForeignKey("agents.id"))
    priority: Mapped[int] = mapped_column(default=0)
    priority_reasons: Mapped[list[Any]] = mapped_column(default=list)
    appointment_at: Mapped[datetime | None] = mapped_column()
    first_response_at: Mapped[datetime | None] = mapped_column()
    last_contact_at: Mapped[datetime | None] = mapped_column()  # the customer's latest call or text
    leaked_at: Mapped[datetime | None] = mapped_column()
    leak_reason: Mapped[str | None] = mapped_column(String(64))
    # The lead's latest call came with a caller ID that failed SHAKEN/STIR verification.
    caller_id_unverified: Mapped[bool] = mapped_column(default=False, server_default=false())
    created_at: Mapped[datetime] = mapped_column(default=utcnow, index=True)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)
    closed_at: Mapped[datetime | None] = mapped_column()

    contact: Mapped[Contact] = relationship(lazy="joined")
    store: Mapped[Store] = relationship(lazy="joined")
    owner: Mapped[Agent | None] = relationship(lazy="joined")


class Task(Base):
    __tablename__ = "tasks"
    __table_args__ = (
        Index("ix_tasks_status_due", "status", "due_at"),
        Index(
            "ix_tasks_open_due", "due_at",
            postgresql_where=text("status = 'open'"), sqlite_where=text("status = 'open'"),
        ),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    lead_id: Mapped[int] = mapped_column(ForeignKey("leads.id"), index=True)
    kind: Mapped[str] = mapped_column(String(32))
    owner_id: Mapped[int | None] = mapped_column(ForeignKey("agents.id"))
    due_at: Mapped[datetime] = mapped_column()
    status: Mapped[str] = mapped_column(String(16), default=TaskStatus.OPEN.value)
    note: Mapped[str | None] = mapped_column(Text)
    escalation_level: Mapped[int] = mapped_column(default=0)
    escalated_at: Mapped[datetime | None] = mapped_column()
    completed_at: Mapped[datetime | None] = mapped_column()
    completed_by: Mapped[str | None] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)

    lead: Mapped[Lead] = relationship(lazy="joined")
    owner: Mapped[Agent | None] = relationship(lazy="joined")


class Call(Base):
    __tablename__ = "calls"
    __table_args__ = (
        Index("ix_calls_from_number_started", "from_number", "started_at"),
        # GET /api/v1/metrics and the KPI page: calls of one store, or of every store, in a time window, by
        # outcome and source (migrations 0005, 0010).
        Index(
            "ix_calls_store_started", "store_id", "started_at",
            postgresql_include=["outcome", "direction", "kind", "tracked_number_id"],
        ),
        Index(
            "ix_calls_started_covering", "started_at",
            postgresql_include=["store_id", "outcome", "direction", "kind", "tracked_number_id"],
        ),
        # GET /api/v1/metrics counts the calls found by reconciliation: few, so a small partial index.
        Index(
            "ix_calls_reconciled_started", "started_at",
            postgresql_where=text("reconciled"), sqlite_where=text("reconciled"),
        ),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    sid: Mapped[str] = mapped_column(String(64), unique=True)
    parent_sid: Mapped[str | None] = mapped_column(String(64))
    lead_id: Mapped[int | None] = mapped_column(ForeignKey("leads.id"), index=True)
    store_id: Mapped[int | None] = mapped_column(ForeignKey("stores.id"))
    tracked_number_id: Mapped[int | None] = mapped_column(ForeignKey("tracked_numbers.id"))
    from_number: Mapped[str | None] = mapped_column(String(32))  # E.164, None when withheld
    to_number: Mapped[str] = mapped_column(String(32))
    direction: Mapped[str] = mapped_column(String(16), default=Direction.INBOUND.value)
    kind: Mapped[str] = mapped_column(String(16), default="customer")  # customer | click_to_call
    status: Mapped[str] = mapped_column(String(16), default="ringing")  # the provider's CallStatus
    outcome: Mapped[str] = mapped_column(String(16), default=CallOutcome.RINGING.value)
    after_hours: Mapped[bool] = mapped_column(default=False)
    dial_step: Mapped[int] = mapped_column(default=0)  # which leg of a sequential plan is ringing
    ringing_agents: Mapped[list[Any]] = mapped_column(default=list)  # agent keys of the current step
    answered_by_id: Mapped[int | None] = mapped_column(ForeignKey("agents.id"))
    accepted_at: Mapped[datetime | None] = mapped_column()  # the agent pressed 1
    voicemail_started: Mapped[bool] = mapped_column(default=False)  # the caller reached the prompt
    voicemail_seconds: Mapped[int | None] = mapped_column()  # length of the recording, when one was left
    # The provider's SHAKEN/STIR check of the caller ID failed (StirVerstat TN-Validation-Failed...).
    caller_id_unverified: Mapped[bool] = mapped_column(default=False, server_default=false())
    duration: Mapped[int | None] = mapped_column()
    started_at: Mapped[datetime] = mapped_column(default=utcnow)
    ended_at: Mapped[datetime | None] = mapped_column()
    # Set once, by the conditional update that claims the "call ended" work: exactly once.
    processed_at: Mapped[datetime | None] = mapped_column()
    # Settled from the provider's own record because its webhooks never came (gateway/reconcile/).
    reconciled: Mapped[bool] = mapped_column(default=False, server_default=false())
    created_at: Mapped[datetime] = mapped_column(default=utcnow)

    answered_by: Mapped[Agent | None] = relationship(lazy="joined")


class Message(Base):
    """A text in or out. Outbound texts are written here first (pending) and sent by the worker."""

    __tablename__ = "messages"
    __table_args__ = (
        Index("ix_messages_status_send_after", "status", "send_after"),
        Index("ix_messages_to_number_sent_at", "to_number", "sent_at"),
        Index("ix_messages_contact_direction_created", "contact_id", "direction", "created_at"),
        Index(
            "ix_messages_reconciled_created", "created_at",
            postgresql_where=text("reconciled"), sqlite_where=text("reconciled"),
        ),
        # The workspace's inbox: one store's recent texts by lead, read from the index alone (migration 0010).
        Index(
            "ix_messages_store_created", "store_id", "created_at",
            postgresql_include=["id", "lead_id", "direction", "kind", "agent_id"],
        ),
        # ... and every store's (migration 0011).
        Index(
            "ix_messages_created_at", "created_at",
            postgresql_include=["lead_id", "id", "direction", "kind", "agent_id"],
        ),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    sid: Mapped[str | None] = mapped_column(String(64), unique=True)
    lead_id: Mapped[int | None] = mapped_column(ForeignKey("leads.id"), index=True)
    contact_id: Mapped[int | None] = mapped_column(ForeignKey("contacts.id"))
    agent_id: Mapped[int | None] = mapped_column(ForeignKey("agents.id"))  # alerts and agent texts
    store_id: Mapped[int | None] = mapped_column(ForeignKey("stores.id"))
    direction: Mapped[str] = mapped_column(String(16))
    # customer | cadence | alert | relay | api | help | keyword
    kind: Mapped[str] = mapped_column(String(16), default="customer")
    automated: Mapped[bool] = mapped_column(default=False)
    # It answers the customer's own call or text (a cadence's first step, a person's reply): only such a
    # text may go at once in quiet hours, within compliance.REPLY_GRACE of that contact.
    answers_contact: Mapped[bool] = mapped_column(default=False, server_default=false())
    from_number: Mapped[str] = mapped_column(String(32))
    to_number: Mapped[str] = mapped_column(String(32))
    body: Mapped[str] = mapped_column(Text, default="")
    segments: Mapped[int] = mapped_column(default=1)
    media_urls: Mapped[list[Any]] = mapped_column(default=list)
    status: Mapped[str] = mapped_column(String(16))
    refusal_code: Mapped[str | None] = mapped_column(String(32))  # why the send guard refused or deferred
    attempts: Mapped[int] = mapped_column(default=0)
    error_code: Mapped[int | None] = mapped_column()
    error_message: Mapped[str | None] = mapped_column(Text)
    send_after: Mapped[datetime | None] = mapped_column()
    claimed_at: Mapped[datetime | None] = mapped_column()
    sent_at: Mapped[datetime | None] = mapped_column()
    # Free-form link back to what made it (e.g. "cadence-step:42"), unique so a retry cannot add twice.
    origin: Mapped[str | None] = mapped_column(String(100), unique=True)
    # An inbound text found in the provider's log whose webhook never came (gateway/reconcile/).
    reconciled: Mapped[bool] = mapped_column(default=False, server_default=false())
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)


class ApiKey(Base):
    __tablename__ = "api_keys"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(100))
    prefix: Mapped[str] = mapped_column(String(16))
    key_hash: Mapped[str] = mapped_column(String(128), unique=True)
    stores: Mapped[list[Any] | None] = mapped_column()  # store keys; None = every store
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    revoked_at: Mapped[datetime | None] = mapped_column()
    last_used_at: Mapped[datetime | None] = mapped_column()


class WebhookEvent(Base):
    """The ledger of provider webhooks already handled: the same event twice is done once."""

    __tablename__ = "webhook_events"
    __table_args__ = (UniqueConstraint("key"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    key: Mapped[str] = mapped_column(String(200))
    received_at: Mapped[datetime] = mapped_column(default=utcnow)


class CadenceDefinition(Base):
    """A cadence as configured: its steps and triggers. Enrolments live in the cadences package."""

    __tablename__ = "cadence_definitions"

    id: Mapped[int] = mapped_column(primary_key=True)
    key: Mapped[str] = mapped_column(String(64), unique=True)
    # [{"after": 0, "text": "...", "relative_to": "start" | "appointment"}, ...], offsets in seconds
    steps: Mapped[list[Any]] = mapped_column(default=list)
    # e.g. {"status": "appointment_set"}: enrol when a lead moves to that status
    trigger: Mapped[dict[str, Any] | None] = mapped_column(default=None)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)


class LeadEvent(Base):
    """A line in a lead's timeline that no other row tells (a cadence stopped, an owner changed...)."""

    __tablename__ = "lead_events"

    id: Mapped[int] = mapped_column(primary_key=True)
    lead_id: Mapped[int] = mapped_column(ForeignKey("leads.id"), index=True)
    kind: Mapped[str] = mapped_column(String(64))
    text: Mapped[str] = mapped_column(Text)
    data: Mapped[dict[str, Any]] = mapped_column(default=dict)
    at: Mapped[datetime] = mapped_column(default=utcnow)


class SignInFailure(Base):
    """A failed sign-in or API key from an address (gateway/web.py): the per-address limits."""

    __tablename__ = "sign_in_failures"
    __table_args__ = (Index("ix_sign_in_failures_address_at", "address", "at"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    address: Mapped[str] = mapped_column(String(64))
    kind: Mapped[str] = mapped_column(String(16))  # code | phone | key | api_key
    at: Mapped[datetime] = mapped_column(default=utcnow)
