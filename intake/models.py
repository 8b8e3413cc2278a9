"""What the intake received: one row per lead it took in (a form, an ADF prospect) and per e-mail it
could not read. Typed SQLAlchemy models only: no session, no Flask."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import ForeignKey, LargeBinary, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from gateway.database import Base, utcnow


class IntakeChannel(StrEnum):
    WEB = "web"  # POST /api/v1/leads
    ADF_HTTP = "adf-http"  # POST /api/v1/intake/adf
    ADF_EMAIL = "adf-email"  # the intake SMTP server


class IntakeRecord(Base):
    """One lead taken in. `dedupe_key` ("web:<external_id>", "adf:<source>/<id>") is unique per store, so
    the same form or prospect sent twice (a retry, a resend) finds the first one and changes nothing."""

    __tablename__ = "intake_records"
    __table_args__ = (UniqueConstraint("store_id", "dedupe_key"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    store_id: Mapped[int] = mapped_column(ForeignKey("stores.id"))
    channel: Mapped[str] = mapped_column(String(16))
    dedupe_key: Mapped[str | None] = mapped_column(String(300))
    lead_id: Mapped[int | None] = mapped_column(ForeignKey("leads.id"), index=True)
    created: Mapped[bool] = mapped_column(default=True)  # False: it joined an open lead
    # The inquiry as received, normalised (names, phone, e-mail, vehicle, message, consent, ids).
    data: Mapped[dict[str, Any]] = mapped_column(default=dict)
    received_at: Mapped[datetime] = mapped_column(default=utcnow)


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
