"""What the intake received: one row per lead it took in (a form, an ADF prospect) and per e-mail it
could not read. Typed SQLAlchemy models only: no session, no Flask."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import ForeignKey, Index, LargeBinary, String, Text, UniqueConstraint, text
from sqlalchemy.orm import Mapped, mapped_column

from gateway.database import Base, utcnow


class IntakeChannel(StrEnum):
    WEB = "web"  # POST /api/v1/leads
    ADF_HTTP = "adf-http"  # POST /api/v1/intake/adf
    ADF_EMAIL = "adf-email"  # the intake SMTP server


class IntakeRecord(Base):
    """One lead taken in. `dedupe_key` ("web:<external_id>", "adf:<source>/<id>") is unique per store, so
    the same form or prospect sent twice (a retry, a resend) finds the first one and changes nothing.

    A form's record gets its lead in the request. An ADF prospect's is stored first with `lead_id` NULL
    (pending) and built by the worker: `claimed_at` marks the worker building it (a claim this old is
    a dead worker's, taken again), `attempts` counts the claims, and `error` says why it could not be
    built (it is then behind a review task and no longer pending)."""

    __tablename__ = "intake_records"
    __table_args__ = (
        UniqueConstraint("store_id", "dedupe_key"),
        Index(
            "ix_intake_records_pending", "id",
            postgresql_where=text("lead_id IS NULL AND error IS NULL"),
            sqlite_where=text("lead_id IS NULL AND error IS NULL"),
        ),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    store_id: Mapped[int] = mapped_column(ForeignKey("stores.id"))
    channel: Mapped[str] = mapped_column(String(16))
    dedupe_key: Mapped[str | None] = mapped_column(String(300))
    lead_id: Mapped[int | None] = mapped_column(ForeignKey("leads.id"), index=True)
    created: Mapped[bool] = mapped_column(default=True)  # False: it joined an open lead
    # The inquiry as received, normalised (names, phone, e-mail, vehicle, message, consent, ids).
    data: Mapped[dict[str, Any]] = mapped_column(default=dict)
    received_at: Mapped[datetime] = mapped_column(default=utcnow)
    claimed_at: Mapped[datetime | None] = mapped_column()
    attempts: Mapped[int] = mapped_column(default=0)
    error: Mapped[str | None] = mapped_column(Text)


class IntakeMail(Base):
    """An e-mail the intake SMTP server took and could not turn into leads (no ADF, broken ADF): kept
    whole, behind a review task, so nothing that reached the intake address is dropped."""

    __tablename__ = "intake_mails"

    id: Mapped[int] = mapped_column(primary_key=True)
    store_id: Mapped[int] = mapped_column(ForeignKey("stores.id"))
    lead_id: Mapped[int | None] = mapped_column(ForeignKey("leads.id"), index=True)
    sender: Mapped[str | None] = mapped_column(String(320))
    subject: Mapped[str | None] = mapped_column(Text)
    message_id: Mapped[str | None] = mapped_column(String(998))
    problem: Mapped[str] = mapped_column(Text)
    raw: Mapped[bytes] = mapped_column(LargeBinary)
    received_at: Mapped[datetime] = mapped_column(default=utcnow)
