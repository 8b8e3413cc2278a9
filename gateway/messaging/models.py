"""The ledger of text status callbacks: one row per (message SID, status), applied once.

The provider can call back before the send job has written the SID it was given; such a callback is
kept here unapplied and applied as soon as the SID is recorded (or by the sweep).
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from gateway.database import Base, utcnow


class MessageStatusCallback(Base):
    __tablename__ = "message_status_callbacks"
    __table_args__ = (UniqueConstraint("sid", "status"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    sid: Mapped[str] = mapped_column(String(64))
    status: Mapped[str] = mapped_column(String(32))  # the provider's MessageStatus, as sent
    error_code: Mapped[int | None] = mapped_column()
    received_at: Mapped[datetime] = mapped_column(default=utcnow)
    # None while no message with this SID is known (the callback beat the send job's commit).
    applied_at: Mapped[datetime | None] = mapped_column(index=True)
