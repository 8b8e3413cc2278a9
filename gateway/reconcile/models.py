"""How far each tracked number's provider log has been compared with the gateway's own."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import ForeignKey, String
from sqlalchemy.orm import Mapped, mapped_column

from gateway.database import Base, utcnow


class ReconcileMark(Base):
    """One tracked number's watermarks: every call that started, and every text sent to it, before
    these times has been seen in the provider's log and logged by the gateway (each pass lists again
    from a little earlier, so a record the provider lists late is still found)."""

    __tablename__ = "reconcile_marks"

    tracked_number_id: Mapped[int] = mapped_column(ForeignKey("tracked_numbers.id"), primary_key=True)
    calls_through: Mapped[datetime] = mapped_column()
    texts_through: Mapped[datetime] = mapped_column()
    # The last pass that listed this number, and what went wrong if it could not.
    checked_at: Mapped[datetime] = mapped_column(default=utcnow)
    last_error: Mapped[str | None] = mapped_column(String(500))
