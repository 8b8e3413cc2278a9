"""The tracked number: which store and department a call belongs to and how it rings."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import ForeignKey, String
from sqlalchemy.orm import Mapped, mapped_column, relationship

from gateway.database import Base, utcnow
from gateway.models import Store


class RingStrategy(StrEnum):
    SIMULTANEOUS = "simultaneous"
    SEQUENTIAL = "sequential"
    ROUND_ROBIN = "round-robin"


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
