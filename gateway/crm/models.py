"""The CRM outbox: one row per event per CRM destination, written in the transaction of the change.

Typed SQLAlchemy models only: no session, no Flask. Times are timezone-aware UTC.
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import ColumnElement, ForeignKey, Index, LargeBinary, String, Text, literal_column, text
from sqlalchemy.orm import Mapped, mapped_column

from gateway.database import Base, utcnow


class DeliveryStatus(StrEnum):
    PENDING = "pending"  # waiting for its turn (next_attempt_at, or an older delivery of its stream)
    DELIVERING = "delivering"  # claimed by a worker; the CRM has not answered yet
    DELIVERED = "delivered"
    DEAD = "dead"  # gave up: refused outright, or still failing when the retry window closed

    @property
    def unfinished(self) -> bool:
        return self in {DeliveryStatus.PENDING, DeliveryStatus.DELIVERING}


class DestinationKind(StrEnum):
    ADF_HTTP = "adf-http"
    ADF_EMAIL = "adf-email"
    WEBHOOK = "webhook"


# The partial indexes' conditions, written as the queries write them (so both databases use the indexes).
PENDING_ONLY = "status = 'pending'"
UNFINISHED_ONLY = "status IN ('pending', 'delivering')"


class CrmDelivery(Base):
    """One body for one CRM destination. The body is rendered when the event happens and never again,
    so a retry a day later tells the CRM what was true then, byte for byte."""

    __tablename__ = "crm_deliveries"
    __table_args__ = (
        # The sweep: due pending rows, oldest first.
        Index("ix_crm_deliveries_status_next", "status", "next_attempt_at"),
        # Per-lead ordering: "is an older delivery of this stream unfinished?"
        Index("ix_crm_deliveries_stream_id", "stream", "id"),
        # The claim and the sweep read only unfinished rows, a few among the millions delivered (whose
        # payloads make the table wide): these two cover them without touching the rest.
        Index(
            "ix_crm_deliveries_pending", "next_attempt_at", "id",
            postgresql_where=text(PENDING_ONLY), sqlite_where=text(PENDING_ONLY),
        ),
        Index(
            "ix_crm_deliveries_unfinished_stream", "stream", "id",
            postgresql_where=text(UNFINISHED_ONLY), sqlite_where=text(UNFINISHED_ONLY),
        ),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    store_id: Mapped[int] = mapped_column(ForeignKey("stores.id"))
    lead_id: Mapped[int | None] = mapped_column(ForeignKey("leads.id"), index=True)
    # Where it goes: the position in Store.crm when written, its type and its URL or e-mail address.
    destination_index: Mapped[int] = mapped_column()
    kind: Mapped[str] = mapped_column(String(16))
    target: Mapped[str] = mapped_column(String(500))
    # Deliveries of one lead to one destination, delivered strictly in id order.
    stream: Mapped[str] = mapped_column(String(64))
    event: Mapped[str] = mapped_column(String(64))  # lead.created, call.completed, ...
    content_type: Mapped[str] = mapped_column(String(64))
    payload: Mapped[bytes] = mapped_column(LargeBinary)
    # Sent as the Idempotency-Key header (and the e-mail's Message-ID): receivers drop repeats.
    idempotency_key: Mapped[str] = mapped_column(String(64), unique=True)
    status: Mapped[str] = mapped_column(String(16), default=DeliveryStatus.PENDING.value)
    attempts: Mapped[int] = mapped_column(default=0)
    next_attempt_at: Mapped[datetime] = mapped_column(default=utcnow)
    # Retryable failures are retried until then; a replay opens a new window.
    retry_until: Mapped[datetime] = mapped_column()
    last_error: Mapped[str | None] = mapped_column(Text)
    claimed_at: Mapped[datetime | None] = mapped_column()
    # The worker process that claimed it (gateway.jobs.process_name); None outside `gateway worker`.
    claimed_by: Mapped[str | None] = mapped_column(String(80))
    # When the sweep last handed it to Redis (so it does not pile up copies of the same job).
    queued_at: Mapped[datetime | None] = mapped_column()
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    delivered_at: Mapped[datetime | None] = mapped_column()
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)


def pending(row: Any = CrmDelivery) -> ColumnElement[bool]:
    """`status = 'pending'` with the value in the SQL, not a bound parameter: only then do SQLite's planner
    and PostgreSQL's generic plans know they may use the partial index `ix_crm_deliveries_pending`."""
    result: ColumnElement[bool] = row.status == literal_column("'pending'")
    return result


def unfinished(row: Any = CrmDelivery) -> ColumnElement[bool]:
    """`status IN ('pending', 'delivering')`, for `ix_crm_deliveries_unfinished_stream` (see `pending`)."""
    result: ColumnElement[bool] = row.status.in_([literal_column("'pending'"), literal_column("'delivering'")])
    return result
