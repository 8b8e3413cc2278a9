"""The number health check's rows: when each store was last checked, and the problems already announced."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import ForeignKey, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from gateway.database import Base, utcnow


class HealthRun(Base):
    """One row per store: the daily check claims it with a conditional update on `checked_at`, so two
    workers never check a store twice in a day."""

    __tablename__ = "number_health_runs"

    store_id: Mapped[int] = mapped_column(ForeignKey("stores.id"), primary_key=True)
    checked_at: Mapped[datetime | None] = mapped_column()
    queued_at: Mapped[datetime | None] = mapped_column()  # the sweep handed the check to the queue


class KnownProblem(Base):
    """A problem the store's managers were told about; gone from here once the check stops finding it,
    so it is news again if it comes back."""

    __tablename__ = "number_health_problems"

    id: Mapped[int] = mapped_column(primary_key=True)
    key: Mapped[str] = mapped_column(String(200), unique=True)
    store_id: Mapped[int] = mapped_column(ForeignKey("stores.id"), index=True)
    kind: Mapped[str] = mapped_column(String(32))
    text: Mapped[str] = mapped_column(Text)
    first_seen_at: Mapped[datetime] = mapped_column(default=utcnow)
