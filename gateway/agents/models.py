"""Agent-loop rows: the click-to-call links already used (single use, enforced by the database)."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import ForeignKey, String
from sqlalchemy.orm import Mapped, mapped_column

from gateway.database import Base, utcnow


class ClickToCallUse(Base):
    __tablename__ = "click_to_call_uses"

    id: Mapped[int] = mapped_column(primary_key=True)
    nonce: Mapped[str] = mapped_column(String(64), unique=True)
    lead_id: Mapped[int] = mapped_column(ForeignKey("leads.id"))
    agent_id: Mapped[int] = mapped_column(ForeignKey("agents.id"))
    call_id: Mapped[int | None] = mapped_column(ForeignKey("calls.id"))
    used_at: Mapped[datetime] = mapped_column(default=utcnow)
